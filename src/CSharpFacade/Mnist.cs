using Backprop.Core;
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;

namespace Backprop;

/// <summary>
/// A set of labelled grey-scale images, kept as bytes (one per pixel, 0-255; a pixel's value for
/// the network is the byte / 255). Load MNIST with <see cref="Mnist.Load()"/>, or make one from
/// your own arrays with <see cref="FromArrays(ReadOnlySpan{byte}, ReadOnlySpan{int}, int, int)"/>.
/// </summary>
public sealed class ImageSet
{
    internal Dataset Data { get; }

    internal ImageSet(Dataset data) { Data = data; }

    /// <summary>The number of images.</summary>
    public int Count => Data.Count;

    /// <summary>The height of an image in pixels.</summary>
    public int Rows => Data.Rows;

    /// <summary>The width of an image in pixels.</summary>
    public int Columns => Data.Columns;

    /// <summary>The pixels of an image: <see cref="Rows"/> × <see cref="Columns"/>.</summary>
    public int PixelCount => Data.PixelCount;

    /// <summary>Image <paramref name="index"/>, row by row, each pixel scaled to [0, 1].</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is outside 0 .. Count - 1.</exception>
    public float[] GetImage(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        var image = new float[PixelCount];
        for (var j = 0; j < image.Length; j++) image[j] = Data.Pixels[index * PixelCount + j] / 255f;
        return image;
    }

    /// <summary>The class (0-9 for MNIST) of image <paramref name="index"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is outside 0 .. Count - 1.</exception>
    public int GetLabel(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        return Data.Labels[index];
    }

    /// <summary>The first <paramref name="count"/> images (all of them if there are fewer).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is not positive.</exception>
    public ImageSet Take(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        return new ImageSet(DatasetModule.take(count, Data));
    }

    /// <summary>All but the first <paramref name="count"/> images (none if there are fewer): <c>Take(n)</c> and <c>Skip(n)</c> split a set in two.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative.</exception>
    public ImageSet Skip(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var n = Math.Min(count, Count);
        return Subset(Enumerable.Range(n, Count - n));
    }

