/// The optimizers of chapter 6 (6.1) against the book's own numpy classes
/// (tests/fixtures/ch06/optimizers.json), their composition, and the step that uses them.
module OptimizerTests

open System
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common
open Ch06Fixtures

let private fixture = lazy (json "optimizers.json")

/// The six optimizers at the book's defaults, each by its fixture name.
let private six: (string * Optimizer<float>) list =
    [ "sgd", Optimizer.sgd 0.01
      "momentum", Optimizer.momentum 0.01 0.9
      "nesterov", Optimizer.nesterov 0.01 0.9
      "adagrad", Optimizer.adaGrad 0.01
      "rmsprop", Optimizer.rmsprop 0.01 0.99
      "adam", Optimizer.adam 0.001 0.9 0.999 ]

/// A small random model's worth of named parameters and gradients.
let private randomNamed seed : Named<float> =
    [ "W1", Value.Matrix(random seed 3 4); "b1", Value.Vector(vector [ 0.1; -0.2; 0.3; 0.0 ]); "W2", Value.Matrix(random (seed + 1) 4 2); "b2", Value.Vector(vector [ 0.5; -0.5 ]) ]

[<Tests>]
let tests =
    testList "optimizers (6.1)" [
        testList "the book's first three updates (optimizers.json), float64, to 1e-12 relative" [
            for name, optimizer in six ->
                test $"{name}" {
                    let f = fixture.Force()
                    let order = f.["key_order"].AsArray() |> Seq.map (fun v -> v.GetValue<string>()) |> List.ofSeq
                    let case = f.["optimizers"].[name]
                    // The defaults are the book's: the fixture's hyperparameters, by the same names.
                    let hyper = case.["hyper"].AsObject() |> Seq.map (fun kv -> kv.Key, kv.Value.GetValue<float>()) |> List.ofSeq
                    Expect.equal (Optimizer.hyperparameters (Optimizer.bookDefault name).Value) hyper "the book's defaults"
                    Expect.equal optimizer.Spec [ (Optimizer.bookDefault name).Value ] "the spec"
                    let mutable parameters = named f.["params"] order
                    let mutable state = optimizer.Init parameters
                    let mutable worst = 0.0
                    for k in 0..2 do
                        let grads = named f.["grads"].[k] order
                        let updates, state' = optimizer.Update (k + 1) grads state parameters
                        parameters <- Optimizer.applyUpdates parameters updates
                        state <- state'
                        for (n, p), expected in List.zip parameters (order |> List.map (fun n -> value case.["after"].[k].[n])) do
                            let e = maxRelative (Value.toRowMajor p) (Value.toRowMajor expected)
                            worst <- max worst e
                            Expect.isLessThanOrEqual e 1e-12 $"update %d{k + 1}, {n}: relative error"
                    measured $"optimizers.json {name}, 3 updates, max relative error" worst
                }
        ]
        test "state: named slot.parameter, zeros at first (v.W1 for Momentum, m.W1 and v.W1 for Adam)" {
            let p = randomNamed 1
            let adam: Optimizer<float> = Optimizer.adam 0.001 0.9 0.999
            Expect.equal (adam.Init p |> List.map fst) [ "m.W1"; "m.b1"; "m.W2"; "m.b2"; "v.W1"; "v.b1"; "v.W2"; "v.b2" ] "Adam's state"
            Expect.isTrue (adam.Init p |> List.forall (fun (_, v) -> Value.toRowMajor v |> Array.forall ((=) 0.0))) "zeros"
            Expect.equal ((Optimizer.momentum 0.01 0.9: Optimizer<float>).Init p |> List.map fst) [ "v.W1"; "v.b1"; "v.W2"; "v.b2" ] "Momentum's"
            Expect.isEmpty ((Optimizer.sgd 0.01: Optimizer<float>).Init p) "SGD keeps none"
        }
        test "Adam's first update moves every parameter by about lr (the bias correction in lr_t)" {
            // m = (1 - β1)g and v = (1 - β2)g² after one update, so lr_t·m/√v = lr·sign(g) up to ε.
            let p, g = randomNamed 1, randomNamed 7
            let updates, _ = (Optimizer.adam 0.001 0.9 0.999: Optimizer<float>).Update 1 g ((Optimizer.adam 0.001 0.9 0.999: Optimizer<float>).Init p) p
            for (n, u), (_, g) in List.zip updates g do
                for u, g in Array.zip (Value.toRowMajor u) (Value.toRowMajor g) do
                    // |u| = lr·√.001|g| / (√.001|g| + 1e-7): short of lr by about lr·1e-7 / (√.001|g|).
                    let slack = if g = 0.0 then 1e-15 else 0.001 * 1e-7 / (sqrt 0.001 * abs g) * 1.01
                    Expect.isLessThanOrEqual (abs (u + 0.001 * float (sign g))) slack $"{n}: -lr·sign(g)"
        }
        test "weightDecay adds λW to the weights' gradients only, as the book's gradient (layers.json)" {
            let wd = (json "layers.json").["weight_decay"]
            let order = [ "W1"; "b1"; "W2"; "b2"; "W3"; "b3" ]
            let parameters = named wd.["params"] order
            let without = order |> List.map (fun n -> n, if n.StartsWith "W" then value wd.["grads_without_decay"].[n] else value wd.["grads"].[n])
            let decayed, state = (Optimizer.weightDecay 0.1: Optimizer<float>).Update 1 without [] parameters
            Expect.isEmpty state "no state"
            let mutable worst = 0.0
            for (n, g), (_, expected) in List.zip decayed (named wd.["grads"] order) do
                let e = maxRelative (Value.toRowMajor g) (Value.toRowMajor expected)
                worst <- max worst e
                Expect.isLessThanOrEqual e 1e-15 $"{n}"
            for (n, g), (_, g0) in List.zip decayed without do
                if not (n.StartsWith "W") then Expect.equal (Value.toRowMajor g) (Value.toRowMajor g0) $"{n} untouched"
            let penalty = (Optimizer.weightDecay 0.1: Optimizer<float>).Penalty parameters
            Expect.floatClose { absolute = 0.0; relative = 1e-14 } penalty (wd.["decay_term"].GetValue<float>()) "0.5·λ·ΣW²"
            measured "weight decay gradients vs layers.json, max relative error" worst
            measured "weight decay term vs layers.json, relative error" (abs (penalty - wd.["decay_term"].GetValue<float>()) / wd.["decay_term"].GetValue<float>())
            Expect.isFalse (Optimizer.isWeight "b1" || Optimizer.isWeight "gamma1" || Optimizer.isWeight "beta1" || Optimizer.isWeight "W") "only W1, W2, ..."
        }
        test "chain [weightDecay; sgd] is SGD on dW + λW; its state is its parts' in order; its penalty theirs" {
            let p, g = randomNamed 3, randomNamed 4
            let chained: Optimizer<float> = Optimizer.chain [ Optimizer.weightDecay 0.5; Optimizer.sgd 0.1 ]
            let decayed, _ = (Optimizer.weightDecay 0.5: Optimizer<float>).Update 1 g [] p
            let sgdAlone, _ = (Optimizer.sgd 0.1: Optimizer<float>).Update 1 decayed [] p
            let updates, _ = chained.Update 1 g [] p
            for (n, a), (_, b) in List.zip updates sgdAlone do
                Expect.equal (Value.toRowMajor a) (Value.toRowMajor b) $"{n}"
            Expect.equal chained.Spec [ OptimizerSpec.WeightDecay 0.5; OptimizerSpec.Sgd 0.1 ] "spec"
            let adamDecay: Optimizer<float> = Optimizer.chain [ Optimizer.weightDecay 0.5; Optimizer.adam 0.001 0.9 0.999 ]
            Expect.equal (adamDecay.Init p |> List.map fst) ((Optimizer.adam 0.001 0.9 0.999: Optimizer<float>).Init p |> List.map fst) "Adam's state"
            Expect.equal (adamDecay.Penalty p) ((Optimizer.weightDecay 0.5: Optimizer<float>).Penalty p) "the decay's penalty"
            Expect.throwsT<ArgumentException> (fun () -> Optimizer.chain [ Optimizer.momentum 0.01 0.9; (Optimizer.adam 0.001 0.9 0.999: Optimizer<float>) ] |> ignore) "two v.* states"
            Expect.throwsT<ArgumentException> (fun () -> Optimizer.chain ([]: Optimizer<float> list) |> ignore) "an empty chain"
        }
        test "bad hyperparameters are rejected at once, naming the value" {
            let message (f: unit -> Optimizer<float>) = try f () |> ignore; "" with :? ArgumentException as e -> e.Message
            Expect.stringContains (message (fun () -> Optimizer.sgd -0.1)) "-0.1" "negative lr"
            Expect.stringContains (message (fun () -> Optimizer.momentum 0.01 1.5)) "1.5" "momentum 1.5"
            Expect.stringContains (message (fun () -> Optimizer.adam 0.001 0.9 1.0)) "beta2" "beta2 1"
            Expect.stringContains (message (fun () -> Optimizer.weightDecay -1.0)) "lambda" "negative λ"
        }
        test "specs: name and hyperparameters round trip through specOf; unknown names are errors" {
            for spec in [ OptimizerSpec.Sgd 0.1; OptimizerSpec.Momentum(0.02, 0.8); OptimizerSpec.Nesterov(0.03, 0.7); OptimizerSpec.AdaGrad 0.04; OptimizerSpec.RmsProp(0.05, 0.9); OptimizerSpec.Adam(0.006, 0.8, 0.99); OptimizerSpec.WeightDecay 0.1 ] do
                Expect.equal (Optimizer.specOf (Optimizer.name spec) (Optimizer.hyperparameters spec)) (Ok spec) $"{spec}"
            Expect.equal (Optimizer.specOf "adam" [ "lr", 0.01 ]) (Ok(OptimizerSpec.Adam(0.01, 0.9, 0.999))) "defaults fill in"
            Expect.isError (Optimizer.specOf "adamw" []) "unknown optimizer"
            Expect.isError (Optimizer.specOf "sgd" [ "beta", 1.0 ]) "unknown hyperparameter"
            Expect.isError (Optimizer.specOf "weight_decay" []) "λ needed"
        }
        testList "Training.stepWith" [
            test "stepWith (sgd lr) gives Training.step lr's model bit for bit, float64 and float32" {
                let train, _ = mnist.Force()
                let batches = [ for k in 0..4 -> [| for i in 0..19 -> (k * 20 + i) * 7 % train.Count |] ]
                let run (m: Model<'T>) (step: TrainState<'T> -> int[] -> TrainState<'T>) = batches |> List.fold step (Training.start m)
                let m64: Model<float> = Network.init 42 0.01 Training.bookNetwork
                let a = run m64 (fun s ix -> fst (Training.step 0.1 s (Dataset.batch train ix)))
                let b = run m64 (fun s ix -> fst (Training.stepWith (Optimizer.sgd 0.1) s (Dataset.batch train ix)))
                for (n, x), (_, y) in List.zip (Network.parameters a.Model) (Network.parameters b.Model) do
                    Expect.equal (Value.toRowMajor x) (Value.toRowMajor y) $"float64 {n}"
                let m32: Model<float32> = Network.init 42 0.01 Training.bookNetwork
                let a = run m32 (fun s ix -> fst (Training.step 0.1f s (Dataset.batch train ix)))
                let b = run m32 (fun s ix -> fst (Training.stepWith (Optimizer.sgd 0.1) s (Dataset.batch train ix)))
                for (n, x), (_, y) in List.zip (Network.parameters a.Model) (Network.parameters b.Model) do
                    Expect.equal (Value.toRowMajor x) (Value.toRowMajor y) $"float32 {n}"
                Expect.equal b.Step 5 "five steps"
            }
            test "stepWith counts the steps, keeps the optimizer's state and reports the loss with the decay term" {
                let train, _ = mnist.Force()
                let optimizer: Optimizer<float> = Optimizer.chain [ Optimizer.weightDecay 0.1; Optimizer.adam 0.001 0.9 0.999 ]
                let m: Model<float> = Network.initWith WeightInit.He 1 (Network.layers Activation.ReLU [ 784; 20; 10 ])
                let batch = Dataset.batch train [| 0..9 |]
                let s1, loss = Training.stepWith optimizer (Training.start m) batch
                let dataLoss, _, _ = Network.gradient m (fst batch) (snd batch)
                let decay = 0.5 * 0.1 * (Network.parameters m |> List.filter (fst >> Optimizer.isWeight) |> List.sumBy (snd >> Value.toRowMajor >> Array.sumBy (fun w -> w * w)))
                Expect.floatClose { absolute = 0.0; relative = 1e-12 } loss (dataLoss + decay) "data loss + 0.5·λ·ΣW²"
                Expect.equal s1.Step 1 "one step"
                Expect.equal (s1.Optimizer |> List.map fst) (optimizer.Init (Network.parameters m) |> List.map fst) "Adam's m and v"
                let s2, _ = Training.stepWith optimizer s1 batch
                Expect.equal s2.Step 2 "two steps"
                let viaFold = Training.trainWith optimizer (Training.startWith optimizer m) [ batch; batch ]
                for (n, x), (_, y) in List.zip (Network.parameters viaFold.Model) (Network.parameters s2.Model) do
                    Expect.equal (Value.toRowMajor x) (Value.toRowMajor y) $"trainWith = two stepWith: {n}"
            }
        ]
    ]
