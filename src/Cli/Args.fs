/// The command line of `backprop`, as Argu unions: one per subcommand.
module Backprop.Cli.Args

open System
open System.Text
open Argu

/// The activation between Affine layers, as the command line spells it.
type ActivationArg =
    /// ReLU (the book's default).
    | Relu
    /// Sigmoid.
    | Sigmoid
    /// tanh (chapter 6).
    | Tanh

/// The optimizer of `train`, as the command line spells it (the book's common/optimizer.py).
type OptimizerArg =
    /// SGD: W -= lr·dW (the book's recipe; lr 0.1 by default).
    | Sgd
    /// Momentum: v = momentum·v - lr·dW; W += v.
    | Momentum
    /// Nesterov's accelerated gradient, as the book writes it.
    | Nesterov
    /// AdaGrad: h += dW²; W -= lr·dW / (√h + 1e-7).
    | Adagrad
    /// RMSprop: h = decay·h + (1 - decay)·dW²; W -= lr·dW / (√h + 1e-7).
    | Rmsprop
    /// Adam, with the book's bias correction folded into the learning rate.
    | Adam

/// The element type of the matrices.
type PrecisionArg =
    /// float32.
    | Single
    /// float64.
    | Double

/// The matrix-product backend, as the command line spells it.
type BackendArg =
    /// OpenBLAS if the system has it, else managed.
    | Auto
    /// OpenBLAS (an error if the system has none).
    | Openblas
    /// The vectorized managed kernel.
    | Managed
    /// MathNet.Numerics's own managed provider (slow; a reference).
    | Mathnet

/// How gathered images are stored, as the command line spells it.
type InputStorageArg =
    /// Sparse where at most a third of the pixels are nonzero, else dense.
    | Auto
    /// Every pixel (dense products).
    | Dense
    /// The nonzero pixels alone (products that skip the zeros).
    | Sparse

/// A built-in data set.
type DatasetArg =
    /// MNIST, shipped in data/mnist.
    | Mnist
    /// Fashion-MNIST, from Debian's dataset-fashion-mnist package.
    | Fashion

/// How mini-batches are drawn, as the command line spells it.
type SamplingArg =
    /// Uniformly with replacement (the book).
    | With_Replacement
    /// A new random order each epoch.
    | Shuffle
    /// In order from the first image, wrapping around.
    | Sequential

/// An experiment of `compare`: one of the book's chapter 6 scripts.
[<RequireQualifiedAccess>]
type ExperimentArg =
    /// ch06/optimizer_compare_mnist.py: SGD, Momentum, AdaGrad and Adam.
    | Optimizers
    /// ch06/weight_init_compare.py: std 0.01, Xavier's and He's initial weights.
    | Init
    /// ch06/batch_norm_test.py: with and without Batch Normalization at 16 weight scales.
    | Batchnorm
    /// ch06/overfit_weight_decay.py: without and with weight decay.
    | Weight_Decay
    /// ch06/overfit_dropout.py: without and with Dropout.
    | Dropout

/// Options of `compare` (declared before TrainArgs, whose cases of the same names stay the
/// unqualified ones; Compare.fs names these as CompareArgs.Seed etc.).
[<HelpFlags("--help", "-h")>]
type CompareArgs =
    | [<MainCommand; ExactlyOnce; First>] Experiment of ExperimentArg
    | Out of file: string
    | Seed of seed: int
    | Iters of count: int
    | Epochs of count: int
    | Data of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Experiment _ -> "the experiment: optimizers, init, batchnorm, weight-decay or dropout (the book's ch06 scripts, with their settings)."
            | Out _ -> "write the book's figure to FILE.png."
            | Seed _ -> "seed for the initial weights and the mini-batches (default: 42)."
            | Iters _ -> "optimizers and init: iterations instead of the book's 2000 (a quicker look)."
            | Epochs _ -> "batchnorm, weight-decay, dropout: epochs instead of the book's 20 / 201 (a quicker look)."
            | Data _ -> "directory with the four MNIST-layout IDX files (default: the shipped data/mnist)."

