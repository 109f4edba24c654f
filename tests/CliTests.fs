/// The command line, called in-process: its output lines and its one-line errors.
module CliTests

open System
open System.IO
open Expecto
open Common

/// Runs `backprop args` in-process and returns (exit code, stdout, stderr).
let run (args: string list) =
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
    testSequenced <| testList "cli" [
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
        test "bad options: one line naming the option, exit 2" {
            for args, expected in
                [ [ "train"; "--lr"; "-1" ], "--lr must be a positive number, got -1"
                  [ "train"; "--batch"; "0" ], "--batch must be a positive integer, got 0"
                  [ "train"; "--iters"; "10"; "--epochs"; "1" ], "give --iters or --epochs, not both"
                  [ "train"; "--hidden"; "50"; "-3" ], "--hidden must be a positive integer, got -3"
                  [ "train"; "--lr"; "abc" ], "parameter '--lr' must be followed by <rate>, but was 'abc'"
                  [ "train"; "--bogus" ], "unrecognized argument: '--bogus'"
                  [ "gradcheck"; "--count"; "0" ], "--count must be a positive integer, got 0" ] do
                let code, _, err = run args
                Expect.equal code 2 $"exit code of %A{args}"
                Expect.stringContains err expected $"message of %A{args}"
                Expect.equal (err.TrimEnd().Split('\n').Length) 1 $"one line for %A{args}"
        }
        test "--help goes to stdout with exit 0" {
            let code, out, _ = run [ "train"; "--help" ]
            Expect.equal code 0 "exit code"
            for option in [ "--hidden"; "--lr"; "--batch"; "--iters"; "--epochs"; "--seed"; "--data" ] do
                Expect.stringContains out option option
        }
    ]
