using Backprop.Core;
using System;
using System.IO;
using Microsoft.FSharp.Collections;

namespace Backprop;

/// <summary>
/// Exporting a <see cref="NeuralNetwork"/> as an ONNX model (IR version 8, opset 17) that ONNX
/// Runtime and other ONNX tools run: input <c>x</c> [N, <see cref="NeuralNetwork.Inputs"/>] in the
/// network's precision (float or double), outputs <c>probabilities</c> (the softmax of the scores)
/// and <c>scores</c>, both [N, <see cref="NeuralNetwork.Classes"/>]; N is any batch size.
/// Affine layers become Gemm, ReLU Relu, Sigmoid Sigmoid, Tanh Tanh, Dropout a Mul by 1 − ratio,
/// BatchNorm BatchNormalization with its running statistics, and Softmax ends the graph.
/// </summary>
/// <example><code>
/// network.ExportOnnx("model.onnx");
/// using var session = new Microsoft.ML.OnnxRuntime.InferenceSession("model.onnx");
/// </code></example>
public static class OnnxExport
{
    /// <summary>
    /// Writes the network's ONNX model to a file, atomically: a temporary file in the same folder
    /// renamed over <paramref name="path"/>, so the file is either the previous one or the whole new one.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="network"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    /// <exception cref="IOException">The file cannot be written (its folder is missing, it is a
    /// folder, it cannot be replaced); the message names it.</exception>
    public static void ExportOnnx(this NeuralNetwork network, string path)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentException.ThrowIfNullOrEmpty(path);
        try
        {
            if (network.Single is not null) Onnx.save(path, network.Single, Metadata);
            else Onnx.save(path, network.Double!, Metadata);
        }
        catch (DataError e)
        {
            throw new IOException(e.Message);
        }
        catch (OutputError e)
        {
            throw new IOException(e.Message, e);
        }
    }

    /// <summary>Writes the network's ONNX model to a stream (at its position; the stream stays open).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="network"/> or <paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="stream"/> cannot be written to.</exception>
    public static void ExportOnnx(this NeuralNetwork network, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanWrite) throw new ArgumentException("The stream cannot be written to.", nameof(stream));
        if (network.Single is not null) Onnx.write(stream, network.Single, Metadata);
        else Onnx.write(stream, network.Double!, Metadata);
    }

    /// <summary>No training settings travel with a facade network: the model states its own producer, layers and precision.</summary>
    private static FSharpList<Tuple<string, string>> Metadata => FSharpList<Tuple<string, string>>.Empty;
}
