namespace Backprop.Core.Interop

// Non-generic entry points into the core for languages that cannot call F# inline functions
// (C#: the facade in src/CSharpFacade). Each is the core's own function at one element type;
// nothing here learns or decides anything.

open System
open System.IO
open System.Threading
open MathNet.Numerics.LinearAlgebra
open Backprop.Core

/// Blocks of rows through Network.predict and softmax (the body of Api.ProbabilitiesOfRows),
/// stored as the trainer's evaluation stores its images (Evaluate.predictions over
/// Linalg.gatherImages): sparse rows where the settings' input storage says so, in arrays reused
/// from block to block.
module private Rows =
    /// The first `rows` rows of `values` (row-major, `inputs` a row) as a rows × inputs matrix in
    /// buffer's arrays, read from the caller's memory with no copy in between
    /// (Backend/RowGather.fs) and stored as Linalg.gatherImages stores images: the nonzeros in
    /// compressed rows (so that the first product skips the zeros) when the input storage in
    /// effect is Sparse, or Auto and at most a third of the values are nonzero; else dense,
    /// column-major. The matrix changes when the buffer is gathered into again.
    let inline gather (buffer: Linalg.ImageBuffer< ^T >) (values: ReadOnlySpan< ^T >) (inputs: int) (rows: int) : Matrix< ^T > =
        let count = rows * inputs
        let limit =
            match (Linalg.current ()).InputStorage with
            | Linalg.InputStorage.Dense -> -1
            | Linalg.InputStorage.Sparse -> count
            | _ -> count / 3
        let storage = Storage.SparseCompressedRowMatrixStorage< ^T>.OfValue(rows, inputs, LanguagePrimitives.GenericZero< ^T >)
        let nnz =
            if limit < 0 then -1
            else
                if buffer.ColumnIndices.Length < limit + Backend.RowGather.Room then
                    buffer.ColumnIndices <- GC.AllocateUninitializedArray(limit + Backend.RowGather.Room)
                    buffer.Values <- GC.AllocateUninitializedArray(limit + Backend.RowGather.Room)
                Backend.RowGather.sparseRows values inputs rows storage.RowPointers buffer.ColumnIndices buffer.Values limit
        if nnz >= 0 then
            // MathNet's compressed-row storage over the buffer's arrays (entries past
            // RowPointers[rows] are not part of the matrix), as Linalg.gatherImages builds it.
            storage.ColumnIndices <- buffer.ColumnIndices
            storage.Values <- buffer.Values
            Matrix< ^T>.Build.Sparse storage
        else
            if buffer.Dense.Length <> count then buffer.Dense <- GC.AllocateUninitializedArray count // every element is written
            Backend.RowGather.denseColumnMajor values inputs rows buffer.Dense
            Matrix< ^T>.Build.Dense(rows, inputs, buffer.Dense)

    /// Api.ProbabilitiesOfRows: blocks of Evaluate.blockSizeFor rows gathered straight from `values`,
    /// Network.predict, then each row's softmax alone.
    let inline probabilitiesOfRows (model: Model< ^T >) (values: ReadOnlySpan< ^T >) (count: int) : ^T[] =
        let inputs = if count = 0 then 0 else values.Length / count
        let classes = List.last (Network.sizes model.Layers)
        let out = GC.AllocateUninitializedArray(count * classes) // every element is written
        let buffer = Linalg.ImageBuffer() // one block's rows, reused
        let block = Evaluate.blockSizeFor model
        let mutable start = 0
        while start < count do
            let rows = min count (start + block) - start
            let scores = Network.predict model (gather buffer (values.Slice(start * inputs, rows * inputs)) inputs rows)
            let s = match scores.AsColumnMajorArray() with null -> scores.ToColumnMajorArray() | a -> a
            // Each row's softmax (the book's exp(a - max) / Σ exp(a - max)) one row at a time, in
            // scalar arithmetic: Functions.softmax vectorizes across the rows of a block, so its
            // last bits for a row depend on the block's size; this way a sample gets the same
            // bits alone (Probabilities) as in a block of any size.
            for i in 0 .. rows - 1 do
                let o = (start + i) * classes
                let mutable m = s[i]
                for j in 1 .. classes - 1 do
                    m <- max m s[j * rows + i]
                let mutable sum = LanguagePrimitives.GenericZero< ^T >
                for j in 0 .. classes - 1 do
                    let e = exp (s[j * rows + i] - m)
                    out[o + j] <- e
                    sum <- sum + e
                for j in 0 .. classes - 1 do
                    out[o + j] <- out[o + j] / sum
            start <- start + rows
        out

    /// The two-core run of `step` (Pipeline.epochsWatchedBy: the numbers of Run.epochs, or of
    /// Run.epochsWith for Training.stepWith) from `initial`, as a list of its reports, each also
    /// passed to `report` on the calling thread, in order: as soon as its evaluation (on the
    /// second core, while the next epoch trains) is done, between two steps; the last ones when
    /// the run ends. The token is observed before every step: a run cancelled before its first
    /// step has no report; one cancelled later ends after the step in progress, with a last,
    /// partial epoch. A run cancelled by `report` itself (early stopping) ends at that report, as
    /// if no step had been taken after its epoch: the reports after it are neither passed on nor
    /// returned (the steps the next epoch took meanwhile are dropped).
    let inline watched
        ([<InlineIfLambda>] step: TrainState< ^T > -> Matrix< ^T > * Labels< ^T > -> TrainState< ^T > * ^T)
        (config: TrainConfig)
        (train: Dataset)
        (test: Dataset)
        (initial: Model< ^T >)
        (token: CancellationToken)
        (report: EpochReport< ^T > -> unit)
        : EpochReport< ^T > list =
        if token.IsCancellationRequested then []
        else
            // Evaluated reports by epoch, put there by the thread that evaluated them; the
            // training thread passes them on in order between its steps.
            let evaluated = System.Collections.Concurrent.ConcurrentDictionary<int, EpochReport< ^T >>()
            let next = ref 1
            let cut = ref Int32.MaxValue // the epoch of a report that cancelled the run
            let passOn (r: EpochReport< ^T >) =
                if r.Epoch = next.Value && r.Epoch <= cut.Value then
                    next.Value <- r.Epoch + 1
                    let before = token.IsCancellationRequested
                    report r
                    if not before && token.IsCancellationRequested then cut.Value <- r.Epoch
            let passOnEvaluated () =
                let mutable r = Unchecked.defaultof<EpochReport< ^T >>
                while evaluated.TryRemove(next.Value, &r) do
                    passOn r
            let reports =
                Pipeline.epochsWatchedBy step config train test (Training.start initial) (fun _ _ -> passOnEvaluated (); not token.IsCancellationRequested) (fun r -> evaluated[r.Epoch] <- r)
                |> Seq.toList
            for r in reports do
                passOn r
            reports |> List.filter (fun r -> r.Epoch <= cut.Value)

