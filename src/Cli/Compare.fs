/// `backprop compare`: the book's chapter 6 experiments (ch06/optimizer_compare_mnist.py,
/// weight_init_compare.py, batch_norm_test.py, overfit_weight_decay.py, overfit_dropout.py) with
/// the book's settings, seeded and reproducible: each run as a lazy sequence of what the book
/// prints, the acceptance check of issue 13 as a one-line verdict, and the book's figure as a PNG.
///
/// Precision: float64. The book's arrays are float32 images (load_mnist's x / 255) times float64
/// weights (np.random.randn), so numpy computes in float64; float64 matches it best.
///
/// Where this differs from the book's scripts (each on purpose, each documented in the README):
/// the networks of one experiment start from the same seed, so that they differ only in what is
/// compared (the book draws each network's weights one after the other from one generator); the
/// mini-batches come from .NET's Random, not numpy's; the networks of one experiment see the same
/// mini-batches (the book's optimizers, init and batchnorm scripts do this too; its two overfit
/// scripts are separate runs).
module Backprop.Cli.Compare

open System
open System.IO
open Argu
open MathNet.Numerics.LinearAlgebra
open ScottPlot
open SkiaSharp
open Backprop.Core
open Backprop.Cli.Args
open Backprop.Cli.Commands

// ─── The book's smoothing (common/util.py) ─────────────────────────────────────────────────────

/// numpy's np.kaiser(m, beta): I0(β·√(1 - (2n/(m-1) - 1)²)) / I0(β) for n = 0 .. m-1.
let kaiser (m: int) (beta: float) : float[] =
    if m = 1 then [| 1.0 |]
    else
        let alpha = float (m - 1) / 2.0
        Array.init m (fun n ->
            let r = (float n - alpha) / alpha
            MathNet.Numerics.SpecialFunctions.BesselI0(beta * sqrt (max 0.0 (1.0 - r * r))) / MathNet.Numerics.SpecialFunctions.BesselI0 beta)

/// The book's smooth_curve (common/util.py): the curve padded with its own first and last 10
/// values mirrored (s = np.r_[x[10:0:-1], x, x[-1:-11:-1]]), convolved with a Kaiser window of 11
/// (β = 2) normalized to sum 1, the middle len(x) values kept. Curves shorter than 11 values are
/// returned as they are (the book's would fail on them).
let smoothCurve (x: float[]) : float[] =
    let windowLength = 11
    let n = x.Length
    if n < windowLength then Array.copy x
    else
        let s = Array.concat [ [| for i in windowLength - 1 .. -1 .. 1 -> x[i] |]; x; [| for i in n - 1 .. -1 .. n - windowLength + 1 -> x[i] |] ]
        let w = kaiser windowLength 2.0
        let total = Array.sum w
        let w = w |> Array.map (fun v -> v / total)
        // np.convolve(w, s, mode='valid')[k] = Σ_j w[j]·s[k + 10 - j]; the window is symmetric.
        let y = Array.init (s.Length - windowLength + 1) (fun k -> Seq.sum (seq { for j in 0 .. windowLength - 1 -> w[j] * s[k + windowLength - 1 - j] }))
        y[5 .. y.Length - 6]

// ─── The experiments ───────────────────────────────────────────────────────────────────────────

/// One network of a loss comparison: its name in the legend, its layers, its initial weights
/// and its optimizer.
type Contender =
    { /// The name the book gives it ("SGD", "std=0.01", ...).
      Name: string
      /// The layers.
      Layers: Layer list
      /// How its initial weights are drawn.
      WeightInit: WeightInit
      /// Its optimizer (with its learning rate).
      Optimizer: Optimizer<float> }

/// After one iteration of a loss comparison: the loss of each network, in the contenders' order.
type LossStep =
    { /// 0 for the first iteration, as the book counts.
      Iteration: int
      /// Each network's loss on the iteration's mini-batch after its update (the book's
      /// train_loss[key].append(network.loss(x_batch, t_batch)) after optimizer.update).
      Losses: float[] }

