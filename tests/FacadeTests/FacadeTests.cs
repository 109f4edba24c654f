using System.Reflection;
using Backprop;
using Xunit;

namespace Backprop.FacadeTests;

/// <summary>MNIST, loaded once for the whole class.</summary>
public sealed class MnistFixture
{
    public MnistData Data { get; } = Mnist.Load();
}

/// <summary>A progress sink that records reports synchronously (Progress&lt;T&gt; posts them later).</summary>
internal sealed class Recorder : IProgress<EpochReport>
{
    public List<EpochReport> Reports { get; } = new();
    public Action<EpochReport>? OnReport { get; init; }
    public void Report(EpochReport value) { Reports.Add(value); OnReport?.Invoke(value); }
}

public sealed class FacadeTests : IClassFixture<MnistFixture>
{
    private readonly MnistData mnist;

    public FacadeTests(MnistFixture fixture) { mnist = fixture.Data; }

    private static NeuralNetwork BookNetwork(Precision precision = Precision.Single) =>
        Network.Create(inputs: 784).Affine(50).ReLU().Affine(10).SoftmaxWithLoss().WithSeed(42).WithPrecision(precision).Build();

    [Fact]
    public void Build_BookNetwork_HasTheBooksLayers()
    {
        var network = BookNetwork();
        Assert.Equal(new[] { 784, 50, 10 }, network.Sizes);
        Assert.Equal(new[] { "Affine(784, 50)", "ReLU", "Affine(50, 10)", "SoftmaxWithLoss" }, network.Layers);
        Assert.Equal(Precision.Single, network.Precision);
    }

    [Fact]
    public void Builder_EachCall_ReturnsANewBuilder()
    {
        var start = Network.Create(784).Affine(50);
        var relu = start.ReLU();
        var sigmoid = start.Sigmoid();
        Assert.NotSame(start, relu);
        Assert.Equal("ReLU", relu.Affine(10).SoftmaxWithLoss().Build().Layers[1]);
        Assert.Equal("Sigmoid", sigmoid.Affine(10).SoftmaxWithLoss().Build().Layers[1]);
    }

    [Fact]
    public void Mnist_Load_GivesTheStandardSplit()
    {
        Assert.Equal(60000, mnist.Train.Count);
        Assert.Equal(10000, mnist.Test.Count);
        Assert.Equal(5, mnist.Train.GetLabel(0));
        var image = mnist.Train.GetImage(0);
        Assert.Equal(784, image.Length);
        Assert.Equal(1f, image.Max());
        Assert.Equal(0f, image.Min());
    }

    [Fact]
    public void Train_ShortRun_ReportsOncePerEpochAndLearns()
    {
        var network = BookNetwork();
        var recorder = new Recorder();
        var result = Trainer.Create().WithIterations(1200).Train(network, mnist.Train, mnist.Test, recorder);
        Assert.Equal(new[] { 1, 2 }, recorder.Reports.Select(r => r.Epoch));
        Assert.Equal(new[] { 600, 1200 }, recorder.Reports.Select(r => r.Iteration));
        Assert.Equal(result.History, recorder.Reports);
        Assert.False(result.Cancelled);
        Assert.True(result.History[^1].TestAccuracy > 0.90, $"test accuracy {result.History[^1].TestAccuracy}");
        Assert.Equal(600, result.History[0].Losses.Count);
        Assert.True(result.History[1].MeanLoss < result.History[0].MeanLoss);
        // training returned a new model and left the old one as it was
        Assert.NotSame(network, result.Model);
        Assert.True(network.Accuracy(mnist.Test) < 0.2, "the untrained network guesses");
        Assert.Equal(result.History[^1].TestAccuracy, result.Model.Accuracy(mnist.Test), 12);
    }

    [Fact]
    public void Predict_TrainedModel_GivesProbabilitiesAndTheRightClassMostly()
    {
        var result = Trainer.Create().WithIterations(600).Train(BookNetwork(Precision.Double), mnist.Train.Take(6000), mnist.Test);
        var p = result.Model.Predict(mnist.Test.GetImage(0));
        Assert.Equal(10, p.Length);
        Assert.Equal(1.0, p.Sum(), 5);
        var correct = Enumerable.Range(0, 100).Count(i => result.Model.Classify(mnist.Test.GetImage(i)) == mnist.Test.GetLabel(i));
        Assert.True(correct >= 80, $"{correct} of 100 right");
    }

    [Fact]
    public void Train_SameSeed_SameNumbers()
    {
        var trainer = Trainer.Create().WithIterations(100).WithBatchSize(50).WithSeed(3);
        var small = mnist.Train.Take(1000);
        var a = trainer.Train(BookNetwork(), small, mnist.Test.Take(500));
        var b = trainer.Train(BookNetwork(), small, mnist.Test.Take(500));
        Assert.Equal(a.History.SelectMany(r => r.Losses), b.History.SelectMany(r => r.Losses));
    }

