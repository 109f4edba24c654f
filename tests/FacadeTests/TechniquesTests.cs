using Backprop;
using Backprop.Core;
using Backprop.Core.Interop;
using Microsoft.FSharp.Collections;
using Xunit;
using CoreLayer = Backprop.Core.Layer;

namespace Backprop.FacadeTests;

/// <summary>The chapter 6 techniques through the facade (issue 13): optimizers, weight decay, weight initialization, BatchNorm, Dropout, Tanh.</summary>
public sealed class TechniquesTests : IClassFixture<MnistFixture>
{
    private readonly MnistData mnist;

    public TechniquesTests(MnistFixture fixture) { mnist = fixture.Data; }

    /// <summary>784-100-10 with each hidden block as multi_layer_net_extend builds it: Affine, BatchNorm, ReLU, Dropout; He's weights.</summary>
    private static NeuralNetwork Extended(int seed = 7, Precision precision = Precision.Single) =>
        Network.Create(inputs: 784)
            .Affine(100).BatchNorm().ReLU().Dropout(0.2)
            .Affine(10).SoftmaxWithLoss()
            .WithWeightInit(WeightInit.He).WithSeed(seed).WithPrecision(precision)
            .Build();

    [Fact]
    public void Build_Extended_HasTheLayersInOrderWithGammaBetaAndRunningStatistics()
    {
        var network = Extended();
        Assert.Equal(new[] { "Affine(784, 100)", "BatchNorm(100)", "ReLU", "Dropout(0.2)", "Affine(100, 10)", "SoftmaxWithLoss" }, network.Layers);
        Assert.Equal(new[] { 784, 100, 10 }, network.Sizes);
        var p = network.GetParameters();
        Assert.Equal(new[] { "W1", "b1", "gamma1", "beta1", "W2", "b2" }, p.Keys);
        Assert.All(p["gamma1"].ToDoubleArray(), v => Assert.Equal(1.0, v)); // γ = 1, β = 0 at start (the book's)
        Assert.All(p["beta1"].ToDoubleArray(), v => Assert.Equal(0.0, v));
        Assert.Equal(new[] { "running_mean1", "running_var1", "dropout1" }, network.GetStates().Keys);
        Assert.Equal("Tanh", Network.Create(4).Affine(3).Tanh().Affine(2).SoftmaxWithLoss().Build().Layers[1]);
    }

    [Fact]
    public void WithWeightInit_HeAndXavier_DrawWithTheBooksScales()
    {
        // The sample standard deviation of W1 (784 × 100 = 78,400 draws) against √(2/784), √(1/784), 0.01.
        double Std(WeightInit init)
        {
            var w = Network.Create(784).Affine(100).ReLU().Affine(10).SoftmaxWithLoss().WithWeightInit(init).Build().GetParameters()["W1"].ToDoubleArray();
            var mean = w.Average();
            return Math.Sqrt(w.Sum(v => (v - mean) * (v - mean)) / w.Length);
        }
        Assert.Equal(Math.Sqrt(2.0 / 784), Std(WeightInit.He), 3);
        Assert.Equal(Math.Sqrt(1.0 / 784), Std(WeightInit.Xavier), 3);
        Assert.Equal(0.01, Std(WeightInit.Std(0.01)), 4);
        // WithWeightInitStd is WeightInit.Std: the very same weights
        var a = Network.Create(784).Affine(10).SoftmaxWithLoss().WithWeightInitStd(0.05).Build().GetParameters()["W1"].ToDoubleArray();
        var b = Network.Create(784).Affine(10).SoftmaxWithLoss().WithWeightInit(WeightInit.Std(0.05)).Build().GetParameters()["W1"].ToDoubleArray();
        Assert.Equal(a, b);
        Assert.Equal("He", WeightInit.He.ToString());
        Assert.Equal("Std(0.05)", WeightInit.Std(0.05).ToString());
        Assert.Equal(WeightInit.Std(0.05), WeightInit.Std(0.05));
    }

