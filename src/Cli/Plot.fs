/// The training curves as a PNG (ScottPlot), in two panels that share the iteration axis: the
/// loss of every step with a smoothed line over it, and the train and test accuracy of every
/// epoch on an axis of their own, zoomed to their range.
module Backprop.Cli.Plot

open System
open System.IO
open ScottPlot
open SkiaSharp

/// What a training run's plot shows.
type Curves =
    { /// The run's settings, for the title.
      Title: string
      /// The loss of each step, in order (NaN or infinite where it was).
      Losses: float[]
      /// After each epoch: (iteration, train accuracy, test accuracy).
      Epochs: (int * float * float) list
      /// The accuracies were measured on the first images of each set only (--eval-sample).
      Sampled: bool }

/// The trailing mean of the last `window` finite values up to each step (NaN before the first
/// finite value): the loss line drawn over the noisy steps.
let smooth (window: int) (values: float[]) : float[] =
    let window = max 1 window
    let kept = Collections.Generic.Queue<float>()
    let mutable sum = 0.0
    values
    |> Array.map (fun v ->
        if Double.IsFinite v then
            kept.Enqueue v
            sum <- sum + v
            if kept.Count > window then sum <- sum - kept.Dequeue()
        if kept.Count = 0 then nan else sum / float kept.Count)

/// The y range that shows values (at least `least` wide), with a margin, inside [lo, hi].
let private zoomed (lo: float) (hi: float) (least: float) (values: float seq) =
    let finite = values |> Seq.filter Double.IsFinite |> Array.ofSeq
    if finite.Length = 0 then lo, hi
    else
        let a, b = Array.min finite, Array.max finite
        let margin = max (0.1 * (b - a)) (least / 2.0)
        max lo (a - margin), min hi (b + margin)

/// The steps whose loss is NaN or infinite (1 for the first step).
let nonFiniteSteps (losses: float[]) =
    losses |> Array.indexed |> Array.filter (fun (_, v) -> not (Double.IsFinite v)) |> Array.map (fun (i, _) -> i + 1)

/// The two panels of the curves: (loss, accuracy), each a ScottPlot Plot with the same
/// iteration axis (integer ticks), the same margins, so that their data areas line up.
let build (curves: Curves) : Plot * Plot =
    let steps = curves.Losses.Length
    let lastX = float (max steps (curves.Epochs |> List.fold (fun m (i, _, _) -> max m i) 1))
    let padding = PixelPadding(80.0f, 30.0f, 45.0f, 45.0f)
    let panel () =
        let plot = new Plot()
        plot.Layout.Fixed padding
        plot.Axes.Bottom.TickGenerator <- TickGenerators.NumericAutomatic(IntegerTicksOnly = true)
        plot.Axes.SetLimitsX(0.0, lastX + max 0.25 (lastX * 0.02)) // a margin: the last points are not on the frame

        plot
    // The loss: every finite step (thin), and its trailing mean over about a fiftieth of the run.
    let loss = panel ()
    let finite = curves.Losses |> Array.indexed |> Array.filter (fun (_, v) -> Double.IsFinite v)
    let xs = finite |> Array.map (fun (i, _) -> float (i + 1))
    if finite.Length > 0 then
        let window = max 1 (steps / 50)
        let raw = loss.Add.ScatterLine(xs, finite |> Array.map snd)
        raw.LegendText <- "loss (each step)"
        raw.LineWidth <- 1.0f
        raw.Color <- if window > 1 then Colors.SteelBlue.WithAlpha(0.45) else Colors.Navy
        if window > 1 then
            let smoothed = smooth window curves.Losses
            let line = loss.Add.ScatterLine(xs, finite |> Array.map (fun (i, _) -> smoothed[i]))
            line.LegendText <- $"loss (mean of the last %d{window} steps)"
            line.LineWidth <- 2.0f
            line.Color <- Colors.Navy
        let lo, hi = zoomed 0.0 Double.MaxValue 0.1 (Array.map snd finite)
        loss.Axes.SetLimitsY(lo, hi)
    // Steps whose loss was NaN or infinite: a red line at each (one shaded span if many).
    let bad = nonFiniteSteps curves.Losses
    if bad.Length > 0 then
        let label = $"loss NaN or infinite (%d{bad.Length} step(s) from step %d{bad[0]})"
        if bad.Length <= 20 then
            for k, step in Array.indexed bad do
                let v = loss.Add.VerticalLine(float step)
                v.Color <- Colors.Red
                v.LineWidth <- 2.0f
                if k = 0 then v.LegendText <- label
        else
            let span = loss.Add.HorizontalSpan(float bad[0], float (Array.last bad))
            span.FillStyle.Color <- Colors.Red.WithAlpha(0.25)
            span.LegendText <- label
        if finite.Length = 0 then loss.Axes.SetLimitsY(0.0, 1.0)
    loss.Axes.Left.Label.Text <- "loss"
    loss.Axes.Bottom.Label.Text <- "iteration"
    loss.Title curves.Title
    loss.Axes.Title.Label.FontSize <- 13.0f
    loss.ShowLegend(Alignment.UpperRight) |> ignore
    // The accuracy, on its own axis, zoomed to the values.
    let accuracy = panel ()
    let iterations = curves.Epochs |> List.map (fun (i, _, _) -> float i) |> Array.ofList
    let which = if curves.Sampled then " (sampled)" else ""
    for label, values, color in
        [ $"train accuracy{which}", curves.Epochs |> List.map (fun (_, a, _) -> a), Colors.Orange
          $"test accuracy{which}", curves.Epochs |> List.map (fun (_, _, a) -> a), Colors.Green ] do
        if not values.IsEmpty then
            let line = accuracy.Add.Scatter(iterations, Array.ofList values)
            line.LegendText <- label
            line.Color <- color
            line.MarkerSize <- 6.0f
    let lo, hi = zoomed 0.0 1.0 0.02 (curves.Epochs |> List.collect (fun (_, a, b) -> [ a; b ]))
    accuracy.Axes.SetLimitsY(lo, hi)
    accuracy.Axes.Left.Label.Text <- (if curves.Sampled then "accuracy (sampled)" else "accuracy")
    accuracy.Axes.Bottom.Label.Text <- "iteration (accuracy after each epoch)"
    accuracy.ShowLegend(Alignment.LowerRight) |> ignore
    loss, accuracy

/// Draws the two panels, one above the other, into a PNG of width x height pixels.
let png (width: int) (height: int) (curves: Curves) : byte[] =
    let loss, accuracy = build curves
    use loss = loss
    use accuracy = accuracy
    let top = height * 55 / 100
    use surface = SKSurface.Create(SKImageInfo(width, height))
    surface.Canvas.Clear SKColors.White
    // Each panel drawn on a surface of its own (a plot fills its whole canvas), then placed.
    for plot, y, h in [ loss, 0, top; accuracy, top, height - top ] do
        use part = SKSurface.Create(SKImageInfo(width, h))
        plot.Render(part.Canvas, width, h)
        use image = part.Snapshot()
        surface.Canvas.DrawImage(image, 0.0f, float32 y)
    use image = surface.Snapshot()
    use data = image.Encode(SKEncodedImageFormat.Png, 100)
    data.ToArray()

/// Writes the curves to file (PNG, 1000 x 700) through the one safe-write path (SafeWrite).
let write (file: string) (curves: Curves) = Backprop.Core.SafeWrite.bytes file (png 1000 700 curves)
