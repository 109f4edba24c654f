using Backprop;
using Microsoft.ML.OnnxRuntime;
using Xunit;

namespace Backprop.FacadeTests;

/// <summary>network.ExportOnnx, run in ONNX Runtime against the facade's own Predict.</summary>
public sealed class OnnxExportTests : IClassFixture<MnistFixture>
{
    private readonly MnistData mnist;

    public OnnxExportTests(MnistFixture fixture) { mnist = fixture.Data; }

    /// <summary>The book's layers with weights N(0, 0.1²): probabilities far from uniform.</summary>
    private static NeuralNetwork Net(Precision precision) =>
        Network.Create(inputs: 784).Affine(50).ReLU().Affine(10).SoftmaxWithLoss()
            .WithSeed(7).WithWeightInitStd(0.1).WithPrecision(precision).Build();

    private static InferenceSession Session(byte[] model) =>
        new(model, new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 });

    private float[] TestImages(int count) =>
        Enumerable.Range(0, count).SelectMany(i => mnist.Test.GetImage(i)).ToArray();

    private static T[] Run<T>(InferenceSession session, T[] x, int n) where T : unmanaged
    {
        using var input = OrtValue.CreateTensorValueFromMemory(x, new long[] { n, x.Length / n });
        using var options = new RunOptions();
        using var outputs = session.Run(options, new[] { "x" }, new[] { input }, new[] { "probabilities" });
        Assert.Equal(new long[] { n, 10 }, outputs[0].GetTensorTypeAndShape().Shape);
        return outputs[0].GetTensorDataAsSpan<T>().ToArray();
    }

    private static int ArgMax(ReadOnlySpan<float> row)
    {
        var best = 0;
        for (var j = 1; j < row.Length; j++) if (row[j] > row[best]) best = j;
        return best;
    }

    [Fact]
    public void ExportOnnx_ToAFile_OnnxRuntimeGivesPredictsProbabilitiesOnTheTestImages()
    {
        var network = Net(Precision.Single);
        var path = Path.Combine(Directory.CreateTempSubdirectory("backprop-onnx-").FullName, "book.onnx");
        network.ExportOnnx(path);
        using var session = Session(File.ReadAllBytes(path));
        var n = mnist.Test.Count;
        var probabilities = Run(session, TestImages(n), n);
        var maxDiff = 0.0;
        var correct = 0;
        for (var i = 0; i < n; i++)
        {
            var own = network.Predict(mnist.Test.GetImage(i));
            var row = probabilities.AsSpan(10 * i, 10);
            for (var j = 0; j < 10; j++) maxDiff = Math.Max(maxDiff, Math.Abs(own[j] - row[j]));
            Assert.Equal(network.Classify(mnist.Test.GetImage(i)), ArgMax(row));
            if (ArgMax(row) == mnist.Test.GetLabel(i)) correct++;
        }
        Assert.InRange(maxDiff, 0.0, 1e-5);
        Assert.Equal(network.Accuracy(mnist.Test), (double)correct / n);
    }

    [Fact]
    public void ExportOnnx_ToAStream_DoubleNetwork_TakesDoubles()
    {
        var network = Net(Precision.Double);
        using var stream = new MemoryStream();
        network.ExportOnnx(stream);
        using var session = Session(stream.ToArray());
        Assert.Equal(typeof(double), session.InputMetadata["x"].ElementType);
        Assert.Equal(new[] { -1, 784 }, session.InputMetadata["x"].Dimensions);
        Assert.Equal("N", session.InputMetadata["x"].SymbolicDimensions[0]);
        var images = TestImages(100);
        var probabilities = Run(session, Array.ConvertAll(images, v => (double)v), 100);
        for (var i = 0; i < 100; i++)
        {
            var own = network.Predict(mnist.Test.GetImage(i)); // the facade gives floats
            for (var j = 0; j < 10; j++) Assert.Equal(own[j], (float)probabilities[10 * i + j], 1e-6f);
        }
    }

    [Fact]
    public void ExportOnnx_Metadata_NamesProducerLayersAndPrecision()
    {
        using var stream = new MemoryStream();
        Net(Precision.Single).ExportOnnx(stream);
        using var session = Session(stream.ToArray());
        var metadata = session.ModelMetadata;
        Assert.Equal("Backprop", metadata.ProducerName);
        Assert.Equal("Affine(784, 50), ReLU, Affine(50, 10), Softmax", metadata.CustomMetadataMap["layers"]);
        Assert.Equal("float32", metadata.CustomMetadataMap["precision"]);
        Assert.Equal(new[] { "probabilities", "scores" }, session.OutputMetadata.Keys.ToArray());
    }

    [Fact]
    public void ExportOnnx_BadArguments_Throw()
    {
        var network = Net(Precision.Single);
        var dir = Directory.CreateTempSubdirectory("backprop-onnx-").FullName;
        var missing = Path.Combine(dir, "no", "model.onnx");
        var e = Assert.Throws<IOException>(() => network.ExportOnnx(missing));
        Assert.Equal($"{missing}: the folder {Path.GetDirectoryName(missing)} does not exist", e.Message);
        Assert.Equal($"{dir}: that is a folder; give a file name", Assert.Throws<IOException>(() => network.ExportOnnx(dir)).Message);
        Assert.Throws<ArgumentNullException>(() => OnnxExport.ExportOnnx(null!, Path.Combine(dir, "a.onnx")));
        Assert.Throws<ArgumentNullException>(() => network.ExportOnnx((Stream)null!));
        Assert.Throws<ArgumentException>(() => network.ExportOnnx(""));
        Assert.Throws<ArgumentException>(() => network.ExportOnnx(new MemoryStream(new byte[10], writable: false)));
        Assert.Empty(Directory.GetFiles(dir));
    }
}
