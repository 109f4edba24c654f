/// The command line, called in-process: its output lines and its one-line errors.
module CliTests

open System
open System.IO
open Expecto
open Backprop.Core
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

/// A writer that keeps, for each piece written, the seconds since it was made.
type StampedWriter() =
    inherit StringWriter()
    let clock = Diagnostics.Stopwatch.StartNew()
    let stamps = ResizeArray<float * string>()

    /// (seconds, text) of each write, in order.
    member _.Stamps = List.ofSeq stamps

    override w.Write(value: char) =
        stamps.Add((clock.Elapsed.TotalSeconds, string value))
        base.Write value

    override w.Write(value: string) =
        stamps.Add((clock.Elapsed.TotalSeconds, value))
        base.Write value

    override w.WriteLine(value: string) =
        stamps.Add((clock.Elapsed.TotalSeconds, value + "\n"))
        base.WriteLine value

/// A fresh temporary folder.
let scratchDir () = Directory.CreateTempSubdirectory("backprop-cli-").FullName

[<Tests>]
let tests =
    // In sequence: each test redirects the process's standard output and error (Console.SetOut).
    // (The settings the commands choose apply to their own run alone: other tests run meanwhile.)
    testSequencedGroup Common.console <| testList "cli" [
        test "the argument types pass Argu's structure check (the program skips it at start-up)" {
            // Argu raises ArguException for a malformed structure (duplicate names, a subcommand
            // with a bad shape, ...): Program.main creates its parser with checkStructure = false.
            let parser = Argu.ArgumentParser.Create<Backprop.Cli.Args.Command>(programName = "backprop", checkStructure = true)
            Expect.isNonEmpty (parser.GetSubCommandParsers()) "the subcommands are there"
        }
        test "train's options read in one pass equal Argu's own getters, the last of a repeated option included" {
            let parser = Argu.ArgumentParser.Create<Backprop.Cli.Args.TrainArgs>(programName = "backprop train")
            let lines =
                [ []
                  [ "--hidden"; "100"; "50"; "--iters"; "20"; "--verbose" ]
                  [ "--lr"; "0.5"; "--batch"; "7"; "--lr"; "0.25"; "--seed"; "3"; "--seed"; "4"; "--batchnorm"; "--dropout"; "0.2" ]
                  [ "--optimizer"; "adam"; "--beta1"; "0.8"; "--beta2"; "0.99"; "--weight-decay"; "0.1"; "--weight-init"; "he"
                    "--precision"; "double"; "--backend"; "managed"; "--input-storage"; "dense"; "--activation"; "tanh" ]
                  [ "--optimizer"; "rmsprop"; "--decay-rate"; "0.9"; "--momentum"; "0.5"; "--weight-init-std"; "0.05"; "--epochs"; "2"
                    "--eval-sample"; "10"; "--sampling"; "shuffle"; "--dataset"; "fashion"; "--data"; "d"; "--save"; "m.npz"
                    "--metrics"; "m.csv"; "--plot"; "p.png"; "--inspect"; "lens"; "--init-from"; "i.npz"; "--hidden"; "none" ] ]
            for line in lines do
                let args = parser.ParseCommandLine(Array.ofList line)
                let o = Backprop.Cli.Args.TrainOptions.ofResults args
                let at = String.Join(" ", line)
                Expect.equal o.Dataset (args.TryGetResult Backprop.Cli.Args.TrainArgs.Dataset) $"--dataset of '{at}'"
                Expect.equal o.Save (args.TryGetResult Backprop.Cli.Args.TrainArgs.Save) $"--save of '{at}'"
                Expect.equal o.InitFrom (args.TryGetResult Backprop.Cli.Args.TrainArgs.Init_From) $"--init-from of '{at}'"
                Expect.equal o.Sampling (args.TryGetResult Backprop.Cli.Args.TrainArgs.Sampling) $"--sampling of '{at}'"
                Expect.equal o.EvalSample (args.TryGetResult Backprop.Cli.Args.TrainArgs.Eval_Sample) $"--eval-sample of '{at}'"
                Expect.equal o.Metrics (args.TryGetResult Backprop.Cli.Args.TrainArgs.Metrics) $"--metrics of '{at}'"
                Expect.equal o.Plot (args.TryGetResult Backprop.Cli.Args.TrainArgs.Plot) $"--plot of '{at}'"
                Expect.equal o.Backend (args.TryGetResult Backprop.Cli.Args.TrainArgs.Backend) $"--backend of '{at}'"
                Expect.equal o.InputStorage (args.TryGetResult Backprop.Cli.Args.TrainArgs.Input_Storage) $"--input-storage of '{at}'"
                Expect.equal o.Precision (args.TryGetResult Backprop.Cli.Args.TrainArgs.Precision) $"--precision of '{at}'"
                Expect.equal o.Hidden (args.TryGetResult Backprop.Cli.Args.TrainArgs.Hidden) $"--hidden of '{at}'"
                Expect.equal o.Activation (args.TryGetResult Backprop.Cli.Args.TrainArgs.Activation) $"--activation of '{at}'"
                Expect.equal o.Batchnorm (args.Contains Backprop.Cli.Args.TrainArgs.Batchnorm) $"--batchnorm of '{at}'"
                Expect.equal o.Dropout (args.TryGetResult Backprop.Cli.Args.TrainArgs.Dropout) $"--dropout of '{at}'"
                Expect.equal o.Optimizer (args.TryGetResult Backprop.Cli.Args.TrainArgs.Optimizer) $"--optimizer of '{at}'"
                Expect.equal o.Lr (args.TryGetResult Backprop.Cli.Args.TrainArgs.Lr) $"--lr of '{at}'"
                Expect.equal o.Momentum (args.TryGetResult Backprop.Cli.Args.TrainArgs.Momentum) $"--momentum of '{at}'"
                Expect.equal o.Beta1 (args.TryGetResult Backprop.Cli.Args.TrainArgs.Beta1) $"--beta1 of '{at}'"
                Expect.equal o.Beta2 (args.TryGetResult Backprop.Cli.Args.TrainArgs.Beta2) $"--beta2 of '{at}'"
                Expect.equal o.DecayRate (args.TryGetResult Backprop.Cli.Args.TrainArgs.Decay_Rate) $"--decay-rate of '{at}'"
                Expect.equal o.WeightDecay (args.TryGetResult Backprop.Cli.Args.TrainArgs.Weight_Decay) $"--weight-decay of '{at}'"
                Expect.equal o.Batch (args.TryGetResult Backprop.Cli.Args.TrainArgs.Batch) $"--batch of '{at}'"
                Expect.equal o.Iters (args.TryGetResult Backprop.Cli.Args.TrainArgs.Iters) $"--iters of '{at}'"
                Expect.equal o.Epochs (args.TryGetResult Backprop.Cli.Args.TrainArgs.Epochs) $"--epochs of '{at}'"
                Expect.equal o.Seed (args.TryGetResult Backprop.Cli.Args.TrainArgs.Seed) $"--seed of '{at}'"
                Expect.equal o.WeightInit (args.TryGetResult Backprop.Cli.Args.TrainArgs.Weight_Init) $"--weight-init of '{at}'"
                Expect.equal o.WeightInitStd (args.TryGetResult Backprop.Cli.Args.TrainArgs.Weight_Init_Std) $"--weight-init-std of '{at}'"
                Expect.equal o.Data (args.TryGetResult Backprop.Cli.Args.TrainArgs.Data) $"--data of '{at}'"
                Expect.equal o.Verbose (args.Contains Backprop.Cli.Args.TrainArgs.Verbose) $"--verbose of '{at}'"
                Expect.equal o.Inspect (args.TryGetResult Backprop.Cli.Args.TrainArgs.Inspect) $"--inspect of '{at}'"
            // The repeated options of the third line: the last value counts.
            let o = Backprop.Cli.Args.TrainOptions.ofResults (parser.ParseCommandLine [| "--lr"; "0.5"; "--lr"; "0.25"; "--seed"; "3"; "--seed"; "4" |])
            Expect.equal (o.Lr, o.Seed) (Some 0.25, Some 4) "the last --lr and --seed"
        }
        test "demo prints the shopping numbers" {
            let code, out, _ = run [ "demo" ]
            Expect.equal code 0 "exit code"
            for line in [ "price: 220"; "dapple: 2.2"; "dapple_num: 110"; "dtax: 200"; "price: 715"; "dorange: 3.3"; "dorange_num: 165"; "dtax: 650" ] do
                Expect.stringContains out line line
        }
        test "train prints a three-line header, named per-epoch figures and a summary" {
            let code, out, err = run [ "train"; "--iters"; "40"; "--batch"; "50"; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "exit code and stderr"
            let lines = out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.stringStarts lines[0] "train: network 784-50-10 relu + softmax-with-loss, sgd lr 0.1, batch 50" "recipe"
            Expect.stringContains lines[0] "iterations 40 (1200 per epoch)" "iterations"
            Expect.stringContains lines[0] "seed 42" "seed"
            Expect.stringContains lines[1] "precision single" "float32 is the default"
            Expect.stringContains lines[2] (Path.GetFullPath mnistDir) "data directory"
            Expect.stringContains lines[2] "60000 training and 10000 test images" "the sets' sizes"
            for l in lines[0..2] do Expect.isLessThan l.Length 170 $"a short header line: {l}"
            Expect.stringStarts lines[3] "epoch 1  iter 40  train acc 0." "epoch line"
            Expect.stringContains lines[3] "test acc 0." "test accuracy named"
            Expect.stringStarts lines[4] "done: iterations 40, epochs 1, train acc 0." "summary"
            Expect.equal lines.Length 5 "nothing more"
            Expect.isFalse (out.Contains "garbage") "the collector's figures only with --verbose"
            let code, out, _ = run [ "train"; "--iters"; "5"; "--verbose"; "--data"; mnistDir ]
            Expect.equal code 0 "--verbose"
            Expect.stringContains out "garbage collections " "--verbose prints the collector's figures"
            Expect.stringContains out "second core: " "and the second core's"
        }
        test "train without --data reads the shipped MNIST (read ahead while the arguments are parsed): the same run as with --data" {
            let before = Environment.CurrentDirectory
            Environment.CurrentDirectory <- repoRoot // where data/mnist is found
            let shipped, given =
                try run [ "train"; "--iters"; "30"; "--verbose" ], run [ "train"; "--iters"; "30"; "--verbose"; "--data"; mnistDir ]
                finally Environment.CurrentDirectory <- before
            let code, out, err = shipped
            Expect.equal (code, err) (0, "") "exit code and stderr"
            Expect.stringContains out (Path.GetFullPath mnistDir) "the header names the shipped data"
            let figures (text: string) =
                text.Split('\n') |> Array.filter (fun l -> l.StartsWith "epoch" || l.StartsWith "done") |> Array.map (fun l -> l.Substring(0, l.IndexOf " elapsed"))
            let _, outGiven, _ = given
            Expect.equal (figures out) (figures outGiven) "the same losses and accuracies as with --data"
            Expect.equal (figures out).Length 2 "an epoch line and the summary"
        }
        test "gradcheck prints W1, b1, W2, b2 below 1e-9 with two-digit exponents, then ok" {
            let code, out, _ = run [ "gradcheck"; "--hidden"; "10"; "--data"; mnistDir ]
            Expect.equal code 0 "exit code"
            let lines = out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            let diffs = lines[1 .. lines.Length - 2] |> Array.map (fun l -> let p = l.Split(':') in p[0].Trim(), p[1].Trim().Split(' ')[0])
            Expect.equal (Array.map fst diffs) [| "W1"; "b1"; "W2"; "b2" |] "parameters"
            for name, d in diffs do
                Expect.isMatch d "^[0-9]\\.[0-9]{2}e-[0-9]{2}$" $"{name}: 2.64e-13, not 2.638e-013"
                Expect.isLessThan (float d) 1e-9 name
            Expect.equal (Array.last lines) "ok: every mean difference is below the tolerance 1e-07" "the verdict, against a stated tolerance"
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
            Expect.stringContains out ", inputs sparse (zero pixels skipped)\n" "the default for MNIST"
        }
        test "train says when the first layer runs dense on sparse inputs: 2 outputs in float32" {
            let code, out, err = run [ "train"; "--iters"; "3"; "--hidden"; "2"; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "exit code and stderr"
            Expect.stringContains out ", inputs sparse, but the first layer's products run dense on a copy of most batches (its 2 outputs are too few for the sparse kernels to pay)\n" "width 2"
        }
        test "bad options: one line naming the option, exit 2" {
            for args, expected in
                [ [ "train"; "--lr"; "-1" ], "--lr must be a positive number, got -1"
                  [ "train"; "--batch"; "0" ], "--batch must be a positive integer, got 0"
                  [ "train"; "--iters"; "10"; "--epochs"; "1" ], "give --iters or --epochs, not both"
                  [ "train"; "--hidden"; "50"; "-3" ], "--hidden must be a positive integer, got -3"
                  [ "train"; "--lr"; "abc" ], "parameter '--lr' must be followed by <rate>, but was 'abc'"
                  [ "train"; "--bogus" ], "unrecognized argument: '--bogus'"
                  [ "train"; "--hidden" ], "--hidden needs at least one size (e.g. --hidden 50, or --hidden 100 50), or none for no hidden layer"
                  [ "train"; "--hidden"; "50"; "none" ], "--hidden none stands alone"
                  [ "trian" ], "unrecognized argument: 'trian'. did you mean 'train'?"
                  [ "train"; "--iter"; "5" ], "unrecognized argument: '--iter'. did you mean '--iters'?"
                  [ "train"; "--sampling"; "shufle" ], "did you mean 'shuffle'?"
                  [ "evaluate"; "--modle"; "m.npz" ], "did you mean '--model'?"
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
        test "--metrics writes one schema as CSV and JSON (snake_case, sampled, interrupted) and says what it wrote" {
            let dir = Directory.CreateTempSubdirectory("backprop-cli-").FullName
            for name in [ "h.csv"; "h.json" ] do
                let file = Path.Combine(dir, name)
                let code, out, _ = run [ "train"; "--iters"; "120"; "--batch"; "1000"; "--eval-sample"; "500"; "--metrics"; file; "--data"; mnistDir ]
                Expect.equal code 0 name
                Expect.stringContains out $"wrote: {file}{Environment.NewLine}" $"{name}: named once written"
            let csv = File.ReadAllLines(Path.Combine(dir, "h.csv"))
            let columns = [| "epoch"; "iteration"; "train_acc"; "test_acc"; "loss"; "seconds"; "sampled"; "interrupted" |]
            Expect.equal csv[0] (String.Join(",", columns)) "header"
            Expect.equal csv.Length 3 "60 steps an epoch: two epochs"
            Expect.stringStarts csv[2] "2,120," "second epoch"
            Expect.stringEnds csv[2] ",true,false" "sampled (--eval-sample), not interrupted"
            let json = Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "h.json"))).RootElement
            Expect.equal (json.GetArrayLength()) 2 "two epochs in JSON"
            let keys = [| for p in json[1].EnumerateObject() -> p.Name |]
            Expect.equal keys columns "the JSON keys are the CSV columns, in order"
            Expect.equal (json[1].GetProperty("iteration").GetInt32()) 120 "JSON history"
            Expect.isTrue (json[1].GetProperty("sampled").GetBoolean()) "sampled"
            Expect.isFalse (json[1].GetProperty("interrupted").GetBoolean()) "not interrupted"
            let csvAcc = float (csv[2].Split(',')[3])
            Expect.equal (json[1].GetProperty("test_acc").GetDouble()) csvAcc "the same values"
            let code, _, err = run [ "train"; "--metrics"; Path.Combine(dir, "h.txt"); "--data"; mnistDir ]
            Expect.equal (code, err.Trim()) (2, $"""backprop: --metrics {Path.Combine(dir, "h.txt")}: give a .csv or .json file""") "bad extension"
        }
        test "--eval-sample: the accuracies printed say they are sampled" {
            let code, out, _ = run [ "train"; "--iters"; "60"; "--batch"; "1000"; "--eval-sample"; "500"; "--data"; mnistDir ]
            Expect.equal code 0 "exit code"
            let lines = out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.stringContains lines[2] "on the first 500 images of each set only (sampled)" "the header says how accuracy is measured"
            Expect.stringStarts lines[3] "epoch 1  iter 60  sampled train acc 0." "epoch line"
            Expect.stringContains lines[3] "  sampled test acc 0." "epoch line, test"
            Expect.stringContains lines[4] "sampled train acc 0." "summary"
            Expect.stringContains lines[4] "sampled test acc 0." "summary, test"
            let _, out, _ = run [ "train"; "--iters"; "5"; "--data"; mnistDir ]
            Expect.isFalse (out.Contains "sampled") "whole sets: not labelled"
        }
        test "--plot writes a PNG of the curves; predict reads the shipped PNG digits" {
            let dir = Directory.CreateTempSubdirectory("backprop-cli-").FullName
            let png = Path.Combine(dir, "curves.png")
            let model = Path.Combine(dir, "m.npz")
            let code, out, err = run [ "train"; "--iters"; "1200"; "--plot"; png; "--save"; model; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "train"
            Expect.stringContains out $"wrote: {png}{Environment.NewLine}" "--plot says what it wrote"
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
        test "help and version: bare backprop, -h, --help, help, help CMD, --version; --opt=value" {
            for args in [ []; [ "-h" ]; [ "--help" ]; [ "help" ] ] do
                let code, out, err = run args
                Expect.equal (code, err) (0, "") $"%A{args}: exit 0, nothing on stderr"
                Expect.stringContains out "USAGE: backprop" $"%A{args}: the usage"
                Expect.stringContains out "examples:" $"%A{args}: examples first"
                for command in [ "train"; "gradcheck"; "evaluate"; "predict"; "demo" ] do
                    Expect.stringContains out command $"%A{args}: {command}"
            for args in [ [ "help"; "train" ]; [ "train"; "-h" ] ] do
                let code, out, _ = run args
                Expect.equal code 0 $"%A{args}"
                Expect.stringContains out "USAGE: backprop train" $"%A{args}: train's usage"
                Expect.stringContains out "--hidden" $"%A{args}: its options"
            let code, out, err = run [ "--version" ]
            Expect.equal (code, err) (0, "") "--version"
            Expect.isMatch (out.Trim()) "^backprop [0-9]+\\.[0-9]+\\.[0-9]+" "the assembly's version"
            let code, out, err = run [ "train"; "--iters=5"; "--batch=10"; "--data=" + mnistDir ]
            Expect.equal (code, err) (0, "") "--opt=value"
            Expect.stringContains out "iterations 5 " "--iters=5 read"
            Expect.stringContains out "batch 10 " "--batch=10 read"
        }
        test "--hidden none: softmax regression (784-10), said so" {
            let code, out, _ = run [ "train"; "--hidden"; "none"; "--iters"; "5"; "--data"; mnistDir ]
            Expect.equal code 0 "exit code"
            Expect.stringStarts out "train: network 784-10 (no hidden layer) + softmax-with-loss" "no hidden layer"
        }
        test "--batch larger than the training set: noted with replacement, refused for shuffle and sequential" {
            let data = MnistTests.scratch 4 2
            let code, _, err = run [ "train"; "--batch"; "5"; "--iters"; "1"; "--data"; data ]
            Expect.equal code 0 "with replacement: legal (as numpy's choice)"
            Expect.stringContains err "--batch 5 is more than the 4 training images; batches are drawn with replacement" "and said"
            for sampling in [ "shuffle"; "sequential" ] do
                let code, out, err = run [ "train"; "--batch"; "5"; "--iters"; "1"; "--sampling"; sampling; "--data"; data ]
                Expect.equal (code, out) (2, "") $"{sampling}: a usage error, before training"
                Expect.stringContains err $"--batch 5 is more than the 4 training images, and --sampling {sampling} takes each image once an epoch" sampling
                Expect.equal (err.TrimEnd().Split('\n').Length) 1 $"{sampling}: one line"
        }
        test "--lr 1e9: the NaN loss stops the run (exit 1, one line naming the step); --save keeps the last finite parameters" {
            let dir = scratchDir ()
            let model = Path.Combine(dir, "m.npz")
            let metrics = Path.Combine(dir, "h.csv")
            let code, out, err = run [ "train"; "--lr"; "1e9"; "--iters"; "600"; "--save"; model; "--metrics"; metrics; "--data"; mnistDir ]
            Expect.equal code 1 "exit code 1"
            let lines = err.TrimEnd().Split('\n')
            Expect.equal lines.Length 1 "one line on stderr"
            Expect.isMatch lines[0] "^backprop: the loss became NaN at step [0-9]+: training stopped; try a lower --lr" "names the step, suggests a lower --lr"
            let step = int (Text.RegularExpressions.Regex.Match(lines[0], "step ([0-9]+)").Groups[1].Value)
            Expect.isLessThan step 600 "stopped at once"
            Expect.stringContains out $"wrote: {model} (the parameters after step " "says which parameters it kept"
            let file = Backprop.Core.Npz.read model
            match file.Model with
            | Backprop.Core.SavedModel.Single m ->
                for name, v in Backprop.Core.Network.parameters m do
                    Expect.isTrue (Backprop.Core.Value.storage v |> Array.forall Single.IsFinite) $"{name} finite"
            | Backprop.Core.SavedModel.Double _ -> failtest "float32 expected"
            Expect.equal (file.Metadata["diverged_at_step"].GetValue<int>()) step "the file says where the run diverged"
            Expect.isLessThan (file.Metadata["steps_trained"].GetValue<int>()) step "and holds an earlier step's parameters"
            Expect.stringContains (File.ReadAllText metrics) "NaN" "the history shows the NaN loss"
        }
        test "--lr 1e6: a loss above the first step's and accuracy at chance are warned about" {
            let code, _, err = run [ "train"; "--lr"; "1e6"; "--epochs"; "3"; "--batch"; "1000"; "--eval-sample"; "1000"; "--data"; mnistDir ]
            Expect.equal code 0 "a finite loss: the run goes on"
            Expect.stringContains err "backprop: warning: epoch 1's mean loss" "loss above the initial loss"
            Expect.stringContains err "is above the first step's loss" "loss above the initial loss"
            Expect.stringContains err "backprop: warning: after 3 epochs the sampled test accuracy" "accuracy at chance"
            Expect.stringContains err "is at chance (1/10)" "accuracy at chance"
        }
        test "evaluate and predict --index read only the test files" {
            let dir = scratchDir ()
            let model = Path.Combine(dir, "m.npz")
            let code, out, _ = run [ "train"; "--iters"; "5"; "--save"; model; "--data"; mnistDir ]
            Expect.equal code 0 "train"
            Expect.stringContains out $"wrote: {model}{Environment.NewLine}" "--save says what it wrote"
            let meta = (Backprop.Core.Npz.read model).Metadata
            Expect.equal (meta["learning_rate"].GetValueKind()) Text.Json.JsonValueKind.Number "meta values are typed: a number"
            Expect.equal (meta["interrupted"].GetValueKind()) Text.Json.JsonValueKind.False "interrupted: false"
            let testOnly = Directory.CreateDirectory(Path.Combine(dir, "test-only")).FullName
            for name in [ "t10k-images-idx3-ubyte.gz"; "t10k-labels-idx1-ubyte.gz" ] do
                File.Copy(Path.Combine(mnistDir, name), Path.Combine(testOnly, name))
            let code, out, err = run [ "evaluate"; "--model"; model; "--data"; testOnly ]
            Expect.equal (code, err) (0, "") "evaluate with the test files alone"
            Expect.stringContains out "10000 test images" "all of them"
            let code, out, err = run [ "predict"; "--model"; model; "--index"; "0"; "--data"; testOnly ]
            Expect.equal (code, err) (0, "") "predict --index with the test files alone"
            Expect.stringStarts out "test image 0 (label 7)" "test image 0"
        }
        test "predict --json and --no-render" {
            let dir = scratchDir ()
            let model = Path.Combine(dir, "m.npz")
            let code, _, _ = run [ "train"; "--iters"; "100"; "--save"; model; "--data"; mnistDir ]
            Expect.equal code 0 "train"
            let code, out, _ = run [ "predict"; "--model"; model; "--index"; "0"; "--no-render"; "--data"; mnistDir ]
            Expect.equal code 0 "--no-render"
            Expect.equal (out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length) 2 "the prediction and the top three, no drawing"
            let sample = Path.Combine(repoRoot, "data", "samples", "digit-7-test0.png")
            let code, out, _ = run [ "predict"; "--model"; model; "--index"; "0"; "--json"; "--data"; mnistDir; sample ]
            Expect.equal code 0 "--json"
            let json = Text.Json.JsonDocument.Parse(out).RootElement
            Expect.equal (json.GetArrayLength()) 2 "one object per input"
            let first = json[0]
            Expect.equal (first.GetProperty("input").GetString()) "test image 0" "input"
            Expect.equal (first.GetProperty("label").GetInt32()) 7 "label"
            let p = [| for v in first.GetProperty("probabilities").EnumerateArray() -> v.GetDouble() |]
            Expect.equal p.Length 10 "ten probabilities"
            let predicted = first.GetProperty("predicted").GetInt32()
            Expect.equal predicted (Array.findIndex ((=) (Array.max p)) p) "predicted: the most probable class"
            Expect.equal (first.GetProperty("class").GetString()) (string predicted) "class name"
            Expect.floatClose Accuracy.medium (Array.sum p) 1.0 "they sum to 1"
            Expect.equal (json[1].GetProperty("input").GetString()) sample "a file"
            Expect.equal (json[1].GetProperty("label").ValueKind) Text.Json.JsonValueKind.Null "no label for a file"
        }
        test "gradcheck prints each parameter as it finishes, not all at the end" {
            let out = new StampedWriter()
            let oldOut = Console.Out
            Environment.SetEnvironmentVariable("BACKPROP_PROGRESS", "0")
            Console.SetOut out
            let code =
                try Backprop.Cli.Program.main [| "gradcheck"; "--activation"; "sigmoid"; "--hidden"; "1"; "1000"; "--data"; mnistDir |]
                finally Console.SetOut oldOut
            Expect.equal code 0 "exit code"
            let stamps = out.Stamps
            let at (prefix: string) = stamps |> List.find (fun (_, text) -> text.StartsWith prefix) |> fst
            let start, first, last = at "gradcheck:", at "W1 ", at "ok:"
            // W1 has 784 entries, W3 10,000: W1's line comes within the first tenth of the check.
            Expect.isLessThan (first - start) (0.5 * (last - start)) $"W1 printed at %.2f{first - start}s of %.2f{last - start}s"
        }
        test "the README's quick start says the first run builds silently for a while" {
            let readme = File.ReadAllText(Path.Combine(repoRoot, "README.md"))
            let quickStart = readme.Substring(readme.IndexOf "## Quick start", 1500)
            Expect.stringContains quickStart "The first `dotnet run` builds the project" "the wait is announced"
        }
    ]
