namespace Backprop.Core

// Error backpropagation as chapter 5 of "Deep Learning from Scratch" builds it, written as pure
// functions. Read top-down: scalar helpers, the computational-graph nodes (5.4), the functions
// (sigmoid, softmax, cross-entropy), the layers (5.5, 5.6), the network, its named parameters and
// its gradients (5.7), and training as a fold of SGD steps over mini-batches.
//
// Every layer is a `forward` that returns its output and a cache record (what the book keeps on
// `self`), directly above a `backward` that takes that cache and the upstream gradient `dout` and
// returns `dx` and a gradient record. Nothing mutates its inputs, and nothing here prints, reads
// files or keeps a setting: data and evaluation are in Data.fs, the two-core pipeline that runs
// the same fold faster in Pipeline.fs, the fast kernels under the layers in Linalg.fs.
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
    let inline softmax (x: Matrix< ^T >) = Linalg.softmaxRows x // Elementwise.softmax of every row

    /// Mean cross-entropy error over the batch, -Σ t·log(y + delta) / N, for a given delta.
    let inline crossEntropyErrorWith (delta: ^T) (y: Matrix< ^T >) (t: Labels< ^T >) : ^T =
        let n = ofFloat (float y.RowCount)
        let total =
            match t with
            | Labels.ClassIndices t -> Array.init y.RowCount (fun i -> log (y[i, t[i]] + delta)) |> Array.sum
            | Labels.OneHot t -> t.PointwiseMultiply(y |> map (fun v -> log (v + delta))).Enumerate() |> Seq.sum
        -total / n

    /// The elementwise formulas of the layers, one element at a time: the definitions that
    /// Linalg's vectorized kernels compute a whole matrix at a time (and are tested against).
    [<RequireQualifiedAccess>]
    module Elementwise =
        /// ReLU: max(0, x).
        let inline relu (x: ^T) = if x > LanguagePrimitives.GenericZero then x else LanguagePrimitives.GenericZero

        /// The step function ReLU's backward multiplies by: 1 where x > 0, else 0 (the book's
        /// mask, inverted: the book keeps x <= 0).
        let inline step (x: ^T) = if x > LanguagePrimitives.GenericZero then LanguagePrimitives.GenericOne else LanguagePrimitives.GenericZero

        /// The sigmoid's derivative written in its output y: y(1 - y).
        let inline sigmoidDerivative (y: ^T) = y * (LanguagePrimitives.GenericOne - y)

        /// softmax of one row: exp(a_k - max a) / Σ_i exp(a_i - max a).
        let inline softmax (a: ^T[]) =
            let m = Array.max a
            let e = a |> Array.map (fun v -> exp (v - m))
            let s = Array.sum e
            e |> Array.map (fun v -> v / s)

    /// Mean cross-entropy error over the batch: -Σ t·log(y + δ) / N, with the book's δ = 1e-7
    /// that keeps log(0) = -∞ out (4.2.2).
    let inline crossEntropyError (y: Matrix< ^T >) (t: Labels< ^T >) : ^T = crossEntropyErrorWith (ofFloat 1e-7) y t

// ─── 5.5, 5.6 Layers ────────────────────────────────────────────────────────────────────────────
//
// The elementwise formulas are written out in Functions.Elementwise (max(0, x), the mask,
// y(1 - y)); the layers call Linalg's vectorized kernels for them, which the tests check against
// those definitions element by element (tests/KernelTests.fs).

/// Whether a forward pass is part of training or of inference (the book's train_flg): layers
/// such as Dropout and Batch Normalization behave differently in each.
[<RequireQualifiedAccess>]
type Mode =
    /// Training: batch statistics, random masks, states updated.
    | Train
    /// Inference (prediction, evaluation): running statistics, no randomness, states unchanged.
    | Inference

/// Cache of ReLU: 1 where the input was positive, 0 elsewhere (the book's mask, inverted).
type ReluCache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// 1 where x > 0, 0 where x ≤ 0.
      mask: Matrix<'T> }

