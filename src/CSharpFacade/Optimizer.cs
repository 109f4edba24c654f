using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Backprop.Core;

namespace Backprop;

/// <summary>
/// How the initial weights of a network's Affine layers are drawn (the book's 6.2): from
/// N(0, scale²) with a fixed scale (<see cref="Std"/>, the book's 0.01 by default), Xavier's
/// scale √(1/n) or He's √(2/n) for a layer of n inputs. Biases start at 0, BatchNorm's γ at 1 and
/// β at 0. Immutable; set it with <see cref="NetworkBuilder.WithWeightInit"/>.
/// </summary>
public sealed class WeightInit : IEquatable<WeightInit>
{
    internal Backprop.Core.WeightInit Value { get; }

    private WeightInit(Backprop.Core.WeightInit value) { Value = value; }

    /// <summary>Weights from N(0, <paramref name="standardDeviation"/>²) in every layer (the book's <c>weight_init_std</c>; 0.01 is its default).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="standardDeviation"/> is not a positive finite number.</exception>
    public static WeightInit Std(double standardDeviation)
    {
        if (!(standardDeviation > 0 && double.IsFinite(standardDeviation)))
            throw new ArgumentOutOfRangeException(nameof(standardDeviation), standardDeviation, "The standard deviation must be a positive finite number.");
        return new WeightInit(Backprop.Core.WeightInit.NewStd(standardDeviation));
    }

    /// <summary>Xavier's initialization (the book's "xavier" or "sigmoid"): scale √(1/n) for a layer of n inputs; suits sigmoid and tanh.</summary>
    public static WeightInit Xavier { get; } = new(Backprop.Core.WeightInit.Xavier);

    /// <summary>He's initialization (the book's "he" or "relu"): scale √(2/n) for a layer of n inputs; suits ReLU.</summary>
    public static WeightInit He { get; } = new(Backprop.Core.WeightInit.He);

    /// <summary>"Std(0.01)", "Xavier" or "He".</summary>
    public override string ToString() => Value switch
    {
        Backprop.Core.WeightInit.Std s => string.Create(CultureInfo.InvariantCulture, $"Std({s.Item})"),
        { IsXavier: true } => "Xavier",
        _ => "He",
    };

    /// <summary>True for the same kind (and the same standard deviation for <see cref="Std"/>).</summary>
    public bool Equals(WeightInit? other) => other is not null && Value.Equals(other.Value);

    /// <summary>True for a <see cref="WeightInit"/> of the same kind and scale.</summary>
    public override bool Equals(object? obj) => Equals(obj as WeightInit);

    /// <summary>A hash of the kind and scale.</summary>
    public override int GetHashCode() => Value.GetHashCode();
}

/// <summary>
/// An optimizer of the book's chapter 6, with its hyperparameters (the book's defaults for any not
/// given, as its common/optimizer.py). Immutable; give it to <see cref="Trainer.WithOptimizer"/>.
/// </summary>
/// <example><code>
/// var trainer = Trainer.Create().WithOptimizer(Optimizer.Adam(learningRate: 0.001)).WithWeightDecay(0.1);
/// </code></example>
public sealed class Optimizer : IEquatable<Optimizer>
{
    internal OptimizerSpec Spec { get; }

    private Optimizer(OptimizerSpec spec) { Spec = spec; }

    /// <summary>Stochastic gradient descent (the book's SGD): W ← W - learningRate·∂L/∂W.</summary>
    /// <param name="learningRate">The step size (the book's default 0.01; the book's chapter 5 recipe, and <see cref="Trainer"/>'s default, uses 0.1).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="learningRate"/> is not a positive finite number.</exception>
    public static Optimizer Sgd(double learningRate = 0.01) =>
        new(OptimizerSpec.NewSgd(CheckLearningRate(learningRate)));

    /// <summary>Momentum (the book's Momentum): v ← momentum·v - learningRate·g, then W ← W + v.</summary>
    /// <param name="learningRate">The step size (0.01).</param>
    /// <param name="momentum">How much of the last velocity is kept, in [0, 1) (0.9).</param>
    /// <exception cref="ArgumentOutOfRangeException">A hyperparameter is out of its range (the exception names it).</exception>
    public static Optimizer Momentum(double learningRate = 0.01, double momentum = 0.9) =>
        new(OptimizerSpec.NewMomentum(CheckLearningRate(learningRate), CheckFraction(momentum, nameof(momentum))));

    /// <summary>Nesterov's accelerated gradient as the book writes it (its Nesterov class).</summary>
    /// <param name="learningRate">The step size (0.01).</param>
    /// <param name="momentum">How much of the last velocity is kept, in [0, 1) (0.9).</param>
    /// <exception cref="ArgumentOutOfRangeException">A hyperparameter is out of its range (the exception names it).</exception>
    public static Optimizer Nesterov(double learningRate = 0.01, double momentum = 0.9) =>
        new(OptimizerSpec.NewNesterov(CheckLearningRate(learningRate), CheckFraction(momentum, nameof(momentum))));

