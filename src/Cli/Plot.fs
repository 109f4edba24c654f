/// The training curves as a PNG (ScottPlot): the loss of every step and the train and test
/// accuracy of every epoch, like the book's figures.
module Backprop.Cli.Plot

open System.IO
open ScottPlot

/// Writes the curves to file (PNG), atomically: loss on the left axis, accuracy on the right.
let write (file: string) (losses: float[]) (epochs: (int * float * float) list) =
    use plot = new Plot()
    let steps = Array.init losses.Length (fun i -> float (i + 1))
    let loss = plot.Add.ScatterLine(steps, losses)
    loss.LegendText <- "loss (each step)"
    loss.LineWidth <- 1.0f
    let iterations = epochs |> List.map (fun (i, _, _) -> float i) |> Array.ofList
    for label, values, color in
        [ "train accuracy (each epoch)", epochs |> List.map (fun (_, a, _) -> a), Colors.Orange
          "test accuracy (each epoch)", epochs |> List.map (fun (_, _, a) -> a), Colors.Green ] do
        let line = plot.Add.Scatter(iterations, Array.ofList values)
        line.LegendText <- label
        line.Color <- color
        line.MarkerSize <- 6.0f
        line.Axes.YAxis <- plot.Axes.Right
    plot.Axes.Bottom.Label.Text <- "iteration"
    plot.Axes.Left.Label.Text <- "loss"
    plot.Axes.Right.Label.Text <- "accuracy"
    plot.Axes.SetLimitsY(0.0, 1.0, plot.Axes.Right)
    plot.Title "Training: loss and accuracy"
    plot.ShowLegend(Alignment.MiddleRight) |> ignore
    let full = Path.GetFullPath file
    let temp = full + ".tmp.png"
    plot.SavePng(temp, 1000, 600) |> ignore
    File.Move(temp, full, overwrite = true)
