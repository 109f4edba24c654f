namespace Backprop.Core

// Error backpropagation as chapters 5 and 6 of "Deep Learning from Scratch" build it, written as
// pure functions. Read top-down: scalar helpers, the computational-graph nodes (5.4), the
// functions (sigmoid, softmax, cross-entropy), the layers (5.5, 5.6; Tanh; Batch Normalization and
// Dropout, 6.3 and 6.4.3), the network, its named parameters and its gradients (5.7; the initial
// weights of 6.2), the optimizers (6.1; weight decay, 6.4.2), and training as a fold of optimizer
// steps over mini-batches.
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

        /// tanh's derivative written in its output y: 1 - y².
        let inline tanhDerivative (y: ^T) = LanguagePrimitives.GenericOne - y * y

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

/// Cache of Tanh: its output y, from which the derivative follows.
type TanhCache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The forward output y = tanh(x).
      out: Matrix<'T> }

/// Tanh, the third activation (the book's code has only ReLU and Sigmoid; its 6.2.4 names
/// tanh beside the sigmoid as an activation suited to Xavier's initial weights): out = tanh(x).
[<RequireQualifiedAccess>]
module Tanh =
    /// out = tanh(x) = (eˣ - e⁻ˣ) / (eˣ + e⁻ˣ).
    let inline forward (x: Matrix< ^T >) =
        let out = x |> map tanh
        out, { out = out }

    /// dx = dout · (1 - y²): the derivative of tanh written in its own output, as the sigmoid's.
    let inline backward (cache: TanhCache< ^T >) (dout: Matrix< ^T >) =
        Linalg.hadamard dout (cache.out |> map Functions.Elementwise.tanhDerivative)

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
        let out = Linalg.affine x p.W p.b // x · W, then b added to each row
        out, { x = x; xShape = [| x.RowCount; x.ColumnCount |]; W = p.W }

    /// The parameters' gradients alone: dW = xᵀ · dout, db = the column sums of dout (b was
    /// added to every row, so its gradient gathers every row's).
    let inline gradients (cache: AffineCache< ^T >) (dout: Matrix< ^T >) =
        { dW = Linalg.transposeTimes cache.x dout; db = Linalg.columnSums dout }

    /// dx = dout · Wᵀ, and the gradients dW, db.
    let inline backward (cache: AffineCache< ^T >) (dout: Matrix< ^T >) =
        Linalg.timesTranspose dout cache.W, gradients cache dout

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

// ─── 6.3 Batch Normalization, 6.4.3 Dropout ─────────────────────────────────────────────────────
//
// Two layers that behave differently in training and in inference (the book's train_flg, here a
// Mode) and carry a state from one forward pass to the next: Batch Normalization its running
// mean and variance, Dropout the key its masks are drawn from. The book keeps both on `self`;
// here a forward pass takes the state and gives the new one back (LayerState, below), as Lux's
// layers do. The formulas are the book's (common/layers.py), in its order.
//
// Where PyTorch differs, for anyone comparing numbers:
//   - Dropout: PyTorch's is "inverted": training multiplies by mask / (1 - p) and inference is
//     the identity. The book's (and this) multiplies by the mask in training and by (1 - ratio)
//     in inference: the same expectation, other numbers in both modes.
//   - BatchNorm: both put ε inside the root, √(var + ε), but PyTorch's ε is 1e-5 (here the book's
//     10e-7 = 1e-6); PyTorch's running variance averages the unbiased batch variance (÷ (N - 1))
//     and starts at 1, the book's the biased one (÷ N) from 0. The momentum is the same (PyTorch's
//     0.1 weighs the new batch as the book's 0.9 weighs the old average).
//   - Adam (below, with the optimizers): PyTorch's ε is 1e-8 and is added to the bias-corrected
//     √v̂; the book folds the correction into the learning rate and adds its 1e-7 to √v, which
//     is ε/√(1 - β2ᵗ) in PyTorch's terms.

/// Parameters of a Batch Normalization layer: a scale γ and a shift β for each feature.
type BatchNormParams<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The scale of each feature (1 at the start).
      gamma: Vector<'T>
      /// The shift of each feature (0 at the start).
      beta: Vector<'T> }

/// Gradients of a Batch Normalization layer, field for field like BatchNormParams.
type BatchNormGrads<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// ∂L/∂γ.
      dgamma: Vector<'T>
      /// ∂L/∂β.
      dbeta: Vector<'T> }

/// The state of a Batch Normalization layer: the running averages of the batch statistics,
/// which inference normalizes with (the book's running_mean and running_var).
type BatchNormState<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The running mean of each feature (0 at the start).
      runningMean: Vector<'T>
      /// The running (biased) variance of each feature (0 at the start, as the book's).
      runningVar: Vector<'T> }

/// Cache of Batch Normalization: what the book keeps on self for backward.
type BatchNormCache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// x minus the mean it was normalized with.
      xc: Matrix<'T>
      /// The normalized input xc / std.
      xn: Matrix<'T>
      /// √(var + ε) of each feature.
      std: Vector<'T>
      /// The scale the forward pass used.
      gamma: Vector<'T>
      /// The number of samples (rows) in the batch.
      batchSize: int
      /// True when the forward pass used the batch's own statistics (training), false when it
      /// used the running ones (inference): the mean then does not depend on the batch, and
      /// backward is that simpler function's derivative.
      batchStatistics: bool }

/// Batch Normalization (6.3, the book's BatchNormalization): each feature (column) normalized
/// to mean 0 and variance 1 over the batch, then scaled by γ and shifted by β.
[<RequireQualifiedAccess>]
module BatchNormalization =
    /// The weight of the old running average in each update (the book's default).
    let momentum = 0.9

    /// ε added to the variance under the root: the book's 10e-7 (= 1e-6).
    let eps = 10e-7

    /// The mean of each column: Σ_i x_ij / N (numpy's x.mean(axis=0)).
    let inline columnMeans (x: Matrix< ^T >) : Vector< ^T > =
        let n: ^T = ofFloat (float x.RowCount)
        Linalg.columnSums x / n

    /// Forward in either mode; returns (out, cache, new state).
    ///   Train: mu = mean(x), xc = x - mu, var = mean(xc²), std = √(var + ε), xn = xc / std;
    ///          running = momentum · running + (1 - momentum) · (mu, var).
    ///   Inference: xc = x - running_mean, std = √(running_var + ε), xn = xc / std; state unchanged.
    ///   Both: out = γ · xn + β.
    /// One sample alone (N = 1) is the book's pitfall: xc is 0, so out = β whatever x is, and the
    /// layer passes no gradient back (dx = 0). Train on batches.
    let inline forward (mode: Mode) (p: BatchNormParams< ^T >) (state: BatchNormState< ^T >) (x: Matrix< ^T >) =
        let e = ofFloat eps
        let xc, std, state' =
            match mode with
            | Mode.Train ->
                let n: ^T = ofFloat (float x.RowCount)
                let mu = columnMeans x // mu = x.mean(axis=0)
                let xc = Linalg.minusRow x mu // xc = x - mu
                let var = Linalg.columnSumsOfProducts xc xc / n // var = np.mean(xc**2, axis=0)
                let std = var.Map((fun v -> sqrt (v + e)), Zeros.Include) // std = np.sqrt(var + 10e-7)
                let m, m1 = ofFloat momentum, ofFloat (1.0 - momentum)
                let running (r: Vector< ^T >) (batch: Vector< ^T >) = r.Map2((fun r b -> m * r + m1 * b), batch, Zeros.Include)
                xc, std, { runningMean = running state.runningMean mu; runningVar = running state.runningVar var }
            | Mode.Inference ->
                let xc = Linalg.minusRow x state.runningMean // xc = x - self.running_mean
                xc, state.runningVar.Map((fun v -> sqrt (v + e)), Zeros.Include), state
        let xn = Linalg.overRow xc std // xn = xc / std
        let out = Linalg.timesRowPlusRow xn p.gamma p.beta // out = self.gamma * xn + self.beta
        out,
        { xc = xc; xn = xn; std = std; gamma = p.gamma; batchSize = x.RowCount; batchStatistics = (mode = Mode.Train) },
        state'

    /// The parameters' gradients alone: dβ = Σ_i dout, dγ = Σ_i xn · dout.
    let inline gradients (cache: BatchNormCache< ^T >) (dout: Matrix< ^T >) =
        { dgamma = Linalg.columnSumsOfProducts cache.xn dout; dbeta = Linalg.columnSums dout }

    /// dx, and the gradients dγ, dβ, by the book's chain of steps back through the forward
    /// pass: dxn = γ·dout; dxc = dxn / std; dstd = -Σ (dxn·xc) / std²; dvar = 0.5·dstd / std;
    /// dxc += (2/N)·xc·dvar; dmu = Σ dxc; dx = dxc - dmu / N. After an inference forward pass
    /// (running statistics, constant in x) dx is γ·dout / std.
    let inline backward (cache: BatchNormCache< ^T >) (dout: Matrix< ^T >) =
        let grads = gradients cache dout
        let std = cache.std
        let dxn = Linalg.timesRow dout cache.gamma // dxn = self.gamma * dout
        let dxc = Linalg.overRow dxn std // dxc = dxn / self.std
        if not cache.batchStatistics then
            dxc, grads
        else
            let n: ^T = ofFloat (float cache.batchSize)
            let (half: ^T), (twoOverN: ^T) = ofFloat 0.5, ofFloat (2.0 / float cache.batchSize)
            let dstd: Vector< ^T > = -(Linalg.columnSumsOfProducts dxn cache.xc).PointwiseDivide(std.PointwiseMultiply std) // dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
            let dvar = (dstd * half).PointwiseDivide std // dvar = 0.5 * dstd / self.std
            let dxc = Linalg.plusTimesRow dxc cache.xc (dvar * twoOverN) // dxc += (2.0 / self.batch_size) * self.xc * dvar
            let dmu = Linalg.columnSums dxc // dmu = np.sum(dxc, axis=0)
            Linalg.minusRow dxc (dmu / n), grads // dx = dxc - dmu / self.batch_size

