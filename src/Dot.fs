namespace Backprop.Core

// Graphviz DOT text for the graphs and traces of Trace.fs: pure functions from a value to a
// string, the same text for the same value on every machine (invariant culture, nodes and edges in
// the order the forward pass made them). `dot -Tsvg` or `dot -Tpng` draws it.
//
// The look follows micrograd's drawings: each value a record (name | value | gradient) with the
// operation that computed it as a small circle in front of it, left to right as the forward pass
// runs; gradients in red, as the book draws the backward pass.

open System
open System.Globalization
open System.Text

/// Graphviz DOT text for computational graphs and network traces.
[<RequireQualifiedAccess>]
module Dot =
    /// The colour of gradients (the backward pass).
    let gradColour = "#c0392b"

    /// The colour of forward values.
    let valueColour = "#1f3a93"

    /// A number as the drawings show it: 4 significant digits, invariant culture, no "-0"
    /// (220, 2.2, 0.7311, -0.1966, 1.234E-05).
    [<CompiledName("Number")>]
    let number (v: float) : string =
        if Double.IsNaN v then "NaN"
        elif v = 0.0 then "0"
        else v.ToString("G4", CultureInfo.InvariantCulture)

    /// Text escaped for a Graphviz HTML-like label.
    let private html (s: string) =
        s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&quot;")

    /// A quoted DOT string.
    let private quoted (s: string) = "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\""

    let private header (sb: StringBuilder) (title: string) =
        sb.Append("digraph ").Append(quoted title).Append(" {\n") |> ignore
        sb.Append("  rankdir=LR;\n") |> ignore
        sb.Append("  graph [fontname=\"Helvetica\", fontsize=12, labelloc=t, label=").Append(quoted title).Append("];\n") |> ignore
        sb.Append("  node [fontname=\"Helvetica\", fontsize=11];\n") |> ignore
        sb.Append("  edge [color=\"#555555\", arrowsize=0.7];\n") |> ignore

    /// A plaintext node's HTML label: a table of (text, colour) cells side by side (a record as
    /// micrograd draws it), or one above the other when `stacked`.
    let private table (stacked: bool) (cells: (string * string) list) =
        let td (text: string, colour: string) =
            let cell = if colour = "" then $"<td>{text}</td>" else $"<td><font color=\"{colour}\">{text}</font></td>"
            if stacked then $"<tr>{cell}</tr>" else cell
        let rows = String.concat "" (List.map td cells)
        "<<table border=\"0\" cellborder=\"1\" cellspacing=\"0\" cellpadding=\"4\">"
        + (if stacked then rows else $"<tr>{rows}</tr>")
        + "</table>>"

    let private record = table false

    /// The DOT text of a computational graph: each node a record (label | value | grad) with
    /// its operation as a circle before it, edges left to right; gradients in red.
    [<CompiledName("OfGraph")>]
    let ofGraph (graph: Graph) : string =
        let sb = StringBuilder()
        header sb graph.Title
        for n in graph.Nodes do
            let label =
                record
                    [ $"<b>{html n.Label}</b>", ""
                      $"value {number n.Value}", valueColour
                      $"grad {number n.Grad}", gradColour ]
            sb.Append($"  {n.Id} [shape=plaintext, label={label}];\n") |> ignore
            if n.Op <> "" then
                sb.Append($"  {n.Id}_op [shape=circle, width=0.45, fixedsize=true, label={quoted n.Op}];\n") |> ignore
                sb.Append($"  {n.Id}_op -> {n.Id};\n") |> ignore
        for from, target in graph.Edges do
            sb.Append($"  {from} -> {target}_op;\n") |> ignore
        sb.Append("}\n").ToString()

    /// "784" for [| 1; 784 |] (one sample), "3×784" for a batch of 3; "50×10" for a matrix.
    let private shapeText (shape: int[]) =
        if shape.Length = 2 && shape[0] = 1 then string shape[1] else shape |> Array.map string |> String.concat "×"

    /// A tensor as the drawing shows it, as HTML-label text: every number (five to a line) when it
    /// has at most `small` of them, else its norm and mean, then its minimum and maximum.
    let private tensor (small: int) (m: MathNet.Numerics.LinearAlgebra.Matrix<float>) =
        let s = Trace.summarize m
        if m.RowCount * m.ColumnCount <= small then
            let lines = m.ToRowMajorArray() |> Array.map number |> Array.chunkBySize 5 |> Array.map (String.concat ", ")
            "[" + String.concat ",<br/>" lines + "]"
        else $"norm {number s.Norm}, mean {number s.Mean}<br/>min {number s.Min}, max {number s.Max}"

    /// The DOT text of a traced network: each layer an operation box with its parameters' shapes
    /// and the norms of their gradients, each tensor between layers a record (name and shape,
    /// value, grad, one above the other) with every number when there are at most 10 of them and a
    /// summary (norm, mean, min, max) otherwise; then softmax-with-loss and the loss.
    [<CompiledName("OfTrace")>]
    let ofTrace (title: string) (trace: NetworkTrace) : string =
        let sb = StringBuilder()
        header sb title
        let small = 10
        let tensorNode (id: string) (name: string) (value: MathNet.Numerics.LinearAlgebra.Matrix<float>) (grad: MathNet.Numerics.LinearAlgebra.Matrix<float>) =
            let label =
                table true
                    [ $"<b>{html name}</b> {shapeText [| value.RowCount; value.ColumnCount |]}", ""
                      "value " + tensor small value, valueColour
                      "grad " + tensor small grad, gradColour ]
            sb.Append($"  {id} [shape=plaintext, label={label}];\n") |> ignore
        match trace.Layers with
        | [] -> ()
        | first :: _ -> tensorNode "x" "x" first.Input first.DX
        trace.Layers
        |> List.iteri (fun i l ->
            let input = if i = 0 then "x" else $"t%d{i - 1}"
            let parameters =
                l.Gradients
                |> List.map (fun (name, g) ->
                    let shape = Value.shape g
                    let norm = sqrt (Value.toRowMajor g |> Array.sumBy (fun v -> v * v))
                    $"{html name} {shapeText shape}, <font color=\"{gradColour}\">norm of d{html name} {number norm}</font>")
            let text = String.concat "<br/>" ($"<b>{html l.Name}</b>" :: parameters)
            sb.Append($"  l%d{i} [shape=box, style=rounded, label=<{text}>];\n") |> ignore
            sb.Append($"  {input} -> l%d{i};\n") |> ignore
            let name = if i = trace.Layers.Length - 1 then "scores" else $"{l.Name} out"
            tensorNode $"t%d{i}" name l.Output l.DOut
            sb.Append($"  l%d{i} -> t%d{i};\n") |> ignore)
        let last = $"t%d{trace.Layers.Length - 1}"
        let labels =
            match trace.Labels with
            | Labels.ClassIndices t -> "t = " + (t |> Array.map string |> String.concat ", ")
            | Labels.OneHot _ -> "t one-hot"
        sb.Append($"  loss_op [shape=box, style=rounded, label=<<b>SoftmaxWithLoss</b><br/>{labels}>];\n") |> ignore
        if trace.Layers.Length > 0 then sb.Append($"  {last} -> loss_op;\n") |> ignore
        let y = table true [ "<b>y</b> softmax", ""; "value " + tensor small trace.Probabilities, valueColour ]
        sb.Append($"  y [shape=plaintext, label={y}];\n") |> ignore
        sb.Append("  loss_op -> y;\n") |> ignore
        let loss = table true [ "<b>L</b>", ""; $"value {number trace.Loss}", valueColour; "grad 1", gradColour ]
        sb.Append($"  L [shape=plaintext, label={loss}];\n") |> ignore
        sb.Append("  loss_op -> L;\n") |> ignore
        sb.Append("}\n").ToString()
