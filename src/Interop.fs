namespace Backprop.Core.Interop

// Non-generic entry points into the core for languages that cannot call F# inline functions
// (C#: the facade in src/CSharpFacade). Each is the core's own function at one element type;
// nothing here learns or decides anything.

open System
open System.IO
open System.Threading
open MathNet.Numerics.LinearAlgebra
open Backprop.Core

/// Blocks of rows through Network.predict and softmax (the body of Api.ProbabilitiesOfRows).
module private Rows =
    let inline probabilitiesOfRows (model: Model< ^T >) (values: ^T[]) (count: int) : ^T[] =
        let inputs = if count = 0 then 0 else values.Length / count
        let classes = List.last (Network.sizes model.Layers)
        let out = Array.zeroCreate (count * classes)
        for start in 0 .. Evaluate.blockSize .. count - 1 do
            let rows = min count (start + Evaluate.blockSize) - start
            // The block's rows into a column-major array by hand: slicing and DenseOfRowMajor
            // (through IEnumerable) cost more than the product itself.
            let a = Array.zeroCreate (rows * inputs)
            for i in 0 .. rows - 1 do
                let from = (start + i) * inputs
                for j in 0 .. inputs - 1 do
                    a[j * rows + i] <- values[from + j]
            let p = (Functions.softmax (Network.predict model (Matrix< ^T>.Build.Dense(rows, inputs, a)))).ToColumnMajorArray()
            for i in 0 .. rows - 1 do
                for j in 0 .. classes - 1 do
                    out[(start + i) * classes + j] <- p[j * rows + i]
        out

open Rows

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
        Api.Config(learningRate, batchSize, iterations, seed, Sampling.WithReplacement, 0)

    /// A TrainConfig from plain values; evalSample 0 evaluates the whole sets each epoch.
    static member Config(learningRate: float, batchSize: int, iterations: int, seed: int, sampling: Sampling, evalSample: int) : TrainConfig =
        { LearningRate = learningRate
          BatchSize = batchSize
          Iterations = iterations
          Seed = seed
          Sampling = sampling
          EvalSample = if evalSample > 0 then Some evalSample else None }

    /// The class probabilities of `count` flattened samples (row-major, count × inputs values),
    /// row-major count × classes, computed as Evaluate does: Network.predict on blocks of
    /// Evaluate.blockSize rows, each row's softmax. In float32.
    static member ProbabilitiesOfRows(model: Model<float32>, values: float32[], count: int) : float32[] = probabilitiesOfRows model values count

    /// The class probabilities of `count` flattened samples, in float64 (see the float32 overload).
    static member ProbabilitiesOfRows(model: Model<float>, values: float[], count: int) : float[] = probabilitiesOfRows model values count

    /// The confusion matrix on a whole dataset, [true class, predicted class], in float32 (Evaluate.confusion).
    static member Confusion(model: Model<float32>, data: Dataset, classes: int) : int[,] = Evaluate.confusion classes model data

    /// The confusion matrix on a whole dataset, in float64.
    static member Confusion(model: Model<float>, data: Dataset, classes: int) : int[,] = Evaluate.confusion classes model data

    /// The named parameters (W1, b1, ...) of a model: name, shape, row-major copy of the values.
    static member Parameters(model: Model<float32>) : struct (string * int[] * float32[])[] =
        Network.parameters model |> List.map (fun (name, v) -> struct (name, Value.shape v, Value.toRowMajor v)) |> Array.ofList

    /// The named parameters of a model, in float64.
    static member Parameters(model: Model<float>) : struct (string * int[] * float[])[] =
        Network.parameters model |> List.map (fun (name, v) -> struct (name, Value.shape v, Value.toRowMajor v)) |> Array.ofList

    /// Writes a model to a stream as an .npz archive (Npz.write: no extras, no metadata); the stream stays open.
    static member Write(stream: Stream, model: Model<float32>) : unit = Npz.write stream model [] []

    /// Writes a float64 model to a stream as an .npz archive.
    static member Write(stream: Stream, model: Model<float>) : unit = Npz.write stream model [] []

    /// Saves a model to an .npz file through SafeWrite.file (atomic; OutputError names the file).
    static member Save(path: string, model: Model<float32>) : unit = SafeWrite.file path (fun s -> Npz.write s model [] [])

    /// Saves a float64 model to an .npz file through SafeWrite.file.
    static member Save(path: string, model: Model<float>) : unit = SafeWrite.file path (fun s -> Npz.write s model [] [])