/// The random key of a Dropout layer: a seed and a counter. The mask of a training forward pass
/// is a function of the key alone (a counter-based generator): the same key gives the same mask,
/// and each training forward pass gives back the key with the counter advanced by one.
type DropoutKey =
    { /// Tells one Dropout layer (and one model) from another.
      Seed: uint32
      /// The number of training forward passes drawn so far; wraps around after 2³² of them.
      Counter: uint32 }

/// Cache of Dropout: the mask the forward pass multiplied by (the book's self.mask).
type DropoutCache<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// 1 where a unit was kept, 0 where it was dropped (the constant 1 - ratio after an
      /// inference forward pass).
      mask: Matrix<'T> }

/// Dropout (6.4.3, the book's, not "inverted"): in training each unit is kept where a uniform
/// number exceeds the ratio and zeroed elsewhere; in inference every unit is scaled by the
/// fraction kept, 1 - ratio.
[<RequireQualifiedAccess>]
module Dropout =
    /// SplitMix64's output function (Steele, Lea and Flood 2014).
    let inline private mix (z: uint64) =
        let z = (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
        let z = (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31)

    /// The key of the k-th Dropout layer (1-based) of a model initialised from seed, counter 0.
    let key (seed: int) (k: int) : DropoutKey =
        { Seed = uint32 (mix ((uint64 (uint32 seed) <<< 20) + uint64 k) >>> 32); Counter = 0u }

    /// The key of the next training forward pass: the counter advanced by one.
    let next (key: DropoutKey) : DropoutKey = { key with Counter = key.Counter + 1u }

    /// The start of the key's generator: mix(seed · 2³² + counter).
    let start (key: DropoutKey) : uint64 = mix ((uint64 key.Seed <<< 32) ||| uint64 key.Counter)

    /// ⌊ratio · 2⁵³⌋: a unit is kept when its 53 random bits are above this.
    let threshold (ratio: float) : uint64 = uint64 (floor (ratio * 9007199254740992.0))

    /// The 53 high bits of the index-th output of the generator from start.
    let inline private bits (start: uint64) (index: int) = mix (start + (uint64 index + 1UL) * 0x9E3779B97F4A7C15UL) >>> 11

    /// The uniform number in [0, 1) behind mask element `index` (row-major: row · columns +
    /// column) under the key: the index-th output of a SplitMix64 generator started at
    /// mix(seed · 2³² + counter), its 53 high bits over 2⁵³.
    let uniform (key: DropoutKey) (index: int) : float = float (bits (start key) index) * (1.0 / 9007199254740992.0)

    /// Which units of a rows × columns input are kept under the key, in column-major order: 1
    /// where `uniform key (i · columns + j) > ratio` for element (i, j), else 0; compared as
    /// integers (the uniform number's 53 bits above ⌊ratio · 2⁵³⌋, the same test) in one pass.
    let kept (ratio: float) (key: DropoutKey) (rows: int) (columns: int) : byte[] =
        let s, t = start key, threshold ratio
        let out = Array.zeroCreate (rows * columns)
        for j in 0 .. columns - 1 do
            for i in 0 .. rows - 1 do
                out[j * rows + i] <- byte ((t - bits s (i * columns + j)) >>> 63) // 1 when bits > t (both below 2⁵³), without a branch
        out

    /// The mask of a rows × columns input under the key: 1 where the uniform number is above the
    /// ratio, else 0 (the book's np.random.rand(*x.shape) > self.dropout_ratio). It is `kept`
    /// above, computed eight elements at a time by Linalg.keptMask.
    let inline mask (ratio: float) (key: DropoutKey) (rows: int) (columns: int) : Matrix< ^T > =
        Matrix< ^T>.Build.Dense(rows, columns, Linalg.keptMask (start key) (threshold ratio) rows columns)

    /// Training: out = x ⊙ mask (the book's x * self.mask).
    let inline forward (mask: Matrix< ^T >) (x: Matrix< ^T >) = Linalg.hadamard x mask, { mask = mask }

    /// Inference: out = x · (1 - ratio), every unit scaled by the fraction that training keeps.
    let inline forwardInference (ratio: float) (x: Matrix< ^T >) =
        let kept = ofFloat (1.0 - ratio)
        Linalg.scaled x kept, { mask = Linalg.filled x.RowCount x.ColumnCount kept }

    /// dx = dout ⊙ mask: a dropped unit passes no gradient back.
    let inline backward (cache: DropoutCache< ^T >) (dout: Matrix< ^T >) = Linalg.hadamard dout cache.mask

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
    /// The tanh activation.
    | Tanh
    /// Batch Normalization of `size` features (6.3).
    | BatchNorm of size: int
    /// Dropout of the given ratio of units in training (6.4.3).
    | Dropout of ratio: float

/// The activation between two Affine layers.
type Activation =
    /// ReLU, as in the book's TwoLayerNet.
    | ReLU = 0
    /// Sigmoid.
    | Sigmoid = 1
    /// Tanh.
    | Tanh = 2

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

    /// A value of v's shape over the given elements (column-major for a matrix), not copied.
    let withStorage (v: Value<'T>) (elements: 'T[]) : Value<'T> =
        match v with
        | Value.Matrix m -> Value.Matrix(Matrix<'T>.Build.Dense(m.RowCount, m.ColumnCount, elements))
        | Value.Vector _ -> Value.Vector(Vector<'T>.Build.Dense elements)

    /// The elements in storage order (column-major for a matrix): the storage itself when
    /// dense, else a copy.
    let elements (v: Value<'T>) : 'T[] =
        match v with
        | Value.Matrix m -> (match m.AsColumnMajorArray() with null -> m.ToColumnMajorArray() | a -> a)
        | Value.Vector v -> (match v.AsArray() with null -> v.ToArray() | a -> a)

    /// Zeros of v's shape.
    let zerosLike (v: Value<'T>) : Value<'T> =
        match v with
        | Value.Matrix m -> Value.Matrix(Matrix<'T>.Build.Dense(m.RowCount, m.ColumnCount))
        | Value.Vector v -> Value.Vector(Vector<'T>.Build.Dense v.Count)

    /// f of every element, as a new value of the same shape.
    let inline map ([<InlineIfLambda>] f: ^T -> ^T) (v: Value< ^T >) : Value< ^T > =
        let a = elements v
        let out = Array.zeroCreate a.Length
        for i in 0 .. a.Length - 1 do
            out[i] <- f a[i]
        withStorage v out

    /// f of the elements of two values of the same shape, pairwise, as a new value.
    let inline map2 ([<InlineIfLambda>] f: ^T -> ^T -> ^T) (a: Value< ^T >) (b: Value< ^T >) : Value< ^T > =
        if shape a <> shape b then invalidArg "b" $"a value of shape %A{shape b} with one of shape %A{shape a}"
        let x, y = elements a, elements b
        let out = Array.zeroCreate x.Length
        for i in 0 .. x.Length - 1 do
            out[i] <- f x[i] y[i]
        withStorage a out

    /// Σ v², over every element.
    let inline sumOfSquares (v: Value< ^T >) : ^T =
        let a = elements v
        let mutable sum = LanguagePrimitives.GenericZero
        for i in 0 .. a.Length - 1 do
            sum <- sum + a[i] * a[i]
        sum

    /// p + alpha · g, for two values of the same shape (the update p - lr · g with alpha = -lr).
    let inline addScaled (p: Value< ^T >) (alpha: ^T) (g: Value< ^T >) : Value< ^T > =
        match p, g with
        | Value.Matrix p, Value.Matrix g -> Value.Matrix(Linalg.addScaled p alpha g)
        | Value.Vector p, Value.Vector g -> Value.Vector(p + g * alpha)
        | _ -> invalidArg "g" $"a gradient of shape %A{shape g} for a parameter of shape %A{shape p}"

    /// p + alpha · g as addScaled computes it, written over g's matrix, which the caller gives up
    /// (Training.step's own fresh gradient, which nothing else holds): the book updates its
    /// parameters in place; here the old parameters stay as they were, and the gradient's memory
    /// holds the new ones. Vectors (biases, γ, β) are made afresh.
    let inline addScaledOver (p: Value< ^T >) (alpha: ^T) (g: Value< ^T >) : Value< ^T > =
        match p, g with
        | Value.Matrix p, Value.Matrix g -> Value.Matrix(Linalg.addScaledOver p alpha g)
        | _ -> addScaled p alpha g

/// The parameters of one layer.
[<RequireQualifiedAccess>]
type Params<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// Weights and bias of an Affine layer.
    | Affine of AffineParams<'T>
    /// γ and β of a Batch Normalization layer.
    | BatchNorm of BatchNormParams<'T>
    /// A layer without parameters.
    | Empty

/// The gradients of one layer, mirroring its Params.
[<RequireQualifiedAccess>]
type Grads<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// dW and db of an Affine layer.
    | Affine of AffineGrads<'T>
    /// dγ and dβ of a Batch Normalization layer.
    | BatchNorm of BatchNormGrads<'T>
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
    /// Cache of a Tanh layer.
    | Tanh of TanhCache<'T>
    /// Cache of a Batch Normalization layer.
    | BatchNorm of BatchNormCache<'T>
    /// Cache of a Dropout layer.
    | Dropout of DropoutCache<'T>

/// The state a layer carries from one forward pass to the next, in the element type of its
/// model. The layers of chapter 5 have none; Batch Normalization keeps its running mean and
/// variance, Dropout a counter-based random key (the same key, the same mask). Every forward
/// takes a state and gives one back.
[<RequireQualifiedAccess>]
type LayerState<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    /// No state.
    | Stateless
    /// The running statistics of a Batch Normalization layer.
    | BatchNorm of BatchNormState<'T>
    /// The key a Dropout layer draws its next training mask from; a training forward pass
    /// gives back the key with its counter advanced.
    | Dropout of DropoutKey
    /// A fixed mask that a Dropout layer multiplies by in every training forward pass, the state
    /// unchanged: for tests and for reproducing masks drawn elsewhere (such as numpy's).
    | DropoutMask of Matrix<'T>

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
    /// Runs the layer forward: (mode, params, state, x) -> (out, cache, new state). Only
    /// Batch Normalization and Dropout depend on the mode and change their state.
    let inline forward (mode: Mode) (layer: Layer) (p: Params< ^T >) (state: LayerState< ^T >) (x: Matrix< ^T >) =
        match layer, p with
        | Layer.Affine _, Params.Affine p -> let out, c = Affine.forward p x in out, Cache.Affine c, state
        | Layer.Affine _, _ -> invalidArg "p" "an Affine layer needs Affine parameters"
        | Layer.Relu, _ -> let out, c = Relu.forward x in out, Cache.Relu c, state
        | Layer.Sigmoid, _ -> let out, c = Sigmoid.forward x in out, Cache.Sigmoid c, state
        | Layer.Tanh, _ -> let out, c = Tanh.forward x in out, Cache.Tanh c, state
        | Layer.BatchNorm _, Params.BatchNorm p ->
            match state with
            | LayerState.BatchNorm s -> let out, c, s' = BatchNormalization.forward mode p s x in out, Cache.BatchNorm c, LayerState.BatchNorm s'
            | _ -> invalidArg "state" "a BatchNorm layer needs its running statistics as state"
        | Layer.BatchNorm _, _ -> invalidArg "p" "a BatchNorm layer needs BatchNorm parameters (gamma, beta)"
        | Layer.Dropout ratio, _ ->
            match mode, state with
            | Mode.Train, LayerState.Dropout key ->
                let out, c = Dropout.forward (Dropout.mask ratio key x.RowCount x.ColumnCount) x
                out, Cache.Dropout c, LayerState.Dropout(Dropout.next key)
            | Mode.Train, LayerState.DropoutMask mask -> let out, c = Dropout.forward mask x in out, Cache.Dropout c, state
            | Mode.Inference, (LayerState.Dropout _ | LayerState.DropoutMask _) -> let out, c = Dropout.forwardInference ratio x in out, Cache.Dropout c, state
            | _ -> invalidArg "state" "a Dropout layer needs a key or a mask as state"

    /// Runs the layer backward: (cache, dout) -> (dx, gradients of its parameters).
    let inline backward (cache: Cache< ^T >) (dout: Matrix< ^T >) =
        match cache with
        | Cache.Affine c -> let dx, g = Affine.backward c dout in dx, Grads.Affine g
        | Cache.Relu c -> Relu.backward c dout, Grads.Empty
        | Cache.Sigmoid c -> Sigmoid.backward c dout, Grads.Empty
        | Cache.Tanh c -> Tanh.backward c dout, Grads.Empty
        | Cache.BatchNorm c -> let dx, g = BatchNormalization.backward c dout in dx, Grads.BatchNorm g
        | Cache.Dropout c -> Dropout.backward c dout, Grads.Empty

    /// The gradients of the layer's parameters without dx, for the first layer of a network:
    /// its dx would be the gradient for the input images, which nothing uses.
    let inline gradients (cache: Cache< ^T >) (dout: Matrix< ^T >) =
        match cache with
        | Cache.Affine c -> Grads.Affine(Affine.gradients c dout)
        | Cache.BatchNorm c -> Grads.BatchNorm(BatchNormalization.gradients c dout)
        | Cache.Relu _
        | Cache.Sigmoid _
        | Cache.Tanh _
        | Cache.Dropout _ -> Grads.Empty

    /// The layer in the book's words: "Affine(784, 50)", "ReLU", "Sigmoid", "Tanh",
    /// "BatchNorm(100)", "Dropout(0.5)".
    let describe (layer: Layer) : string =
        match layer with
        | Layer.Affine(i, o) -> $"Affine(%d{i}, %d{o})"
        | Layer.Relu -> "ReLU"
        | Layer.Sigmoid -> "Sigmoid"
        | Layer.Tanh -> "Tanh"
        | Layer.BatchNorm size -> $"BatchNorm(%d{size})"
        | Layer.Dropout ratio -> $"Dropout(%g{ratio})"

    /// The names of the layer's parameters, given its number among the layers of its kind
    /// (1 for the first Affine): W1 and b1, gamma1 and beta1, as the book names them.
    let parameterNames (layer: Layer) (k: int) : string list =
        match layer with
        | Layer.Affine _ -> [ $"W{k}"; $"b{k}" ]
        | Layer.BatchNorm _ -> [ $"gamma{k}"; $"beta{k}" ]
        | Layer.Relu
        | Layer.Sigmoid
        | Layer.Tanh
        | Layer.Dropout _ -> []

    /// The shapes of the layer's parameters, in the order of parameterNames.
    let parameterShapes (layer: Layer) : int[] list =
        match layer with
        | Layer.Affine(i, o) -> [ [| i; o |]; [| o |] ]
        | Layer.BatchNorm size -> [ [| size |]; [| size |] ]
        | Layer.Relu
        | Layer.Sigmoid
        | Layer.Tanh
        | Layer.Dropout _ -> []

    /// The names of the layer's state arrays, given its number among the layers of its kind:
    /// running_mean{k} and running_var{k} for Batch Normalization; dropout{k} for Dropout (its
    /// key, or a fixed mask); none for the layers of chapter 5.
    let stateNames (layer: Layer) (k: int) : string list =
        match layer with
        | Layer.BatchNorm _ -> [ $"running_mean{k}"; $"running_var{k}" ]
        | Layer.Dropout _ -> [ $"dropout{k}" ]
        | Layer.Affine _
        | Layer.Relu
        | Layer.Sigmoid
        | Layer.Tanh -> []

    /// The layer's parameters as values, in the order of parameterNames.
    let parameterValues (p: Params<'T>) : Value<'T> list =
        match p with
        | Params.Affine p -> [ Value.Matrix p.W; Value.Vector p.b ]
        | Params.BatchNorm p -> [ Value.Vector p.gamma; Value.Vector p.beta ]
        | Params.Empty -> []

    /// The gradients as values, in the order of parameterNames.
    let gradientValues (g: Grads<'T>) : Value<'T> list =
        match g with
        | Grads.Affine g -> [ Value.Matrix g.dW; Value.Vector g.db ]
        | Grads.BatchNorm g -> [ Value.Vector g.dgamma; Value.Vector g.dbeta ]
        | Grads.Empty -> []

    /// A Dropout key as a vector of four 16-bit parts, [seed ÷ 2¹⁶; seed mod 2¹⁶; counter ÷ 2¹⁶;
    /// counter mod 2¹⁶], each exact in float32 (which holds integers exactly only up to 2²⁴).
    let keyValue (key: DropoutKey) : Value<'T> =
        let part (n: uint32) = Convert.ChangeType(int n, typeof<'T>) :?> 'T
        Value.Vector(Vector<'T>.Build.Dense [| part (key.Seed >>> 16); part (key.Seed &&& 0xFFFFu); part (key.Counter >>> 16); part (key.Counter &&& 0xFFFFu) |])

    /// The Dropout key a vector of keyValue's four parts holds; None when it holds anything else.
    let tryKeyOf (v: Vector<'T>) : DropoutKey option =
        let parts = v.ToArray() |> Array.map (fun x -> Convert.ToDouble(box x))
        if parts.Length = 4 && parts |> Array.forall (fun x -> x >= 0.0 && x < 65536.0 && x = floor x) then
            let whole (hi: float) (lo: float) = (uint32 hi <<< 16) ||| uint32 lo
            Some { Seed = whole parts[0] parts[1]; Counter = whole parts[2] parts[3] }
        else
            None

    /// The layer's state as values, in the order of stateNames (a Dropout key as keyValue
    /// gives it, a fixed mask as its matrix).
    let stateValues (s: LayerState<'T>) : Value<'T> list =
        match s with
        | LayerState.Stateless -> []
        | LayerState.BatchNorm s -> [ Value.Vector s.runningMean; Value.Vector s.runningVar ]
        | LayerState.Dropout key -> [ keyValue key ]
        | LayerState.DropoutMask mask -> [ Value.Matrix mask ]

    /// The layer's Params from values in the order of parameterNames, checking their shapes.
    let paramsOf (layer: Layer) (values: Value<'T> list) : Params<'T> =
        match layer, values with
        | Layer.Affine(i, o), [ Value.Matrix w; Value.Vector b ] when w.RowCount = i && w.ColumnCount = o && b.Count = o -> Params.Affine { W = w; b = b }
        | Layer.Affine(i, o), _ -> invalidArg "values" $"Affine(%d{i}, %d{o}) takes W (%d{i}x%d{o}) and b (%d{o}), got shapes %A{List.map Value.shape values}"
        | Layer.BatchNorm n, [ Value.Vector gamma; Value.Vector beta ] when gamma.Count = n && beta.Count = n -> Params.BatchNorm { gamma = gamma; beta = beta }
        | Layer.BatchNorm n, _ -> invalidArg "values" $"BatchNorm(%d{n}) takes gamma (%d{n}) and beta (%d{n}), got shapes %A{List.map Value.shape values}"
        | (Layer.Relu | Layer.Sigmoid | Layer.Tanh | Layer.Dropout _), [] -> Params.Empty
        | (Layer.Relu | Layer.Sigmoid | Layer.Tanh | Layer.Dropout _), _ -> invalidArg "values" $"{describe layer} has no parameters"

    /// The layer's state from values in the order of stateNames, checking their shapes.
    let stateOf (layer: Layer) (values: Value<'T> list) : LayerState<'T> =
        match layer, values with
        | (Layer.Affine _ | Layer.Relu | Layer.Sigmoid | Layer.Tanh), [] -> LayerState.Stateless
        | Layer.BatchNorm n, [ Value.Vector mean; Value.Vector var ] when mean.Count = n && var.Count = n -> LayerState.BatchNorm { runningMean = mean; runningVar = var }
        | Layer.BatchNorm n, _ -> invalidArg "values" $"BatchNorm(%d{n}) keeps running_mean (%d{n}) and running_var (%d{n}), got shapes %A{List.map Value.shape values}"
        | Layer.Dropout _, [ Value.Vector v ] when (tryKeyOf v).IsSome -> LayerState.Dropout (tryKeyOf v).Value
        | Layer.Dropout _, [ Value.Matrix mask ] -> LayerState.DropoutMask mask
        | Layer.Dropout _, _ -> invalidArg "values" $"{describe layer} keeps a key (four integers in 0..65535) or a mask, got %A{List.map Value.shape values}"
        | _ -> invalidArg "values" $"{describe layer} has no state"

    /// The initial state of the k-th layer of its kind (1-based) in a model initialised from
    /// seed: running statistics of zeros for Batch Normalization (as the book's), a key drawn
    /// from (seed, k) for Dropout, none for the others.
    let initialStateAt (seed: int) (k: int) (layer: Layer) : LayerState<'T> =
        match layer with
        | Layer.BatchNorm n -> LayerState.BatchNorm { runningMean = Vector<'T>.Build.Dense n; runningVar = Vector<'T>.Build.Dense n }
        | Layer.Dropout _ -> LayerState.Dropout(Dropout.key seed k)
        | Layer.Affine _
        | Layer.Relu
        | Layer.Sigmoid
        | Layer.Tanh -> LayerState.Stateless

    /// The initial state of a layer (drawn from the seed where it has randomness), taken as the
    /// first of its kind: initialStateAt seed 1.
    let initialState (seed: int) (layer: Layer) : LayerState<'T> = initialStateAt seed 1 layer

/// How the initial weights of the Affine layers are drawn (6.2): from N(0, scale²), the
/// scale fixed or set by the layer's number of inputs n. Biases start at 0, Batch
/// Normalization's γ at 1 and β at 0 whatever the choice.
[<RequireQualifiedAccess>]
type WeightInit =
    /// A fixed standard deviation (the book's TwoLayerNet: 0.01).
    | Std of float
    /// Xavier's initial value, √(1/n): for sigmoid and tanh (6.2.2).
    | Xavier
    /// He's initial value, √(2/n): for ReLU (6.2.3).
    | He

/// Building networks and computing with them: predict, loss, accuracy and gradients.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Network =
    /// The layer of an activation.
    let activationLayer (activation: Activation) : Layer =
        match activation with
        | Activation.Sigmoid -> Layer.Sigmoid
        | Activation.Tanh -> Layer.Tanh
        | _ -> Layer.Relu

    /// The layers for a spec of layer sizes: [784; 50; 10] is the book's two-layer net
    /// (Affine 784→50, activation, Affine 50→10); longer lists give deeper nets.
    let layers (activation: Activation) (sizes: int list) : Layer list =
        if List.length sizes < 2 then invalidArg "sizes" $"a network needs at least an input and an output size, got %A{sizes}"
        match sizes |> List.tryFind (fun s -> s < 1) with
        | Some s -> invalidArg "sizes" $"layer sizes must be positive, got %d{s} in %A{sizes}"
        | None -> ()
        let act = activationLayer activation
        let affines = sizes |> List.pairwise |> List.map Layer.Affine
        List.foldBack (fun a acc -> match acc with [] -> [ a ] | _ -> a :: act :: acc) affines []

    /// The layers of the book's MultiLayerNetExtend (chapter 6) for a spec of layer sizes: for
    /// each hidden layer Affine, then BatchNorm when batchNorm is true, then the activation, then
    /// Dropout of the given ratio when there is one; the last Affine alone. With neither it is
    /// `layers`. Raises ArgumentException for bad sizes or a ratio outside [0, 1).
    let extended (activation: Activation) (sizes: int list) (batchNorm: bool) (dropout: float option) : Layer list =
        match dropout with
        | Some r when not (r >= 0.0 && r < 1.0) -> invalidArg "dropout" $"a dropout ratio is in [0, 1), got %g{r}"
        | _ -> ()
        ignore (layers activation sizes) // checks the sizes
        let pairs = List.pairwise sizes
        [ for i, o in List.take (pairs.Length - 1) pairs do
              yield Layer.Affine(i, o)
              if batchNorm then yield Layer.BatchNorm o
              yield activationLayer activation
              match dropout with
              | Some r -> yield Layer.Dropout r
              | None -> () ]
        @ [ Layer.Affine(List.last pairs) ]

    /// The layer sizes of a network, input first ([784; 50; 10] for the book's net).
    let sizes (layers: Layer list) : int list =
        let affines = layers |> List.choose (function Layer.Affine(i, o) -> Some(i, o) | _ -> None)
        match affines with
        | [] -> []
        | (i, _) :: _ -> i :: (affines |> List.map snd)

    /// Each layer's number among the layers of its kind, 1-based (W1 is the first Affine's,
    /// gamma1 the first BatchNorm's).
    let numbered (layers: Layer list) : (Layer * int) list =
        let kind (l: Layer) =
            match l with
            | Layer.Affine _ -> 0
            | Layer.Relu -> 1
            | Layer.Sigmoid -> 2
            | Layer.Tanh -> 3
            | Layer.BatchNorm _ -> 4
            | Layer.Dropout _ -> 5
        layers |> List.mapFold (fun (counts: Map<int, int>) l -> let k = counts.TryFind(kind l) |> Option.defaultValue 0 in (l, k + 1), counts.Add(kind l, k + 1)) Map.empty |> fst

    /// The parameters' names in order: W1, b1, W2, b2, ... (gamma1, beta1 where a BatchNorm
    /// layer stands), layer by layer.
    let parameterNames (layers: Layer list) : string list = numbered layers |> List.collect (fun (l, k) -> Layer.parameterNames l k)

    /// The parameters' names and shapes in order.
    let parameterShapes (layers: Layer list) : (string * int[]) list =
        numbered layers |> List.collect (fun (l, k) -> List.zip (Layer.parameterNames l k) (Layer.parameterShapes l))

    /// The layer states' names in order: running_mean{k}, running_var{k}, dropout{k} (none for
    /// the layers of chapter 5).
    let stateNames (layers: Layer list) : string list = numbered layers |> List.collect (fun (l, k) -> Layer.stateNames l k)

    /// The initial state of every layer of a model initialised from seed (Layer.initialStateAt).
    let initialStates (seed: int) (layers: Layer list) : LayerState<'T> list =
        numbered layers |> List.map (fun (l, k) -> Layer.initialStateAt seed k l)

    /// The first place where a layer does not fit the width of what comes into it (an Affine
    /// layer's inputs, a BatchNorm layer's size), as a message; None when every layer fits.
    let mismatch (layers: Layer list) : string option =
        numbered layers
        |> List.fold
            (fun (width, problem) (layer, k) ->
                match problem, layer, width with
                | Some _, _, _ -> width, problem
                | None, Layer.Affine(i, _), Some w when i <> w -> width, Some $"Affine %d{k} takes %d{i} inputs, the layer before gives %d{w}"
                | None, Layer.BatchNorm n, Some w when n <> w -> width, Some $"BatchNorm %d{k} has %d{n} features, the layer before gives %d{w}"
                | None, Layer.Affine(_, o), _ -> Some o, None
                | None, Layer.BatchNorm n, _ -> Some n, None
                | None, _, _ -> width, None)
            (None, None)
        |> snd

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

    /// A model with the Affine layers' weights drawn from N(0, scale²) as `weightInit` says (a
    /// fixed scale, Xavier's √(1/n) or He's √(2/n) for n inputs), one layer after the other from
    /// one generator, reproducibly from the seed; zero biases, γ = 1 and β = 0, and each
    /// layer's initial state (Layer.initialStateAt).
    let inline initWith (weightInit: WeightInit) (seed: int) (layers: Layer list) : Model< ^T > =
        let rng = Random(seed)
        let paramsOf layer =
            match layer with
            | Layer.Affine(i, o) ->
                let scale =
                    match weightInit with
                    | WeightInit.Std std -> std
                    | WeightInit.Xavier -> sqrt (1.0 / float i)
                    | WeightInit.He -> sqrt (2.0 / float i)
                // Row-major draws, as numpy fills W: the same seed gives the same W whatever the storage order.
                let w = Array.init (i * o) (fun _ -> ofFloat (scale * MathNet.Numerics.Distributions.Normal.Sample(rng, 0.0, 1.0)))
                Params.Affine { W = Matrix< ^T>.Build.DenseOfRowMajor(i, o, w); b = Vector< ^T>.Build.Dense o }
            | Layer.BatchNorm n -> Params.BatchNorm { gamma = Vector< ^T>.Build.Dense(n, LanguagePrimitives.GenericOne< ^T >); beta = Vector< ^T>.Build.Dense n }
            | Layer.Relu
            | Layer.Sigmoid
            | Layer.Tanh
            | Layer.Dropout _ -> Params.Empty
        { Layers = layers; Params = List.map paramsOf layers; States = initialStates seed layers }

    /// A model with weights drawn from N(0, weightInitStd²) and zero biases, reproducibly from
    /// the seed (the book's TwoLayerNet uses weightInitStd = 0.01): initWith (WeightInit.Std
    /// weightInitStd).
    let inline init (seed: int) (weightInitStd: float) (layers: Layer list) : Model< ^T > = initWith (WeightInit.Std weightInitStd) seed layers

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

    /// The gradient of every parameter by numerical differentiation of lossWithoutDelta plus a
    /// penalty of the parameters (such as weight decay's 0.5·λ·ΣW², an optimizer's Penalty),
    /// named as `parameters` names them: slow, and only for checking backpropagation (4.4.2,
    /// 5.7.3). Works on a private copy of the model, so the model passed in is never touched.
    /// The states stay fixed while it perturbs: every evaluation runs in training mode from the
    /// model's own states and drops the new ones, so Dropout draws the same mask each time (its
    /// key does not advance) and BatchNorm normalizes with the batch's statistics.
    let inline numericalGradientWith (penalty: Named< ^T > -> ^T) (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) : Named< ^T > =
        let copy = clone model
        let named = parameters copy // the copy's own arrays: the penalty sees each perturbation
        let f () = lossWithoutDelta copy x t + penalty named
        named
        |> List.map (fun (name, p) ->
            let g = numericalGradientOf f (Value.storage p) // perturbs the copy's own storage
            name,
            match p with
            | Value.Matrix m -> Value.Matrix(Matrix< ^T>.Build.Dense(m.RowCount, m.ColumnCount, g))
            | Value.Vector _ -> Value.Vector(Vector< ^T>.Build.Dense g))

    /// The gradient of every parameter by numerical differentiation of lossWithoutDelta (see
    /// numericalGradientWith): slow, and only for checking backpropagation (4.4.2, 5.7.3).
    let inline numericalGradient (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) : Named< ^T > =
        numericalGradientWith (fun _ -> LanguagePrimitives.GenericZero) model x t

    /// The book's gradient check (5.7.3): for each parameter (W1, b1, W2, b2, ...), the mean
    /// absolute difference between its gradient by backpropagation and by numerical differentiation.
    let inline gradientCheck (model: Model< ^T >) (x: Matrix< ^T >) (t: Labels< ^T >) : (string * float) list =
        let _, backprop, _ = gradient model x t
        let numerical = numericalGradient model x t
        List.map2
            (fun (name, a) (_, b) -> name, Array.map2 (fun (u: ^T) (v: ^T) -> abs (float u - float v)) (Value.toRowMajor a) (Value.toRowMajor b) |> Array.average)
            backprop
            numerical

// ─── 6.1 Optimizers ─────────────────────────────────────────────────────────────────────────────
//
// The book's optimizers (common/optimizer.py) as Optax has them: two pure functions, `Init` from
// the parameters to a state and `Update` from the gradients and the state to updates and a new
// state; `applyUpdates` then adds the updates to the parameters. The state is a list of named
// arrays ("v.W1", "m.W1", ...) so that it saves into a model file beside the parameters. Small
// transformations compose with `chain`: `chain [ weightDecay 0.1; adam 0.001 0.9 0.999 ]` adds λW
// to every dW, then takes Adam's step. Each one's state is described above its factory, its
// defaults are the book's (Optimizer.bookDefault), and its formulas are the book's, in its order:
// the last bits depend on it.

/// An optimizer, or one transformation of the gradients, as data: its kind and hyperparameters
/// in the book's names. Model files keep these; Optimizer.ofSpec makes the functions.
[<RequireQualifiedAccess>]
type OptimizerSpec =
    /// SGD (6.1.2).
    | Sgd of learningRate: float
    /// Momentum (6.1.4).
    | Momentum of learningRate: float * momentum: float
    /// Nesterov's accelerated gradient (6.1.6's figure; the book's Nesterov class).
    | Nesterov of learningRate: float * momentum: float
    /// AdaGrad (6.1.5).
    | AdaGrad of learningRate: float
    /// RMSprop (6.1.5's note; the book's RMSprop class).
    | RmsProp of learningRate: float * decayRate: float
    /// Adam (6.1.6).
    | Adam of learningRate: float * beta1: float * beta2: float
    /// Weight decay (6.4.2): λ·W added to every weight's gradient, 0.5·λ·ΣW² to the loss.
    | WeightDecay of lambda: float

/// An optimizer as two pure functions (Optax's GradientTransformation), with what it is and
/// the loss term it implies. Init makes the state from the parameters. Update takes the
/// number of the update (1 for the first), the gradients, the state and the parameters, and
/// returns the updates (what to add to each parameter, named as the parameters) and the new
/// state; Optimizer.applyUpdates adds the updates.
type Optimizer<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> =
    { /// The transformations, in the order they apply.
      Spec: OptimizerSpec list
      /// The initial state for the given parameters (zeros; none for SGD).
      Init: Named<'T> -> Named<'T>
      /// (step, grads, state, parameters) -> (updates, new state).
      Update: int -> Named<'T> -> Named<'T> -> Named<'T> -> Named<'T> * Named<'T>
      /// What the transformations add to the loss, as a function of the parameters: weight
      /// decay's 0.5·λ·ΣW², zero for the rest. Training reports the loss with it, as the book's
      /// MultiLayerNetExtend.loss does, and the numerical gradient differentiates it.
      Penalty: Named<'T> -> 'T }

/// The optimizers of the book and their composition.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Optimizer =
    /// The name of a transformation in files and messages: "sgd", "momentum", "nesterov",
    /// "adagrad", "rmsprop", "adam", "weight_decay".
    let name (spec: OptimizerSpec) : string =
        match spec with
        | OptimizerSpec.Sgd _ -> "sgd"
        | OptimizerSpec.Momentum _ -> "momentum"
        | OptimizerSpec.Nesterov _ -> "nesterov"
        | OptimizerSpec.AdaGrad _ -> "adagrad"
        | OptimizerSpec.RmsProp _ -> "rmsprop"
        | OptimizerSpec.Adam _ -> "adam"
        | OptimizerSpec.WeightDecay _ -> "weight_decay"

    /// The hyperparameters by the book's names: lr, momentum, decay_rate, beta1, beta2, lambda.
    let hyperparameters (spec: OptimizerSpec) : (string * float) list =
        match spec with
        | OptimizerSpec.Sgd lr
        | OptimizerSpec.AdaGrad lr -> [ "lr", lr ]
        | OptimizerSpec.Momentum(lr, m)
        | OptimizerSpec.Nesterov(lr, m) -> [ "lr", lr; "momentum", m ]
        | OptimizerSpec.RmsProp(lr, d) -> [ "lr", lr; "decay_rate", d ]
        | OptimizerSpec.Adam(lr, b1, b2) -> [ "lr", lr; "beta1", b1; "beta2", b2 ]
        | OptimizerSpec.WeightDecay l -> [ "lambda", l ]

    /// The book's defaults (common/optimizer.py) by name: sgd lr 0.01; momentum and nesterov
    /// lr 0.01, momentum 0.9; adagrad lr 0.01; rmsprop lr 0.01, decay_rate 0.99; adam lr 0.001,
    /// beta1 0.9, beta2 0.999. None for another name.
    let bookDefault (name: string) : OptimizerSpec option =
        match name with
        | "sgd" -> Some(OptimizerSpec.Sgd 0.01)
        | "momentum" -> Some(OptimizerSpec.Momentum(0.01, 0.9))
        | "nesterov" -> Some(OptimizerSpec.Nesterov(0.01, 0.9))
        | "adagrad" -> Some(OptimizerSpec.AdaGrad 0.01)
        | "rmsprop" -> Some(OptimizerSpec.RmsProp(0.01, 0.99))
        | "adam" -> Some(OptimizerSpec.Adam(0.001, 0.9, 0.999))
        | _ -> None

    /// The transformation of a name and hyperparameters (as `name` and `hyperparameters` give
    /// them; a missing one takes the book's default, weight_decay needs its lambda); Error names
    /// what is wrong.
    let specOf (name: string) (values: (string * float) list) : Result<OptimizerSpec, string> =
        let known = [ "lr"; "momentum"; "decay_rate"; "beta1"; "beta2"; "lambda" ]
        match values |> List.tryFind (fun (k, _) -> not (List.contains k known)) with
        | Some(k, _) -> Error $"unknown hyperparameter '{k}' for {name}"
        | None ->
            let given k (d: float) = values |> List.tryFind (fst >> (=) k) |> Option.map snd |> Option.defaultValue d
            match bookDefault name, name with
            | Some spec, _ ->
                let d = hyperparameters spec |> Map.ofList
                match spec with
                | OptimizerSpec.Sgd _ -> Ok(OptimizerSpec.Sgd(given "lr" d["lr"]))
                | OptimizerSpec.Momentum _ -> Ok(OptimizerSpec.Momentum(given "lr" d["lr"], given "momentum" d["momentum"]))
                | OptimizerSpec.Nesterov _ -> Ok(OptimizerSpec.Nesterov(given "lr" d["lr"], given "momentum" d["momentum"]))
                | OptimizerSpec.AdaGrad _ -> Ok(OptimizerSpec.AdaGrad(given "lr" d["lr"]))
                | OptimizerSpec.RmsProp _ -> Ok(OptimizerSpec.RmsProp(given "lr" d["lr"], given "decay_rate" d["decay_rate"]))
                | OptimizerSpec.Adam _ -> Ok(OptimizerSpec.Adam(given "lr" d["lr"], given "beta1" d["beta1"], given "beta2" d["beta2"]))
                | OptimizerSpec.WeightDecay _ -> Error "unreachable"
            | None, "weight_decay" ->
                match values |> List.tryFind (fst >> (=) "lambda") with
                | Some(_, l) -> Ok(OptimizerSpec.WeightDecay l)
                | None -> Error "weight_decay needs its lambda"
            | None, _ -> Error $"unknown optimizer '{name}' (sgd, momentum, nesterov, adagrad, rmsprop, adam, weight_decay)"

    /// The state arrays a transformation keeps per parameter, by prefix: "v" for v.W1, v.b1, ...
    let slots (spec: OptimizerSpec) : string list =
        match spec with
        | OptimizerSpec.Sgd _
        | OptimizerSpec.WeightDecay _ -> []
        | OptimizerSpec.Momentum _
        | OptimizerSpec.Nesterov _ -> [ "v" ]
        | OptimizerSpec.AdaGrad _
        | OptimizerSpec.RmsProp _ -> [ "h" ]
        | OptimizerSpec.Adam _ -> [ "m"; "v" ]

    /// A zero state: one array of each parameter's shape per slot, slot after slot, named
    /// slot.parameter (m.W1, m.b1, ..., v.W1, ...).
    let zeros (slots: string list) (parameters: Named<'T>) : Named<'T> =
        [ for s in slots do
              for name, p in parameters -> $"{s}.{name}", Value.zerosLike p ]

    /// The state's arrays slot by slot, each list in the gradients' order; raises
    /// ArgumentException when the state's names are not slot.parameter for these gradients.
    let bySlot (slots: string list) (grads: Named<'T>) (state: Named<'T>) : Value<'T> list list =
        if state.Length <> slots.Length * grads.Length then
            invalidArg "state" $"%d{state.Length} state arrays for %d{slots.Length} per parameter and %d{grads.Length} parameters"
        state
        |> List.chunkBySize (max grads.Length 1)
        |> List.map2
            (fun slot chunk ->
                List.map2 (fun (name, _) (stateName, v) -> if stateName <> $"{slot}.{name}" then invalidArg "state" $"state array {stateName} where {slot}.{name} belongs" else v) grads chunk)
            slots

    /// The named list of one slot's arrays (v.W1, v.b1, ...) for the gradients' names.
    let named (slot: string) (grads: Named<'T>) (values: Value<'T> list) : Named<'T> =
        List.map2 (fun (name, _) v -> $"{slot}.{name}", v) grads values

    /// True for a weight, W1, W2, ...: weight decay's arrays (never b, gamma or beta).
    let isWeight (name: string) = name.Length > 1 && name[0] = 'W' && Seq.forall Char.IsDigit name[1..]

    /// The updates added to the parameters: p + u for each (names and shapes must match).
    let inline applyUpdates (parameters: Named< ^T >) (updates: Named< ^T >) : Named< ^T > =
        List.map2
            (fun (name, p) (name', u) ->
                if name <> name' then invalidArg "updates" $"an update for {name'} where {name} belongs"
                name, Value.addScaled p LanguagePrimitives.GenericOne u) // p + 1·u = p + u exactly
            parameters
            updates

    /// Throws ArgumentException unless ok, naming the hyperparameter and its value.
    let check (ok: bool) (what: string) (value: float) (should: string) =
        if not ok then invalidArg what $"{what} must be {should}, got %g{value}"

    // SGD: no state.
    /// SGD (the book's SGD; default lr 0.01): W ← W - lr·∂L/∂W. The update is -(lr·g).
    let inline sgd (learningRate: float) : Optimizer< ^T > =
        check (learningRate > 0.0) "learningRate" learningRate "positive"
        let lr = ofFloat learningRate
        { Spec = [ OptimizerSpec.Sgd learningRate ]
          Init = fun _ -> []
          Update = fun _ grads state _ -> grads |> List.map (fun (name, g) -> name, Value.map (fun g -> -(lr * g)) g), state
          Penalty = fun _ -> LanguagePrimitives.GenericZero }

    // Momentum's state: v.W1, v.b1, ...: each parameter's velocity, zero at first.
    /// Momentum (the book's Momentum; defaults lr 0.01, momentum 0.9): v ← momentum·v - lr·g,
    /// then W ← W + v. The update is the new v.
    let inline momentum (learningRate: float) (momentum: float) : Optimizer< ^T > =
        check (learningRate > 0.0) "learningRate" learningRate "positive"
        check (momentum >= 0.0 && momentum < 1.0) "momentum" momentum "in [0, 1)"
        let lr, m = ofFloat learningRate, ofFloat momentum
        { Spec = [ OptimizerSpec.Momentum(learningRate, momentum) ]
          Init = zeros [ "v" ]
          Update =
            fun _ grads state _ ->
                let vs = List.head (bySlot [ "v" ] grads state)
                let v' = List.map2 (fun (_, g) v -> Value.map2 (fun g v -> m * v - lr * g) g v) grads vs // v = momentum*v - lr*grads
                List.map2 (fun (name, _) v -> name, v) grads v', named "v" grads v' // params += v
          Penalty = fun _ -> LanguagePrimitives.GenericZero }

    // Nesterov's state: v.W1, v.b1, ...: the velocities, zero at first.
    /// Nesterov's accelerated gradient (the book's Nesterov; defaults lr 0.01, momentum 0.9):
    /// W ← W + momentum²·v - (1 + momentum)·lr·g, then v ← momentum·v - lr·g, each term
    /// computed as the book does. The book adds the two terms to W one after the other; here
    /// they are summed into one update that applyUpdates adds, which can differ in the last bit.
    let inline nesterov (learningRate: float) (momentum: float) : Optimizer< ^T > =
        check (learningRate > 0.0) "learningRate" learningRate "positive"
        check (momentum >= 0.0 && momentum < 1.0) "momentum" momentum "in [0, 1)"
        let lr, m = ofFloat learningRate, ofFloat momentum
        let mm, c = ofFloat (momentum * momentum), ofFloat ((1.0 + momentum) * learningRate)
        { Spec = [ OptimizerSpec.Nesterov(learningRate, momentum) ]
          Init = zeros [ "v" ]
          Update =
            fun _ grads state _ ->
                let vs = List.head (bySlot [ "v" ] grads state)
                let updates = List.map2 (fun (name, g) v -> name, Value.map2 (fun g v -> mm * v - c * g) g v) grads vs // params += m*m*v; params -= (1+m)*lr*grads
                let v' = List.map2 (fun (_, g) v -> Value.map2 (fun g v -> v * m - lr * g) g v) grads vs // v *= m; v -= lr*grads
                updates, named "v" grads v'
          Penalty = fun _ -> LanguagePrimitives.GenericZero }

    // AdaGrad's state: h.W1, h.b1, ...: each parameter's sum of squared gradients, zero at first.
    /// AdaGrad (the book's AdaGrad; default lr 0.01): h ← h + g², then W ← W - lr·g / (√h + 1e-7).
    let inline adaGrad (learningRate: float) : Optimizer< ^T > =
        check (learningRate > 0.0) "learningRate" learningRate "positive"
        let lr, eps = ofFloat learningRate, ofFloat 1e-7
        { Spec = [ OptimizerSpec.AdaGrad learningRate ]
          Init = zeros [ "h" ]
          Update =
            fun _ grads state _ ->
                let hs = List.head (bySlot [ "h" ] grads state)
                let h' = List.map2 (fun (_, g) h -> Value.map2 (fun g h -> h + g * g) g h) grads hs // h += grads*grads
                List.map2 (fun (name, g) h -> name, Value.map2 (fun g h -> -(lr * g / (sqrt h + eps))) g h) grads h', named "h" grads h' // params -= lr*grads / (sqrt(h) + 1e-7)
          Penalty = fun _ -> LanguagePrimitives.GenericZero }

    // RMSprop's state: h.W1, h.b1, ...: each parameter's moving average of squared gradients, zero at first.
    /// RMSprop (the book's RMSprop; defaults lr 0.01, decay_rate 0.99): h ← decay·h + (1 - decay)·g²,
    /// then W ← W - lr·g / (√h + 1e-7).
    let inline rmsprop (learningRate: float) (decayRate: float) : Optimizer< ^T > =
        check (learningRate > 0.0) "learningRate" learningRate "positive"
        check (decayRate >= 0.0 && decayRate < 1.0) "decayRate" decayRate "in [0, 1)"
        let lr, d, d1, eps = ofFloat learningRate, ofFloat decayRate, ofFloat (1.0 - decayRate), ofFloat 1e-7
        { Spec = [ OptimizerSpec.RmsProp(learningRate, decayRate) ]
          Init = zeros [ "h" ]
          Update =
            fun _ grads state _ ->
                let hs = List.head (bySlot [ "h" ] grads state)
                let h' = List.map2 (fun (_, g) h -> Value.map2 (fun g h -> h * d + d1 * g * g) g h) grads hs // h *= decay_rate; h += (1 - decay_rate)*grads*grads
                List.map2 (fun (name, g) h -> name, Value.map2 (fun g h -> -(lr * g / (sqrt h + eps))) g h) grads h', named "h" grads h' // params -= lr*grads / (sqrt(h) + 1e-7)
          Penalty = fun _ -> LanguagePrimitives.GenericZero }

    // Adam's state: m.W1, m.b1, ..., then v.W1, v.b1, ...: the moving averages of the gradients
    // and of their squares, zero at first. The update count t is the step Update is given.
    /// Adam (the book's Adam; defaults lr 0.001, beta1 0.9, beta2 0.999), with the bias
    /// correction folded into the learning rate: lr_t = lr·√(1 - β2ᵗ) / (1 - β1ᵗ);
    /// m ← m + (1 - β1)·(g - m); v ← v + (1 - β2)·(g² - v); W ← W - lr_t·m / (√v + 1e-7).
    let inline adam (learningRate: float) (beta1: float) (beta2: float) : Optimizer< ^T > =
        check (learningRate > 0.0) "learningRate" learningRate "positive"
        check (beta1 >= 0.0 && beta1 < 1.0) "beta1" beta1 "in [0, 1)"
        check (beta2 >= 0.0 && beta2 < 1.0) "beta2" beta2 "in [0, 1)"
        let b1, b2, eps = ofFloat (1.0 - beta1), ofFloat (1.0 - beta2), ofFloat 1e-7
        { Spec = [ OptimizerSpec.Adam(learningRate, beta1, beta2) ]
          Init = zeros [ "m"; "v" ]
          Update =
            fun step grads state _ ->
                if step < 1 then invalidArg "step" $"Adam counts its updates from 1, got %d{step}"
                let lrT = ofFloat (learningRate * sqrt (1.0 - beta2 ** float step) / (1.0 - beta1 ** float step)) // lr_t
                match bySlot [ "m"; "v" ] grads state with
                | [ ms; vs ] ->
                    // For each parameter, in one pass over its arrays (Linalg.adam):
                    //   m += (1 - beta1)*(grads - m)
                    //   v += (1 - beta2)*(grads**2 - v)
                    //   params -= lr_t*m / (sqrt(v) + 1e-7)
                    let steps =
                        List.map3
                            (fun (_, g) m v ->
                                let u, m', v' = Linalg.adam lrT b1 b2 eps (Value.elements g) (Value.elements m) (Value.elements v)
                                Value.withStorage g u, Value.withStorage g m', Value.withStorage g v')
                            grads ms vs
                    let update (u, _, _) = u
                    let first (_, m, _) = m
                    let second (_, _, v) = v
                    List.map2 (fun (name, _) step -> name, update step) grads steps,
                    named "m" grads (List.map first steps) @ named "v" grads (List.map second steps)
                | _ -> invalidArg "state" "Adam keeps m and v"
          Penalty = fun _ -> LanguagePrimitives.GenericZero }

    // Weight decay: no state.
    /// Weight decay (6.4.2, the book's weight_decay_lambda): λ·W added to the gradient of every
    /// weight W1, W2, ... (never b, gamma or beta), and 0.5·λ·ΣW² to the loss (Penalty). Chain
    /// it before an optimizer: chain [ weightDecay λ; adam ... ].
    let inline weightDecay (lambda: float) : Optimizer< ^T > =
        check (lambda >= 0.0) "lambda" lambda "zero or positive"
        let l, half = ofFloat lambda, ofFloat (0.5 * lambda)
        { Spec = [ OptimizerSpec.WeightDecay lambda ]
          Init = fun _ -> []
          Update =
            fun _ grads state parameters ->
                List.map2 (fun (name, g) (_, w) -> name, (if isWeight name then Value.map2 (fun g w -> g + l * w) g w else g)) grads parameters, state // dW + lambda*W
          Penalty = fun parameters -> parameters |> List.fold (fun sum (name, w) -> if isWeight name then sum + half * Value.sumOfSquares w else sum) LanguagePrimitives.GenericZero } // Σ 0.5*lambda*np.sum(W**2)

    /// The transformations one after the other (Optax's chain): each one's updates are the
    /// next one's gradients; the state is theirs in order, the penalty their sum. Raises
    /// ArgumentException when two of them would keep state under the same prefix.
    let inline chain (optimizers: Optimizer< ^T > list) : Optimizer< ^T > =
        if List.isEmpty optimizers then invalidArg "optimizers" "a chain of no transformations"
        let slotsOf (o: Optimizer< ^T >) = o.Spec |> List.collect slots
        match optimizers |> List.collect slotsOf |> List.countBy id |> List.tryFind (fun (_, n) -> n > 1) with
        | Some(s, _) -> invalidArg "optimizers" $"two transformations of the chain keep state named {s}.*"
        | None -> ()
        { Spec = optimizers |> List.collect (fun o -> o.Spec)
          Init = fun parameters -> optimizers |> List.collect (fun o -> o.Init parameters)
          Update =
            fun step grads state parameters ->
                let updates, rest, states =
                    optimizers
                    |> List.fold
                        (fun (updates, rest: Named< ^T >, states) o ->
                            let count = (slotsOf o).Length * List.length parameters
                            if rest.Length < count then invalidArg "state" $"%d{state.Length} state arrays, fewer than the chain keeps"
                            let own, rest = List.splitAt count rest
                            let updates, own = o.Update step updates own parameters
                            updates, rest, states @ own)
                        (grads, state, [])
                if not rest.IsEmpty then invalidArg "state" $"%d{state.Length} state arrays, more than the chain keeps"
                updates, states
          Penalty = fun parameters -> optimizers |> List.fold (fun sum o -> sum + o.Penalty parameters) LanguagePrimitives.GenericZero }

    /// The optimizer a spec describes: one transformation, or their chain.
    let inline ofSpec (specs: OptimizerSpec list) : Optimizer< ^T > =
        let one spec =
            match spec with
            | OptimizerSpec.Sgd lr -> sgd lr
            | OptimizerSpec.Momentum(lr, m) -> momentum lr m
            | OptimizerSpec.Nesterov(lr, m) -> nesterov lr m
            | OptimizerSpec.AdaGrad lr -> adaGrad lr
            | OptimizerSpec.RmsProp(lr, d) -> rmsprop lr d
            | OptimizerSpec.Adam(lr, b1, b2) -> adam lr b1 b2
            | OptimizerSpec.WeightDecay l -> weightDecay l
        match specs with
        | [ spec ] -> one spec
        | _ -> chain (List.map one specs)

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

/// Training as a fold of optimizer steps over mini-batches (SGD by default).
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
    /// Returns the new state and the loss before the step. The gradients are this step's own,
    /// so each new weight matrix is written over its gradient's memory (Value.addScaledOver):
    /// the old model is left as it was, and a step makes one weight-sized matrix less.
    let inline step (learningRate: ^T) (state: TrainState< ^T >) (x: Matrix< ^T >, t: Labels< ^T >) =
        let loss, grads, layerStates = Network.gradient state.Model x t
        let parameters = List.map2 (fun (name, p) (_, g) -> name, Value.addScaledOver p -learningRate g) (Network.parameters state.Model) grads
        let model = { Network.withParameters state.Model parameters with States = layerStates }
        { state with Model = model; Step = state.Step + 1 }, loss

    /// The state a run with an optimizer starts from: the model, the optimizer's initial state
    /// (its Init of the model's parameters), no steps.
    let inline startWith (optimizer: Optimizer< ^T >) (model: Model< ^T >) : TrainState< ^T > =
        { Model = model; Optimizer = optimizer.Init(Network.parameters model); Step = 0 }

    /// One step of any optimizer (the book's `grads = network.gradient(x, t)` then
    /// `optimizer.update(params, grads)`): the gradient by backpropagation, the optimizer's
    /// updates (as the step-th update, counting from 1) and the parameters plus the updates.
    /// An empty optimizer state (Training.start's) is the optimizer's Init. Returns the new
    /// state and the loss before the step, with the optimizer's penalty (weight decay's
    /// 0.5·λ·ΣW²) added as the book's loss adds it.
    let inline stepWith (optimizer: Optimizer< ^T >) (state: TrainState< ^T >) (x: Matrix< ^T >, t: Labels< ^T >) =
        let loss, grads, layerStates = Network.gradient state.Model x t
        let parameters = Network.parameters state.Model
        let optimizerState = if state.Optimizer.IsEmpty then optimizer.Init parameters else state.Optimizer
        let updates, optimizerState = optimizer.Update (state.Step + 1) grads optimizerState parameters
        let model = { Network.withParameters state.Model (Optimizer.applyUpdates parameters updates) with States = layerStates }
        { Model = model; Optimizer = optimizerState; Step = state.Step + 1 }, loss + optimizer.Penalty parameters

    /// One SGD step on a model alone (no optimizer state to carry): the new model and the loss.
    let inline sgdStep (learningRate: ^T) (model: Model< ^T >) (batch: Matrix< ^T > * Labels< ^T >) =
        let state, loss = step learningRate (start model) batch
        state.Model, loss

    /// Training as a fold: `step` applied to each mini-batch in turn, from `initial`. This is
    /// the whole of training; the functions below only report on the way.
    let inline train (learningRate: ^T) (initial: TrainState< ^T >) (batches: seq<Matrix< ^T > * Labels< ^T >>) : TrainState< ^T > =
        batches |> Seq.fold (fun state batch -> fst (step learningRate state batch)) initial

    /// Training with any optimizer as a fold: `stepWith optimizer` applied to each mini-batch.
    let inline trainWith (optimizer: Optimizer< ^T >) (initial: TrainState< ^T >) (batches: seq<Matrix< ^T > * Labels< ^T >>) : TrainState< ^T > =
        batches |> Seq.fold (fun state batch -> fst (stepWith optimizer state batch)) initial

    /// The fold of `stepWith optimizer`, one (state, loss) after each step, lazily.
    let inline stepsWith (optimizer: Optimizer< ^T >) (initial: TrainState< ^T >) (batches: seq<Matrix< ^T > * Labels< ^T >>) : seq<TrainState< ^T > * ^T> =
        batches |> Seq.scan (fun (state, _) batch -> stepWith optimizer state batch) (initial, LanguagePrimitives.GenericZero) |> Seq.skip 1

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

    /// The run with any optimizer on the given mini-batches, one report per epoch of perEpoch
    /// steps, lazily: the fold of `stepWith optimizer` from `initial`, grouped into epochs
    /// (byEpoch). The accuracies are NaN.
    let inline trainedOnWith (optimizer: Optimizer< ^T >) (perEpoch: int) (initial: TrainState< ^T >) (batches: seq<Matrix< ^T > * Labels< ^T >>) : seq<EpochReport< ^T >> =
        stepsWith optimizer initial batches |> Seq.map (fun (s, loss) -> s, float loss) |> byEpoch perEpoch
