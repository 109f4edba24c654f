namespace Backprop.Core.Interop

// Non-generic entry points into the core for languages that cannot call F# inline functions
// (C#: the facade in src/CSharpFacade). Each is the core's own function at one element type;
// nothing here learns or decides anything.

open System
open System.Threading
open MathNet.Numerics.LinearAlgebra
open Backprop.Core

/// The core at float32 and float64, for callers that cannot use F# inline functions.
[<AbstractClass; Sealed>]
type Api =
    /// A model of the given layers with weights from N(0, weightInitStd²) drawn from the seed, in float32.
    static member InitSingle(seed: int, weightInitStd: float, layers: Layer[]) : Model<float32> = Network.init seed weightInitStd (List.ofArray layers)

    /// A model of the given layers with weights from N(0, weightInitStd²) drawn from the seed, in float64.
    static member InitDouble(seed: int, weightInitStd: float, layers: Layer[]) : Model<float> = Network.init seed weightInitStd (List.ofArray layers)

    /// The run of Run.epochs in float32, on the config's batches; the token is observed
    /// before every step: a cancelled run ends after the step in progress, with a last, partial epoch.
    static member Epochs(config: TrainConfig, train: Dataset, test: Dataset, initial: Model<float32>, token: CancellationToken) : seq<EpochReport<float32>> =
        Api.Batches(config, train, token) |> Seq.map (Dataset.batch train) |> Training.trainedOn config (Training.iterationsPerEpoch config train.Count) (Training.start initial) |> Seq.map (Run.evaluated config train test)

    /// The run of Run.epochs in float64, on the config's batches; the token is observed before every step.
    static member Epochs(config: TrainConfig, train: Dataset, test: Dataset, initial: Model<float>, token: CancellationToken) : seq<EpochReport<float>> =
        Api.Batches(config, train, token) |> Seq.map (Dataset.batch train) |> Training.trainedOn config (Training.iterationsPerEpoch config train.Count) (Training.start initial) |> Seq.map (Run.evaluated config train test)

    /// The config's batches, ending early once the token is cancelled.
    static member private Batches(config: TrainConfig, train: Dataset, token: CancellationToken) =
        Training.batchesBy config.Sampling (config.Seed + 1) config.BatchSize train.Count
        |> Seq.truncate config.Iterations
        |> Seq.takeWhile (fun _ -> not token.IsCancellationRequested)

    /// The class probabilities (softmax of the scores) of one flattened image, in float32.
    static member Probabilities(model: Model<float32>, image: float32[]) : float32[] =
        (Functions.softmax (Network.predict model (Matrix<float32>.Build.Dense(1, image.Length, image)))).Row(0).ToArray()

    /// The class probabilities of one flattened image, in float64.
    static member Probabilities(model: Model<float>, image: float[]) : float[] =
        (Functions.softmax (Network.predict model (Matrix<float>.Build.Dense(1, image.Length, image)))).Row(0).ToArray()

    /// Accuracy on a whole dataset, in float32.
    static member Accuracy(model: Model<float32>, data: Dataset) : float = Evaluate.accuracy model data

    /// Accuracy on a whole dataset, in float64.
    static member Accuracy(model: Model<float>, data: Dataset) : float = Evaluate.accuracy model data

    /// The layer sizes of a model, input first.
    static member Sizes(layers: Layer list) : int[] = Network.sizes layers |> Array.ofList

    /// The layers in the book's names: "Affine(784, 50)", "ReLU", "Sigmoid", "Tanh", "BatchNorm(100)", "Dropout(0.5)".
    static member LayerNames(layers: Layer list) : string[] =
        layers |> List.map Layer.describe |> Array.ofList

    /// A TrainConfig from plain values.
    static member Config(learningRate: float, batchSize: int, iterations: int, seed: int) : TrainConfig =
        { LearningRate = learningRate
          BatchSize = batchSize
          Iterations = iterations
          Seed = seed
          Sampling = Sampling.WithReplacement
          EvalSample = None }
