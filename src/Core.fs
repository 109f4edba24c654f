namespace Backprop

// Error backpropagation as chapter 5 of "Deep Learning from Scratch" builds it, written as pure
// functions. Read top-down: scalar helpers, the computational-graph nodes (5.4), the functions
// (sigmoid, softmax, cross-entropy), the layers (5.5, 5.6), the network and its gradients (5.7),
// the data a network trains on, and training as a fold over mini-batches.
//
// Every layer is a `forward` that returns its output and a cache record (what the book keeps on
// `self`), directly above a `backward` that takes that cache and the upstream gradient `dout` and
// returns `dx` and a gradient record. Nothing mutates its inputs.
//
// The functions are `inline` so that one code path serves float (float64) and float32: the
// element type is inferred at the call site. Matrices are MathNet's; products go through Linalg.

#nowarn "77" // ofFloat below uses op_Explicit as a member constraint, which F# resolves for float and float32.

open System
open MathNet.Numerics.LinearAlgebra

/// Scalar helpers that keep every function generic in the element type (float or float32).
[<AutoOpen>]
module Scalar =
    /// Converts a float constant (a learning rate, the log's delta, h) to the element type.
    let inline ofFloat (x: float) : ^T = (^T: (static member op_Explicit: float -> ^T) x)

    /// Maps every element of a matrix, zeros included, to a new matrix.
    let inline map ([<InlineIfLambda>] f: ^T -> ^T) (m: Matrix< ^T >) : Matrix< ^T > =
        match m.Storage with
        | :? Storage.DenseColumnMajorMatrixStorage< ^T > as s -> Matrix< ^T>.Build.Dense(m.RowCount, m.ColumnCount, Array.map f s.Data)
        | _ -> m.Map((fun v -> f v), Zeros.Include)

// ─── 5.4 Computational-graph nodes ──────────────────────────────────────────────────────────────

