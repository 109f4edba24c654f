// Makes the digit PNGs of data/samples from the first MNIST test images: black ink on white,
// 56 x 56 pixels, so that `predict` shows its scaling and inversion on them.
// Run from the repository root:
//   dotnet build src/Core.fsproj -c Release
//   dotnet fsi scripts/make-samples.fsx
#r "../artifacts/bin/Core/release/Backprop.Core.dll"
#r "nuget: SkiaSharp, 3.119.4"
#r "nuget: SkiaSharp.NativeAssets.Linux.NoDependencies, 3.119.4"

open System.IO
open Backprop.Core
open SkiaSharp

let _, test = Mnist.load (__SOURCE_DIRECTORY__ + "/../data/mnist")
for n in 0 .. 4 do
    use bitmap = new SKBitmap(56, 56)
    for y in 0 .. 55 do
        for x in 0 .. 55 do
            let v = 255uy - test.Pixels[n * 784 + (y / 2) * 28 + x / 2]
            bitmap.SetPixel(x, y, SKColor(v, v, v))
    use data = bitmap.Encode(SKEncodedImageFormat.Png, 100)
    let file = Path.Combine(__SOURCE_DIRECTORY__, "..", "data", "samples", $"digit-%d{test.Labels[n]}-test%d{n}.png")
    File.WriteAllBytes(file, data.ToArray())
    printfn $"{Path.GetFullPath file}"