    [Fact]
    public void Optimizer_Defaults_AreTheBooks()
    {
        // The C# defaults are constants; the core's Optimizer.bookDefault is the book's optimizer.py.
        foreach (var (optimizer, name) in new[] { (Optimizer.Sgd(), "sgd"), (Optimizer.Momentum(), "momentum"), (Optimizer.Nesterov(), "nesterov"), (Optimizer.AdaGrad(), "adagrad"), (Optimizer.RmsProp(), "rmsprop"), (Optimizer.Adam(), "adam") })
            Assert.Equal(OptimizerModule.bookDefault(name).Value, optimizer.Spec);
        Assert.Equal("Adam(learningRate: 0.001, beta1: 0.9, beta2: 0.999)", Optimizer.Adam().ToString());
        Assert.Equal("Momentum(learningRate: 0.05, momentum: 0.9)", Optimizer.Momentum(learningRate: 0.05).ToString());
        Assert.Equal(Optimizer.RmsProp(0.02, 0.9), Optimizer.RmsProp(decayRate: 0.9).WithLearningRate(0.02));
        Assert.Equal(0.001, Optimizer.Adam().LearningRate);
    }

    [Fact]
    public void Trainer_ToString_ListsTheOptimizerAndTheDecay()
    {
        var trainer = Trainer.Create().WithOptimizer(Optimizer.Adam(learningRate: 0.002)).WithWeightDecay(0.1).WithEpochs(2);
        Assert.Equal("Trainer { Optimizer = Adam(learningRate: 0.002, beta1: 0.9, beta2: 0.999), WeightDecay = 0.1, BatchSize = 100, Epochs = 2, Seed = 42, Sampling = WithReplacement, EvaluationSample = all, Backend = Auto }", trainer.ToString());
        Assert.Equal(0.002, trainer.LearningRate);
        // WithLearningRate keeps the optimizer's kind
        Assert.Equal(Optimizer.Adam(learningRate: 0.01), trainer.WithLearningRate(0.01).Optimizer);
        Assert.Equal(Optimizer.Sgd(0.1), Trainer.Create().Optimizer);
    }

