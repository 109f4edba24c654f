namespace Backprop.Core

// The data a network trains on, and the plain (one-core) run of training on it: a Dataset of
// image bytes, the mini-batches gathered from it, accuracy on a whole set, and Run.epochs, the
// fold of Core.fs's Training.step over a Dataset's batches with an evaluation after each epoch
// (Run.epochsWith: the same with any optimizer's Training.stepWith).
// Pipeline.fs runs the same thing on two cores, with the same numbers.

open System
open MathNet.Numerics.LinearAlgebra

/// A labelled image set kept as bytes (one per pixel, 0-255), converted to the element type only
/// for the rows a batch or an evaluation block needs. Read one with the Mnist module.
type Dataset =
    { /// Count × PixelCount bytes, one image after the other, row-major within an image.
      Pixels: byte[]
      /// One class index per image.
      Labels: byte[]
      /// The number of images.
      Count: int
      /// The height of an image.
      Rows: int
      /// The width of an image.
      Columns: int }

    /// The pixels in one image (784 for MNIST).
    member d.PixelCount = d.Rows * d.Columns

/// Turning a Dataset into the matrices and labels that the layers take.
[<RequireQualifiedAccess>]
module Dataset =
    /// The images at the given indices as a matrix with one row per image, scaled to [0, 1],
    /// stored in `buffer`'s arrays. A matrix in a reused buffer changes when the buffer is
    /// gathered into again: use it first.
    let inline imagesInto (buffer: Linalg.ImageBuffer< ^T >) (d: Dataset) (indices: int[]) : Matrix< ^T > =
        // Each pixel byte v becomes v / 255. Where most pixels are 0 (four in five for MNIST),
        // the backend keeps only the nonzero ones, and the products skip the zeros; either way
        // the layers see a Matrix with the same values (Linalg.gatherImages).
        Linalg.gatherImages buffer d.Pixels d.PixelCount indices

    /// The images at the given indices as a matrix with one row per image, scaled to [0, 1].
    let inline images (d: Dataset) (indices: int[]) : Matrix< ^T > = imagesInto (Linalg.ImageBuffer()) d indices

    /// The class indices of the images at the given indices.
    let labels (d: Dataset) (indices: int[]) : int[] = indices |> Array.map (fun i -> int d.Labels[i])

    /// The labels at the given indices as one-hot rows (10 classes for MNIST).
    let inline oneHot (classes: int) (d: Dataset) (indices: int[]) : Matrix< ^T > =
        Matrix< ^T>.Build.Dense(indices.Length, classes, fun i j -> if int d.Labels[indices[i]] = j then LanguagePrimitives.GenericOne else LanguagePrimitives.GenericZero)

    /// A mini-batch: the images at the given indices and their class indices.
    let inline batch (d: Dataset) (indices: int[]) : Matrix< ^T > * Labels< ^T > =
        images d indices, Labels.ClassIndices(labels d indices)

    /// A mini-batch whose images are stored in `buffer` (see imagesInto).
    let inline batchInto (buffer: Linalg.ImageBuffer< ^T >) (d: Dataset) (indices: int[]) : Matrix< ^T > * Labels< ^T > =
        imagesInto buffer d indices, Labels.ClassIndices(labels d indices)

    /// The mini-batches for a sequence of index arrays, their images gathered into a ring of
    /// `ring` reused arrays, so that a training run does not allocate (and the collector does not
    /// sweep) a fresh image matrix per step. Batch k's matrix is overwritten by batch k + ring:
    /// each batch must be used by then, as a training step, which holds no batch after it
    /// returns, does. Each enumeration has its own ring; `gather` runs each batch's gather (e.g.
    /// on another core), given the array to gather into. Once batch k is gathered, the images of
    /// batch k + 1 are asked into cache, so they arrive while step k runs.
    let inline batchesIn (ring: int) (gather: (unit -> Matrix< ^T > * Labels< ^T >) -> 'b) (d: Dataset) (indices: seq<int[]>) : seq<'b> =
        seq {
            let buffers = Array.init ring (fun _ -> Linalg.ImageBuffer< ^T >())
            use e = indices.GetEnumerator()
            let mutable next = if e.MoveNext() then Some e.Current else None
            let mutable k = 0
            while next.IsSome do
                let ix = next.Value
                next <- if e.MoveNext() then Some e.Current else None
                let buffer = buffers[k % ring]
                let batch = gather (fun () -> batchInto buffer d ix)
                next |> Option.iter (Backend.Gather.prefetchRows d.Pixels d.PixelCount)
                k <- k + 1
                yield batch
        }

    /// The first count images, as a Dataset of their own (e.g. the first 3 for the gradient check).
    let take (count: int) (d: Dataset) : Dataset =
        let n = min count d.Count
        { d with Pixels = d.Pixels[.. n * d.PixelCount - 1]; Labels = d.Labels[.. n - 1]; Count = n }

/// Evaluating a model on a whole Dataset.
[<RequireQualifiedAccess>]
module Evaluate =
    /// Rows per block when a whole dataset is evaluated: bounds the memory an evaluation takes.
    /// (1,000-row blocks were no faster and raised the peak memory by a third.)
    let blockSize = 100

    /// Rows per block for evaluating this model: `blockSize`, or 500 where an Affine layer after
    /// the first has 250,000 weights or more (784-1000x4-10's 1000 x 1000). The dense products of
    /// such layers pack their whole weight matrix for every block, 4 MB for 100 rows' 0.2 GFLOP;
    /// with 500-row blocks they pack it a fifth as often. The 60,000 training images of a
    /// 784-1000x4-10 model took 3.1 s instead of 3.7 on two cores (docs/PERFORMANCE.md). Each
    /// row's scores come from that row alone, so the blocks change nothing but the rounding.
    let blockSizeFor (model: Model<'T>) =
        match model.Layers |> List.choose (function Layer.Affine(i, o) -> Some(int64 i * int64 o) | _ -> None) with
        | _ :: later when later |> List.exists (fun weights -> weights >= 250_000L) -> 500
        | _ -> blockSize

    /// The predicted class of images first .. last - 1 of d, in blocks of `rows` from first.
    /// The model does not change meanwhile: its first layer's W is transposed for the sparse
    /// products once, not for every block (Backend.Sparse.withFixedWeights). Each block keeps
    /// only its classes, so its matrices are made in the arrays of the block before
    /// (Linalg.reusingResults).
    let inline private predictionsIn (rows: int) (model: Model< ^T >) (d: Dataset) (first: int) (last: int) : int[] =
        let buffer = Linalg.ImageBuffer() // one block's images, reused
        Backend.Sparse.withFixedWeights (fun () ->
            // each block's activations in the arrays of the block before (Linalg.reusingResults)
            Linalg.reusingResults (fun giveBack ->
                [| for start in first .. rows .. last - 1 do
                       let classes = Network.argmax (Network.predict model (Dataset.imagesInto buffer d [| start .. min last (start + rows) - 1 |]))
                       giveBack ()
                       yield! classes |]))

    /// The predicted class of every image of d, computed block by block in inference mode. Where
    /// a second core is free (Backend.Halves.splitPays: the training waiting for its last
    /// evaluation, or a thread that is not the helper), the two halves of the blocks are computed
    /// at once, one on each core; the blocks are the same either way, and so are the predictions.
    let inline predictions (model: Model< ^T >) (d: Dataset) : int[] =
        let rows = blockSizeFor model
        if d.Count >= 2 * rows && Backend.Halves.splitPays () then
            let middle = d.Count / rows / 2 * rows
            let mutable first, second = [||], [||]
            Backend.Halves.run (fun () -> first <- predictionsIn rows model d 0 middle) (fun () -> second <- predictionsIn rows model d middle d.Count)
            Array.append first second
        else
            predictionsIn rows model d 0 d.Count

    /// The fraction of images in d whose predicted class is their label.
    let inline accuracy (model: Model< ^T >) (d: Dataset) : float =
        let predicted = predictions model d
        let correct = predicted |> Array.mapi (fun i p -> if p = int d.Labels[i] then 1 else 0) |> Array.sum
        float correct / float d.Count

    /// The confusion matrix of the model on d: entry [t, p] counts the images of class t
    /// predicted as p.
    let inline confusion (classes: int) (model: Model< ^T >) (d: Dataset) : int[,] =
        let counts = Array2D.zeroCreate classes classes
        predictions model d |> Array.iteri (fun i p -> counts[int d.Labels[i], p] <- counts[int d.Labels[i], p] + 1)
        counts

/// A training run on Datasets, on one core: the config's mini-batches drawn from the training
/// set, Training's fold over them, each epoch's model evaluated on both sets.
[<RequireQualifiedAccess>]
module Run =
    /// The config's Iterations mini-batches, drawn from its seed as its Sampling says, gathered
    /// into a ring of two reused arrays (see Dataset.batchesIn).
    let inline batches (config: TrainConfig) (train: Dataset) : seq<Matrix< ^T > * Labels< ^T >> =
        Training.batchesBy config.Sampling (config.Seed + 1) config.BatchSize train.Count
        |> Seq.truncate config.Iterations
        |> Dataset.batchesIn 2 (fun gather -> gather ()) train

    /// The run without evaluation, one report per epoch, lazily (accuracies NaN).
    let inline trained (config: TrainConfig) (train: Dataset) (initial: TrainState< ^T >) : seq<EpochReport< ^T >> =
        batches config train |> Training.trainedOn config (Training.iterationsPerEpoch config train.Count) initial

    /// The run with any optimizer (Optimizer.adam, a chain with weight decay, ...) without
    /// evaluation, one report per epoch, lazily (accuracies NaN); config.LearningRate is unused,
    /// the optimizer holds its own.
    let inline trainedWith (optimizer: Optimizer< ^T >) (config: TrainConfig) (train: Dataset) (initial: TrainState< ^T >) : seq<EpochReport< ^T >> =
        batches config train |> Training.trainedOnWith optimizer (Training.iterationsPerEpoch config train.Count) initial

    /// The report with the accuracy of its model on the training and test sets (on their first
    /// config.EvalSample images when that is set).
    let inline evaluated (config: TrainConfig) (train: Dataset) (test: Dataset) (report: EpochReport< ^T >) =
        let sample d = match config.EvalSample with Some n -> Dataset.take n d | None -> d
        { report with TrainAccuracy = Evaluate.accuracy report.Model (sample train); TestAccuracy = Evaluate.accuracy report.Model (sample test) }

    /// The run from a training state, one report per epoch, lazily: `trained`, each epoch then
    /// evaluated. Enumerating the sequence again repeats the same run.
    let inline epochsFrom (config: TrainConfig) (train: Dataset) (test: Dataset) (initial: TrainState< ^T >) : seq<EpochReport< ^T >> =
        trained config train initial |> Seq.map (evaluated config train test)

    /// The run with any optimizer from a training state, one report per epoch, lazily:
    /// `trainedWith`, each epoch then evaluated.
    let inline epochsWith (optimizer: Optimizer< ^T >) (config: TrainConfig) (train: Dataset) (test: Dataset) (initial: TrainState< ^T >) : seq<EpochReport< ^T >> =
        trainedWith optimizer config train initial |> Seq.map (evaluated config train test)

    /// The run from a model (no optimizer state, step 0), one report per epoch, lazily. The
    /// last report holds the trained model.
    let inline epochs (config: TrainConfig) (train: Dataset) (test: Dataset) (initial: Model< ^T >) : seq<EpochReport< ^T >> =
        epochsFrom config train test (Training.start initial)
