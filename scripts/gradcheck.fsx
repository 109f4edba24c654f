// The book's gradient check (5.7.3): backpropagation against numerical differentiation on the
// first 3 training images, for W1, b1, W2, b2.
// Run from the repository root:
//   dotnet build src/Core.fsproj -c Release
//   dotnet fsi scripts/gradcheck.fsx
#r "../artifacts/bin/Core/release/Backprop.Core.dll"
#r "nuget: MathNet.Numerics, 5.0.0"
#r "nuget: System.Numerics.Tensors, 10.0.0"

open Backprop.Core

let train, _ = Mnist.load (__SOURCE_DIRECTORY__ + "/../data/mnist")
let model: Model<float> = Network.init 42 0.01 (Network.layers Activation.ReLU [ 784; 50; 10 ])
let x, t = Dataset.batch train [| 0; 1; 2 |]

for name, diff in Network.gradientCheck model x t do
    printfn $"%s{name}: %.3e{diff}"