    /// <summary>AdaGrad (the book's AdaGrad): h ← h + g², W ← W - learningRate·g / (√h + 1e-7).</summary>
    /// <param name="learningRate">The step size (0.01).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="learningRate"/> is not a positive finite number.</exception>
    public static Optimizer AdaGrad(double learningRate = 0.01) =>
        new(OptimizerSpec.NewAdaGrad(CheckLearningRate(learningRate)));

    /// <summary>RMSprop (the book's RMSprop): h ← decayRate·h + (1 - decayRate)·g², W ← W - learningRate·g / (√h + 1e-7).</summary>
    /// <param name="learningRate">The step size (0.01).</param>
    /// <param name="decayRate">How much of the running mean of g² is kept, in [0, 1) (0.99).</param>
    /// <exception cref="ArgumentOutOfRangeException">A hyperparameter is out of its range (the exception names it).</exception>
    public static Optimizer RmsProp(double learningRate = 0.01, double decayRate = 0.99) =>
        new(OptimizerSpec.NewRmsProp(CheckLearningRate(learningRate), CheckFraction(decayRate, nameof(decayRate))));

    /// <summary>
    /// Adam as the book writes it (its Adam class): the bias correction folded into the step size
    /// lr_t = learningRate·√(1 - beta2ᵗ) / (1 - beta1ᵗ), and 1e-7 added outside the root
    /// (PyTorch adds 1e-8).
    /// </summary>
    /// <param name="learningRate">The step size (0.001).</param>
    /// <param name="beta1">The decay of the mean of the gradients, in [0, 1) (0.9).</param>
    /// <param name="beta2">The decay of the mean of their squares, in [0, 1) (0.999).</param>
    /// <exception cref="ArgumentOutOfRangeException">A hyperparameter is out of its range (the exception names it).</exception>
    public static Optimizer Adam(double learningRate = 0.001, double beta1 = 0.9, double beta2 = 0.999) =>
        new(OptimizerSpec.NewAdam(CheckLearningRate(learningRate), CheckFraction(beta1, nameof(beta1)), CheckFraction(beta2, nameof(beta2))));

    /// <summary>The optimizer's name: "Sgd", "Momentum", "Nesterov", "AdaGrad", "RmsProp" or "Adam".</summary>
    public string Name => Spec switch
    {
        { IsSgd: true } => "Sgd",
        { IsMomentum: true } => "Momentum",
        { IsNesterov: true } => "Nesterov",
        { IsAdaGrad: true } => "AdaGrad",
        { IsRmsProp: true } => "RmsProp",
        _ => "Adam",
    };

    /// <summary>The step size.</summary>
    public double LearningRate => Hyperparameters["learningRate"];

    /// <summary>Every hyperparameter by the name of its factory's parameter (learningRate, momentum, decayRate, beta1, beta2), in that order.</summary>
    public IReadOnlyDictionary<string, double> Hyperparameters =>
        OptimizerModule.hyperparameters(Spec).ToDictionary(
            p => p.Item1 switch { "lr" => "learningRate", "decay_rate" => "decayRate", var name => name },
            p => p.Item2);

    /// <summary>The same optimizer with another step size.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="learningRate"/> is not a positive finite number.</exception>
    public Optimizer WithLearningRate(double learningRate)
    {
        CheckLearningRate(learningRate);
        return new(Spec switch
        {
            OptimizerSpec.Momentum m => OptimizerSpec.NewMomentum(learningRate, m.momentum),
            OptimizerSpec.Nesterov n => OptimizerSpec.NewNesterov(learningRate, n.momentum),
            OptimizerSpec.AdaGrad => OptimizerSpec.NewAdaGrad(learningRate),
            OptimizerSpec.RmsProp r => OptimizerSpec.NewRmsProp(learningRate, r.decayRate),
            OptimizerSpec.Adam a => OptimizerSpec.NewAdam(learningRate, a.beta1, a.beta2),
            _ => OptimizerSpec.NewSgd(learningRate),
        });
    }

    /// <summary>The call that makes it, e.g. "Adam(learningRate: 0.001, beta1: 0.9, beta2: 0.999)".</summary>
    public override string ToString() =>
        $"{Name}({string.Join(", ", Hyperparameters.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Key}: {p.Value}")))})";

    /// <summary>True for the same kind with the same hyperparameters.</summary>
    public bool Equals(Optimizer? other) => other is not null && Spec.Equals(other.Spec);

    /// <summary>True for an <see cref="Optimizer"/> of the same kind and hyperparameters.</summary>
    public override bool Equals(object? obj) => Equals(obj as Optimizer);

    /// <summary>A hash of the kind and hyperparameters.</summary>
    public override int GetHashCode() => Spec.GetHashCode();

    private static double CheckLearningRate(double learningRate)
    {
        if (!(learningRate > 0 && double.IsFinite(learningRate)))
            throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "The learning rate must be a positive finite number.");
        return learningRate;
    }

    private static double CheckFraction(double value, string name)
    {
        if (!(value >= 0 && value < 1))
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be in [0, 1).");
        return value;
    }
}
