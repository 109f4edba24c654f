using Backprop;
using Xunit;

namespace Backprop.FacadeTests;

/// <summary>The inspection extensions (input gradient, activations, preprocessing) as a C# user calls them.</summary>
public sealed class InspectionTests : IClassFixture<MnistFixture>
{
    private readonly MnistData mnist;

    public InspectionTests(MnistFixture fixture) { mnist = fixture.Data; }

    private static NeuralNetwork Untrained(Precision precision) =>
        Network.Create(inputs: 784).Affine(50).ReLU().Affine(10).SoftmaxWithLoss().WithSeed(42).WithWeightInitStd(0.1).WithPrecision(precision).Build();

    [Theory]
    [InlineData(Precision.Single)]
    [InlineData(Precision.Double)]
    public void InputGradient_StepAgainstIt_MakesTheClassLikelier(Precision precision)
    {
        var network = Untrained(precision);
        var image = mnist.Test.GetImage(0);
        var gradient = network.InputGradient(image, 3);
        Assert.Equal(784, gradient.Length);
        var stepped = image.Zip(gradient, (x, g) => x - 0.1f * g).ToArray();
        Assert.True(network.Predict(stepped)[3] > network.Predict(image)[3], "a step against dL/dx raises p(3)");
    }

    [Fact]
    public void Activations_BookNetwork_AreEachLayersOutput()
    {
        var network = Untrained(Precision.Double);
        var image = mnist.Test.GetImage(1);
        var layers = network.Activations(image);
        Assert.Equal(new[] { "Affine1", "Relu1", "Affine2" }, layers.Select(l => l.Name));
        Assert.Equal(new[] { 50, 50, 10 }, layers.Select(l => l.Values.Count));
        Assert.Equal(layers[0].Values.Select(v => Math.Max(0f, v)), layers[1].Values); // ReLU of the sums
        var scores = layers[2].Values;
        Assert.Equal(network.Classify(image), scores.ToList().IndexOf(scores.Max()));
    }

    [Fact]
    public void Inspection_BadArguments_AreRejectedAtOnce()
    {
        var network = Untrained(Precision.Single);
        Assert.Throws<ArgumentException>("image", () => network.InputGradient(new float[10], 0));
        Assert.Throws<ArgumentOutOfRangeException>("class", () => network.InputGradient(new float[784], 10));
        Assert.Throws<ArgumentOutOfRangeException>("class", () => network.InputGradient(new float[784], -1));
        Assert.Throws<ArgumentException>("image", () => network.Activations(new float[783]));
        Assert.Throws<ArgumentException>("pixels", () => Inspection.PreprocessDigit(2, 2, new byte[3]));
    }

    [Fact]
    public void PreprocessDigit_ADarkBarOnWhite_IsWhiteOnBlackFittedAndCentred()
    {
        // a 4-pixel-wide, 60-pixel-high dark bar on a white 100 x 100 page
        var pixels = Enumerable.Range(0, 100 * 100).Select(k => (byte)(k % 100 >= 10 && k % 100 < 14 && k / 100 >= 20 && k / 100 < 80 ? 0 : 255)).ToArray();
        var input = Inspection.PreprocessDigit(100, 100, pixels);
        Assert.Equal(784, input.Length);
        Assert.Equal(0f, input[0]);
        var inked = Enumerable.Range(0, 784).Where(k => input[k] > 0).ToArray();
        Assert.Equal(4, inked.Min(k => k / 28)); // 20 rows, from row 4 to row 23
        Assert.Equal(23, inked.Max(k => k / 28));
        Assert.InRange(inked.Average(k => k % 28 + 0.5), 13.0, 15.0); // centred across
    }
}
