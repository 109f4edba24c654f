using Backprop.Core;
using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.FSharp.Core;

namespace Backprop;

/// <summary>One layer's output for an image: its name as the book's TwoLayerNet names it and its values.</summary>
/// <param name="Name">"Affine1", "Relu1", "Affine2", ...</param>
/// <param name="Values">The layer's output, one value per unit.</param>
public sealed record LayerActivation(string Name, IReadOnlyList<float> Values);

/// <summary>
/// Looking inside a network for one image: the gradient of the loss with respect to each input
/// pixel, every layer's output, and MNIST-style preprocessing of any grey-scale image. Computed in
/// float64 whatever the network's precision.
/// </summary>
public static class Inspection
{
    private static Model<double> Model(NeuralNetwork network) =>
        network.Double ?? NetworkModule.convert(FuncConvert.FromFunc<float, double>(x => x), network.Single!);

    private static double[] Checked(NeuralNetwork network, ReadOnlySpan<float> image, string name)
    {
        if (image.Length != network.Inputs)
            throw new ArgumentException($"The network takes {network.Inputs} values, the image has {image.Length}.", name);
        var values = new double[image.Length];
        for (var i = 0; i < values.Length; i++) values[i] = image[i];
        return values;
    }

    /// <summary>
    /// The gradient of the loss for <paramref name="class"/> with respect to each input value
    /// (backpropagation down to the first layer's dx): negative where more ink would make the
    /// class likelier.
    /// </summary>
    /// <param name="network">The network.</param>
    /// <param name="image">The sample's <see cref="NeuralNetwork.Inputs"/> values, e.g. 784 pixels in [0, 1].</param>
    /// <param name="class">The class the loss is measured against (0 to <see cref="NeuralNetwork.Classes"/> - 1).</param>
    /// <exception cref="ArgumentNullException"><paramref name="network"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="image"/> does not have <see cref="NeuralNetwork.Inputs"/> values.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="class"/> is not a class of the network.</exception>
    public static float[] InputGradient(this NeuralNetwork network, ReadOnlySpan<float> image, int @class)
    {
        ArgumentNullException.ThrowIfNull(network);
        var values = Checked(network, image, nameof(image));
        ArgumentOutOfRangeException.ThrowIfNegative(@class, nameof(@class));
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(@class, network.Classes, nameof(@class));
        return Array.ConvertAll(Trace.InputGradient(Model(network), values, @class), g => (float)g);
    }

    /// <summary>Every layer's output for one image, in order (inference mode): for the book's
    /// network Affine1 (50), Relu1 (50, the hidden activations) and Affine2 (10, the scores).</summary>
    /// <param name="network">The network.</param>
    /// <param name="image">The sample's <see cref="NeuralNetwork.Inputs"/> values.</param>
    /// <exception cref="ArgumentNullException"><paramref name="network"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="image"/> does not have <see cref="NeuralNetwork.Inputs"/> values.</exception>
    public static IReadOnlyList<LayerActivation> Activations(this NeuralNetwork network, ReadOnlySpan<float> image)
    {
        ArgumentNullException.ThrowIfNull(network);
        var values = Checked(network, image, nameof(image));
        return Trace.Activations(Model(network), values)
            .Select(layer => new LayerActivation(layer.Item1, Array.ConvertAll(layer.Item2, v => (float)v)))
            .ToArray();
    }

    /// <summary>
    /// A grey-scale image of any size made into the network's 28 × 28 input as MNIST's digits were
    /// made: inverted if its background is light, cropped to the ink, fitted into 20 × 20 keeping
    /// the aspect ratio, centred by its centre of mass; values in [0, 1], ready for
    /// <see cref="NeuralNetwork.Predict(System.ReadOnlySpan{float})"/>.
    /// </summary>
    /// <param name="width">The image's width.</param>
    /// <param name="height">The image's height.</param>
    /// <param name="pixels">width × height grey levels, row by row.</param>
    /// <exception cref="ArgumentNullException"><paramref name="pixels"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="pixels"/> does not have width × height values.</exception>
    public static float[] PreprocessDigit(int width, int height, byte[] pixels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        if (width < 1 || height < 1 || (long)width * height != pixels.Length)
            throw new ArgumentException($"A {width} x {height} image has {(long)width * height} pixels, got {pixels.Length}.", nameof(pixels));
        return Array.ConvertAll(Preprocess.ToInput(width, height, pixels), v => (float)v);
    }
}