/// Options of `train`.
[<HelpFlags("--help", "-h")>]
type TrainArgs =
    | Dataset of DatasetArg
    | Save of file: string
    | Init_From of file: string
    | Sampling of SamplingArg
    | Eval_Sample of count: int
    | Metrics of file: string
    | Plot of file: string
    | Backend of BackendArg
    | Input_Storage of InputStorageArg
    | Precision of PrecisionArg
    | Hidden of size: string list
    | Activation of ActivationArg
    | Batchnorm
    | Dropout of ratio: float
    | Optimizer of OptimizerArg
    | Lr of rate: float
    | Momentum of momentum: float
    | Beta1 of beta1: float
    | Beta2 of beta2: float
    | Decay_Rate of rate: float
    | Weight_Decay of lambda: float
    | Batch of size: int
    | Iters of count: int
    | Epochs of count: int
    | Seed of seed: int
    | Weight_Init of init: string
    | Weight_Init_Std of std: float
    | Data of dir: string
    | Verbose
    | Inspect of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Dataset _ -> "a built-in data set: mnist (shipped) or fashion (Fashion-MNIST from Debian's dataset-fashion-mnist) (default: mnist)."
            | Save _ -> "write the trained model to FILE.npz (NumPy archive: W1, b1, ... and metadata), atomically."
            | Init_From _ -> "start from the model in FILE.npz instead of random weights (it sets the layers); a file saved by train --save resumes its run: optimizer state, step, and the seed's batches."
            | Sampling _ -> "how batches are drawn: with-replacement (the book), shuffle, or sequential (default: with-replacement)."
            | Eval_Sample _ -> "measure accuracy each epoch on only the first N images of each set (default: all)."
            | Metrics _ -> "write the per-epoch history to FILE.csv or FILE.json."
            | Plot _ -> "draw the loss and the train and test accuracy curves to FILE.png."
            | Backend _ -> "matrix-product backend: auto (OpenBLAS if installed, else managed), openblas, managed or mathnet (default: auto)."
            | Input_Storage _ -> "how images are stored: auto (sparse where at most 1/3 of the pixels are nonzero, as in MNIST), dense or sparse (default: auto)."
            | Precision _ -> "element type of every matrix: single (float32) or double (float64) (default: single)."
            | Hidden _ -> "hidden layer sizes, one or more (default: 50; e.g. --hidden 100 50 for a deeper net), or none for no hidden layer (softmax regression)."
            | Activation _ -> "activation after each hidden Affine layer (default: relu)."
            | Batchnorm -> "Batch Normalization after each hidden Affine layer (Affine, BatchNorm, activation, as the book's MultiLayerNetExtend)."
            | Dropout _ -> "Dropout of RATIO (0 <= RATIO < 1) after each hidden activation, the book's (not inverted)."
            | Optimizer _ -> "sgd, momentum, nesterov, adagrad, rmsprop or adam (default: sgd)."
            | Lr _ -> "learning rate (default: 0.1 for sgd, the book's recipe; else the book's default for the optimizer: 0.01, adam 0.001)."
            | Momentum _ -> "momentum and nesterov: the momentum, in [0, 1) (default: 0.9)."
            | Beta1 _ -> "adam: beta1, in (0, 1) (default: 0.9)."
            | Beta2 _ -> "adam: beta2, in (0, 1) (default: 0.999)."
            | Decay_Rate _ -> "rmsprop: the decay rate, in (0, 1) (default: 0.99)."
            | Weight_Decay _ -> "weight decay lambda >= 0: lambda*W added to each weight's gradient, 0.5*lambda*sum(W^2) to the loss (default: none)."
            | Batch _ -> "mini-batch size (default: 100); with --sampling shuffle or sequential at most the training set's size."
            | Iters _ -> "number of SGD steps (default: 10000)."
            | Epochs _ -> "number of epochs instead of --iters (an epoch is training-set size / batch steps)."
            | Seed _ -> "seed for the initial weights and the batches drawn (default: 42)."
            | Weight_Init _ -> "initial weights: a standard deviation (0.01, the book's recipe), xavier or sigmoid (sqrt(1/n)), he or relu (sqrt(2/n)) (default: 0.01)."
            | Weight_Init_Std _ -> "standard deviation of the initial weights: the same as --weight-init X (default: 0.01)."
            | Data _ -> "directory with the four MNIST-layout IDX files, .gz or raw (default: the shipped data/mnist)."
            | Verbose -> "also print the garbage collector's figures at the end."
            | Inspect _ -> "the lens: per layer and epoch the activation histogram, gradient norm and update-to-weight ratio on 1000 training images, as CSV and PNG files in DIR."