/// The network of optimizer_compare_mnist.py and weight_init_compare.py (the book's
/// MultiLayerNet(784, [100, 100, 100, 100], 10), ReLU).
let deepLayers = Network.layers Activation.ReLU [ 784; 100; 100; 100; 100; 10 ]

/// The iterations of both loss comparisons (the book's max_iterations).
let lossIterations = 2000

/// The mini-batch of both loss comparisons.
let lossBatch = 128

/// The four optimizers of optimizer_compare_mnist.py with the book's default learning rates
/// (SGD 0.01, Momentum 0.01 and 0.9, AdaGrad 0.01, Adam 0.001, 0.9, 0.999), He's weights.
let optimizerContenders : Contender list =
    [ "SGD", Optimizer.sgd 0.01
      "Momentum", Optimizer.momentum 0.01 0.9
      "AdaGrad", Optimizer.adaGrad 0.01
      "Adam", Optimizer.adam 0.001 0.9 0.999 ]
    |> List.map (fun (name, o) -> { Name = name; Layers = deepLayers; WeightInit = WeightInit.He; Optimizer = o })

/// The three initial weights of weight_init_compare.py (N(0, 0.01²), Xavier's, He's), each
/// trained by SGD with learning rate 0.01.
let initContenders : Contender list =
    [ "std=0.01", WeightInit.Std 0.01; "Xavier", WeightInit.Xavier; "He", WeightInit.He ]
    |> List.map (fun (name, w) -> { Name = name; Layers = deepLayers; WeightInit = w; Optimizer = Optimizer.sgd 0.01 })

/// A loss comparison (the loop of optimizer_compare_mnist.py and weight_init_compare.py): every
/// contender starts from weights drawn from `seed` and takes one step on the same mini-batch of
/// `batchSize` images, drawn with replacement from `seed` + 1, at each of `iterations`
/// iterations. Lazily, one LossStep per iteration.
let lossComparison (train: Dataset) (seed: int) (iterations: int) (batchSize: int) (contenders: Contender list) : seq<LossStep> =
    seq {
        let states = contenders |> List.map (fun c -> Training.startWith c.Optimizer (Network.initWith c.WeightInit seed c.Layers)) |> Array.ofList
        let optimizers = contenders |> List.map (fun c -> c.Optimizer) |> Array.ofList
        let batches = Training.batchIndices (seed + 1) batchSize train.Count |> Seq.truncate iterations
        for i, indices in Seq.indexed batches do
            let x, t = Dataset.batch train indices
            // The networks are independent: each steps on a core of its own (the same numbers as
            // one after the other).
            let stepped = Array.Parallel.init states.Length (fun k -> let state, _ = Training.stepWith optimizers[k] states[k] (x, t) in state, Network.loss state.Model x t)
            Array.iteri (fun k (state, _) -> states[k] <- state) stepped
            yield { Iteration = i; Losses = Array.map snd stepped }
    }

/// f applied to a and to b, each on a core of its own.
let private both (f: 'a -> 'b) (a: 'a, b: 'a) : 'b * 'b =
    let r = Array.Parallel.map f [| a; b |]
    r[0], r[1]

/// The 16 weight scales of batch_norm_test.py: np.logspace(0, -4, 16), from 1 down to 1e-4.
let weightScales = Array.init 16 (fun i -> 10.0 ** (-4.0 * float i / 15.0))

/// The network of batch_norm_test.py (the book's MultiLayerNetExtend(784, [100] * 5, 10)),
/// with or without Batch Normalization.
let batchNormLayers (batchNorm: bool) = Network.extended Activation.ReLU [ 784; 100; 100; 100; 100; 100; 10 ] batchNorm None

