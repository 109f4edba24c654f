/// `backprop graph`: computational graphs drawn with their forward values and gradients, as
/// Graphviz DOT text, or SVG and PNG through Graphviz's `dot` where it is installed. The graphs
/// and the text come from the core (Trace.fs, Dot.fs); this file reads options and writes files.
module Backprop.Cli.GraphCommand

open System
open System.ComponentModel
open System.Diagnostics
open System.IO
open Argu
open MathNet.Numerics.LinearAlgebra
open Backprop.Core

/// Options of `graph`.
type GraphArgs =
    | [<MainCommand>] Target of what: string list
    | Model of file: string
    | Index of n: int
    | Class of c: int
    | Data of dir: string
    | Out of file: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Target _ -> "what to draw: apple, apple-orange (the shopping examples of 5.4), network (a model traced on one test image), or layer relu|sigmoid|affine|softmax-with-loss (the book's figures, from a small fixed example)."
            | Model _ -> "for network: the model (.npz written by train --save)."
            | Index _ -> "for network: the test image to trace (default: 0)."
            | Class _ -> "for network: the class the loss is measured against (default: the image's label)."
            | Data _ -> "for network: directory with the MNIST-layout IDX files (default: the shipped data/mnist)."
            | Out _ -> "write FILE.dot, or FILE.svg / FILE.png drawn by Graphviz's dot (default: the DOT text on stdout)."

/// The DOT text and a one-line description of what to draw. Raises ArguParseException (through
/// args.Raise) for a bad target or option, DataError for a bad file.
let describe (args: ParseResults<GraphArgs>) : string * string =
    let usage (message: string) : 'a = args.Raise(message, showUsage = false)
    let only (target: string) =
        for option, given in [ "--model", args.Contains Model; "--index", args.Contains Index; "--class", args.Contains Class; "--data", args.Contains Data ] do
            if given then usage $"graph {target} takes no {option} (graph network does)"
    match args.GetResult(Target, defaultValue = []) with
    | [ "apple" ] ->
        only "apple"
        Dot.ofGraph (Graph.buyApple 100.0 2.0 1.1), "buy_apple: 2 apples at 100, tax 1.1"
    | [ "apple-orange" ] ->
        only "apple-orange"
        Dot.ofGraph (Graph.buyAppleOrange 100.0 2.0 150.0 3.0 1.1), "buy_apple_orange: 2 apples at 100, 3 oranges at 150, tax 1.1"
    | [ "layer"; name ] ->
        only "layer"
        match Graph.tryLayer name with
        | Some g -> Dot.ofGraph g, $"layer {name}"
        | None -> usage $"""graph layer: unknown layer '{name}' (one of {String.Join(", ", Graph.layerNames)})"""
    | [ "layer" ] -> usage $"""graph layer needs a layer name: {String.Join(", ", Graph.layerNames)}"""
    | [ "network" ] ->
        let file = match args.TryGetResult Model with Some f -> f | None -> usage "graph network needs --model FILE.npz"
        if not (File.Exists file) then raise (DataError(file, "model file not found"))
        let model =
            match Npz.load file with
            | SavedModel.Single m -> Network.convert float m
            | SavedModel.Double m -> m
        let dir =
            match args.TryGetResult Data with
            | Some d -> d
            | None ->
                Mnist.tryFindShipped [ Environment.CurrentDirectory; AppContext.BaseDirectory ]
                |> Option.defaultWith (fun () -> usage "no MNIST data found: data/mnist is missing here and above the program; give one with --data DIR")
        if not (Directory.Exists dir) then raise (DataError(dir, "data directory not found"))
        let test = Mnist.loadPair (Mnist.resolve dir Mnist.testImagesFile) (Mnist.resolve dir Mnist.testLabelsFile)
        let n = args.GetResult(Index, defaultValue = 0)
        if n < 0 || n >= test.Count then usage $"--index must be between 0 and %d{test.Count - 1}, got %d{n}"
        let inputs = (Network.sizes model.Layers).Head
        if inputs <> test.PixelCount then raise (DataError(file, $"the model takes %d{inputs} inputs, the test images have %d{test.PixelCount} pixels"))
        let classes = List.last (Network.sizes model.Layers)
        let label = int test.Labels[n]
        let c = args.GetResult(Class, defaultValue = label)
        if c < 0 || c >= classes then usage $"--class must be between 0 and %d{classes - 1}, got %d{c}"
        let x = Matrix<float>.Build.Dense(1, test.PixelCount, fun _ j -> float test.Pixels[n * test.PixelCount + j] / 255.0)
        let trace = Trace.network model x (Labels.ClassIndices [| c |])
        let predicted = Network.argmax trace.Scores |> Array.head
        Dot.ofTrace $"{Path.GetFileName file}: test image %d{n} (label %d{label}, predicted %d{predicted}), loss for class %d{c}" trace,
        $"network {Path.GetFileName file} on test image %d{n} (label %d{label}, predicted %d{predicted}, loss %.4f{trace.Loss} for class %d{c})"
    | [] -> usage "graph needs what to draw: apple, apple-orange, network or layer NAME"
    | other -> usage $"""graph: cannot draw '{String.Join(" ", other)}' (apple, apple-orange, network or layer NAME)"""