/// ReLU (5.5.1): out = max(0, x).
[<RequireQualifiedAccess>]
module Relu =
    /// out = max(0, x), element by element; the mask remembers where x > 0.
    let inline forward (x: Matrix< ^T >) =
        let mask = Linalg.positive x // Elementwise.step: 1 where x > 0, else 0
        Linalg.relu x, { mask = mask } // Elementwise.relu: max(0, x)

    /// dx = dout where x > 0, else 0: dout ⊙ mask. (The book zeroes dout in place; this returns a new matrix.)
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
        dout.PointwiseMultiply(cache.out |> map Functions.Elementwise.sigmoidDerivative)

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
        let out = Linalg.mulAddRow x p.W p.b // x · W, then b added to each row
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

/// One named array of a model: a parameter (W1, b1, ...), a gradient (the same names), a layer
/// state or an optimizer's state. Matrices and vectors keep their shapes.
[<RequireQualifiedAccess>]
type Value<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// A matrix, such as W.
    | Matrix of Matrix<'T>
    /// A vector, such as b.
    | Vector of Vector<'T>

/// A model's parameters (or gradients, or states) as one flat list of named arrays, in layer
/// order: [ "W1", W1; "b1", b1; "W2", W2; ... ], the book's params dict.
type Named<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    (string * Value<'T>) list

/// Working with named arrays whatever their shape.
[<RequireQualifiedAccess>]
module Value =
    /// A copy (fresh storage).
    let clone (v: Value<'T>) : Value<'T> =
        match v with
        | Value.Matrix m -> Value.Matrix(m.Clone())
        | Value.Vector v -> Value.Vector(v.Clone())

    /// The elements, converted one by one (e.g. float to float32).
    let convert (f: 'T -> 'U) (v: Value<'T>) : Value<'U> =
        match v with
        | Value.Matrix m -> Value.Matrix(Matrix<'U>.Build.Dense(m.RowCount, m.ColumnCount, m.AsColumnMajorArray() |> Array.map f))
        | Value.Vector v -> Value.Vector(Vector<'U>.Build.Dense(v.AsArray() |> Array.map f))

    /// The shape: [| rows; columns |] or [| length |].
    let shape (v: Value<'T>) : int[] =
        match v with
        | Value.Matrix m -> [| m.RowCount; m.ColumnCount |]
        | Value.Vector v -> [| v.Count |]

    /// The elements in row-major (numpy C) order.
    let toRowMajor (v: Value<'T>) : 'T[] =
        match v with
        | Value.Matrix m -> m.ToRowMajorArray()
        | Value.Vector v -> v.ToArray()

    /// The storage array itself (column-major for a matrix): writing to it changes the value.
    let storage (v: Value<'T>) : 'T[] =
        match v with
        | Value.Matrix m -> m.AsColumnMajorArray()
        | Value.Vector v -> v.AsArray()

    /// p + alpha · g, for two values of the same shape (the update p - lr · g with alpha = -lr).
    let inline addScaled (p: Value< ^T >) (alpha: ^T) (g: Value< ^T >) : Value< ^T > =
        match p, g with
        | Value.Matrix p, Value.Matrix g -> Value.Matrix(Linalg.addScaled p alpha g)
        | Value.Vector p, Value.Vector g -> Value.Vector(p + g * alpha)
        | _ -> invalidArg "g" $"a gradient of shape %A{shape g} for a parameter of shape %A{shape p}"

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

/// The state a layer carries from one forward pass to the next, in the element type of its
/// model. The layers of chapter 5 have none; Dropout (a counter-based random key, so that the
/// same state gives the same mask) and Batch Normalization (running mean and variance) add their
/// cases here. Every forward takes a state and gives one back.
[<RequireQualifiedAccess>]
type LayerState<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// No state.
    | Stateless

/// A network with its parameters and states: layers, then Softmax-with-Loss at the end.
type Model<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The layers in order (Softmax-with-Loss, always last, is implied).
      Layers: Layer list
      /// One entry per layer (Params.Empty for layers without parameters).
      Params: Params<'T> list
      /// One entry per layer.
      States: LayerState<'T> list }

/// One layer applied forward and backward, whatever its kind; and its parameters and state as
/// named arrays. Every match here is total: a new layer kind is a compile error until each
/// function handles it.
[<RequireQualifiedAccess>]
module Layer =
    /// Runs the layer forward: (mode, params, state, x) -> (out, cache, new state).
    let inline forward (mode: Mode) (layer: Layer) (p: Params< ^T >) (state: LayerState< ^T >) (x: Matrix< ^T >) =
        ignore mode // the layers of chapter 5 behave the same in training and inference
        match layer, p with
        | Layer.Affine _, Params.Affine p -> let out, c = Affine.forward p x in out, Cache.Affine c, state
        | Layer.Affine _, Params.Empty -> invalidArg "p" "an Affine layer needs Affine parameters"
        | Layer.Relu, _ -> let out, c = Relu.forward x in out, Cache.Relu c, state
        | Layer.Sigmoid, _ -> let out, c = Sigmoid.forward x in out, Cache.Sigmoid c, state

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

    /// The names of the layer's parameters, given its number among the layers of its kind
    /// (1 for the first Affine): W1 and b1, as the book names them.
    let parameterNames (layer: Layer) (k: int) : string list =
        match layer with
        | Layer.Affine _ -> [ $"W{k}"; $"b{k}" ]
        | Layer.Relu
        | Layer.Sigmoid -> []

    /// The names of the layer's state arrays (none for the layers of chapter 5).
    let stateNames (layer: Layer) (k: int) : string list =
        ignore k
        match layer with
        | Layer.Affine _
        | Layer.Relu
        | Layer.Sigmoid -> []

    /// The layer's parameters as values, in the order of parameterNames.
    let parameterValues (p: Params<'T>) : Value<'T> list =
        match p with
        | Params.Affine p -> [ Value.Matrix p.W; Value.Vector p.b ]
        | Params.Empty -> []

    /// The gradients as values, in the order of parameterNames.
    let gradientValues (g: Grads<'T>) : Value<'T> list =
        match g with
        | Grads.Affine g -> [ Value.Matrix g.dW; Value.Vector g.db ]
        | Grads.Empty -> []

    /// The layer's state as values, in the order of stateNames.
    let stateValues (s: LayerState<'T>) : Value<'T> list =
        match s with
        | LayerState.Stateless -> []

    /// The layer's Params from values in the order of parameterNames, checking their shapes.
    let paramsOf (layer: Layer) (values: Value<'T> list) : Params<'T> =
        match layer, values with
        | Layer.Affine(i, o), [ Value.Matrix w; Value.Vector b ] when w.RowCount = i && w.ColumnCount = o && b.Count = o -> Params.Affine { W = w; b = b }
        | Layer.Affine(i, o), _ -> invalidArg "values" $"Affine(%d{i}, %d{o}) takes W (%d{i}x%d{o}) and b (%d{o}), got shapes %A{List.map Value.shape values}"
        | (Layer.Relu | Layer.Sigmoid), [] -> Params.Empty
        | (Layer.Relu | Layer.Sigmoid), _ -> invalidArg "values" $"%A{layer} has no parameters"

    /// The layer's state from values in the order of stateNames.
    let stateOf (layer: Layer) (values: Value<'T> list) : LayerState<'T> =
        match layer, values with
        | (Layer.Affine _ | Layer.Relu | Layer.Sigmoid), [] -> LayerState.Stateless
        | _ -> invalidArg "values" $"%A{layer} has no state"

    /// The initial state of a layer (drawn from the seed where it has randomness).
    let initialState (seed: int) (layer: Layer) : LayerState<'T> =
        ignore seed
        match layer with
        | Layer.Affine _
        | Layer.Relu
        | Layer.Sigmoid -> LayerState.Stateless

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

    /// Each layer's number among the layers of its kind, 1-based (W1 is the first Affine's).
    let private numbered (layers: Layer list) : (Layer * int) list =
        let kind (l: Layer) = match l with Layer.Affine _ -> 0 | Layer.Relu -> 1 | Layer.Sigmoid -> 2
        layers |> List.mapFold (fun (counts: Map<int, int>) l -> let k = counts.TryFind(kind l) |> Option.defaultValue 0 in (l, k + 1), counts.Add(kind l, k + 1)) Map.empty |> fst

    /// The parameters' names in order: W1, b1, W2, b2, ...
    let parameterNames (layers: Layer list) : string list = numbered layers |> List.collect (fun (l, k) -> Layer.parameterNames l k)

    /// The layer states' names in order (none for the layers of chapter 5).
    let stateNames (layers: Layer list) : string list = numbered layers |> List.collect (fun (l, k) -> Layer.stateNames l k)

    /// The model's parameters as one named flat list: [ "W1", W1; "b1", b1; "W2", W2; ... ].
    /// The values are the model's own (not copies).
    let parameters (model: Model<'T>) : Named<'T> =
        List.zip (parameterNames model.Layers) (model.Params |> List.collect Layer.parameterValues)

    /// The layers' states as one named flat list.
    let states (model: Model<'T>) : Named<'T> =
        List.zip (stateNames model.Layers) (model.States |> List.collect Layer.stateValues)

    /// A model from its layers and named parameters and states (as `parameters` and `states`
    /// give them): every name must be there with the layer's shape. Raises ArgumentException
    /// naming what is missing or does not fit.
    let build (layers: Layer list) (parameters: Named<'T>) (states: Named<'T>) : Model<'T> =
        let find (what: string) (named: Named<'T>) (name: string) =
            match List.tryFind (fst >> (=) name) named with
            | Some(_, v) -> v
            | None -> invalidArg what $"no {what} named {name}"
        let numberedLayers = numbered layers
        { Layers = layers
          Params = numberedLayers |> List.map (fun (l, k) -> Layer.paramsOf l (Layer.parameterNames l k |> List.map (find "parameter" parameters)))
          States = numberedLayers |> List.map (fun (l, k) -> Layer.stateOf l (Layer.stateNames l k |> List.map (find "state" states))) }

    /// The same model with new parameters (names and shapes as `parameters` gives them).
    let withParameters (model: Model<'T>) (parameters: Named<'T>) : Model<'T> = build model.Layers parameters (states model)

    /// A deep copy: the same layers, parameters and states in fresh arrays.
    let clone (model: Model<'T>) : Model<'T> =
        build model.Layers (parameters model |> List.map (fun (n, v) -> n, Value.clone v)) (states model |> List.map (fun (n, v) -> n, Value.clone v))

    /// The model in another element type (float to float32, or back), element by element.
    let convert (f: 'T -> 'U) (model: Model<'T>) : Model<'U> =
        build model.Layers (parameters model |> List.map (fun (n, v) -> n, Value.convert f v)) (states model |> List.map (fun (n, v) -> n, Value.convert f v))

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
            | Layer.Relu
            | Layer.Sigmoid -> Params.Empty
        { Layers = layers; Params = List.map paramsOf layers; States = List.map (Layer.initialState seed) layers }

    /// Runs every layer forward in the given mode: the scores (before softmax), the caches in
    /// reverse order (last layer first, ready for backward) and the new states.
    let inline forward (mode: Mode) (model: Model< ^T >) (x: Matrix< ^T >) =
        List.zip3 model.Layers model.Params model.States
        |> List.fold
            (fun (x, caches, states) (layer, p, s) ->
                let out, cache, s' = Layer.forward mode layer p s x
                out, cache :: caches, s' :: states)
            (x, [], [])
        |> fun (scores, caches, states) -> scores, caches, List.rev states

    /// The scores for x, one row per sample, in inference mode (the book's predict: no
    /// softmax, argmax is the same).
    let inline predict (model: Model< ^T >) (x: Matrix< ^T >) =
        let scores, _, _ = forward Mode.Inference model x
        scores

    /// The mean loss of the model on x against labels t, in training mode (the states it
    /// would give back are dropped).
    let inline loss (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) =
        let scores, _, _ = forward Mode.Train model x
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

    /// The loss and the gradient of every parameter by backpropagation, named as `parameters`
    /// names them (dW1 under "W1", as the book's grads['W1']): one forward pass in training
    /// mode, then each layer's backward from the last to the first (the first layer computes no
    /// dx: nothing lies below it). Also returns the new states.
    let inline gradient (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) : ^T * Named< ^T > * LayerState< ^T > list =
        let scores, caches, states = forward Mode.Train model x
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
        let grads = Layer.gradients first dout :: grads
        loss, List.zip (parameterNames model.Layers) (grads |> List.collect Layer.gradientValues), states

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

    /// The loss with no δ inside the log: -Σ t·log(y) / N, in training mode. Backpropagation's
    /// (y - t) / N is the exact gradient of this function; the δ of `loss` shifts the true
    /// gradient by a factor y / (y + δ), about 1e-6 for y ≈ 0.1, which would swamp the check.
    /// (The book's gradient-check figures, 1e-10 to 1e-13, are what this gives.)
    let inline lossWithoutDelta (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) =
        let scores, _, _ = forward Mode.Train model x
        Functions.crossEntropyErrorWith LanguagePrimitives.GenericZero (Functions.softmax scores) t

    /// The gradient of every parameter by numerical differentiation of lossWithoutDelta, named
    /// as `parameters` names them: slow, and only for checking backpropagation (4.4.2, 5.7.3).
    /// Works on a private copy of the model, so the model passed in is never touched.
    let inline numericalGradient (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) : Named< ^T > =
        let copy = clone model
        let f () = lossWithoutDelta copy x t
        parameters copy
        |> List.map (fun (name, p) ->
            let g = numericalGradientOf f (Value.storage p) // perturbs the copy's own storage
            name,
            match p with
            | Value.Matrix m -> Value.Matrix(Matrix< ^T>.Build.Dense(m.RowCount, m.ColumnCount, g))
            | Value.Vector _ -> Value.Vector(Vector< ^T>.Build.Dense g))

    /// The book's gradient check (5.7.3): for each parameter (W1, b1, W2, b2, ...), the mean
    /// absolute difference between its gradient by backpropagation and by numerical differentiation.
    let inline gradientCheck (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) : (string * float) list =
        let _, backprop, _ = gradient model x t
        let numerical = numericalGradient model x t
        List.map2
            (fun (name, a) (_, b) -> name, Array.map2 (fun (u: ^T) (v: ^T) -> abs (float u - float v)) (Value.toRowMajor a) (Value.toRowMajor b) |> Array.average)
            backprop
            numerical

// ─── Training ───────────────────────────────────────────────────────────────────────────────────

/// How the mini-batches are drawn from the training set.
type Sampling =
    /// Uniformly with replacement, as the book's np.random.choice.
    | WithReplacement = 0
    /// A fresh random order each epoch, taken a batch at a time.
    | Shuffle = 1
    /// In order from the first image, wrapping around: no randomness at all.
    | Sequential = 2

/// The recipe of a training run (how to train, not what: the network is the model's layers);
/// Training.bookRecipe holds the book's values.
type TrainConfig =
    { /// The SGD learning rate.
      LearningRate: float
      /// The number of images in a mini-batch.
      BatchSize: int
      /// The number of SGD steps.
      Iterations: int
      /// Fixes the batches drawn: same seed, same run (the initial weights take their own seed).
      Seed: int
      /// How the batches are drawn.
      Sampling: Sampling
      /// Evaluate each epoch on only the first this-many images of each set (the book's
      /// evaluate_sample_num_per_epoch); None for the whole sets.
      EvalSample: int option }

/// What training carries from one step to the next: the model, the optimizer's state (named
/// arrays, such as Momentum's velocities; none for SGD) and the number of steps taken.
type TrainState<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The model after Step steps.
      Model: Model<'T>
      /// The optimizer's state, named after the parameters it belongs to.
      Optimizer: Named<'T>
      /// Steps taken so far.
      Step: int }

/// What a run has reached at the end of an epoch (or of its last, partial epoch).
type EpochReport<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// 1 for the first epoch.
      Epoch: int
      /// Steps taken so far.
      Iteration: int
      /// The training state after those steps (its Model is the trained model).
      State: TrainState<'T>
      /// The loss of each step in this epoch, in order.
      Losses: float[]
      /// Accuracy on the training set (NaN until evaluated).
      TrainAccuracy: float
      /// Accuracy on the test set (NaN until evaluated).
      TestAccuracy: float }

    /// The model after the epoch.
    member r.Model = r.State.Model

    /// The mean loss of the epoch's steps.
    member r.MeanLoss = if r.Losses.Length = 0 then nan else Array.average r.Losses

/// Mini-batch SGD as a fold.
[<RequireQualifiedAccess>]
module Training =
    /// The book's recipe (5.7.4): learning rate 0.1, batch 100 drawn with replacement, 10,000
    /// iterations. The book's network is `bookNetwork`, its initial weights N(0, 0.01²).
    let bookRecipe =
        { LearningRate = 0.1
          BatchSize = 100
          Iterations = 10000
          Seed = 42
          Sampling = Sampling.WithReplacement
          EvalSample = None }

    /// The book's TwoLayerNet (5.7.2): 784-50-10 with ReLU.
    let bookNetwork = Network.layers Activation.ReLU [ 784; 50; 10 ]

    /// The standard deviation of the book's initial weights.
    let bookWeightInitStd = 0.01

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

    /// The state a run starts from: the model, no optimizer state, no steps.
    let start (model: Model<'T>) : TrainState<'T> = { Model = model; Optimizer = []; Step = 0 }

    /// One SGD step (the book's `params[key] -= learning_rate * grads[key]` for every key): the
    /// gradient by backpropagation, then each named parameter moved against its gradient.
    /// Returns the new state and the loss before the step.
    let inline step (learningRate: ^T) (state: TrainState< ^T >) (x: Matrix< ^T >, t: Labels< ^T >) =
        let loss, grads, layerStates = Network.gradient state.Model x t
        let parameters = List.map2 (fun (name, p) (_, g) -> name, Value.addScaled p -learningRate g) (Network.parameters state.Model) grads
        let model = { Network.withParameters state.Model parameters with States = layerStates }
        { state with Model = model; Step = state.Step + 1 }, loss

    /// One SGD step on a model alone (no optimizer state to carry): the new model and the loss.
    let inline sgdStep (learningRate: ^T) (model: Model< ^T >) (batch: Matrix< ^T > * Labels< ^T >) =
        let state, loss = step learningRate (start model) batch
        state.Model, loss

    /// Training as a fold: `step` applied to each mini-batch in turn, from `initial`. This is
    /// the whole of training; the functions below only report on the way.
    let inline train (learningRate: ^T) (initial: TrainState< ^T >) (batches: seq<Matrix< ^T > * Labels< ^T >>) : TrainState< ^T > =
        batches |> Seq.fold (fun state batch -> fst (step learningRate state batch)) initial

    /// The same fold, one (state, loss) after each step, lazily (Seq.scan, without its seed).
    let inline steps (learningRate: ^T) (initial: TrainState< ^T >) (batches: seq<Matrix< ^T > * Labels< ^T >>) : seq<TrainState< ^T > * ^T> =
        batches |> Seq.scan (fun (state, _) batch -> step learningRate state batch) (initial, LanguagePrimitives.GenericZero) |> Seq.skip 1

    /// The states of a run grouped into epochs of perEpoch steps: a report after every
    /// perEpoch-th step and one after the last step if an epoch is then in progress. Lazily: a
    /// step runs only when its epoch is asked for, and a run whose batches end early (a
    /// cancelled run) ends with a partial epoch. The accuracies are NaN (see Evaluate).
    let byEpoch (perEpoch: int) (steps: seq<TrainState<'T> * float>) : seq<EpochReport<'T>> =
        seq {
            let losses = ResizeArray<float>()
            let mutable last = None
            let mutable epoch = 0
            let report (state: TrainState<'T>) =
                epoch <- epoch + 1
                let r = { Epoch = epoch; Iteration = state.Step; State = state; Losses = losses.ToArray(); TrainAccuracy = nan; TestAccuracy = nan }
                losses.Clear()
                r
            for state, loss in steps do
                losses.Add loss
                last <- Some state
                if losses.Count = perEpoch then yield report state
            match last with
            | Some state when losses.Count > 0 -> yield report state
            | _ -> ()
        }

    /// The run on the given mini-batches, one report per epoch, lazily: the fold of `step`
    /// over the batches from `initial`, grouped into epochs (byEpoch). The accuracies are NaN.
    let inline trainedOn (config: TrainConfig) (perEpoch: int) (initial: TrainState< ^T >) (batches: seq<Matrix< ^T > * Labels< ^T >>) : seq<EpochReport< ^T >> =
        steps (ofFloat config.LearningRate) initial batches |> Seq.map (fun (s, loss) -> s, float loss) |> byEpoch perEpoch
