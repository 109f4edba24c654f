/// What each subcommand does: read its options, call the core, print. No learning logic here.
module Backprop.Cli.Commands

open System
open System.IO
open System.Diagnostics
open System.Threading
open Argu
open System.Text.Json
open System.Text.Json.Nodes
open Backprop.Core
open Backprop.Cli.Args

// The core's optimizers by a name no union case of Args shadows (TrainArgs.Optimizer is one).
module Optimizers = Backprop.Core.Optimizer

/// A bad option value: the option and what is wrong, for a one-line message and exit code 2.
exception UsageError of string

let private usage message = raise (UsageError message)

/// Checks that an option's value is positive, naming the option when it is not.
/// The most units a layer may have (--hidden): a 784 x 100,000 float64 layer is 630 MB.
let maxUnits = 100_000

/// The most images a mini-batch may hold (--batch).
let maxBatch = 100_000

/// The most images a gradient check may use (gradcheck --count).
let maxGradcheckCount = 1_000

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

/// Start-up work done ahead, on the second core, while Argu parses the arguments (about 0.1 s of
/// reflection): `train` and `compare` without --data, --dataset or --init-from read the shipped
/// MNIST (about 0.2 s: gunzip and the checks of Mnist.load), and without --backend load OpenBLAS.
/// Program.main calls `start` before parsing; the command then takes the data set with
/// `loadData` instead of reading it again. A read that failed, or one of another directory, is
/// done again by the command, which reports its error as it always does.
module Preload =
    let mutable private pending: (string * Tasks.Task<Dataset * Dataset>) option = None

    /// Starts the work the arguments will ask for (see the module); the first thing main does.
    /// Nothing it meets (a working directory since deleted, say) is an error here: the command
    /// meets it again and reports it.
    let start (argv: string[]) =
        let command = Array.tryHead argv
        let given (prefix: string) = argv |> Array.exists (fun a -> a.StartsWith prefix)
        if (command = Some "train" || command = Some "compare") && not (given "--help" || given "-h") then
            try
                if not (given "--data" || given "--init-from") then
                    match Mnist.tryFindShipped [ Environment.CurrentDirectory; AppContext.BaseDirectory ] with
                    | Some dir -> pending <- Some(dir, Tasks.Task.Run(fun () -> Mnist.load dir))
                    | None -> ()
                if not (given "--backend") then Tasks.Task.Run(fun () -> Backend.OpenBlas.isAvailable () |> ignore) |> ignore
            with _ -> ()

    /// Mnist.load dir, taken from the read `start` began when that was of dir and succeeded.
    let loadData (dir: string) : Dataset * Dataset =
        match pending with
        | Some(started, task) when started = dir ->
            pending <- None
            try task.GetAwaiter().GetResult() with _ -> Mnist.load dir
        | _ -> Mnist.load dir

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
let private className (dataset: string) (c: int) = if dataset = "fashion" && c < fashionClasses.Length then $"{c} {fashionClasses[c]}" else string c

let private activationOf =
    function
    | Some ActivationArg.Sigmoid -> Activation.Sigmoid
    | Some ActivationArg.Tanh -> Activation.Tanh
    | _ -> Activation.ReLU

