// Runs a model exported by `backprop export` with ONNX Runtime alone: the predicted class of MNIST
// test image 0 (from the IDX file given), or of an all-zero input when no file is given.
// Run: dotnet run -c Release --project samples/OnnxRun -- MODEL.onnx [t10k-images-idx3-ubyte.gz]
using System.IO.Compression;
using Microsoft.ML.OnnxRuntime;

using var session = new InferenceSession(args[0]);
var input = session.InputMetadata["x"];                   // x: [N, inputs], float or double
var inputs = input.Dimensions[1];
var image = new float[inputs];
if (args.Length > 1)
{
    using var file = new GZipStream(File.OpenRead(args[1]), CompressionMode.Decompress);
    var bytes = new byte[16 + inputs];                    // the IDX header, then image 0's pixels
    file.ReadExactly(bytes);
    for (var i = 0; i < inputs; i++) image[i] = bytes[16 + i] / 255f;
}
var shape = new long[] { 1, inputs };
var isDouble = input.ElementType == typeof(double);
using var x = isDouble
    ? OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(image, v => (double)v), shape)
    : OrtValue.CreateTensorValueFromMemory(image, shape);
using var options = new RunOptions();
using var outputs = session.Run(options, new[] { "x" }, new[] { x }, new[] { "probabilities" });
var probabilities = isDouble
    ? Array.ConvertAll(outputs[0].GetTensorDataAsSpan<double>().ToArray(), p => (float)p)
    : outputs[0].GetTensorDataAsSpan<float>().ToArray();
var predicted = Array.IndexOf(probabilities, probabilities.Max());
Console.WriteLine($"{(args.Length > 1 ? "test image 0" : "zero input")}: predicted {predicted} (p = {probabilities[predicted]:F3}), model by {session.ModelMetadata.ProducerName}");
