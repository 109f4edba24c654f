/// Micro-benchmarks of the Affine layer at batch 100 on the book's first layer (784 -> 50):
/// forward (x·W + b) and backward (dout·Wᵀ, xᵀ·dout, column sums), for each backend and
/// precision, on MNIST images stored dense or sparse, with GFLOP/s and allocations.
module Micro

open System
open BenchmarkDotNet.Attributes
open BenchmarkDotNet.Columns
open BenchmarkDotNet.Configs
open BenchmarkDotNet.Reports
open BenchmarkDotNet.Running
open BenchmarkDotNet.Jobs
open BenchmarkDotNet.Diagnosers
open MathNet.Numerics.LinearAlgebra
open Backprop.Core

/// Floating-point operations of one call: forward 2·N·784·50; backward twice that (dx and dW).
/// For sparse inputs the same count (a dense-equivalent rate): the products skip the zeros.
let flops (method: string) = (if method.StartsWith "Forward" then 1.0 else 2.0) * 2.0 * 100.0 * 784.0 * 50.0

/// A column with the rate reached: flops / mean time.
type GflopsColumn() =
    interface IColumn with
        member _.Id = "GFLOP/s"
        member _.ColumnName = "GFLOP/s"
        member _.AlwaysShow = true
        member _.Category = ColumnCategory.Custom
        member _.PriorityInCategory = 0
        member _.IsNumeric = true
        member _.UnitType = UnitType.Dimensionless
        member _.Legend = "floating-point operations per second, in 10^9"
        member _.IsAvailable _ = true
        member _.IsDefault(_, _) = false
        member this.GetValue(summary, case) = (this :> IColumn).GetValue(summary, case, SummaryStyle.Default)
        member _.GetValue(summary: Summary, case: BenchmarkCase, _: SummaryStyle) =
            match summary[case] with
            | null -> "-"
            | report when isNull report.ResultStatistics -> "-"
            | _ when not (case.Descriptor.WorkloadMethod.Name.StartsWith "Forward" || case.Descriptor.WorkloadMethod.Name.StartsWith "Backward") -> "-" // PredictBench
            | report -> sprintf "%.1f" (flops case.Descriptor.WorkloadMethod.Name / report.ResultStatistics.Mean)

/// The Affine layer on each backend and precision.
[<MemoryDiagnoser>]
type AffineBench() =
    let rng = Random(1)
    let mutable x32: Matrix<float32> = null
    let mutable p32 = Unchecked.defaultof<AffineParams<float32>>
    let mutable dout32: Matrix<float32> = null
    let mutable x64: Matrix<float> = null
    let mutable p64 = Unchecked.defaultof<AffineParams<float>>
    let mutable dout64: Matrix<float> = null
    let mutable cache32 = Unchecked.defaultof<AffineCache<float32>>
    let mutable cache64 = Unchecked.defaultof<AffineCache<float>>
    /// The settings of the parameters below, in effect in the set-up and in each benchmark call
    /// (Linalg.using: the two writes of an AsyncLocal it costs are part of each measured call).
    let mutable settings = Unchecked.defaultof<Linalg.Settings>

    /// The backend under test.
    [<Params("openblas", "managed")>]
    member val Backend = "" with get, set

    /// 1: each product on one thread (the kernels' own rates); 2: large products split in two
    /// halves over two threads (Backend/Halves.fs), as `train` runs them.
    [<Params(1, 2)>]
    member val Threads = 1 with get, set

    /// How x is stored: dense (every pixel) or sparse (the nonzero pixels, about one in five).
    [<Params("dense", "sparse")>]
    member val Inputs = "" with get, set

    /// Builds the inputs (the first 100 MNIST test images) under the settings of the parameters.
    [<GlobalSetup>]
    member this.Setup() =
        MathNet.Numerics.Control.UseSingleThread()
        settings <-
            Linalg.settings
                (if this.Backend = "openblas" then Linalg.Backend.OpenBlas else Linalg.Backend.Managed)
                (if this.Inputs = "sparse" then Linalg.InputStorage.Sparse else Linalg.InputStorage.Dense)
                this.Threads
        Linalg.using settings this.Build

    /// The inputs, built under the benchmark's settings (the gather reads the input storage).
    member private _.Build() =
        let dir = Mnist.tryFindShipped [ Environment.CurrentDirectory; AppContext.BaseDirectory ] |> Option.defaultWith (fun () -> failwith "data/mnist not found")
        let _, test = Mnist.load dir
        x64 <- Dataset.images test [| 0 .. 99 |]
        p64 <- { W = Matrix<float>.Build.Dense(784, 50, fun _ _ -> rng.NextDouble() - 0.5); b = Vector<float>.Build.Dense(50, 0.1) }
        dout64 <- Matrix<float>.Build.Dense(100, 50, fun _ _ -> rng.NextDouble() - 0.5)
        x32 <- Dataset.images test [| 0 .. 99 |]
        p32 <- { W = p64.W.Map float32; b = p64.b.Map float32 }
        dout32 <- dout64.Map float32
        cache32 <- snd (Affine.forward p32 x32)
        cache64 <- snd (Affine.forward p64 x64)

    /// x·W + b in float32.
    [<Benchmark>]
    member _.ForwardSingle() = Linalg.using settings (fun () -> Affine.forward p32 x32)

    /// dx, dW, db in float32.
    [<Benchmark>]
    member _.BackwardSingle() = Linalg.using settings (fun () -> Affine.backward cache32 dout32)

    /// x·W + b in float64.
    [<Benchmark>]
    member _.ForwardDouble() = Linalg.using settings (fun () -> Affine.forward p64 x64)

    /// dx, dW, db in float64.
    [<Benchmark>]
    member _.BackwardDouble() = Linalg.using settings (fun () -> Affine.backward cache64 dout64)