/// The initial weights --weight-init (or `option`) names: a positive standard deviation (0.01,
/// the book's recipe), xavier or sigmoid (√(1/n) for n inputs), he or relu (√(2/n)); anything
/// else is a usage error naming the option.
let weightInitOf (option: string) (text: string) : WeightInit =
    match text.Trim().ToLowerInvariant() with
    | "xavier"
    | "sigmoid" -> WeightInit.Xavier
    | "he"
    | "relu" -> WeightInit.He
    | t ->
        match Double.TryParse(t, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
        | true, std when std > 0.0 && Double.IsFinite std -> WeightInit.Std std
        | _ -> usage $"{option} must be a positive number, xavier, sigmoid, he or relu, got '{text}'"

/// The initial weights in words: "weights N(0, 0.01^2)", "weights Xavier N(0, 1/n)",
/// "weights He N(0, 2/n)" (n: a layer's inputs).
let describeInit (weightInit: WeightInit) =
    match weightInit with
    | WeightInit.Std std -> $"weights N(0, %g{std}^2)"
    | WeightInit.Xavier -> "weights Xavier N(0, 1/n)"
    | WeightInit.He -> "weights He N(0, 2/n)"

/// The value of a real-valued option, refused (a usage error naming the option and the range)
/// unless `ok` holds; NaN fails every range.
let private inRange (option: string) (ok: float -> bool) (range: string) (value: float) =
    if not (ok value) then usage $"{option} must be {range}, got %g{value}"
    value

/// The --dropout ratio: 0 <= RATIO < 1.
let private dropoutOf (ratio: float option) =
    ratio |> Option.map (inRange "--dropout" (fun r -> r >= 0.0 && r < 1.0) "in [0, 1)")

/// The --weight-decay lambda: finite and >= 0.
let private weightDecayOf (lambda: float option) =
    lambda |> Option.map (inRange "--weight-decay" (fun l -> l >= 0.0 && Double.IsFinite l) "a finite number >= 0")

/// The command-line name of an optimizer (as OptimizerArg spells it).
let private optimizerName (o: OptimizerArg) =
    match o with
    | OptimizerArg.Sgd -> "sgd"
    | OptimizerArg.Momentum -> "momentum"
    | OptimizerArg.Nesterov -> "nesterov"
    | OptimizerArg.Adagrad -> "adagrad"
    | OptimizerArg.Rmsprop -> "rmsprop"
    | OptimizerArg.Adam -> "adam"

/// The optimizer train runs with, as the core's spec (weight decay first, then the step), from
/// --optimizer, --lr, --momentum, --beta1, --beta2, --decay-rate and --weight-decay. `saved` is
/// the optimizer of the model file a run resumes (--init-from; empty for a file without one):
/// its kind, its hyperparameters and its weight decay are the defaults then, and another
/// --optimizer is a usage error (the file's state is that optimizer's). Otherwise the defaults
/// are sgd with lr 0.1 (the book's chapter 5 recipe) and the book's for the other optimizers
/// (Optimizer.bookDefault). A hyperparameter that the optimizer does not have, or out of its
/// range, is a usage error naming it.
let optimizerSpecs (options: TrainOptions) (file: string) (saved: OptimizerSpec list) : OptimizerSpec list =
    let savedStep = saved |> List.tryFind (function OptimizerSpec.WeightDecay _ -> false | _ -> true)
    let savedLambda = saved |> List.tryPick (function OptimizerSpec.WeightDecay l -> Some l | _ -> None)
    let name =
        match options.Optimizer, savedStep with
        | Some o, Some s when optimizerName o <> Optimizers.name s ->
            usage $"--optimizer {optimizerName o} and --init-from {file}: the model file was trained with {Optimizers.name s} and holds its state; leave --optimizer out to resume it"
        | Some o, _ -> optimizerName o
        | None, Some s -> Optimizers.name s
        | None, None -> "sgd"
    let belongs = [ "--momentum", [ "momentum"; "nesterov" ]; "--beta1", [ "adam" ]; "--beta2", [ "adam" ]; "--decay-rate", [ "rmsprop" ] ]
    let given =
        [ "--lr", "lr", options.Lr, (fun v -> v > 0.0 && Double.IsFinite v), "a positive number"
          "--momentum", "momentum", options.Momentum, (fun v -> v >= 0.0 && v < 1.0), "in [0, 1)"
          "--beta1", "beta1", options.Beta1, (fun v -> v > 0.0 && v < 1.0), "in (0, 1)"
          "--beta2", "beta2", options.Beta2, (fun v -> v > 0.0 && v < 1.0), "in (0, 1)"
          "--decay-rate", "decay_rate", options.DecayRate, (fun v -> v > 0.0 && v < 1.0), "in (0, 1)" ]
        |> List.choose (fun (option, key, value, ok, range) ->
            value
            |> Option.map (fun v ->
                match List.tryFind (fst >> (=) option) belongs with
                | Some(_, owners) when not (List.contains name owners) ->
                    usage $"""{option} does not apply to --optimizer {name} (it belongs to {String.Join(" and ", owners)})"""
                | _ -> key, inRange option ok range v))
    let defaults =
        match savedStep with
        | Some s when Optimizers.name s = name -> Optimizers.hyperparameters s
        | _ when name = "sgd" -> [ "lr", Training.bookRecipe.LearningRate ]
        | _ -> Optimizers.bookDefault name |> Option.map Optimizers.hyperparameters |> Option.defaultValue []
    let values = defaults |> List.map (fun (k, v) -> k, given |> List.tryFind (fst >> (=) k) |> Option.map snd |> Option.defaultValue v)
    let step =
        match Optimizers.specOf name values with
        | Ok spec -> spec
        | Error e -> usage $"--optimizer {name}: {e}"
    match weightDecayOf (options.WeightDecay) |> Option.orElse savedLambda with
    | Some l when l > 0.0 -> [ OptimizerSpec.WeightDecay l; step ]
    | _ -> [ step ]

/// The optimizer in words: "sgd lr 0.1", "adam lr 0.001 beta1 0.9 beta2 0.999 + weight decay
/// 0.1" (the step first, then the decay chained before it).
let describeOptimizer (specs: OptimizerSpec list) =
    let one (s: OptimizerSpec) =
        match s with
        | OptimizerSpec.WeightDecay l -> $"weight decay %g{l}"
        | s -> String.Join(" ", Optimizers.name s :: [ for k, v in Optimizers.hyperparameters s -> $"{k} %g{v}" ])
    let decay, steps = specs |> List.partition (function OptimizerSpec.WeightDecay _ -> true | _ -> false)
    String.Join(" + ", List.map one (steps @ decay))

/// The layer sizes from --hidden: the sizes given (each a positive integer), `none` for no hidden
/// layer (softmax regression), 50 when the option is absent; a bare --hidden is refused.
let hiddenSizes (hidden: string list option) : int list =
    match hidden with
    | None -> [ 50 ]
    | Some [] -> usage "--hidden needs at least one size (e.g. --hidden 50, or --hidden 100 50), or none for no hidden layer"
    | Some [ "none" ] -> []
    | Some sizes ->
        sizes
        |> List.map (fun s ->
            match Int32.TryParse s with
            | true, n when n > maxUnits -> usage $"--hidden %d{n}: at most %d{maxUnits} units a layer"
            | true, n -> positive "--hidden" n
            | _ when s = "none" -> usage "--hidden none stands alone (no hidden layer); give either sizes or none"
            | _ -> usage $"--hidden must be positive integers or none, got '{s}'")

let private sizesOf (hidden: string list option) (inputs: int) = inputs :: hiddenSizes hidden @ [ 10 ]

/// "784-50-10 relu" for Affine layers with one activation between them, "784-100-100-10 relu
/// + batchnorm + dropout 0.5" for the book's MultiLayerNetExtend (Network.extended), else the
/// layer list ("Affine(784, 50) ReLU Affine(50, 10) Sigmoid ...").
let describeLayers (layers: Layer list) =
    let sizes = Network.sizes layers |> List.map string |> String.concat "-"
    let rebuilt activation = try Network.layers activation (Network.sizes layers) = layers with _ -> false
    let dropout = layers |> List.tryPick (function Layer.Dropout r -> Some r | _ -> None)
    let batchNorm = layers |> List.exists (function Layer.BatchNorm _ -> true | _ -> false)
    let extended =
        [ Activation.ReLU, "relu"; Activation.Sigmoid, "sigmoid"; Activation.Tanh, "tanh" ]
        |> List.tryFind (fun (a, _) -> try Network.extended a (Network.sizes layers) batchNorm dropout = layers with _ -> false)
    if List.length (Network.sizes layers) = 2 && rebuilt Activation.ReLU then $"{sizes} (no hidden layer)"
    else
        match extended with
        | Some(_, name) ->
            let bn = if batchNorm then " + batchnorm" else ""
            let d = match dropout with Some r -> $" + dropout %g{r}" | None -> ""
            $"{sizes} {name}{bn}{d}"
        | None ->
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

/// Everything a model file holds (model, optimizer state arrays, metadata).
let private readModelFile (file: string) =
    if not (File.Exists file) then raise (DataError(file, "model file not found"))
    Npz.read file

/// Writes text to file through the one safe-write path (SafeWrite): an unpredictable temporary
/// file created exclusively in the same folder, renamed over the file only when complete.
let private writeAtomically (file: string) (text: string) = SafeWrite.text file text

/// One row of the metrics history: the same names and values in CSV and JSON.
type MetricsRow =
    { /// 1 for the first epoch.
      Epoch: int
      /// Steps taken by the end of the epoch.
      Iteration: int
      /// Accuracy on the training set (or its first --eval-sample images).
      TrainAcc: float
      /// Accuracy on the test set (or its first --eval-sample images).
      TestAcc: float
      /// The mean loss of the epoch's steps.
      Loss: float
      /// Seconds from the start of training to the end of the epoch.
      Seconds: float
      /// The accuracies were measured on the first --eval-sample images of each set only.
      Sampled: bool
      /// The run was interrupted (Ctrl-C, SIGTERM) during this epoch, which is then partial.
      Interrupted: bool }

/// The metrics columns in order: the CSV header and the JSON keys.
let metricsColumns = [ "epoch"; "iteration"; "train_acc"; "test_acc"; "loss"; "seconds"; "sampled"; "interrupted" ]

/// The metrics history as CSV (a header, then one line per epoch; NaN for a value not a number).
let metricsCsv (rows: MetricsRow list) =
    let number (x: float) = if Double.IsFinite x then x.ToString("R", Globalization.CultureInfo.InvariantCulture) else "NaN"
    let bool (b: bool) = if b then "true" else "false"
    let line (r: MetricsRow) =
        String.Join(",", [ string r.Epoch; string r.Iteration; number r.TrainAcc; number r.TestAcc; number r.Loss; r.Seconds.ToString("F3", Globalization.CultureInfo.InvariantCulture); bool r.Sampled; bool r.Interrupted ])
    String.concat "\n" (String.Join(",", metricsColumns) :: List.map line rows) + "\n"

/// The metrics history as JSON: an array of one object per epoch with the CSV's column names
/// as keys (null for a value not a number).
let metricsJson (rows: MetricsRow list) =
    let number (x: float) = if Double.IsFinite x then JsonValue.Create x :> JsonNode else null
    let array = JsonArray()
    for r in rows do
        let o = JsonObject()
        o["epoch"] <- JsonValue.Create r.Epoch
        o["iteration"] <- JsonValue.Create r.Iteration
        o["train_acc"] <- number r.TrainAcc
        o["test_acc"] <- number r.TestAcc
        o["loss"] <- number r.Loss
        o["seconds"] <- JsonValue.Create(Math.Round(r.Seconds, 3))
        o["sampled"] <- JsonValue.Create r.Sampled
        o["interrupted"] <- JsonValue.Create r.Interrupted
        array.Add o
    array.ToJsonString(JsonSerializerOptions(WriteIndented = true)) + "\n"

/// Writes the per-epoch history as CSV or JSON, chosen by the file's extension (atomically).
let private writeMetrics (file: string) (rows: MetricsRow list) =
    writeAtomically file (if Path.GetExtension(file).ToLowerInvariant() = ".json" then metricsJson rows else metricsCsv rows)

/// How a training run ended.
type private Ending =
    /// Every step was taken.
    | Completed
    /// A signal stopped it after the step it was taking.
    | Interrupted of signal: string
    /// A step's loss was NaN or infinite.
    | Diverged of step: int * loss: float

/// The mean loss of each step's batch, smoothed for display: an exponential moving average
/// (weight 0.98 on the past) corrected for its start, as Adam's moments are.
type private SmoothedLoss() =
    let mutable average = 0.0
    let mutable weight = 1.0

    /// Adds a step's loss (non-finite losses are skipped) and returns the smoothed value.
    member _.Add(loss: float) =
        if Double.IsFinite loss then
            average <- 0.98 * average + 0.02 * loss
            weight <- weight * 0.98
        if weight = 1.0 then nan else average / (1.0 - weight)

/// What the status line reads: written by the training thread after each step, read by the
/// display's timer.
type private LiveStep() =
    [<DefaultValue>]
    val mutable Step: int

    [<DefaultValue>]
    val mutable Loss: float

/// The parameters of a model are all finite numbers.
let inline private allFinite (model: Model< ^T >) =
    Network.parameters model |> List.forall (fun (_, v) -> Value.storage v |> Array.forall (fun x -> Double.IsFinite(float x)))

/// `train`: the book's recipe unless told otherwise; a short header, one line per epoch (with
/// a live status line on stderr in a terminal) and a closing summary; files written atomically
/// and named; a clean stop on Ctrl-C or SIGTERM (exit 130 or 143, with what was trained saved);
/// a NaN or infinite loss stops the run (exit 1), keeping the last finite parameters.
let train (args: ParseResults<TrainArgs>) =
    let options = TrainOptions.ofResults args
    if options.WeightInit.IsSome && options.WeightInitStd.IsSome then usage "give --weight-init or --weight-init-std, not both"
    let weightInit =
        match options.WeightInit, options.WeightInitStd with
        | Some text, _ -> weightInitOf "--weight-init" text
        | None, Some std when not (std > 0.0 && Double.IsFinite std) -> usage $"--weight-init-std must be a positive number, got %g{std}"
        | None, Some std -> WeightInit.Std std
        | None, None -> WeightInit.Std Training.bookWeightInitStd
    let dropout = dropoutOf options.Dropout
    let batchNorm = options.Batchnorm
    if options.Iters.IsSome && options.Epochs.IsSome then usage "give --iters or --epochs, not both"
    let iters = options.Iters |> Option.map (positive "--iters")
    let epochs = options.Epochs |> Option.map (positive "--epochs")
    let evalSample = options.EvalSample |> Option.map (positive "--eval-sample")
    let verbose = options.Verbose
    let save = options.Save
    let metrics = options.Metrics
    let plotFile = options.Plot
    for option, file in [ "--save", save; "--metrics", metrics; "--plot", plotFile ] do
        match file with
        | Some f when Directory.Exists f -> usage $"{option} {f}: that is a folder; give a file name"
        | Some f when not (Directory.Exists(Path.GetDirectoryName(Path.GetFullPath f))) -> usage $"{option} {f}: the folder does not exist"
        | Some f when option = "--metrics" && not (List.contains (Path.GetExtension(f).ToLowerInvariant()) [ ".csv"; ".json" ]) ->
            usage $"--metrics {f}: give a .csv or .json file"
        | Some f when option = "--plot" && Path.GetExtension(f).ToLowerInvariant() <> ".png" -> usage $"--plot {f}: give a .png file"
        | _ -> ()
    let inspect = options.Inspect
    inspect |> Option.iter (fun d -> if File.Exists d then usage $"--inspect {d}: that is a file; give a folder (created if missing)")
    let initFrom = options.InitFrom |> Option.map (fun f -> f, readModelFile f)
    // A file saved by train --save (it has a step count) resumes its run: its optimizer, state
    // and step, and (unless given) its seed, batch size, sampling and data set.
    let resumed =
        initFrom
        |> Option.map (fun (file, model) ->
            try
                match model.Model with
                | SavedModel.Single _ -> let spec, state = Npz.trainState<float32> model in spec, state.Step
                | SavedModel.Double _ -> let spec, state = Npz.trainState<float> model in spec, state.Step
            with :? ArgumentException as e -> raise (DataError(file, e.Message.Split(" (Parameter")[0])))
    let resumable = initFrom |> Option.exists (fun (_, model) -> model.Metadata.ContainsKey "step")
    let savedMeta (key: string) =
        match initFrom with
        | Some(_, model) when resumable -> model.Metadata.TryFind key
        | _ -> None
    let savedInt (key: string) =
        match savedMeta key with
        | Some(:? JsonValue as v) when fst (v.TryGetValue<int>()) -> Some(v.GetValue<int>())
        | _ -> None
    let savedText (key: string) =
        match savedMeta key with
        | Some(:? JsonValue as v) when fst (v.TryGetValue<string>()) -> Some(v.GetValue<string>())
        | _ -> None
    let specs = optimizerSpecs options (match initFrom with Some(f, _) -> f | None -> "") (match resumed with Some(spec, _) -> spec | None -> [])
    let startStep = match resumed with Some(_, step) -> step | None -> 0
    let lr =
        specs
        |> List.tryPick (fun s -> Optimizers.hyperparameters s |> List.tryFind (fst >> (=) "lr") |> Option.map snd)
        |> Option.defaultValue Training.bookRecipe.LearningRate
    let batch = defaultArg options.Batch (defaultArg (savedInt "batch_size") Training.bookRecipe.BatchSize) |> positive "--batch"
    if batch > maxBatch then usage $"--batch %d{batch}: at most %d{maxBatch} images a batch"
    let dataDir, datasetName = resolveData options.Data options.Dataset (savedText "dataset")
    // The rest of the command runs under the settings chosen.
    Linalg.using (selectBackend (options.Backend) (options.InputStorage)) <| fun () ->
    let hidden = options.Hidden
    let sizes =
        match initFrom with
        | Some(file, saved) ->
            if hidden.IsSome then usage $"--hidden and --init-from {file}: the model file sets the layer sizes"
            if options.Activation.IsSome then usage $"--activation and --init-from {file}: the model file sets the activation"
            if batchNorm then usage $"--batchnorm and --init-from {file}: the model file sets the layers"
            if dropout.IsSome then usage $"--dropout and --init-from {file}: the model file sets the layers"
            if options.WeightInit.IsSome then usage $"--weight-init and --init-from {file}: the model file sets the weights"
            if options.WeightInitStd.IsSome then usage $"--weight-init-std and --init-from {file}: the model file sets the weights"
            Network.sizes saved.Model.Layers
        | None -> sizesOf hidden 784
    let config0 =
        { Training.bookRecipe with
            LearningRate = lr
            BatchSize = batch
            Seed = defaultArg options.Seed (defaultArg (savedInt "seed") Training.bookRecipe.Seed)
            Sampling =
                match options.Sampling, savedText "sampling" with
                | Some Shuffle, _
                | None, Some "shuffled each epoch" -> Backprop.Core.Sampling.Shuffle
                | Some Sequential, _
                | None, Some "in order" -> Backprop.Core.Sampling.Sequential
                | _ -> Backprop.Core.Sampling.WithReplacement
            EvalSample = evalSample }
    // The first Ctrl-C (or SIGTERM) stops after the current step; a second one quits at once,
    // after putting the terminal back (the display, once there is one).
    let display: Progress.Display option ref = ref None
    use interruption = new Progress.Interruption(fun () -> display.Value |> Option.iter (fun d -> d.Restore()))
    let trainSet, testSet = Preload.loadData dataDir
    if sizes.Head <> trainSet.PixelCount then
        match initFrom with
        | Some(file, _) -> raise (DataError(file, $"the model takes %d{sizes.Head} inputs, the images of {dataDir} have %d{trainSet.PixelCount} pixels"))
        | None -> ()
    match initFrom with
    | Some(file, saved) ->
        Contracts.outputsCoverLabels file saved.Model.Layers $"the training labels of {dataDir}" trainSet
        Contracts.outputsCoverLabels file saved.Model.Layers $"the test labels of {dataDir}" testSet
    | None -> ()
    if batch > trainSet.Count then
        match config0.Sampling with
        | Backprop.Core.Sampling.Shuffle
        | Backprop.Core.Sampling.Sequential ->
            let name = if config0.Sampling = Backprop.Core.Sampling.Shuffle then "shuffle" else "sequential"
            usage $"--batch %d{batch} is more than the %d{trainSet.Count} training images, and --sampling {name} takes each image once an epoch: give --batch %d{trainSet.Count} or less, or --sampling with-replacement"
        | _ ->
            eprintfn $"backprop: note: --batch %d{batch} is more than the %d{trainSet.Count} training images; batches are drawn with replacement, so each repeats images"
    let sparse = Linalg.storesSparse trainSet.Pixels trainSet.PixelCount
    let perEpoch = Training.iterationsPerEpoch config0 trainSet.Count
    // The network: the model file's layers, or the sizes asked for (the input size from the data).
    let layers =
        match initFrom with
        | Some(_, saved) -> saved.Model.Layers
        | None -> Network.extended (activationOf (options.Activation)) (trainSet.PixelCount :: List.tail sizes) batchNorm dropout
    let classes = List.last (Network.sizes layers)
    let config =
        { config0 with
            Iterations =
                match iters, epochs with
                | Some n, _ -> n
                | None, Some e -> e * perEpoch
                | None, None -> Training.bookRecipe.Iterations }
    let totalEpochs = (config.Iterations + perEpoch - 1) / perEpoch
    let lens = inspect |> Option.map (fun _ -> Backprop.Cli.Inspect.Recorder.For(trainSet, perEpoch, config.Iterations))
    let precision =
        match options.Precision, initFrom with
        | Some p, _ -> p
        | None, Some(_, { Model = SavedModel.Double _ }) -> Double
        | None, _ -> Single
    let sampling =
        match config.Sampling with
        | Backprop.Core.Sampling.Shuffle -> "shuffled each epoch"
        | Backprop.Core.Sampling.Sequential -> "in order"
        | _ -> "random, with replacement"
    let sampled =
        match evalSample with
        | Some n -> n < trainSet.Count || n < testSet.Count
        | None -> false
    let accLabel = if sampled then "sampled " else ""
    let precisionName = if precision = Single then "single" else "double"
    let lastStep = startStep + config.Iterations
    // The book's learning rate for the optimizer, for advice: 0.1 for SGD (chapter 5's recipe).
    let bookLr =
        match specs |> List.tryFind (function OptimizerSpec.WeightDecay _ -> false | _ -> true) |> Option.bind (Optimizers.name >> Optimizers.bookDefault) with
        | Some(OptimizerSpec.Sgd _)
        | None -> "0.1"
        | Some s -> Optimizers.hyperparameters s |> List.head |> snd |> sprintf "%g"
    let start =
        match initFrom with
        | Some(file, _) when startStep > 0 ->
            let state = if specs |> List.exists (fun s -> not (Optimizers.slots s).IsEmpty) then "optimizer state, " else ""
            $"resumed from {file} after step %d{startStep} ({state}batches continued)"
        | Some(file, _) -> $"parameters from {file}"
        | None -> describeInit weightInit
    printfn $"train: network {describeLayers layers} + softmax-with-loss, {describeOptimizer specs}, batch %d{config.BatchSize} ({sampling}), iterations %d{config.Iterations} (%d{perEpoch} per epoch), seed %d{config.Seed}"
    // Sparse storage, and whether the first layer's products then run on the sparse kernels: under
    // Auto, too few outputs (MNIST: 1 to 3 in float32) run them dense on a copy of the batch.
    let inputs =
        let width = layers |> List.tryPick (function Layer.Affine(_, o) -> Some o | _ -> None) |> Option.defaultValue 0
        let kernels =
            if precision = Single then Linalg.firstProductsSparse<float32> trainSet.Pixels trainSet.PixelCount config.BatchSize width
            else Linalg.firstProductsSparse<float> trainSet.Pixels trainSet.PixelCount config.BatchSize width
        if not sparse then "dense"
        elif kernels then "sparse (zero pixels skipped)"
        else $"sparse, but the first layer's products run dense on a copy of most batches (its %d{width} outputs are too few for the sparse kernels to pay)"
    printfn $"""  {start}, precision {precisionName}, backend {Linalg.describe ()}, inputs {inputs}"""
    let measured =
        match evalSample with
        | Some n when sampled -> $"accuracy after each epoch on the first %d{n} images of each set only (sampled)"
        | _ -> "accuracy after each epoch on both whole sets"
    printfn $"  data {Path.GetFullPath dataDir}: %d{trainSet.Count} training and %d{testSet.Count} test images; {measured}"
    let title =
        let shortLayers = describeLayers layers
        $"{shortLayers}, {describeOptimizer specs}, batch %d{config.BatchSize}, %d{config.Iterations} iterations, seed %d{config.Seed}, {precisionName}, {datasetName}"
    let metadata (steps: int) (ending: Ending) =
        [ "learning_rate", JsonValue.Create config.LearningRate :> JsonNode
          "batch_size", JsonValue.Create config.BatchSize
          "iterations", JsonValue.Create config.Iterations
          "steps_trained", JsonValue.Create steps
          "seed", JsonValue.Create config.Seed
          "weight_init", JsonValue.Create(match initFrom with Some(file, _) -> defaultArg (savedText "weight_init") $"from {file}" | None -> describeInit weightInit)
          "sampling", JsonValue.Create sampling
          "dataset", JsonValue.Create datasetName
          "data", JsonValue.Create(Path.GetFullPath dataDir)
          "interrupted", JsonValue.Create(match ending with Interrupted _ -> true | _ -> false) ]
        @ (match ending with
           | Interrupted signal -> [ "stopped_by", JsonValue.Create signal :> JsonNode ]
           | Diverged(step, _) -> [ "diverged_at_step", JsonValue.Create step :> JsonNode ]
           | Completed -> [])
    let clock = Stopwatch.StartNew()
    // Filled in on the training thread as the steps go (read after the run).
    // (indexed by the steps taken in this run: a resumed run's step minus startStep)
    let stepSeconds = Array.zeroCreate (config.Iterations + 1)
    let live = LiveStep()
    let smoothed = SmoothedLoss()
    let rate = Progress.RecentRate 3.0
    let status (seconds: float) =
        let step = Volatile.Read(&live.Step)
        let loss = Volatile.Read(&live.Loss)
        let perSecond = rate.Add(seconds, step)
        let left =
            if step >= config.Iterations then "evaluating"
            elif perSecond > 0.0 then Progress.clock (float (config.Iterations - step) / perSecond) + " left"
            else "--:-- left"
        let epoch = min totalEpochs ((max 0 (step - 1)) / perEpoch + 1)
        let lossText = if step = 0 || Double.IsNaN loss then "-" else $"%.4f{loss}"
        let speed = if Double.IsNaN perSecond then "-" else $"%.0f{perSecond}"
        let head = $"step %d{step}/%d{config.Iterations} "
        let tail = $" %3d{100 * step / max 1 config.Iterations}%%  loss {lossText}  {speed} steps/s  {left}  epoch %d{epoch}/%d{totalEpochs}"
        let room = Progress.terminalWidth () - 1 - head.Length - tail.Length
        head + (if room >= 12 then Progress.bar (min 32 room) step config.Iterations else "") + tail
    // Epoch lines are printed in order as soon as each epoch is evaluated (on the helper thread).
    let pending = Collections.Generic.SortedDictionary<int, string>()
    let nextEpoch = ref 1
    let initialLoss = ref nan
    let warnedLoss = ref false
    let warnedChance = ref false
    let warn (out: Progress.Display) (text: string) = out.Warn $"backprop: warning: {text}"
    let epochLine (out: Progress.Display) (epoch: int) (iteration: int) (trainAcc: float) (testAcc: float) (meanLoss: float) =
        let line =
            $"epoch %d{epoch}  iter %d{iteration}  {accLabel}train acc %.4f{trainAcc}  {accLabel}test acc %.4f{testAcc}  loss %.4f{meanLoss}  elapsed %.1f{stepSeconds[iteration - startStep]}s"
        lock pending (fun () ->
            pending[epoch] <- line
            while pending.ContainsKey nextEpoch.Value do
                out.Line pending[nextEpoch.Value]
                pending.Remove nextEpoch.Value |> ignore
                nextEpoch.Value <- nextEpoch.Value + 1)
        // Signs of a run that is not learning: warned once each.
        // (A margin above the first step's loss, which is one batch's: noise is not a warning.)
        if Double.IsFinite meanLoss && meanLoss > max (1.1 * initialLoss.Value) (initialLoss.Value + 0.1) && not warnedLoss.Value then
            warnedLoss.Value <- true
            warn out $"epoch %d{epoch}'s mean loss %.4f{meanLoss} is above the first step's loss %.4f{initialLoss.Value}: the learning rate (--lr %g{config.LearningRate}) may be too high"
        let chance = 1.0 / float classes
        if epoch >= 3 && testAcc <= chance + 0.02 && not warnedChance.Value && Double.IsFinite meanLoss then
            warnedChance.Value <- true
            warn out $"after %d{epoch} epochs the {accLabel}test accuracy %.4f{testAcc} is at chance (1/%d{classes}): the network is not learning; try another --lr (now %g{config.LearningRate})"
    // One code path for both precisions: the element type is fixed by the initial state's type.
    let inline run (initial: TrainState< ^T >) =
        let optimizer: Optimizer< ^T > = Optimizers.ofSpec specs
        use out = new Progress.Display(Progress.isLive (), status)
        display.Value <- Some out
        let ending = ref Completed
        // The states before the last few steps whose loss was finite (newest last): a diverged
        // run saves the newest of them with finite parameters.
        let finiteBefore = Collections.Generic.List<TrainState< ^T >>()
        let previous = ref initial
        let onStep (state: TrainState< ^T >) (loss: float) =
            stepSeconds[state.Step - startStep] <- clock.Elapsed.TotalSeconds
            if Double.IsNaN initialLoss.Value then initialLoss.Value <- loss
            Volatile.Write(&live.Loss, smoothed.Add loss)
            Volatile.Write(&live.Step, state.Step - startStep)
            if not (Double.IsFinite loss) then
                ending.Value <- Diverged(state.Step, loss)
                false
            else
                lens |> Option.iter (fun l -> l.OnStep(state.Step - startStep, (fun () -> Network.convert float previous.Value.Model), (fun () -> Network.convert float state.Model)))
                finiteBefore.Add previous.Value
                if finiteBefore.Count > 4 then finiteBefore.RemoveAt 0
                previous.Value <- state
                match interruption.Signal with
                | Some signal ->
                    ending.Value <- Interrupted signal
                    false
                | None -> true
        let onEvaluated (r: EpochReport< ^T >) = epochLine out r.Epoch r.Iteration r.TrainAccuracy r.TestAccuracy r.MeanLoss
        // On two cores (Pipeline), continuing the batches of a resumed state. Plain SGD takes
        // the book's own step (Training.step, the numbers of chapter 5's recipe to the last bit);
        // any other optimizer, or SGD with weight decay, Training.stepWith.
        let reports =
            match specs with
            | [ OptimizerSpec.Sgd rate ] -> Pipeline.epochsWatchedBy (Training.step (ofFloat rate)) config trainSet testSet initial onStep onEvaluated
            | _ -> Pipeline.epochsWatchedFromWith optimizer config trainSet testSet initial onStep onEvaluated
            |> Seq.toList
        out.Close()
        let steps = match List.tryLast reports with Some r -> r.Iteration | None -> 0
        let modelLine =
            save
            |> Option.map (fun file ->
                let full = Path.GetFullPath file
                match ending.Value, List.tryLast reports with
                | Diverged(step, _), _ ->
                    (match finiteBefore |> Seq.rev |> Seq.tryFind (fun s -> allFinite s.Model) with
                     | Some s ->
                         Npz.saveState file optimizer s (metadata s.Step ending.Value)
                         $"wrote: {full} (the parameters after step %d{s.Step}, the last with a finite loss; the loss diverged at step %d{step})"
                     | None -> $"not written: {full} (no finite parameters to save)")
                | _, Some last ->
                    Npz.saveState file optimizer last.State (metadata last.Iteration ending.Value)
                    match ending.Value with
                    | Interrupted _ -> $"wrote: {full} (interrupted: the parameters after step %d{last.Iteration} of %d{lastStep})"
                    | _ -> $"wrote: {full}"
                | _, None -> $"not written: {full} (no step was taken)")
        let rows =
            reports
            |> List.map (fun r ->
                { Epoch = r.Epoch
                  Iteration = r.Iteration
                  TrainAcc = r.TrainAccuracy
                  TestAcc = r.TestAccuracy
                  Loss = r.MeanLoss
                  Seconds = stepSeconds[r.Iteration - startStep]
                  Sampled = sampled
                  Interrupted = (match ending.Value with Interrupted _ -> r.Iteration = steps && steps < lastStep | _ -> false) })
        let losses = reports |> Array.ofList |> Array.collect (fun r -> r.Losses)
        rows, losses, steps, ending.Value, modelLine
    let rows, losses, steps, ending, modelLine =
        // A model file's state (Npz.trainState) in the file's precision, converted when another
        // is asked for; a file without an optimizer state or step count starts at step 0.
        let convert (f: 'a -> 'b) (s: TrainState<'a>) : TrainState<'b> =
            { Model = Network.convert f s.Model; Optimizer = s.Optimizer |> List.map (fun (n, v) -> n, Value.convert f v); Step = s.Step }
        match precision, initFrom |> Option.map (fun (_, m) -> m, m.Model) with
        | Single, Some(m, SavedModel.Single _) -> run (snd (Npz.trainState<float32> m))
        | Single, Some(m, SavedModel.Double _) -> run (convert float32 (snd (Npz.trainState<float> m)))
        | Double, Some(m, SavedModel.Double _) -> run (snd (Npz.trainState<float> m))
        | Double, Some(m, SavedModel.Single _) -> run (convert float (snd (Npz.trainState<float32> m)))
        | Single, None -> run (Training.start (Network.initWith weightInit config.Seed layers: Model<float32>))
        | Double, None -> run (Training.start (Network.initWith weightInit config.Seed layers: Model<float>))
    let elapsed = clock.Elapsed.TotalSeconds
    match List.tryLast rows with
    | Some r ->
        let word, ofTotal =
            match ending with
            | Completed -> "done", ""
            | Interrupted _ -> "stopped", $" of %d{lastStep} (interrupted)"
            | Diverged _ -> "stopped", $" of %d{lastStep} (diverged)"
        printfn
            $"{word}: iterations %d{r.Iteration}{ofTotal}, epochs %d{r.Epoch}, {accLabel}train acc %.4f{r.TrainAcc}, {accLabel}test acc %.4f{r.TestAcc}, final loss %.4f{r.Loss}, elapsed %.1f{elapsed}s"
    | None -> printfn "done: no iterations"
    modelLine |> Option.iter (printfn "%s")
    metrics
    |> Option.iter (fun file ->
        writeMetrics file rows
        printfn $"wrote: {Path.GetFullPath file}")
    plotFile
    |> Option.iter (fun file ->
        let note =
            match ending with
            | Interrupted signal -> $" (interrupted by {signal} at step %d{steps})"
            | Diverged(step, _) -> $" (diverged at step %d{step})"
            | Completed -> ""
        Plot.write file { Title = title + note; Losses = losses; Epochs = [ for r in rows -> r.Iteration, r.TrainAcc, r.TestAcc ]; Sampled = sampled }
        printfn $"wrote: {Path.GetFullPath file}")
    match lens, inspect with
    | Some l, Some dir -> for file in l.Write(dir, title) do printfn $"wrote: {file}"
    | _ -> ()
    if verbose then
        let floor = Environment.GetEnvironmentVariable "DOTNET_GCgen0size" |> Option.ofObj |> Option.defaultValue "none"
        let regions = Environment.GetEnvironmentVariable "DOTNET_GCRegionSize" |> Option.ofObj |> Option.defaultValue "default"
        let cap = Environment.GetEnvironmentVariable "DOTNET_GCGen0MaxBudget" |> Option.ofObj |> Option.defaultValue "runtimeconfig's"
        let tiering = if Environment.GetEnvironmentVariable "DOTNET_TieredCompilation" = "0" then "off" else "on"
        printfn
            $"garbage collections %d{GC.CollectionCount 0}/%d{GC.CollectionCount 1}/%d{GC.CollectionCount 2} (gen0/1/2), paused %.2f{GC.GetTotalPauseDuration().TotalSeconds}s, peak working set %d{Process.GetCurrentProcess().PeakWorkingSet64 / 1048576L} MB, gen0 floor {floor} (DOTNET_GCgen0size), gen0 cap {cap} (DOTNET_GCGen0MaxBudget), region size {regions} (DOTNET_GCRegionSize), tiered compilation {tiering} (DOTNET_TieredCompilation)"
        let helped, takenBack, waited = Backend.Halves.statistics ()
        printfn $"second core: %d{helped} pieces of work done by the helper thread, %d{takenBack} taken back by their owner, %.2f{waited}s spent waiting for the helper to finish a piece"
        printfn $"JIT: %d{Runtime.JitInfo.GetCompiledMethodCount false} methods compiled at run time in %.2f{Runtime.JitInfo.GetCompilationTime(false).TotalSeconds}s (the rest came precompiled: ReadyToRun)"
    match ending with
    | Diverged(step, loss) ->
        let what = if Double.IsNaN loss then "NaN" else "infinite"
        eprintfn $"backprop: the loss became {what} at step %d{step}: training stopped; try a lower --lr than %g{config.LearningRate} (the book uses {bookLr})"
        1
    | Interrupted signal ->
        eprintfn $"backprop: interrupted by {signal} after step %d{steps} of %d{lastStep}; what was trained is evaluated and written above"
        interruption.ExitCode
    | Completed when interruption.Requested ->
        let signal = defaultArg interruption.Signal "a signal"
        eprintfn $"backprop: {signal} came after the last step; the results above are complete"
        interruption.ExitCode
    | Completed -> 0

/// The test set of an MNIST-layout directory alone (its two t10k files): all that evaluate and
/// predict read.
let private loadTest (dir: string) =
    if not (Directory.Exists dir) then raise (DataError(dir, "data directory not found"))
    Mnist.loadPair (Mnist.resolve dir Mnist.testImagesFile) (Mnist.resolve dir Mnist.testLabelsFile)

/// `evaluate`: test accuracy, per-class precision and recall, and the confusion matrix (reads
/// only the test files).
let evaluate (args: ParseResults<EvaluateArgs>) =
    let file = args.GetResult EvaluateArgs.Model
    let saved = loadModel file
    let dataDir, datasetName = resolveData (args.TryGetResult EvaluateArgs.Data) (args.TryGetResult EvaluateArgs.Dataset) ((Npz.metadata file).TryFind "dataset")
    Linalg.using (selectBackend None None) <| fun () ->
    let test = loadTest dataDir
    Contracts.inputsMatchPixels file saved.Layers $"the images of {dataDir}" test.PixelCount
    Contracts.notEmpty file test
    Contracts.outputsCoverLabels file saved.Layers $"the test labels of {dataDir}" test
    // one row and column for each class the model can predict (10 for MNIST)
    let classes = Contracts.outputsOf saved.Layers
    let accuracy, confusion =
        match saved with
        | SavedModel.Single m -> Evaluate.accuracy m test, Evaluate.confusion classes m test
        | SavedModel.Double m -> Evaluate.accuracy m test, Evaluate.confusion classes m test
    printfn $"""evaluate: model {Path.GetFullPath file} ({describeLayers saved.Layers}), {test.Count} test images of {Path.GetFullPath dataDir}"""
    printfn $"test acc %.4f{accuracy}"
    printfn "class          precision  recall  count"
    for c in 0 .. classes - 1 do
        let column = Seq.sum (seq { for t in 0 .. classes - 1 -> confusion[t, c] })
        let row = Seq.sum (seq { for p in 0 .. classes - 1 -> confusion[c, p] })
        let ratio a b = if b = 0 then nan else float a / float b
        printfn $"%-13s{className datasetName c}  %9.4f{ratio confusion[c, c] column}  %6.4f{ratio confusion[c, c] row}  %5d{row}"
    printfn "confusion matrix (rows: true class, columns: predicted class)"
    printfn "%s" ("      " + String.Join("", [ for p in 0 .. classes - 1 -> $"%6d{p}" ]))
    for t in 0 .. classes - 1 do
        printfn "%s" ($"%6d{t}" + String.Join("", [ for p in 0 .. classes - 1 -> $"%6d{confusion[t, p]}" ]))
    0

/// The tolerance of `gradcheck`: the largest mean absolute difference between backpropagation's
/// and the numerical gradient that passes, in float64 (the book's figures are 1e-10 to 1e-13).
let gradcheckTolerance = 1e-7

/// The relative error of backpropagation's gradient a against the numerical b in the norm form
/// ‖a - b‖₂ / max(‖a‖₂, ‖b‖₂) (0 when both are 0).
let relativeError (a: float[]) (b: float[]) =
    let norm (v: float[]) = sqrt (Array.sumBy (fun x -> x * x) v)
    let scale = max (norm a) (norm b)
    if scale = 0.0 then 0.0 else norm (Array.map2 (-) a b) / scale

/// `gradcheck`: for each parameter, mean |backprop - numerical| (the book's measure) and the
/// relative error ‖backprop - numerical‖ / max of their norms, on the first images (float64),
/// printed as each parameter finishes, then `ok` or `FAILED` (exit 1) for the mean differences
/// against gradcheckTolerance. (The relative error is shown, not judged: for a gradient as small
/// as the central difference's rounding noise, about 1e-12 an entry, it is noise; the bias of an
/// Affine layer that BatchNorm follows has gradient zero, and its line shows both norms.) The network may have BatchNorm (inRange in train mode, on the batch's statistics:
/// at least 4 images), Dropout (with the fixed mask of the model's key: the numerical gradient
/// keeps the key), tanh and weight decay (λW in backpropagation's gradient, 0.5·λ·ΣW² in the
/// loss differentiated). In a terminal a status line on stderr counts the entries of the
/// parameter being inRange.
let gradcheck (args: ParseResults<GradcheckArgs>) =
    let batchNorm = args.Contains GradcheckArgs.Batchnorm
    let count = args.GetResult(Count, defaultValue = (if batchNorm then 4 else 3)) |> positive "--count"
    if count > maxGradcheckCount then usage $"--count %d{count}: at most %d{maxGradcheckCount} images (the numerical gradient runs two forward passes per parameter)"
    if batchNorm && count < 4 then
        usage $"--count %d{count} with --batchnorm: give 4 or more (BatchNorm is inRange on the batch's statistics; one image alone is the book's pitfall, its output is beta whatever the input)"
    let dropout = dropoutOf (args.TryGetResult GradcheckArgs.Dropout)
    let lambda = weightDecayOf (args.TryGetResult GradcheckArgs.Weight_Decay)
    let weightInit =
        match args.TryGetResult GradcheckArgs.Weight_Init with
        | Some text -> weightInitOf "--weight-init" text
        // Before BatchNorm the weights' scale leaves the forward pass unchanged (the layer divides
        // it out) but sets the curvature the central difference sees: with N(0, 1) weights its
        // error stays near 1e-9, where the book's 0.01 brings W1's to about 1e-6.
        | None when batchNorm -> WeightInit.Std 1.0
        | None -> WeightInit.Std Training.bookWeightInitStd
    let sizes = sizesOf (args.TryGetResult GradcheckArgs.Hidden) 784
    let dataDir = findData (args.TryGetResult GradcheckArgs.Data)
    Linalg.using (selectBackend (args.TryGetResult GradcheckArgs.Backend) (args.TryGetResult GradcheckArgs.Input_Storage)) <| fun () ->
    let trainSet, _ = Mnist.load dataDir
    let sizes = trainSet.PixelCount :: List.tail sizes
    let activation = activationOf (args.TryGetResult GradcheckArgs.Activation)
    let layers = Network.extended activation sizes batchNorm dropout
    let model: Model<float> = Network.initWith weightInit (args.GetResult(GradcheckArgs.Seed, defaultValue = 42)) layers
    // Weight decay as train chains it: its update adds λW to each weight's gradient, its
    // penalty 0.5·λ·ΣW² to the loss.
    let decay: Optimizer<float> option = lambda |> Option.filter (fun l -> l > 0.0) |> Option.map Optimizers.weightDecay
    let first = Dataset.take count trainSet
    let x, t = Dataset.batch first [| 0 .. first.Count - 1 |]
    let inputs = if x.Storage.IsDense then "dense" else "sparse (zero pixels skipped)"
    let decayText = match lambda with Some l when l > 0.0 -> $", weight decay %g{l}" | _ -> ""
    printfn $"""gradcheck: network {describeLayers layers}{decayText}, {describeInit weightInit}, first %d{first.Count} training images, h = 1e-4, float64, backend {Linalg.describe ()}, inputs {inputs}"""
    // The book's check (Network.gradientCheck), one parameter at a time so that each can be
    // printed as it finishes: the numerical gradient perturbs a copy's parameters in place.
    // Every loss runs in train mode from the model's own states (Dropout's key is not advanced:
    // the same mask each time; BatchNorm on the batch's statistics).
    let _, backprop, _ = Network.gradient model x t
    let backprop =
        match decay with
        | Some o -> fst (o.Update 1 backprop [] (Network.parameters model))
        | None -> backprop
    let copy = Network.clone model
    let copyParameters = Network.parameters copy // the copy's own arrays: the penalty sees each perturbation
    let penalty () = match decay with Some o -> o.Penalty copyParameters | None -> 0.0
    // The biases of the Affine layers a BatchNorm follows: zero gradient in theory.
    let beforeBatchNorm =
        List.zip (Network.numbered layers) (List.tail layers @ [ Layer.Relu ])
        |> List.choose (fun ((layer, k), next) -> match layer, next with Layer.Affine _, Layer.BatchNorm _ -> Some $"b{k}" | _ -> None)
    let evaluations = ref 0
    let current = ref ("", 1)
    let display: Progress.Display option ref = ref None
    use interruption = new Progress.Interruption(fun () -> display.Value |> Option.iter (fun d -> d.Restore()))
    let f () =
        if interruption.Requested then raise (OperationCanceledException())
        Volatile.Write(&evaluations.contents, evaluations.Value + 1)
        Network.lossWithoutDelta copy x t + penalty ()
    let rate = Progress.RecentRate 3.0
    let status (seconds: float) =
        let name, entries = current.Value
        let done' = Volatile.Read(&evaluations.contents) / 2
        let perSecond = rate.Add(seconds, done')
        let left = if perSecond > 0.0 then Progress.clock (float (entries - done') / perSecond) else "--:--"
        $"checking {name}: entry %d{min done' entries}/%d{entries}  {left} left"
    use out = new Progress.Display(Progress.isLive (), status)
    display.Value <- Some out
    let results = Collections.Generic.List<string * bool>()
    try
        for (name, p), (_, g) in List.zip copyParameters backprop do
            current.Value <- (name, (Value.storage p).Length)
            Volatile.Write(&evaluations.contents, 0)
            let numerical = Network.numericalGradientOf f (Value.storage p)
            let numerical =
                match p with
                | Value.Matrix m -> Value.Matrix(MathNet.Numerics.LinearAlgebra.Matrix<float>.Build.Dense(m.RowCount, m.ColumnCount, numerical))
                | Value.Vector _ -> Value.Vector(MathNet.Numerics.LinearAlgebra.Vector<float>.Build.Dense numerical)
            let a, b = Value.toRowMajor g, Value.toRowMajor numerical
            let diff = Array.map2 (fun (u: float) v -> abs (u - v)) a b |> Array.average
            let norm (v: float[]) = sqrt (Array.sumBy (fun x -> x * x) v)
            results.Add((name, diff < gradcheckTolerance))
            if List.contains name beforeBatchNorm then
                // zero in theory: the norms say how small (a relative error would be noise over noise)
                out.Line $"%-3s{name}: {Progress.scientific 2 diff}  zero before BatchNorm: norms {Progress.scientific 2 (norm a)}, {Progress.scientific 2 (norm b)}"
            else
                out.Line $"%-3s{name}: {Progress.scientific 2 diff}  relative {Progress.scientific 2 (relativeError a b)}"
        out.Close()
        let failed = results |> Seq.filter (fun (_, ok) -> not ok) |> Seq.map fst |> List.ofSeq
        let tolerance = Progress.scientific 0 gradcheckTolerance
        if failed.IsEmpty then
            printfn $"ok: every mean difference is below the tolerance {tolerance}"
            0
        else
            printfn $"""FAILED: {String.Join(", ", failed)} at or above the tolerance {tolerance}"""
            1
    with :? OperationCanceledException ->
        out.Close()
        let signal = defaultArg interruption.Signal "a signal"
        eprintfn $"backprop: interrupted by {signal}; %d{results.Count} of %d{backprop.Length} parameters inRange"
        interruption.ExitCode

/// One prediction as JSON: the input's name, its label when known, the predicted class and its
/// name, and every class's probability.
let private predictionJson (name: string) (label: int option) (predicted: int) (className: string) (probabilities: float[]) =
    let o = JsonObject()
    o["input"] <- JsonValue.Create name
    o["label"] <- (match label with Some l -> JsonValue.Create l :> JsonNode | None -> null)
    o["predicted"] <- JsonValue.Create predicted
    o["class"] <- JsonValue.Create className
    o["probabilities"] <- JsonArray(probabilities |> Array.map (fun p -> JsonValue.Create p :> JsonNode))
    o

/// `predict`: the class and top probabilities for test images (--index) or image files, as text
/// (with the 28x28 input drawn, unless --no-render) or as one JSON array (--json).
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
              let test = loadTest (fst (resolveData (args.TryGetResult PredictArgs.Data) (args.TryGetResult PredictArgs.Dataset) datasetOfModel))
              Contracts.inputsMatchPixels file saved.Layers "the test images" test.PixelCount
              if n < 0 || n >= test.Count then usage $"--index must be between 0 and %d{test.Count - 1}, got %d{n}"
              let image = Array.init test.PixelCount (fun j -> float test.Pixels[n * test.PixelCount + j] / 255.0)
              let label = int test.Labels[n]
              yield $"test image %d{n} (label {className datasetName label})", Some label, image
          | None -> ()
          // A digit for an MNIST model is made as MNIST's were (the page does the same):
          // cropped, fitted into 20x20, centred by its centre of mass in 28x28. Other images
          // (Fashion-MNIST, other sizes) are scaled to the model's side, as before.
          let toInput (image: int * int * byte[]) =
              if side = Preprocess.side && datasetName = "mnist" then Preprocess.toInput image
              else Images.toInput side image
          for path in args.GetResult(Images, defaultValue = []) do
              yield path, None, toInput (Images.readImage path) ]
    if images.IsEmpty then usage "predict needs --index N or image files"
    Linalg.using (selectBackend None None) <| fun () ->
    let json = JsonArray()
    for name, label, image in images do
        let probabilities =
            match saved with
            | SavedModel.Single m -> Interop.Api.Probabilities(m, Array.map float32 image) |> Array.map float
            | SavedModel.Double m -> Interop.Api.Probabilities(m, image)
        let top = probabilities |> Array.indexed |> Array.sortByDescending snd |> Array.truncate 3
        if args.Contains Json then
            let jsonName = match label with Some _ -> name.Split(" (label")[0] | None -> name
            json.Add(predictionJson jsonName label (fst top[0]) (className datasetName (fst top[0])) probabilities)
        else
            printfn $"{name}: predicted {className datasetName (fst top[0])}"
            printfn "  top: %s" (String.Join(", ", [ for c, p in top -> $"{className datasetName c} (%.4f{p})" ]))
            if not (args.Contains No_Render) then
                for line in Images.render side image do
                    printfn $"  |{line}|"
    if args.Contains Json then printfn "%s" (json.ToJsonString(JsonSerializerOptions(WriteIndented = true)))
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
