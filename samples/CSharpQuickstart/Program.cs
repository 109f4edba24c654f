// Trains the book's two-layer network on MNIST from C#, through the Backprop facade only.
// Run: dotnet run -c Release --project samples/CSharpQuickstart [-- ITERATIONS]
using Backprop;

var iterations = args.Length > 0 ? int.Parse(args[0]) : 10_000;
var mnist = Mnist.Load();

var network = Network.Create(inputs: 784)
    .Affine(50).ReLU()
    .Affine(10).SoftmaxWithLoss()
    .WithSeed(42)
    .Build();

var trainer = Trainer.Create()
    .WithLearningRate(0.1)
    .WithBatchSize(100)
    .WithIterations(iterations);

// SynchronousProgress reports on the training thread, before Train returns (Progress<T> would
// post each report to the thread pool, to be printed later, perhaps after "done").
var progress = new SynchronousProgress<EpochReport>(r =>
    Console.WriteLine($"epoch {r.Epoch}  iter {r.Iteration}  train acc {r.TrainAccuracy:F4}  test acc {r.TestAccuracy:F4}  loss {r.MeanLoss:F4}"));

var result = trainer.Train(network, mnist.Train, mnist.Test, progress);
Console.WriteLine($"done: test acc {result.History[^1].TestAccuracy:F4}");

var image = mnist.Test.GetImage(0);
var probabilities = result.Model.Predict(image);
var predicted = Array.IndexOf(probabilities, probabilities.Max());
Console.WriteLine($"test image 0: label {mnist.Test.GetLabel(0)}, predicted {predicted} (p = {probabilities[predicted]:F3})");
