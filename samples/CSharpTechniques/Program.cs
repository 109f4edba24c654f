// Chapter 6 from C#: Adam, He's initial weights, Batch Normalization, Dropout and weight decay,
// through the Backprop facade only; the trained network saved and loaded with its BatchNorm state.
// Run: dotnet run -c Release --project samples/CSharpTechniques [-- EPOCHS]
using Backprop;

var epochs = args.Length > 0 ? int.Parse(args[0]) : 5;
var mnist = Mnist.Load();
var (train, validation) = mnist.Train.Take(20_000).Split(0.9, seed: 1);

// Each hidden block as the book's MultiLayerNetExtend: Affine, BatchNorm, activation, Dropout.
var network = Network.Create(inputs: 784)
    .Affine(100).BatchNorm().ReLU().Dropout(0.2)
    .Affine(100).BatchNorm().ReLU().Dropout(0.2)
    .Affine(10).SoftmaxWithLoss()
    .WithWeightInit(WeightInit.He)
    .WithSeed(42)
    .Build();

var trainer = Trainer.Create()
    .WithOptimizer(Optimizer.Adam(learningRate: 0.001))
    .WithWeightDecay(1e-4)
    .WithBatchSize(100)
    .WithEpochs(epochs);
Console.WriteLine(trainer);

var progress = new SynchronousProgress<EpochReport>(r =>
    Console.WriteLine($"epoch {r.Epoch}  iter {r.Iteration}  train acc {r.TrainAccuracy:F4}  validation acc {r.TestAccuracy:F4}  loss {r.MeanLoss:F4}"));
var result = trainer.Train(network, train, validation, progress);
Console.WriteLine($"{string.Join(" → ", result.Model.Layers)}");
Console.WriteLine($"test acc {result.Model.Accuracy(mnist.Test):F4}");

// Prediction runs in inference mode: BatchNorm with its running statistics, Dropout scaled by
// 1 - ratio, so the same image always gets the same numbers. The file keeps the running
// statistics: the loaded network predicts the very same probabilities.
using var file = new MemoryStream();
result.Model.Save(file);
file.Position = 0;
var loaded = NeuralNetwork.Load(file);
var images = Enumerable.Range(0, 100).SelectMany(mnist.Test.GetImage).ToArray();
var same = result.Model.Predict(images, 100).SequenceEqual(loaded.Predict(images, 100));
Console.WriteLine(same ? "saved and loaded: the same predictions" : "the loaded network predicts differently");
return same ? 0 : 1;
