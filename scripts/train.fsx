// Trains the book's two-layer network with the core's own functions: training as a fold of
// Training.step over mini-batches, in plain sight, accuracy printed once an epoch.
// Run from the repository root:
//   dotnet build src/Core.fsproj -c Release
//   dotnet fsi scripts/train.fsx [ITERATIONS]
#r "../artifacts/bin/Core/release/Backprop.Core.dll"
#r "nuget: MathNet.Numerics, 5.0.0"
#r "nuget: System.Numerics.Tensors, 10.0.0"

open Backprop.Core

let iterations = match fsi.CommandLineArgs with [| _; n |] -> int n | _ -> 10000
let train, test = Mnist.load (__SOURCE_DIRECTORY__ + "/../data/mnist")
let config = { Training.bookRecipe with Iterations = iterations }
let perEpoch = Training.iterationsPerEpoch config train.Count
let lr = float32 config.LearningRate

// The book's network (784-50-10, ReLU), weights N(0, 0.01²) drawn from seed 42, in float32.
let initial: Model<float32> = Network.init config.Seed Training.bookWeightInitStd Training.bookNetwork

// The fold: each step takes the training state (model, optimizer state, step count) and a
// mini-batch, and gives back a new state.
let step (state: TrainState<float32>) (indices: int[]) =
    let state', loss = Training.step lr state (Dataset.batch train indices)
    if state'.Step % perEpoch = 0 || state'.Step = iterations then
        printfn $"iter %d{state'.Step}: loss %.4f{loss}, train acc %.4f{Evaluate.accuracy state'.Model train}, test acc %.4f{Evaluate.accuracy state'.Model test}"
    state'

let trained =
    Training.batchIndices (config.Seed + 1) config.BatchSize train.Count
    |> Seq.truncate iterations
    |> Seq.fold step (Training.start initial)

printfn $"done: test acc %.4f{Evaluate.accuracy trained.Model test}"
