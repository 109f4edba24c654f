/// The lens on training (Lens in Trace.fs, `train --inspect`): histograms against a naive count,
/// gradient norms against Network.gradient's arrays, update ratios against SGD's rule, and the
/// book's weight-initialisation experiment (ch06/weight_init_activation_histogram.py: five
/// sigmoid layers of 100 on 1000 random inputs) showing what its figures 6-10, 6-11 and 6-13 show.
module LensTests

open System
open System.IO
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

/// The book's input: 1000 samples of 100 values drawn from N(0, 1), from a fixed seed.
let private bookInput () =
    let rng = Random(7)
    Matrix<float>.Build.Dense(1000, 100, fun _ _ -> MathNet.Numerics.Distributions.Normal.Sample(rng, 0.0, 1.0))

/// The book's five hidden layers of 100 (and an output layer of 10 that the histograms skip).
let private bookLayers (activation: Activation) = Network.layers activation [ 100; 100; 100; 100; 100; 100; 10 ]

/// The lens of a model on the book's input at initialisation (no update: before = after).
let private atInit (model: Model<float>) =
    let x = bookInput ()
    (Lens.snapshot 0 0 model model model x (Labels.ClassIndices(Array.init 1000 (fun i -> i % 10)))).Activations

[<Tests>]
let tests =
    testList "lens" [
        test "histogram: the counts equal a naive count of the values in each bin (the last bin includes hi; outside and NaN are not counted)" {
            let rng = Random(3)
            let values = Array.append (Array.init 5000 (fun _ -> rng.NextDouble() * 1.4 - 0.2)) [| 0.0; 1.0; nan; -0.0 |]
            let counts = Lens.histogram 30 0.0 1.0 values
            let edge k = float k / 30.0
            let naive =
                Array.init 30 (fun k ->
                    values |> Array.filter (fun v -> v >= edge k && (v < edge (k + 1) || (k = 29 && v <= 1.0))) |> Array.length)
            Expect.equal counts naive "counts per bin"
            let inside = values |> Array.filter (fun v -> v >= 0.0 && v <= 1.0) |> Array.length
            Expect.equal (Array.sum counts) inside "every value in [0, 1], once"
            Expect.equal (Lens.histogram 4 -1.0 1.0 [| -1.0; -0.5; 0.0; 0.49; 1.0; 2.0 |]) [| 1; 1; 2; 1 |] "a small case by hand"
            Expect.throwsT<ArgumentException> (fun () -> Lens.histogram 3 1.0 1.0 [||] |> ignore) "an empty range is refused"
        }
        test "gradient norms equal the norms of Network.gradient's arrays; an SGD step's update norm is lr times the gradient norm" {
            let model: Model<float> = Network.init 5 0.1 (Network.layers Activation.ReLU [ 20; 8; 6; 3 ])
            let x = random 11 16 20
            let t = Labels.ClassIndices(Array.init 16 (fun i -> i % 3))
            let _, grads, _ = Network.gradient model x t
            let lr = 0.1
            let after = Network.withParameters model (List.map2 (fun (name, p) (_, g) -> name, Value.addScaled p -lr g) (Network.parameters model) grads)
            let s = Lens.snapshot 0 0 model model after x t
            Expect.equal (s.Parameters |> List.map (fun p -> p.Name)) [ "W1"; "b1"; "W2"; "b2"; "W3"; "b3" ] "every parameter, in order"
            for p, (name, g) in List.zip s.Parameters grads do
                // the naive norm: every element of the gradient's storage, squared and summed
                let naive = sqrt (Value.toRowMajor g |> Array.sumBy (fun v -> v * v))
                Expect.floatClose Accuracy.veryHigh p.GradientNorm naive $"|d{name}|"
                Expect.floatClose Accuracy.veryHigh p.UpdateNorm (lr * naive) $"|update of {name}| = lr |d{name}|"
                let w = sqrt (Value.toRowMajor (Network.parameters model |> List.find (fst >> (=) name) |> snd) |> Array.sumBy (fun v -> v * v))
                Expect.floatClose Accuracy.veryHigh p.WeightNorm w $"|{name}|"
                if name.StartsWith "W" then Expect.floatClose Accuracy.veryHigh p.UpdateRatio (lr * naive / w) $"{name}: ratio"
                else Expect.isTrue (Double.IsNaN p.UpdateRatio) $"{name} starts at 0: no ratio"
        }
        test "the book's figure 6-10 (std 1, sigmoid): the outputs crowd at 0 and 1, saturated" {
            let acts = atInit (Network.init 1 1.0 (bookLayers Activation.Sigmoid))
            Expect.equal (acts |> List.map (fun a -> a.Layer)) [ "Sigmoid1"; "Sigmoid2"; "Sigmoid3"; "Sigmoid4"; "Sigmoid5" ] "the five hidden layers"
            for a in acts do
                Expect.isGreaterThan (float (a.Counts[0] + a.Counts[29]) / 100000.0) 0.4 $"{a.Layer}: the end bins hold most outputs"
                Expect.isGreaterThan a.SaturatedFraction 0.3 $"{a.Layer}: saturated"
                Expect.isGreaterThan a.Std 0.35 $"{a.Layer}: spread to the ends"
        }
        test "the book's figure 6-11 (std 0.01, sigmoid): every layer's outputs near 0.5, no spread" {
            let acts = atInit (Network.init 1 0.01 (bookLayers Activation.Sigmoid))
            for a in acts do
                let middle = Array.sum a.Counts[12..17] // [0.4, 0.6), as the book's figure
                Expect.isGreaterThanOrEqual middle 99_990 $"{a.Layer}: (almost) all 100,000 outputs in [0.4, 0.6)"
                Expect.isLessThan a.Std 0.03 $"{a.Layer}: std"
                Expect.equal a.SaturatedFraction 0.0 $"{a.Layer}: nothing saturated"
        }
        test "the book's figure 6-13 (Xavier, sigmoid): spread over the range in every layer, little saturation" {
            let acts = atInit (Network.initWith WeightInit.Xavier 1 (bookLayers Activation.Sigmoid))
            for a in acts do
                Expect.isGreaterThan a.Std 0.1 $"{a.Layer}: std above the std-0.01 net's"
                Expect.isGreaterThanOrEqual (a.Counts |> Array.filter (fun c -> c > 1000) |> Array.length) 10 $"{a.Layer}: at least 10 of 30 bins hold a hundredth of the outputs"
                Expect.isLessThan a.SaturatedFraction 0.05 $"{a.Layer}: hardly saturated"
        }
        test "a dead ReLU layer: every unit off for every image, no gradient reaches its weights" {
            let model: Model<float> = Network.init 2 0.1 (Network.layers Activation.ReLU [ 20; 8; 3 ])
            // b1 = -100: the first layer's units never turn on
            let ps = Network.parameters model |> List.map (fun (n, v) -> if n = "b1" then n, Value.map (fun _ -> -100.0) v else n, v)
            let dead = Network.withParameters model ps
            let x = random 4 32 20
            let t = Labels.ClassIndices(Array.init 32 (fun i -> i % 3))
            let s = Lens.snapshot 1 10 dead dead dead x t
            let relu = s.Activations.Head
            Expect.equal (relu.Layer, relu.DeadUnits, relu.Units, relu.ZeroFraction) ("Relu1", 8, 8, 1.0) "all 8 units dead"
            Expect.equal relu.Counts[0] (32 * 8) "every output in the first bin"
            Expect.equal (s.Parameters |> List.find (fun p -> p.Name = "W1")).GradientNorm 0.0 "no gradient for W1"
            let alive = (Lens.snapshot 1 10 model model model x t).Activations.Head
            Expect.isLessThan alive.DeadUnits 8 "with b1 = 0 some units live"
        }
        testSequencedGroup Common.console <| test "train --inspect DIR writes the two CSV files and three PNGs; a file for DIR is refused" {
            let dir = Path.Combine(Directory.CreateTempSubdirectory("backprop-lens-").FullName, "lens")
            let code, out, err = CliTests.run [ "train"; "--iters"; "120"; "--batch"; "100"; "--eval-sample"; "500"; "--inspect"; dir; "--data"; mnistDir ]
            Expect.equal (code, err) (0, "") "train"
            for name in Backprop.Cli.Inspect.files do
                Expect.stringContains out $"wrote: {Path.Combine(dir, name)}" name
            let rows = File.ReadAllLines(Path.Combine(dir, "activations.csv"))
            // 120 steps of 600 per epoch: epoch 0 and the partial epoch 1; one ReLU layer
            Expect.equal (rows |> Array.map (fun r -> String.Join(",", r.Split(',')[0..2]))) [| "epoch,step,layer"; "0,0,Relu1"; "1,120,Relu1" |] "activations.csv"
            let counts = rows[1].Split(',')[11..] |> Array.map int
            Expect.equal (counts.Length, Array.sum counts) (30, 1000 * 50) "30 bins holding the 1000 probe images' 50 outputs"
            let ps = File.ReadAllLines(Path.Combine(dir, "parameters.csv"))
            Expect.equal ps.Length (1 + 2 * 4) "W1, b1, W2, b2 at epochs 0 and 1"
            Expect.stringStarts ps[1] "0,0,W1," "W1 first"
            for png in [ "activations.png"; "gradients.png"; "updates.png" ] do
                let bytes = File.ReadAllBytes(Path.Combine(dir, png))
                Expect.equal bytes[1..3] "PNG"B png
            let file = Path.Combine(dir, "activations.csv")
            let code, _, err = CliTests.run [ "train"; "--iters"; "1"; "--inspect"; file ]
            Expect.equal (code, err.Trim()) (2, $"backprop: --inspect {file}: that is a file; give a folder (created if missing)") "a file"
        }
    ]
