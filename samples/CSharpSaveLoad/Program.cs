// Trains on your own arrays, evaluates, saves the model, and loads it in a new process (this
// program again, with --load) that must predict the same classes.
// Run: dotnet run -c Release --project samples/CSharpSaveLoad [-- MODEL.npz]
using System.Diagnostics;
using Backprop;

var mnist = Mnist.Load();
var images = Enumerable.Range(0, 20).Select(mnist.Test.GetImage).ToArray(); // the first 20 test images

if (args is ["--load", var saved])
{
    // The new process: the network comes from the file alone.
    var loaded = NeuralNetwork.Load(saved);
    Console.WriteLine($"classes: {string.Join(' ', loaded.Classify(images))}");
    return 0;
}

// Your own data: pixels in [0, 1] (or bytes 0-255) one image after another, and a class per
// image. Here the first 12,000 MNIST training images, split 80/20 at random.
const int count = 12_000;
var pixels = new float[count * 784];
var labels = new int[count];
for (var i = 0; i < count; i++)
{
    mnist.Train.GetImage(i).CopyTo(pixels, i * 784);
    labels[i] = mnist.Train.GetLabel(i);
}
var (train, validation) = ImageSet.FromArrays(pixels, labels, rows: 28, columns: 28).Split(0.8, seed: 1);

var network = Network.Create(inputs: 784).Affine(50).ReLU().Affine(10).SoftmaxWithLoss().Build();
var trainer = Trainer.Create().WithIterations(1200).WithSampling(Sampling.Shuffle);
Console.WriteLine(trainer);
var progress = new SynchronousProgress<EpochReport>(r =>
    Console.WriteLine($"epoch {r.Epoch}  iter {r.Iteration}  validation acc {r.TestAccuracy:F4}"));
var result = await trainer.TrainAsync(network, train, validation, progress);

// The full evaluation on the test set: accuracy, per-class precision and recall, confusion matrix.
var metrics = result.Model.Evaluate(mnist.Test);
Console.Write(metrics);
Console.WriteLine($"macro accuracy {metrics.MacroAccuracy:F4}, precision of 8s {metrics.PerClassPrecision[8]:F4}");

var path = args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "backprop-sample.npz");
result.Model.Save(path); // the CLI's format: `backprop evaluate --model PATH` reads it too
var classes = $"classes: {string.Join(' ', result.Model.Classify(images))}";
Console.WriteLine(classes);

// A new process loads the file and classifies the same images.
var self = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true };
if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") self.ArgumentList.Add(typeof(Program).Assembly.Location);
foreach (var a in new[] { "--load", path }) self.ArgumentList.Add(a);
using var child = Process.Start(self)!;
var reloaded = child.StandardOutput.ReadToEnd().Trim();
child.WaitForExit();
Console.WriteLine($"new process {reloaded}");
Console.WriteLine(reloaded == classes ? "saved and loaded: the same classes" : "the loaded model differs");
return reloaded == classes && child.ExitCode == 0 ? 0 : 1;