/// Cache of a multiply node: both inputs, which backward swaps.
type MulCache<'T> =
    { /// The first input.
      x: 'T
      /// The second input.
      y: 'T }

/// The multiply node (the book's MulLayer): out = x · y.
[<RequireQualifiedAccess>]
module MulLayer =
    /// out = x · y, and the cache for backward.
    let inline forward (x: ^T) (y: ^T) = x * y, { x = x; y = y }

    /// ∂(xy)/∂x = y and ∂(xy)/∂y = x: the upstream gradient times the *other* input. Returns (dx, dy).
    let inline backward (cache: MulCache< ^T >) (dout: ^T) = dout * cache.y, dout * cache.x

/// The add node (the book's AddLayer): out = x + y. It has nothing to remember.
[<RequireQualifiedAccess>]
module AddLayer =
    /// out = x + y.
    let inline forward (x: ^T) (y: ^T) = x + y

    /// ∂(x+y)/∂x = ∂(x+y)/∂y = 1: the upstream gradient passes through to both. Returns (dx, dy).
    let inline backward (dout: ^T) = dout, dout

/// Price and gradients of the book's shopping example (5.4.1 and 5.4.2).
type ShoppingResult =
    { /// The total price (the forward result).
      Price: float
      /// ∂price/∂input for each input, in the order the example lists them.
      Gradients: (string * float) list }

/// The shopping examples of 5.4, built from MulLayer and AddLayer nodes.
[<RequireQualifiedAccess>]
module Shopping =
    /// buy_apple.py: apple price × count × tax, and the gradient for each of the three.
    let buyApple (apple: float) (appleNum: float) (tax: float) =
        let applePrice, mulApple = MulLayer.forward apple appleNum
        let price, mulTax = MulLayer.forward applePrice tax
        let dApplePrice, dTax = MulLayer.backward mulTax 1.0
        let dApple, dAppleNum = MulLayer.backward mulApple dApplePrice
        { Price = price
          Gradients = [ "apple", dApple; "apple_num", dAppleNum; "tax", dTax ] }

    /// buy_apple_orange.py: (apple × count + orange × count) × tax, and the five gradients.
    let buyAppleOrange (apple: float) (appleNum: float) (orange: float) (orangeNum: float) (tax: float) =
        let applePrice, mulApple = MulLayer.forward apple appleNum
        let orangePrice, mulOrange = MulLayer.forward orange orangeNum
        let allPrice = AddLayer.forward applePrice orangePrice
        let price, mulTax = MulLayer.forward allPrice tax
        let dAllPrice, dTax = MulLayer.backward mulTax 1.0
        let dApplePrice, dOrangePrice = AddLayer.backward dAllPrice
        let dOrange, dOrangeNum = MulLayer.backward mulOrange dOrangePrice
        let dApple, dAppleNum = MulLayer.backward mulApple dApplePrice
        { Price = price
          Gradients =
            [ "apple", dApple; "apple_num", dAppleNum; "orange", dOrange; "orange_num", dOrangeNum; "tax", dTax ] }

// ─── Functions ──────────────────────────────────────────────────────────────────────────────────

/// Labels of a mini-batch: one class index per sample, or one one-hot row per sample.
[<RequireQualifiedAccess>]
type Labels<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// The class of each sample (0-based).
    | ClassIndices of int[]
    /// A row per sample with 1 in the column of its class and 0 elsewhere.
    | OneHot of Matrix<'T>

/// The functions of chapters 3 and 4 that the layers are built on.
[<RequireQualifiedAccess>]
module Functions =
    /// sigmoid(x) = 1 / (1 + exp(-x)), element by element.
    let inline sigmoid (x: Matrix< ^T >) =
        let one = LanguagePrimitives.GenericOne< ^T >
        x |> map (fun v -> one / (one + exp -v))

    /// Row-wise softmax: y_k = exp(x_k - max) / Σ_i exp(x_i - max) for each row. The row's
    /// maximum is subtracted before exp: the result is the same (softmax is shift-invariant) and
    /// exp can no longer overflow (3.5.2). Linalg runs it a column at a time, vectorized.
    let inline softmax (x: Matrix< ^T >) = Linalg.softmaxRows x

    /// Mean cross-entropy error over the batch, -Σ t·log(y + delta) / N, for a given delta.
    let inline crossEntropyErrorWith (delta: ^T) (y: Matrix< ^T >) (t: Labels< ^T >) : ^T =
        let n = ofFloat (float y.RowCount)
        let total =
            match t with
            | Labels.ClassIndices t -> Array.init y.RowCount (fun i -> log (y[i, t[i]] + delta)) |> Array.sum
            | Labels.OneHot t -> t.PointwiseMultiply(y |> map (fun v -> log (v + delta))).Enumerate() |> Seq.sum
        -total / n

    /// Mean cross-entropy error over the batch: -Σ t·log(y + δ) / N, with the book's δ = 1e-7
    /// that keeps log(0) = -∞ out (4.2.2).
    let inline crossEntropyError (y: Matrix< ^T >) (t: Labels< ^T >) : ^T = crossEntropyErrorWith (ofFloat 1e-7) y t

// ─── 5.5, 5.6 Layers ────────────────────────────────────────────────────────────────────────────

/// Cache of ReLU: 1 where the input was positive, 0 elsewhere (the book's mask, inverted).
type ReluCache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// 1 where x > 0, 0 where x ≤ 0.
      mask: Matrix<'T> }

/// ReLU (5.5.1): out = max(0, x).
[<RequireQualifiedAccess>]
module Relu =
    /// out = x where x > 0, else 0.
    let inline forward (x: Matrix< ^T >) =
        let mask = Linalg.positive x // 1 where x > 0, else 0
        Linalg.relu x, { mask = mask }

    /// dx = dout where x > 0, else 0. (The book zeroes dout in place; this returns a new matrix.)
    let inline backward (cache: ReluCache< ^T >) (dout: Matrix< ^T >) = Linalg.hadamard dout cache.mask

/// Cache of Sigmoid: its output y, from which the derivative follows.
type SigmoidCache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The forward output y = sigmoid(x).
      out: Matrix<'T> }

/// Sigmoid (5.5.2): out = 1 / (1 + exp(-x)).
[<RequireQualifiedAccess>]
module Sigmoid =
    /// out = sigmoid(x).
    let inline forward (x: Matrix< ^T >) =
        let out = Functions.sigmoid x
        out, { out = out }

    /// dx = dout · y(1 - y): the derivative of the sigmoid written in its own output (5.12).
    let inline backward (cache: SigmoidCache< ^T >) (dout: Matrix< ^T >) =
        let one = LanguagePrimitives.GenericOne< ^T >
        dout.PointwiseMultiply(cache.out |> map (fun y -> y * (one - y)))

/// Parameters of an Affine layer: weights W (inputs × outputs) and bias b (outputs).
type AffineParams<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// Weights, one row per input and one column per output.
      W: Matrix<'T>
      /// Bias, one per output.
      b: Vector<'T> }

/// Gradients of an Affine layer, field for field like AffineParams.
type AffineGrads<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// ∂L/∂W.
      dW: Matrix<'T>
      /// ∂L/∂b.
      db: Vector<'T> }

/// Cache of Affine: the input (one row per sample), its original shape and the weights.
type AffineCache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The input, flattened to one row per sample.
      x: Matrix<'T>
      /// The input's shape before flattening (first axis: samples); dx is given back in it.
      xShape: int[]
      /// The weights the forward pass used.
      W: Matrix<'T> }

/// An array of any shape in row-major (numpy) order whose first axis is the sample, such as a
/// batch of N × 1 × 28 × 28 images. Affine flattens it to one row per sample.
type Tensor<'T> =
    { /// The size of each axis; Shape[0] is the number of samples.
      Shape: int[]
      /// The elements, last axis fastest.
      Data: 'T[] }

/// Affine (5.6.2, batched): out = x · W + b, with b added to every row.
[<RequireQualifiedAccess>]
module Affine =
    /// out = x · W + b for a batch x with one sample per row.
    let inline forward (p: AffineParams< ^T >) (x: Matrix< ^T >) =
        let out = Linalg.mulAddRow x p.W p.b
        out, { x = x; xShape = [| x.RowCount; x.ColumnCount |]; W = p.W }

    /// The parameters' gradients alone: dW = xᵀ · dout, db = the column sums of dout (b was
    /// added to every row, so its gradient gathers every row's).
    let inline gradients (cache: AffineCache< ^T >) (dout: Matrix< ^T >) =
        { dW = Linalg.mulTN cache.x dout; db = Linalg.columnSums dout }

    /// dx = dout · Wᵀ, and the gradients dW, db.
    let inline backward (cache: AffineCache< ^T >) (dout: Matrix< ^T >) =
        Linalg.mulNT dout cache.W, gradients cache dout

    /// forward for an input of any shape: each sample is flattened to one row first.
    let inline forwardTensor (p: AffineParams< ^T >) (x: Tensor< ^T >) =
        let n = x.Shape[0]
        let out, cache = forward p (Matrix< ^T>.Build.DenseOfRowMajor(n, x.Data.Length / n, x.Data))
        out, { cache with xShape = Array.copy x.Shape }

    /// backward for forwardTensor: dx comes back in the shape of the original input.
    let inline backwardTensor (cache: AffineCache< ^T >) (dout: Matrix< ^T >) =
        let dx, grads = backward cache dout
        { Shape = Array.copy cache.xShape; Data = dx.ToRowMajorArray() }, grads

/// Cache of Softmax-with-Loss: the softmax output y and the labels t.
type SoftmaxWithLossCache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// softmax(x), one row of class probabilities per sample.
      y: Matrix<'T>
      /// The labels the loss was measured against.
      t: Labels<'T> }

/// Softmax-with-Loss (5.6.3): softmax then the mean cross-entropy error, as one layer.
[<RequireQualifiedAccess>]
module SoftmaxWithLoss =
    /// The loss of scores x against labels t.
    let inline forward (x: Matrix< ^T >) (t: Labels< ^T >) =
        let y = Functions.softmax x
        Functions.crossEntropyError y t, { y = y; t = t }

    /// dx = (y - t) / N · dout: the softmax and cross-entropy derivatives cancel to this
    /// difference (the "beautiful" result of 5.6.3; N because the loss is a batch mean).
    let inline backward (cache: SoftmaxWithLossCache< ^T >) (dout: ^T) =
        let one = LanguagePrimitives.GenericOne< ^T >
        let scale = dout / ofFloat (float cache.y.RowCount)
        match cache.t with
        | Labels.OneHot t -> (cache.y - t) * scale
        | Labels.ClassIndices t -> cache.y.MapIndexed((fun i j v -> (if j = t[i] then v - one else v) * scale), Zeros.Include)

// ─── 5.7 The network ────────────────────────────────────────────────────────────────────────────

/// One layer of a network: its configuration only. Its parameters and state live apart, in the
/// Model, so that a layer is a function of (parameters, state, input).
[<RequireQualifiedAccess>]
type Layer =
    /// A fully connected layer from inputSize to outputSize units.
    | Affine of inputSize: int * outputSize: int
    /// The ReLU activation.
    | Relu
    /// The sigmoid activation.
    | Sigmoid

/// The activation between two Affine layers.
type Activation =
    /// ReLU, as in the book's TwoLayerNet.
    | ReLU = 0
    /// Sigmoid.
    | Sigmoid = 1

/// The parameters of one layer.
[<RequireQualifiedAccess>]
type Params<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// Weights and bias of an Affine layer.
    | Affine of AffineParams<'T>
    /// A layer without parameters.
    | Empty

/// The gradients of one layer, mirroring its Params.
[<RequireQualifiedAccess>]
type Grads<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// dW and db of an Affine layer.
    | Affine of AffineGrads<'T>
    /// A layer without parameters.
    | Empty

/// What one layer's forward pass keeps for its backward pass.
[<RequireQualifiedAccess>]
type Cache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// Cache of an Affine layer.
    | Affine of AffineCache<'T>
    /// Cache of a ReLU layer.
    | Relu of ReluCache<'T>
    /// Cache of a Sigmoid layer.
    | Sigmoid of SigmoidCache<'T>

/// The state a layer carries from one forward pass to the next. The layers of chapter 5 have
/// none; Dropout (a random generator) and Batch Normalization (running statistics) will add
/// cases here, and every forward already takes a state and gives one back.
[<RequireQualifiedAccess>]
type LayerState =
    /// No state.
    | Stateless

/// A network with its parameters and states: layers, then Softmax-with-Loss at the end.
type Model<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The layers in order (Softmax-with-Loss, always last, is implied).
      Layers: Layer list
      /// One entry per layer (Params.Empty for layers without parameters).
      Params: Params<'T> list
      /// One entry per layer.
      States: LayerState list }

/// One layer applied forward and backward, whatever its kind.
[<RequireQualifiedAccess>]
module Layer =
    /// Runs the layer forward: (params, state, x) -> (out, cache, new state).
    let inline forward (layer: Layer) (p: Params< ^T >) (state: LayerState) (x: Matrix< ^T >) =
        match layer, p with
        | Layer.Affine _, Params.Affine p -> let out, c = Affine.forward p x in out, Cache.Affine c, state
        | Layer.Relu, _ -> let out, c = Relu.forward x in out, Cache.Relu c, state
        | Layer.Sigmoid, _ -> let out, c = Sigmoid.forward x in out, Cache.Sigmoid c, state
        | Layer.Affine _, Params.Empty -> invalidArg "p" "an Affine layer needs Affine parameters"

    /// Runs the layer backward: (cache, dout) -> (dx, gradients of its parameters).
    let inline backward (cache: Cache< ^T >) (dout: Matrix< ^T >) =
        match cache with
        | Cache.Affine c -> let dx, g = Affine.backward c dout in dx, Grads.Affine g
        | Cache.Relu c -> Relu.backward c dout, Grads.Empty
        | Cache.Sigmoid c -> Sigmoid.backward c dout, Grads.Empty

    /// The gradients of the layer's parameters without dx, for the first layer of a network:
    /// its dx would be the gradient for the input images, which nothing uses.
    let inline gradients (cache: Cache< ^T >) (dout: Matrix< ^T >) =
        match cache with
        | Cache.Affine c -> Grads.Affine(Affine.gradients c dout)
        | Cache.Relu _
        | Cache.Sigmoid _ -> Grads.Empty

/// Building networks and computing with them: predict, loss, accuracy and gradients.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Network =
    /// The layers for a spec of layer sizes: [784; 50; 10] is the book's two-layer net
    /// (Affine 784→50, activation, Affine 50→10); longer lists give deeper nets.
    let layers (activation: Activation) (sizes: int list) : Layer list =
        if List.length sizes < 2 then invalidArg "sizes" $"a network needs at least an input and an output size, got %A{sizes}"
        match sizes |> List.tryFind (fun s -> s < 1) with
        | Some s -> invalidArg "sizes" $"layer sizes must be positive, got %d{s} in %A{sizes}"
        | None -> ()
        let act = if activation = Activation.Sigmoid then Layer.Sigmoid else Layer.Relu
        let affines = sizes |> List.pairwise |> List.map Layer.Affine
        List.foldBack (fun a acc -> match acc with [] -> [ a ] | _ -> a :: act :: acc) affines []

    /// The layer sizes of a network, input first ([784; 50; 10] for the book's net).
    let sizes (layers: Layer list) : int list =
        let affines = layers |> List.choose (function Layer.Affine(i, o) -> Some(i, o) | _ -> None)
        match affines with
        | [] -> []
        | (i, _) :: _ -> i :: (affines |> List.map snd)

    /// A model with weights drawn from N(0, weightInitStd²) and zero biases, reproducibly from
    /// the seed (the book's TwoLayerNet uses weightInitStd = 0.01).
    let inline init (seed: int) (weightInitStd: float) (layers: Layer list) : Model< ^T > =
        let rng = Random(seed)
        let draw () = ofFloat (weightInitStd * MathNet.Numerics.Distributions.Normal.Sample(rng, 0.0, 1.0))
        let paramsOf layer =
            match layer with
            | Layer.Affine(i, o) ->
                // Row-major draws, as numpy fills W: the same seed gives the same W whatever the storage order.
                let w = Array.init (i * o) (fun _ -> draw ())
                Params.Affine { W = Matrix< ^T>.Build.DenseOfRowMajor(i, o, w); b = Vector< ^T>.Build.Dense o }
            | _ -> Params.Empty
        { Layers = layers; Params = List.map paramsOf layers; States = List.map (fun _ -> LayerState.Stateless) layers }

    /// Runs every layer forward: the scores (before softmax), the caches in reverse order (last
    /// layer first, ready for backward) and the new states.
    let inline forward (model: Model< ^T >) (x: Matrix< ^T >) =
        List.zip3 model.Layers model.Params model.States
        |> List.fold
            (fun (x, caches, states) (layer, p, s) ->
                let out, cache, s' = Layer.forward layer p s x
                out, cache :: caches, s' :: states)
            (x, [], [])
        |> fun (scores, caches, states) -> scores, caches, List.rev states

    /// The scores for x, one row per sample (the book's predict: no softmax, argmax is the same).
    let inline predict (model: Model< ^T >) (x: Matrix< ^T >) =
        let scores, _, _ = forward model x
        scores

    /// The mean loss of the model on x against labels t.
    let inline loss (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) =
        let scores, _, _ = forward model x
        fst (SoftmaxWithLoss.forward scores t)

    /// The index of the largest score in each row: the predicted class of each sample.
    let inline argmax (scores: Matrix< ^T >) =
        let m = scores.RowCount
        let a = scores.ToColumnMajorArray() // for dense storage this is a copy made in one pass
        Array.init m (fun i ->
            let mutable best = 0
            for j in 1 .. scores.ColumnCount - 1 do
                if a[j * m + i] > a[best * m + i] then best <- j
            best)

    /// The loss and the gradient of every layer's parameters by backpropagation: one forward
    /// pass, then each layer's backward from the last to the first (the first layer computes
    /// no dx: nothing lies below it). Also returns the new states.
    let inline gradient (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) =
        let scores, caches, states = forward model x
        let loss, lastCache = SoftmaxWithLoss.forward scores t
        let dout = SoftmaxWithLoss.backward lastCache LanguagePrimitives.GenericOne
        let upper, first = List.take (caches.Length - 1) caches, List.last caches
        let dout, grads =
            upper
            |> List.fold
                (fun (dout, grads) cache ->
                    let dx, g = Layer.backward cache dout
                    dx, g :: grads)
                (dout, [])
        loss, Layer.gradients first dout :: grads, states

    /// The central difference (f(a + h) - f(a - h)) / 2h for each element of a, with the book's
    /// h = 1e-4 (4.3). f must read a; a is restored after each element.
    let inline numericalGradientOf (f: unit -> ^T) (a: ^T[]) : ^T[] =
        let h = ofFloat 1e-4
        Array.init a.Length (fun i ->
            let tmp = a[i]
            a[i] <- tmp + h
            let fxh1 = f ()
            a[i] <- tmp - h
            let fxh2 = f ()
            a[i] <- tmp
            (fxh1 - fxh2) / (h + h))

    /// The loss with no δ inside the log: -Σ t·log(y) / N. Backpropagation's (y - t) / N is the
    /// exact gradient of this function; the δ of `loss` shifts the true gradient by a factor
    /// y / (y + δ), about 1e-6 for y ≈ 0.1, which would swamp the check. (The book's gradient-check
    /// figures, 1e-10 to 1e-13, are what this gives.)
    let inline lossWithoutDelta (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) =
        Functions.crossEntropyErrorWith LanguagePrimitives.GenericZero (Functions.softmax (predict model x)) t

    /// The gradient of every parameter by numerical differentiation of lossWithoutDelta: slow,
    /// and only for checking backpropagation (4.4.2, 5.7.3). Works on a private copy of the
    /// parameters, so the model passed in is never touched.
    let inline numericalGradient (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) : Grads< ^T > list =
        let copy =
            { model with
                Params =
                    model.Params
                    |> List.map (function
                        | Params.Affine p -> Params.Affine { W = p.W.Clone(); b = p.b.Clone() }
                        | Params.Empty -> Params.Empty) }
        let f () = lossWithoutDelta copy x t
        copy.Params
        |> List.map (function
            | Params.Affine p ->
                let dW = numericalGradientOf f (p.W.AsColumnMajorArray())
                let db = numericalGradientOf f (p.b.AsArray())
                Grads.Affine { dW = Matrix< ^T>.Build.Dense(p.W.RowCount, p.W.ColumnCount, dW); db = Vector< ^T>.Build.Dense db }
            | Params.Empty -> Grads.Empty)

    /// The book's names for each Affine layer's gradients (W1, b1, W2, b2, ...) with their values.
    let named (grads: Grads<'T> list) : (string * Choice<Matrix<'T>, Vector<'T>>) list =
        grads
        |> List.choose (function Grads.Affine g -> Some g | Grads.Empty -> None)
        |> List.mapi (fun i g -> [ $"W{i + 1}", Choice1Of2 g.dW; $"b{i + 1}", Choice2Of2 g.db ])
        |> List.concat

    /// The book's gradient check (5.7.3): for each parameter (W1, b1, W2, b2, ...), the mean
    /// absolute difference between its gradient by backpropagation and by numerical differentiation.
    let inline gradientCheck (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) : (string * float) list =
        let _, backprop, _ = gradient model x t
        let numerical = numericalGradient model x t
        let meanAbsDiff (a: ^T seq) (b: ^T seq) = Seq.map2 (fun u v -> abs (float u - float v)) a b |> Seq.average
        List.map2
            (fun (name, a) (_, b) ->
                match a, b with
                | Choice1Of2 (a: Matrix< ^T >), Choice1Of2 (b: Matrix< ^T >) -> name, meanAbsDiff (a.Enumerate()) (b.Enumerate())
                | Choice2Of2 (a: Vector< ^T >), Choice2Of2 (b: Vector< ^T >) -> name, meanAbsDiff (a.Enumerate()) (b.Enumerate())
                | _ -> invalidOp "gradient records of different shapes")
            (named backprop)
            (named numerical)

// ─── Data ───────────────────────────────────────────────────────────────────────────────────────

/// A labelled image set kept as bytes (one per pixel, 0-255), converted to the element type only
/// for the rows a batch or an evaluation block needs. Read one with the Mnist module.
type Dataset =
    { /// Count × PixelCount bytes, one image after the other, row-major within an image.
      Pixels: byte[]
      /// One class index per image.
      Labels: byte[]
      /// The number of images.
      Count: int
      /// The height of an image.
      Rows: int
      /// The width of an image.
      Columns: int }

    /// The pixels in one image (784 for MNIST).
    member d.PixelCount = d.Rows * d.Columns

/// Turning a Dataset into the matrices and labels that the layers take.
[<RequireQualifiedAccess>]
module Dataset =
    /// The images at the given indices as a matrix with one row per image, scaled to [0, 1],
    /// stored in `buffer`'s arrays. A matrix in a reused buffer changes when the buffer is
    /// gathered into again: use it first.
    let inline imagesInto (buffer: Linalg.ImageBuffer< ^T >) (d: Dataset) (indices: int[]) : Matrix< ^T > =
        // Each pixel byte v becomes v / 255. Where most pixels are 0 (four in five for MNIST),
        // the backend keeps only the nonzero ones, and the products skip the zeros; either way
        // the layers see a Matrix with the same values (Linalg.gatherImages).
        Linalg.gatherImages buffer d.Pixels d.PixelCount indices

    /// The images at the given indices as a matrix with one row per image, scaled to [0, 1].
    let inline images (d: Dataset) (indices: int[]) : Matrix< ^T > = imagesInto (Linalg.ImageBuffer()) d indices

    /// The class indices of the images at the given indices.
    let labels (d: Dataset) (indices: int[]) : int[] = indices |> Array.map (fun i -> int d.Labels[i])

    /// The labels at the given indices as one-hot rows (10 classes for MNIST).
    let inline oneHot (classes: int) (d: Dataset) (indices: int[]) : Matrix< ^T > =
        Matrix< ^T>.Build.Dense(indices.Length, classes, fun i j -> if int d.Labels[indices[i]] = j then LanguagePrimitives.GenericOne else LanguagePrimitives.GenericZero)

    /// A mini-batch: the images at the given indices and their class indices.
    let inline batch (d: Dataset) (indices: int[]) : Matrix< ^T > * Labels< ^T > =
        images d indices, Labels.ClassIndices(labels d indices)

    /// A mini-batch whose images are stored in `buffer` (see imagesInto).
    let inline batchInto (buffer: Linalg.ImageBuffer< ^T >) (d: Dataset) (indices: int[]) : Matrix< ^T > * Labels< ^T > =
        imagesInto buffer d indices, Labels.ClassIndices(labels d indices)

    /// The mini-batches for a sequence of index arrays, their images gathered into a ring of
    /// `ring` reused arrays, so that a training run does not allocate (and the collector does not
    /// sweep) a fresh image matrix per step. Batch k's matrix is overwritten by batch k + ring:
    /// each batch must be used by then, as a training step, which holds no batch after it
    /// returns, does. Each enumeration has its own ring; `gather` runs each batch's gather (e.g.
    /// on another core), given the array to gather into. Once batch k is gathered, the images of
    /// batch k + 1 are asked into cache, so they arrive while step k runs.
    let inline batchesIn (ring: int) (gather: (unit -> Matrix< ^T > * Labels< ^T >) -> 'b) (d: Dataset) (indices: seq<int[]>) : seq<'b> =
        seq {
            let buffers = Array.init ring (fun _ -> Linalg.ImageBuffer< ^T >())
            use e = indices.GetEnumerator()
            let mutable next = if e.MoveNext() then Some e.Current else None
            let mutable k = 0
            while next.IsSome do
                let ix = next.Value
                next <- if e.MoveNext() then Some e.Current else None
                let buffer = buffers[k % ring]
                let batch = gather (fun () -> batchInto buffer d ix)
                next |> Option.iter (Backend.Gather.prefetchRows d.Pixels d.PixelCount)
                k <- k + 1
                yield batch
        }

    /// The first count images, as a Dataset of their own (e.g. the first 3 for the gradient check).
    let take (count: int) (d: Dataset) : Dataset =
        let n = min count d.Count
        { d with Pixels = d.Pixels[.. n * d.PixelCount - 1]; Labels = d.Labels[.. n - 1]; Count = n }

/// Evaluating a model on a whole Dataset.
[<RequireQualifiedAccess>]
module Evaluate =
    /// Rows per block when a whole dataset is evaluated: bounds the memory an evaluation takes.
    /// (1,000-row blocks were no faster and raised the peak memory by a third.)
    let blockSize = 100

    /// The fraction of images in d whose predicted class is their label, computed block by block.
    let inline accuracy (model: Model< ^T >) (d: Dataset) : float =
        let buffer = Linalg.ImageBuffer() // one block's images, reused
        let correct =
            seq { 0 .. blockSize .. d.Count - 1 }
            |> Seq.sumBy (fun start ->
                let indices = [| start .. min d.Count (start + blockSize) - 1 |]
                let predicted = Network.argmax (Network.predict model (Dataset.imagesInto buffer d indices))
                Array.fold2 (fun n p i -> if p = int d.Labels[i] then n + 1 else n) 0 predicted indices)
        float correct / float d.Count

    /// The confusion matrix of the model on d: entry [t, p] counts the images of class t
    /// predicted as p. Computed block by block like accuracy.
    let inline confusion (classes: int) (model: Model< ^T >) (d: Dataset) : int[,] =
        let counts = Array2D.zeroCreate classes classes
        let buffer = Linalg.ImageBuffer()
        for start in 0 .. blockSize .. d.Count - 1 do
            let indices = [| start .. min d.Count (start + blockSize) - 1 |]
            let predicted = Network.argmax (Network.predict model (Dataset.imagesInto buffer d indices))
            Array.iter2 (fun p i -> counts[int d.Labels[i], p] <- counts[int d.Labels[i], p] + 1) predicted indices
        counts

// ─── Training ───────────────────────────────────────────────────────────────────────────────────

/// How the mini-batches are drawn from the training set.
type Sampling =
    /// Uniformly with replacement, as the book's np.random.choice.
    | WithReplacement = 0
    /// A fresh random order each epoch, taken a batch at a time.
    | Shuffle = 1
    /// In order from the first image, wrapping around: no randomness at all.
    | Sequential = 2

/// The recipe of a training run; Training.bookRecipe holds the book's values.
type TrainConfig =
    { /// The layer sizes, input first ([784; 50; 10] for the book's net).
      Sizes: int list
      /// The activation between Affine layers.
      Activation: Activation
      /// The SGD learning rate.
      LearningRate: float
      /// The number of images in a mini-batch.
      BatchSize: int
      /// The number of SGD steps.
      Iterations: int
      /// The standard deviation of the initial weights.
      WeightInitStd: float
      /// Fixes the initial weights and the batches drawn: same seed, same run.
      Seed: int
      /// How the batches are drawn.
      Sampling: Sampling
      /// Evaluate each epoch on only the first this-many images of each set (the book's
      /// evaluate_sample_num_per_epoch); None for the whole sets.
      EvalSample: int option }

/// What a run has reached at the end of an epoch (or of its last, partial epoch).
type EpochReport<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// 1 for the first epoch.
      Epoch: int
      /// SGD steps taken so far.
      Iteration: int
      /// The model after those steps.
      Model: Model<'T>
      /// The loss of each step in this epoch, in order.
      Losses: float[]
      /// Accuracy on the whole training set.
      TrainAccuracy: float
      /// Accuracy on the whole test set.
      TestAccuracy: float }

    /// The mean loss of the epoch's steps.
    member r.MeanLoss = if r.Losses.Length = 0 then nan else Array.average r.Losses

/// Mini-batch SGD as a fold.
[<RequireQualifiedAccess>]
module Training =
    /// The book's recipe (5.7.4): 784-50-10 with ReLU, learning rate 0.1, batch 100, 10,000
    /// iterations, weights N(0, 0.01²).
    let bookRecipe =
        { Sizes = [ 784; 50; 10 ]
          Activation = Activation.ReLU
          LearningRate = 0.1
          BatchSize = 100
          Iterations = 10000
          WeightInitStd = 0.01
          Seed = 42
          Sampling = Sampling.WithReplacement
          EvalSample = None }

    /// Steps per epoch: one pass over the training set's worth of images (600 for MNIST).
    let iterationsPerEpoch (config: TrainConfig) (trainCount: int) = max (trainCount / config.BatchSize) 1

    /// Endless batches of indices drawn uniformly with replacement from 0 .. count-1, as the
    /// book's np.random.choice does; the same seed gives the same batches.
    let batchIndices (seed: int) (batchSize: int) (count: int) : seq<int[]> =
        seq {
            let rng = Random(seed)
            while true do
                yield Array.init batchSize (fun _ -> rng.Next count)
        }

    /// Endless batches drawn as `sampling` says from 0 .. count-1; the same seed, the same batches.
    let batchesBy (sampling: Sampling) (seed: int) (batchSize: int) (count: int) : seq<int[]> =
        match sampling with
        | Sampling.Sequential -> Seq.initInfinite (fun k -> Array.init batchSize (fun i -> (k * batchSize + i) % count))
        | Sampling.Shuffle ->
            // One permutation per epoch (Fisher-Yates), read a batch at a time, wrapping into the next.
            let rng = Random(seed)
            let permutation () =
                let p = Array.init count id
                for i in count - 1 .. -1 .. 1 do
                    let j = rng.Next(i + 1)
                    let t = p[i]
                    p[i] <- p[j]
                    p[j] <- t
                p
            seq { while true do yield! permutation () } |> Seq.chunkBySize batchSize
        | _ -> batchIndices seed batchSize count

    /// One SGD step: W ← W - lr · ∂L/∂W for every parameter. Returns the new model and the loss
    /// before the step.
    let inline sgdStep (learningRate: ^T) (model: Model< ^T >) (x: Matrix< ^T >, t: Labels< ^T >) =
        let loss, grads, states = Network.gradient model x t
        let update p g =
            match p, g with
            | Params.Affine p, Grads.Affine g -> Params.Affine { W = Linalg.addScaled p.W -learningRate g.dW; b = p.b - g.db * learningRate }
            | p, _ -> p
        { model with Params = List.map2 update model.Params grads; States = states }, loss

    /// The run without evaluation on the given mini-batches (images and labels), one report
    /// per epoch, lazily: the fold of sgdStep over the batches, a report after every epoch's
    /// worth of steps and after the last step. A batch is drawn only when its step runs, so a
    /// batch sequence that ends early (a cancelled run) ends the run after the current step.
    /// The accuracies are left NaN (see `evaluated`).
    let inline trainedOn (config: TrainConfig) (train: Dataset) (initial: Model< ^T >) (batches: seq<Matrix< ^T > * Labels< ^T >>) : seq<EpochReport< ^T >> =
        let lr = ofFloat config.LearningRate
        let perEpoch = iterationsPerEpoch config train.Count
        let start = { Epoch = 0; Iteration = 0; Model = initial; Losses = [||]; TrainAccuracy = nan; TestAccuracy = nan }
        // The state after each step: the run so far, the losses of the epoch in progress, and
        // whether this step closed an epoch. None after the last batch closes a partial epoch.
        let step (run: EpochReport< ^T >, losses, _) batch =
            match batch with
            | Some batch ->
                let model, loss = sgdStep lr run.Model batch
                let run = { run with Iteration = run.Iteration + 1; Model = model }
                if run.Iteration % perEpoch = 0 then
                    { run with Epoch = run.Epoch + 1; Losses = List.rev (float loss :: losses) |> Array.ofList }, [], true
                else
                    run, float loss :: losses, false
            | None when not losses.IsEmpty -> { run with Epoch = run.Epoch + 1; Losses = List.rev losses |> Array.ofList }, [], true
            | None -> run, [], false
        Seq.append (Seq.map Some batches) [ None ]
        |> Seq.scan step (start, [], false)
        |> Seq.choose (fun (run, _, closed) -> if closed then Some run else None)

    /// The run without evaluation, one report per epoch, lazily: trainedOn the config's
    /// Iterations batches drawn from its seed.
    let inline trained (config: TrainConfig) (train: Dataset) (initial: Model< ^T >) : seq<EpochReport< ^T >> =
        batchesBy config.Sampling (config.Seed + 1) config.BatchSize train.Count
        |> Seq.truncate config.Iterations
        |> Dataset.batchesIn 2 (fun gather -> gather ()) train
        |> trainedOn config train initial

    /// The report with the accuracy of its model on the training and test sets (on their first
    /// config.EvalSample images when that is set).
    let inline evaluated (config: TrainConfig) (train: Dataset) (test: Dataset) (report: EpochReport< ^T >) =
        let sample d = match config.EvalSample with Some n -> Dataset.take n d | None -> d
        { report with TrainAccuracy = Evaluate.accuracy report.Model (sample train); TestAccuracy = Evaluate.accuracy report.Model (sample test) }

    /// The run, one report per epoch, lazily: `trained`, each epoch then evaluated on the whole
    /// training and test sets. The last report holds the trained model; enumerating the sequence
    /// again repeats the same run.
    let inline epochs (config: TrainConfig) (train: Dataset) (test: Dataset) (initial: Model< ^T >) : seq<EpochReport< ^T >> =
        trained config train initial |> Seq.map (evaluated config train test)

    /// The results of the items in order, each taken (by `result`) only once the next item has
    /// been made: item k + 1 starts on another core while result k is in use.
    let oneAheadBy (result: 'a -> 'b) (items: seq<'a>) : seq<'b> =
        Seq.append (Seq.map Some items) [ None ] |> Seq.pairwise |> Seq.map (fun (current, _) -> result current.Value)

    /// The results of the tasks in order, each awaited only once the next one has started, so
    /// that task k + 1 runs on another core while result k is in use. While it waits, this
    /// thread helps with the helper thread's products (Backend.Halves.await).
    let oneAhead (tasks: seq<Threading.Tasks.Task<'a>>) : seq<'a> = oneAheadBy Backend.Halves.await tasks

    /// The same reports as `epochs`, computed on two cores: each batch is gathered (by the helper
    /// thread, when free) while the step before it runs, large products are split between the
    /// two cores, and each epoch is evaluated while the next one trains. Models and datasets are
    /// immutable values, so the work on the other core cannot race with the training (the batch
    /// buffers are reused only two steps after their step is done). Each report comes one epoch
    /// later than from `epochs`, with the same numbers.
    let inline epochsOverlapped (config: TrainConfig) (train: Dataset) (test: Dataset) (initial: Model< ^T >) : seq<EpochReport< ^T >> =
        batchesBy config.Sampling (config.Seed + 1) config.BatchSize train.Count
        |> Seq.truncate config.Iterations
        // Batch k + 1 is offered to the helper thread before batch k is taken, so the helper can
        // gather it while step k runs (or this thread gathers it, if the helper is busy).
        |> Dataset.batchesIn 3 (fun gather -> let batch = ref Unchecked.defaultof<_> in Backend.Halves.offer false (fun () -> batch.Value <- gather ()), batch) train
        |> oneAheadBy (fun (offer, batch) -> offer.Join(); batch.Value)
        |> trainedOn config train initial
        |> Seq.map (fun report -> Backend.Halves.inBackground (fun () -> evaluated config train test report))
        |> oneAhead

    /// A fresh model for the config, drawn from its seed.
    let inline initialModel (config: TrainConfig) : Model< ^T > =
        Network.init config.Seed config.WeightInitStd (Network.layers config.Activation config.Sizes)
