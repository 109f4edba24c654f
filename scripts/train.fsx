// Trains the book's two-layer network with the core's own functions: the fold of SGD steps over
// mini-batches in plain sight, accuracy printed once an epoch.
// Run from the repository root:
//   dotnet build src/Core.fsproj -c Release
//   dotnet fsi scripts/train.fsx [ITERATIONS]
#r "../artifacts/bin/Core/release/Backprop.Core.dll"
#r "nuget: MathNet.Numerics, 5.0.0"
#r "nuget: System.Numerics.Tensors, 10.0.0"

open Backprop

let iterations = match fsi.CommandLineArgs with [| _; n |] -> int n | _ -> 10000
let train, test = Mnist.load (__SOURCE_DIRECTORY__ + "/../data/mnist")
let config = { Training.bookRecipe with Iterations = iterations }
let perEpoch = Training.iterationsPerEpoch config train.Count
let lr = float32 config.LearningRate

// The fold: each step takes the model and a mini-batch and gives back a new model.
let step (model: Model<float32>) (i, indices: int[]) =
    let model', loss = Training.sgdStep lr model (Dataset.batch train indices)
    if (i + 1) % perEpoch = 0 || i + 1 = iterations then
        printfn $"iter %d{i + 1}: loss %.4f{loss}, train acc %.4f{Evaluate.accuracy model' train}, test acc %.4f{Evaluate.accuracy model' test}"
    model'

let trained =
    Training.batchIndices (config.Seed + 1) config.BatchSize train.Count
    |> Seq.truncate iterations
    |> Seq.indexed
    |> Seq.fold step (Training.initialModel config)

printfn $"done: test acc %.4f{Evaluate.accuracy trained test}"
