using Backprop.Core;
using System;
using System.Collections.Generic;
using System.IO;
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

    /// <summary>
    /// A copy of every parameter, by the book's names in layer order (W1, b1, W2, b2, ..., and
    /// gamma1, beta1, ... for BatchNorm layers): each with its shape (W: inputs × outputs, b, gamma
    /// and beta: outputs) and its values, row-major. Changing the
    /// copies changes nothing in the network.
    /// </summary>
    public IReadOnlyDictionary<string, Parameter> GetParameters()
    {
        var parameters = new Dictionary<string, Parameter>();
        if (Single is not null)
            foreach (var (name, shape, values) in Api.Parameters(Single)) parameters.Add(name, new Parameter(name, shape, values, null));
        else
            foreach (var (name, shape, values) in Api.Parameters(Double!)) parameters.Add(name, new Parameter(name, shape, null, values));
        return parameters;
    }

    /// <summary>
    /// A copy of every layer state, by name in layer order: a BatchNorm layer's running mean and
    /// variance (running_mean1, running_var1, ... [features]), which prediction uses, and a Dropout
    /// layer's mask key (dropout1, ...: four integers, which training advances). Saved and loaded with
    /// the network. Empty for a network with neither.
    /// </summary>
    public IReadOnlyDictionary<string, Parameter> GetStates()
    {
        var states = new Dictionary<string, Parameter>();
        if (Single is not null)
            foreach (var (name, shape, values) in Api.States(Single)) states.Add(name, new Parameter(name, shape, values, null));
        else
            foreach (var (name, shape, values) in Api.States(Double!)) states.Add(name, new Parameter(name, shape, null, values));
        return states;
    }

    // ─── Prediction ─────────────────────────────────────────────────────────────────────────────

    /// <summary>The class probabilities (softmax of the scores) for one sample, in inference mode (BatchNorm's running statistics, Dropout's scaling: the same image always gets the same numbers).</summary>
    /// <param name="image">The sample's <see cref="Inputs"/> values, e.g. 784 pixels in [0, 1].</param>
    /// <exception cref="ArgumentException"><paramref name="image"/> does not have <see cref="Inputs"/> values.</exception>
    public float[] Predict(ReadOnlySpan<float> image)
    {
        if (image.Length != Inputs)
            throw new ArgumentException($"The network takes {Inputs} values, the image has {image.Length}.", nameof(image));
        if (Single is not null) return Api.Probabilities(Single, image);
        return Array.ConvertAll(Api.Probabilities(Double!, Widen(image)), p => (float)p);
    }

    /// <summary>
    /// The class probabilities for one sample in double precision: a <see cref="Precision.Double"/>
    /// network computes in double throughout (a Single one computes in float and widens the result).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="image"/> does not have <see cref="Inputs"/> values.</exception>
    public double[] Predict(ReadOnlySpan<double> image)
    {
        if (image.Length != Inputs)
            throw new ArgumentException($"The network takes {Inputs} values, the image has {image.Length}.", nameof(image));
        if (Double is not null) return Api.Probabilities(Double, image);
        return Array.ConvertAll(Api.Probabilities(Single!, Narrow(image)), p => (double)p);
    }

    /// <summary>
    /// The class probabilities for <paramref name="count"/> samples at once, computed as an
    /// evaluation is (blocks of 100 rows read in place from <paramref name="images"/>, no copy of the
    /// whole; the zeros skipped where most values are 0; inference mode: BatchNorm's running
    /// statistics, Dropout's scaling): on the 10,000 MNIST test images 7.2 times faster in float and 5.3 in double on a quiet machine (4.4 to 8.1 under load from other processes) than
    /// <see cref="Predict(ReadOnlySpan{float})"/> on each sample (docs/PERFORMANCE.md). A sample gets the numbers
    /// <see cref="Predict(ReadOnlySpan{float})"/> gives it: the same bits in double and on the managed
    /// backend; in float on OpenBLAS, whose 1-row product sums in another order, within 1e-5
    /// relative (the tests: the 10,000 MNIST test images, the same classes).
    /// </summary>
    /// <param name="images">The samples one after the other: <paramref name="count"/> × <see cref="Inputs"/> values.</param>
    /// <param name="count">The number of samples.</param>
    /// <returns><paramref name="count"/> × <see cref="Classes"/> probabilities, sample by sample.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="images"/> does not have <paramref name="count"/> × <see cref="Inputs"/> values.</exception>
    public float[] Predict(ReadOnlySpan<float> images, int count)
    {
        CheckRows(images.Length, count);
        if (Single is not null) return Api.ProbabilitiesOfRows(Single, images, count); // read in place, no copy
        return PredictConverted<float, double>(images, count, (rows, n) => Api.ProbabilitiesOfRows(Double!, rows, n));
    }

    /// <summary>The class probabilities for <paramref name="count"/> samples at once, in double precision (see <see cref="Predict(ReadOnlySpan{double})"/>).</summary>
    /// <param name="images">The samples one after the other: <paramref name="count"/> × <see cref="Inputs"/> values.</param>
    /// <param name="count">The number of samples.</param>
    /// <returns><paramref name="count"/> × <see cref="Classes"/> probabilities, sample by sample.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="images"/> does not have <paramref name="count"/> × <see cref="Inputs"/> values.</exception>
    public double[] Predict(ReadOnlySpan<double> images, int count)
    {
        CheckRows(images.Length, count);
        if (Double is not null) return Api.ProbabilitiesOfRows(Double, images, count); // read in place, no copy
        return PredictConverted<double, float>(images, count, (rows, n) => Api.ProbabilitiesOfRows(Single!, rows, n));
    }

    /// <summary>The probabilities of <paramref name="count"/> rows for a network of another precision.</summary>
    private delegate T[] RowsPredictor<T>(ReadOnlySpan<T> rows, int count);

    /// <summary>
    /// A batch for the network of the other precision: the rows converted <see cref="ConvertedRows"/>
    /// at a time (each value cast, as <c>(float)</c> or <c>(double)</c> does; not one converted copy
    /// of the whole batch), each block predicted, the probabilities cast back.
    /// </summary>
    private TIn[] PredictConverted<TIn, TNet>(ReadOnlySpan<TIn> images, int count, RowsPredictor<TNet> predict)
        where TIn : System.Numerics.INumberBase<TIn>
        where TNet : System.Numerics.INumberBase<TNet>
    {
        var p = new TIn[(long)count * Classes];
        var converted = new TNet[Math.Min(count, ConvertedRows) * Inputs];
        for (var start = 0; start < count; start += ConvertedRows)
        {
            var rows = Math.Min(ConvertedRows, count - start);
            var block = converted.AsSpan(0, rows * Inputs);
            var from = images.Slice(start * Inputs, rows * Inputs);
            for (var i = 0; i < block.Length; i++) block[i] = TNet.CreateTruncating(from[i]);
            var q = predict(block, rows);
            for (var k = 0; k < q.Length; k++) p[start * Classes + k] = TIn.CreateTruncating(q[k]);
        }
        return p;
    }

    /// <summary>The class probabilities for each sample, computed in blocks of 100 (see <see cref="Predict(ReadOnlySpan{float}, int)"/>).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="images"/> or one of its samples is null.</exception>
    /// <exception cref="ArgumentException">A sample does not have <see cref="Inputs"/> values (the message names its index).</exception>
    public float[][] Predict(float[][] images)
    {
        var flat = Flatten(images);
        var p = Predict(flat, images.Length);
        return Enumerable.Range(0, images.Length).Select(i => p.AsSpan(i * Classes, Classes).ToArray()).ToArray();
    }

    /// <summary>The most probable class for one sample.</summary>
    /// <exception cref="ArgumentException"><paramref name="image"/> does not have <see cref="Inputs"/> values.</exception>
    public int Classify(ReadOnlySpan<float> image) => ArgMax(Predict(image));

    /// <summary>The most probable class of each of <paramref name="count"/> samples (see <see cref="Predict(ReadOnlySpan{float}, int)"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="images"/> does not have <paramref name="count"/> × <see cref="Inputs"/> values.</exception>
    public int[] Classify(ReadOnlySpan<float> images, int count)
    {
        var p = Predict(images, count);
        var classes = new int[count];
        for (var i = 0; i < count; i++) classes[i] = ArgMax(p.AsSpan(i * Classes, Classes));
        return classes;
    }

    /// <summary>The most probable class of each sample (see <see cref="Predict(float[][])"/>).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="images"/> or one of its samples is null.</exception>
    /// <exception cref="ArgumentException">A sample does not have <see cref="Inputs"/> values (the message names its index).</exception>
    public int[] Classify(float[][] images) => Classify(Flatten(images), images.Length);

    /// <summary>The first index of the largest value (as Array.IndexOf(p, p.Max())).</summary>
    private static int ArgMax(ReadOnlySpan<float> p)
    {
        var best = 0;
        for (var j = 1; j < p.Length; j++) if (p[j] > p[best]) best = j;
        return best;
    }

    private void CheckRows(int length, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (length != (long)count * Inputs)
            throw new ArgumentException($"{count} samples of {Inputs} values are {(long)count * Inputs} values; there are {length}.", "images");
    }

    private float[] Flatten(float[][] images)
    {
        ArgumentNullException.ThrowIfNull(images);
        var flat = new float[(long)images.Length * Inputs];
        for (var i = 0; i < images.Length; i++)
        {
            if (images[i] is null) throw new ArgumentNullException(nameof(images), $"images[{i}] is null.");
            if (images[i].Length != Inputs)
                throw new ArgumentException($"The network takes {Inputs} values, images[{i}] has {images[i].Length}.", nameof(images));
            images[i].CopyTo(flat, (long)i * Inputs);
        }
        return flat;
    }

    /// <summary>
    /// Rows converted to the network's precision at a time by the batch Predict overloads of the
    /// other precision (a bounded buffer instead of a converted copy of the whole batch): a
    /// multiple of the core's 100-row blocks, so that the blocks, and so the numbers, are the
    /// ones a batch of the network's own precision gets.
    /// </summary>
    private const int ConvertedRows = 1000;

    private static double[] Widen(ReadOnlySpan<float> values)
    {
        var wide = new double[values.Length];
        for (var i = 0; i < wide.Length; i++) wide[i] = values[i];
        return wide;
    }

    private static float[] Narrow(ReadOnlySpan<double> values)
    {
        var narrow = new float[values.Length];
        for (var i = 0; i < narrow.Length; i++) narrow[i] = (float)values[i];
        return narrow;
    }

    // ─── Evaluation ─────────────────────────────────────────────────────────────────────────────

    /// <summary>The fraction of <paramref name="data"/>'s images whose predicted class is their label (NaN for an empty set).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="data"/> is null.</exception>
    /// <exception cref="ArgumentException">The images do not have <see cref="Inputs"/> pixels.</exception>
    public double Accuracy(ImageSet data)
    {
        CheckInputs(data);
        return Single is not null ? Api.Accuracy(Single, data.Data) : Api.Accuracy(Double!, data.Data);
    }

    /// <summary>
    /// Evaluates the network on every image of <paramref name="data"/>: accuracy, per-class precision
    /// and recall, and the confusion matrix (the numbers the CLI's <c>evaluate</c> prints).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="data"/> is null.</exception>
    /// <exception cref="ArgumentException">The images do not have <see cref="Inputs"/> pixels, or a label is not below <see cref="Classes"/>.</exception>
    public MulticlassClassificationMetrics Evaluate(ImageSet data)
    {
        CheckInputs(data);
        CheckLabels(data, Classes, nameof(data));
        var confusion = Single is not null ? Api.Confusion(Single, data.Data, Classes) : Api.Confusion(Double!, data.Data, Classes);
        return new MulticlassClassificationMetrics(confusion);
    }

    private void CheckInputs(ImageSet data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.PixelCount != Inputs)
            throw new ArgumentException($"The network takes {Inputs} values, the images have {data.PixelCount}.", nameof(data));
    }

    /// <summary>Throws when a label of <paramref name="data"/> is not a class of a network with <paramref name="classes"/> outputs.</summary>
    internal static void CheckLabels(ImageSet data, int classes, string name)
    {
        var labels = data.Data.Labels;
        for (var i = 0; i < data.Count; i++)
            if (labels[i] >= classes)
                throw new ArgumentException($"The labels of {name} go up to {labels.Take(data.Count).Max()}; the network has {classes} outputs (classes 0 to {classes - 1}).", name);
    }

    // ─── Files ──────────────────────────────────────────────────────────────────────────────────

    /// <summary>
    /// Saves the network to an .npz file (NumPy archive: W1, b1, ... and the layer list), the format
    /// of the CLI's <c>train --save</c>: <c>backprop evaluate --model</c> reads it, <see cref="Load(string)"/>
    /// reads the CLI's. The precision is kept. Atomic: the file is either the previous one or the whole new one.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    /// <exception cref="IOException">The file cannot be written (its folder is missing, it is a folder or a device, ...); the message names it.</exception>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        try
        {
            if (Single is not null) Api.Save(path, Single);
            else Api.Save(path, Double!);
        }
        catch (OutputError e)
        {
            throw new IOException(e.Message, e);
        }
    }

    /// <summary>Writes the network as an .npz archive to a stream, at its position (see <see cref="Save(string)"/>); the stream stays open.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="stream"/> cannot be written to.</exception>
    public void Save(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanWrite) throw new ArgumentException("The stream cannot be written to.", nameof(stream));
        if (Single is not null) Api.Write(stream, Single);
        else Api.Write(stream, Double!);
    }

    /// <summary>
    /// Loads a network from an .npz file written by <see cref="Save(string)"/>, by the CLI's
    /// <c>train --save</c>, or by numpy (<c>numpy.savez(path, W1=..., b1=..., ...)</c>), in the precision it was saved in.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    /// <exception cref="FileNotFoundException">There is no file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a model file, or an array is missing, misshapen or not finite; the message names the file and the fault.</exception>
    public static NeuralNetwork Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found", path);
        using var stream = File.OpenRead(path);
        return Read(path, stream);
    }

    /// <summary>Loads a network from an .npz archive in a stream (read from its position to its end; see <see cref="Load(string)"/>).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="stream"/> cannot be read.</exception>
    /// <exception cref="InvalidDataException">The archive is not a model file (the message says what is wrong, naming the file "stream").</exception>
    public static NeuralNetwork Load(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanRead) throw new ArgumentException("The stream cannot be read.", nameof(stream));
        return Read("stream", stream);
    }

    private static NeuralNetwork Read(string name, Stream stream)
    {
        try
        {
            return Npz.readFrom(name, stream).Model switch
            {
                SavedModel.Single s => new NeuralNetwork(s.Item),
                SavedModel.Double d => new NeuralNetwork(d.Item),
                _ => throw new InvalidDataException($"{name}: unknown precision"),
            };
        }
        catch (DataError e)
        {
            throw new InvalidDataException(e.Message, e);
        }
    }
}

