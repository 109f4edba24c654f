/// What each subcommand does: read its options, call the core, print. No learning logic here.
module Backprop.Cli.Commands

open System
open System.IO
open System.Diagnostics
open Argu
open Backprop
open Backprop.Cli.Args

/// A bad option value: the option and what is wrong, for a one-line message and exit code 2.
exception UsageError of string

let private usage message = raise (UsageError message)

/// Checks that an option's value is positive, naming the option when it is not.
let private positive (option: string) value =
    if value <= 0 then usage $"{option} must be a positive integer, got %d{value}"
    value

/// The MNIST directory: the one given, else data/mnist in the working directory or in a folder
/// above it or above the program (so a fresh clone and an installed tool both find it).
let findData (given: string option) =
    match given with
    | Some dir -> dir
    | None ->
        let rec up (dir: DirectoryInfo) =
            if isNull dir then None
            else
                let candidate = Path.Combine(dir.FullName, "data", "mnist")
                if Directory.Exists candidate then Some candidate else up dir.Parent
        [ Environment.CurrentDirectory; AppContext.BaseDirectory ]
        |> List.tryPick (fun d -> up (DirectoryInfo d))
        |> Option.defaultWith (fun () -> usage "no MNIST data found: data/mnist is missing here and above the program; give one with --data DIR")

/// Selects the matrix-product backend; a missing OpenBLAS is a usage error naming --backend.
let private selectBackend (backend: BackendArg option) =
    // MathNet spreads large elementwise maps over every core; training keeps one core and the
    // per-epoch evaluation the other, so MathNet works on the thread that calls it.
    MathNet.Numerics.Control.UseSingleThread()
    let choice =
        match defaultArg backend Auto with
        | Auto -> Linalg.Backend.Auto
        | Openblas -> Linalg.Backend.OpenBlas
        | Managed -> Linalg.Backend.Managed
        | Mathnet -> Linalg.Backend.MathNet
    try Linalg.useBackend choice
    with :? ArgumentException as e ->
        let reason = e.Message.Split(" (Parameter")[0]
        usage $"--backend openblas: {reason}"

let private activationOf =
    function
    | Some Sigmoid -> Activation.Sigmoid
    | _ -> Activation.ReLU

let private sizesOf (hidden: int list option) (inputs: int) =
    let hidden = defaultArg hidden [ 50 ]
    hidden |> List.iter (positive "--hidden" >> ignore)
    inputs :: hidden @ [ 10 ]

/// "784-50-10 relu"
let private describeNet (config: TrainConfig) =
    let sizes = config.Sizes |> List.map string |> String.concat "-"
    $"""{sizes} {(if config.Activation = Activation.Sigmoid then "sigmoid" else "relu")}"""

