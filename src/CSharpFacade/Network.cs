using Backprop.Core;
using System;
using System.Collections.Immutable;
using System.Linq;
using Backprop.Core.Interop;

namespace Backprop;

/// <summary>The element type of a network's matrices.</summary>
public enum Precision
{
    /// <summary>32-bit floating point (float), the default: faster, and enough for training.</summary>
    Single,
    /// <summary>64-bit floating point (double): slower; for results that must agree with a double-precision reference (e.g. to 1e-12), and for <see cref="NeuralNetwork.Predict(System.ReadOnlySpan{double})"/> without rounding to float.</summary>
    Double,
}

/// <summary>Entry point of the fluent network builder.</summary>
/// <example><code>
/// var network = Network.Create(inputs: 784).Affine(50).ReLU().Affine(10).SoftmaxWithLoss().WithSeed(42).Build();
/// // chapter 6: each hidden block Affine → BatchNorm → activation → Dropout, He's initial weights
/// var deep = Network.Create(inputs: 784)
///     .Affine(100).BatchNorm().ReLU().Dropout(0.2)
///     .Affine(10).SoftmaxWithLoss()
///     .WithWeightInit(WeightInit.He)
///     .Build();
/// </code></example>
public static class Network
{
    /// <summary>Starts a network whose samples have <paramref name="inputs"/> values (784 for MNIST).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="inputs"/> is not positive.</exception>
    public static NetworkBuilder Create(int inputs)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(inputs);
        return new NetworkBuilder(inputs, ImmutableList<Layer>.Empty, false, 42, WeightInit.Std(0.01), Precision.Single);
    }
}

/// <summary>
/// An immutable description of a network under construction. Every method returns a new
/// builder and rejects a bad argument at once; <see cref="Build"/> checks the whole.
/// </summary>
public sealed class NetworkBuilder
{
    private readonly int inputs;
    private readonly ImmutableList<Layer> layers;
    private readonly bool closed;
    private readonly int seed;
    private readonly WeightInit weightInit;
    private readonly Precision precision;

    internal NetworkBuilder(int inputs, ImmutableList<Layer> layers, bool closed, int seed, WeightInit weightInit, Precision precision)
    {
        this.inputs = inputs;
        this.layers = layers;
        this.closed = closed;
        this.seed = seed;
        this.weightInit = weightInit;
        this.precision = precision;
    }

    /// <summary>The number of values the last Affine layer added so far gives out.</summary>
    private int Width => Api.Sizes(Microsoft.FSharp.Collections.ListModule.OfSeq(layers)) is { Length: > 0 } sizes ? sizes[^1] : inputs;

    private NetworkBuilder With(ImmutableList<Layer>? layers = null, bool? closed = null, int? seed = null, WeightInit? weightInit = null, Precision? precision = null) =>
        new(inputs, layers ?? this.layers, closed ?? this.closed, seed ?? this.seed, weightInit ?? this.weightInit, precision ?? this.precision);

    private void EnsureOpen(string what)
    {
        if (closed) throw new InvalidOperationException($"{what} cannot follow SoftmaxWithLoss(), which ends the network.");
    }