/// <summary>One named array of a network (a parameter W1, b1, gamma1, ... or a state running_mean1, ...), copied out by <see cref="NeuralNetwork.GetParameters"/> or <see cref="NeuralNetwork.GetStates"/>.</summary>
public sealed class Parameter
{
    private readonly float[]? single;
    private readonly double[]? @double;
    private readonly int[] shape;

    internal Parameter(string name, int[] shape, float[]? single, double[]? @double)
    {
        Name = name;
        this.shape = shape;
        this.single = single;
        this.@double = @double;
    }

    /// <summary>The book's name: W1, b1, W2, b2, ... (W for an Affine layer's weights, b for its bias), gamma1, beta1 (a BatchNorm layer's), running_mean1, running_var1, dropout1 (states).</summary>
    public string Name { get; }

    /// <summary>The shape: [inputs, outputs] for a W, [outputs] for a b, gamma, beta, running mean or variance.</summary>
    public IReadOnlyList<int> Shape => shape;

    /// <summary>The number of values (the product of <see cref="Shape"/>).</summary>
    public int Length => single?.Length ?? @double!.Length;

    /// <summary>The precision the network holds the values in.</summary>
    public Precision Precision => single is not null ? Precision.Single : Precision.Double;

    /// <summary>A new array of the values, row-major (W[i, j] at i × outputs + j), as float (narrowed for a Double network).</summary>
    public float[] ToSingleArray() => single is not null ? (float[])single.Clone() : Array.ConvertAll(@double!, v => (float)v);

    /// <summary>A new array of the values, row-major, as double (exact for either precision).</summary>
    public double[] ToDoubleArray() => @double is not null ? (double[])@double.Clone() : Array.ConvertAll(single!, v => (double)v);

    /// <summary>The name and shape, e.g. "W1 [784, 50]".</summary>
    public override string ToString() => $"{Name} [{string.Join(", ", shape)}]";
}
