/// What each subcommand does: read its options, call the core, print. No learning logic here.
module Backprop.Cli.Commands

open System
open System.IO
open System.Diagnostics
open Argu
open Spectre.Console // the progress bar's extension methods
open Backprop.Core
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
        Mnist.tryFindShipped [ Environment.CurrentDirectory; AppContext.BaseDirectory ]
        |> Option.defaultWith (fun () -> usage "no MNIST data found: data/mnist is missing here and above the program; give one with --data DIR")

/// The settings the command runs under (the rest of it runs inside Linalg.using): the
/// matrix-product backend and how images are stored, with the default threads; a missing OpenBLAS
/// is a usage error naming --backend.
let private selectBackend (backend: BackendArg option) (inputs: InputStorageArg option) : Linalg.Settings =
    // MathNet spreads large elementwise maps over every core; training keeps one core and the
    // per-epoch evaluation the other, so MathNet works on the thread that calls it. (A choice for
    // the whole process, which is the CLI's own; the library and the facade never make it.)
    MathNet.Numerics.Control.UseSingleThread()
    let storage =
        match inputs with
        | Some Dense -> Linalg.InputStorage.Dense
        | Some Sparse -> Linalg.InputStorage.Sparse
        | Some InputStorageArg.Auto
        | None -> Linalg.InputStorage.Auto
    let choice =
        match defaultArg backend BackendArg.Auto with
        | BackendArg.Auto -> Linalg.Backend.Auto
        | Openblas -> Linalg.Backend.OpenBlas
        | Managed -> Linalg.Backend.Managed
        | Mathnet -> Linalg.Backend.MathNet
    try Linalg.settings choice storage (Linalg.defaults ()).Threads
    with :? ArgumentException as e ->
        let reason = e.Message.Split(" (Parameter")[0]
        usage $"--backend openblas: {reason}"

/// Where Debian's dataset-fashion-mnist package puts Fashion-MNIST.
let fashionDir = "/usr/share/datasets/fashion-mnist"

/// Fashion-MNIST's class names, by label.
let fashionClasses = [| "T-shirt/top"; "Trouser"; "Pullover"; "Dress"; "Coat"; "Sandal"; "Shirt"; "Sneaker"; "Bag"; "Ankle boot" |]

/// The data directory and the data set's name from --data and --dataset (at most one of them);
/// `fallback` names the data set when neither is given (e.g. the one a model was trained on).
let private resolveData (data: string option) (dataset: DatasetArg option) (fallback: string option) =
    match data, dataset, fallback with
    | Some _, Some _, _ -> usage "give --data or --dataset, not both"
    | Some dir, None, _ -> dir, "custom"
    | None, Some Fashion, _
    | None, None, Some "fashion" ->
        if not (Directory.Exists fashionDir) then
            raise (DataError(fashionDir, "Fashion-MNIST is not installed here; install it with: apt-get install dataset-fashion-mnist"))
        fashionDir, "fashion"
    | None, _, _ -> findData None, "mnist"

/// The name of class c in a data set ("7" for MNIST, "Sneaker" for Fashion-MNIST).
let private className (dataset: string) (c: int) = if dataset = "fashion" then $"{c} {fashionClasses[c]}" else string c

let private activationOf =
    function
    | Some Sigmoid -> Activation.Sigmoid
    | _ -> Activation.ReLU

let private sizesOf (hidden: int list option) (inputs: int) =
    let hidden = defaultArg hidden [ 50 ]
    hidden |> List.iter (positive "--hidden" >> ignore)
    inputs :: hidden @ [ 10 ]

/// "784-50-10 relu" for Affine layers with one activation between them, else the layer list
/// ("Affine(784, 50) ReLU Affine(50, 10) Sigmoid ...").
let describeLayers (layers: Layer list) =
    let sizes = Network.sizes layers |> List.map string |> String.concat "-"
    let rebuilt activation = try Network.layers activation (Network.sizes layers) = layers with _ -> false
    if rebuilt Activation.ReLU then $"{sizes} relu"
    elif rebuilt Activation.Sigmoid then $"{sizes} sigmoid"
    else
        layers
        |> List.map (function
            | Layer.Affine(i, o) -> $"Affine(%d{i}, %d{o})"
            | Layer.Relu -> "ReLU"
            | Layer.Sigmoid -> "Sigmoid"
            | layer -> Layer.describe layer)
        |> String.concat " "

/// The model in a file, at the precision asked for (the file's own when None).
let private loadModel (file: string) =
    if not (File.Exists file) then raise (DataError(file, "model file not found"))
    Npz.load file

