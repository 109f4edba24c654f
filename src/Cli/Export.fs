/// `backprop export`: a saved model (.npz) as an ONNX file that any ONNX runtime runs.
module Backprop.Cli.Export

open System.IO
open Argu
open Backprop.Core

/// Options of `export`.
type ExportArgs =
    | [<Mandatory>] Model of file: string
    | [<Mandatory>] Onnx of file: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Model _ -> "the model to export (an .npz written by train --save, or by numpy)."
            | Onnx _ -> "the ONNX file to write (IR 8, opset 17; input x [N, inputs], outputs probabilities and scores [N, classes]), atomically."

/// `export`: reads the model file, writes its ONNX model, prints one line saying what it wrote.
/// A missing or bad model file, or an output that cannot be written, raises DataError naming
/// the file (one line on stderr, exit code 1, from Program).
let export (args: ParseResults<ExportArgs>) =
    let modelFile = args.GetResult Model
    let onnxFile = args.GetResult Onnx
    if not (File.Exists modelFile) then raise (DataError(modelFile, "model file not found"))
    let file = Npz.read modelFile
    Backprop.Core.Onnx.saveFile onnxFile file
    let layers = file.Model.Layers
    let sizes = Network.sizes layers |> List.map string |> String.concat "-"
    let precision = match file.Model with SavedModel.Single _ -> "float32" | SavedModel.Double _ -> "float64"
    let classes = List.last (Network.sizes layers)
    printfn
        $"export: model {Path.GetFullPath modelFile} ({sizes}, {precision}) -> {Path.GetFullPath onnxFile} (ONNX IR %d{Backprop.Core.Onnx.irVersion}, opset %d{Backprop.Core.Onnx.opsetVersion}, %d{FileInfo(onnxFile).Length} bytes; input x [N, %d{Network.sizes layers |> List.head}] {precision}, outputs probabilities and scores [N, %d{classes}])"
    0