/// Predicting the 10,000 MNIST test images through the C# facade (the book's 784-50-10 network,
/// trained a little, the default settings), in float32 (a Single network fed floats) and float64
/// (a Double network fed doubles): one Predict call per image against one batch Predict call
/// (the rows read in place, in blocks of 100 stored as an evaluation stores them), and the
/// evaluation itself (Accuracy: the trainer's path, from the image bytes, argmax instead of
/// softmax) for scale. ShippingTests checks that the batch and the single calls give the same numbers.
[<MemoryDiagnoser>]
type PredictBench() =
    let mutable network = Unchecked.defaultof<Backprop.NeuralNetwork>
    let mutable test = Unchecked.defaultof<Backprop.ImageSet>
    let mutable images: float32[][] = null
    let mutable flat: float32[] = null
    let mutable wideImages: float[][] = null
    let mutable wideFlat: float[] = null

    /// Single: a float32 network, Predict on floats; Double: a float64 network, Predict on doubles.
    [<Params("Single", "Double")>]
    member val Precision = "" with get, set

    [<GlobalSetup>]
    member this.Setup() =
        let mnist = Backprop.Mnist.Load()
        let precision = if this.Precision = "Double" then Backprop.Precision.Double else Backprop.Precision.Single
        // Trained a little, so that ReLU passes a realistic share of units.
        let untrained = Backprop.Network.Create(784).Affine(50).ReLU().Affine(10).SoftmaxWithLoss().WithPrecision(precision).Build()
        network <- Backprop.Trainer.Create().WithIterations(300).Train(untrained, mnist.Train.Take(6000)).Model
        test <- mnist.Test
        images <- Array.init mnist.Test.Count mnist.Test.GetImage
        flat <- Array.concat images
        wideImages <- images |> Array.map (Array.map float)
        wideFlat <- Array.concat wideImages

    /// 10,000 calls of Predict(image).
    [<Benchmark(Baseline = true)>]
    member this.PredictOneByOne() =
        let mutable sum = 0.0
        if this.Precision = "Double" then
            for image in wideImages do
                sum <- sum + (network.Predict(ReadOnlySpan image))[0]
        else
            for image in images do
                sum <- sum + float (network.Predict(ReadOnlySpan image)).[0]
        sum

    /// One call of Predict(images, 10000).
    [<Benchmark>]
    member this.PredictBatch() =
        if this.Precision = "Double" then (network.Predict(ReadOnlySpan wideFlat, wideImages.Length))[0]
        else float (network.Predict(ReadOnlySpan flat, images.Length)).[0]

    /// The trainer's evaluation of the same images (Accuracy(test): blocks of 100 gathered from bytes, argmax).
    [<Benchmark>]
    member _.EvaluateAccuracy() = network.Accuracy test

[<EntryPoint>]
let main argv =
    // With --inProcess the job comes from the command line (e.g. `--job short --inProcess`: no
    // generated project to build, which took minutes on a loaded machine), else the short job below.
    let inProcess = argv |> Array.exists (fun a -> a.Equals("--inProcess", StringComparison.OrdinalIgnoreCase))
    let config =
        (if inProcess then ManualConfig.Union(DefaultConfig.Instance, ManualConfig.CreateEmpty()) else DefaultConfig.Instance.AddJob(Job.ShortRun.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(8)))
            .AddColumn(GflopsColumn())
            .WithOptions(ConfigOptions.DisableOptimizationsValidator)
            // The generated project's build took over the default 2 minutes on a loaded machine.
            .WithBuildTimeout(TimeSpan.FromMinutes 15.0)
    // No arguments: run every benchmark (the switcher would ask which, interactively).
    let argv = if argv.Length = 0 then [| "--filter"; "*" |] else argv
    BenchmarkSwitcher.FromTypes([| typeof<AffineBench>; typeof<PredictBench> |]).Run(argv, config) |> ignore
    0