    [Fact]
    public void Builders_BadChapter6Arguments_AreRejectedWithTheParameterName()
    {
        Assert.Equal("ratio", Assert.Throws<ArgumentOutOfRangeException>(() => Network.Create(784).Affine(10).Dropout(1.0)).ParamName);
        Assert.Equal("ratio", Assert.Throws<ArgumentOutOfRangeException>(() => Network.Create(784).Affine(10).Dropout(-0.1)).ParamName);
        Assert.Equal("ratio", Assert.Throws<ArgumentOutOfRangeException>(() => Network.Create(784).Affine(10).Dropout(double.NaN)).ParamName);
        Assert.Equal("standardDeviation", Assert.Throws<ArgumentOutOfRangeException>(() => WeightInit.Std(0)).ParamName);
        Assert.Equal("weightInit", Assert.Throws<ArgumentNullException>(() => Network.Create(784).WithWeightInit(null!)).ParamName);
        Assert.Equal("learningRate", Assert.Throws<ArgumentOutOfRangeException>(() => Optimizer.Adam(learningRate: 0)).ParamName);
        Assert.Equal("learningRate", Assert.Throws<ArgumentOutOfRangeException>(() => Optimizer.Sgd(double.PositiveInfinity)).ParamName);
        Assert.Equal("momentum", Assert.Throws<ArgumentOutOfRangeException>(() => Optimizer.Momentum(momentum: 1.0)).ParamName);
        Assert.Equal("momentum", Assert.Throws<ArgumentOutOfRangeException>(() => Optimizer.Nesterov(momentum: -0.5)).ParamName);
        Assert.Equal("decayRate", Assert.Throws<ArgumentOutOfRangeException>(() => Optimizer.RmsProp(decayRate: 1.5)).ParamName);
        Assert.Equal("beta1", Assert.Throws<ArgumentOutOfRangeException>(() => Optimizer.Adam(beta1: 1.0)).ParamName);
        Assert.Equal("beta2", Assert.Throws<ArgumentOutOfRangeException>(() => Optimizer.Adam(beta2: double.NaN)).ParamName);
        Assert.Equal("learningRate", Assert.Throws<ArgumentOutOfRangeException>(() => Optimizer.AdaGrad().WithLearningRate(-1)).ParamName);
        Assert.Equal("lambda", Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.Create().WithWeightDecay(-0.1)).ParamName);
        Assert.Equal("lambda", Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.Create().WithWeightDecay(double.NaN)).ParamName);
        Assert.Equal("optimizer", Assert.Throws<ArgumentNullException>(() => Trainer.Create().WithOptimizer(null!)).ParamName);
        // placement: BatchNorm right after an Affine, an activation after an Affine or a BatchNorm, Dropout after some layer
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).BatchNorm());
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).Affine(10).ReLU().BatchNorm());
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).Affine(10).BatchNorm().BatchNorm());
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).Affine(10).Dropout(0.5).Tanh());
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).Dropout(0.5));
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).Affine(10).SoftmaxWithLoss().Dropout(0.5));
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).Affine(10).BatchNorm().SoftmaxWithLoss());
    }

    [Fact]
    public void Train_AdamBatchNormDropoutHeAndDecay_EqualsTheCoresOwnRunAndLearns()
    {
        // The facade's run against the core's documented fold, Run.epochsWith (Optimizer.ofSpec [decay; Adam])
        // from the same layers, seed and batches: the same losses, accuracies and final parameters and
        // states, bit for bit.
        var (train, test) = (mnist.Train.Skip(10_000).Take(3_000), mnist.Test.Take(1_000));
        var trainer = Trainer.Create().WithOptimizer(Optimizer.Adam(learningRate: 0.001)).WithWeightDecay(1e-4).WithEpochs(4).WithBatchSize(100).WithSeed(5);
        var result = trainer.Train(Extended(seed: 7), train, test);

        var layers = new[] { CoreLayer.NewAffine(784, 100), CoreLayer.NewBatchNorm(100), CoreLayer.Relu, CoreLayer.NewDropout(0.2), CoreLayer.NewAffine(100, 10) };
        var config = Api.Config(0.001, 100, 4 * 30, 5);
        var specs = new[] { OptimizerSpec.NewWeightDecay(1e-4), OptimizerSpec.NewAdam(0.001, 0.9, 0.999) };
        var reference = Api.RunEpochsWith(specs, config, train.Data, test.Data, Api.InitSingle(7, Backprop.Core.WeightInit.He, layers));

        Assert.Equal(4, result.History.Count);
        Assert.Equal(reference.Length, result.History.Count);
        for (var e = 0; e < reference.Length; e++)
        {
            Assert.Equal(reference[e].Losses, result.History[e].Losses);
            Assert.Equal(reference[e].TrainAccuracy, result.History[e].TrainAccuracy);
            Assert.Equal(reference[e].TestAccuracy, result.History[e].TestAccuracy);
        }
        var model = reference[^1].Model;
        var parameters = result.Model.GetParameters();
        foreach (var (name, _, values) in Api.Parameters(model)) Assert.Equal(values, parameters[name].ToSingleArray());
        var states = result.Model.GetStates();
        foreach (var (name, _, values) in Api.States(model)) Assert.Equal(values, states[name].ToSingleArray());
        Assert.Equal(new[] { "W1", "b1", "gamma1", "beta1", "W2", "b2" }, parameters.Keys);
        // the running statistics moved from their start (0, 0) and the dropout key advanced one per step
        Assert.Contains(states["running_var1"].ToDoubleArray(), v => v > 0);
        // It learns: 120 steps on 3,000 images.
        Assert.True(result.History[^1].TestAccuracy > 0.85, $"test accuracy {result.History[^1].TestAccuracy}");
        Assert.True(result.History[^1].MeanLoss < result.History[0].MeanLoss);
    }

    [Fact]
    public void Train_OtherOptimizers_EachEqualsTheCoresRun()
    {
        var (train, test) = (mnist.Train.Take(1_000), mnist.Test.Take(200));
        var layers = new[] { CoreLayer.NewAffine(784, 30), CoreLayer.Tanh, CoreLayer.NewAffine(30, 10) };
        foreach (var optimizer in new[] { Optimizer.Sgd(0.1), Optimizer.Momentum(), Optimizer.Nesterov(), Optimizer.AdaGrad(), Optimizer.RmsProp(), Optimizer.Adam() })
        {
            // Sgd with a decay goes through Optimizer.ofSpec too (without one it is the chapter 5 fold).
            var network = Network.Create(784).Affine(30).Tanh().Affine(10).SoftmaxWithLoss().WithWeightInit(WeightInit.Xavier).WithSeed(3).WithPrecision(Precision.Double).Build();
            var result = Trainer.Create().WithOptimizer(optimizer).WithWeightDecay(0.01).WithIterations(25).WithBatchSize(50).Train(network, train, test);
            var reference = Api.RunEpochsWith(new[] { OptimizerSpec.NewWeightDecay(0.01), optimizer.Spec }, Api.Config(0.1, 50, 25, 42), train.Data, test.Data, Api.InitDouble(3, Backprop.Core.WeightInit.Xavier, layers));
            Assert.Equal(reference.SelectMany(r => r.Losses), result.History.SelectMany(r => r.Losses));
            var parameters = result.Model.GetParameters();
            foreach (var (name, _, values) in Api.Parameters(reference[^1].Model)) Assert.Equal(values, parameters[name].ToDoubleArray());
        }
    }

    [Theory]
    [InlineData(Precision.Single)]
    [InlineData(Precision.Double)]
    public void SaveLoad_BatchNormAndDropout_RoundTripBitForBitAndPredictTheSame(Precision precision)
    {
        var trained = Trainer.Create().WithOptimizer(Optimizer.Adam()).WithIterations(40).Train(Extended(precision: precision), mnist.Train.Take(2_000)).Model;
        using var memory = new MemoryStream();
        trained.Save(memory);
        memory.Position = 0;
        var loaded = NeuralNetwork.Load(memory);
        Assert.Equal(precision, loaded.Precision);
        Assert.Equal(trained.Layers, loaded.Layers);
        foreach (var (a, b) in new[] { (trained.GetParameters(), loaded.GetParameters()), (trained.GetStates(), loaded.GetStates()) })
        {
            Assert.Equal(a.Keys, b.Keys);
            foreach (var name in a.Keys) Assert.Equal(a[name].ToDoubleArray(), b[name].ToDoubleArray());
        }
        var n = 300;
        var flat = Enumerable.Range(0, n).SelectMany(mnist.Test.GetImage).ToArray();
        Assert.Equal(trained.Predict(flat, n), loaded.Predict(flat, n));
        Assert.Equal(trained.Accuracy(mnist.Test), loaded.Accuracy(mnist.Test));
    }

    [Fact]
    public void Predict_BatchNormAndDropout_UsesInferenceModeAndIsDeterministic()
    {
        var network = Trainer.Create().WithOptimizer(Optimizer.Adam()).WithIterations(40).Train(Extended(precision: Precision.Double), mnist.Train.Take(2_000)).Model;
        // An independent forward pass in inference mode, written out from the book (double):
        // BatchNorm with the running statistics, ε = 1e-6 inside the root; Dropout scales by 1 - 0.2.
        var p = network.GetParameters().ToDictionary(kv => kv.Key, kv => kv.Value.ToDoubleArray());
        var s = network.GetStates().ToDictionary(kv => kv.Key, kv => kv.Value.ToDoubleArray());
        Assert.Contains(s["running_mean1"], v => v != 0); // training moved them: the check below can tell
        double[] Expected(float[] image)
        {
            var h = new double[100];
            for (var j = 0; j < 100; j++)
            {
                var a = p["b1"][j];
                for (var i = 0; i < 784; i++) a += image[i] * p["W1"][i * 100 + j];
                var xn = (a - s["running_mean1"][j]) / Math.Sqrt(s["running_var1"][j] + 10e-7);
                h[j] = Math.Max(0, p["gamma1"][j] * xn + p["beta1"][j]) * (1 - 0.2);
            }
            var scores = new double[10];
            for (var k = 0; k < 10; k++)
            {
                scores[k] = p["b2"][k];
                for (var j = 0; j < 100; j++) scores[k] += h[j] * p["W2"][j * 10 + k];
            }
            var max = scores.Max();
            var e = scores.Select(v => Math.Exp(v - max)).ToArray();
            return e.Select(v => v / e.Sum()).ToArray();
        }
        for (var i = 0; i < 50; i++)
        {
            var image = mnist.Test.GetImage(i);
            var wide = Array.ConvertAll(image, v => (double)v);
            var predicted = network.Predict(wide);
            var expected = Expected(image);
            for (var k = 0; k < 10; k++) Assert.True(Math.Abs(predicted[k] - expected[k]) <= 1e-12, $"image {i} class {k}: {predicted[k]} vs {expected[k]}");
            Assert.Equal(predicted, network.Predict(wide)); // no fresh dropout mask: the same numbers every time
        }
    }
}
