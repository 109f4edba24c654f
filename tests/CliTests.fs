/// The command line, called in-process: its output lines and its one-line errors.
module CliTests

open System
open System.IO
open Expecto
open Common

/// Runs `backprop args` in-process and returns (exit code, stdout, stderr).
let run (args: string list) =
    Environment.SetEnvironmentVariable("BACKPROP_PROGRESS", "0") // plain lines even when the suite runs in a terminal
    let out, err = new StringWriter(), new StringWriter()
    let oldOut, oldErr = Console.Out, Console.Error
    Console.SetOut out
    Console.SetError err
    try
        let code = Backprop.Cli.Program.main (Array.ofList args)
        code, out.ToString(), err.ToString()
    finally
        Console.SetOut oldOut
        Console.SetError oldErr

[<Tests>]
let tests =
    // In sequence: each test redirects the process's standard output and error (Console.SetOut).
    // (The settings the commands choose apply to their own run alone: other tests run meanwhile.)
    testSequencedGroup Common.console <| testList "cli" [
        test "demo prints the shopping numbers" {
            let code, out, _ = run [ "demo" ]
            Expect.equal code 0 "exit code"
            for line in [ "price: 220"; "dapple: 2.2"; "dapple_num: 110"; "dtax: 200"; "price: 715"; "dorange: 3.3"; "dorange_num: 165"; "dtax: 650" ] do
                Expect.stringContains out line line
        }
        test "train prints its recipe, named per-epoch figures and a summary" {
            let code, out, err = run [ "train"; "--iters"; "40"; "--batch"; "50"; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "exit code and stderr"
            let lines = out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.stringStarts lines[0] "train: network 784-50-10 relu + softmax-with-loss, lr 0.1, batch 50" "recipe"
            Expect.stringContains lines[0] "iterations 40 (1200 per epoch)" "iterations"
            Expect.stringContains lines[0] "seed 42" "seed"
            Expect.stringContains lines[0] "precision single" "float32 is the default"
            Expect.stringContains lines[0] (Path.GetFullPath mnistDir) "data directory"
            Expect.stringStarts lines[1] "epoch 1  iter 40  train acc 0." "epoch line"
            Expect.stringContains lines[1] "test acc 0." "test accuracy named"
            Expect.stringStarts lines[2] "done: iterations 40, epochs 1, train acc 0." "summary"
        }
        test "gradcheck prints W1, b1, W2, b2 below 1e-9" {
            let code, out, _ = run [ "gradcheck"; "--hidden"; "10"; "--data"; mnistDir ]
            Expect.equal code 0 "exit code"
            let diffs =
                out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.skip 1
                |> Array.map (fun l -> let p = l.Split(':') in p[0].Trim(), float (p[1].Trim()))
            Expect.equal (Array.map fst diffs) [| "W1"; "b1"; "W2"; "b2" |] "parameters"
            for name, d in diffs do Expect.isLessThan d 1e-9 name
        }
        test "bad data: one line on stderr naming the file, exit 1, no stack trace" {
            let dir = MnistTests.scratch 4 2
            File.WriteAllBytes(Path.Combine(dir, "train-images-idx3-ubyte"), [| 0uy; 0uy; 8uy; 3uy; 0uy; 0uy; 0uy; 4uy |])
            let code, out, err = run [ "train"; "--data"; dir ]
            Expect.equal code 1 "exit code"
            Expect.equal out "" "nothing on stdout"
            let path = Path.Combine(dir, "train-images-idx3-ubyte")
            Expect.equal err $"backprop: {path}: truncated: 8 bytes, shorter than the 16-byte IDX header{Environment.NewLine}" "one line"
        }
        test "train names the input storage: sparse for MNIST by default" {
            // (--input-storage dense is not run here: it would switch the process-wide setting
            // while other tests gather images; SparseTests checks the dense and sparse paths agree)
            let code, out, err = run [ "train"; "--iters"; "20"; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "exit code and stderr"
            Expect.stringContains out ", inputs sparse (zero pixels skipped)," "the default for MNIST"
        }
        test "bad options: one line naming the option, exit 2" {
            for args, expected in
                [ [ "train"; "--lr"; "-1" ], "--lr must be a positive number, got -1"
                  [ "train"; "--batch"; "0" ], "--batch must be a positive integer, got 0"
                  [ "train"; "--iters"; "10"; "--epochs"; "1" ], "give --iters or --epochs, not both"
                  [ "train"; "--hidden"; "50"; "-3" ], "--hidden must be a positive integer, got -3"
                  [ "train"; "--lr"; "abc" ], "parameter '--lr' must be followed by <rate>, but was 'abc'"
                  [ "train"; "--bogus" ], "unrecognized argument: '--bogus'"
                  [ "gradcheck"; "--count"; "0" ], "--count must be a positive integer, got 0"
                  [ "train"; "--input-storage"; "csr" ], "parameter '--input-storage' must be followed by <auto|dense|sparse>, but was 'csr'" ] do
                let code, _, err = run args
                Expect.equal code 2 $"exit code of %A{args}"
                Expect.stringContains err expected $"message of %A{args}"
                Expect.equal (err.TrimEnd().Split('\n').Length) 1 $"one line for %A{args}"
        }
        test "evaluate prints accuracy, precision and recall, and the confusion matrix of a saved model" {
            let path = Path.Combine(Directory.CreateTempSubdirectory("backprop-cli-").FullName, "m.npz")
            let code, out, _ = run [ "train"; "--iters"; "600"; "--save"; path; "--data"; mnistDir ]
            Expect.equal code 0 "train"
            let trained = out.Split('\n') |> Array.find (fun l -> l.StartsWith "done:")
            let code, out, err = run [ "evaluate"; "--model"; path; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "evaluate"
            let acc = out.Split('\n') |> Array.find (fun l -> l.StartsWith "test acc ")
            Expect.stringContains trained acc "the saved model scores what training reported, to the last digit"
            Expect.stringContains out "confusion matrix (rows: true class, columns: predicted class)" "matrix title"
            let rows = out.Split('\n') |> Array.skipWhile (fun l -> not (l.StartsWith "confusion")) |> Array.skip 2 |> Array.truncate 10
            let total = rows |> Array.sumBy (fun r -> r.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> Array.skip 1 |> Array.sumBy int)
            Expect.equal total 10000 "every test image counted once"
            let code, out, _ = run [ "predict"; "--model"; path; "--index"; "0"; "--data"; mnistDir ]
            Expect.equal code 0 "predict"
            Expect.stringStarts out "test image 0 (label 7): predicted 7" "the first test image is a 7"
            Expect.equal (out.Split('\n') |> Array.filter (fun l -> l.StartsWith "  |")).Length 28 "28 rows of rendering"
            // the same digit as a PGM file, on a white background and twice the size
            let _, test = mnist.Force()
            let pgm = Path.Combine(Path.GetDirectoryName path, "seven.pgm")
            let big = Array.init (56 * 56) (fun k -> 255uy - test.Pixels[(k / 56 / 2) * 28 + (k % 56) / 2])
            File.WriteAllBytes(pgm, Array.append (Text.Encoding.ASCII.GetBytes "P5\n# a seven\n56 56\n255\n") big)
            let code, out, _ = run [ "predict"; "--model"; path; pgm ]
            Expect.equal code 0 "predict a file"
            Expect.stringStarts out $"{pgm}: predicted 7" "the file is read, scaled and inverted"
            let code, _, err = run [ "predict"; "--model"; path; "--index"; "10000"; "--data"; mnistDir ]
            Expect.equal (code, err.Trim()) (2, "backprop: --index must be between 0 and 9999, got 10000") "bad index"
            let code, _, err = run [ "evaluate"; "--model"; "/no/such.npz" ]
            Expect.equal (code, err.Trim()) (1, "backprop: /no/such.npz: model file not found") "missing model"
            let code, _, err = run [ "predict"; "--model"; path; mnistDir + "/SHA256SUMS" ]
            Expect.equal code 1 "not an image"
            Expect.stringContains err "SHA256SUMS: not an image SkiaSharp can decode" "what is wrong"
            // a model for 784 inputs against 2 x 2 images: refused in one line, before any product
            let small = MnistTests.scratch 4 2
            let code, out, err = run [ "evaluate"; "--model"; path; "--data"; small ]
            Expect.equal (code, out) (1, "") "evaluate with images of another size"
            Expect.equal err $"backprop: {path}: the model takes 784 inputs, the images of {small} have 4 pixels{Environment.NewLine}" "one line"
        }
        test "--save, --metrics and --plot naming a folder are refused before training" {
            let folder = Directory.CreateTempSubdirectory("backprop-cli-").FullName
            for option in [ "--save"; "--metrics"; "--plot" ] do
                let code, out, err = run [ "train"; option; folder; "--data"; mnistDir ]
                Expect.equal (code, out) (2, "") $"{option}: usage error, nothing trained"
                Expect.equal err $"backprop: {option} {folder}: that is a folder; give a file name{Environment.NewLine}" $"{option}: one line"
        }
        test "--metrics writes the per-epoch history as CSV and JSON" {
            let dir = Directory.CreateTempSubdirectory("backprop-cli-").FullName
            for name in [ "h.csv"; "h.json" ] do
                let code, _, _ = run [ "train"; "--iters"; "120"; "--batch"; "1000"; "--eval-sample"; "500"; "--metrics"; Path.Combine(dir, name); "--data"; mnistDir ]
                Expect.equal code 0 name
            let csv = File.ReadAllLines(Path.Combine(dir, "h.csv"))
            Expect.equal csv[0] "epoch,iteration,train_acc,test_acc,loss,seconds" "header"
            Expect.equal csv.Length 3 "60 steps an epoch: two epochs"
            Expect.stringStarts csv[2] "2,120," "second epoch"
            let json = File.ReadAllText(Path.Combine(dir, "h.json"))
            Expect.stringContains json "\"Iteration\": 120" "JSON history"
            let code, _, err = run [ "train"; "--metrics"; Path.Combine(dir, "h.txt"); "--data"; mnistDir ]
            Expect.equal (code, err.Trim()) (2, $"""backprop: --metrics {Path.Combine(dir, "h.txt")}: give a .csv or .json file""") "bad extension"
        }
        test "--plot writes a PNG of the curves; predict reads the shipped PNG digits" {
            let dir = Directory.CreateTempSubdirectory("backprop-cli-").FullName
            let png = Path.Combine(dir, "curves.png")
            let model = Path.Combine(dir, "m.npz")
            let code, _, err = run [ "train"; "--iters"; "1200"; "--plot"; png; "--save"; model; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "train"
            let bytes = File.ReadAllBytes png
            Expect.equal bytes[1..3] "PNG"B "a PNG file"
            Expect.isGreaterThan bytes.Length 20000 "with curves, axes, labels and legend drawn (an empty plot is far smaller)"
            let samples = Directory.GetFiles(Path.Combine(repoRoot, "data", "samples"), "*.png") |> Array.sort
            Expect.equal samples.Length 5 "five shipped digits"
            let code, out, _ = run ([ "predict"; "--model"; model ] @ List.ofArray samples)
            Expect.equal code 0 "predict"
            for file in samples do
                let label = Path.GetFileName(file).Split('-')[1]
                Expect.stringContains out $"{file}: predicted {label}" $"{Path.GetFileName file}"
        }
        test "--dataset fashion trains on Fashion-MNIST and names its classes (where Debian's package is installed)" {
            if not (Directory.Exists "/usr/share/datasets/fashion-mnist") then
                requireOrSkip "Fashion-MNIST is not installed here (apt-get install dataset-fashion-mnist); CI installs it"
            let model = Path.Combine(Directory.CreateTempSubdirectory("backprop-cli-").FullName, "f.npz")
            let code, out, _ = run [ "train"; "--dataset"; "fashion"; "--iters"; "600"; "--save"; model ]
            Expect.equal code 0 "train"
            Expect.stringContains out "data /usr/share/datasets/fashion-mnist" "the Debian location"
            let acc = out.Split('\n') |> Array.find (fun l -> l.StartsWith "done:") |> fun l -> float ((l.Split("test acc ")[1]).Split(',')[0])
            Expect.isGreaterThan acc 0.75 "one epoch on Fashion-MNIST"
            let code, out, _ = run [ "predict"; "--model"; model; "--index"; "0" ]
            Expect.equal code 0 "predict"
            Expect.stringStarts out "test image 0 (label 9 Ankle boot)" "class names, from the model's data set"
        }
        test "--help goes to stdout with exit 0" {
            let code, out, _ = run [ "train"; "--help" ]
            Expect.equal code 0 "exit code"
            for option in [ "--hidden"; "--lr"; "--batch"; "--iters"; "--epochs"; "--seed"; "--data" ] do
                Expect.stringContains out option option
        }
    ]