/// `train`'s options as given on the command line, read in one pass over Argu's results
/// (`ParseResults.GetAllResults`). Argu's `TryGetResult` and `Contains` take the union case as a
/// quotation that is decoded at run time, about 1 ms each and 30 ms for the first of a process,
/// and `train` reads some thirty options before its first step (docs/PERFORMANCE.md, "train's
/// start, looked at a third time"). An option given more than once counts with its last value, as with
/// `TryGetResult`.
type TrainOptions =
    { /// --dataset.
      Dataset: DatasetArg option
      /// --save FILE.
      Save: string option
      /// --init-from FILE.
      InitFrom: string option
      /// --sampling.
      Sampling: SamplingArg option
      /// --eval-sample N.
      EvalSample: int option
      /// --metrics FILE.
      Metrics: string option
      /// --plot FILE.
      Plot: string option
      /// --backend.
      Backend: BackendArg option
      /// --input-storage.
      InputStorage: InputStorageArg option
      /// --precision.
      Precision: PrecisionArg option
      /// --hidden SIZE..., as written (sizes or none).
      Hidden: string list option
      /// --activation.
      Activation: ActivationArg option
      /// --batchnorm.
      Batchnorm: bool
      /// --dropout RATIO.
      Dropout: float option
      /// --optimizer.
      Optimizer: OptimizerArg option
      /// --lr.
      Lr: float option
      /// --momentum.
      Momentum: float option
      /// --beta1.
      Beta1: float option
      /// --beta2.
      Beta2: float option
      /// --decay-rate.
      DecayRate: float option
      /// --weight-decay.
      WeightDecay: float option
      /// --batch.
      Batch: int option
      /// --iters.
      Iters: int option
      /// --epochs.
      Epochs: int option
      /// --seed.
      Seed: int option
      /// --weight-init, as written.
      WeightInit: string option
      /// --weight-init-std.
      WeightInitStd: float option
      /// --data DIR.
      Data: string option
      /// --verbose.
      Verbose: bool
      /// --inspect DIR.
      Inspect: string option }

