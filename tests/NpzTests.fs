/// Models on disk (.npz): round trips, files written by numpy, numpy reading ours, the book's
/// numpy training reproduced, and every bad file named in one line.
module NpzTests

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

let private fixtures = Path.Combine(repoRoot, "tests", "fixtures")
let private temp name = Path.Combine(Directory.CreateTempSubdirectory("backprop-npz-").FullName, name)

/// /usr/bin/python3 with numpy, if this machine has it.
let private python =
    lazy
        (let p = "/usr/bin/python3"
         if not (File.Exists p) then None
         else
             use proc = Process.Start(ProcessStartInfo(p, "-c \"import numpy\"", RedirectStandardError = true))
             proc.WaitForExit()
             if proc.ExitCode = 0 then Some p else None)

/// Runs a fixture script with python; returns its standard output.
let private runPython (script: string) (args: string list) =
    match python.Value with
    | None -> requireOrSkip "python3-numpy is not installed here (/usr/bin/python3 with numpy): CI installs it; this check needs numpy"
    | Some py ->
        let info = ProcessStartInfo(py, RedirectStandardOutput = true, RedirectStandardError = true)
        info.ArgumentList.Add(Path.Combine(fixtures, script))
        for a in args do info.ArgumentList.Add a
        use proc = Process.Start info
        let out = proc.StandardOutput.ReadToEnd()
        let err = proc.StandardError.ReadToEnd()
        proc.WaitForExit()
        if proc.ExitCode <> 0 then failtest $"{script} failed: {err}"
        out.Trim()