    /// <summary>Every number a run reports, for comparing runs exactly.</summary>
    private static (double[] Losses, double[] TrainAccuracies, double[] TestAccuracies) Numbers(TrainingResult r) =>
        (r.History.SelectMany(e => e.Losses).ToArray(), r.History.Select(e => e.TrainAccuracy).ToArray(), r.History.Select(e => e.TestAccuracy).ToArray());

    /// <summary>Whether this machine has OpenBLAS; under CI (CI=true, which installs it) a missing one fails the test.</summary>
    private static bool OpenBlasHere()
    {
        var available = Backprop.Core.Backend.OpenBlas.isAvailable();
        if (!available && Environment.GetEnvironmentVariable("CI") == "true")
            Assert.Fail("OpenBLAS is missing, and CI installs it (libopenblas0-pthread): the two-backend check would not run");
        return available;
    }

    [Fact]
    public async Task Train_TwoAtOnceWithDifferentBackends_EachEqualsItsOwnRunAlone()
    {
        var train = mnist.Train.Take(6000);
        var test = mnist.Test.Take(1000);
        // One Managed and one OpenBLAS run (where the system has it, else two seeds on Managed):
        // had either run's backend leaked into the other's products, its float32 numbers would differ.
        var trainers = OpenBlasHere()
            ? new[] { Trainer.Create().WithIterations(300).WithBackend(MatrixBackend.Managed), Trainer.Create().WithIterations(300).WithBackend(MatrixBackend.OpenBlas) }
            : new[] { Trainer.Create().WithIterations(300).WithBackend(MatrixBackend.Managed).WithSeed(1), Trainer.Create().WithIterations(300).WithBackend(MatrixBackend.Managed).WithSeed(2) };
        var alone = trainers.Select(t => Numbers(t.Train(BookNetwork(), train, test))).ToArray();
        Assert.NotEqual(alone[0].Losses, alone[1].Losses);
        for (var round = 0; round < 2; round++)
        {
            var together = await Task.WhenAll(trainers.Select(t => Task.Run(() => Numbers(t.Train(BookNetwork(), train, test)))));
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(300, together[i].Losses.Length);
                Assert.Equal(alone[i].Losses, together[i].Losses);
                Assert.Equal(alone[i].TrainAccuracies, together[i].TrainAccuracies);
                Assert.Equal(alone[i].TestAccuracies, together[i].TestAccuracies);
            }
        }
    }

    [Fact]
    public void Train_LeavesMathNetsProcessWideControlAsItWas()
    {
        var before = (MathNet.Numerics.Control.Describe(), MathNet.Numerics.Control.MaxDegreeOfParallelism, MathNet.Numerics.Control.TaskScheduler);
        Trainer.Create().WithIterations(50).WithBackend(MatrixBackend.Managed).Train(BookNetwork(), mnist.Train.Take(1000), mnist.Test.Take(200));
        var after = (MathNet.Numerics.Control.Describe(), MathNet.Numerics.Control.MaxDegreeOfParallelism, MathNet.Numerics.Control.TaskScheduler);
        Assert.Equal(before.Item1, after.Item1);
        Assert.Equal(before.Item2, after.Item2);
        Assert.Same(before.Item3, after.Item3);
    }

    // Cancellation is tested from inside the progress callback (SynchronousProgress runs it on the
    // training thread, before the next step), never after a wall-clock delay: each run stops at a
    // known step, whatever the machine's speed.

    [Fact]
    public void Train_CancelledFromTheFirstEpochsReport_StopsThereAndReturnsTheModelOfThatReport()
    {
        using var cts = new CancellationTokenSource();
        var seen = new List<EpochReport>();
        var progress = new SynchronousProgress<EpochReport>(r => { seen.Add(r); cts.Cancel(); });
        var (train, test) = (mnist.Train.Take(6000), mnist.Test.Take(1000));
        var result = Trainer.Create().WithEpochs(5).Train(BookNetwork(), train, test, progress, cts.Token);
        Assert.True(result.Cancelled);
        // the history ends with the cancelling report: epoch 1, its 60 steps, nothing after it
        var report = Assert.Single(result.History);
        Assert.Equal(seen, result.History);
        Assert.Equal((1, 60, 60), (report.Epoch, report.Iteration, report.Losses.Count));
        // the model is that report's, usable, and the very model of an uncancelled 60-step run
        Assert.Equal(report.TestAccuracy, result.Model.Accuracy(test));
        var whole = Trainer.Create().WithIterations(60).Train(BookNetwork(), train, test);
        Assert.False(whole.Cancelled);
        Assert.Equal(whole.History[^1].Losses, report.Losses);
        Assert.Equal(whole.Model.GetParameters()["W1"].ToSingleArray(), result.Model.GetParameters()["W1"].ToSingleArray());
        Assert.Equal(10, result.Model.Predict(mnist.Test.GetImage(0)).Length);
    }

    [Fact]
    public void Train_CancelledFromALaterReportOfOneStepEpochs_StopsAfterThatStep()
    {
        // Epochs of one step (batch = the 100 training images): the report after step 3 cancels,
        // so the run ends after the step in progress, step 3, not at the end of the 50 epochs.
        using var cts = new CancellationTokenSource();
        var progress = new SynchronousProgress<EpochReport>(r => { if (r.Iteration == 3) cts.Cancel(); });
        var (train, test) = (mnist.Train.Take(100), mnist.Test.Take(200));
        var trainer = Trainer.Create().WithEpochs(50).WithBatchSize(100).WithOptimizer(Optimizer.Momentum());
        var result = trainer.Train(BookNetwork(), train, test, progress, cts.Token);
        Assert.True(result.Cancelled);
        Assert.Equal(new[] { 1, 2, 3 }, result.History.Select(r => r.Iteration));
        Assert.All(result.History, r => Assert.Single(r.Losses));
        Assert.Equal(result.History[^1].TestAccuracy, result.Model.Accuracy(test));
        var three = trainer.WithIterations(3).Train(BookNetwork(), train, test);
        Assert.Equal(three.History.SelectMany(r => r.Losses), result.History.SelectMany(r => r.Losses));
        Assert.Equal(three.Model.GetParameters()["W2"].ToSingleArray(), result.Model.GetParameters()["W2"].ToSingleArray());
    }

    [Fact]
    public async Task Train_CancelledFromAnotherThread_EndsAfterTheStepInProgressWithWhatItTrained()
    {
        // Not early stopping: the first report starts a task that cancels a millisecond later, from
        // another thread, while the run goes on (the first report itself arrives during epoch 2,
        // its evaluation having run on the second core). The run ends after the step in progress
        // then, past epoch 1: its reports are epochs of 60 steps and a last one up to that step,
        // and it is exactly an uncancelled run of that many steps.
        using var cts = new CancellationTokenSource();
        Task? canceller = null;
        var progress = new SynchronousProgress<EpochReport>(r => canceller ??= Task.Run(() => { Thread.Sleep(1); cts.Cancel(); }));
        var (train, test) = (mnist.Train.Take(6000), mnist.Test.Take(500));
        var result = Trainer.Create().WithEpochs(200).Train(BookNetwork(), train, test, progress, cts.Token);
        await canceller!;
        Assert.True(result.Cancelled);
        var steps = result.History[^1].Iteration;
        Assert.InRange(steps, 61, 200 * 60 - 1);
        Assert.Equal(Enumerable.Range(1, result.History.Count - 1).Select(e => e * 60).Append(steps), result.History.Select(r => r.Iteration));
        var whole = Trainer.Create().WithIterations(steps).Train(BookNetwork(), train, test);
        Assert.False(whole.Cancelled);
        Assert.Equal(whole.History.SelectMany(r => r.Losses), result.History.SelectMany(r => r.Losses));
        Assert.Equal(whole.History[^1].TestAccuracy, result.History[^1].TestAccuracy);
        Assert.Equal(whole.Model.GetParameters()["W1"].ToSingleArray(), result.Model.GetParameters()["W1"].ToSingleArray());
    }

    [Fact]
    public async Task TrainAsync_CancelledFromTheProgressCallback_CompletesWithCancelledAtThatReport()
    {
        using var cts = new CancellationTokenSource();
        var progress = new SynchronousProgress<EpochReport>(r => { if (r.Epoch == 2) cts.Cancel(); });
        var result = await Trainer.Create().WithEpochs(10).TrainAsync(BookNetwork(), mnist.Train.Take(3000), mnist.Test.Take(500), progress, cts.Token);
        Assert.True(result.Cancelled);
        Assert.Equal(new[] { 30, 60 }, result.History.Select(r => r.Iteration));
        Assert.Equal(result.History[^1].TestAccuracy, result.Model.Accuracy(mnist.Test.Take(500)));
    }

    [Fact]
    public void Train_FewerOutputsThanTen_IsAcceptedWhenTheLabelsFitAndRefusedWhenTheyDoNot()
    {
        // Test image 0 is a 7: a network with 8 outputs (classes 0-7) can learn it, one with 7 cannot.
        var one = mnist.Test.Take(1);
        Assert.Equal(7, one.GetLabel(0));
        var eight = Network.Create(784).Affine(8).SoftmaxWithLoss().Build();
        var result = Trainer.Create().WithIterations(3).WithBatchSize(1).Train(eight, one, one);
        Assert.Equal(3, result.History[^1].Iteration);
        var seven = Network.Create(784).Affine(7).SoftmaxWithLoss().Build();
        var e = Assert.Throws<ArgumentException>(() => Trainer.Create().WithIterations(3).WithBatchSize(1).Train(seven, one, one));
        Assert.Equal("train", e.ParamName);
        Assert.Contains("go up to 7", e.Message);
    }

    [Fact]
    public void Builder_BadArguments_AreRejectedWithTheParameterName()
    {
        Assert.Equal("inputs", Assert.Throws<ArgumentOutOfRangeException>(() => Network.Create(0)).ParamName);
        Assert.Equal("outputs", Assert.Throws<ArgumentOutOfRangeException>(() => Network.Create(784).Affine(-1)).ParamName);
        Assert.Equal("weightInitStd", Assert.Throws<ArgumentOutOfRangeException>(() => Network.Create(784).WithWeightInitStd(double.NaN)).ParamName);
        Assert.Equal("precision", Assert.Throws<ArgumentOutOfRangeException>(() => Network.Create(784).WithPrecision((Precision)7)).ParamName);
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).ReLU());
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).Affine(10).Build());
        Assert.Throws<InvalidOperationException>(() => Network.Create(784).Affine(10).SoftmaxWithLoss().Affine(3));
        Assert.Equal("learningRate", Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.Create().WithLearningRate(0)).ParamName);
        Assert.Equal("batchSize", Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.Create().WithBatchSize(0)).ParamName);
        Assert.Equal("iterations", Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.Create().WithIterations(-5)).ParamName);
        Assert.Equal("epochs", Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.Create().WithEpochs(0)).ParamName);
        Assert.Equal("backend", Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.Create().WithBackend((MatrixBackend)9)).ParamName);
        Assert.Equal("image", Assert.Throws<ArgumentException>(() => BookNetwork().Predict(new float[5])).ParamName);
        Assert.Equal("index", Assert.Throws<ArgumentOutOfRangeException>(() => mnist.Test.GetImage(10000)).ParamName);
        Assert.Equal("network", Assert.Throws<ArgumentNullException>(() => Trainer.Create().Train(null!, mnist.Train, mnist.Test)).ParamName);
        var tiny = Network.Create(5).Affine(10).SoftmaxWithLoss().Build();
        Assert.Equal("train", Assert.Throws<ArgumentException>(() => Trainer.Create().Train(tiny, mnist.Train, mnist.Test)).ParamName);
    }

    [Fact]
    public void Mnist_LoadMissingDirectory_NamesIt()
    {
        var e = Assert.Throws<InvalidDataException>(() => Mnist.Load("/no/such/dir"));
        Assert.Equal("/no/such/dir: data directory not found", e.Message);
    }

    [Fact]
    public void PublicSurface_ExposesNoFSharpOrMathNetType()
    {
        var assembly = typeof(NeuralNetwork).Assembly;
        var offenders = new List<string>();
        void Check(Type? t, string where)
        {
            if (t is null) return;
            if (t.HasElementType) { Check(t.GetElementType(), where); return; }
            if (t.IsGenericType) foreach (var a in t.GetGenericArguments()) Check(a, where);
            var ns = t.Namespace ?? "";
            if (ns.StartsWith("Microsoft.FSharp") || ns.StartsWith("MathNet") || t.Assembly.GetName().Name is "FSharp.Core" or "MathNet.Numerics" or "Backprop.Core")
                offenders.Add($"{where}: {t.FullName}");
        }
        foreach (var type in assembly.GetExportedTypes())
        {
            Check(type.BaseType, type.Name + " base");
            foreach (var i in type.GetInterfaces()) Check(i, type.Name + " interface");
            const BindingFlags all = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            foreach (var m in type.GetMethods(all))
            {
                Check(m.ReturnType, $"{type.Name}.{m.Name} returns");
                foreach (var p in m.GetParameters()) Check(p.ParameterType, $"{type.Name}.{m.Name}({p.Name})");
            }
            foreach (var c in type.GetConstructors(all)) foreach (var p in c.GetParameters()) Check(p.ParameterType, $"{type.Name}..ctor({p.Name})");
            foreach (var p in type.GetProperties(all)) Check(p.PropertyType, $"{type.Name}.{p.Name}");
            foreach (var f in type.GetFields(all)) Check(f.FieldType, $"{type.Name}.{f.Name}");
            foreach (var e in type.GetEvents(all)) Check(e.EventHandlerType, $"{type.Name}.{e.Name}");
        }
        Assert.True(assembly.GetExportedTypes().Length >= 8, "the facade's types were found");
        Assert.Empty(offenders);
    }
}
