/// `train --inspect DIR`, the lens on training: after the first step and after every epoch, the
/// core's Lens.snapshot of the network on a fixed batch of training images (each activation
/// layer's histogram, each parameter's gradient norm and update-to-weight ratio), written to DIR
/// as two CSV files and drawn as three PNGs (ScottPlot), every file through SafeWrite.
module Backprop.Cli.Inspect

open System
open System.Globalization
open System.IO
open System.Text
open MathNet.Numerics.LinearAlgebra
open ScottPlot
open SkiaSharp
open Backprop.Core

/// How many training images the lens looks at (the book's histogram uses 1000 inputs).
let probeCount = 1000

/// The files `train --inspect DIR` writes, in that folder.
let files = [ "activations.csv"; "parameters.csv"; "activations.png"; "gradients.png"; "updates.png" ]

/// A number in a CSV cell: invariant culture, round-trippable, "nan" for NaN.
let private cell (v: float) = if Double.IsNaN v then "nan" else v.ToString("R", CultureInfo.InvariantCulture)

/// activations.csv: one row per epoch and activation layer: the statistics, the histogram's
/// range and its counts (bin0 .. bin29).
let activationsCsv (snapshots: LensSnapshot list) : string =
    let sb = StringBuilder()
    let bins = String.Join(",", [ for k in 0 .. Lens.bins - 1 -> $"bin%d{k}" ])
    sb.Append($"epoch,step,layer,units,mean,std,zero_fraction,dead_units,saturated_fraction,lo,hi,{bins}\n") |> ignore
    for s in snapshots do
        for a in s.Activations do
            let counts = String.Join(",", a.Counts)
            sb.Append($"%d{s.Epoch},%d{s.Step},{a.Layer},%d{a.Units},{cell a.Mean},{cell a.Std},{cell a.ZeroFraction},%d{a.DeadUnits},{cell a.SaturatedFraction},{cell a.Lo},{cell a.Hi},{counts}\n") |> ignore
    sb.ToString()

/// parameters.csv: one row per epoch and parameter: the gradient norm, the weight norm, the last
/// update's norm and the update-to-weight ratio.
let parametersCsv (snapshots: LensSnapshot list) : string =
    let sb = StringBuilder("epoch,step,parameter,gradient_norm,weight_norm,update_norm,update_ratio\n")
    for s in snapshots do
        for p in s.Parameters do
            sb.Append($"%d{s.Epoch},%d{s.Step},{p.Name},{cell p.GradientNorm},{cell p.WeightNorm},{cell p.UpdateNorm},{cell p.UpdateRatio}\n") |> ignore
    sb.ToString()

/// Plots laid out in a grid (rows of equal height, columns of equal width) as one PNG.
let private grid (width: int) (height: int) (rows: Plot list list) : byte[] =
    use surface = SKSurface.Create(SKImageInfo(width, height))
    surface.Canvas.Clear SKColors.White
    let h = height / max 1 rows.Length
    for r, row in List.indexed rows do
        let w = width / max 1 row.Length
        for c, (plot: Plot) in List.indexed row do
            use part = SKSurface.Create(SKImageInfo(w, h))
            plot.Render(part.Canvas, w, h)
            use image = part.Snapshot()
            surface.Canvas.DrawImage(image, float32 (c * w), float32 (r * h))
            plot.Dispose()
    use image = surface.Snapshot()
    use data = image.Encode(SKEncodedImageFormat.Png, 100)
    data.ToArray()

/// The epochs drawn as histograms: the first, the last, and one between when there are more.
let histogramEpochs (snapshots: LensSnapshot list) : LensSnapshot list =
    match snapshots with
    | [] -> []
    | [ s ] -> [ s ]
    | _ ->
        let a = Array.ofList snapshots
        [ 0; a.Length / 2; a.Length - 1 ] |> List.distinct |> List.map (fun k -> a[k])