    /// <summary>
    /// Splits the set in two at random: the first part holds round(<paramref name="fraction"/> × Count)
    /// images, the second the rest, each in a random order drawn from <paramref name="seed"/> (the same
    /// seed gives the same split). For a split in the set's own order use <see cref="Take"/> and <see cref="Skip"/>.
    /// </summary>
    /// <example><code>var (train, validation) = set.Split(0.8, seed: 1);</code></example>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fraction"/> is not in [0, 1].</exception>
    public (ImageSet First, ImageSet Second) Split(double fraction, int seed = 42)
    {
        if (!(fraction >= 0 && fraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "The fraction must be in [0, 1].");
        var order = Enumerable.Range(0, Count).ToArray();
        new Random(seed).Shuffle(order);
        var first = (int)Math.Round(fraction * Count);
        return (Subset(order.Take(first)), Subset(order.Skip(first)));
    }

    /// <summary>The images at the given indices, in that order.</summary>
    private ImageSet Subset(IEnumerable<int> indices)
    {
        var ix = indices.ToArray();
        var size = PixelCount;
        var pixels = new byte[ix.Length * size];
        var labels = new byte[ix.Length];
        for (var k = 0; k < ix.Length; k++)
        {
            Array.Copy(Data.Pixels, (long)ix[k] * size, pixels, (long)k * size, size);
            labels[k] = Data.Labels[ix[k]];
        }
        return new ImageSet(new Dataset(pixels, labels, ix.Length, Rows, Columns));
    }

    /// <summary>
    /// Makes a set from your own images: <paramref name="pixels"/> holds the images one after the
    /// other, each <paramref name="rows"/> × <paramref name="columns"/> bytes row by row (0 black to
    /// 255 white for the network's [0, 1]); <paramref name="labels"/> holds one class (0-255) per image.
    /// The arrays are copied.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rows"/> or <paramref name="columns"/> is not positive, or a label is outside 0-255 (the message names its index).</exception>
    /// <exception cref="ArgumentException"><paramref name="pixels"/> does not hold labels × rows × columns values.</exception>
    public static ImageSet FromArrays(ReadOnlySpan<byte> pixels, ReadOnlySpan<int> labels, int rows, int columns)
    {
        var labelBytes = CheckShape(pixels.Length, labels, rows, columns);
        return new ImageSet(new Dataset(pixels.ToArray(), labelBytes, labels.Length, rows, columns));
    }

    /// <summary>
    /// Makes a set from your own images with pixels in [0, 1] (0 black, 1 white), one image after the
    /// other, each <paramref name="rows"/> × <paramref name="columns"/> values row by row, and one class
    /// (0-255) per image. A set keeps its pixels as bytes, so each value is stored as round(value × 255)
    /// (MNIST's own resolution): <see cref="GetImage"/> gives back the value to within 1/510.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rows"/> or <paramref name="columns"/> is not positive, a pixel is outside [0, 1] or NaN, or a label is outside 0-255 (the message names its index).</exception>
    /// <exception cref="ArgumentException"><paramref name="pixels"/> does not hold labels × rows × columns values.</exception>
    public static ImageSet FromArrays(ReadOnlySpan<float> pixels, ReadOnlySpan<int> labels, int rows, int columns)
    {
        var labelBytes = CheckShape(pixels.Length, labels, rows, columns);
        var bytes = new byte[pixels.Length];
        for (var i = 0; i < pixels.Length; i++)
        {
            var v = pixels[i];
            if (!(v >= 0f && v <= 1f))
                throw new ArgumentOutOfRangeException(nameof(pixels), v, $"pixels[{i}] (image {i / (rows * columns)}, pixel {i % (rows * columns)}) is {v}; pixels must be in [0, 1].");
            bytes[i] = (byte)MathF.Round(v * 255f);
        }
        return new ImageSet(new Dataset(bytes, labelBytes, labels.Length, rows, columns));
    }

    /// <summary>Checks the sizes and labels of <see cref="FromArrays(ReadOnlySpan{byte}, ReadOnlySpan{int}, int, int)"/>; the labels as bytes.</summary>
    private static byte[] CheckShape(int pixelCount, ReadOnlySpan<int> labels, int rows, int columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        var size = (long)rows * columns;
        if (size > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(columns), columns, $"An image of {rows} × {columns} pixels is too large.");
        if (pixelCount != size * labels.Length)
            throw new ArgumentException($"{labels.Length} labels of {rows} × {columns} images need {size * labels.Length} pixels; there are {pixelCount}.", "pixels");
        var bytes = new byte[labels.Length];
        for (var i = 0; i < labels.Length; i++)
        {
            if (labels[i] is < 0 or > 255)
                throw new ArgumentOutOfRangeException(nameof(labels), labels[i], $"labels[{i}] is {labels[i]}; a class must be in 0-255.");
            bytes[i] = (byte)labels[i];
        }
        return bytes;
    }
}

/// <summary>The training and test sets of an MNIST-layout directory.</summary>
/// <param name="Train">The training set (60,000 images for MNIST).</param>
/// <param name="Test">The test set (10,000 images for MNIST).</param>
public sealed record MnistData(ImageSet Train, ImageSet Test);

/// <summary>Loads MNIST (or any directory in its layout, such as Fashion-MNIST).</summary>
public static class Mnist
{
    /// <summary>Loads the MNIST data shipped with Backprop (data/mnist, found above the program or the working directory).</summary>
    /// <exception cref="DirectoryNotFoundException">No data/mnist folder was found.</exception>
    /// <exception cref="InvalidDataException">A file is missing or malformed; the message names it.</exception>
    public static MnistData Load()
    {
        var starts = Microsoft.FSharp.Collections.ListModule.OfArray(new[] { AppContext.BaseDirectory, Environment.CurrentDirectory });
        var found = MnistModule.tryFindShipped(starts);
        return found is null
            ? throw new DirectoryNotFoundException("No data/mnist folder was found above the program or the working directory; use Mnist.Load(path).")
            : Load(found.Value);
    }

    /// <summary>Loads the four IDX files (gzip-compressed or raw) of a directory in the MNIST layout.</summary>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    /// <exception cref="InvalidDataException">The directory or a file is missing or malformed; the message names it.</exception>
    public static MnistData Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        try
        {
            var (train, test) = MnistModule.load(path).ToValueTuple();
            return new MnistData(new ImageSet(train), new ImageSet(test));
        }
        catch (DataError e)
        {
            throw new InvalidDataException(e.Message);
        }
    }
}