open Rows

/// The core at float32 and float64, for callers that cannot use F# inline functions.
[<AbstractClass; Sealed>]
type Api =
    /// A model of the given layers with weights from N(0, weightInitStd²) drawn from the seed, in float32.
    static member InitSingle(seed: int, weightInitStd: float, layers: Layer[]) : Model<float32> = Network.init seed weightInitStd (List.ofArray layers)

    /// A model of the given layers with weights from N(0, weightInitStd²) drawn from the seed, in float64.
    static member InitDouble(seed: int, weightInitStd: float, layers: Layer[]) : Model<float> = Network.init seed weightInitStd (List.ofArray layers)

    /// A model of the given layers with weights drawn as weightInit says (Network.initWith), in float32.
    static member InitSingle(seed: int, weightInit: WeightInit, layers: Layer[]) : Model<float32> = Network.initWith weightInit seed (List.ofArray layers)

    /// A model of the given layers with weights drawn as weightInit says (Network.initWith), in float64.
    static member InitDouble(seed: int, weightInit: WeightInit, layers: Layer[]) : Model<float> = Network.initWith weightInit seed (List.ofArray layers)

    /// The run of Run.epochs (the book's SGD at config.LearningRate) in float32, computed on two
    /// cores (Pipeline): each report is passed to `report` on this thread as soon as it is
    /// evaluated, in order, and the reports are returned. The token is observed before every
    /// step: a cancelled run ends after the step in progress, with a last, partial epoch (no
    /// report at all if it is cancelled before the first step).
    static member Train(config: TrainConfig, train: Dataset, test: Dataset, initial: Model<float32>, token: CancellationToken, report: Action<EpochReport<float32>>) : EpochReport<float32>[] =
        watched (Training.step (ofFloat config.LearningRate: float32)) config train test initial token report.Invoke |> Array.ofList

    /// The run of Run.epochs in float64 on two cores, as the float32 overload.
    static member Train(config: TrainConfig, train: Dataset, test: Dataset, initial: Model<float>, token: CancellationToken, report: Action<EpochReport<float>>) : EpochReport<float>[] =
        watched (Training.step (ofFloat config.LearningRate: float)) config train test initial token report.Invoke |> Array.ofList

    /// The run of Run.epochsWith in float32 with the optimizer of `specs` (one transformation, or
    /// their chain: [ WeightDecay λ; Adam ... ]) on two cores, as Train without specs;
    /// config.LearningRate is unused.
    static member Train(specs: OptimizerSpec[], config: TrainConfig, train: Dataset, test: Dataset, initial: Model<float32>, token: CancellationToken, report: Action<EpochReport<float32>>) : EpochReport<float32>[] =
        watched (Training.stepWith (Optimizer.ofSpec (List.ofArray specs))) config train test initial token report.Invoke |> Array.ofList

    /// The run of Run.epochsWith in float64 with the optimizer of `specs` on two cores, as the float32 overload.
    static member Train(specs: OptimizerSpec[], config: TrainConfig, train: Dataset, test: Dataset, initial: Model<float>, token: CancellationToken, report: Action<EpochReport<float>>) : EpochReport<float>[] =
        watched (Training.stepWith (Optimizer.ofSpec (List.ofArray specs))) config train test initial token report.Invoke |> Array.ofList

    /// The core's own run, Run.epochsWith (Optimizer.ofSpec specs) from Training.start initial,
    /// in float32, with no cancellation: the reference the facade's runs are tested against.
    static member RunEpochsWith(specs: OptimizerSpec[], config: TrainConfig, train: Dataset, test: Dataset, initial: Model<float32>) : EpochReport<float32>[] =
        Run.epochsWith (Optimizer.ofSpec (List.ofArray specs)) config train test (Training.start initial) |> Array.ofSeq

    /// The core's own run, Run.epochsWith, in float64 (see the float32 overload).
    static member RunEpochsWith(specs: OptimizerSpec[], config: TrainConfig, train: Dataset, test: Dataset, initial: Model<float>) : EpochReport<float>[] =
        Run.epochsWith (Optimizer.ofSpec (List.ofArray specs)) config train test (Training.start initial) |> Array.ofSeq

    /// The class probabilities (softmax of the scores) of one flattened image, in float32: the
    /// batch path (ProbabilitiesOfRows) on one row, so that one image gives the numbers it
    /// gives in a batch.
    static member Probabilities(model: Model<float32>, image: ReadOnlySpan<float32>) : float32[] = probabilitiesOfRows model image 1

    /// The class probabilities of one flattened image, in float64 (see the float32 overload).
    static member Probabilities(model: Model<float>, image: ReadOnlySpan<float>) : float[] = probabilitiesOfRows model image 1

    /// The class probabilities of one flattened image, in float32 (see the span overload).
    static member Probabilities(model: Model<float32>, image: float32[]) : float32[] = probabilitiesOfRows model (ReadOnlySpan image) 1

    /// The class probabilities of one flattened image, in float64 (see the span overload).
    static member Probabilities(model: Model<float>, image: float[]) : float[] = probabilitiesOfRows model (ReadOnlySpan image) 1

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
    /// row-major count × classes, computed as Evaluate does: Network.predict (inference mode) on
    /// blocks of Evaluate.blockSizeFor rows stored as the evaluation stores images (sparse where the
    /// input storage in effect says so), each row's softmax computed alone: a sample's numbers do
    /// not depend on the others (Probabilities gives the same bits). In float32.
    /// The values are read where they lie, block by block, with no copy of the whole.
    static member ProbabilitiesOfRows(model: Model<float32>, values: ReadOnlySpan<float32>, count: int) : float32[] = probabilitiesOfRows model values count

    /// The class probabilities of `count` flattened samples, in float64 (see the float32 overload).
    static member ProbabilitiesOfRows(model: Model<float>, values: ReadOnlySpan<float>, count: int) : float[] = probabilitiesOfRows model values count

    /// The class probabilities of `count` flattened samples, in float32 (see the span overload).
    static member ProbabilitiesOfRows(model: Model<float32>, values: float32[], count: int) : float32[] = probabilitiesOfRows model (ReadOnlySpan values) count

    /// The class probabilities of `count` flattened samples, in float64 (see the span overload).
    static member ProbabilitiesOfRows(model: Model<float>, values: float[], count: int) : float[] = probabilitiesOfRows model (ReadOnlySpan values) count

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

    /// The named states (running_mean1, running_var1, ... of BatchNorm layers, dropout1, ... the
    /// key of Dropout layers) of a model: name, shape, row-major copy of the values.
    static member States(model: Model<float32>) : struct (string * int[] * float32[])[] =
        Network.states model |> List.map (fun (name, v) -> struct (name, Value.shape v, Value.toRowMajor v)) |> Array.ofList

    /// The named states of a model, in float64.
    static member States(model: Model<float>) : struct (string * int[] * float[])[] =
        Network.states model |> List.map (fun (name, v) -> struct (name, Value.shape v, Value.toRowMajor v)) |> Array.ofList

    /// Writes a model to a stream as an .npz archive (Npz.write: no extras, no metadata); the stream stays open.
    static member Write(stream: Stream, model: Model<float32>) : unit = Npz.write stream model [] []

    /// Writes a float64 model to a stream as an .npz archive.
    static member Write(stream: Stream, model: Model<float>) : unit = Npz.write stream model [] []

    /// Saves a model to an .npz file through SafeWrite.file (atomic; OutputError names the file).
    static member Save(path: string, model: Model<float32>) : unit = SafeWrite.file path (fun s -> Npz.write s model [] [])

    /// Saves a float64 model to an .npz file through SafeWrite.file.
    static member Save(path: string, model: Model<float>) : unit = SafeWrite.file path (fun s -> Npz.write s model [] [])