/// activations.png: a histogram per activation layer (columns) for the first, a middle and the
/// last epoch (rows), as the book's figures 6-10 to 6-14; each panel says the layer's std and,
/// for ReLU, its dead units, for Sigmoid/Tanh its saturated fraction.
let activationsPng (title: string) (snapshots: LensSnapshot list) : byte[] =
    let shown = histogramEpochs snapshots
    // one y scale for every panel, so that the layers and epochs compare at a glance
    let top =
        shown
        |> List.collect (fun s -> s.Activations |> List.map (fun a -> float (Array.max a.Counts) / float (max 1 (Array.sum a.Counts))))
        |> List.fold max 0.05
        |> fun m -> min 1.0 (m * 1.15)
    let rows =
        [ for s in shown ->
              [ for a in s.Activations ->
                    let plot = new Plot()
                    let width = (a.Hi - a.Lo) / float a.Counts.Length
                    let total = float (max 1 (Array.sum a.Counts))
                    let bars = plot.Add.Bars([| for k in 0 .. a.Counts.Length - 1 -> a.Lo + (float k + 0.5) * width |], [| for c in a.Counts -> float c / total |])
                    for bar in bars.Bars do
                        bar.Size <- width * 0.95
                        bar.FillColor <- Colors.SteelBlue
                        bar.LineWidth <- 0.0f
                    let extra =
                        if a.Layer.StartsWith "Relu" then $", dead %d{a.DeadUnits}/%d{a.Units}"
                        else $", saturated %.0f{100.0 * a.SaturatedFraction}%%"
                    plot.Title($"{a.Layer}, epoch %d{s.Epoch}")
                    plot.Axes.Title.Label.FontSize <- 13.0f
                    plot.Axes.SetLimitsX(a.Lo, a.Hi)
                    plot.Axes.SetLimitsY(0.0, top)
                    plot.Axes.Left.Label.Text <- "fraction"
                    plot.Axes.Left.Label.FontSize <- 12.0f
                    plot.Axes.Bottom.Label.Text <- $"output: std %.3f{a.Std}{extra}"
                    plot.Axes.Bottom.Label.FontSize <- 12.0f
                    plot ] ]
    let columns = rows |> List.map List.length |> List.fold max 1
    // the title on a strip of its own, the panels below it
    use surface = SKSurface.Create(SKImageInfo(max 900 (300 * columns), 40 + 260 * rows.Length))
    surface.Canvas.Clear SKColors.White
    use font = new SKFont(SKTypeface.FromFamilyName "DejaVu Sans", 16.0f)
    use paint = new SKPaint(Color = SKColors.Black, IsAntialias = true)
    surface.Canvas.DrawText(title, 10.0f, 26.0f, font, paint)
    use panels = SKImage.FromEncodedData(grid (max 900 (300 * columns)) (260 * rows.Length) rows)
    surface.Canvas.DrawImage(panels, 0.0f, 40.0f)
    use image = surface.Snapshot()
    use data = image.Encode(SKEncodedImageFormat.Png, 100)
    data.ToArray()

