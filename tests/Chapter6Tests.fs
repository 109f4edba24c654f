/// Chapter 6's layers and training against the book's own numpy code (tests/fixtures/ch06):
/// Batch Normalization, Dropout and weight decay (layers.json), gradient checks of each alone and
/// inside networks, 100 steps of the book's MultiLayerNetExtend with Adam (parity_100), the
/// initial weights, and models with the new layers and an optimizer's state in files.
module Chapter6Tests

open System
open System.IO
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common
open Ch06Fixtures

let private layersFixture = lazy (json "layers.json")

/// Gradient checks pass below this relative error (norm form, Ch06Fixtures.normRelative), in
/// float64, as issue 13 asks.
let private gradientTolerance = 1e-7

/// Σ a ⊙ r: a scalar whose gradient with respect to a is r.
let private dot (a: Matrix<float>) (r: Matrix<float>) = (a.PointwiseMultiply r).Enumerate() |> Seq.sum

/// The numerical gradient of f at v (central difference, h = 1e-4), on a copy of v.
let private numericalVector (f: Vector<float> -> float) (v: Vector<float>) =
    let v = v.Clone()
    Vector<float>.Build.Dense(Network.numericalGradientOf (fun () -> f v) (v.AsArray()))

/// Checks one gradient against its numerical estimate; returns the error.
let private expectClose (what: string) (analytic: float[]) (numerical: float[]) =
    let e = normRelative analytic numerical
    Expect.isLessThan e gradientTolerance $"{what}: relative error"
    e

/// A random vector with entries uniform in [lo, hi].
let private randomVector (seed: int) (n: int) (lo: float) (hi: float) =
    let rng = Random(seed)
    Vector<float>.Build.Dense(n, fun _ -> lo + (hi - lo) * rng.NextDouble())

/// Random class labels.
let private labels (seed: int) (n: int) (classes: int) =
    let rng = Random(seed)
    Labels.ClassIndices(Array.init n (fun _ -> rng.Next classes))