/// Runs Graphviz's dot on the DOT text to write an SVG or PNG file. Returns an error message
/// when dot is not installed or fails.
let render (format: string) (dotText: string) (file: string) : Result<unit, string> =
    let info = ProcessStartInfo("dot", $"-T{format}")
    info.RedirectStandardInput <- true
    info.RedirectStandardOutput <- true
    info.RedirectStandardError <- true
    info.UseShellExecute <- false
    try
        use p = Process.Start info
        let buffer = new MemoryStream()
        let copy = p.StandardOutput.BaseStream.CopyToAsync buffer
        let errors = p.StandardError.ReadToEndAsync()
        p.StandardInput.Write dotText
        p.StandardInput.Close()
        p.WaitForExit()
        copy.Wait()
        if p.ExitCode <> 0 then Error $"dot -T{format} failed: {errors.Result.Trim()}"
        else
            let full = Path.GetFullPath file
            let temp = full + ".tmp"
            File.WriteAllBytes(temp, buffer.ToArray())
            File.Move(temp, full, overwrite = true)
            Ok()
    with :? Win32Exception ->
        Error $"Graphviz's dot is not installed, so {Path.GetFileName file} cannot be drawn: install it (apt-get install graphviz) or write a .dot file"

/// `graph`: the DOT text on stdout, or the file --out names (.dot, .svg or .png).
let run (args: ParseResults<GraphArgs>) : int =
    let out = args.TryGetResult Out
    let format =
        match out |> Option.map (fun f -> Path.GetExtension(f).ToLowerInvariant()) with
        | None -> None
        | Some(".dot" | ".gv") -> Some "dot"
        | Some ".svg" -> Some "svg"
        | Some ".png" -> Some "png"
        | Some _ -> args.Raise($"--out {out.Value}: give a .dot, .svg or .png file", showUsage = false)
    match out with
    | Some f when Directory.Exists f -> args.Raise($"--out {f}: that is a folder; give a file name", showUsage = false)
    | Some f when not (Directory.Exists(Path.GetDirectoryName(Path.GetFullPath f))) -> args.Raise($"--out {f}: the folder does not exist", showUsage = false)
    | _ -> ()
    let text, what = describe args
    match out, format with
    | Some file, Some "dot" ->
        let full = Path.GetFullPath file
        File.WriteAllText(full + ".tmp", text)
        File.Move(full + ".tmp", full, overwrite = true)
        printfn $"graph: {what} -> {file}"
        0
    | Some file, Some format ->
        match render format text file with
        | Ok() -> printfn $"graph: {what} -> {file}"; 0
        | Error message -> eprintfn $"backprop: {message}"; 1
    | _ ->
        Console.Out.Write text
        0
