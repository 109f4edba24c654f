/// The command line as a person at a terminal and a script meet it: the live status line and
/// Ctrl-C in a pseudo-terminal (tests/ptyrun.py), SIGTERM, the plot's panels and axes, the
/// status line's helpers and the tool's package.
module TerminalTests

open System
open System.Diagnostics
open System.IO
open System.Text.RegularExpressions
open Expecto
open Common

/// The CLI next to the tests (the project reference copies it with its runtimeconfig).
let cliDll = Path.Combine(AppContext.BaseDirectory, "Backprop.Cli.dll")

/// Whether python3 and its pty module are here (the pseudo-terminal tests need them).
let hasPty =
    lazy
        (try
            use p = Process.Start(ProcessStartInfo("python3", "-c \"import pty\"", RedirectStandardError = true))
            p.WaitForExit()
            p.ExitCode = 0
         with _ ->
             false)

/// Runs command in a pseudo-terminal `columns` wide, typing keys as `spec` says (see
/// tests/ptyrun.py), with the progress display left to decide for itself (no
/// BACKPROP_PROGRESS, no NO_COLOR, TERM=xterm): (exit status, everything the terminal got).
let inTerminal (columns: int) (spec: string) (command: string list) : int * string =
    if not hasPty.Value then skiptest "python3 with its pty module is not installed here"
    let transcript = Path.GetTempFileName()
    let psi = ProcessStartInfo("python3", RedirectStandardOutput = true, RedirectStandardError = true)
    for a in [ Path.Combine(repoRoot, "tests", "ptyrun.py"); transcript; string columns; spec; "--" ] @ command do
        psi.ArgumentList.Add a
    psi.Environment.Remove "BACKPROP_PROGRESS" |> ignore // the in-process tests set it to 0
    psi.Environment.Remove "NO_COLOR" |> ignore
    psi.Environment["TERM"] <- "xterm"
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    if p.ExitCode <> 0 then failtest $"ptyrun.py failed: {err.Result}"
    int (out.Trim()), File.ReadAllText transcript

/// `dotnet Backprop.Cli.dll args` as a command line for inTerminal.
let backprop (args: string list) = [ "dotnet"; cliDll ] @ args

/// The status lines drawn in a transcript: (step, the line's text), in order.
let statusLines (transcript: string) =
    [ for m in Regex.Matches(transcript, "\r(step ([0-9]+)/[0-9]+[^\r\n\u001b]*)\u001b\\[K") -> int m.Groups[2].Value, m.Groups[1].Value ]

/// The cursor is shown again after the last time it was hidden.
let cursorRestored (transcript: string) =
    let hidden = transcript.LastIndexOf "\u001b[?25l"
    hidden >= 0 && transcript.LastIndexOf "\u001b[?25h" > hidden