/// Reading `train`'s options (TrainOptions).
module TrainOptions =
    /// No option given.
    let none: TrainOptions =
        { Dataset = None; Save = None; InitFrom = None; Sampling = None; EvalSample = None; Metrics = None; Plot = None
          Backend = None; InputStorage = None; Precision = None; Hidden = None; Activation = None; Batchnorm = false
          Dropout = None; Optimizer = None; Lr = None; Momentum = None; Beta1 = None; Beta2 = None; DecayRate = None
          WeightDecay = None; Batch = None; Iters = None; Epochs = None; Seed = None; WeightInit = None
          WeightInitStd = None; Data = None; Verbose = false; Inspect = None }

    /// The options of parsed arguments, in one pass over them in the order given (the last of
    /// a repeated option wins).
    let ofResults (args: ParseResults<TrainArgs>) : TrainOptions =
        let add (o: TrainOptions) (arg: TrainArgs) =
            match arg with
            | TrainArgs.Dataset d -> { o with Dataset = Some d }
            | Save f -> { o with Save = Some f }
            | Init_From f -> { o with InitFrom = Some f }
            | TrainArgs.Sampling s -> { o with Sampling = Some s }
            | Eval_Sample n -> { o with EvalSample = Some n }
            | Metrics f -> { o with Metrics = Some f }
            | Plot f -> { o with Plot = Some f }
            | TrainArgs.Backend b -> { o with Backend = Some b }
            | TrainArgs.Input_Storage s -> { o with InputStorage = Some s }
            | Precision p -> { o with Precision = Some p }
            | TrainArgs.Hidden h -> { o with Hidden = Some h }
            | TrainArgs.Activation a -> { o with Activation = Some a }
            | TrainArgs.Batchnorm -> { o with Batchnorm = true }
            | TrainArgs.Dropout r -> { o with Dropout = Some r }
            | TrainArgs.Optimizer opt -> { o with Optimizer = Some opt }
            | TrainArgs.Lr r -> { o with Lr = Some r }
            | TrainArgs.Momentum m -> { o with Momentum = Some m }
            | TrainArgs.Beta1 b -> { o with Beta1 = Some b }
            | TrainArgs.Beta2 b -> { o with Beta2 = Some b }
            | TrainArgs.Decay_Rate r -> { o with DecayRate = Some r }
            | TrainArgs.Weight_Decay l -> { o with WeightDecay = Some l }
            | Batch b -> { o with Batch = Some b }
            | Iters n -> { o with Iters = Some n }
            | Epochs n -> { o with Epochs = Some n }
            | TrainArgs.Seed s -> { o with Seed = Some s }
            | TrainArgs.Weight_Init w -> { o with WeightInit = Some w }
            | Weight_Init_Std s -> { o with WeightInitStd = Some s }
            | TrainArgs.Data d -> { o with Data = Some d }
            | Verbose -> { o with Verbose = true }
            | TrainArgs.Inspect d -> { o with Inspect = Some d }
        List.fold add none (args.GetAllResults())

/// Options of `gradcheck`.
[<HelpFlags("--help", "-h")>]
type GradcheckArgs =
    | Backend of BackendArg
    | Input_Storage of InputStorageArg
    | Hidden of size: string list
    | Activation of ActivationArg
    | Batchnorm
    | Dropout of ratio: float
    | Weight_Decay of lambda: float
    | Weight_Init of init: string
    | Count of images: int
    | Seed of seed: int
    | Data of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Backend _ -> "matrix-product backend: auto, openblas, managed or mathnet (default: auto)."
            | Input_Storage _ -> "how images are stored: auto, dense or sparse (default: auto)."
            | Hidden _ -> "hidden layer sizes, or none (default: 50)."
            | Activation _ -> "activation after each hidden Affine layer (default: relu)."
            | Batchnorm -> "Batch Normalization after each hidden Affine layer, checked in train mode (batch statistics: --count 4 or more)."
            | Dropout _ -> "Dropout of RATIO after each hidden activation, checked with the fixed mask of the model's key."
            | Weight_Decay _ -> "weight decay lambda >= 0: lambda*W in backpropagation's gradient, 0.5*lambda*sum(W^2) in the loss differentiated."
            | Weight_Init _ -> "initial weights: a standard deviation, xavier, sigmoid, he or relu (default: 0.01; 1 with --batchnorm, where the scale is divided out)."
            | Count _ -> "how many of the first training images to check on (default: 3, as the book; 4 with --batchnorm)."
            | Seed _ -> "seed for the initial weights (default: 42)."
            | Data _ -> "directory with the MNIST-layout IDX files (default: the shipped data/mnist)."

/// Options of `evaluate`.
[<HelpFlags("--help", "-h")>]
type EvaluateArgs =
    | [<Mandatory>] Model of file: string
    | Dataset of DatasetArg
    | Data of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "the model to evaluate (an .npz written by train --save, or by numpy)."
            | Dataset _ -> "a built-in data set: mnist or fashion (default: the one the model was trained on)."
            | Data _ -> "directory with the MNIST-layout IDX files (default: the shipped data/mnist)."

