/// The ONNX export, checked by running the exported models in ONNX Runtime against the project's
/// own forward pass on the 10,000 MNIST test images, and by the ONNX checker (python3-onnx).
module OnnxTests

open System
open System.Diagnostics
open System.IO
open Expecto
open MathNet.Numerics.LinearAlgebra
open Microsoft.ML.OnnxRuntime
open Backprop.Core
open Common

/// Writes a line of measurements to the process's real standard output: Console.Out may be
/// captured at that moment by a CLI test running in parallel (CliTests.run), which must not see it.
let private report (line: string) = Common.note line

/// A fresh scratch folder.
let private scratch () = Directory.CreateTempSubdirectory("backprop-onnx-").FullName

/// Runs an ONNX model in ONNX Runtime (one thread) on n rows of `x` (row-major), returning the
/// outputs `probabilities` and `scores`, row-major, with their shapes.
let runOrt<'T when 'T: unmanaged and 'T: (new: unit -> 'T) and 'T: struct and 'T :> ValueType> (session: InferenceSession) (x: 'T[]) (n: int) =
    let inputs = x.Length / n
    use input = OrtValue.CreateTensorValueFromMemory<'T>(x, [| int64 n; int64 inputs |])
    use runOptions = new RunOptions()
    use outputs = session.Run(runOptions, [| "x" |], [| input |], [| "probabilities"; "scores" |])
    [ for v in outputs -> v.GetTensorDataAsSpan<'T>().ToArray(), v.GetTensorTypeAndShape().Shape ]

/// An ONNX Runtime session on one thread (the machines running the suite have two cores).
let session (model: Choice<string, byte[]>) =
    let options = new SessionOptions(IntraOpNumThreads = 1, InterOpNumThreads = 1)
    match model with
    | Choice1Of2 path -> new InferenceSession(path, options)
    | Choice2Of2 bytes -> new InferenceSession(bytes, options)

/// The index of the largest value of each row of a row-major [n, classes] array.
let argmaxRows (classes: int) (values: float[]) =
    Array.init (values.Length / classes) (fun i ->
        let row = values[i * classes .. (i + 1) * classes - 1]
        Array.IndexOf(row, Array.max row))

/// The largest |a - b| over two arrays of the same length.
let maxAbs (a: float[]) (b: float[]) = Array.fold2 (fun m (u: float) v -> max m (abs (u - v))) 0.0 a b

/// A model of the given layers with non-trivial weights (N(0, 0.1²)) and biases (N(0, 0.1²)),
/// in float64, from a seed.
let randomModel (seed: int) (layers: Layer list) : Model<float> =
    let m: Model<float> = Network.init seed 0.1 layers
    let rng = Random(seed + 1000)
    Network.parameters m
    |> List.map (fun (name, v) ->
        match v with
        | Value.Vector b -> name, Value.Vector(b.Map(fun _ -> 0.1 * MathNet.Numerics.Distributions.Normal.Sample(rng, 0.0, 1.0)))
        | Value.Matrix _ -> name, v)
    |> fun ps ->
        // Batch Normalization's running statistics, as a trained model has them (the initial
        // mean 0 and variance 0 would test little): means N(0, 0.1²), variances in [0.5, 1.5].
        let states =
            Network.states m
            |> List.map (fun (name, v) ->
                match v with
                | Value.Vector s when name.StartsWith "running_mean" -> name, Value.Vector(s.Map(fun _ -> 0.1 * MathNet.Numerics.Distributions.Normal.Sample(rng, 0.0, 1.0)))
                | Value.Vector s when name.StartsWith "running_var" -> name, Value.Vector(s.Map(fun _ -> 0.5 + rng.NextDouble()))
                | _ -> name, v)
        Network.build m.Layers ps states

/// The nets compared: the book's, a deeper ReLU net, a Sigmoid net, two mixed ones, a Tanh net
/// and chapter 6's Batch Normalization and Dropout nets.
let nets =
    [ "book 784-50-10 relu", Network.layers Activation.ReLU [ 784; 50; 10 ]
      "deeper 784-100-100-50-10 relu", Network.layers Activation.ReLU [ 784; 100; 100; 50; 10 ]
      "784-50-10 sigmoid", Network.layers Activation.Sigmoid [ 784; 50; 10 ]
      "affine-relu-affine-sigmoid-affine", [ Layer.Affine(784, 100); Layer.Relu; Layer.Affine(100, 50); Layer.Sigmoid; Layer.Affine(50, 10) ]
      "affine-affine", [ Layer.Affine(784, 50); Layer.Affine(50, 10) ]
      "784-50-10 tanh", Network.layers Activation.Tanh [ 784; 50; 10 ]
      "batchnorm and dropout 784-100-50-10 (Affine, BatchNorm, ReLU, Dropout 0.2 per hidden layer)", Network.extended Activation.ReLU [ 784; 100; 50; 10 ] true (Some 0.2)
      "batchnorm 784-100-10 sigmoid", Network.extended Activation.Sigmoid [ 784; 100; 10 ] true None ]

/// The test images as one row-major array and a matrix, in the element type.
let inline testImages () : ^T[] * Matrix< ^T > =
    let _, test = mnist.Force()
    let x: Matrix< ^T > = Dataset.images test [| 0 .. test.Count - 1 |]
    x.ToRowMajorArray(), x

/// Exports the model, runs it in ONNX Runtime on the 10,000 test images, and returns the
/// largest |Δ| between its probabilities and softmax(Network.predict), the same for the scores,
/// and whether the predicted classes are the same for every image.
let inline compareOnTestImages (model: Model< ^T >) =
    let xs, x = testImages ()
    let own = Functions.softmax (Network.predict model x)
    let ownScores = Network.predict model x
    use stream = new MemoryStream()
    Onnx.write stream model []
    use s = session (Choice2Of2(stream.ToArray()))
    match runOrt s xs x.RowCount with
    | [ (probabilities, pShape); (scores, sShape) ] ->
        Expect.equal pShape [| int64 x.RowCount; int64 own.ColumnCount |] "probabilities shape"
        Expect.equal sShape pShape "scores shape"
        let ortP = Array.map float probabilities
        let ownP = own.ToRowMajorArray() |> Array.map float
        maxAbs ortP ownP, maxAbs (Array.map float scores) (ownScores.ToRowMajorArray() |> Array.map float), argmaxRows own.ColumnCount ortP = Network.argmax own
    | outputs -> failtestf "two outputs expected, got %d" outputs.Length

// ─── The ONNX checker ───────────────────────────────────────────────────────────────────────────

let private python = "/usr/bin/python3"

/// Runs /usr/bin/python3 with arguments; (exit code, stdout, stderr).
let private runPython (args: string list) =
    let info = ProcessStartInfo(python, RedirectStandardOutput = true, RedirectStandardError = true)
    for a in args do info.ArgumentList.Add a
    use p = Process.Start info
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out.Result.Trim(), err.Trim()

/// Whether Debian's python3-onnx is here.
let private hasOnnx = lazy (File.Exists python && (try (let code, _, _ = runPython [ "-c"; "import onnx" ] in code = 0) with _ -> false))

/// Checks an ONNX file with onnx.checker.check_model(..., full_check=True) and returns its IR
/// and default-opset versions as "8 17". Without python3-onnx: fails where CI is "true", else skips.
let checkModel (path: string) =
    if not hasOnnx.Value then
        let why = "python3-onnx is not installed here (/usr/bin/python3 with onnx; apt-get install python3-onnx)"
        if Environment.GetEnvironmentVariable "CI" = "true" then failtest $"{why}: CI must run the ONNX checker" else skiptest $"{why}: CI installs it"
    let code, out, err =
        runPython
            [ "-c"
              "import sys, onnx; m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); print(m.ir_version, m.opset_import[0].version)"
              path ]
    Expect.equal (code, err) (0, "") $"the ONNX checker on {path}"
    out

// ─── Chapter 6's operators, in a graph built by hand ────────────────────────────────────────────

/// Affine → BatchNorm (inference) → Tanh → Dropout (inference, ratio 0.2) → Affine → Softmax,
/// built from the exporter's helpers, with random parameters from the seed in float64 (a
/// variance near 0 included, where epsilon matters).
type Ch06Params =
    { W1: Matrix<float>; b1: Vector<float>; Gamma: Vector<float>; Beta: Vector<float>; Mean: Vector<float>; Var: Vector<float>; W2: Matrix<float>; b2: Vector<float> }

let ch06Params (seed: int) =
    let rng = Random seed
    let normal s = s * MathNet.Numerics.Distributions.Normal.Sample(rng, 0.0, 1.0)
    let hidden = 30
    { W1 = Matrix<float>.Build.Dense(784, hidden, fun _ _ -> normal 0.1)
      b1 = Vector<float>.Build.Dense(hidden, fun _ -> normal 0.1)
      Gamma = Vector<float>.Build.Dense(hidden, fun _ -> 1.0 + normal 0.2)
      Beta = Vector<float>.Build.Dense(hidden, fun _ -> normal 0.2)
      Mean = Vector<float>.Build.Dense(hidden, fun _ -> normal 0.5)
      Var = Vector<float>.Build.Dense(hidden, fun i -> if i = 0 then 1e-9 else 0.5 + rng.NextDouble())
      W2 = Matrix<float>.Build.Dense(hidden, 10, fun _ _ -> normal 0.3)
      b2 = Vector<float>.Build.Dense(10, fun _ -> normal 0.1) }

let ch06Epsilon, ch06Ratio = 1e-6, 0.2

/// The hand-built ONNX model of those layers in the element type 'T.
let ch06Model<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> (convert: float -> 'T) (p: Ch06Params) : OnnxModel =
    let m (a: Matrix<float>) = a.Map(Func<float, 'T> convert, MathNet.Numerics.LinearAlgebra.Zeros.Include)
    let v (a: Vector<float>) = a.Map(Func<float, 'T> convert, MathNet.Numerics.LinearAlgebra.Zeros.Include)
    let pieces =
        [ Onnx.gemm "Affine1" "x" "affine1" ("W1", "b1") { W = m p.W1; b = v p.b1 }
          Onnx.batchNormalization "BatchNorm1" "affine1" "batchnorm1" ("gamma1", "beta1", "running_mean1", "running_var1") (v p.Gamma, v p.Beta, v p.Mean, v p.Var) ch06Epsilon
          Onnx.tanh "Tanh1" "batchnorm1" "tanh1"
          Onnx.dropout<'T> "Dropout1" "tanh1" "dropout1" "keep1" ch06Ratio
          Onnx.gemm "Affine2" "dropout1" "scores" ("W2", "b2") { W = m p.W2; b = v p.b2 }
          Onnx.softmax "Softmax" "scores" "probabilities" ]
    let elem = Onnx.elementType<'T> ()
    let io name n = { Name = name; ElementType = elem; Shape = [ OnnxDim.Param "N"; OnnxDim.Value n ] }
    { IrVersion = Onnx.irVersion
      Opset = Onnx.opsetVersion
      ProducerName = "Backprop"
      ProducerVersion = Onnx.producerVersion
      DocString = "chapter 6's layers, by hand"
      Graph =
        { Name = "ch06"
          Nodes = pieces |> List.collect (fun p -> p.Nodes)
          Initializers = pieces |> List.collect (fun p -> p.Initializers)
          Inputs = [ io "x" 784L ]
          Outputs = [ io "probabilities" 10L; io "scores" 10L ] }
      Metadata = [] }

/// The same layers computed directly, in the element type: (x·W1 + b1 − mean) / sqrt(var + ε) ·
/// gamma + beta, tanh, times 1 − ratio, ·W2 + b2, softmax.
let inline ch06Forward (p: Ch06Params) (x: Matrix< ^T >) : Matrix< ^T > =
    let m (a: Matrix<float>) : Matrix< ^T > = a.Map(fun v -> ofFloat v)
    let v (a: Vector<float>) : Vector< ^T > = a.Map(fun v -> ofFloat v)
    let gamma, beta, mean, var, b1, b2 = v p.Gamma, v p.Beta, v p.Mean, v p.Var, v p.b1, v p.b2
    let eps: ^T = ofFloat ch06Epsilon
    let keep: ^T = ofFloat (1.0 - ch06Ratio)
    let h = (x * m p.W1).MapIndexed(fun _ j a -> a + b1[j])
    let d = h.MapIndexed(fun _ j a -> tanh ((a - mean[j]) / sqrt (var[j] + eps) * gamma[j] + beta[j]) * keep)
    Functions.softmax ((d * m p.W2).MapIndexed(fun _ j a -> a + b2[j]))

// ─── Tests ──────────────────────────────────────────────────────────────────────────────────────

[<Tests>]
let tests =
    testList "onnx" [
        testList "ONNX Runtime = the project's forward pass on the 10,000 test images" [
            for name, layers in nets do
                test $"{name}, float32: max |Δp| <= 1e-5, same argmax" {
                    let dp, ds, sameArgmax = compareOnTestImages (Network.convert float32 (randomModel 1 layers))
                    report $"onnx: {name}, float32: max |Δ probabilities| %.3g{dp}, max |Δ scores| %.3g{ds}"
                    Expect.isLessThanOrEqual dp 1e-5 "max |Δ probabilities|"
                    Expect.isTrue sameArgmax "the same predicted class for every image"
                }
                test $"{name}, float64: max |Δp| <= 1e-12, same argmax" {
                    let dp, ds, sameArgmax = compareOnTestImages (randomModel 1 layers)
                    report $"onnx: {name}, float64: max |Δ probabilities| %.3g{dp}, max |Δ scores| %.3g{ds}"
                    Expect.isLessThanOrEqual dp 1e-12 "max |Δ probabilities|"
                    Expect.isTrue sameArgmax "the same predicted class for every image"
                }
        ]

        test "the graph: input x [N, 784], outputs probabilities and scores [N, 10], any batch size, metadata" {
            let model = Network.convert float32 (randomModel 3 (Network.layers Activation.ReLU [ 784; 50; 10 ]))
            use stream = new MemoryStream()
            Onnx.write stream model [ "learning_rate", "0.1"; "layers", "not this one" ]
            use s = session (Choice2Of2(stream.ToArray()))
            let x = s.InputMetadata["x"]
            Expect.equal (List.ofSeq s.InputMetadata.Keys) [ "x" ] "one input"
            Expect.equal x.Dimensions [| -1; 784 |] "x's dimensions"
            Expect.equal x.SymbolicDimensions[0] "N" "a symbolic batch dimension"
            Expect.equal x.ElementType typeof<float32> "float32 input"
            Expect.equal (List.ofSeq s.OutputMetadata.Keys) [ "probabilities"; "scores" ] "outputs"
            for o in s.OutputMetadata.Values do Expect.equal o.Dimensions [| -1; 10 |] "output dimensions"
            let meta = s.ModelMetadata
            Expect.equal meta.ProducerName "Backprop" "producer"
            Expect.equal meta.CustomMetadataMap["producer"] $"Backprop {Onnx.producerVersion}" "producer and version"
            Expect.equal meta.CustomMetadataMap["layers"] "Affine(784, 50), ReLU, Affine(50, 10), Softmax" "the layer list (the exporter's own)"
            Expect.equal meta.CustomMetadataMap["precision"] "float32" "precision"
            Expect.equal meta.CustomMetadataMap["learning_rate"] "0.1" "a setting passed on"
            for n in [ 1; 3 ] do
                let xs: float32[] = Array.init (n * 784) (fun i -> float32 (i % 255) / 255.0f)
                match runOrt s xs n with
                | [ (p, shape); _ ] ->
                    Expect.equal shape [| int64 n; 10L |] $"batch of {n}"
                    let own = Functions.softmax (Network.predict model (Matrix<float32>.Build.DenseOfRowMajor(n, 784, xs)))
                    Expect.isLessThanOrEqual (maxAbs (Array.map float p) (own.ToRowMajorArray() |> Array.map float)) 1e-5 $"batch of {n}"
                | _ -> failtest "two outputs"
            let doubleModel = randomModel 3 [ Layer.Affine(784, 10) ]
            use stream = new MemoryStream()
            Onnx.write stream doubleModel []
            use s = session (Choice2Of2(stream.ToArray()))
            Expect.equal s.InputMetadata["x"].ElementType typeof<float> "float64 input for a float64 model"
            Expect.equal s.ModelMetadata.CustomMetadataMap["precision"] "float64" "precision"
        }

        test "a model with no Affine layer is refused" {
            Expect.throwsT<ArgumentException> (fun () -> Onnx.ofModel (modelOf [ Layer.Relu ] [ Params<float>.Empty ]) [] |> ignore) "no input size"
        }

        testList "chapter 6's operators (BatchNorm, Tanh, Dropout), by hand" [
            let p = ch06Params 6
            test "float32: ONNX Runtime = the layers computed directly, max |Δp| <= 1e-5" {
                let xs, x = testImages ()
                use s = session (Choice2Of2(Onnx.encode (ch06Model float32 p)))
                let ortP = (runOrt<float32> s xs x.RowCount).Head |> fst |> Array.map float
                let own: Matrix<float32> = ch06Forward p x
                let d = maxAbs ortP (own.ToRowMajorArray() |> Array.map float)
                report $"onnx: chapter 6 graph, float32: max |Δ probabilities| %.3g{d}"
                Expect.isLessThanOrEqual d 1e-5 "max |Δ probabilities|"
                Expect.equal (argmaxRows 10 ortP) (Network.argmax own) "same argmax"
            }
            test "float64: ONNX Runtime = the layers computed directly, max |Δp| <= 1e-12" {
                let xs, x = testImages ()
                use s = session (Choice2Of2(Onnx.encode (ch06Model float p)))
                let ortP = (runOrt<float> s xs x.RowCount).Head |> fst
                let own: Matrix<float> = ch06Forward p x
                let d = maxAbs ortP (own.ToRowMajorArray())
                report $"onnx: chapter 6 graph, float64: max |Δ probabilities| %.3g{d}"
                Expect.isLessThanOrEqual d 1e-12 "max |Δ probabilities|"
                Expect.equal (argmaxRows 10 ortP) (Network.argmax own) "same argmax"
            }
            test "dropout refuses a ratio outside [0, 1)" {
                Expect.throwsT<ArgumentException> (fun () -> Onnx.dropout<float> "D" "a" "b" "k" 1.0 |> ignore) "ratio 1"
            }
        ]

        test "the ONNX checker (full_check) accepts every exported model: IR 8, opset 17" {
            let dir = scratch ()
            let files =
                [ for name, layers in nets do
                      let file = Path.Combine(dir, name.Replace(' ', '_') + ".onnx")
                      Onnx.save file (randomModel 1 layers) []
                      yield file
                      let file32 = Path.Combine(dir, name.Replace(' ', '_') + ".f32.onnx")
                      Onnx.save file32 (Network.convert float32 (randomModel 1 layers)) [ "seed", "1" ]
                      yield file32
                  let p = ch06Params 6
                  let ch06 = Path.Combine(dir, "ch06.onnx")
                  Onnx.saveModel ch06 (ch06Model float p)
                  yield ch06
                  let ch06f = Path.Combine(dir, "ch06.f32.onnx")
                  Onnx.saveModel ch06f (ch06Model float32 p)
                  yield ch06f ]
            for file in files do
                Expect.equal (checkModel file) "8 17" $"{Path.GetFileName file}: IR and opset versions"
            report $"onnx: the ONNX checker (full_check=True) accepted %d{files.Length} models"
        }

        testSequencedGroup Common.console <| testList "cli" [
            test "train (1200 iterations), export: ONNX Runtime's test accuracy = Evaluate.accuracy = evaluate's" {
                let dir = scratch ()
                let npz, onnx = Path.Combine(dir, "m.npz"), Path.Combine(dir, "m.onnx")
                let code, _, err = CliTests.run [ "train"; "--iters"; "1200"; "--save"; npz; "--data"; mnistDir ]
                Expect.equal (code, err) (0, "") "train"
                let code, out, err = CliTests.run [ "export"; "--model"; npz; "--onnx"; onnx ]
                Expect.equal (code, err) (0, "") "export"
                Expect.stringStarts out $"export: model {npz} (784-50-10, float32) -> {onnx} (ONNX IR 8, opset 17, " "export's line"
                let code, out, _ = CliTests.run [ "evaluate"; "--model"; npz; "--data"; mnistDir ]
                Expect.equal code 0 "evaluate"
                let printed = out.Split('\n') |> Array.find (fun l -> l.StartsWith "test acc ") |> fun l -> l.Substring 9
                let _, test = mnist.Force()
                let own =
                    match Npz.load npz with
                    | SavedModel.Single m -> Evaluate.accuracy m test
                    | SavedModel.Double _ -> failtest "a float32 model expected"
                let xs, x = testImages ()
                use s = session (Choice1Of2 onnx)
                let predicted = argmaxRows 10 ((runOrt<float32> s xs x.RowCount).Head |> fst |> Array.map float)
                let ortAccuracy = float (predicted |> Array.indexed |> Array.filter (fun (i, c) -> c = int test.Labels[i]) |> Array.length) / float test.Count
                report $"onnx: trained 1200 iterations: test accuracy %.4f{ortAccuracy} (ONNX Runtime), %.4f{own} (Evaluate.accuracy), {printed} (evaluate)"
                Expect.equal ortAccuracy own "ONNX Runtime's accuracy = Evaluate.accuracy"
                Expect.equal printed (sprintf "%.4f" ortAccuracy) "= the CLI's evaluate"
                Expect.equal s.ModelMetadata.CustomMetadataMap["iterations"] "1200" "the training settings in the metadata"
                Expect.equal s.ModelMetadata.CustomMetadataMap["data"] (Path.GetFullPath mnistDir) "the data set in the metadata"
            }
            test "export errors: one line naming the file, exit 1 (2 for usage); nothing left behind" {
                let dir = scratch ()
                let npz = Path.Combine(dir, "m.npz")
                Npz.save npz (randomModel 1 [ Layer.Affine(4, 2) ]) []
                let missing = Path.Combine(dir, "missing.npz")
                let cases =
                    [ [ "--model"; missing; "--onnx"; Path.Combine(dir, "a.onnx") ], 1, $"backprop: {missing}: model file not found"
                      [ "--model"; npz; "--onnx"; Path.Combine(dir, "no", "a.onnx") ], 1, $"""backprop: {Path.Combine(dir, "no", "a.onnx")}: the folder {Path.Combine(dir, "no")} does not exist"""
                      [ "--model"; npz; "--onnx"; dir ], 1, $"backprop: {dir}: that is a folder; give a file name"
                      [ "--model"; npz ], 2, "backprop: missing argument '--onnx'." ]
                for args, expectedCode, expected in cases do
                    let code, out, err = CliTests.run ("export" :: args)
                    Expect.equal code expectedCode $"exit code for %A{args}"
                    Expect.equal out "" "nothing on stdout"
                    Expect.stringStarts err expected "the message"
                    Expect.equal (err.TrimEnd('\n').Split('\n').Length) 1 "one line"
                Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName) [| "m.npz" |] "no file written, no temporary file left"
            }
        ]
    ]
