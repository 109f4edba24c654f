/// Chapter 6 at the command line: train's optimizer, initialization, weight decay, BatchNorm and
/// Dropout options, resuming a saved run exactly, and evaluate, predict and gradcheck on such
/// models; and the two-core run with any optimizer (Pipeline.epochsWatchedFromWith) against the
/// plain fold (Run.epochsWith).
module Ch06CliTests

open System
open System.IO
open Expecto
open Backprop.Core
open Common

/// The lines of a command's output, without empty ones.
let private linesOf (out: string) = out.Split('\n', StringSplitOptions.RemoveEmptyEntries)

/// The figure after `name ` in the `done:` line of train's output ("test acc 0.9123, ...").
let private doneFigure (name: string) (out: string) =
    let line = linesOf out |> Array.find (fun l -> l.StartsWith "done:")
    (line.Split(name + " ")[1]).Split(',')[0]

/// Every numeric array of two model files (parameters, states, optimizer state) equal, bit for
/// bit (float32 values read as float64 are exact), and the same names.
let private expectSameArrays (what: string) (a: string) (b: string) =
    let x, y = Npz.readAll a, Npz.readAll b
    Expect.equal (x |> Map.toList |> List.map fst) (y |> Map.toList |> List.map fst) $"{what}: the same arrays"
    for KeyValue(name, (shape, values)) in x do
        let shape', values' = y[name]
        Expect.equal shape shape' $"{what}: {name}'s shape"
        Expect.isTrue (Array.forall2 (fun (u: float) v -> BitConverter.DoubleToInt64Bits u = BitConverter.DoubleToInt64Bits v) values values') $"{what}: {name} bit for bit"

/// The parameter lines of gradcheck's output: name, mean difference, and either the relative
/// error or (for a bias right before BatchNorm) the two gradients' norms.
let private gradcheckLines (out: string) =
    linesOf out
    |> Array.filter (fun l -> not (l.StartsWith "gradcheck:" || l.StartsWith "ok:" || l.StartsWith "FAILED:"))
    |> Array.map (fun l ->
        let name, rest = l.Substring(0, l.IndexOf ':').Trim(), l.Substring(l.IndexOf ':' + 1).Trim()
        let words = rest.Split(' ', StringSplitOptions.RemoveEmptyEntries)
        if rest.Contains "zero before BatchNorm" then name, float words[0], None, Some(float (words[5].TrimEnd ','), float words[6])
        else name, float words[0], Some(float words[2]), None)

[<Tests>]
let cliTests =
    testSequencedGroup Common.console <| testList "chapter 6 cli" [
        test "bad chapter 6 options: one line naming the option, exit 2, before any training" {
            for args, expected in
                [ [ "train"; "--optimizer"; "adam"; "--momentum"; "0.9" ], "--momentum does not apply to --optimizer adam (it belongs to momentum and nesterov)"
                  [ "train"; "--beta1"; "0.9" ], "--beta1 does not apply to --optimizer sgd (it belongs to adam)"
                  [ "train"; "--optimizer"; "momentum"; "--decay-rate"; "0.9" ], "--decay-rate does not apply to --optimizer momentum (it belongs to rmsprop)"
                  [ "train"; "--optimizer"; "momentum"; "--momentum"; "1" ], "--momentum must be in [0, 1), got 1"
                  [ "train"; "--optimizer"; "nesterov"; "--momentum"; "-0.1" ], "--momentum must be in [0, 1), got -0.1"
                  [ "train"; "--optimizer"; "adam"; "--beta1"; "0" ], "--beta1 must be in (0, 1), got 0"
                  [ "train"; "--optimizer"; "adam"; "--beta2"; "NaN" ], "--beta2 must be in (0, 1), got NaN"
                  [ "train"; "--optimizer"; "rmsprop"; "--decay-rate"; "1" ], "--decay-rate must be in (0, 1), got 1"
                  [ "train"; "--optimizer"; "adam"; "--lr"; "0" ], "--lr must be a positive number, got 0"
                  [ "train"; "--optimizer"; "adagrad"; "--lr"; "1e999" ], "--lr must be a positive number, got "
                  [ "train"; "--weight-decay"; "-0.1" ], "--weight-decay must be a finite number >= 0, got -0.1"
                  [ "train"; "--weight-decay"; "NaN" ], "--weight-decay must be a finite number >= 0, got NaN"
                  [ "train"; "--dropout"; "1" ], "--dropout must be in [0, 1), got 1"
                  [ "train"; "--dropout"; "-0.5" ], "--dropout must be in [0, 1), got -0.5"
                  [ "train"; "--weight-init"; "kaiming" ], "--weight-init must be a positive number, xavier, sigmoid, he or relu, got 'kaiming'"
                  [ "train"; "--weight-init"; "0" ], "--weight-init must be a positive number, xavier, sigmoid, he or relu, got '0'"
                  [ "train"; "--weight-init"; "he"; "--weight-init-std"; "0.1" ], "give --weight-init or --weight-init-std, not both"
                  [ "train"; "--weight-init-std"; "-1" ], "--weight-init-std must be a positive number, got -1"
                  [ "train"; "--optimizer"; "adamw" ], "did you mean 'adam'?"
                  [ "train"; "--activation"; "tahn" ], "did you mean 'tanh'?"
                  [ "gradcheck"; "--batchnorm"; "--count"; "3" ], "--count 3 with --batchnorm: give 4 or more"
                  [ "gradcheck"; "--dropout"; "1.5" ], "--dropout must be in [0, 1), got 1.5"
                  [ "gradcheck"; "--weight-decay"; "-1" ], "--weight-decay must be a finite number >= 0, got -1"
                  [ "gradcheck"; "--weight-init"; "xavir" ], "--weight-init must be a positive number, xavier, sigmoid, he or relu, got 'xavir'" ] do
                // (--iters 1: were a value wrongly accepted, the run would stay short)
                let args = if args.Head = "train" then args @ [ "--iters"; "1"; "--data"; mnistDir ] else args @ [ "--data"; mnistDir ]
                let code, out, err = CliTests.run args
                Expect.equal (code, out) (2, "") $"exit code 2 and nothing trained for %A{args}"
                Expect.stringContains err expected $"message of %A{args}"
                Expect.equal (err.TrimEnd().Split('\n').Length) 1 $"one line for %A{args}"
        }
        test "the header names the optimizer and its hyperparameters, the initial weights, weight decay, BatchNorm and Dropout" {
            for args, first, second in
                [ [ "--hidden"; "20"; "--optimizer"; "adam"; "--weight-init"; "he"; "--weight-decay"; "0.01"; "--batchnorm"; "--dropout"; "0.2" ],
                  "train: network 784-20-10 relu + batchnorm + dropout 0.2 + softmax-with-loss, adam lr 0.001 beta1 0.9 beta2 0.999 + weight decay 0.01, batch 100",
                  "  weights He N(0, 2/n), precision single"
                  [ "--optimizer"; "momentum"; "--activation"; "tanh"; "--weight-init"; "xavier" ],
                  "train: network 784-50-10 tanh + softmax-with-loss, momentum lr 0.01 momentum 0.9, batch 100",
                  "  weights Xavier N(0, 1/n), precision single"
                  [ "--optimizer"; "rmsprop"; "--lr"; "0.005"; "--decay-rate"; "0.9"; "--weight-init-std"; "0.05"; "--precision"; "double" ],
                  "train: network 784-50-10 relu + softmax-with-loss, rmsprop lr 0.005 decay_rate 0.9, batch 100",
                  "  weights N(0, 0.05^2), precision double"
                  [ "--optimizer"; "nesterov"; "--momentum"; "0.5"; "--weight-init"; "relu"; "--hidden"; "30"; "20" ],
                  "train: network 784-30-20-10 relu + softmax-with-loss, nesterov lr 0.01 momentum 0.5, batch 100",
                  "  weights He N(0, 2/n)"
                  [ "--optimizer"; "adagrad"; "--weight-decay"; "0.1"; "--dropout"; "0"; "--weight-init"; "sigmoid"; "--activation"; "sigmoid" ],
                  "train: network 784-50-10 sigmoid + dropout 0 + softmax-with-loss, adagrad lr 0.01 + weight decay 0.1, batch 100",
                  "  weights Xavier N(0, 1/n)"
                  [ "--optimizer"; "sgd" ], "train: network 784-50-10 relu + softmax-with-loss, sgd lr 0.1, batch 100", "  weights N(0, 0.01^2), precision single" ] do
                let code, out, err = CliTests.run ([ "train"; "--iters"; "3"; "--eval-sample"; "10"; "--data"; mnistDir ] @ args)
                Expect.equal (code, err) (0, "") $"%A{args} ran"
                let lines = linesOf out
                Expect.stringStarts lines[0] first $"the recipe line of %A{args}"
                Expect.stringStarts lines[1] second $"the start line of %A{args}"
                Expect.stringStarts lines[3] "epoch 1  iter 3  sampled train acc " $"three header lines, then the epoch of %A{args}"
        }
        test "--init-from a saved run resumes it: N steps, saved, then M more equal N + M steps in one run, bit for bit" {
            let dir = CliTests.scratchDir ()
            for name, options in
                [ "sgd (the book's recipe)", []
                  "adam, batchnorm, dropout 0.5", [ "--hidden"; "30"; "20"; "--optimizer"; "adam"; "--batchnorm"; "--dropout"; "0.5"; "--weight-init"; "he" ]
                  "momentum, weight decay, shuffle, float64", [ "--optimizer"; "momentum"; "--weight-decay"; "0.1"; "--sampling"; "shuffle"; "--batch"; "64"; "--precision"; "double"; "--hidden"; "20" ]
                  "rmsprop, tanh, sequential", [ "--optimizer"; "rmsprop"; "--activation"; "tanh"; "--sampling"; "sequential"; "--hidden"; "20" ] ] do
                let file (f: string) = Path.Combine(dir, $"""{name.Replace(' ', '_').Replace(",", "")}-{f}.npz""")
                let run (args: string list) =
                    let code, out, err = CliTests.run ([ "train"; "--eval-sample"; "100"; "--data"; mnistDir ] @ args)
                    Expect.equal (code, err) (0, "") $"{name}: %A{args}"
                    out
                run (options @ [ "--iters"; "37"; "--save"; file "first" ]) |> ignore
                let resumed = run [ "--init-from"; file "first"; "--iters"; "29"; "--save"; file "resumed" ]
                run (options @ [ "--iters"; "66"; "--save"; file "whole" ]) |> ignore
                expectSameArrays name (file "resumed") (file "whole")
                Expect.stringContains resumed $"""resumed from {file "first"} after step 37""" $"{name}: the header says where it resumes"
                Expect.stringContains resumed "done: iterations 66" $"{name}: the steps count on from the file's"
                let meta = (Npz.read (file "resumed")).Metadata
                Expect.equal (meta["step"].GetValue<int>()) 66 $"{name}: the file holds the step count"
                // the control (SGD keeps no state, so only the batches can differ): the same 29
                // steps from the saved parameters with the batches drawn from the start of the
                // stream (a file without the step count) end elsewhere
                if options.IsEmpty then
                    let restarted = file "restarted"
                    match Npz.load (file "first") with
                    | SavedModel.Single m -> Npz.save restarted m []
                    | SavedModel.Double m -> Npz.save restarted m []
                    run [ "--init-from"; restarted; "--iters"; "29"; "--save"; file "restarted-out" ] |> ignore
                    let restartedW1, wholeW1 = (Npz.readAll (file "restarted-out")).["W1"], (Npz.readAll (file "whole")).["W1"]
                    Expect.notEqual restartedW1 wholeW1 $"{name}: the batches must continue, not restart"
        }
        test "--init-from: another optimizer or architecture is refused in one line; hyperparameters given win" {
            let dir = CliTests.scratchDir ()
            let saved = Path.Combine(dir, "adam.npz")
            let code, _, _ = CliTests.run [ "train"; "--hidden"; "20"; "--optimizer"; "adam"; "--batchnorm"; "--iters"; "5"; "--eval-sample"; "10"; "--save"; saved; "--data"; mnistDir ]
            Expect.equal code 0 "saved an adam run"
            for args, expected in
                [ [ "--optimizer"; "sgd" ], $"--optimizer sgd and --init-from {saved}: the model file was trained with adam and holds its state; leave --optimizer out to resume it"
                  [ "--batchnorm" ], $"--batchnorm and --init-from {saved}: the model file sets the layers"
                  [ "--dropout"; "0.1" ], $"--dropout and --init-from {saved}: the model file sets the layers"
                  [ "--weight-init"; "he" ], $"--weight-init and --init-from {saved}: the model file sets the weights"
                  [ "--activation"; "tanh" ], $"--activation and --init-from {saved}: the model file sets the activation"
                  [ "--momentum"; "0.9" ], "--momentum does not apply to --optimizer adam (it belongs to momentum and nesterov)" ] do
                let code, out, err = CliTests.run ([ "train"; "--init-from"; saved; "--iters"; "1"; "--data"; mnistDir ] @ args)
                Expect.equal (code, out) (2, "") $"%A{args}: refused before training"
                Expect.equal (err.Trim()) $"backprop: {expected}" $"%A{args}: one line"
            let code, out, err = CliTests.run [ "train"; "--init-from"; saved; "--beta1"; "0.8"; "--weight-decay"; "0.5"; "--iters"; "2"; "--eval-sample"; "10"; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "the same optimizer with other hyperparameters"
            let header = (linesOf out).[0]
            Expect.stringContains header "adam lr 0.001 beta1 0.8 beta2 0.999 + weight decay 0.5" "the ones given win, the rest are the file's"
        }
        test "evaluate and predict on a saved BatchNorm + Dropout model: inference mode, the accuracy train reported" {
            let dir = CliTests.scratchDir ()
            let model = Path.Combine(dir, "bn.npz")
            let code, out, err = CliTests.run [ "train"; "--hidden"; "50"; "--optimizer"; "adam"; "--batchnorm"; "--dropout"; "0.5"; "--weight-init"; "he"; "--iters"; "300"; "--save"; model; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "train"
            let trained = doneFigure "test acc" out
            Expect.isGreaterThan (float trained) 0.85 "300 Adam steps learn (a model that did not would prove little)"
            let code, out, err = CliTests.run [ "evaluate"; "--model"; model; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "evaluate"
            Expect.stringContains out "(784-50-10 relu + batchnorm + dropout 0.5)" "the model described"
            Expect.stringContains out $"test acc {trained}\n" "the accuracy train reported, to the last digit"
            let code, out, err = CliTests.run [ "predict"; "--model"; model; "--index"; "0"; "--json"; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "predict --json"
            let json = Text.Json.JsonDocument.Parse(out).RootElement[0]
            let p = [| for v in json.GetProperty("probabilities").EnumerateArray() -> v.GetDouble() |]
            Expect.floatClose Accuracy.medium (Array.sum p) 1.0 "probabilities sum to 1"
            Expect.equal (json.GetProperty("predicted").GetInt32()) 7 "test image 0 is a 7"
            // the file's model, in-process, in inference mode: the same probabilities
            let _, test = mnist.Force()
            let image = Array.init 784 (fun j -> float32 test.Pixels[j] / 255.0f)
            match Npz.load model with
            | SavedModel.Single m ->
                let ours = Interop.Api.Probabilities(m, image)
                for c in 0 .. 9 do
                    Expect.floatClose { absolute = 1e-6; relative = 1e-6 } p[c] (float ours[c]) $"class {c}"
                Expect.notEqual (Network.predict m (Dataset.images test [| 0 .. 99 |])) (let s, _, _ = Network.forward Mode.Train m (Dataset.images test [| 0 .. 99 |]) in s) "inference differs from training mode (running statistics, scaling instead of masks)"
            | SavedModel.Double _ -> failtest "float32 expected"
        }
        test "gradcheck on BatchNorm, Dropout, tanh and weight-decay networks: every relative error below 1e-7" {
            for args, hidden in
                [ [ "--batchnorm"; "--hidden"; "20"; "20" ], 2
                  [ "--dropout"; "0.5"; "--activation"; "tanh"; "--hidden"; "20"; "20" ], 2
                  [ "--activation"; "tanh"; "--weight-decay"; "0.1"; "--hidden"; "20" ], 1
                  [ "--batchnorm"; "--dropout"; "0.3"; "--activation"; "tanh"; "--weight-decay"; "0.05"; "--count"; "6"; "--hidden"; "20"; "20" ], 2 ] do
                let code, out, err = CliTests.run ([ "gradcheck"; "--data"; mnistDir ] @ args)
                Expect.equal (code, err) (0, "") $"%A{args}: exit 0"
                Expect.stringEnds (out.TrimEnd()) "ok: every mean difference is below the tolerance 1e-07" $"%A{args}: the verdict"
                let lines = gradcheckLines out
                let names = lines |> Array.map (fun (n, _, _, _) -> n)
                let batchNorm = List.contains "--batchnorm" args
                let expected =
                    [| for k in 1 .. hidden do
                           yield $"W{k}"
                           yield $"b{k}"
                           if batchNorm then
                               yield $"gamma{k}"
                               yield $"beta{k}"
                       yield $"W{hidden + 1}"
                       yield $"b{hidden + 1}" |]
                Expect.equal names expected $"%A{args}: every parameter checked"
                for name, mean, relative, norms in lines do
                    Expect.isLessThan mean 1e-7 $"%A{args}: {name}'s mean difference"
                    match relative, norms with
                    | Some r, _ ->
                        Expect.isLessThan r 1e-7 $"%A{args}: {name}'s relative error"
                        Common.note $"""[measured] gradcheck {String.Join(" ", args)}: {name} relative error %.3g{r}"""
                    | None, Some(a, b) ->
                        Expect.isTrue (batchNorm && name.StartsWith "b") $"%A{args}: {name}: only a bias before BatchNorm has zero gradient"
                        Expect.isLessThan (max a b) 1e-9 $"%A{args}: {name}'s gradients are zero"
                    | None, None -> failtest "unreachable"
        }
        test "gradcheck's relative error shows what the mean difference hides: BatchNorm after weights of 0.01 (hence its N(0, 1) default)" {
            let code, out, _ = CliTests.run [ "gradcheck"; "--batchnorm"; "--weight-init"; "0.01"; "--hidden"; "10"; "--data"; mnistDir ]
            Expect.equal code 0 "the book's measure, the mean difference, passes"
            let _, mean, relative, _ = gradcheckLines out |> Array.find (fun (n, _, _, _) -> n = "W1")
            Expect.isLessThan mean 1e-7 "W1's mean difference"
            Expect.isGreaterThan relative.Value 1e-7 "W1's relative error: the step h against the curvature that small weights give BatchNorm"
        }
    ]

[<Tests>]
let pipelineTests =
    testList "pipeline with an optimizer" [
        test "Pipeline.epochsWatchedFromWith (two cores) gives exactly the reports of Run.epochsWith, Adam + weight decay, BatchNorm + Dropout" {
            let train, test = mnist.Force()
            let sub, testSub = Dataset.take 600 train, Dataset.take 300 test
            let config = { Training.bookRecipe with BatchSize = 20; Iterations = 95; Seed = 3 }
            let optimizer: Optimizer<float32> = Optimizer.chain [ Optimizer.weightDecay 0.01; Optimizer.adam 0.001 0.9 0.999 ]
            let initial: Model<float32> = Network.initWith WeightInit.He 42 (Network.extended Activation.ReLU [ 784; 40; 30; 10 ] true (Some 0.5))
            let strip (r: EpochReport<float32>) = r.Epoch, r.Iteration, r.Losses, r.TrainAccuracy, r.TestAccuracy
            let plain = Run.epochsWith optimizer config sub testSub (Training.startWith optimizer initial) |> Seq.toList
            let steps = ResizeArray()
            let piped = Pipeline.epochsWatchedFromWith optimizer config sub testSub (Training.startWith optimizer initial) (fun s _ -> steps.Add s.Step; true) ignore |> Seq.toList
            Expect.equal (List.map strip piped) (List.map strip plain) "the same epochs, losses and accuracies"
            Expect.equal (plain |> List.map (fun r -> r.Epoch, r.Iteration)) [ 1, 30; 2, 60; 3, 90; 4, 95 ] "four epochs"
            Expect.equal (List.ofSeq steps) [ 1 .. 95 ] "every step watched"
            Expect.equal (Network.parameters (List.last piped).Model) (Network.parameters (List.last plain).Model) "the same parameters"
            Expect.equal (Network.states (List.last piped).Model) (Network.states (List.last plain).Model) "the same running statistics and keys"
            Expect.equal (List.last piped).State.Optimizer (List.last plain).State.Optimizer "the same Adam moments"
        }
        test "Pipeline.epochsWith (two cores, no hooks) gives exactly the reports of Run.epochsWith, Nesterov in float64, BatchNorm" {
            let train, test = mnist.Force()
            let sub, testSub = Dataset.take 500 train, Dataset.take 200 test
            let config = { Training.bookRecipe with BatchSize = 25; Iterations = 50; Seed = 11 }
            let optimizer: Optimizer<float> = Optimizer.nesterov 0.01 0.9
            let initial: Model<float> = Network.initWith WeightInit.He 5 (Network.extended Activation.ReLU [ 784; 20; 10 ] true None)
            let strip (r: EpochReport<float>) = r.Epoch, r.Iteration, r.Losses, r.TrainAccuracy, r.TestAccuracy
            let plain = Run.epochsWith optimizer config sub testSub (Training.startWith optimizer initial) |> Seq.toList
            let piped = Pipeline.epochsWith optimizer config sub testSub (Training.startWith optimizer initial) |> Seq.toList
            Expect.equal (plain |> List.map (fun r -> r.Epoch, r.Iteration)) [ 1, 20; 2, 40; 3, 50 ] "three epochs, the last partial"
            Expect.equal (List.map strip piped) (List.map strip plain) "the same epochs, losses and accuracies"
            Expect.equal (Network.parameters (List.last piped).Model) (Network.parameters (List.last plain).Model) "the same parameters"
            Expect.equal (List.last piped).State.Optimizer (List.last plain).State.Optimizer "the same velocities"
        }
        test "from a state after N steps it continues the batches: N then M steps equal N + M, the losses too" {
            let train, test = mnist.Force()
            let sub, testSub = Dataset.take 600 train, Dataset.take 300 test
            let config = { Training.bookRecipe with BatchSize = 20; Seed = 5; EvalSample = Some 50 }
            let optimizer: Optimizer<float> = Optimizer.momentum 0.01 0.9
            let initial: Model<float> = Network.initWith WeightInit.Xavier 7 (Network.extended Activation.Tanh [ 784; 30; 10 ] true (Some 0.2))
            let whole = Run.epochsWith optimizer { config with Iterations = 70 } sub testSub (Training.startWith optimizer initial) |> Seq.toList
            let first = Run.epochsWith optimizer { config with Iterations = 41 } sub testSub (Training.startWith optimizer initial) |> Seq.last
            let rest = Pipeline.epochsWatchedFromWith optimizer { config with Iterations = 29 } sub testSub first.State (fun _ _ -> true) ignore |> Seq.toList
            Expect.equal (List.last rest).Iteration 70 "the steps count on from the state's"
            Expect.equal (Network.parameters (List.last rest).Model) (Network.parameters (List.last whole).Model) "the same parameters as one run"
            Expect.equal (Network.states (List.last rest).Model) (Network.states (List.last whole).Model) "the same states"
            let wholeLosses = whole |> List.toArray |> Array.collect (fun r -> r.Losses)
            Expect.equal (rest |> List.toArray |> Array.collect (fun r -> r.Losses)) wholeLosses[41..] "steps 42 to 70 had the same batches"
            // Pipeline.epochsWatchedBy with the book's SGD step: the chapter 5 run (Run.epochsFrom)
            let sgd = Pipeline.epochsWatchedBy (Training.step 0.1) { config with Iterations = 70 } sub testSub (Training.start initial) (fun _ _ -> true) ignore |> Seq.last
            let book = Run.epochsFrom { config with Iterations = 70; LearningRate = 0.1 } sub testSub (Training.start initial) |> Seq.last
            Expect.equal (Network.parameters sgd.Model) (Network.parameters book.Model) "epochsWatchedBy (Training.step lr) is chapter 5's run"
        }
    ]