/// Options of `predict`.
[<HelpFlags("--help", "-h")>]
type PredictArgs =
    | [<Mandatory>] Model of file: string
    | Dataset of DatasetArg
    | Index of n: int
    | Data of dir: string
    | Json
    | No_Render
    | [<MainCommand>] Images of file: string list

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "the model to predict with (.npz)."
            | Dataset _ -> "a built-in data set for --index and class names: mnist or fashion (default: the model's)."
            | Index _ -> "predict test image N of the data set."
            | Data _ -> "directory with the MNIST-layout IDX files, for --index (default: the shipped data/mnist)."
            | Json -> "print the predictions as one JSON document (class, label, probabilities) instead of text."
            | No_Render -> "do not draw the 28x28 input as text."
            | Images _ -> "images (PNG, or PGM P2/P5) of any size, read as grey levels and scaled to the model's 28x28."

/// Options of `demo` (none).
[<HelpFlags("--help", "-h")>]
type DemoArgs =
    | [<Hidden>] Unused

    interface IArgParserTemplate with
        member _.Usage = ""

/// The subcommands of `backprop`.
[<HelpFlags("--help", "-h")>]
type Command =
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Gradcheck of ParseResults<GradcheckArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Evaluate of ParseResults<EvaluateArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Predict of ParseResults<PredictArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Export of ParseResults<Export.ExportArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Demo of ParseResults<DemoArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Graph of ParseResults<GraphCommand.GraphArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Serve of ParseResults<Serve.ServeArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Compare of ParseResults<CompareArgs>

    interface IArgParserTemplate with
        member c.Usage =
            match c with
            | Train _ -> "train the network on MNIST with mini-batch SGD (defaults: the book's recipe)."
            | Gradcheck _ -> "compare backpropagation with numerical gradients on the first training images."
            | Evaluate _ -> "a saved model's test accuracy, per-class precision and recall, and confusion matrix."
            | Predict _ -> "a saved model's prediction for test images (--index) or image files, with the top probabilities."
            | Export _ -> "a saved model as an ONNX file (input x, outputs probabilities and scores), for ONNX Runtime and other tools."
            | Demo _ -> "the book's shopping example: forward and backward through multiply and add nodes."
            | Graph _ -> "a computational graph with its forward values and gradients, as Graphviz DOT, SVG or PNG."
            | Serve _ -> "a page on 127.0.0.1 to draw a digit and watch the network (probabilities, activations, input gradient)."
            | Compare _ -> "the book's chapter 6 experiments: compare optimizers, init, batchnorm, weight-decay or dropout, with a figure."

/// The version of `backprop`: the assembly's informational version without its commit suffix.
let version =
    let assembly = Reflection.Assembly.GetExecutingAssembly()
    match Reflection.CustomAttributeExtensions.GetCustomAttribute<Reflection.AssemblyInformationalVersionAttribute>(assembly) with
    | null -> string (assembly.GetName().Version)
    | a -> a.InformationalVersion.Split('+')[0]

/// The lines printed above the usage of `backprop --help`: what it is, examples, conventions.
let intro =
    String.concat
        "\n"
        [ "backprop: train and check the two-layer network of \"Deep Learning from Scratch\" (chapter 5) on MNIST."
          ""
          "examples:"
          "    backprop train                               the book's recipe (10,000 SGD steps, about 97% test accuracy)"
          "    backprop train --epochs 3 --save model.npz   train briefly and keep the model"
          "    backprop evaluate --model model.npz          its test accuracy and confusion matrix"
          "    backprop predict --model model.npz --index 0"
          "    backprop help train                          every option of train"
          ""
          "options take their value as --opt value or --opt=value. Exit codes: 0 ok, 1 bad data or a"
          "diverged run, 2 bad usage, 130/143 stopped by Ctrl-C/SIGTERM (what was trained is kept)." ]

/// The help to print for a command line that asked for it: Argu's usage, after the intro when
/// it is the whole program's (`backprop`, `backprop --help`, `-h`, `help`).
let helpText (argv: string[]) (usage: string) =
    if argv = [| "--help" |] || argv = [| "-h" |] then intro + "\n\n" + usage else usage