/// Writes the per-epoch history as CSV or JSON, chosen by the file's extension (atomically).
let private writeMetrics (file: string) (rows: {| Epoch: int; Iteration: int; TrainAccuracy: float; TestAccuracy: float; MeanLoss: float; Seconds: float |} list) =
    let text =
        match Path.GetExtension(file).ToLowerInvariant() with
        | ".json" -> Text.Json.JsonSerializer.Serialize(rows, Text.Json.JsonSerializerOptions(WriteIndented = true))
        | _ ->
            let line (r: {| Epoch: int; Iteration: int; TrainAccuracy: float; TestAccuracy: float; MeanLoss: float; Seconds: float |}) =
                String.Format(Globalization.CultureInfo.InvariantCulture, "{0},{1},{2:R},{3:R},{4:R},{5:F3}", r.Epoch, r.Iteration, r.TrainAccuracy, r.TestAccuracy, r.MeanLoss, r.Seconds)
            String.concat "\n" ("epoch,iteration,train_acc,test_acc,loss,seconds" :: List.map line rows) + "\n"
    let full = Path.GetFullPath file
    let temp = full + ".tmp"
    File.WriteAllText(temp, text)
    File.Move(temp, full, overwrite = true)

/// Runs body with a way to show each epoch: in a terminal, a live progress bar (iteration,
/// loss, throughput, time left) with the epoch lines printed above it; otherwise (a pipe, a
/// file, or BACKPROP_PROGRESS=0) the plain epoch lines alone, as scripts read them.
let private withProgress (total: int) (body: (string -> int -> float -> unit) -> 'a) : 'a =
    let interactive =
        not Console.IsOutputRedirected && Environment.GetEnvironmentVariable "BACKPROP_PROGRESS" <> "0"
        && Spectre.Console.AnsiConsole.Profile.Capabilities.Interactive
    if not interactive then
        body (fun line _ _ -> printfn "%s" line)
    else
        let clock = Stopwatch.StartNew()
        let columns: Spectre.Console.ProgressColumn[] =
            [| Spectre.Console.TaskDescriptionColumn(); Spectre.Console.ProgressBarColumn(); Spectre.Console.PercentageColumn(); Spectre.Console.RemainingTimeColumn() |]
        Spectre.Console.AnsiConsole.Progress().AutoClear(true).Columns(columns).Start(fun ctx ->
                let task = ctx.AddTask("training", maxValue = float total)
                body (fun line iteration loss ->
                    Spectre.Console.AnsiConsole.WriteLine line
                    let rate = float iteration / max clock.Elapsed.TotalSeconds 1e-3
                    task.Description <- $"iter %d{iteration}/%d{total}  loss %.4f{loss}  %.0f{rate} it/s"
                    task.Value <- float iteration))

/// `train`: the book's recipe unless told otherwise; one line per epoch and a closing summary.
let train (args: ParseResults<TrainArgs>) =
    let lr = args.GetResult(TrainArgs.Lr, defaultValue = Training.bookRecipe.LearningRate)
    if not (lr > 0.0 && Double.IsFinite lr) then usage $"--lr must be a positive number, got %g{lr}"
    let std = args.GetResult(Weight_Init_Std, defaultValue = Training.bookWeightInitStd)
    if not (std > 0.0 && Double.IsFinite std) then usage $"--weight-init-std must be a positive number, got %g{std}"
    let batch = args.GetResult(Batch, defaultValue = Training.bookRecipe.BatchSize) |> positive "--batch"
    if args.Contains Iters && args.Contains Epochs then usage "give --iters or --epochs, not both"
    let iters = args.TryGetResult Iters |> Option.map (positive "--iters")
    let epochs = args.TryGetResult Epochs |> Option.map (positive "--epochs")
    let evalSample = args.TryGetResult Eval_Sample |> Option.map (positive "--eval-sample")
    let save = args.TryGetResult Save
    let metrics = args.TryGetResult Metrics
    let plotFile = args.TryGetResult Plot
    for option, file in [ "--save", save; "--metrics", metrics; "--plot", plotFile ] do
        match file with
        | Some f when Directory.Exists f -> usage $"{option} {f}: that is a folder; give a file name"
        | Some f when not (Directory.Exists(Path.GetDirectoryName(Path.GetFullPath f))) -> usage $"{option} {f}: the folder does not exist"
        | Some f when option = "--metrics" && not (List.contains (Path.GetExtension(f).ToLowerInvariant()) [ ".csv"; ".json" ]) ->
            usage $"--metrics {f}: give a .csv or .json file"
        | Some f when option = "--plot" && Path.GetExtension(f).ToLowerInvariant() <> ".png" -> usage $"--plot {f}: give a .png file"
        | _ -> ()
    let initFrom = args.TryGetResult Init_From |> Option.map (fun f -> f, loadModel f)
    let dataDir, datasetName = resolveData (args.TryGetResult TrainArgs.Data) (args.TryGetResult TrainArgs.Dataset) None
    // The rest of the command runs under the settings chosen.
    Linalg.using (selectBackend (args.TryGetResult TrainArgs.Backend) (args.TryGetResult TrainArgs.Input_Storage)) <| fun () ->
    let sizes =
        match initFrom with
        | Some(file, saved) ->
            if args.Contains TrainArgs.Hidden then usage $"--hidden and --init-from {file}: the model file sets the layer sizes"
            if args.Contains TrainArgs.Activation then usage $"--activation and --init-from {file}: the model file sets the activation"
            Network.sizes saved.Layers
        | None -> sizesOf (args.TryGetResult TrainArgs.Hidden) 784
    let config0 =
        { Training.bookRecipe with
            LearningRate = lr
            BatchSize = batch
            Seed = args.GetResult(TrainArgs.Seed, defaultValue = Training.bookRecipe.Seed)
            Sampling =
                match args.GetResult(TrainArgs.Sampling, defaultValue = With_Replacement) with
                | Shuffle -> Backprop.Core.Sampling.Shuffle
                | Sequential -> Backprop.Core.Sampling.Sequential
                | With_Replacement -> Backprop.Core.Sampling.WithReplacement
            EvalSample = evalSample }
    let clock = Stopwatch.StartNew()
    let trainSet, testSet = Mnist.load dataDir
    if sizes.Head <> trainSet.PixelCount then
        match initFrom with
        | Some(file, _) -> raise (DataError(file, $"the model takes %d{sizes.Head} inputs, the images of {dataDir} have %d{trainSet.PixelCount} pixels"))
        | None -> ()
    let sparse = Linalg.storesSparse trainSet.Pixels trainSet.PixelCount
    let perEpoch = Training.iterationsPerEpoch config0 trainSet.Count
    // The network: the model file's layers, or the sizes asked for (the input size from the data).
    let layers =
        match initFrom with
        | Some(_, saved) -> saved.Layers
        | None -> Network.layers (activationOf (args.TryGetResult TrainArgs.Activation)) (trainSet.PixelCount :: List.tail sizes)
    let config =
        { config0 with
            Iterations =
                match iters, epochs with
                | Some n, _ -> n
                | None, Some e -> e * perEpoch
                | None, None -> Training.bookRecipe.Iterations }
    let precision =
        match args.TryGetResult Precision, initFrom with
        | Some p, _ -> p
        | None, Some(_, SavedModel.Double _) -> Double
        | None, _ -> Single
    let sampling =
        match config.Sampling with
        | Backprop.Core.Sampling.Shuffle -> "shuffled each epoch"
        | Backprop.Core.Sampling.Sequential -> "in order"
        | _ -> "random, with replacement"
    let start = match initFrom with Some(file, _) -> $"parameters from {file}" | None -> $"weights N(0, %g{std}^2)"
    printfn
        $"""train: network {describeLayers layers} + softmax-with-loss, lr %g{config.LearningRate}, batch %d{config.BatchSize} ({sampling}), iterations %d{config.Iterations} (%d{perEpoch} per epoch), {start}, seed %d{config.Seed}, precision {(if precision = Single then "single" else "double")}, backend {Linalg.describe ()}, inputs {(if sparse then "sparse (zero pixels skipped)" else "dense")}, data {Path.GetFullPath dataDir}"""
    let metadata =
        [ "learning_rate", Text.Json.Nodes.JsonValue.Create config.LearningRate :> Text.Json.Nodes.JsonNode
          "batch_size", Text.Json.Nodes.JsonValue.Create config.BatchSize
          "iterations", Text.Json.Nodes.JsonValue.Create config.Iterations
          "seed", Text.Json.Nodes.JsonValue.Create config.Seed
          "sampling", Text.Json.Nodes.JsonValue.Create sampling
          "dataset", Text.Json.Nodes.JsonValue.Create datasetName
          "data", Text.Json.Nodes.JsonValue.Create(Path.GetFullPath dataDir) ]
    // One code path for both precisions: the element type is fixed by the initial model's type.
    let inline run (initial: Model< ^T >) =
        let reports =
            withProgress config.Iterations (fun show ->
                Pipeline.epochs config trainSet testSet initial
                |> Seq.map (fun r ->
                    show
                        $"epoch %d{r.Epoch}  iter %d{r.Iteration}  train acc %.4f{r.TrainAccuracy}  test acc %.4f{r.TestAccuracy}  loss %.4f{r.MeanLoss}  elapsed %.1f{clock.Elapsed.TotalSeconds}s"
                        r.Iteration
                        r.MeanLoss
                    r, {| Epoch = r.Epoch; Iteration = r.Iteration; TrainAccuracy = r.TrainAccuracy; TestAccuracy = r.TestAccuracy; MeanLoss = r.MeanLoss; Seconds = clock.Elapsed.TotalSeconds |})
                |> Seq.toList)
        let losses = reports |> Array.ofList |> Array.collect (fun (r, _) -> r.Losses)
        match List.tryLast reports with
        | Some(last, _) ->
            save |> Option.iter (fun file -> Npz.save file last.Model metadata)
            Some(snd (List.last reports)), List.map snd reports, losses
        | None -> None, [], losses
    let last, rows, losses =
        match precision, initFrom with
        | Single, Some(_, SavedModel.Single m) -> run m
        | Single, Some(_, SavedModel.Double m) -> run (Network.convert float32 m)
        | Double, Some(_, SavedModel.Double m) -> run m
        | Double, Some(_, SavedModel.Single m) -> run (Network.convert float m)
        | Single, None -> run (Network.init config.Seed std layers: Model<float32>)
        | Double, None -> run (Network.init config.Seed std layers: Model<float>)
    metrics |> Option.iter (fun file -> writeMetrics file rows)
    plotFile |> Option.iter (fun file -> Plot.write file losses [ for r in rows -> r.Iteration, r.TrainAccuracy, r.TestAccuracy ])
    match last with
    | Some r ->
        printfn
            $"done: iterations %d{r.Iteration}, epochs %d{r.Epoch}, train acc %.4f{r.TrainAccuracy}, test acc %.4f{r.TestAccuracy}, final loss %.4f{r.MeanLoss}, elapsed %.1f{clock.Elapsed.TotalSeconds}s, garbage collections %d{GC.CollectionCount 0}/%d{GC.CollectionCount 1}/%d{GC.CollectionCount 2} (gen0/1/2), paused %.2f{GC.GetTotalPauseDuration().TotalSeconds}s"
        save |> Option.iter (fun file -> printfn $"saved: {Path.GetFullPath file}")
    | None -> printfn "done: no iterations"
    0

/// `evaluate`: test accuracy, per-class precision and recall, and the confusion matrix.
let evaluate (args: ParseResults<EvaluateArgs>) =
    let file = args.GetResult EvaluateArgs.Model
    let saved = loadModel file
    let dataDir, datasetName = resolveData (args.TryGetResult EvaluateArgs.Data) (args.TryGetResult EvaluateArgs.Dataset) ((Npz.metadata file).TryFind "dataset")
    Linalg.using (selectBackend None None) <| fun () ->
    let _, test = Mnist.load dataDir
    let sizes = match saved with SavedModel.Single m -> Network.sizes m.Layers | SavedModel.Double m -> Network.sizes m.Layers
    if sizes.Head <> test.PixelCount then raise (DataError(file, $"the model takes %d{sizes.Head} inputs, the images of {dataDir} have %d{test.PixelCount} pixels"))
    let accuracy, confusion =
        match saved with
        | SavedModel.Single m -> Evaluate.accuracy m test, Evaluate.confusion 10 m test
        | SavedModel.Double m -> Evaluate.accuracy m test, Evaluate.confusion 10 m test
    printfn $"""evaluate: model {Path.GetFullPath file} ({sizes |> List.map string |> String.concat "-"}), {test.Count} test images of {Path.GetFullPath dataDir}"""
    printfn $"test acc %.4f{accuracy}"
    printfn "class          precision  recall  count"
    for c in 0 .. 9 do
        let column = Seq.sum (seq { for t in 0 .. 9 -> confusion[t, c] })
        let row = Seq.sum (seq { for p in 0 .. 9 -> confusion[c, p] })
        let ratio a b = if b = 0 then nan else float a / float b
        printfn $"%-13s{className datasetName c}  %9.4f{ratio confusion[c, c] column}  %6.4f{ratio confusion[c, c] row}  %5d{row}"
    printfn "confusion matrix (rows: true class, columns: predicted class)"
    printfn "%s" ("      " + String.Join("", [ for p in 0 .. 9 -> $"%6d{p}" ]))
    for t in 0 .. 9 do
        printfn "%s" ($"%6d{t}" + String.Join("", [ for p in 0 .. 9 -> $"%6d{confusion[t, p]}" ]))
    0
/// `gradcheck`: mean |backprop - numerical| for each parameter, on the first images (float64).
let gradcheck (args: ParseResults<GradcheckArgs>) =
    let count = args.GetResult(Count, defaultValue = 3) |> positive "--count"
    let sizes = sizesOf (args.TryGetResult GradcheckArgs.Hidden) 784
    let dataDir = findData (args.TryGetResult GradcheckArgs.Data)
    Linalg.using (selectBackend (args.TryGetResult GradcheckArgs.Backend) (args.TryGetResult GradcheckArgs.Input_Storage)) <| fun () ->
    let trainSet, _ = Mnist.load dataDir
    let sizes = trainSet.PixelCount :: List.tail sizes
    let activation = activationOf (args.TryGetResult GradcheckArgs.Activation)
    let model: Model<float> =
        Network.init (args.GetResult(GradcheckArgs.Seed, defaultValue = 42)) 0.01 (Network.layers activation sizes)
    let first = Dataset.take count trainSet
    let x, t = Dataset.batch first [| 0 .. first.Count - 1 |]
    let inputs = if x.Storage.IsDense then "dense" else "sparse (zero pixels skipped)"
    printfn $"""gradcheck: network {sizes |> List.map string |> String.concat "-"}, first %d{first.Count} training images, h = 1e-4, float64, backend {Linalg.describe ()}, inputs {inputs}"""
    for name, diff in Network.gradientCheck model x t do
        printfn $"%-3s{name}: %.3e{diff}"
    0

/// `predict`: the class and top probabilities for test images (--index) or PGM files.
let predict (args: ParseResults<PredictArgs>) =
    let file = args.GetResult PredictArgs.Model
    let saved = loadModel file
    let inputs = match saved with SavedModel.Single m -> (Network.sizes m.Layers).Head | SavedModel.Double m -> (Network.sizes m.Layers).Head
    let datasetOfModel = (Npz.metadata file).TryFind "dataset"
    let datasetName =
        match args.TryGetResult PredictArgs.Dataset, args.TryGetResult PredictArgs.Data with
        | Some Fashion, _ -> "fashion"
        | Some Mnist, _ -> "mnist"
        | None, Some _ -> "custom"
        | None, None -> defaultArg datasetOfModel "mnist"
    let side = int (sqrt (float inputs))
    if side * side <> inputs then raise (DataError(file, $"the model takes %d{inputs} inputs, not a square image"))
    let images =
        [ match args.TryGetResult Index with
          | Some n ->
              let _, test = Mnist.load (fst (resolveData (args.TryGetResult PredictArgs.Data) (args.TryGetResult PredictArgs.Dataset) datasetOfModel))
              if n < 0 || n >= test.Count then usage $"--index must be between 0 and %d{test.Count - 1}, got %d{n}"
              if test.PixelCount <> inputs then raise (DataError(file, $"the model takes %d{inputs} inputs, the test images have %d{test.PixelCount} pixels"))
              let image = Array.init test.PixelCount (fun j -> float test.Pixels[n * test.PixelCount + j] / 255.0)
              yield $"test image %d{n} (label {className datasetName (int test.Labels[n])})", image
          | None -> ()
          for path in args.GetResult(Images, defaultValue = []) do
              yield path, Images.toInput side (Images.readImage path) ]
    if images.IsEmpty then usage "predict needs --index N or image files"
    Linalg.using (selectBackend None None) <| fun () ->
    for name, image in images do
        let probabilities =
            match saved with
            | SavedModel.Single m -> Interop.Api.Probabilities(m, Array.map float32 image) |> Array.map float
            | SavedModel.Double m -> Interop.Api.Probabilities(m, image)
        let top = probabilities |> Array.indexed |> Array.sortByDescending snd |> Array.truncate 3
        printfn $"{name}: predicted {className datasetName (fst top[0])}"
        printfn "  top: %s" (String.Join(", ", [ for c, p in top -> $"{className datasetName c} (%.4f{p})" ]))
        for line in Images.render side image do
            printfn $"  |{line}|"
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
