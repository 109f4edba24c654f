using System.Diagnostics;
using System.Globalization;
using Backprop;
using Xunit;

namespace Backprop.FacadeTests;

/// <summary>A short-trained book network, shared by the tests that only read it.</summary>
public sealed class TrainedFixture
{
    public MnistData Data { get; } = Mnist.Load();
    public NeuralNetwork Single { get; }
    public NeuralNetwork Double { get; }

    public TrainedFixture()
    {
        var trainer = Trainer.Create().WithIterations(300);
        Single = trainer.Train(Build(Precision.Single), Data.Train.Take(6000)).Model;
        Double = trainer.Train(Build(Precision.Double), Data.Train.Take(6000)).Model;
    }

    public static NeuralNetwork Build(Precision precision = Precision.Single) =>
        Network.Create(inputs: 784).Affine(50).ReLU().Affine(10).SoftmaxWithLoss().WithSeed(42).WithPrecision(precision).Build();
}

/// <summary>The issue "a facade a .NET developer can ship with": its defects and its new surface.</summary>
public sealed class ShippingTests : IClassFixture<TrainedFixture>
{
    private readonly MnistData mnist;
    private readonly TrainedFixture trained;

    public ShippingTests(TrainedFixture fixture) { trained = fixture; mnist = fixture.Data; }

    private static string TempFile(string name) => Path.Combine(Directory.CreateTempSubdirectory("backprop-facade-").FullName, name);

    // ─── Defects ────────────────────────────────────────────────────────────────────────────────

