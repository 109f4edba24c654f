using Backprop.Core;
using System;
using System.IO;

namespace Backprop;

/// <summary>A set of labelled grey-scale images, kept as bytes (one per pixel).</summary>
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

    /// <summary>The class (0-9) of image <paramref name="index"/>.</summary>
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