let private paramsOf (m: Model<'T>) = m.Params |> List.choose (function Params.Affine p -> Some p | _ -> None)

let private expectDataError (f: unit -> unit) (words: string) =
    try
        f ()
        failtest "expected a DataError"
    with DataError(_, problem) ->
        Expect.stringContains problem words "what is wrong"
        Expect.isFalse (problem.Contains '\n') "one line"

/// Writes an .npz whose arrays are given as (name, descr, shape, raw bytes).
let private writeNpz (path: string) (arrays: (string * byte[]) list) =
    use zip = ZipFile.Open(path, ZipArchiveMode.Create)
    for name, bytes in arrays do
        use s = zip.CreateEntry(name).Open()
        s.Write(bytes, 0, bytes.Length)

/// The entries of an .npz as bytes.
let private entries (path: string) =
    use zip = ZipFile.OpenRead path
    [ for e in zip.Entries ->
        use s = e.Open()
        use m = new MemoryStream()
        s.CopyTo m
        e.FullName, m.ToArray() ]

[<Tests>]
let tests =
    testList "npz" [
        test "round trip float32 and float64: the same numbers bit for bit and the same accuracy" {
            let _, test = mnist.Force()
            let m32: Model<float32> = Network.init 7 0.5 (Network.layers Activation.ReLU [ 784; 20; 10 ])
            let m64: Model<float> = Network.init 7 0.5 (Network.layers Activation.Sigmoid [ 784; 20; 15; 10 ])
            let p32, p64 = temp "m32.npz", temp "m64.npz"
            Npz.save p32 m32 [ "note", Text.Json.Nodes.JsonValue.Create "float32" :> Text.Json.Nodes.JsonNode ]
            Npz.save p64 m64 []
            match Npz.load p32, Npz.load p64 with
            | SavedModel.Single l32, SavedModel.Double l64 ->
                Expect.equal l32.Layers m32.Layers "float32 layers"
                Expect.equal l64.Layers m64.Layers "float64 layers, sigmoid kept"
                for a, b in List.zip (paramsOf l32) (paramsOf m32) do
                    Expect.equal (a.W.ToRowMajorArray()) (b.W.ToRowMajorArray()) "float32 W bit for bit"
                    Expect.equal (a.b.ToArray()) (b.b.ToArray()) "float32 b"
                for a, b in List.zip (paramsOf l64) (paramsOf m64) do
                    Expect.equal (a.W.ToRowMajorArray()) (b.W.ToRowMajorArray()) "float64 W bit for bit"
                Expect.equal (Evaluate.accuracy l32 test) (Evaluate.accuracy m32 test) "float32 accuracy"
                Expect.equal (Evaluate.accuracy l64 test) (Evaluate.accuracy m64 test) "float64 accuracy"
            | _ -> failtest "precisions swapped"
            Expect.equal (Npz.metadata p32).["note"] "float32" "metadata kept"
            Expect.equal (Npz.read p64).Version 2 "format 2"
        }
        // Architectures the first release's file lost (it kept sizes and one activation).
        let mixed =
            [ "Affine-ReLU-Affine-Sigmoid-Affine", [ Layer.Affine(784, 30); Layer.Relu; Layer.Affine(30, 20); Layer.Sigmoid; Layer.Affine(20, 10) ]
              "Affine-Affine", [ Layer.Affine(784, 16); Layer.Affine(16, 10) ]
              "5-layer ReLU", Network.layers Activation.ReLU [ 784; 40; 30; 20; 15; 10 ] ]
        for name, layers in mixed do
            test $"round trip of {name}: the same layers, parameters and states bit for bit, float32 and float64" {
                let check (original: Model<'T>) (loaded: Model<'T>) =
                    Expect.equal loaded.Layers original.Layers "the same layers, in order"
                    Expect.equal (Network.parameters loaded |> List.map fst) (Network.parameters original |> List.map fst) "the same names"
                    for (n, a), (_, b) in List.zip (Network.parameters loaded) (Network.parameters original) do
                        Expect.equal (Value.shape a) (Value.shape b) $"{n} shape"
                        Expect.equal (Value.toRowMajor a) (Value.toRowMajor b) $"{n} bit for bit"
                    Expect.equal (Network.states loaded |> List.map fst) (Network.states original |> List.map fst) "the same states"
                let m32: Model<float32> = Network.init 11 0.3 layers
                let m64: Model<float> = Network.init 11 0.3 layers
                let p32, p64 = temp "mixed32.npz", temp "mixed64.npz"
                Npz.save p32 m32 []
                Npz.save p64 m64 []
                match Npz.load p32, Npz.load p64 with
                | SavedModel.Single l32, SavedModel.Double l64 -> check m32 l32; check m64 l64
                | _ -> failtest "precisions kept"
                // And through a stream (the C# facade's Load(Stream)): the same model.
                use stream = new MemoryStream()
                Npz.write stream m64 [] []
                stream.Position <- 0L
                match (Npz.readFrom "stream" stream).Model with
                | SavedModel.Double l -> check m64 l
                | _ -> failtest "float64 from a stream"
            }
        test "version-1 files of the first release load to the parameters numpy reads from them" {
            let described = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(fixtures, "v1", "v1.json")))
            for file, layers in [ "relu-784-50-10-f32.npz", Network.layers Activation.ReLU [ 784; 50; 10 ]
                                  "sigmoid-784-30-20-10-f64.npz", Network.layers Activation.Sigmoid [ 784; 30; 20; 10 ] ] do
                let read = Npz.read (Path.Combine(fixtures, "v1", file))
                Expect.equal read.Version 1 $"{file}: version 1"
                Expect.equal read.Model.Layers layers $"{file}: the layers its sizes and activation give"
                let named = match read.Model with SavedModel.Single m -> Network.parameters (Network.convert float m) | SavedModel.Double m -> Network.parameters m
                for name, value in named do
                    let expected = described[file][name]
                    let values = Value.toRowMajor value
                    Expect.equal (Value.shape value) (expected["shape"].AsArray() |> Seq.map (fun v -> v.GetValue<int>()) |> Array.ofSeq) $"{file} {name} shape"
                    Expect.equal values[.. 4] (expected["first"].AsArray() |> Seq.map (fun v -> v.GetValue<float>()) |> Array.ofSeq) $"{file} {name} first values"
                    Expect.equal values[values.Length - 5 ..] (expected["last"].AsArray() |> Seq.map (fun v -> v.GetValue<float>()) |> Array.ofSeq) $"{file} {name} last values"
                    Expect.floatClose { absolute = 1e-12; relative = 1e-12 } (Array.sum values) (expected["sum"].GetValue<float>()) $"{file} {name} sum"
                let meta = described[file]["meta"]
                let seed = Npz.text meta["seed"]
                let saved = read.Metadata["seed"]
                Expect.equal (Npz.text saved) seed "metadata kept as the file has it"
        }
        test "saving replaces an existing file whole and leaves no temporary file" {
            let path = temp "model.npz"
            File.WriteAllText(path, "an older file")
            Npz.save path (Network.init 1 0.1 (Network.layers Activation.ReLU [ 4; 3; 2 ]): Model<float>) []
            Expect.equal (Directory.GetFiles(Path.GetDirectoryName path).Length) 1 "only the model"
            match Npz.load path with SavedModel.Double _ -> () | _ -> failtest "float64"
            let missing = temp "no/such/dir/m.npz"
            try
                Npz.save missing (Network.init 1 0.1 (Network.layers Activation.ReLU [ 4; 2 ]): Model<float>) []
                failtest "expected an OutputError"
            with OutputError(file, problem) ->
                Expect.equal file missing "names the file"
                Expect.stringContains problem "does not exist" "says the folder is missing"
        }
        test "files written by numpy load, in float32 and in float64 (C and Fortran order)" {
            for file in [ "numpy_f32.npz"; "numpy_f64.npz" ] do
                let check (ps: AffineParams<'T> list) (value: 'T -> float) =
                    Expect.equal ps.Length 2 "two layers"
                    Expect.equal (ps[0].W.RowCount, ps[0].W.ColumnCount, ps[1].W.RowCount, ps[1].W.ColumnCount) (4, 3, 3, 2) "shapes"
                    Expect.floatClose { absolute = 1e-7; relative = 0.0 } (value ps[0].W[1, 2]) ((1.0 * 3.0 + 2.0) / 10.0 - 0.5) "W1[1, 2]"
                    Expect.floatClose { absolute = 1e-7; relative = 0.0 } (value ps[1].W[2, 1]) ((2.0 * 2.0 + 1.0) / 4.0 - 0.5) "W2[2, 1]"
                    Expect.floatClose { absolute = 1e-7; relative = 0.0 } (value ps[0].b[2]) 0.3 "b1[2]"
                match Npz.load (Path.Combine(fixtures, file)) with
                | SavedModel.Single m -> Expect.equal file "numpy_f32.npz" "float32 file"; check (paramsOf m) float
                | SavedModel.Double m -> Expect.equal file "numpy_f64.npz" "float64 file"; check (paramsOf m) id
        }
        test "numpy's forward pass on a saved model gives the project's predictions" {
            let train, test = mnist.Force()
            let config = { Training.bookRecipe with Iterations = 300 }
            let model = (Run.epochs config train (Dataset.take 100 test) (Network.init 42 0.01 Training.bookNetwork: Model<float32>) |> Seq.last).Model
            let path = temp "trained.npz"
            Npz.save path model []
            let ours = Network.argmax (Network.predict model (Dataset.images test [| 0 .. 499 |]))
            let theirs = runPython "numpy_forward.py" [ path; mnistDir; "500" ]
            Expect.equal theirs (String.Join(",", ours)) "the same class for each of the first 500 test images"
        }
        test "sequential sampling from saved parameters reproduces the book's numpy training to 1e-9" {
            let init = temp "init.npz"
            Npz.save init (Network.init 42 0.01 Training.bookNetwork: Model<float>) []
            let ours = temp "ours.npz"
            let code, _, err = CliTests.run [ "train"; "--init-from"; init; "--sampling"; "sequential"; "--precision"; "double"; "--iters"; "250"; "--eval-sample"; "100"; "--save"; ours; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "train ran"
            let numpy = temp "numpy.npz"
            runPython "book_sequential.py" [ init; numpy; mnistDir; "250" ] |> ignore
            match Npz.load ours, Npz.load numpy with
            | SavedModel.Double a, SavedModel.Double b ->
                for pa, pb in List.zip (paramsOf a) (paramsOf b) do
                    let relative (x: Matrix<float>) (y: Matrix<float>) = (x - y).FrobeniusNorm() / y.FrobeniusNorm()
                    Expect.isLessThan (relative pa.W pb.W) 1e-9 "W relative difference"
                    Expect.isLessThan ((pa.b - pb.b).L2Norm() / pb.b.L2Norm()) 1e-9 "b relative difference"
                let initial = match Npz.load init with SavedModel.Double m -> m | _ -> failwith "float64"
                Expect.notEqual (paramsOf a).[0].W (paramsOf initial).[0].W "training moved W1"
            | _ -> failtest "float64 files"
        }
        test "--init-from continues from the saved numbers bit for bit" {
            let train, test = mnist.Force()
            let start = temp "start.npz"
            let initial: Model<float32> = Network.init 3 0.01 (Network.layers Activation.ReLU [ 784; 30; 10 ])
            Npz.save start initial []
            let saved = temp "after.npz"
            let code, _, _ = CliTests.run [ "train"; "--init-from"; start; "--sampling"; "sequential"; "--iters"; "40"; "--eval-sample"; "50"; "--save"; saved; "--data"; mnistDir ]
            Expect.equal code 0 "train ran"
            let config = { Training.bookRecipe with Iterations = 40; Sampling = Sampling.Sequential }
            let expected = (Run.trained config train (Training.start initial) |> Seq.last).Model
            match Npz.load saved with
            | SavedModel.Single m ->
                for a, b in List.zip (paramsOf m) (paramsOf expected) do
                    Expect.equal (a.W.ToRowMajorArray()) (b.W.ToRowMajorArray()) "the same W as training in-process from the same numbers"
            | _ -> failtest "float32 file"
            for option, value, what in [ "--hidden", "20", "layer sizes"; "--activation", "sigmoid", "activation" ] do
                let code, out, err = CliTests.run [ "train"; "--init-from"; start; option; value; "--data"; mnistDir ]
                Expect.equal (code, out) (2, "") $"{option} with --init-from is refused before training"
                Expect.equal (err.Trim()) $"backprop: {option} and --init-from {start}: the model file sets the {what}" "one line naming both"
        }
        testList "bad files: one line naming the file" [
            test "missing file" { expectDataError (fun () -> Npz.load "/no/such/model.npz" |> ignore) "file not found" }
            test "not a zip archive" {
                let p = temp "junk.npz"
                File.WriteAllText(p, "not a zip")
                expectDataError (fun () -> Npz.load p |> ignore) "not a valid .npz (zip) archive"
            }
            test "missing array, wrong shape, mixed dtypes, NaN" {
                let good = temp "good.npz"
                Npz.save good (Network.init 1 0.1 (Network.layers Activation.ReLU [ 4; 3; 2 ]): Model<float>) []
                let arrays = entries good |> Map.ofList
                let variant name (change: Map<string, byte[]> -> Map<string, byte[]>) =
                    let p = temp name
                    writeNpz p (change arrays |> Map.toList)
                    p
                expectDataError (fun () -> Npz.load (variant "nob2.npz" (Map.remove "b2.npy")) |> ignore) "missing array b2"
                expectDataError (fun () -> Npz.load (variant "shape.npz" (Map.add "b1.npy" arrays["b2.npy"])) |> ignore) "b1 has shape (2,); (3,) expected"
                let f32: Model<float32> = Network.init 1 0.1 (Network.layers Activation.ReLU [ 4; 3; 2 ])
                let other = temp "f32.npz"
                Npz.save other f32 []
                let otherW2 = (entries other |> Map.ofList).["W2.npy"]
                expectDataError (fun () -> Npz.load (variant "mixed.npz" (Map.add "W2.npy" otherW2)) |> ignore) "W2 has dtype <f4, W1 has <f8"
                let nan = Array.copy arrays["W1.npy"]
                Array.blit (BitConverter.GetBytes Double.NaN) 0 nan (nan.Length - 8) 8
                expectDataError (fun () -> Npz.load (variant "nan.npz" (Map.add "W1.npy" nan)) |> ignore) "W1 holds a NaN or infinite value"
                expectDataError (fun () -> Npz.load (variant "meta.npz" (Map.remove "W1.npy")) |> ignore) "missing array W1"
                // other dtypes in the header (same header length): big-endian, integer, object
                let withDescr (descr: string) =
                    let bytes = Array.copy arrays["W1.npy"]
                    let header = Text.Encoding.Latin1.GetString bytes
                    let at = header.IndexOf "'<f8',"
                    Array.blit (Text.Encoding.Latin1.GetBytes descr) 0 bytes at 6
                    Map.add "W1.npy" bytes
                expectDataError (fun () -> Npz.load (variant "big.npz" (withDescr "'>f8',")) |> ignore) "W1 has dtype >f8; float32 ('<f4') or float64 ('<f8') expected"
                expectDataError (fun () -> Npz.load (variant "int.npz" (withDescr "'<i8',")) |> ignore) "W1 has dtype <i8; float32 ('<f4') or float64 ('<f8') expected"
                expectDataError (fun () -> Npz.load (variant "object.npz" (withDescr "'|O', ")) |> ignore) "dtype |O is not supported"
            }
        ]
    ]