/// A line per parameter over the epochs, on a logarithmic y axis (values at or below 0 and NaN
/// left out), with optional horizontal guide lines.
let private perParameter (title: string) (label: string) (value: ParameterStats -> float) (guides: (float * string) list) (snapshots: LensSnapshot list) : byte[] =
    let plot = new Plot()
    let names = match snapshots with s :: _ -> s.Parameters |> List.map (fun p -> p.Name) | [] -> []
    // a colour per layer; weights solid, biases (and other vectors) dashed
    let palette = Palettes.Category10()
    let layerOf (name: string) = Int32.TryParse(String(name |> Seq.filter Char.IsDigit |> Array.ofSeq)) |> function | true, k -> k | _ -> 0
    for name in names do
        let points =
            [| for s in snapshots do
                   match s.Parameters |> List.tryFind (fun p -> p.Name = name) with
                   | Some p when value p > 0.0 && Double.IsFinite(value p) -> yield float s.Epoch, log10 (value p)
                   | _ -> () |]
        if points.Length > 0 then
            let line = plot.Add.Scatter(Array.map fst points, Array.map snd points)
            line.LegendText <- name
            line.Color <- palette.GetColor(layerOf name)
            line.LineWidth <- 2.0f
            if not (name.StartsWith "W") then line.LinePattern <- LinePattern.Dashed
            line.MarkerSize <- 6.0f
    for y, text in guides do
        let g = plot.Add.HorizontalLine(log10 y)
        g.Color <- Colors.Gray
        g.LinePattern <- LinePattern.Dashed
        g.LegendText <- text
    // log10 ticks shown as powers of ten
    plot.Axes.Left.TickGenerator <- TickGenerators.NumericAutomatic(LabelFormatter = (fun v -> $"1e%g{Math.Round(v, 2)}"))
    plot.Axes.Bottom.TickGenerator <- TickGenerators.NumericAutomatic(IntegerTicksOnly = true)
    plot.Axes.Left.Label.Text <- label + " (log scale)"
    plot.Axes.Bottom.Label.Text <- "epoch (0: the initial network)"
    plot.Title title
    plot.Axes.Title.Label.FontSize <- 13.0f
    plot.ShowLegend(Edge.Right) |> ignore
    grid 1000 500 [ [ plot ] ]

/// gradients.png: each parameter's gradient norm over the epochs.
let gradientsPng (title: string) (snapshots: LensSnapshot list) : byte[] =
    perParameter title "gradient norm" (fun p -> p.GradientNorm) [] snapshots

/// updates.png: each parameter's update-to-weight ratio over the epochs, with the rule of thumb
/// of about 1e-3 drawn as a guide.
let updatesPng (title: string) (snapshots: LensSnapshot list) : byte[] =
    perParameter title "|update| / |weight|" (fun p -> p.UpdateRatio) [ 1e-3, "1e-3 (rule of thumb)" ] snapshots

/// Records the lens during a run: give it every step (OnStep), then Write the files.
type Recorder(probe: Matrix<float>, labels: Labels<float>, perEpoch: int, iterations: int) =
    let snapshots = Collections.Generic.List<LensSnapshot>()

    /// A recorder for a training set: its first probeCount images and labels.
    static member For(train: Dataset, perEpoch: int, iterations: int) =
        let indices = Array.init (min probeCount train.Count) id
        let x, t = Dataset.batch train indices
        Recorder(x, t, perEpoch, iterations)

    /// After optimizer step `step` (1 for the first), which went from `before` to `after` (each
    /// converted to float64 only when the step is recorded): after the first step it records
    /// epoch 0 (the initial network, and the first update); after the last step of an epoch (or
    /// of the run) that epoch.
    member _.OnStep(step: int, before: unit -> Model<float>, after: unit -> Model<float>) =
        if step = 1 || step % perEpoch = 0 || step = iterations then
            let b, a = before (), after ()
            if step = 1 then snapshots.Add(Lens.snapshot 0 0 b b a probe labels)
            if step % perEpoch = 0 || step = iterations then
                snapshots.Add(Lens.snapshot ((step + perEpoch - 1) / perEpoch) step a b a probe labels)

    /// What was recorded, in order.
    member _.Snapshots = List.ofSeq snapshots

    /// Writes the five files into dir (created if missing) and returns their full paths.
    member r.Write(dir: string, title: string) : string list =
        let all = r.Snapshots
        Directory.CreateDirectory dir |> ignore
        let path name = Path.GetFullPath(Path.Combine(dir, name))
        SafeWrite.text (path "activations.csv") (activationsCsv all)
        SafeWrite.text (path "parameters.csv") (parametersCsv all)
        SafeWrite.bytes (path "activations.png") (activationsPng $"activation histograms: {title}" all)
        SafeWrite.bytes (path "gradients.png") (gradientsPng $"gradient norms: {title}" all)
        SafeWrite.bytes (path "updates.png") (updatesPng $"update-to-weight ratios: {title}" all)
        files |> List.map path