/// One weight scale of the Batch Normalization experiment: the training accuracy of each network
/// once an epoch.
type BatchNormRun =
    { /// The standard deviation of the initial weights.
      Scale: float
      /// The accuracy on the training images without Batch Normalization, once an epoch.
      Without: float[]
      /// The same with Batch Normalization.
      With: float[] }

/// batch_norm_test.py's __train for one weight scale: the network with and without Batch
/// Normalization, weights N(0, scale²) from `seed`, SGD 0.01 on the same mini-batches of 100 drawn
/// with replacement from `seed` + 1; the accuracy on the whole training set in inference mode
/// after the first step and every training-set-size / 100 steps after it (the book's
/// `i % iter_per_epoch == 0`), `epochs` times.
let batchNormRun (train: Dataset) (seed: int) (epochs: int) (scale: float) : BatchNormRun =
    let batchSize = 100
    let perEpoch = max (train.Count / batchSize) 1
    let sgd = Optimizer.sgd 0.01
    let accuracies batchNorm =
        Training.batchIndices (seed + 1) batchSize train.Count
        |> Seq.truncate ((epochs - 1) * perEpoch + 1)
        |> Seq.map (fun indices -> (Dataset.batch train indices: Matrix<float> * Labels<float>))
        |> Training.stepsWith sgd (Training.startWith sgd (Network.initWith (WeightInit.Std scale) seed (batchNormLayers batchNorm)))
        |> Seq.indexed
        |> Seq.filter (fun (i, _) -> i % perEpoch = 0)
        |> Seq.map (fun (_, (s: TrainState<float>, _)) -> Evaluate.accuracy s.Model train)
        |> Array.ofSeq
    let without, with' = both accuracies (false, true) // the same mini-batches, on two cores
    { Scale = scale; Without = without; With = with' }

/// The Batch Normalization experiment: batchNormRun for each of the 16 weight scales in turn,
/// lazily, on the first 1,000 training images (the book's x_train[:1000]).
let batchNormComparison (train: Dataset) (seed: int) (epochs: int) : seq<BatchNormRun> =
    let train = Dataset.take 1000 train
    weightScales |> Seq.map (batchNormRun train seed epochs)

/// The two runs of an overfitting experiment: a network without the technique and one with it.
type Overfit =
    { /// The experiment's name ("weight-decay", "dropout").
      Name: string
      /// What the second run adds, in the book's words ("weight decay (lambda = 0.1)").
      Technique: string
      /// The run without: layers and optimizer.
      Without: Layer list * Optimizer<float>
      /// The run with: layers and optimizer.
      With: Layer list * Optimizer<float> }

/// The network of both overfitting experiments: the book's MultiLayerNet(784, [100] * 6, 10), ReLU,
/// He's weights; with Dropout of the given ratio after each activation (MultiLayerNetExtend).
let overfitLayers (dropout: float option) = Network.extended Activation.ReLU [ 784; 100; 100; 100; 100; 100; 100; 10 ] false dropout

/// overfit_weight_decay.py: SGD 0.01 without and with weight decay λ = 0.1.
let weightDecayExperiment =
    { Name = "weight-decay"
      Technique = "weight decay (lambda = 0.1)"
      Without = overfitLayers None, Optimizer.sgd 0.01
      With = overfitLayers None, Optimizer.chain [ Optimizer.weightDecay 0.1; Optimizer.sgd 0.01 ] }

/// overfit_dropout.py: SGD 0.01 without and with Dropout of ratio 0.2.
let dropoutExperiment =
    { Name = "dropout"
      Technique = "Dropout (ratio 0.2)"
      Without = overfitLayers None, Optimizer.sgd 0.01
      With = overfitLayers (Some 0.2), Optimizer.sgd 0.01 }

/// The epochs of both overfitting experiments (overfit_weight_decay.py's max_epochs).
let overfitEpochs = 201

/// One epoch of an overfitting experiment: each run's accuracy on the training images and on the
/// test set (NaN where the epoch was not evaluated).
type OverfitEpoch =
    { /// 0 for the first, as the book counts.
      Epoch: int
      /// Without the technique: (train accuracy, test accuracy).
      Without: float * float
      /// With it.
      With: float * float }

/// An overfitting experiment (the loop of overfit_weight_decay.py): the first 300 training
/// images, both networks from weights drawn from `seed` (He's), SGD steps on the same mini-batches
/// of 100 drawn with replacement from `seed` + 1; an epoch ends after the first step and every
/// 3 steps after it (the book's `i % iter_per_epoch == 0`), where both networks are evaluated
/// (inference mode) on the 300 training images and the whole test set, for the epochs for which
/// `evaluate` is true (the others are NaN: skipping them changes no other figure). Lazily, one
/// OverfitEpoch per epoch.
let overfitComparison (train: Dataset) (test: Dataset) (seed: int) (epochs: int) (evaluate: int -> bool) (experiment: Overfit) : seq<OverfitEpoch> =
    let train = Dataset.take 300 train
    let batchSize = 100
    let perEpoch = max (train.Count / batchSize) 1
    let (withoutLayers, withoutOpt), (withLayers, withOpt) = experiment.Without, experiment.With
    let start (layers: Layer list) (o: Optimizer<float>) = Training.startWith o (Network.initWith WeightInit.He seed layers)
    // Epoch e ends after step e·perEpoch + 1 (the book evaluates when i % iter_per_epoch == 0,
    // i counting from 0, after the step): the first epoch is one step, the others perEpoch.
    // The indices of every mini-batch (both networks gather their own images from them).
    let batches = Training.batchIndices (seed + 1) batchSize train.Count |> Seq.truncate ((epochs - 1) * perEpoch + 1) |> Array.ofSeq
    let advance (o: Optimizer<float>) (state: TrainState<float>) (epoch: int) =
        let first, count = (if epoch = 0 then 0, 1 else (epoch - 1) * perEpoch + 1, perEpoch)
        batches[first .. first + count - 1] |> Array.fold (fun s indices -> fst (Training.stepWith o s (Dataset.batch train indices: Matrix<float> * Labels<float>))) state
    let measure (s: TrainState<float>) = Evaluate.accuracy s.Model train, Evaluate.accuracy s.Model test
    seq {
        let states = ref (start withoutLayers withoutOpt, start withLayers withOpt)
        for epoch in 0 .. epochs - 1 do
            // The two networks are independent: each steps (and is evaluated) on a core of its own.
            let a, b = states.Value
            states.Value <- both (fun (o, s) -> advance o s epoch) ((withoutOpt, a), (withOpt, b))
            if evaluate epoch then
                let without, with' = both measure states.Value
                yield { Epoch = epoch; Without = without; With = with' }
            else
                yield { Epoch = epoch; Without = (nan, nan); With = (nan, nan) }
    }

// ─── The acceptance checks (issue 13) ──────────────────────────────────────────────────────────

/// An acceptance check: whether it holds, and the one line that says so with its figures.
type Verdict =
    { /// True when the check holds.
      Holds: bool
      /// "check: ...: ok" or "check: ...: NOT MET", with the figures it was decided on.
      Line: string }

/// The verdict on a claim, with the figures it was decided on.
let private verdict (claim: string) (figures: string) (holds: bool) =
    { Holds = holds; Line = $"""check: {claim}: {if holds then "ok" else "NOT MET"} ({figures})""" }

/// The last value of each contender's smoothed loss curve (the book's figure at the last
/// iteration), in the contenders' order.
let finalSmoothed (losses: float[][]) : float[] = losses |> Array.map (fun l -> Array.last (smoothCurve l))

/// compare optimizers: SGD's loss is the highest of the four at the last iteration (on the smoothed
/// curves of the figure: one mini-batch's loss alone is noisy).
let optimizersVerdict (names: string list) (losses: float[][]) : Verdict =
    let last = finalSmoothed losses
    let figures = List.zip names (List.ofArray last) |> List.map (fun (n, l) -> $"{n} %.3f{l}") |> String.concat ", "
    let sgd = List.findIndex ((=) "SGD") names
    verdict $"SGD has the highest loss at iteration %d{(Array.head losses).Length} (smoothed)" figures (last |> Array.indexed |> Array.forall (fun (i, l) -> i = sgd || l < last[sgd]))

/// compare init: std=0.01's loss ends above 2.2 and He's below Xavier's (smoothed, last iteration).
let initVerdict (names: string list) (losses: float[][]) : Verdict =
    let last = finalSmoothed losses
    let of' name = last[List.findIndex ((=) name) names]
    let figures = List.zip names (List.ofArray last) |> List.map (fun (n, l) -> $"{n} %.3f{l}") |> String.concat ", "
    verdict "std=0.01 ends above 2.2 and He below Xavier (smoothed loss, last iteration)" figures (of' "std=0.01" > 2.2 && of' "He" < of' "Xavier")

/// compare batchnorm: with Batch Normalization the final training accuracy is higher than
/// without for at least 12 of the 16 scales.
let batchNormVerdict (runs: BatchNormRun list) : Verdict =
    let higher = runs |> List.filter (fun r -> Array.last r.With > Array.last r.Without) |> List.length
    verdict "with BatchNorm the final training accuracy is higher than without for at least 12 of the 16 scales" $"higher for %d{higher} of %d{runs.Length}" (higher >= 12)

/// The train-test gap of a (train, test) accuracy pair.
let gap (train: float, test: float) = train - test

/// compare weight-decay / dropout: the train-test gap at the last epoch is smaller with the
/// technique than without.
let overfitVerdict (experiment: Overfit) (last: OverfitEpoch) : Verdict =
    let a, b = gap last.Without, gap last.With
    verdict
        $"the train-test gap at the last epoch is smaller with {experiment.Technique} than without"
        $"""without %.4f{a} (train %.4f{fst last.Without}, test %.4f{snd last.Without}), with %.4f{b} (train %.4f{fst last.With}, test %.4f{snd last.With})"""
        (b < a)

// ─── The figures ───────────────────────────────────────────────────────────────────────────────

/// The series colours (matplotlib's default cycle: blue, orange, green, red).
let private palette = [| Color.FromHex "#1f77b4"; Color.FromHex "#ff7f0e"; Color.FromHex "#2ca02c"; Color.FromHex "#d62728" |]

/// Draws a plot into a PNG of width x height pixels.
let private pngOf (width: int) (height: int) (plot: Plot) : byte[] =
    use plot = plot
    plot.GetImageBytes(width, height, ImageFormat.Png)

/// Draws plots in a grid (row by row, `columns` across) into one PNG of width x height pixels.
let private gridPng (width: int) (height: int) (columns: int) (plots: Plot list) : byte[] =
    let rows = (plots.Length + columns - 1) / columns
    let w, h = width / columns, height / rows
    use surface = SKSurface.Create(SKImageInfo(width, height))
    surface.Canvas.Clear SKColors.White
    for k, plot in List.indexed plots do
        use plot = plot
        use part = SKSurface.Create(SKImageInfo(w, h))
        plot.Render(part.Canvas, w, h)
        use image = part.Snapshot()
        surface.Canvas.DrawImage(image, float32 (k % columns * w), float32 (k / columns * h))
    use image = surface.Snapshot()
    use data = image.Encode(SKEncodedImageFormat.Png, 100)
    data.ToArray()

/// A series drawn as the book's plt.plot(x, y, marker=m, markevery=every, label=name): a line
/// through every point, a marker on every `every`-th point, and a legend item showing both.
let private series (plot: Plot) (color: Color) (marker: MarkerShape) (every: int) (dashed: bool) (name: string) (xs: float[]) (ys: float[]) : LegendItem =
    let line = plot.Add.ScatterLine(xs, ys)
    line.Color <- color
    line.LineWidth <- 1.5f
    if dashed then line.LinePattern <- LinePattern.Dashed
    let picked = [| 0 .. every .. xs.Length - 1 |]
    if marker <> MarkerShape.None && picked.Length > 0 then
        let marks = plot.Add.ScatterPoints(picked |> Array.map (fun i -> xs[i]), picked |> Array.map (fun i -> ys[i]))
        marks.Color <- color
        marks.MarkerShape <- marker
        marks.MarkerSize <- 7.0f
    plot.Axes.Bottom.TickGenerator <- TickGenerators.NumericAutomatic(IntegerTicksOnly = true)
    LegendItem(LabelText = name, LineColor = color, LineWidth = 1.5f, LinePattern = (if dashed then LinePattern.Dashed else LinePattern.Solid), MarkerShape = marker, MarkerColor = color, MarkerSize = 7.0f)

/// The loss figure of optimizer_compare_mnist.py and weight_init_compare.py: each contender's
/// smoothed loss (smoothCurve) against the iteration, a marker every 100 iterations, y from 0 to
/// yMax, a legend. A PNG of 800 x 600 pixels.
let lossFigure (title: string) (yMax: float) (names: string list) (losses: float[][]) : byte[] =
    let plot = new Plot()
    let markers = [| MarkerShape.FilledCircle; MarkerShape.Cross; MarkerShape.FilledSquare; MarkerShape.FilledDiamond |]
    let items =
        [ for k, (name, l) in List.indexed (List.zip names (List.ofArray losses)) ->
              series plot palette[k % palette.Length] markers[k % markers.Length] 100 false name (Array.init l.Length float) (smoothCurve l) ]
    let n = losses |> Array.fold (fun m l -> max m l.Length) 1
    plot.Axes.SetLimits(0.0, float n, 0.0, yMax)
    plot.Axes.Bottom.Label.Text <- "iterations"
    plot.Axes.Left.Label.Text <- "loss (smoothed as the book's smooth_curve)"
    plot.Title title
    plot.ShowLegend(items, Alignment.UpperRight) |> ignore
    pngOf 800 600 plot

/// The width and height of the loss figure.
let lossFigureSize = 800, 600

/// batch_norm_test.py's figure: a 4 x 4 grid, one panel per weight scale titled "W:scale", the
/// training accuracy per epoch with Batch Normalization (solid) and without (dashed), y from 0 to
/// 1, the legend in the last panel. A PNG of 1200 x 1000 pixels.
let batchNormFigure (runs: BatchNormRun list) : byte[] =
    let panels =
        [ for k, r in List.indexed runs ->
              let plot = new Plot()
              let xs = Array.init r.With.Length float
              let a = series plot palette[0] MarkerShape.None 2 false "Batch Normalization" xs r.With
              let b = series plot palette[1] MarkerShape.None 2 true "Normal (without BatchNorm)" xs r.Without
              plot.Axes.SetLimits(0.0, float (max 1 (r.With.Length - 1)), 0.0, 1.0)
              plot.Title $"W:%.6g{r.Scale}"
              plot.Axes.Title.Label.FontSize <- 12.0f
              if k % 4 = 0 then plot.Axes.Left.Label.Text <- "accuracy"
              if k >= 12 then plot.Axes.Bottom.Label.Text <- "epochs"
              if k = runs.Length - 1 then plot.ShowLegend([ a; b ], Alignment.LowerRight) |> ignore
              plot ]
    gridPng 1200 1000 4 panels

/// The width and height of the Batch Normalization figure.
let batchNormFigureSize = 1200, 1000

/// overfit_weight_decay.py's and overfit_dropout.py's figures side by side: without the
/// technique (left) and with it (right), train (circles) and test (squares) accuracy per epoch,
/// a marker every 10 epochs, y from 0 to 1, the legend lower right. A PNG of 1200 x 500 pixels.
let overfitFigure (experiment: Overfit) (epochs: OverfitEpoch list) : byte[] =
    let panel (title: string) (pick: OverfitEpoch -> float * float) =
        let plot = new Plot()
        let measured = epochs |> List.filter (fun e -> Double.IsFinite(fst (pick e)))
        let xs = measured |> List.map (fun e -> float e.Epoch) |> Array.ofList
        let a = series plot palette[0] MarkerShape.FilledCircle 10 false "train" xs (measured |> List.map (pick >> fst) |> Array.ofList)
        let b = series plot palette[1] MarkerShape.FilledSquare 10 false "test" xs (measured |> List.map (pick >> snd) |> Array.ofList)
        plot.Axes.SetLimits(0.0, float (max 1 (epochs.Length - 1)), 0.0, 1.0)
        plot.Axes.Bottom.Label.Text <- "epochs"
        plot.Axes.Left.Label.Text <- "accuracy"
        plot.Title title
        plot.ShowLegend([ a; b ], Alignment.LowerRight) |> ignore
        plot
    gridPng 1200 500 2 [ panel "without" (fun e -> e.Without); panel $"with {experiment.Technique}" (fun e -> e.With) ]

/// The width and height of the overfitting figures.
let overfitFigureSize = 1200, 500

// ─── The command ───────────────────────────────────────────────────────────────────────────────

/// A number in its shortest round-trip form, invariant culture (the book prints str(loss); Python writes 1.0 where this writes 1).
let private invariant (x: float) = x.ToString("R", Globalization.CultureInfo.InvariantCulture)

/// `compare EXPERIMENT`: runs the experiment with the book's settings (fewer iterations or epochs
/// with --iters / --epochs), prints what the book's script prints as it goes, then one verdict
/// line per acceptance check, and writes the figure to --out. Exit code 0 whether or not the
/// checks hold (a verdict is a result, not an error); 1 for an unreadable data directory or an
/// unwritable --out; 2 for a bad option.
let run (args: ParseResults<CompareArgs>) : int =
    let experiment = args.GetResult CompareArgs.Experiment
    let seed = args.GetResult(CompareArgs.Seed, defaultValue = 42)
    let out = args.TryGetResult CompareArgs.Out
    let positive (option: string) (v: int) = if v <= 0 then raise (UsageError $"{option} must be a positive integer, got %d{v}") else v
    let iters = args.TryGetResult CompareArgs.Iters |> Option.map (positive "--iters")
    let epochs = args.TryGetResult CompareArgs.Epochs |> Option.map (positive "--epochs")
    match experiment, iters, epochs with
    | (ExperimentArg.Optimizers | ExperimentArg.Init), _, Some _ -> raise (UsageError "--epochs goes with batchnorm, weight-decay and dropout; optimizers and init take --iters")
    | (ExperimentArg.Batchnorm | ExperimentArg.Weight_Decay | ExperimentArg.Dropout), Some _, _ -> raise (UsageError "--iters goes with optimizers and init; batchnorm, weight-decay and dropout take --epochs")
    | _ -> ()
    // The output's folder is checked before a run of minutes, not after it.
    out |> Option.iter (fun file ->
        let dir = Path.GetDirectoryName(Path.GetFullPath file)
        if not (Directory.Exists dir) then raise (OutputError(file, $"the folder {dir} does not exist")))
    let dataDir = findData (args.TryGetResult CompareArgs.Data)
    MathNet.Numerics.Control.UseSingleThread()
    // One thread per product: the experiments run their independent networks on the two cores
    // themselves (Array.Parallel), which gives the same numbers as one after the other.
    Linalg.using (Linalg.settings Linalg.Backend.Auto Linalg.InputStorage.Auto 1) <| fun () ->
    let train, test = Preload.loadData dataDir
    if train.PixelCount <> 784 then raise (DataError(dataDir, $"images of %d{train.Rows}x%d{train.Columns} pixels; the book's experiments take 28x28 (784 inputs)"))
    let write (png: byte[]) = out |> Option.iter (fun file -> SafeWrite.bytes file png; printfn $"wrote: {file}")
    match experiment with
    | ExperimentArg.Optimizers
    | ExperimentArg.Init ->
        let contenders, title, yMax = if experiment = ExperimentArg.Optimizers then optimizerContenders, "optimizers on MNIST (784-100x4-10 ReLU, He, batch 128)", 1.0 else initContenders, "initial weights on MNIST (784-100x4-10 ReLU, SGD 0.01, batch 128)", 2.5
        let iterations = defaultArg iters lossIterations
        let names = contenders |> List.map (fun c -> c.Name)
        printfn $"""compare {if experiment = ExperimentArg.Optimizers then "optimizers" else "init"}: 784-100-100-100-100-10 ReLU, batch {lossBatch}, %d{iterations} iterations, float64, seed %d{seed}; each network's loss after its update"""
        let losses = names |> List.map (fun _ -> ResizeArray<float>()) |> Array.ofList
        for step in lossComparison train seed iterations lossBatch contenders do
            Array.iteri (fun k (l: float) -> losses[k].Add l) step.Losses
            if step.Iteration % 100 = 0 then
                printfn $"===========iteration:%d{step.Iteration}==========="
                for name, l in List.zip names (List.ofArray step.Losses) do
                    printfn $"{name}:{invariant l}"
        let losses = losses |> Array.map (fun l -> l.ToArray())
        printfn $"""smoothed loss at iteration %d{iterations}: {List.zip names (List.ofArray (finalSmoothed losses)) |> List.map (fun (n, l) -> $"{n} %.3f{l}") |> String.concat ", "}"""
        printfn "%s" (if experiment = ExperimentArg.Optimizers then optimizersVerdict names losses else initVerdict names losses).Line
        write (lossFigure title yMax names losses)
    | ExperimentArg.Batchnorm ->
        let epochs = defaultArg epochs 20
        printfn $"compare batchnorm: first 1000 training images, 784-100x5-10 ReLU, batch 100, SGD 0.01, %d{epochs} epochs, 16 weight scales, float64, seed %d{seed}; training accuracy without - with BatchNorm"
        let runs =
            [ for k, r in Seq.indexed (batchNormComparison train seed epochs) do
                  printfn $"============== %d{k + 1}/16 (W:%.6g{r.Scale}) =============="
                  for e in 0 .. r.With.Length - 1 do
                      printfn $"epoch:%d{e} | {invariant r.Without[e]} - {invariant r.With[e]}"
                  yield r ]
        printfn "%s" (batchNormVerdict runs).Line
        write (batchNormFigure runs)
    | ExperimentArg.Weight_Decay
    | ExperimentArg.Dropout ->
        let ex = if experiment = ExperimentArg.Weight_Decay then weightDecayExperiment else dropoutExperiment
        let epochs = defaultArg epochs overfitEpochs
        printfn $"compare {ex.Name}: first 300 training images, 784-100x6-10 ReLU, He, batch 100, SGD 0.01, %d{epochs} epochs, without and with {ex.Technique}, float64, seed %d{seed}"
        let rows =
            [ for e in overfitComparison train test seed epochs (fun _ -> true) ex do
                  printfn $"epoch:%d{e.Epoch}, without: train acc:{invariant (fst e.Without)}, test acc:{invariant (snd e.Without)} | with: train acc:{invariant (fst e.With)}, test acc:{invariant (snd e.With)}"
                  yield e ]
        printfn "%s" (overfitVerdict ex (List.last rows)).Line
        write (overfitFigure ex rows)
    0
