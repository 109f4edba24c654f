/// Pipeline.epochsWatchedFrom: the run of Pipeline.epochsFrom with hooks for a live display.
module WatchedRunTests

open Expecto
open Backprop.Core
open Common

[<Tests>]
let tests =
    testList "watched run" [
        test "the same reports as epochsFrom, each step and each evaluated report seen once, in order" {
            let train, test = mnist.Force()
            let sub, testSub = Dataset.take 600 train, Dataset.take 300 test
            let config = { Training.bookRecipe with BatchSize = 20; Iterations = 95; Seed = 3 }
            let initial: Model<float32> = Network.init 42 0.01 Training.bookNetwork
            let strip (r: EpochReport<float32>) = r.Epoch, r.Iteration, r.Losses, r.TrainAccuracy, r.TestAccuracy
            let plain = Pipeline.epochsFrom config sub testSub (Training.start initial) |> Seq.map strip |> Seq.toList
            let steps = ResizeArray()
            let seen = ResizeArray()
            let watched =
                Pipeline.epochsWatchedFrom config sub testSub (Training.start initial) (fun s loss -> steps.Add((s.Step, loss)); true) (fun r -> lock seen (fun () -> seen.Add(strip r)))
                |> Seq.map strip
                |> Seq.toList
            Expect.equal watched plain "the same epochs, losses and accuracies"
            Expect.equal (List.ofSeq seen) plain "each report passed to onEvaluated, evaluated"
            Expect.equal (steps |> Seq.map fst |> List.ofSeq) [ 1 .. 95 ] "every step, in order"
            Expect.equal (steps |> Seq.map snd |> Array.ofSeq) (plain |> List.map (fun (_, _, l, _, _) -> l) |> Array.concat) "with its loss"
        }
        test "onStep returning false stops the run after that step, with a partial last epoch" {
            let train, test = mnist.Force()
            let sub, testSub = Dataset.take 600 train, Dataset.take 300 test
            let config = { Training.bookRecipe with BatchSize = 20; Iterations = 95 }
            let initial: Model<float> = Network.init 42 0.01 Training.bookNetwork
            let reports = Pipeline.epochsWatchedFrom config sub testSub (Training.start initial) (fun s _ -> s.Step < 40) ignore |> Seq.toList
            Expect.equal (reports |> List.map (fun r -> r.Epoch, r.Iteration)) [ 1, 30; 2, 40 ] "30 steps an epoch; stopped after step 40"
            Expect.isTrue (System.Double.IsFinite (List.last reports).TestAccuracy) "the partial epoch is evaluated"
            let full = Pipeline.epochsFrom config sub testSub (Training.start initial) |> Seq.toList
            Expect.equal (List.last reports).Losses full[1].Losses[0..9] "the steps taken are the full run's"
        }
    ]