[<Tests>]
let tests =
    testSequencedGroup Common.console <| testList "cli terminal" [
        test "in a terminal: a live status line (refreshed within the first epoch, one line), epoch lines whole; Ctrl-C stops cleanly, exit 130" {
            let dir = Directory.CreateTempSubdirectory("backprop-pty-").FullName
            let model, metrics = Path.Combine(dir, "m.npz"), Path.Combine(dir, "h.json")
            // Ctrl-C as soon as the first epoch's line is out (the run is 5 epochs long). 1000
            // hidden units: an epoch long enough (seconds) for the refreshes to be counted.
            let code, transcript =
                inTerminal 70 "1:elapsed [0-9.]+s\r\n:\\x03" (backprop [ "train"; "--hidden"; "1000"; "--iters"; "3000"; "--save"; model; "--metrics"; metrics; "--data"; mnistDir ])
            Expect.equal code 130 $"exit code 130 (128 + SIGINT); the terminal got:\n{transcript}"
            let lines = statusLines transcript
            let firstEpoch = lines |> List.filter (fun (step, _) -> step >= 1 && step <= 600) |> List.distinct
            Expect.isGreaterThanOrEqual firstEpoch.Length 5 "refreshed at least 5 times within the first epoch (600 steps), step by step"
            Expect.isTrue (lines |> List.exists (fun (_, text) -> Regex.IsMatch(text, "loss [0-9.]+ +[0-9]+ steps/s +[0-9:]+ left"))) "a recent loss, rate and time left"
            for _, text in lines do
                Expect.isLessThan text.Length 70 $"one line at most in 70 columns: {text}"
            let epochLine = Regex.Match(transcript, "epoch 1  iter 600  train acc [^\r\n]*elapsed [0-9.]+s\r\n")
            Expect.isTrue epochLine.Success "the first epoch's line, whole (not wrapped at 70 columns)"
            Expect.isGreaterThan epochLine.Length 72 "(it is longer than the terminal is wide)"
            Expect.isTrue (cursorRestored transcript) "the cursor is shown again"
            let notice = Regex.Match(transcript, "backprop: interrupted by SIGINT after step ([0-9]+) of 3000")
            Expect.isTrue notice.Success "one line says so"
            let steps = int notice.Groups[1].Value
            Expect.isGreaterThanOrEqual steps 600 "stopped after the first epoch"
            let file = Backprop.Core.Npz.read model
            Expect.isTrue (file.Metadata["interrupted"].GetValue<bool>()) "the model file says it was interrupted"
            Expect.equal (file.Metadata["steps_trained"].GetValue<int>()) steps "after the steps trained"
            let json = Text.Json.JsonDocument.Parse(File.ReadAllText metrics).RootElement
            let last = json[json.GetArrayLength() - 1]
            Expect.equal (last.GetProperty("iteration").GetInt32()) steps "the metrics end with the partial epoch"
            Expect.isTrue (last.GetProperty("interrupted").GetBoolean()) "marked interrupted"
        }
        test "in a terminal: a second Ctrl-C quits at once, leaving the existing output file as it was" {
            let dir = Directory.CreateTempSubdirectory("backprop-pty-").FullName
            let model = Path.Combine(dir, "m.npz")
            File.WriteAllText(model, "the previous model")
            let code, transcript =
                inTerminal 100 "3:\rstep [1-9][0-9]*/:\\x03:0.05" (backprop [ "train"; "--hidden"; "300"; "--save"; model; "--data"; mnistDir ])
            Expect.equal code 130 "killed by the second SIGINT"
            Expect.equal (File.ReadAllText model) "the previous model" "the file is untouched"
            Expect.isTrue (cursorRestored transcript) "the cursor is shown again"
            Expect.isFalse (transcript.Contains "interrupted by") "no orderly ending"
        }
        test "in a terminal, train > log: the status line on the terminal, the plain lines in the log" {
            let dir = Directory.CreateTempSubdirectory("backprop-pty-").FullName
            let log = Path.Combine(dir, "log.txt")
            let command = String.Join(" ", backprop [ "train"; "--hidden"; "100"; "--iters"; "700"; "--data"; mnistDir ] |> List.map (fun a -> $"'{a}'"))
            let code, transcript = inTerminal 100 "-" [ "sh"; "-c"; $"{command} > '{log}'" ]
            Expect.equal code 0 "exit code"
            Expect.isNonEmpty (statusLines transcript) "the status line on the terminal (stderr)"
            Expect.isFalse (transcript.Contains "epoch 1  iter") "the epoch lines are not on the terminal"
            let text = File.ReadAllText log
            Expect.stringContains text "epoch 1  iter 600  train acc " "the log has the epoch lines"
            Expect.stringContains text "done: iterations 700" "and the summary"
            Expect.isFalse (text.Contains '\u001b' || text.Contains '\r') "and no escape sequences"
        }
        test "SIGTERM stops like Ctrl-C: what was trained evaluated and saved, exit 143" {
            let dir = Directory.CreateTempSubdirectory("backprop-term-").FullName
            let model = Path.Combine(dir, "m.npz")
            let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true)
            for a in [ cliDll; "train"; "--hidden"; "100"; "--save"; model; "--data"; mnistDir ] do
                psi.ArgumentList.Add a
            use p = Process.Start psi
            let err = p.StandardError.ReadToEndAsync()
            // The header's last line comes once the data is loaded, just before the first step.
            let mutable line = p.StandardOutput.ReadLine()
            while not (isNull line || line.StartsWith "  data ") do
                line <- p.StandardOutput.ReadLine()
            Threading.Thread.Sleep 1000
            use kill = Process.Start("kill", $"-TERM {p.Id}")
            kill.WaitForExit()
            let out = p.StandardOutput.ReadToEnd()
            p.WaitForExit()
            Expect.equal p.ExitCode 143 $"exit code 143 (128 + SIGTERM): {err.Result}"
            Expect.stringContains err.Result "backprop: interrupted by SIGTERM after step " "one line says so"
            Expect.stringContains out $"wrote: {model} (interrupted: the parameters after step " "the model written"
            Expect.equal ((Backprop.Core.Npz.read model).Metadata["stopped_by"].GetValue<string>()) "SIGTERM" "the file says so"
        }
        test "train started as its own executable relaunches itself once with the gen0 floor and tiered compilation off (same process id: SIGTERM still stops it, exit 143); a floor or tiering the user set is kept" {
            let apphost = Path.Combine(AppContext.BaseDirectory, "Backprop.Cli")
            if not (File.Exists apphost) || OperatingSystem.IsWindows() then skiptest "no Backprop.Cli executable beside the tests"
            let run (floor: string option) (stop: bool) (tiering: string option) =
                let psi = ProcessStartInfo(apphost, RedirectStandardOutput = true, RedirectStandardError = true)
                for a in [ "train"; "--hidden"; "100"; "--iters"; (if stop then "100000" else "5"); "--verbose"; "--data"; mnistDir ] do
                    psi.ArgumentList.Add a
                psi.Environment.Remove "DOTNET_GCgen0size" |> ignore
                psi.Environment.Remove "DOTNET_TieredCompilation" |> ignore
                floor |> Option.iter (fun f -> psi.Environment["DOTNET_GCgen0size"] <- f)
                tiering |> Option.iter (fun t -> psi.Environment["DOTNET_TieredCompilation"] <- t)
                use p = Process.Start psi
                let err = p.StandardError.ReadToEndAsync()
                let head = Text.StringBuilder()
                if stop then
                    let mutable line = p.StandardOutput.ReadLine()
                    while not (isNull line || line.StartsWith "  data ") do
                        head.AppendLine line |> ignore
                        line <- p.StandardOutput.ReadLine()
                    head.AppendLine line |> ignore
                    Threading.Thread.Sleep 500
                    use kill = Process.Start("kill", $"-TERM {p.Id}") // the id Process.Start saw: execve keeps it
                    kill.WaitForExit()
                let out = head.ToString() + p.StandardOutput.ReadToEnd()
                p.WaitForExit()
                p.ExitCode, out, err.Result
            let code, out, err = run None true None
            Expect.equal code 143 $"SIGTERM to the started process id stops the relaunched one: {err}"
            Expect.stringContains out "gen0 floor 0x2000000 (DOTNET_GCgen0size)" "the relaunched process has the floor"
            Expect.stringContains out "tiered compilation off (DOTNET_TieredCompilation)" "and tiering off"
            Expect.equal (Regex.Matches(out, "  data ").Count) 1 "the header once: the relaunch happens before anything is printed"
            Expect.stringContains out "region size default (DOTNET_GCRegionSize)" "784-100-10 keeps the default regions"
            let code, out, err = run (Some "0x1000000") false None
            Expect.equal code 0 $"exit code: {err}"
            Expect.stringContains out "gen0 floor 0x1000000 (DOTNET_GCgen0size)" "the user's floor kept"
            Expect.stringContains out "tiered compilation on (DOTNET_TieredCompilation)" "no relaunch: tiering as the runtime has it"
            let code, out, err = run None false (Some "1")
            Expect.equal code 0 $"exit code: {err}"
            Expect.stringContains out "gen0 floor 0x2000000 (DOTNET_GCgen0size)" "relaunched with the floor"
            Expect.stringContains out "tiered compilation on (DOTNET_TieredCompilation)" "the user's tiering kept"
        }
        test "train relaunches a wide network with 32 MB collector regions, a deep wide one with a 256 MB gen0 too, and a narrow one with neither" {
            let apphost = Path.Combine(AppContext.BaseDirectory, "Backprop.Cli")
            if not (File.Exists apphost) || OperatingSystem.IsWindows() then skiptest "no Backprop.Cli executable beside the tests"
            let settings (hidden: string list) =
                let psi = ProcessStartInfo(apphost, RedirectStandardOutput = true, RedirectStandardError = true)
                for a in [ "train"; "--hidden" ] @ hidden @ [ "--iters"; "2"; "--eval-sample"; "100"; "--verbose"; "--data"; mnistDir ] do
                    psi.ArgumentList.Add a
                for v in [ "DOTNET_GCgen0size"; "DOTNET_GCRegionSize"; "DOTNET_GCGen0MaxBudget" ] do psi.Environment.Remove v |> ignore
                use p = Process.Start psi
                let err = p.StandardError.ReadToEndAsync()
                let out = p.StandardOutput.ReadToEnd()
                p.WaitForExit()
                Expect.equal p.ExitCode 0 $"exit code: {err.Result}"
                let value (name: string) = Regex.Match(out, $"(\\S+) \\({name}\\)").Groups[1].Value
                value "DOTNET_GCRegionSize", value "DOTNET_GCgen0size", value "DOTNET_GCGen0MaxBudget"
            Expect.equal (settings [ "1000" ]) ("0x2000000", "0x2000000", "runtimeconfig's") "784-1000-10 (W1 3.1 MB): larger regions"
            Expect.equal (settings [ "50" ]) ("default", "0x2000000", "0x2000000") "the book's 784-50-10: the cap pinned at the floor"
            Expect.equal (settings [ "50"; "--optimizer"; "adam" ]) ("default", "0x2000000", "runtimeconfig's") "784-50-10 with Adam: runtimeconfig's cap"
            Expect.equal (settings [ "1000"; "1000" ]) ("0x2000000", "0x10000000", "0x10000000") "784-1000-1000-10 (7.2 MB of small-object weights): 256 MB gen0"
        }
        test "the width that asks for larger regions: the largest weight matrix from --hidden, --precision or --init-from's file" {
            let widest (args: string) = Backprop.Cli.Relaunch.widestWeights (args.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            // 784 inputs and 10 classes (MNIST); 4 bytes an entry, 8 in float64
            Expect.equal (widest "train") (784L * 50L * 4L) "the book's recipe: W1 is 784 x 50"
            Expect.equal (widest "train --hidden 1000 --iters 5") (784L * 1000L * 4L) "784-1000-10"
            Expect.equal (widest "train --hidden 100 2000 --precision double") (100L * 2000L * 8L) "W2 of 784-100-2000-10 is the largest"
            Expect.equal (widest "train --hidden --iters 5") (784L * 10L * 4L) "no hidden layer"
            Expect.equal (widest "evaluate --hidden 1000") 0L "only train"
            Expect.isTrue (Backprop.Cli.Relaunch.wide [| "train"; "--hidden"; "300"; "--precision"; "double" |]) "784-300-10 in float64: 1.9 MB"
            Expect.isFalse (Backprop.Cli.Relaunch.wide [| "train"; "--hidden"; "300" |]) "784-300-10 in float32: 0.94 MB"
            Expect.isFalse (Backprop.Cli.Relaunch.wide [| "train"; "--hidden"; "100"; "100"; "100"; "100"; "--precision"; "double" |]) "chapter 6's 784-100x4-10"
            let small (args: string) = Backprop.Cli.Relaunch.smallObjectWeights (args.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            // the matrices under the 4 MB (4,194,304-byte) large-object threshold, added up
            Expect.equal (small "train --hidden 1000 1000 1000 1000") (784L * 1000L * 4L + 3L * 1000L * 1000L * 4L + 1000L * 10L * 4L) "784-1000x4-10: all five"
            Expect.equal (small "train --hidden 2000") (2000L * 10L * 4L) "784-2000-10: W1 (6.3 MB) is a large object"
            Expect.equal (small "train --hidden 1000 1000 --precision double") (1000L * 10L * 8L) "784-1000-1000-10 in float64: W1 6.3 MB and W2 8 MB are large objects"
            Expect.isTrue (Backprop.Cli.Relaunch.deep [| "train"; "--hidden"; "1000"; "1000" |]) "784-1000-1000-10: 7.2 MB"
            Expect.isTrue (Backprop.Cli.Relaunch.deep [| "train"; "--hidden"; "500"; "500"; "500"; "500"; "--precision"; "double" |]) "784-500x4-10 in float64: 9.2 MB"
            Expect.isFalse (Backprop.Cli.Relaunch.deep [| "train"; "--hidden"; "1000"; "500" |]) "784-1000-500-10: 5.2 MB"
            Expect.isFalse (Backprop.Cli.Relaunch.deep [| "train"; "--hidden"; "1000" |]) "784-1000-10: 3.2 MB"
            Expect.isFalse (Backprop.Cli.Relaunch.deep [| "train"; "--hidden"; "100"; "100"; "100"; "100" |]) "chapter 6's 784-100x4-10"
            Expect.isFalse (Backprop.Cli.Relaunch.deep [| "evaluate"; "--hidden"; "1000"; "1000" |]) "only train"
            let pinned (args: string) = Backprop.Cli.Relaunch.pinnedBudget (args.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            Expect.isTrue (pinned "train") "the book's recipe"
            Expect.isTrue (pinned "train --hidden 100 100 100 100 --batch 128 --optimizer sgd --lr 0.05") "784-100x4-10, SGD, batch 128"
            Expect.isTrue (pinned "train --hidden 300 --iters 2000") "784-300-10 in float32 (W1 0.94 MB)"
            Expect.isFalse (pinned "train --hidden 300 --precision double") "784-300-10 in float64 is wide"
            Expect.isFalse (pinned "train --hidden 1000 1000") "deep"
            Expect.isFalse (pinned "train --batch 129") "a batch over 128"
            Expect.isFalse (pinned "train --batch many") "a batch train refuses"
            for option in [ "--optimizer adam"; "--weight-decay 0.1"; "--batchnorm"; "--dropout 0.5"; "--init-from model.npz" ] do
                Expect.isFalse (pinned $"train --hidden 100 100 100 100 {option}") $"{option}: the runtimeconfig's cap"
            Expect.isFalse (pinned "compare optimizers") "only train"
            let file = Path.GetTempFileName()
            try
                File.WriteAllBytes(file, Array.zeroCreate 2_000_000)
                Expect.equal (widest $"train --init-from {file}") 2_000_000L "a starting model: its length"
                Expect.equal (widest $"train --init-from {file} --hidden 50") (784L * 50L * 4L) "--hidden given: the sizes"
            finally
                File.Delete file
        }
        test "the status line's rate is recent, not the average since the start" {
            let rate = Backprop.Cli.Progress.RecentRate 3.0
            let mutable last = nan
            for k in 0 .. 100 do
                last <- rate.Add(0.1 * float k, 100 * k) // 1000 steps/s for 10 s
            Expect.floatClose Accuracy.medium last 1000.0 "fast"
            for k in 1 .. 60 do
                last <- rate.Add(10.0 + 0.1 * float k, 10000 + 10 * k) // then 100 steps/s for 6 s
            Expect.floatClose Accuracy.medium last 100.0 "the last 3 s only (the average since the start is 625)"
            Expect.equal (Backprop.Cli.Progress.clock 65.4) "1:05" "m:ss"
            Expect.equal (Backprop.Cli.Progress.clock 3725.0) "1:02:05" "h:mm:ss"
            Expect.equal (Backprop.Cli.Progress.bar 12 5 10) "[#####.....]" "a bar half full"
            Expect.equal (Backprop.Cli.Progress.scientific 2 2.638e-13) "2.64e-13" "two-digit exponents"
        }
        test "the plot: loss and accuracy in two panels, accuracy zoomed, integer iteration ticks, NaN steps marked, settings in the title" {
            let curves: Backprop.Cli.Plot.Curves =
                { Title = "784-50-10 relu, lr 0.1, batch 100, 5 iterations, seed 42"
                  Losses = [| 2.3; 2.1; nan; 1.8; infinity |]
                  Epochs = [ 5, 0.91, 0.93 ]
                  Sampled = false }
            let loss, accuracy = Backprop.Cli.Plot.build curves
            use loss = loss
            use accuracy = accuracy
            loss.RenderInMemory(1000, 400)
            accuracy.RenderInMemory(1000, 300)
            let limits = accuracy.Axes.GetLimits()
            Expect.isGreaterThan limits.Bottom 0.8 "the accuracy axis is zoomed to the values, not 0-1"
            Expect.isLessThan limits.Top 1.0 "the accuracy axis is zoomed to the values"
            Expect.isLessThanOrEqual limits.Bottom 0.91 "and shows them"
            Expect.isGreaterThanOrEqual limits.Top 0.93 "and shows them"
            for plot in [ loss; accuracy ] do
                let ticks = plot.Axes.Bottom.TickGenerator.Ticks |> Array.filter (fun t -> t.IsMajor) |> Array.map (fun t -> t.Position)
                Expect.isNonEmpty ticks "iteration ticks"
                for t in ticks do
                    Expect.equal t (Math.Round t) $"integer iteration ticks for a 5-step run, got {t}"
            let marked = loss.GetPlottables() |> Seq.choose (function :? ScottPlot.Plottables.VerticalLine as v -> Some v.X | _ -> None) |> List.ofSeq
            Expect.equal marked [ 3.0; 5.0 ] "the NaN and infinite steps are marked"
            Expect.stringContains loss.Axes.Title.Label.Text "lr 0.1, batch 100" "the run's settings in the title"
            let png = Backprop.Cli.Plot.png 1000 700 curves
            Expect.equal png[1..3] "PNG"B "a PNG"
            Expect.equal (Backprop.Cli.Plot.nonFiniteSteps curves.Losses) [| 3; 5 |] "steps counted from 1"
        }
        test "the tool package leaves out native libraries for unsupported platforms and their debugging symbols" {
            // What dotnet pack puts in the tool is the publish output: publish the built CLI.
            let out = Directory.CreateTempSubdirectory("backprop-publish-").FullName
            let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = repoRoot)
            for a in [ "publish"; "src/Cli/Cli.fsproj"; "-c"; "Release"; "--no-build"; "-o"; out ] do
                psi.ArgumentList.Add a
            use p = Process.Start psi
            let err = p.StandardError.ReadToEndAsync()
            let log = p.StandardOutput.ReadToEnd()
            p.WaitForExit()
            if p.ExitCode <> 0 && (log + err.Result).Contains "NETSDK1085" then skiptest "the CLI is not built in Release here"
            Expect.equal p.ExitCode 0 $"dotnet publish: {log} {err.Result}"
            let runtimes = Directory.GetDirectories(Path.Combine(out, "runtimes")) |> Array.map Path.GetFileName |> Array.sort
            Expect.equal runtimes [| "linux-arm64"; "linux-x64"; "osx"; "win-x64" |] "native libraries for the supported platforms only"
            let pdbs = Directory.GetFiles(Path.Combine(out, "runtimes"), "*.pdb", SearchOption.AllDirectories)
            Expect.isEmpty pdbs "no native debugging symbols"
            let bytes = DirectoryInfo(out).GetFiles("*", SearchOption.AllDirectories) |> Array.sumBy (fun f -> f.Length)
            Expect.isLessThan bytes (100L <<< 20) $"the tool is {bytes >>> 20} MB unpacked (it was 588 MB)"
        }
    ]
