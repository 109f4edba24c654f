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
/// </code></example>
public static class Network
{
    /// <summary>Starts a network whose samples have <paramref name="inputs"/> values (784 for MNIST).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="inputs"/> is not positive.</exception>
    public static NetworkBuilder Create(int inputs)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(inputs);
        return new NetworkBuilder(inputs, ImmutableList<Layer>.Empty, false, 42, 0.01, Precision.Single);
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
    private readonly double weightInitStd;
    private readonly Precision precision;

    internal NetworkBuilder(int inputs, ImmutableList<Layer> layers, bool closed, int seed, double weightInitStd, Precision precision)
    {
        this.inputs = inputs;
        this.layers = layers;
        this.closed = closed;
        this.seed = seed;
        this.weightInitStd = weightInitStd;
        this.precision = precision;
    }

    /// <summary>The number of values the last Affine layer added so far gives out.</summary>
    private int Width => Api.Sizes(Microsoft.FSharp.Collections.ListModule.OfSeq(layers)) is { Length: > 0 } sizes ? sizes[^1] : inputs;

    private NetworkBuilder With(ImmutableList<Layer>? layers = null, bool? closed = null, int? seed = null, double? weightInitStd = null, Precision? precision = null) =>
        new(inputs, layers ?? this.layers, closed ?? this.closed, seed ?? this.seed, weightInitStd ?? this.weightInitStd, precision ?? this.precision);

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

    /// <summary>Adds a ReLU activation after the last Affine layer.</summary>
    /// <exception cref="InvalidOperationException">No Affine layer precedes it, or the network has ended.</exception>
    public NetworkBuilder ReLU() => Activation(Layer.Relu, "ReLU()");

    /// <summary>Adds a sigmoid activation after the last Affine layer.</summary>
    /// <exception cref="InvalidOperationException">No Affine layer precedes it, or the network has ended.</exception>
    public NetworkBuilder Sigmoid() => Activation(Layer.Sigmoid, "Sigmoid()");

    private NetworkBuilder Activation(Layer activation, string what)
    {
        EnsureOpen(what);
        if (layers.IsEmpty || !layers[^1].IsAffine)
            throw new InvalidOperationException($"{what} must follow an Affine() layer.");
        return With(layers: layers.Add(activation));
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

    /// <summary>Fixes the initial weights: the same seed gives the same network.</summary>
    public NetworkBuilder WithSeed(int seed) => With(seed: seed);

    /// <summary>Sets the standard deviation of the initial weights (0.01 by default, as the book).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="weightInitStd"/> is not a positive finite number.</exception>
    public NetworkBuilder WithWeightInitStd(double weightInitStd)
    {
        if (!(weightInitStd > 0 && double.IsFinite(weightInitStd)))
            throw new ArgumentOutOfRangeException(nameof(weightInitStd), weightInitStd, "The standard deviation must be a positive finite number.");
        return With(weightInitStd: weightInitStd);
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
            ? new NeuralNetwork(Api.InitSingle(seed, weightInitStd, array))
            : new NeuralNetwork(Api.InitDouble(seed, weightInitStd, array));
    }
}