/// `train`: the book's recipe unless told otherwise; one line per epoch and a closing summary.
let train (args: ParseResults<TrainArgs>) =
    let lr = args.GetResult(TrainArgs.Lr, defaultValue = Training.bookRecipe.LearningRate)
    if not (lr > 0.0 && Double.IsFinite lr) then usage $"--lr must be a positive number, got %g{lr}"
    let std = args.GetResult(Weight_Init_Std, defaultValue = Training.bookRecipe.WeightInitStd)
    if not (std > 0.0 && Double.IsFinite std) then usage $"--weight-init-std must be a positive number, got %g{std}"
    let batch = args.GetResult(Batch, defaultValue = Training.bookRecipe.BatchSize) |> positive "--batch"
    if args.Contains Iters && args.Contains Epochs then usage "give --iters or --epochs, not both"
    let iters = args.TryGetResult Iters |> Option.map (positive "--iters")
    let epochs = args.TryGetResult Epochs |> Option.map (positive "--epochs")
    let sizes = sizesOf (args.TryGetResult TrainArgs.Hidden) 784
    let dataDir = findData (args.TryGetResult TrainArgs.Data)
    selectBackend (args.TryGetResult TrainArgs.Backend)
    let config0 =
        { Training.bookRecipe with
            Sizes = sizes
            Activation = activationOf (args.TryGetResult TrainArgs.Activation)
            LearningRate = lr
            BatchSize = batch
            WeightInitStd = std
            Seed = args.GetResult(TrainArgs.Seed, defaultValue = Training.bookRecipe.Seed) }
    let clock = Stopwatch.StartNew()
    let trainSet, testSet = Mnist.load dataDir
    let perEpoch = Training.iterationsPerEpoch config0 trainSet.Count
    let config =
        { config0 with
            Sizes = trainSet.PixelCount :: List.tail config0.Sizes
            Iterations =
                match iters, epochs with
                | Some n, _ -> n
                | None, Some e -> e * perEpoch
                | None, None -> Training.bookRecipe.Iterations }
    let precision = args.GetResult(Precision, defaultValue = Single)
    printfn
        $"""train: network {describeNet config} + softmax-with-loss, lr %g{config.LearningRate}, batch %d{config.BatchSize} (random, with replacement), iterations %d{config.Iterations} (%d{perEpoch} per epoch), weights N(0, %g{config.WeightInitStd}^2), seed %d{config.Seed}, precision {(if precision = Single then "single" else "double")}, backend {Linalg.describe ()}, data {Path.GetFullPath dataDir}"""
    // One code path for both precisions: the element type is fixed by the initial model's type.
    let inline run (initial: Model< ^T >) =
        Training.epochsOverlapped config trainSet testSet initial
        |> Seq.map (fun r -> {| Epoch = r.Epoch; Iteration = r.Iteration; TrainAccuracy = r.TrainAccuracy; TestAccuracy = r.TestAccuracy; MeanLoss = r.MeanLoss |})
    let reports =
        match precision with
        | Single -> run (Training.initialModel config: Model<float32>)
        | Double -> run (Training.initialModel config: Model<float>)
    let last =
        reports
        |> Seq.fold
            (fun _ report ->
                printfn
                    $"epoch %d{report.Epoch}  iter %d{report.Iteration}  train acc %.4f{report.TrainAccuracy}  test acc %.4f{report.TestAccuracy}  loss %.4f{report.MeanLoss}  elapsed %.1f{clock.Elapsed.TotalSeconds}s"
                Some report)
            None
    match last with
    | Some r ->
        printfn
            $"done: iterations %d{r.Iteration}, epochs %d{r.Epoch}, train acc %.4f{r.TrainAccuracy}, test acc %.4f{r.TestAccuracy}, final loss %.4f{r.MeanLoss}, elapsed %.1f{clock.Elapsed.TotalSeconds}s, garbage collections %d{GC.CollectionCount 0}/%d{GC.CollectionCount 1}/%d{GC.CollectionCount 2} (gen0/1/2)"
    | None -> printfn "done: no iterations"
    0

/// `gradcheck`: mean |backprop - numerical| for each parameter, on the first images (float64).
let gradcheck (args: ParseResults<GradcheckArgs>) =
    let count = args.GetResult(Count, defaultValue = 3) |> positive "--count"
    let sizes = sizesOf (args.TryGetResult GradcheckArgs.Hidden) 784
    let dataDir = findData (args.TryGetResult GradcheckArgs.Data)
    selectBackend (args.TryGetResult GradcheckArgs.Backend)
    let trainSet, _ = Mnist.load dataDir
    let sizes = trainSet.PixelCount :: List.tail sizes
    let activation = activationOf (args.TryGetResult GradcheckArgs.Activation)
    let model: Model<float> =
        Network.init (args.GetResult(GradcheckArgs.Seed, defaultValue = 42)) 0.01 (Network.layers activation sizes)
    let first = Dataset.take count trainSet
    let x, t = Dataset.batch first [| 0 .. first.Count - 1 |]
    printfn $"""gradcheck: network {sizes |> List.map string |> String.concat "-"}, first %d{first.Count} training images, h = 1e-4, float64, backend {Linalg.describe ()}"""
    for name, diff in Network.gradientCheck model x t do
        printfn $"%-3s{name}: %.3e{diff}"
    0

/// `demo`: the shopping examples of 5.4, forward (price) and backward (gradients).
let demo () =
    let show title (r: ShoppingResult) =
        printfn $"{title}"
        printfn $"  price: %g{r.Price}"
        for name, g in r.Gradients do
            printfn $"  d{name}: %g{g}"
    show "buy_apple: 2 apples at 100, tax 1.1" (Shopping.buyApple 100.0 2.0 1.1)
    show "buy_apple_orange: 2 apples at 100, 3 oranges at 150, tax 1.1" (Shopping.buyAppleOrange 100.0 2.0 150.0 3.0 1.1)
    0
