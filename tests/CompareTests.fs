/// `backprop compare` (issue 13): the book's smoothing against numpy's, the experiments' networks
/// stepping in parallel against a plain fold, the acceptance checks on the real runs, the figures
/// as PNGs of the expected size, and the command line.
///
/// Sizes: the checks run each experiment as `backprop compare` runs it (the same functions, the
/// same seed 42), but optimizers and init for 1,000 iterations instead of 2,000 and batchnorm for 10
/// epochs instead of 20, so that the file stays near two minutes of CPU on this kind of machine;
/// weight-decay and dropout run their full 201 epochs and evaluate the last one only (evaluation
/// changes nothing else). BACKPROP_COMPARE_FULL=1 runs the book's full sizes (README shows them).
module CompareTests

open System
open System.Diagnostics
open System.IO
open Expecto
open SkiaSharp
open Backprop.Core
open Backprop.Cli
open Common

/// The book's sizes when BACKPROP_COMPARE_FULL=1, else the smaller ones of the header.
let private full = Environment.GetEnvironmentVariable "BACKPROP_COMPARE_FULL" = "1"
let private lossIterations = if full then Compare.lossIterations else 1000
let private batchNormEpochs = if full then 20 else 10

/// numpy's smooth_curve and kaiser (the book's common/util.py, verbatim) on the given values,
/// run by /usr/bin/python3; None where numpy is missing.
let private numpySmooth (values: float[]) : (float[] * float[]) option =
    let py = "/usr/bin/python3"
    if not (File.Exists py) then None
    else
        let script =
            String.concat
                "\n"
                [ "import sys, numpy as np"
                  "def smooth_curve(x):"
                  "    window_len = 11"
                  "    s = np.r_[x[window_len-1:0:-1], x, x[-1:-window_len:-1]]"
                  "    w = np.kaiser(window_len, 2)"
                  "    y = np.convolve(w/w.sum(), s, mode='valid')"
                  "    return y[5:len(y)-5]"
                  "x = np.array([float(v) for v in sys.stdin.read().split()])"
                  "print(' '.join(repr(float(v)) for v in smooth_curve(x)))"
                  "print(' '.join(repr(float(v)) for v in np.kaiser(11, 2)))" ]
        let info = ProcessStartInfo(py, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true)
        info.ArgumentList.Add "-c"
        info.ArgumentList.Add script
        use proc = Process.Start info
        proc.StandardInput.Write(values |> Array.map (fun v -> v.ToString("R", Globalization.CultureInfo.InvariantCulture)) |> String.concat " ")
        proc.StandardInput.Close()
        let out = proc.StandardOutput.ReadToEnd()
        proc.StandardError.ReadToEnd() |> ignore
        proc.WaitForExit()
        if proc.ExitCode <> 0 then None
        else
            let parse (line: string) = line.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun s -> Double.Parse(s, Globalization.CultureInfo.InvariantCulture))
            let lines = out.Trim().Split('\n')
            Some(parse lines[0], parse lines[1])

/// The width and height of a PNG, decoded by SkiaSharp; fails the test if it is not a PNG.
let private pngSize (bytes: byte[]) =
    Expect.equal bytes[0..7] [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |] "the PNG signature"
    use bitmap = SKBitmap.Decode bytes
    Expect.isNotNull bitmap "decodes as an image"
    bitmap.Width, bitmap.Height

/// The loss curves of a comparison: one array per contender.
let private curves (steps: Compare.LossStep list) (count: int) =
    Array.init count (fun k -> steps |> List.map (fun s -> s.Losses[k]) |> Array.ofList)

