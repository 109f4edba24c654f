using Backprop.Core;
using System;
using System.Collections.Generic;
using System.Linq;
using Backprop.Core.Interop;

namespace Backprop;

/// <summary>
/// A built network with its parameters: immutable. Training returns a new one
/// (<see cref="Trainer.Train"/>); this one never changes.
/// </summary>
public sealed class NeuralNetwork
{
    internal Model<float>? Single { get; }
    internal Model<double>? Double { get; }

    internal NeuralNetwork(Model<float> model) { Single = model; }
    internal NeuralNetwork(Model<double> model) { Double = model; }

    internal Microsoft.FSharp.Collections.FSharpList<Layer> CoreLayers => Single?.Layers ?? Double!.Layers;

    /// <summary>The element type of the network's matrices.</summary>
    public Precision Precision => Single is not null ? Precision.Single : Precision.Double;

    /// <summary>The layer sizes, input first: [784, 50, 10] for the book's network.</summary>
    public IReadOnlyList<int> Sizes => Api.Sizes(CoreLayers);

    /// <summary>The number of values a sample has.</summary>
    public int Inputs => Sizes[0];

    /// <summary>The number of classes.</summary>
    public int Classes => Sizes[^1];

    /// <summary>The layers in the book's names, e.g. "Affine(784, 50)", "ReLU", ..., "SoftmaxWithLoss".</summary>
    public IReadOnlyList<string> Layers => Api.LayerNames(CoreLayers).Append("SoftmaxWithLoss").ToArray();

    /// <summary>The class probabilities (softmax of the scores) for one sample.</summary>
    /// <param name="image">The sample's <see cref="Inputs"/> values, e.g. 784 pixels in [0, 1].</param>
    /// <exception cref="ArgumentException"><paramref name="image"/> does not have <see cref="Inputs"/> values.</exception>
    public float[] Predict(ReadOnlySpan<float> image)
    {
        if (image.Length != Inputs)
            throw new ArgumentException($"The network takes {Inputs} values, the image has {image.Length}.", nameof(image));
        if (Single is not null) return Api.Probabilities(Single, image.ToArray());
        var values = new double[image.Length];
        for (var i = 0; i < values.Length; i++) values[i] = image[i];
        return Array.ConvertAll(Api.Probabilities(Double!, values), p => (float)p);
    }

    /// <summary>The most probable class for one sample.</summary>
    /// <exception cref="ArgumentException"><paramref name="image"/> does not have <see cref="Inputs"/> values.</exception>
    public int Classify(ReadOnlySpan<float> image)
    {
        var p = Predict(image);
        return Array.IndexOf(p, p.Max());
    }

    /// <summary>The fraction of <paramref name="data"/>'s images whose predicted class is their label.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="data"/> is null.</exception>
    /// <exception cref="ArgumentException">The images do not have <see cref="Inputs"/> pixels.</exception>
    public double Evaluate(ImageSet data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.PixelCount != Inputs)
            throw new ArgumentException($"The network takes {Inputs} values, the images have {data.PixelCount}.", nameof(data));
        return Single is not null ? Api.Accuracy(Single, data.Data) : Api.Accuracy(Double!, data.Data);
    }
}
