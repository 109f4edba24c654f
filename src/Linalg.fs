/// The matrix products the layers need, in one small module. Every product in the core goes
/// through here, and here they go to a backend: OpenBLAS where the system has it, else a
/// vectorized managed kernel (Backend/Gemm.fs). The functions are generic in the element type
/// (float or float32); the layers never see which backend ran.
[<RequireQualifiedAccess>]
module Backprop.Linalg

open MathNet.Numerics.LinearAlgebra
open Backprop.Backend

/// Which implementation computes the matrix products.
[<RequireQualifiedAccess>]
type Backend =
    /// OpenBLAS if the system has it, else Managed.
    | Auto
    /// OpenBLAS through P/Invoke, one thread.
    | OpenBlas
    /// The vectorized managed kernel of Backend/Gemm.fs.
    | Managed
    /// MathNet.Numerics's own managed provider (slow; kept as a reference).
    | MathNet

/// The one process-wide setting of the library, chosen at the edge (the CLI's --backend).
let mutable private selected = Backend.Auto

/// The backend that runs the products: the selected one, with Auto resolved.
let active () =
    match selected with
    | Backend.Auto -> if OpenBlas.isAvailable () then Backend.OpenBlas else Backend.Managed
    | b -> b

/// Selects the backend for every product from now on. Raises ArgumentException for OpenBlas
/// when the system has no OpenBLAS.
let useBackend (backend: Backend) =
    if backend = Backend.OpenBlas && not (OpenBlas.isAvailable ()) then
        invalidArg "backend" $"""OpenBLAS was not found on this system (tried {String.concat ", " OpenBlas.candidates}); install it (Debian: libopenblas0-pthread) or use the managed backend"""
    selected <- backend

/// The active backend in words, e.g. "openblas (libopenblas.so.0, 1 thread)".
let describe () =
    match active () with
    | Backend.OpenBlas -> $"""openblas ({defaultArg (OpenBlas.libraryName ()) "?"}, 1 thread)"""
    | Backend.Managed -> Gemm.describe ()
    | _ -> "mathnet (managed provider)"

/// C = op(A)·op(B) on the active backend, op(X) = Xᵀ when transX.
let private product transA transB (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> =
    let m, k = if transA then a.ColumnCount, a.RowCount else a.RowCount, a.ColumnCount
    let k', n = if transB then b.ColumnCount, b.RowCount else b.RowCount, b.ColumnCount
    if k <> k' then
        invalidArg "b" $"matrix product of op(A) %d{m}x%d{k} by op(B) %d{k'}x%d{n}: the inner sizes differ"
    let backend = active ()
    match box a, box b with
    | (:? Single.DenseMatrix as a), (:? Single.DenseMatrix as b) when backend <> Backend.MathNet ->
        let gemm = if backend = Backend.OpenBlas then OpenBlas.sgemm else Gemm.sgemm
        let c = Array.zeroCreate (m * n)
        gemm transA transB m n k 1.0f a.Values a.RowCount b.Values b.RowCount 0.0f c (max m 1)
        box (Single.DenseMatrix(m, n, c)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as a), (:? Double.DenseMatrix as b) when backend <> Backend.MathNet ->
        let gemm = if backend = Backend.OpenBlas then OpenBlas.dgemm else Gemm.dgemm
        let c = Array.zeroCreate (m * n)
        gemm transA transB m n k 1.0 a.Values a.RowCount b.Values b.RowCount 0.0 c (max m 1)
        box (Double.DenseMatrix(m, n, c)) :?> Matrix<'T>
    | _ ->
        match transA, transB with
        | false, false -> a.Multiply b
        | true, false -> a.TransposeThisAndMultiply b
        | false, true -> a.TransposeAndMultiply b
        | true, true -> a.TransposeThisAndMultiply(b.Transpose())

/// A · B
let mul (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = product false false a b

/// A · B + r, with the vector r added to every row (the Affine layer's x · W + b): the product
/// accumulates onto a matrix whose rows already hold r.
let mulAddRow (a: Matrix<'T>) (b: Matrix<'T>) (r: Vector<'T>) : Matrix<'T> =
    if r.Count <> b.ColumnCount then invalidArg "r" $"a row of %d{r.Count} values added to a product with %d{b.ColumnCount} columns"
    let m, n = a.RowCount, b.ColumnCount
    match box a, box b, box r with
    | (:? Single.DenseMatrix as a), (:? Single.DenseMatrix as b), (:? Single.DenseVector as r) when active () <> Backend.MathNet && a.ColumnCount = b.RowCount ->
        let c = Array.zeroCreate (m * n)
        for j in 0 .. n - 1 do System.Array.Fill(c, r.Values[j], j * m, m)
        (if active () = Backend.OpenBlas then OpenBlas.sgemm else Gemm.sgemm) false false m n a.ColumnCount 1.0f a.Values m b.Values b.RowCount 1.0f c (max m 1)
        box (Single.DenseMatrix(m, n, c)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as a), (:? Double.DenseMatrix as b), (:? Double.DenseVector as r) when active () <> Backend.MathNet && a.ColumnCount = b.RowCount ->
        let c = Array.zeroCreate (m * n)
        for j in 0 .. n - 1 do System.Array.Fill(c, r.Values[j], j * m, m)
        (if active () = Backend.OpenBlas then OpenBlas.dgemm else Gemm.dgemm) false false m n a.ColumnCount 1.0 a.Values m b.Values b.RowCount 1.0 c (max m 1)
        box (Double.DenseMatrix(m, n, c)) :?> Matrix<'T>
    | _ -> product false false a b + Matrix<'T>.Build.Dense(m, n, fun _ j -> r[j])

/// out ← y + alpha · x over whole arrays, with System.Numerics vectors.
let inline private axpy (y: ^T[]) (alpha: ^T) (x: ^T[]) =
    let out = Array.zeroCreate y.Length
    let w = System.Numerics.Vector< ^T>.Count
    let a = System.Numerics.Vector< ^T>(alpha)
    let mutable i = 0
    while i <= y.Length - w do
        (System.Numerics.Vector< ^T>(y, i) + a * System.Numerics.Vector< ^T>(x, i)).CopyTo(out, i)
        i <- i + w
    while i < y.Length do
        out[i] <- y[i] + alpha * x[i]
        i <- i + 1
    out

/// Y + alpha · X, element by element, in one vectorized pass (the SGD update W - lr · dW).
let addScaled (y: Matrix<'T>) (alpha: 'T) (x: Matrix<'T>) : Matrix<'T> =
    if x.RowCount <> y.RowCount || x.ColumnCount <> y.ColumnCount then
        invalidArg "x" $"%d{x.RowCount}x%d{x.ColumnCount} added to %d{y.RowCount}x%d{y.ColumnCount}"
    match box y, box x, box alpha with
    | (:? Single.DenseMatrix as y), (:? Single.DenseMatrix as x), (:? float32 as alpha) ->
        box (Single.DenseMatrix(y.RowCount, y.ColumnCount, axpy y.Values alpha x.Values)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as y), (:? Double.DenseMatrix as x), (:? float as alpha) ->
        box (Double.DenseMatrix(y.RowCount, y.ColumnCount, axpy y.Values alpha x.Values)) :?> Matrix<'T>
    | _ -> y + x.Multiply alpha

/// Aᵀ · B (used for the weight gradient xᵀ · dout).
let mulTN (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = product true false a b

/// A · Bᵀ (used for the input gradient dout · Wᵀ).
let mulNT (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = product false true a b