    /// <summary>Adds a fully connected (Affine) layer with <paramref name="outputs"/> units.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="outputs"/> is not positive.</exception>
    /// <exception cref="InvalidOperationException">The network was already ended by SoftmaxWithLoss().</exception>
    public NetworkBuilder Affine(int outputs)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(outputs);
        EnsureOpen("Affine()");
        return With(layers: layers.Add(Layer.NewAffine(Width, outputs)));
    }

    /// <summary>Adds a ReLU activation after an Affine layer (or after its BatchNorm).</summary>
    /// <exception cref="InvalidOperationException">Neither an Affine nor a BatchNorm layer precedes it, or the network has ended.</exception>
    public NetworkBuilder ReLU() => Activation(Layer.Relu, "ReLU()");

    /// <summary>Adds a sigmoid activation after an Affine layer (or after its BatchNorm).</summary>
    /// <exception cref="InvalidOperationException">Neither an Affine nor a BatchNorm layer precedes it, or the network has ended.</exception>
    public NetworkBuilder Sigmoid() => Activation(Layer.Sigmoid, "Sigmoid()");

    /// <summary>Adds a tanh activation after an Affine layer (or after its BatchNorm).</summary>
    /// <exception cref="InvalidOperationException">Neither an Affine nor a BatchNorm layer precedes it, or the network has ended.</exception>
    public NetworkBuilder Tanh() => Activation(Layer.Tanh, "Tanh()");

    private NetworkBuilder Activation(Layer activation, string what)
    {
        EnsureOpen(what);
        if (layers.IsEmpty || !(layers[^1].IsAffine || layers[^1].IsBatchNorm))
            throw new InvalidOperationException($"{what} must follow an Affine() or BatchNorm() layer.");
        return With(layers: layers.Add(activation));
    }

    /// <summary>
    /// Adds Batch Normalization (the book's 6.3) after an Affine layer, over its outputs: in training
    /// each feature is normalized with the mini-batch's mean and (biased) variance, then scaled by γ
    /// (starting at 1) and shifted by β (starting at 0), both learned; the running mean and variance
    /// (momentum 0.9) are kept in the network, saved with it, and used by <see cref="NeuralNetwork.Predict(System.ReadOnlySpan{float})"/>
    /// and the evaluations. ε is the book's 1e-6, added inside the root as the book does.
    /// </summary>
    /// <exception cref="InvalidOperationException">No Affine layer directly precedes it, or the network has ended.</exception>
    public NetworkBuilder BatchNorm()
    {
        EnsureOpen("BatchNorm()");
        if (layers.IsEmpty || !layers[^1].IsAffine)
            throw new InvalidOperationException("BatchNorm() must follow an Affine() layer.");
        return With(layers: layers.Add(Layer.NewBatchNorm(Width)));
    }

    /// <summary>
    /// Adds Dropout (the book's 6.4.3, not PyTorch's "inverted" form): in training each unit is
    /// zeroed with probability <paramref name="ratio"/> (a fresh mask each step, drawn from the
    /// network's seed, so runs repeat); in prediction and evaluation every unit is scaled by
    /// 1 - <paramref name="ratio"/>, so <see cref="NeuralNetwork.Predict(System.ReadOnlySpan{float})"/>
    /// is deterministic.
    /// </summary>
    /// <param name="ratio">The fraction of units dropped in training, in [0, 1) (the book's default 0.5).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ratio"/> is not in [0, 1).</exception>
    /// <exception cref="InvalidOperationException">No layer precedes it, or the network has ended.</exception>
    public NetworkBuilder Dropout(double ratio = 0.5)
    {
        if (!(ratio >= 0 && ratio < 1))
            throw new ArgumentOutOfRangeException(nameof(ratio), ratio, "The dropout ratio must be in [0, 1).");
        EnsureOpen("Dropout()");
        if (layers.IsEmpty)
            throw new InvalidOperationException("Dropout() must follow a layer (Affine, BatchNorm or an activation).");
        return With(layers: layers.Add(Layer.NewDropout(ratio)));
    }

    /// <summary>Ends the network with Softmax-with-Loss (softmax and cross-entropy), after an Affine layer.</summary>
    /// <exception cref="InvalidOperationException">The last layer is not Affine, or the network has ended.</exception>
    public NetworkBuilder SoftmaxWithLoss()
    {
        EnsureOpen("SoftmaxWithLoss()");
        if (layers.IsEmpty || !layers[^1].IsAffine)
            throw new InvalidOperationException("SoftmaxWithLoss() must follow an Affine() layer that gives the class scores.");
        return With(closed: true);
    }

    /// <summary>Fixes the initial weights (and the Dropout masks of its training): the same seed gives the same network.</summary>
    public NetworkBuilder WithSeed(int seed) => With(seed: seed);

    /// <summary>Sets the standard deviation of the initial weights (0.01 by default, as the book): <c>WithWeightInit(WeightInit.Std(weightInitStd))</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="weightInitStd"/> is not a positive finite number.</exception>
    public NetworkBuilder WithWeightInitStd(double weightInitStd)
    {
        if (!(weightInitStd > 0 && double.IsFinite(weightInitStd)))
            throw new ArgumentOutOfRangeException(nameof(weightInitStd), weightInitStd, "The standard deviation must be a positive finite number.");
        return With(weightInit: WeightInit.Std(weightInitStd));
    }

    /// <summary>Sets how the initial weights are drawn: <see cref="WeightInit.Std"/> (0.01 by default, as the book), <see cref="WeightInit.Xavier"/> or <see cref="WeightInit.He"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="weightInit"/> is null.</exception>
    public NetworkBuilder WithWeightInit(WeightInit weightInit)
    {
        ArgumentNullException.ThrowIfNull(weightInit);
        return With(weightInit: weightInit);
    }

    /// <summary>Sets the element type of the network's matrices (Single by default).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="precision"/> is not a defined value.</exception>
    public NetworkBuilder WithPrecision(Precision precision)
    {
        if (!Enum.IsDefined(precision)) throw new ArgumentOutOfRangeException(nameof(precision), precision, "Unknown precision.");
        return With(precision: precision);
    }

    /// <summary>Builds the network with freshly drawn weights.</summary>
    /// <exception cref="InvalidOperationException">The network has no Affine layer or does not end with SoftmaxWithLoss().</exception>
    public NeuralNetwork Build()
    {
        if (!layers.Any(l => l.IsAffine))
            throw new InvalidOperationException("A network needs at least one Affine() layer.");
        if (!closed)
            throw new InvalidOperationException("A network must end with SoftmaxWithLoss().");
        var array = layers.ToArray();
        return precision == Precision.Single
            ? new NeuralNetwork(Api.InitSingle(seed, weightInit.Value, array))
            : new NeuralNetwork(Api.InitDouble(seed, weightInit.Value, array));
    }
}