/// Backpropagation's gradients (through the optimizer's transformations when one is given, such
/// as weight decay's λW) against the numerical gradient of the loss plus its penalty, every
/// parameter. The bias of an Affine layer right before a BatchNorm has gradient zero (the
/// normalization subtracts any constant added to its input): both must be below 1e-9 in norm.
let private checkNetwork (what: string) (model: Model<float>) (x: Matrix<float>) (t: Labels<float>) (decay: Optimizer<float> option) =
    let _, grads, _ = Network.gradient model x t
    let parameters = Network.parameters model
    let grads, penalty =
        match decay with
        | Some o -> fst (o.Update 1 grads [] parameters), o.Penalty
        | None -> grads, (fun _ -> 0.0)
    let numerical = Network.numericalGradientWith penalty model x t
    let beforeBatchNorm =
        List.zip model.Layers (List.tail model.Layers @ [ Layer.Relu ])
        |> List.zip (Network.numbered model.Layers)
        |> List.choose (fun ((layer, k), (_, next)) -> match layer, next with Layer.Affine _, Layer.BatchNorm _ -> Some $"b{k}" | _ -> None)
    let mutable worst = 0.0
    for (name, a), (name', b) in List.zip grads numerical do
        Expect.equal name name' "the same order"
        let a, b = Value.toRowMajor a, Value.toRowMajor b
        if List.contains name beforeBatchNorm then
            let norm (v: float[]) = sqrt (Array.sumBy (fun x -> x * x) v)
            Expect.isLessThan (norm a) 1e-9 $"{what}: {name} before BatchNorm, backprop"
            Expect.isLessThan (norm b) 1e-9 $"{what}: {name} before BatchNorm, numerical"
        else
            worst <- max worst (expectClose $"{what}: {name}" a b)
    measured $"gradient check, {what}: max relative error" worst

/// The Dropout layers' states replaced by fixed masks, one per Dropout layer in order.
let private withMasks (masks: Matrix<float> list) (model: Model<float>) =
    let mutable rest = masks
    { model with
        States =
            List.map2
                (fun layer state ->
                    match layer with
                    | Layer.Dropout _ ->
                        let m = List.head rest
                        rest <- List.tail rest
                        LayerState.DropoutMask m
                    | _ -> state)
                model.Layers
                model.States }

/// A random 0/1 mask keeping about 1 - ratio of the units.
let private randomMask (seed: int) rows cols (ratio: float) =
    let rng = Random(seed)
    Matrix<float>.Build.Dense(rows, cols, fun _ _ -> if rng.NextDouble() > ratio then 1.0 else 0.0)

/// γ and β set to random values (1 and 0 at the start would hide errors in their gradients).
let private randomizeBatchNorm (seed: int) (model: Model<float>) =
    Network.parameters model
    |> List.mapi (fun i (name, v) ->
        if name.StartsWith "gamma" then name, Value.Vector(randomVector (seed + i) (Value.shape v).[0] 0.5 1.5)
        elif name.StartsWith "beta" then name, Value.Vector(randomVector (seed + i) (Value.shape v).[0] -0.5 0.5)
        else name, v)
    |> Network.withParameters model

[<Tests>]
let layerTests =
    testList "chapter 6 layers" [
        testList "BatchNorm against the book (layers.json)" [
            test "train mode: out, xn, std, running stats after one step; backward dx, dgamma, dbeta" {
                let bn = layersFixture.Force().["batchnorm"]
                let x, dout = matrixOf bn.["x"], matrixOf bn.["dout"]
                let p: BatchNormParams<float> = { gamma = vectorOf bn.["gamma"]; beta = vectorOf bn.["beta"] }
                let s0: BatchNormState<float> = { runningMean = Vector<float>.Build.Dense 4; runningVar = Vector<float>.Build.Dense 4 }
                let out, cache, s1 = BatchNormalization.forward Mode.Train p s0 x
                let dx, g = BatchNormalization.backward cache dout
                let train = bn.["train"]
                let mutable worst = 0.0
                for what, actual, expected in
                    [ "out", out.ToRowMajorArray(), train.["out"]; "xn", cache.xn.ToRowMajorArray(), train.["xn"]; "std", cache.std.ToArray(), train.["std"]
                      "running_mean", s1.runningMean.ToArray(), train.["running_mean"]; "running_var", s1.runningVar.ToArray(), train.["running_var"]
                      "dx", dx.ToRowMajorArray(), train.["dx"]; "dgamma", g.dgamma.ToArray(), train.["dgamma"]; "dbeta", g.dbeta.ToArray(), train.["dbeta"] ] do
                    let e = maxRelative actual (floats expected.["data"])
                    worst <- max worst e
                    Expect.isLessThanOrEqual e 1e-13 $"{what}"
                measured "layers.json BatchNorm train forward/backward/running stats, max relative error" worst
            }
            test "inference mode: the running statistics after one step, and given ones" {
                let bn = layersFixture.Force().["batchnorm"]
                let x = matrixOf bn.["x"]
                let p: BatchNormParams<float> = { gamma = vectorOf bn.["gamma"]; beta = vectorOf bn.["beta"] }
                let mutable worst = 0.0
                for case in [ "test_after_one_train_step"; "test_given_stats" ] do
                    let s: BatchNormState<float> = { runningMean = vectorOf bn.[case].["running_mean"]; runningVar = vectorOf bn.[case].["running_var"] }
                    let out, _, s' = BatchNormalization.forward Mode.Inference p s x
                    Expect.equal s' s "inference leaves the state as it was"
                    let e = maxRelative (out.ToRowMajorArray()) (floats bn.[case].["out"].["data"])
                    worst <- max worst e
                    Expect.isLessThanOrEqual e 1e-13 case
                measured "layers.json BatchNorm inference, max relative error" worst
            }
            test "one sample alone is the book's pitfall: the output is β whatever x is, and no gradient flows back" {
                // With N = 1, x - mean(x) = 0: the layer forgets its input. The gradient checks
                // below therefore use batches of at least 4 samples.
                let p: BatchNormParams<float> = { gamma = vector [ 2.0; 3.0 ]; beta = vector [ 0.5; -0.5 ] }
                let s: BatchNormState<float> = { runningMean = vector [ 0.0; 0.0 ]; runningVar = vector [ 0.0; 0.0 ] }
                let out, cache, _ = BatchNormalization.forward Mode.Train p s (matrix [ [ 7.0; -3.0 ] ])
                Expect.equal (out.Row 0) p.beta "out = β"
                let dx, _ = BatchNormalization.backward cache (matrix [ [ 1.0; 1.0 ] ])
                Expect.equal (dx.Enumerate() |> Seq.map abs |> Seq.max) 0.0 "dx = 0"
            }
        ]
        testList "Dropout" [
            test "the book's, with the fixture's masks (layers.json): train x·mask, backward dout·mask, inference x·(1 - ratio)" {
                for case in (layersFixture.Force().["dropout"]).AsArray() do
                    let ratio = case.["ratio"].GetValue<float>()
                    let x, mask, dout = matrixOf case.["x"], matrixOf case.["mask"], matrixOf case.["dout"]
                    let layer = Layer.Dropout ratio
                    let out, cache, s = Layer.forward Mode.Train layer Params.Empty (LayerState.DropoutMask mask) x
                    Expect.equal (out.ToRowMajorArray()) (floats case.["out_train"].["data"]) $"ratio {ratio}: out_train, exactly"
                    Expect.equal s (LayerState.DropoutMask mask) "a fixed mask stays"
                    let dx, _ = Layer.backward cache dout
                    Expect.equal (dx.ToRowMajorArray()) (floats case.["dx"].["data"]) $"ratio {ratio}: dx, exactly"
                    let test, _, s = Layer.forward Mode.Inference layer Params.Empty (LayerState.DropoutMask mask) x
                    Expect.equal (test.ToRowMajorArray()) (floats case.["out_test"].["data"]) $"ratio {ratio}: out_test, exactly"
                    Expect.equal s (LayerState.DropoutMask mask) "inference leaves the state"
            }
            test "a key: the same key gives the same mask, training advances the counter, inference draws nothing" {
                let key = Dropout.key 42 1
                let x = random 5 200 100
                let layer = Layer.Dropout 0.3
                let out1, c1, s1 = Layer.forward Mode.Train layer Params.Empty (LayerState.Dropout key) x
                let out2, _, _ = Layer.forward Mode.Train layer Params.Empty (LayerState.Dropout key) x
                Expect.equal out1 out2 "same key, same output"
                Expect.equal s1 (LayerState.Dropout { key with Counter = 1u }) "counter + 1"
                let out3, _, _ = Layer.forward Mode.Train layer Params.Empty s1 x
                Expect.notEqual out3 out1 "the next key, another mask"
                let mask = match c1 with Cache.Dropout c -> c.mask | _ -> failwith "a Dropout cache"
                let kept = (mask.Enumerate() |> Seq.sum) / 20000.0
                Expect.isTrue (mask.Enumerate() |> Seq.forall (fun v -> v = 0.0 || v = 1.0)) "a 0/1 mask"
                Expect.floatClose { absolute = 0.02; relative = 0.0 } kept 0.7 "about 1 - ratio kept (6 standard deviations)"
                Expect.equal out1 (x.PointwiseMultiply mask) "out = x ⊙ mask"
                let inference, _, s = Layer.forward Mode.Inference layer Params.Empty (LayerState.Dropout key) x
                Expect.equal s (LayerState.Dropout key) "inference does not advance"
                Expect.equal inference (x * 0.7) "x · (1 - ratio)"
                Expect.notEqual (Dropout.key 42 1) (Dropout.key 42 2) "two layers, two seeds"
                Expect.notEqual (Dropout.key 42 1) (Dropout.key 43 1) "two models, two seeds"
                let mean = Array.init 100000 (Dropout.uniform key) |> Array.average
                Expect.floatClose { absolute = 0.005; relative = 0.0 } mean 0.5 "uniform numbers average 1/2"
            }
            test "the mask is uniform > ratio element by element (its integer comparison against the float one)" {
                for ratio in [ 0.0; 0.2; 0.5; 0.75; 0.999; 1.0 / 3.0 ] do
                    for key in [ Dropout.key 42 1; Dropout.next (Dropout.key 7 3); { Seed = 0xFFFFFFFFu; Counter = 0xFFFFFFFFu } ] do
                        let rows, columns = 37, 29
                        let mask: Matrix<float32> = Dropout.mask ratio key rows columns
                        for i in 0 .. rows - 1 do
                            for j in 0 .. columns - 1 do
                                let expected = if Dropout.uniform key (i * columns + j) > ratio then 1.0f else 0.0f
                                if mask[i, j] <> expected then failtestf "ratio %g, key %A, (%d, %d): %g, uniform %.17g" ratio key i j mask[i, j] (Dropout.uniform key (i * columns + j))
            }
            test "the mask's eight-at-a-time kernel equals the one-by-one definition (Dropout.kept), float32 and float64, at every shape" {
                // rows below, at and past multiples of 8 (the kernel's lanes run down a column)
                for rows, columns in [ 1, 1; 7, 3; 8, 1; 9, 5; 16, 16; 100, 100; 128, 100; 131, 10; 3, 128 ] do
                    for ratio in [ 0.0; 0.5; 0.9; 1.0 / 3.0 ] do
                        for key in [ Dropout.key 42 1; Dropout.next (Dropout.key 7 3); { Seed = 0xFFFFFFFFu; Counter = 0xFFFFFFFFu } ] do
                            let expected = Dropout.kept ratio key rows columns
                            let single: Matrix<float32> = Dropout.mask ratio key rows columns
                            let double: Matrix<float> = Dropout.mask ratio key rows columns
                            for j in 0 .. columns - 1 do
                                for i in 0 .. rows - 1 do
                                    let e = expected[j * rows + i]
                                    if single[i, j] <> float32 e || double[i, j] <> float e then
                                        failtestf "%dx%d, ratio %g, key %A, (%d, %d): %g and %g, kept %d" rows columns ratio key i j single[i, j] double[i, j] e
                            // and the definition itself against the uniform numbers, where the kernel's lanes are
                            if rows = 128 then
                                for j in [ 0; columns - 1 ] do
                                    for i in 0 .. rows - 1 do
                                        let u = Dropout.uniform key (i * columns + j)
                                        if (expected[j * rows + i] = 1uy) <> (u > ratio) then failtestf "kept %d at (%d, %d), uniform %.17g, ratio %g" expected[j * rows + i] i j u ratio
            }
            test "a network's loss is the same twice from the same state; its gradient gives back the keys advanced" {
                let layers = Network.extended Activation.ReLU [ 6; 8; 3 ] false (Some 0.5)
                let m: Model<float> = Network.initWith WeightInit.He 3 layers
                let x, t = random 1 10 6, labels 2 10 3
                Expect.equal (Network.loss m x t) (Network.loss m x t) "same state, same mask, same loss"
                let _, _, states = Network.gradient m x t
                Expect.equal states.[3] (match m.States.[3] with LayerState.Dropout k -> LayerState.Dropout(Dropout.next k) | s -> s) "advanced"
                Expect.equal (Network.states m |> List.map fst) [ "dropout1" ] "named dropout1"
            }
        ]
        test "Tanh: forward tanh(x), backward 1 - y²" {
            let out, cache = Tanh.forward (matrix [ [ 0.0; 1.0; -2.0 ] ])
            Expect.floatClose Accuracy.veryHigh out.[0, 1] 0.76159415595576485 "tanh 1"
            Expect.floatClose Accuracy.veryHigh out.[0, 2] -0.96402758007581690 "tanh -2"
            Expect.equal out.[0, 0] 0.0 "tanh 0"
            let dx = Tanh.backward cache (matrix [ [ 1.0; 1.0; 1.0 ] ])
            Expect.floatClose Accuracy.veryHigh dx.[0, 1] 0.41997434161402614 "sech² 1"
        }
        test "weight decay in the book's 3-4-3-2 net (layers.json): the data loss, the decay term, the gradients" {
            let wd = layersFixture.Force().["weight_decay"]
            let order = [ "W1"; "b1"; "W2"; "b2"; "W3"; "b3" ]
            let layers = Network.layers Activation.ReLU [ 3; 4; 3; 2 ]
            let model = Network.withParameters (Network.init 0 0.0 layers: Model<float>) (named wd.["params"] order)
            let x = matrixOf wd.["x"]
            let t = Labels.ClassIndices(wd.["t"].AsArray() |> Seq.map (fun v -> v.GetValue<int>()) |> Array.ofSeq)
            let decay: Optimizer<float> = Optimizer.weightDecay (wd.["lambda"].GetValue<float>())
            let dataLoss, grads, _ = Network.gradient model x t
            let exact what (a: float) (b: float) = Expect.floatClose { absolute = 0.0; relative = 1e-14 } a b what
            exact "data loss" dataLoss (wd.["data_loss"].GetValue<float>())
            exact "decay term" (decay.Penalty(Network.parameters model)) (wd.["decay_term"].GetValue<float>())
            let _, loss = Training.stepWith (Optimizer.chain [ decay; Optimizer.sgd 0.01 ]) (Training.start model) (x, t)
            exact "loss = data loss + 0.5·λ·ΣW²" loss (wd.["loss"].GetValue<float>())
            let mutable worst = 0.0
            for (n, g) in grads |> List.filter (fst >> Optimizer.isWeight) do
                let e = maxRelative (Value.toRowMajor g) (floats wd.["grads_without_decay"].[n].["data"])
                worst <- max worst e
                Expect.isLessThanOrEqual e 1e-13 $"{n} without decay"
            for (n, g), (_, expected) in List.zip (fst (decay.Update 1 grads [] (Network.parameters model))) (named wd.["grads"] order) do
                let e = maxRelative (Value.toRowMajor g) (Value.toRowMajor expected)
                worst <- max worst e
                Expect.isLessThanOrEqual e 1e-13 $"{n} with decay"
            measured "layers.json weight-decay net gradients, max relative error" worst
        }
    ]

[<Tests>]
let gradientChecks =
    testList "chapter 6 gradient checks (float64, relative error below 1e-7)" [
        test "BatchNorm alone (train mode, batch 6): dx, dgamma, dbeta" {
            let x, r = random 11 6 4, random 12 6 4
            let p: BatchNormParams<float> = { gamma = randomVector 13 4 0.5 1.5; beta = randomVector 14 4 -0.5 0.5 }
            let s: BatchNormState<float> = { runningMean = randomVector 15 4 -0.1 0.1; runningVar = randomVector 16 4 0.5 1.0 }
            let f (p: BatchNormParams<float>) x = let out, _, _ = BatchNormalization.forward Mode.Train p s x in dot out r
            let _, cache, _ = BatchNormalization.forward Mode.Train p s x
            let dx, g = BatchNormalization.backward cache r
            let e1 = expectClose "dx" (dx.ToRowMajorArray()) ((numericalGradient (f p) x).ToRowMajorArray())
            let e2 = expectClose "dgamma" (g.dgamma.ToArray()) ((numericalVector (fun gamma -> f { p with gamma = gamma } x) p.gamma).ToArray())
            let e3 = expectClose "dbeta" (g.dbeta.ToArray()) ((numericalVector (fun beta -> f { p with beta = beta } x) p.beta).ToArray())
            measured "gradient check, BatchNorm alone (train): max relative error" (max e1 (max e2 e3))
            // Inference mode is the affine map γ(x - mean)/std + β: its own derivative.
            let g (x: Matrix<float>) = let out, _, _ = BatchNormalization.forward Mode.Inference p s x in dot out r
            let _, cache, _ = BatchNormalization.forward Mode.Inference p s x
            let dx, _ = BatchNormalization.backward cache r
            measured "gradient check, BatchNorm alone (inference): relative error" (expectClose "inference dx" (dx.ToRowMajorArray()) ((numericalGradient g x).ToRowMajorArray()))
        }
        test "Dropout alone, a fixed mask: dx" {
            let x, r, mask = random 21 5 6, random 22 5 6, randomMask 23 5 6 0.5
            let f x = let out, _, _ = Layer.forward Mode.Train (Layer.Dropout 0.5) Params.Empty (LayerState.DropoutMask mask) x in dot out r
            let _, cache, _ = Layer.forward Mode.Train (Layer.Dropout 0.5) Params.Empty (LayerState.DropoutMask mask) x
            let dx, _ = Layer.backward cache r
            measured "gradient check, Dropout alone: relative error" (expectClose "dx" (dx.ToRowMajorArray()) ((numericalGradient f x).ToRowMajorArray()))
        }
        test "Tanh alone: dx" {
            let x, r = random 31 4 5, random 32 4 5
            let _, cache = Tanh.forward x
            let dx = Tanh.backward cache r
            measured "gradient check, Tanh alone: relative error" (expectClose "dx" (dx.ToRowMajorArray()) ((numericalGradient (fun x -> dot (fst (Tanh.forward x)) r) x).ToRowMajorArray()))
        }
        test "weight decay alone: λW is the gradient of 0.5·λ·ΣW², b gets none" {
            let decay: Optimizer<float> = Optimizer.weightDecay 0.3
            let model: Model<float> = Network.init 4 0.5 (Network.layers Activation.ReLU [ 4; 3; 2 ])
            let parameters = Network.parameters model
            let zeros = parameters |> List.map (fun (n, v) -> n, Value.zerosLike v)
            let analytic = fst (decay.Update 1 zeros [] parameters)
            let copy = Network.parameters (Network.clone model)
            let mutable worst = 0.0
            for (n, a), (_, p) in List.zip analytic copy do
                let numerical = Network.numericalGradientOf (fun () -> decay.Penalty copy) (Value.storage p)
                let a = Value.elements a
                if Optimizer.isWeight n then worst <- max worst (expectClose n a numerical)
                else Expect.isTrue (Array.forall ((=) 0.0) a && Array.forall (fun v -> abs v < 1e-12) numerical) $"{n}: none"
            measured "gradient check, weight decay alone: max relative error" worst
        }
        test "inside networks: Tanh" {
            let model: Model<float> = Network.initWith WeightInit.Xavier 5 (Network.layers Activation.Tanh [ 5; 6; 4; 3 ])
            checkNetwork "Tanh network 5-6-4-3" model (random 41 8 5) (labels 42 8 3) None
        }
        // Before BatchNorm the weights' scale does not change the loss (the layer divides it out)
        // but sets its curvature in W: with N(0, 1) weights the central difference's h²·f'''
        // error stays near 1e-8, where Xavier's smaller ones brought it to 5e-8.
        test "inside networks: BatchNorm (batch 8)" {
            let model: Model<float> = Network.initWith (WeightInit.Std 1.0) 6 (Network.extended Activation.Tanh [ 5; 6; 4; 3 ] true None) |> randomizeBatchNorm 60
            checkNetwork "BatchNorm network 5-6-4-3 (Tanh)" model (random 43 8 5) (labels 44 8 3) None
        }
        test "inside networks: Dropout with fixed masks, and with keys (the numerical gradient keeps the key fixed)" {
            let layers = Network.extended Activation.Sigmoid [ 5; 6; 4; 3 ] false (Some 0.5)
            let model: Model<float> = Network.initWith WeightInit.Xavier 7 layers
            let x, t = random 45 8 5, labels 46 8 3
            checkNetwork "Dropout network, fixed masks" (withMasks [ randomMask 47 8 6 0.5; randomMask 48 8 4 0.5 ] model) x t None
            checkNetwork "Dropout network, keys" model x t None
        }
        test "inside networks: weight decay" {
            let model: Model<float> = Network.initWith WeightInit.Xavier 8 (Network.layers Activation.Tanh [ 5; 6; 4; 3 ])
            checkNetwork "weight decay 0.1 network" model (random 49 8 5) (labels 50 8 3) (Some(Optimizer.weightDecay 0.1))
        }
        test "inside networks: BatchNorm, Dropout, Tanh and weight decay together" {
            let model: Model<float> = Network.initWith (WeightInit.Std 1.0) 9 (Network.extended Activation.Tanh [ 5; 7; 6; 3 ] true (Some 0.3)) |> randomizeBatchNorm 90
            checkNetwork "BatchNorm + Dropout + Tanh + weight decay" model (random 51 10 5) (labels 52 10 3) (Some(Optimizer.weightDecay 0.05))
        }
    ]

/// 100 steps of the book's MultiLayerNetExtend 784-100-100-10 (BatchNorm, weight decay 0.1,
/// Dropout of `ratio`, Adam lr 0.001) from the fixture's initial parameters on its batches,
/// against the book's losses, first gradients and final parameters and statistics.
let private parity (run: string) (ratio: float) (maskFile: string option) =
    let train, _ = mnist.Force()
    let npz = Npz.readAll (Path.Combine(dir, "parity_100.npz"))
    let masks = maskFile |> Option.map (fun f -> Npz.readAll (Path.Combine(dir, f)))
    let results = defaultArg masks npz // grad0_* and final_* of this run
    let expectedLoss = floats (json "parity_100.json").["runs"].[run].["loss"]
    let _, batchIndices = npz.["batch_indices"]
    let batch k = Dataset.batch train (Array.init 32 (fun i -> int batchIndices.[k * 32 + i]))
    let layers = Network.extended Activation.ReLU [ 784; 100; 100; 10 ] true (Some ratio)
    let initial: Model<float> =
        Network.withParameters (Network.initWith (WeightInit.Std 0.0) 0 layers) (Network.parameterShapes layers |> List.map (fun (n, _) -> n, npzValue npz $"init_{n}"))
    let maskedFor k (model: Model<float>) =
        match masks with
        | None -> model
        | Some arrays -> withMasks [ for l in 1..2 -> match npzValue arrays $"mask_{k}_{l}" with Value.Matrix m -> m | _ -> failwith "a mask" ] model
    let optimizer: Optimizer<float> = Optimizer.chain [ Optimizer.weightDecay 0.1; Optimizer.adam 0.001 0.9 0.999 ]
    // Step 0's gradients, with λW in dW as the book's net.gradient gives them.
    let x0, t0 = batch 0
    let _, grads, _ = Network.gradient (maskedFor 0 initial) x0 t0
    let grads, _ = (Optimizer.weightDecay 0.1: Optimizer<float>).Update 1 grads [] (Network.parameters initial)
    let noise name = name = "b1" || name = "b2" || name = "running_mean1" || name = "running_mean2"
    let mutable worstGrad, worstNoise = 0.0, 0.0
    for name, g in grads do
        let expected = Value.toRowMajor (npzValue results $"grad0_{name}")
        if noise name then
            let e = maxAbsolute (Value.toRowMajor g) expected
            worstNoise <- max worstNoise e
            Expect.isLessThan e 1e-12 $"grad0 {name}: rounding noise, absolute"
        else
            let e = maxRelative (Value.toRowMajor g) expected
            worstGrad <- max worstGrad e
            Expect.isLessThan e 1e-9 $"grad0 {name}"
    // The fold: 100 steps, each with that step's masks.
    let final, losses =
        [ 0..99 ]
        |> List.fold
            (fun (state: TrainState<float>, losses) k ->
                let state', loss = Training.stepWith optimizer { state with Model = maskedFor k state.Model } (batch k)
                state', loss :: losses)
            (Training.startWith optimizer initial, [])
    let losses = List.rev losses |> Array.ofList
    let lossError = maxRelative losses expectedLoss
    Expect.isLessThan lossError 1e-9 "the 100 losses"
    let mutable worstFinal, worstFinalNoise = 0.0, 0.0
    for name, v in Network.parameters final.Model @ (Network.states final.Model |> List.filter (fun (n, _) -> n.StartsWith "running")) do
        let expected = Value.toRowMajor (npzValue results $"final_{name}")
        if noise name then
            let e = maxAbsolute (Value.toRowMajor v) expected
            worstFinalNoise <- max worstFinalNoise e
            Expect.isLessThan e 1e-11 $"final {name}: rounding noise, absolute"
        else
            let e = maxRelative (Value.toRowMajor v) expected
            worstFinal <- max worstFinal e
            Expect.isLessThan e 1e-9 $"final {name}"
    Expect.equal final.Step 100 "100 steps"
    measured $"parity {run}: grad0 max relative error (W, gamma, beta, b3)" worstGrad
    measured $"parity {run}: grad0 b1/b2 max absolute difference" worstNoise
    measured $"parity {run}: 100 losses max relative error" lossError
    measured $"parity {run}: final W, gamma, beta, b3, running_var max relative error" worstFinal
    measured $"parity {run}: final b1, b2, running_mean max absolute difference" worstFinalNoise

[<Tests>]
let parityTests =
    testList "chapter 6 numpy parity (parity_100, float64)" [
        test "dropout 0: 100 Adam steps of 784-100-100-10 with BatchNorm and weight decay 0.1 match the book" { parity "dropout_0" 0.0 None }
        test "dropout 0.2 with the fixture's masks: 100 Adam steps match the book" { parity "dropout_0.2" 0.2 (Some "parity_100_dropout.npz") }
    ]

[<Tests>]
let buildingTests =
    testList "chapter 6 networks" [
        test "extended: the book's MultiLayerNetExtend layer order, parameter and state names" {
            let layers = Network.extended Activation.ReLU [ 784; 100; 100; 10 ] true (Some 0.2)
            Expect.equal
                layers
                [ Layer.Affine(784, 100); Layer.BatchNorm 100; Layer.Relu; Layer.Dropout 0.2
                  Layer.Affine(100, 100); Layer.BatchNorm 100; Layer.Relu; Layer.Dropout 0.2
                  Layer.Affine(100, 10) ]
                "parity_100.json's layer_order"
            let bookOrder = ((json "parity_100.json").["param_order"]).AsArray() |> Seq.map (fun v -> v.GetValue<string>()) |> Set.ofSeq
            Expect.equal (Set.ofList (Network.parameterNames layers)) bookOrder "the book's parameter names"
            Expect.equal (Network.parameterNames layers) [ "W1"; "b1"; "gamma1"; "beta1"; "W2"; "b2"; "gamma2"; "beta2"; "W3"; "b3" ] "in layer order"
            Expect.equal (Network.stateNames layers) [ "running_mean1"; "running_var1"; "dropout1"; "running_mean2"; "running_var2"; "dropout2" ] "states"
            Expect.equal (Network.extended Activation.Tanh [ 4; 3; 2 ] false None) (Network.layers Activation.Tanh [ 4; 3; 2 ]) "neither: the plain layers"
            Expect.throwsT<ArgumentException> (fun () -> Network.extended Activation.ReLU [ 4; 3; 2 ] false (Some 1.0) |> ignore) "ratio 1"
            Expect.equal (Network.mismatch [ Layer.Affine(4, 3); Layer.BatchNorm 5; Layer.Affine(5, 2) ]) (Some "BatchNorm 1 has 5 features, the layer before gives 3") "mismatch"
            Expect.equal (Network.mismatch layers) None "fits"
            Expect.equal (layers |> List.map Layer.describe |> String.concat " ") "Affine(784, 100) BatchNorm(100) ReLU Dropout(0.2) Affine(100, 100) BatchNorm(100) ReLU Dropout(0.2) Affine(100, 10)" "describe"
        }
        test "initWith: He √(2/n) and Xavier √(1/n) times the draws of Std 1, layer by layer; γ 1, β 0, running stats 0" {
            let layers = Network.extended Activation.ReLU [ 400; 300; 20 ] true (Some 0.5)
            let unit: Model<float> = Network.initWith (WeightInit.Std 1.0) 3 layers
            let weights (m: Model<float>) = Network.parameters m |> List.filter (fst >> Optimizer.isWeight) |> List.map (snd >> Value.toRowMajor)
            for init, scale in [ WeightInit.He, (fun (n: int) -> sqrt (2.0 / float n)); WeightInit.Xavier, (fun n -> sqrt (1.0 / float n)) ] do
                let m: Model<float> = Network.initWith init 3 layers
                for (w, u), n in List.zip (List.zip (weights m) (weights unit)) [ 400; 300 ] do
                    Expect.equal w (u |> Array.map (fun v -> scale n * v)) $"{init}: W of {n} inputs"
            let he: Model<float> = Network.initWith WeightInit.He 3 layers
            let w1 = (weights he).[0]
            let std = sqrt (Array.averageBy (fun w -> w * w) w1)
            Expect.floatClose { absolute = 0.0; relative = 0.01 } std (sqrt (2.0 / 400.0)) "the sample deviation of 120,000 draws"
            for name, v in Network.parameters he do
                let values = Value.toRowMajor v
                if name.StartsWith "gamma" then Expect.isTrue (Array.forall ((=) 1.0) values) $"{name} = 1"
                if name.StartsWith "beta" || name.StartsWith "b" && not (name.StartsWith "beta") then Expect.isTrue (Array.forall ((=) 0.0) values) $"{name} = 0"
            for name, v in Network.states he do
                if name.StartsWith "running" then Expect.isTrue (Array.forall ((=) 0.0) (Value.toRowMajor v)) $"{name} = 0"
            let old: Model<float> = Network.init 3 0.01 Training.bookNetwork
            let viaInitWith: Model<float> = Network.initWith (WeightInit.Std 0.01) 3 Training.bookNetwork
            Expect.equal (Network.parameters old |> List.map (snd >> Value.toRowMajor)) (Network.parameters viaInitWith |> List.map (snd >> Value.toRowMajor)) "init seed std = initWith (Std std)"
        }
    ]

let private temp name = Path.Combine(Directory.CreateTempSubdirectory("backprop-ch06-").FullName, name)

/// Every named array of a training state (parameters, layer states, optimizer state) in
/// row-major order, with the step: equal means equal bit for bit.
let private everything (s: TrainState<'T>) =
    s.Step, (Network.parameters s.Model @ Network.states s.Model @ s.Optimizer) |> List.map (fun (n, v) -> n, Value.shape v, Value.toRowMajor v)

/// N steps, saved and loaded, then M more, against N + M steps in one run.
let inline private resumes (toT: float -> ^T) (seed: int) =
    let layers = Network.extended Activation.Tanh [ 12; 10; 8; 3 ] true (Some 0.25)
    let model: Model< ^T > = Network.initWith WeightInit.He seed layers
    let optimizer: Optimizer< ^T > = Optimizer.chain [ Optimizer.weightDecay 0.01; Optimizer.adam 0.01 0.9 0.999 ]
    let batches = [ for k in 0..6 -> (random (100 + k) 16 12).Map toT, labels (200 + k) 16 3 ]
    let oneRun = Training.trainWith optimizer (Training.startWith optimizer model) batches
    let first = Training.trainWith optimizer (Training.startWith optimizer model) batches.[..2]
    let path = temp "state.npz"
    Npz.saveState path optimizer first [ "note", Text.Json.Nodes.JsonValue.Create "resume" :> Text.Json.Nodes.JsonNode ]
    let spec, loaded = Npz.loadState< ^T > path
    Expect.equal spec optimizer.Spec "the optimizer comes back"
    Expect.equal (everything loaded) (everything first) "the saved state comes back bit for bit"
    let resumed = Training.trainWith (Optimizer.ofSpec spec) loaded batches.[3..]
    Expect.equal (everything resumed) (everything oneRun) "3 steps, save, load, 4 more = 7 steps in one run"
    Expect.equal resumed.Step 7 "step 7"
    let counter = match resumed.Model.States |> List.pick (function LayerState.Dropout k -> Some k | _ -> None) with k -> k.Counter
    Expect.equal counter 7u "the Dropout key advanced once a step, across the save"

[<Tests>]
let fileTests =
    testList "chapter 6 models in files" [
        test "BatchNorm, Dropout and Tanh layers round trip bit for bit, float32 and float64, keys and masks included" {
            let layers = [ Layer.Affine(4, 3); Layer.BatchNorm 3; Layer.Tanh; Layer.Dropout 0.5; Layer.Affine(3, 2) ]
            let m64: Model<float> = Network.initWith WeightInit.He 5 layers |> randomizeBatchNorm 5
            // Trained a step, so the running statistics and the key's counter are not their initial values.
            let stepped = fst (Training.stepWith (Optimizer.sgd 0.1) (Training.start m64) (random 3 6 4, labels 4 6 2))
            let masked = withMasks [ randomMask 9 6 3 0.5 ] stepped.Model
            for original in [ stepped.Model; masked ] do
                let p64, p32 = temp "bn64.npz", temp "bn32.npz"
                Npz.save p64 original []
                let m32 = Network.convert float32 original
                Npz.save p32 m32 []
                let same (a: Model<'T>) (b: Model<'T>) what =
                    Expect.equal a.Layers b.Layers $"{what}: layers"
                    Expect.equal (everything (Training.start a)) (everything (Training.start b)) $"{what}: parameters and states bit for bit"
                    Expect.equal a.States b.States $"{what}: the states themselves"
                match Npz.load p64, Npz.load p32 with
                | SavedModel.Double l64, SavedModel.Single l32 -> same l64 original "float64"; same l32 m32 "float32"
                | _ -> failtest "precisions kept"
            let meta = (Npz.read (let p = temp "meta.npz" in Npz.save p m64 []; p)).Metadata.["layers"].ToJsonString()
            Expect.equal meta """[{"kind":"affine","inputs":4,"outputs":3},{"kind":"batchnorm","size":3},{"kind":"tanh"},{"kind":"dropout","ratio":0.5},{"kind":"affine","inputs":3,"outputs":2}]""" "the layer list"
            let key: Value<float32> = Layer.keyValue { Seed = 0xFFFFFFFFu; Counter = 0x01234567u }
            Expect.equal (Layer.stateOf (Layer.Dropout 0.5) [ key ]) (LayerState.Dropout { Seed = 0xFFFFFFFFu; Counter = 0x01234567u }) "a 32-bit key is exact in float32"
        }
        test "an optimizer's state saves as extra arrays with its spec and step in meta, and loads back bit for bit" {
            let m: Model<float> = Network.initWith WeightInit.He 2 (Network.extended Activation.ReLU [ 6; 5; 3 ] true (Some 0.2))
            let optimizer: Optimizer<float> = Optimizer.chain [ Optimizer.weightDecay 0.1; Optimizer.adam 0.001 0.9 0.999 ]
            let state = Training.trainWith optimizer (Training.startWith optimizer m) [ random 1 7 6, labels 2 7 3; random 3 7 6, labels 4 7 3 ]
            let path = temp "adam.npz"
            Npz.saveState path optimizer state []
            let file = Npz.read path
            Expect.equal (file.Metadata.["optimizer"].ToJsonString()) """[{"name":"weight_decay","lambda":0.1},{"name":"adam","lr":0.001,"beta1":0.9,"beta2":0.999}]""" "meta optimizer"
            Expect.equal (Npz.text file.Metadata.["step"]) "2" "meta step"
            Expect.equal (file.Extras |> Map.keys |> Set.ofSeq) (state.Optimizer |> List.map fst |> Set.ofList) "m.* and v.* as extra arrays"
            let spec, loaded = Npz.trainState<float> file
            Expect.equal spec optimizer.Spec "spec"
            Expect.equal (everything loaded) (everything state) "bit for bit"
            Expect.throwsT<ArgumentException> (fun () -> Npz.trainState<float32> file |> ignore) "a float64 file is not read as float32"
        }
        test "training N steps, saving, loading and training M more equals N + M steps, bit for bit, float64 and float32" {
            resumes float 1
            resumes float32 2
        }
        test "bad chapter 6 layer lists are named in one line" {
            let bad (model: Model<float>) (words: string) =
                let p = temp "bad.npz"
                Npz.save p model []
                try
                    Npz.read p |> ignore
                    failtest "expected a DataError"
                with DataError(_, problem) -> Expect.stringContains problem words "what is wrong"
            let good: Model<float> = Network.initWith WeightInit.He 1 [ Layer.Affine(4, 3); Layer.BatchNorm 3; Layer.Affine(3, 2) ]
            bad { good with Layers = [ Layer.Affine(4, 3); Layer.BatchNorm 5; Layer.Affine(3, 2) ]; Params = [ good.Params.[0]; Params.BatchNorm { gamma = Vector<float>.Build.Dense 5; beta = Vector<float>.Build.Dense 5 }; good.Params.[2] ]; States = Network.initialStates 1 [ Layer.Affine(4, 3); Layer.BatchNorm 5; Layer.Affine(3, 2) ] } "BatchNorm 1 has 5 features"
            bad { good with Layers = [ Layer.Affine(4, 3); Layer.Dropout 1.5; Layer.Affine(3, 2) ]; Params = [ good.Params.[0]; Params.Empty; good.Params.[2] ]; States = Network.initialStates 1 [ Layer.Affine(4, 3); Layer.Dropout 1.5; Layer.Affine(3, 2) ] } "ratio in [0, 1)"
        }
    ]