[<Tests>]
let tests =
    testList "compare (issue 13)" [
        test "smoothCurve and kaiser equal the book's smooth_curve and np.kaiser run by numpy" {
            let rng = Random 5
            let values = Array.init 137 (fun i -> 2.3 * exp (-float i / 40.0) + 0.1 * rng.NextDouble())
            match numpySmooth values with
            | None -> requireOrSkip "python3-numpy is not installed here (/usr/bin/python3 with numpy): CI installs it"
            | Some(smoothed, window) ->
                let ours = Compare.smoothCurve values
                Expect.equal ours.Length values.Length "as long as the curve"
                Array.iteri2 (fun i (a: float) b -> Expect.floatClose Accuracy.veryHigh a b $"smoothed value %d{i}") ours smoothed
                Array.iteri2 (fun i (a: float) b -> Expect.floatClose Accuracy.veryHigh a b $"window value %d{i}") (Compare.kaiser 11 2.0) window
        }
        test "the 16 weight scales are np.logspace(0, -4, 16)" {
            Expect.equal Compare.weightScales.Length 16 "16 scales"
            Expect.floatClose Accuracy.veryHigh Compare.weightScales[0] 1.0 "from 1"
            Expect.floatClose Accuracy.veryHigh Compare.weightScales[15] 1e-4 "to 1e-4"
            Expect.floatClose Accuracy.veryHigh Compare.weightScales[5] 0.046415888336127774 "np.logspace(0, -4, 16)[5]"
        }
        test "a loss comparison's networks, stepped on two cores, give the plain fold's losses" {
            let train, _ = mnist.Value
            let steps = Compare.lossComparison train 7 5 16 Compare.optimizerContenders |> List.ofSeq
            for k, c in List.indexed Compare.optimizerContenders do
                // The same run written as the book's loop: one network, one optimizer, the same batches.
                let batches = Training.batchIndices 8 16 train.Count |> Seq.take 5 |> Seq.map (Dataset.batch train) |> List.ofSeq
                let expected =
                    batches
                    |> List.scan (fun (state, _) (x, t) -> let s, _ = Training.stepWith c.Optimizer state (x, t) in s, Network.loss s.Model x t) (Training.startWith c.Optimizer (Network.initWith c.WeightInit 7 c.Layers), nan)
                    |> List.tail
                    |> List.map snd
                Expect.equal (steps |> List.map (fun s -> s.Losses[k])) expected $"{c.Name}: the same losses, bit for bit"
        }
        test $"compare optimizers: SGD has the highest loss at the last iteration (smoothed; %d{lossIterations} iterations)" {
            let train, _ = mnist.Value
            let steps = Compare.lossComparison train 42 lossIterations Compare.lossBatch Compare.optimizerContenders |> List.ofSeq
            let names = Compare.optimizerContenders |> List.map (fun c -> c.Name)
            let v = Compare.optimizersVerdict names (curves steps names.Length)
            note $"compare optimizers at {lossIterations}: {v.Line}"
            Expect.isTrue v.Holds v.Line
        }
        test $"compare init: std=0.01 ends above 2.2 and He below Xavier (%d{lossIterations} iterations)" {
            let train, _ = mnist.Value
            let steps = Compare.lossComparison train 42 lossIterations Compare.lossBatch Compare.initContenders |> List.ofSeq
            let names = Compare.initContenders |> List.map (fun c -> c.Name)
            let v = Compare.initVerdict names (curves steps names.Length)
            note $"compare init at {lossIterations}: {v.Line}"
            Expect.isTrue v.Holds v.Line
        }
        test $"compare batchnorm: with BatchNorm the final training accuracy is higher for at least 12 of 16 scales (%d{batchNormEpochs} epochs)" {
            let train, _ = mnist.Value
            let runs = Compare.batchNormComparison train 42 batchNormEpochs |> List.ofSeq
            Expect.equal runs.Length 16 "16 scales"
            Expect.all runs (fun r -> r.With.Length = batchNormEpochs && r.Without.Length = batchNormEpochs) "an accuracy per epoch"
            let v = Compare.batchNormVerdict runs
            note $"compare batchnorm at {batchNormEpochs} epochs: {v.Line}"
            Expect.isTrue v.Holds v.Line
        }
        test "compare weight-decay: the train-test gap at the last of 201 epochs is smaller with decay" {
            let train, test = mnist.Value
            let epochs = Compare.overfitComparison train test 42 Compare.overfitEpochs (fun e -> e = Compare.overfitEpochs - 1) Compare.weightDecayExperiment |> List.ofSeq
            Expect.equal epochs.Length 201 "201 epochs"
            let v = Compare.overfitVerdict Compare.weightDecayExperiment (List.last epochs)
            note $"compare weight-decay: {v.Line}"
            Expect.isGreaterThan (fst (List.last epochs).Without) 0.95 "without decay the 300 images are learnt (over-fitting)"
            Expect.isTrue v.Holds v.Line
        }
        test "compare dropout: the train-test gap at the last of 201 epochs is smaller with Dropout" {
            let train, test = mnist.Value
            let epochs = Compare.overfitComparison train test 42 Compare.overfitEpochs (fun e -> e = Compare.overfitEpochs - 1) Compare.dropoutExperiment |> List.ofSeq
            let v = Compare.overfitVerdict Compare.dropoutExperiment (List.last epochs)
            note $"compare dropout: {v.Line}"
            Expect.isTrue v.Holds v.Line
        }
        test "the figures are PNGs of the documented sizes" {
            let losses = [| Array.init 300 (fun i -> 2.0 / float (i + 1)); Array.init 300 (fun i -> 1.0 / float (i + 1)) |]
            Expect.equal (pngSize (Compare.lossFigure "t" 1.0 [ "a"; "b" ] losses)) Compare.lossFigureSize "loss figure"
            let runs = [ for s in Compare.weightScales -> { Compare.BatchNormRun.Scale = s; Compare.BatchNormRun.Without = [| 0.1; 0.2 |]; Compare.BatchNormRun.With = [| 0.1; 0.9 |] } ]
            Expect.equal (pngSize (Compare.batchNormFigure runs)) Compare.batchNormFigureSize "batchnorm figure"
            let epochs = [ for e in 0..20 -> { Compare.OverfitEpoch.Epoch = e; Compare.OverfitEpoch.Without = (0.5, 0.4); Compare.OverfitEpoch.With = (0.45, 0.4) } ]
            Expect.equal (pngSize (Compare.overfitFigure Compare.dropoutExperiment epochs)) Compare.overfitFigureSize "overfit figure"
        }
        testSequencedGroup Common.console <| testList "the command" [
            test "compare optimizers --iters 30 prints the book's blocks and a verdict, and writes an 800x600 PNG" {
                let png = Path.Combine(Directory.CreateTempSubdirectory("backprop-compare-").FullName, "opt.png")
                let code, out, err = CliTests.run [ "compare"; "optimizers"; "--iters"; "30"; "--out"; png; "--data"; mnistDir ]
                Expect.equal (code, err) (0, "") "exit 0, nothing on stderr"
                Expect.stringContains out "===========iteration:0===========" "the book's block header"
                for name in [ "SGD:"; "Momentum:"; "AdaGrad:"; "Adam:" ] do
                    Expect.stringContains out name name
                Expect.stringContains out "check: SGD has the highest loss at iteration 30" "the verdict line"
                Expect.stringContains out $"wrote: {png}" "says what it wrote"
                Expect.equal (pngSize (File.ReadAllBytes png)) Compare.lossFigureSize "800 x 600"
            }
            test "the same seed gives the same output twice" {
                let _, a, _ = CliTests.run [ "compare"; "init"; "--iters"; "3"; "--seed"; "3"; "--data"; mnistDir ]
                let _, b, _ = CliTests.run [ "compare"; "init"; "--iters"; "3"; "--seed"; "3"; "--data"; mnistDir ]
                Expect.equal a b "reproducible"
            }
            test "bad usage is one line naming the option, exit 2" {
                for args, words in
                    [ [ "compare"; "optimizers"; "--epochs"; "3" ], "--epochs goes with batchnorm"
                      [ "compare"; "dropout"; "--iters"; "3" ], "--iters goes with optimizers"
                      [ "compare"; "init"; "--iters"; "0" ], "--iters must be a positive integer"
                      [ "compare"; "adam" ], "adam" ] do
                    let code, _, err = CliTests.run args
                    Expect.equal code 2 $"%A{args}: exit 2"
                    Expect.stringContains err words $"%A{args}: message"
                    Expect.equal (err.Trim().Split('\n').Length) 1 $"%A{args}: one line"
            }
            test "an --out in a missing folder fails at once, naming the file, exit 1" {
                let png = Path.Combine(Path.GetTempPath(), "no-such-folder-backprop", "x.png")
                let code, out, err = CliTests.run [ "compare"; "batchnorm"; "--epochs"; "1"; "--out"; png; "--data"; mnistDir ]
                Expect.equal code 1 "exit 1"
                Expect.stringContains err png "names the file"
                Expect.equal out "" "nothing was run"
            }
        ]
    ]