    [Fact]
    public void Train_EpochsBeyondIntMaxValueSteps_ThrowsNamingEpochs()
    {
        // 4,000,000 epochs × 600 steps overflowed int: Train returned at once with no reports.
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.Create().WithEpochs(4_000_000).Train(TrainedFixture.Build(), mnist.Train, mnist.Test));
        Assert.Equal("epochs", e.ParamName);
        Assert.Contains("2400000000 steps", e.Message);
        Assert.Contains("at most 3579139 epochs", e.Message);
    }

    [Fact]
    public void Train_AlreadyCancelled_ReturnsAReportOfTheUntrainedNetwork()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var network = TrainedFixture.Build();
        var recorder = new Recorder();
        var result = Trainer.Create().Train(network, mnist.Train.Take(1000), mnist.Test.Take(500), recorder, cts.Token);
        Assert.True(result.Cancelled);
        Assert.Same(network, result.Model);
        var report = Assert.Single(result.History);
        Assert.Equal((0, 0), (report.Epoch, report.Iteration));
        Assert.Empty(report.Losses);
        Assert.Equal(network.Accuracy(mnist.Train.Take(1000)), report.TrainAccuracy);
        Assert.Equal(network.Accuracy(mnist.Test.Take(500)), report.TestAccuracy);
        Assert.Equal(result.History, recorder.Reports);
        Assert.Equal(report.TestAccuracy, result.History[^1].TestAccuracy); // the README's line
    }

    [Fact]
    public void Train_SynchronousProgressAsInTheReadme_EveryReportArrivesOnTheTrainingThreadBeforeTrainReturns()
    {
        // The README's console pattern was Progress<T>, which posts to the thread pool: its slow
        // handler still ran after Train returned. SynchronousProgress runs it on the training thread.
        var seen = new List<(EpochReport Report, int Thread)>();
        var progress = new SynchronousProgress<EpochReport>(r => { Thread.Sleep(50); seen.Add((r, Environment.CurrentManagedThreadId)); });
        var result = Trainer.Create().WithIterations(300).WithBatchSize(100).Train(TrainedFixture.Build(), mnist.Train.Take(5000), mnist.Test.Take(500), progress);
        Assert.Equal(result.History, seen.Select(s => s.Report));
        Assert.Equal(6, seen.Count);
        Assert.All(seen, s => Assert.Equal(Environment.CurrentManagedThreadId, s.Thread));
    }

    [Fact]
    public void Train_NoEvaluationSet_TestAccuracyIsNaNAsDocumented()
    {
        var result = Trainer.Create().WithIterations(100).Train(TrainedFixture.Build(), mnist.Train.Take(2000));
        Assert.All(result.History, r => Assert.True(double.IsNaN(r.TestAccuracy)));
        Assert.Equal(result.Model.Accuracy(mnist.Train.Take(2000)), result.History[^1].TrainAccuracy);
    }

    [Fact]
    public void Predict_DoubleOverloadOnADoubleNetwork_ComputesInDouble()
    {
        var image = mnist.Test.GetImage(0);
        var p = trained.Double.Predict(Array.ConvertAll(image, v => (double)v));
        Assert.Equal(1.0, p.Sum(), 12);
        var single = trained.Double.Predict(image);
        for (var j = 0; j < 10; j++) Assert.Equal((float)p[j], single[j]);
    }

    // ─── Save and load ──────────────────────────────────────────────────────────────────────────

    [Theory]
    [InlineData(Precision.Single)]
    [InlineData(Precision.Double)]
    public void Save_ThenLoadFromPathAndStream_SameParametersPrecisionAndPredictions(Precision precision)
    {
        var network = precision == Precision.Single ? trained.Single : trained.Double;
        var path = TempFile("model.npz");
        network.Save(path);
        using var memory = new MemoryStream();
        network.Save(memory);
        memory.Position = 0;
        foreach (var loaded in new[] { NeuralNetwork.Load(path), NeuralNetwork.Load(memory) })
        {
            Assert.Equal(precision, loaded.Precision);
            Assert.Equal(network.Layers, loaded.Layers);
            var (a, b) = (network.GetParameters(), loaded.GetParameters());
            Assert.Equal(a.Keys, b.Keys);
            foreach (var name in a.Keys)
            {
                Assert.Equal(a[name].Shape, b[name].Shape);
                Assert.Equal(a[name].ToDoubleArray(), b[name].ToDoubleArray());
            }
            Assert.Equal(network.Accuracy(mnist.Test), loaded.Accuracy(mnist.Test));
        }
        Assert.Equal(new[] { path }, Directory.GetFiles(Path.GetDirectoryName(path)!)); // no temporary left behind
    }

    [Fact]
    public void Load_NotAModel_ThrowsInvalidDataExceptionNamingTheFileAndFault()
    {
        var path = TempFile("bad.npz");
        File.WriteAllText(path, "not a zip");
        var e = Assert.Throws<InvalidDataException>(() => NeuralNetwork.Load(path));
        Assert.StartsWith(path + ":", e.Message);
        var missing = Assert.Throws<FileNotFoundException>(() => NeuralNetwork.Load(path + ".none"));
        Assert.Contains("bad.npz.none", missing.Message);
        using var empty = new MemoryStream(new byte[] { 80, 75, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }); // an empty zip
        Assert.StartsWith("stream:", Assert.Throws<InvalidDataException>(() => NeuralNetwork.Load(empty)).Message);
    }

    [Fact]
    public void Save_IntoAMissingFolder_ThrowsIOExceptionNamingIt()
    {
        var path = Path.Combine(Path.GetTempPath(), "no-such-folder-" + Guid.NewGuid().ToString("N"), "m.npz");
        var e = Assert.Throws<IOException>(() => trained.Single.Save(path));
        Assert.Contains("no-such-folder-", e.Message);
    }

    /// <summary>The repository root (the folder of Backprop.sln) above the test binaries.</summary>
    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Backprop.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("Backprop.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Runs the built CLI (artifacts/bin/Cli/release/Backprop.Cli.dll); its standard output.</summary>
    private static string Cli(params string[] args)
    {
        var root = RepositoryRoot();
        var dll = Path.Combine(root, "artifacts", "bin", "Cli", "release", "Backprop.Cli.dll");
        Assert.True(File.Exists(dll), $"the CLI is built with the tests: {dll}");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        start.ArgumentList.Add(dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["BACKPROP_PROGRESS"] = "0";
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"backprop {string.Join(' ', args)} exited {process.ExitCode}: {error.Result}");
        return output;
    }

    /// <summary>The accuracy and confusion matrix that `backprop evaluate` prints.</summary>
    private static (string Accuracy, int[][] Confusion) CliEvaluate(string model)
    {
        var lines = Cli("evaluate", "--model", model).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var accuracy = lines.Single(l => l.StartsWith("test acc ")).Substring("test acc ".Length).Trim();
        var matrix = lines.SkipWhile(l => !l.StartsWith("confusion matrix")).Skip(2).Take(10)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(int.Parse).ToArray()).ToArray();
        return (accuracy, matrix);
    }

    [Fact]
    public void Load_ModelSavedByTheCli_EvaluatesToTheClisNumbers()
    {
        var path = TempFile("cli.npz");
        Cli("train", "--iters", "300", "--precision", "double", "--save", path);
        var loaded = NeuralNetwork.Load(path);
        Assert.Equal(Precision.Double, loaded.Precision);
        var metrics = loaded.Evaluate(mnist.Test);
        var (accuracy, confusion) = CliEvaluate(path);
        Assert.Equal(accuracy, metrics.MicroAccuracy.ToString("F4", CultureInfo.InvariantCulture));
        Assert.Equal(confusion, metrics.ConfusionMatrix.Select(r => r.ToArray()).ToArray());
    }

    [Fact]
    public void Save_ModelSavedFromCSharp_TheClisEvaluateGivesTheFacadesNumbers()
    {
        var path = TempFile("csharp.npz");
        trained.Single.Save(path);
        var metrics = trained.Single.Evaluate(mnist.Test);
        var (accuracy, confusion) = CliEvaluate(path);
        Assert.Equal(metrics.MicroAccuracy.ToString("F4", CultureInfo.InvariantCulture), accuracy);
        Assert.Equal(metrics.ConfusionMatrix.Select(r => r.ToArray()).ToArray(), confusion);
    }

    // ─── Your own data ──────────────────────────────────────────────────────────────────────────

    /// <summary>The images of 0s and 1s of a set as flat floats and labels, the first <paramref name="limit"/>.</summary>
    private static (float[] Pixels, int[] Labels) ZerosAndOnes(ImageSet set, int limit)
    {
        var indices = Enumerable.Range(0, set.Count).Where(i => set.GetLabel(i) <= 1).Take(limit).ToArray();
        var pixels = new float[indices.Length * 784];
        for (var k = 0; k < indices.Length; k++) set.GetImage(indices[k]).CopyTo(pixels, k * 784);
        return (pixels, indices.Select(set.GetLabel).ToArray());
    }

    [Fact]
    public void FromArrays_ZerosAndOnes_TrainsATwoClassNetworkTo99Percent()
    {
        var (trainPixels, trainLabels) = ZerosAndOnes(mnist.Train, 2000);
        var (testPixels, testLabels) = ZerosAndOnes(mnist.Test, int.MaxValue);
        var train = ImageSet.FromArrays(trainPixels, trainLabels, rows: 28, columns: 28);
        var test = ImageSet.FromArrays(testPixels, testLabels, rows: 28, columns: 28);
        Assert.Equal((2000, 2115), (train.Count, test.Count));
        var network = Network.Create(inputs: 784).Affine(16).ReLU().Affine(2).SoftmaxWithLoss().Build();
        var result = Trainer.Create().WithIterations(400).Train(network, train, test);
        var metrics = result.Model.Evaluate(test);
        Assert.True(metrics.MicroAccuracy >= 0.99, $"accuracy {metrics.MicroAccuracy}");
        Assert.Equal(2, metrics.NumberOfClasses);
        Assert.Equal(result.History[^1].TestAccuracy, metrics.MicroAccuracy);
    }

    [Fact]
    public void FromArrays_BytesAndFloats_KeepThePixelsAndCheckEveryValue()
    {
        var bytes = new byte[] { 0, 255, 51, 102, 1, 2, 3, 4 };
        var set = ImageSet.FromArrays(bytes, new[] { 1, 0 }, rows: 2, columns: 2);
        Assert.Equal(new[] { 0f, 1f, 0.2f, 0.4f }, set.GetImage(0));
        Assert.Equal((2, 1, 0), (set.Count, set.GetLabel(0), set.GetLabel(1)));
        var floats = ImageSet.FromArrays(new[] { 0f, 1f, 0.2f, 0.4f }, new[] { 3 }, rows: 1, columns: 4);
        Assert.Equal(new[] { 0f, 1f, 0.2f, 0.4f }, floats.GetImage(0));

        Assert.Equal("pixels", Assert.Throws<ArgumentException>(() => ImageSet.FromArrays(new byte[7], new[] { 1, 0 }, 2, 2)).ParamName);
        var label = Assert.Throws<ArgumentOutOfRangeException>(() => ImageSet.FromArrays(new byte[12], new[] { 1, 0, 256 }, 2, 2));
        Assert.Equal("labels", label.ParamName);
        Assert.Contains("labels[2] is 256", label.Message);
        var pixel = Assert.Throws<ArgumentOutOfRangeException>(() => ImageSet.FromArrays(new[] { 0f, 0.5f, 0f, 0f, 0f, float.NaN, 0f, 0f }, new[] { 0, 1 }, 2, 2));
        Assert.Equal("pixels", pixel.ParamName);
        Assert.Contains("pixels[5] (image 1, pixel 1)", pixel.Message);
        Assert.Equal("rows", Assert.Throws<ArgumentOutOfRangeException>(() => ImageSet.FromArrays(new byte[0], new int[0], 0, 2)).ParamName);
    }

    [Fact]
    public void Split_EightyTwenty_GivesTwoDisjointPartsOfTheWholeSameForSameSeed()
    {
        var set = mnist.Test.Take(1000);
        var (first, second) = set.Split(0.8, seed: 1);
        Assert.Equal((800, 200), (first.Count, second.Count));
        var all = Enumerable.Range(0, 1000).Select(i => string.Join(',', set.GetImage(i))).OrderBy(s => s).ToArray();
        var parts = Enumerable.Range(0, 800).Select(i => string.Join(',', first.GetImage(i)))
            .Concat(Enumerable.Range(0, 200).Select(i => string.Join(',', second.GetImage(i)))).OrderBy(s => s).ToArray();
        Assert.Equal(all, parts);
        Assert.Equal(first.GetImage(0), set.Split(0.8, seed: 1).First.GetImage(0));
        Assert.Equal(set.GetImage(300), set.Skip(300).GetImage(0));
        Assert.Equal(700, set.Skip(300).Count);
        Assert.Equal("fraction", Assert.Throws<ArgumentOutOfRangeException>(() => set.Split(1.5)).ParamName);
    }

    [Fact]
    public void Train_ThreeClasses_TrainsWhenLabelsAndOutputsAgree()
    {
        var indices = Enumerable.Range(0, 3000).Where(i => mnist.Train.GetLabel(i) <= 2).ToArray();
        var pixels = indices.SelectMany(i => mnist.Train.GetImage(i)).ToArray();
        var set = ImageSet.FromArrays(pixels, indices.Select(mnist.Train.GetLabel).ToArray(), 28, 28);
        var (train, validation) = set.Split(0.8, seed: 3);
        var result = Trainer.Create().WithIterations(200).WithSampling(Sampling.Shuffle)
            .Train(Network.Create(784).Affine(3).SoftmaxWithLoss().Build(), train, validation);
        Assert.True(result.History[^1].TestAccuracy > 0.9, $"accuracy {result.History[^1].TestAccuracy}");
    }

    // ─── Batch prediction ───────────────────────────────────────────────────────────────────────

    [Theory]
    [InlineData(Precision.Single)]
    [InlineData(Precision.Double)]
    public void Predict_AllTestImagesAtOnce_SameNumbersAsOneByOne(Precision precision)
    {
        var network = precision == Precision.Single ? trained.Single : trained.Double;
        var n = mnist.Test.Count;
        var images = Enumerable.Range(0, n).Select(mnist.Test.GetImage).ToArray();
        var flat = images.SelectMany(x => x).ToArray();
        var batch = network.Predict(flat, n);
        Assert.Equal(n * 10, batch.Length);
        var jagged = network.Predict(images);
        var classes = network.Classify(flat, n);
        Assert.Equal(classes, network.Classify(images));
        // One image alone goes the batch's way (a block of one row; each row's softmax computed
        // alone, in scalar arithmetic). Under the default settings (OpenBLAS where the system has
        // it): in double the very same bits (measured: all 100,000 numbers); in float32 OpenBLAS's
        // sgemm sums a 1-row product in another order than a 100-row one, so a score differs by
        // about one rounding of its own size (1e-6 for a score near 8), which is that much of a
        // probability, relatively: measured at most 5.8e-6 of max(p, 1e-3), 7.7e-6 of p (1e-6 is
        // below float32's reach here). The classes are the same.
        for (var i = 0; i < n; i++)
        {
            var one = network.Predict(images[i]);
            if (precision == Precision.Double) Assert.Equal(one, batch.AsSpan(i * 10, 10).ToArray());
            else
                for (var j = 0; j < 10; j++)
                    Assert.True(Math.Abs(one[j] - batch[i * 10 + j]) <= 1e-5 * Math.Max(one[j], 1e-3), $"image {i}: {one[j]} vs {batch[i * 10 + j]}");
            Assert.Equal(batch.AsSpan(i * 10, 10).ToArray(), jagged[i]);
            Assert.Equal(network.Classify(images[i]), classes[i]);
        }
        // The managed kernels sum a row in the same order whatever the block's other rows: with the
        // storage fixed (an image alone and its block then stored alike), all 10,000 to the last bit,
        // in both precisions.
        foreach (var storage in new[] { Backprop.Core.Backend.InputStorage.Dense, Backprop.Core.Backend.InputStorage.Sparse })
        {
            var settings = Backprop.Core.Linalg.settings(Backprop.Core.Backend.ProductBackend.Managed, storage, 2);
            T Under<T>(Func<T> f) => Backprop.Core.Linalg.Using(settings, Microsoft.FSharp.Core.FuncConvert.FromFunc(f));
            var managedBatch = Under(() => network.Predict(flat, n));
            for (var i = 0; i < n; i++)
                Assert.Equal(Under(() => network.Predict(images[i])), managedBatch.AsSpan(i * 10, 10).ToArray());
        }
        // Doubles: a Double network computes them in place; a Single one converts them 1,000 rows
        // at a time (as one image alone is converted), so the same numbers as one by one.
        var wide = Array.ConvertAll(flat, v => (double)v);
        var batchDouble = network.Predict(wide, n);
        for (var i = 0; i < n; i += 97)
        {
            var one = network.Predict(wide.AsSpan(i * 784, 784));
            if (precision == Precision.Double) Assert.Equal(one, batchDouble.AsSpan(i * 10, 10).ToArray());
            else
                for (var j = 0; j < 10; j++)
                    Assert.True(Math.Abs(one[j] - batchDouble[i * 10 + j]) <= 1e-5 * Math.Max(one[j], 1e-3), $"image {i} as doubles: {one[j]} vs {batchDouble[i * 10 + j]}");
        }
        Assert.Equal("images", Assert.Throws<ArgumentException>(() => network.Predict(flat, n - 1)).ParamName);
        Assert.Contains("images[1]", Assert.Throws<ArgumentException>(() => network.Predict(new[] { images[0], new float[3] })).Message);
    }

    // ─── Evaluation ─────────────────────────────────────────────────────────────────────────────

    [Fact]
    public void Evaluate_TestSet_GivesAccuracyPerClassFiguresAndTheConfusionMatrix()
    {
        var metrics = trained.Single.Evaluate(mnist.Test);
        Assert.Equal(trained.Single.Accuracy(mnist.Test), metrics.MicroAccuracy);
        Assert.Equal(10000, metrics.Count);
        Assert.Equal(10000, metrics.ConfusionMatrix.Sum(r => r.Sum()));
        var classes = trained.Single.Classify(Enumerable.Range(0, 10000).SelectMany(mnist.Test.GetImage).ToArray(), 10000);
        for (var c = 0; c < 10; c++)
        {
            var labelled = Enumerable.Range(0, 10000).Where(i => mnist.Test.GetLabel(i) == c).ToArray();
            var predicted = Enumerable.Range(0, 10000).Where(i => classes[i] == c).ToArray();
            Assert.Equal(labelled.Length, metrics.PerClassCount[c]);
            Assert.Equal((double)labelled.Count(i => classes[i] == c) / labelled.Length, metrics.PerClassRecall[c], 12);
            Assert.Equal((double)predicted.Count(i => mnist.Test.GetLabel(i) == c) / predicted.Length, metrics.PerClassPrecision[c], 12);
        }
        Assert.Equal(metrics.PerClassRecall.Average(), metrics.MacroAccuracy, 12);
        Assert.Contains("confusion matrix", metrics.ToString());
    }

    // ─── Async, sampling, evaluation sample ─────────────────────────────────────────────────────

    [Fact]
    public async Task TrainAsync_SameRunAsTrain_OnAThreadPoolThread()
    {
        // The caller's thread id is no test: an async test itself runs on a pool thread, which the
        // pool may hand the training to once the caller awaits. What "off the caller" means is that
        // TrainAsync returns while training is still going: the first report waits on a gate that
        // is only opened after TrainAsync has returned. Run on the caller, it would wait out the
        // 30 s timeout and record false.
        var trainer = Trainer.Create().WithIterations(120).WithSeed(5);
        var train = mnist.Train.Take(3000);
        using var gate = new ManualResetEventSlim();
        var reports = new List<(bool GateOpened, bool PoolThread, int Thread)>();
        var progress = new SynchronousProgress<EpochReport>(_ =>
            reports.Add((gate.Wait(TimeSpan.FromSeconds(30)), Thread.CurrentThread.IsThreadPoolThread, Environment.CurrentManagedThreadId)));
        var task = trainer.TrainAsync(TrainedFixture.Build(), train, mnist.Test.Take(300), progress);
        Assert.False(task.IsCompleted);
        gate.Set();
        var viaTask = await task;
        var direct = trainer.Train(TrainedFixture.Build(), train, mnist.Test.Take(300));
        Assert.Equal(direct.History.SelectMany(r => r.Losses), viaTask.History.SelectMany(r => r.Losses));
        Assert.Equal(direct.History.Select(r => r.TestAccuracy), viaTask.History.Select(r => r.TestAccuracy));
        Assert.Equal(4, reports.Count);
        Assert.All(reports, r => Assert.True(r.GateOpened && r.PoolThread));
        Assert.Single(reports.Select(r => r.Thread).Distinct());
    }

    [Fact]
    public async Task TrainAsync_CancelledOrBadArguments_CompletesWithCancelledOrThrowsAtOnce()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var result = await Trainer.Create().TrainAsync(TrainedFixture.Build(), mnist.Train.Take(500), null, null, cts.Token);
        Assert.True(result.Cancelled);
        Assert.Equal(0, result.History[^1].Epoch);
        Assert.Throws<ArgumentNullException>(() => { _ = Trainer.Create().TrainAsync(TrainedFixture.Build(), null!); });
    }

    [Fact]
    public void Train_WithEvaluationSampleAndSampling_MeasuresTheFirstImagesAndDrawsBatchesAsTold()
    {
        var train = mnist.Train.Take(2000);
        var trainer = Trainer.Create().WithIterations(40).WithEvaluationSample(300);
        var result = trainer.Train(TrainedFixture.Build(), train, mnist.Test);
        Assert.Equal(result.Model.Accuracy(mnist.Test.Take(300)), result.History[^1].TestAccuracy);
        Assert.Equal(result.Model.Accuracy(train.Take(300)), result.History[^1].TrainAccuracy);
        var losses = new[] { Sampling.WithReplacement, Sampling.Shuffle, Sampling.Sequential }
            .Select(s => trainer.WithSampling(s).Train(TrainedFixture.Build(), train).History.SelectMany(r => r.Losses).ToArray()).ToArray();
        Assert.NotEqual(losses[0], losses[1]);
        Assert.NotEqual(losses[1], losses[2]);
        Assert.Equal("count", Assert.Throws<ArgumentOutOfRangeException>(() => trainer.WithEvaluationSample(0)).ParamName);
        Assert.Equal("sampling", Assert.Throws<ArgumentOutOfRangeException>(() => trainer.WithSampling((Sampling)5)).ParamName);
    }

    // ─── Inspection ─────────────────────────────────────────────────────────────────────────────

    [Fact]
    public void GetParameters_BookNetwork_NamedShapedCopies()
    {
        var network = TrainedFixture.Build();
        var parameters = network.GetParameters();
        Assert.Equal(new[] { "W1", "b1", "W2", "b2" }, parameters.Keys);
        Assert.Equal(new[] { 784, 50 }, parameters["W1"].Shape);
        Assert.Equal(new[] { 10 }, parameters["b2"].Shape);
        Assert.Equal(784 * 50, parameters["W1"].Length);
        Assert.All(parameters["b1"].ToSingleArray(), v => Assert.Equal(0f, v));
        var w = parameters["W1"].ToSingleArray();
        var std = Math.Sqrt(w.Select(v => (double)v * v).Average());
        Assert.InRange(std, 0.009, 0.011); // N(0, 0.01²)
        w[0] = 1000f;
        Assert.NotEqual(1000f, network.GetParameters()["W1"].ToSingleArray()[0]);
        Assert.Equal(Precision.Double, trained.Double.GetParameters()["W2"].Precision);
    }

    [Fact]
    public void ToString_Trainer_ListsEverySetting()
    {
        var text = Trainer.Create().WithLearningRate(0.05).WithEpochs(3).WithSampling(Sampling.Shuffle).WithEvaluationSample(1000).ToString();
        Assert.Equal("Trainer { Optimizer = Sgd(learningRate: 0.05), WeightDecay = 0, BatchSize = 100, Epochs = 3, Seed = 42, Sampling = Shuffle, EvaluationSample = 1000, Backend = Auto }", text);
        Assert.Contains("Iterations = 10000", Trainer.Create().ToString());
        Assert.Equal(3, Trainer.Create().WithEpochs(3).Epochs);
    }
}