/// The command line as Argu reads it: `help` alone (or nothing) asks for the usage, `help CMD`
/// for CMD's, and `--opt=value` is split into `--opt value`.
let normalize (argv: string[]) : string[] =
    let split (a: string) =
        if a.StartsWith "--" && a.IndexOf '=' > 2 then
            let i = a.IndexOf '='
            [ a.Substring(0, i); a.Substring(i + 1) ]
        else
            [ a ]
    match List.ofArray argv with
    | []
    | [ "help" ] -> [| "--help" |]
    | [ "help"; command ] -> [| command; "--help" |]
    | args -> args |> List.collect split |> Array.ofList

/// The optimal-string-alignment distance between a and b: Levenshtein's insertions,
/// deletions and substitutions, plus swaps of two neighbouring characters ("trian" is one
/// swap from "train").
let editDistance (a: string) (b: string) =
    let d = Array2D.zeroCreate (a.Length + 1) (b.Length + 1)
    for i in 0 .. a.Length do
        d[i, 0] <- i
    for j in 0 .. b.Length do
        d[0, j] <- j
    for i in 1 .. a.Length do
        for j in 1 .. b.Length do
            let cost = if a[i - 1] = b[j - 1] then 0 else 1
            let best = min (min (d[i - 1, j] + 1) (d[i, j - 1] + 1)) (d[i - 1, j - 1] + cost)
            d[i, j] <-
                if i > 1 && j > 1 && a[i - 1] = b[j - 2] && a[i - 2] = b[j - 1] then min best (d[i - 2, j - 2] + 1)
                else best
    d[a.Length, b.Length]

/// The known name closest to `word`, if it is close enough to be a typo: at most 2 edits, and
/// fewer than half the word's characters.
let closest (known: string list) (word: string) : string option =
    known
    |> List.distinct
    |> List.map (fun k -> k, editDistance (word.ToLowerInvariant()) k)
    |> List.filter (fun (k, d) -> d > 0 && d <= 2 && d * 2 < max word.Length k.Length)
    |> List.sortBy snd
    |> List.tryHead
    |> Option.map fst

/// The command-line names of a parser's visible options.
let private namesOf<'T when 'T :> IArgParserTemplate> () =
    ArgumentParser.Create<'T>().GetArgumentCases()
    |> List.filter (fun c -> not c.IsHidden.Value && not c.IsMainCommand)
    |> List.collect (fun c -> c.CommandLineNames.Value)

/// The names each subcommand accepts.
let private subcommandNames () =
    [ "train", namesOf<TrainArgs> ()
      "gradcheck", namesOf<GradcheckArgs> ()
      "evaluate", namesOf<EvaluateArgs> ()
      "predict", namesOf<PredictArgs> ()
      "demo", namesOf<DemoArgs> ()
      "graph", namesOf<GraphCommand.GraphArgs> ()
      "serve", namesOf<Serve.ServeArgs> ()
      "compare", namesOf<CompareArgs> () ]

/// "did you mean '--iters'?" for the first line of an Argu error about `argv`: an unrecognized
/// subcommand or option (compared with the names it could have been, given the subcommand
/// before it) or a value that is not one of the choices listed.
let didYouMean (argv: string[]) (message: string) : string option =
    let unrecognized = RegularExpressions.Regex.Match(message, "unrecognized argument: '([^']*)'")
    let choice = RegularExpressions.Regex.Match(message, "must be followed by <([^>]*)>, but was '([^']*)'")
    if unrecognized.Success then
        let word = unrecognized.Groups[1].Value
        let commands = subcommandNames ()
        let position = Array.IndexOf(argv, word)
        let command =
            argv
            |> Array.take (if position < 0 then argv.Length else position)
            |> Array.tryPick (fun a -> commands |> List.tryFind (fun (name, _) -> name = a))
        let known =
            match command with
            | Some(_, names) -> names @ [ "--help"; "-h" ]
            | None -> List.map fst commands @ [ "help"; "--help"; "-h"; "--version" ]
        closest known word
    elif choice.Success then
        closest (List.ofArray (choice.Groups[1].Value.Split '|')) choice.Groups[2].Value
    else
        None
