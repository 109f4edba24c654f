// Trains chapter 6's network with the core's own functions: 784-100-100-10 with He's initial
// weights, Batch Normalization after each hidden Affine layer and Adam (lr 0.001), for two
// epochs, as a fold of Training.stepWith over mini-batches in plain sight; accuracy printed once
// an epoch.
// Run from the repository root:
//   dotnet build src/Core.fsproj -c Release
//   dotnet fsi scripts/adam-batchnorm.fsx [EPOCHS]
#r "../artifacts/bin/Core/release/Backprop.Core.dll"
#r "nuget: MathNet.Numerics, 5.0.0"
#r "nuget: System.Numerics.Tensors, 10.0.0"

open Backprop.Core

let epochs = match fsi.CommandLineArgs with [| _; n |] -> int n | _ -> 2
let train, test = Mnist.load (__SOURCE_DIRECTORY__ + "/../data/mnist")
let batchSize, seed = 100, 42
let perEpoch = train.Count / batchSize
let iterations = epochs * perEpoch

// The network of the book's MultiLayerNetExtend: Affine → BatchNorm → ReLU per hidden layer,
// then Affine (and Softmax-with-Loss, implied). He's weights √(2/n)·N(0, 1), γ = 1, β = 0.
let layers = Network.extended Activation.ReLU [ 784; 100; 100; 10 ] true None
let initial: Model<float32> = Network.initWith WeightInit.He seed layers

// Adam at the book's defaults: its state (m.W1, v.W1, ...) rides in the training state.
let optimizer: Optimizer<float32> = Optimizer.adam 0.001 0.9 0.999

// The fold: each step takes the training state (model, optimizer state, step count) and a
// mini-batch, and gives back a new state. Evaluation runs in inference mode (BatchNorm with its
// running statistics).
let step (state: TrainState<float32>) (indices: int[]) =
    let state', loss = Training.stepWith optimizer state (Dataset.batch train indices)
    if state'.Step % perEpoch = 0 then
        printfn $"epoch %d{state'.Step / perEpoch} (iter %d{state'.Step}): loss %.4f{loss}, train acc %.4f{Evaluate.accuracy state'.Model train}, test acc %.4f{Evaluate.accuracy state'.Model test}"
    state'

let trained =
    Training.batchIndices (seed + 1) batchSize train.Count
    |> Seq.truncate iterations
    |> Seq.fold step (Training.startWith optimizer initial)

printfn $"done: %d{trained.Step} steps, test acc %.4f{Evaluate.accuracy trained.Model test}"
