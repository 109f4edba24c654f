/// The command line of `backprop`, as Argu unions: one per subcommand.
module Backprop.Cli.Args

open Argu

/// The activation between Affine layers, as the command line spells it.
type ActivationArg =
    /// ReLU (the book's default).
    | Relu
    /// Sigmoid.
    | Sigmoid

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

/// Options of `train`.
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
    | Hidden of size: int list
    | Activation of ActivationArg
    | Lr of rate: float
    | Batch of size: int
    | Iters of count: int
    | Epochs of count: int
    | Seed of seed: int
    | Weight_Init_Std of std: float
    | Data of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Dataset _ -> "a built-in data set: mnist (shipped) or fashion (Fashion-MNIST from Debian's dataset-fashion-mnist) (default: mnist)."
            | Save _ -> "write the trained model to FILE.npz (NumPy archive: W1, b1, ... and metadata), atomically."
            | Init_From _ -> "start from the parameters in FILE.npz instead of random weights (sets the layer sizes)."
            | Sampling _ -> "how batches are drawn: with-replacement (the book), shuffle, or sequential (default: with-replacement)."
            | Eval_Sample _ -> "measure accuracy each epoch on only the first N images of each set (default: all)."
            | Metrics _ -> "write the per-epoch history to FILE.csv or FILE.json."
            | Plot _ -> "draw the loss and the train and test accuracy curves to FILE.png."
            | Backend _ -> "matrix-product backend: auto (OpenBLAS if installed, else managed), openblas, managed or mathnet (default: auto)."
            | Input_Storage _ -> "how images are stored: auto (sparse where at most 1/3 of the pixels are nonzero, as in MNIST), dense or sparse (default: auto)."
            | Precision _ -> "element type of every matrix: single (float32) or double (float64) (default: single)."
            | Hidden _ -> "hidden layer sizes, one or more (default: 50; e.g. --hidden 100 50 for a deeper net)."
            | Activation _ -> "activation between Affine layers (default: relu)."
            | Lr _ -> "SGD learning rate (default: 0.1)."
            | Batch _ -> "mini-batch size, drawn at random with replacement (default: 100)."
            | Iters _ -> "number of SGD steps (default: 10000)."
            | Epochs _ -> "number of epochs instead of --iters (an epoch is training-set size / batch steps)."
            | Seed _ -> "seed for the initial weights and the batches drawn (default: 42)."
            | Weight_Init_Std _ -> "standard deviation of the initial weights (default: 0.01)."
            | Data _ -> "directory with the four MNIST-layout IDX files, .gz or raw (default: the shipped data/mnist)."

/// Options of `gradcheck`.
type GradcheckArgs =
    | Backend of BackendArg
    | Input_Storage of InputStorageArg
    | Hidden of size: int list
    | Activation of ActivationArg
    | Count of images: int
    | Seed of seed: int
    | Data of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Backend _ -> "matrix-product backend: auto, openblas, managed or mathnet (default: auto)."
            | Input_Storage _ -> "how images are stored: auto, dense or sparse (default: auto)."
            | Hidden _ -> "hidden layer sizes (default: 50)."
            | Activation _ -> "activation between Affine layers (default: relu)."
            | Count _ -> "how many of the first training images to check on (default: 3, as the book)."
            | Seed _ -> "seed for the initial weights (default: 42)."
            | Data _ -> "directory with the MNIST-layout IDX files (default: the shipped data/mnist)."

/// Options of `evaluate`.
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
type PredictArgs =
    | [<Mandatory>] Model of file: string
    | Dataset of DatasetArg
    | Index of n: int
    | Data of dir: string
    | [<MainCommand>] Images of file: string list

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "the model to predict with (.npz)."
            | Dataset _ -> "a built-in data set for --index and class names: mnist or fashion (default: the model's)."
            | Index _ -> "predict test image N of the data set."
            | Data _ -> "directory with the MNIST-layout IDX files, for --index (default: the shipped data/mnist)."
            | Images _ -> "images (PNG, or PGM P2/P5) of any size, read as grey levels and scaled to the model's 28x28."

/// Options of `demo` (none).
type DemoArgs =
    | [<Hidden>] Unused

    interface IArgParserTemplate with
        member _.Usage = ""

/// The subcommands of `backprop`.
type Command =
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Gradcheck of ParseResults<GradcheckArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Evaluate of ParseResults<EvaluateArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Predict of ParseResults<PredictArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Demo of ParseResults<DemoArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Graph of ParseResults<GraphCommand.GraphArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Serve of ParseResults<Serve.ServeArgs>

    interface IArgParserTemplate with
        member c.Usage =
            match c with
            | Train _ -> "train the network on MNIST with mini-batch SGD (defaults: the book's recipe)."
            | Gradcheck _ -> "compare backpropagation with numerical gradients on the first training images."
            | Evaluate _ -> "a saved model's test accuracy, per-class precision and recall, and confusion matrix."
            | Predict _ -> "a saved model's prediction for test images (--index) or image files, with the top probabilities."
            | Demo _ -> "the book's shopping example: forward and backward through multiply and add nodes."
            | Graph _ -> "a computational graph with its forward values and gradients, as Graphviz DOT, SVG or PNG."
            | Serve _ -> "a page on 127.0.0.1 to draw a digit and watch the network (probabilities, activations, input gradient)."
