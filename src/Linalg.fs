/// The matrix products and elementwise kernels the layers need, in one small module. Every
/// product in the core goes through here, and here they go to a backend: OpenBLAS where the
/// system has it, else a vectorized managed kernel (Backend/Gemm.fs). The elementwise kernels
/// (ReLU, its mask, the Hadamard product, the row-wise softmax, the column sums) run on
/// System.Numerics.Tensors' vectorized primitives. The functions are generic in the element type
/// (float or float32); the layers never see how they ran.
///
/// Which backend, how gathered images are stored and whether large products are split over two
/// threads are settings (Backend/Settings.fs), not globals: the functions read them from the code
/// that calls them (`current ()`, the defaults outside any `using settings (fun () -> ...)`).
[<RequireQualifiedAccess>]
module Backprop.Core.Linalg

#nowarn "9" // a large Aᵀ is transposed through native pointers before the managed product

open System
open System.Collections.Generic
open System.Numerics.Tensors
open System.Runtime.Intrinsics
open MathNet.Numerics.LinearAlgebra
open Backprop.Core.Backend

/// Which implementation computes the matrix products (Backend/Settings.fs): Auto, OpenBlas,
/// Managed or MathNet.
type Backend = ProductBackend

/// How gathered images are stored (Backend/Settings.fs): Auto, Dense or Sparse.
type InputStorage = Backprop.Core.Backend.InputStorage

/// The backend, input storage and threads the functions of this module use (Backend/Settings.fs).
type Settings = Backprop.Core.Backend.Settings

/// Settings with the given backend (Auto: OpenBLAS if the system has it, else Managed), input
/// storage and threads (1, or 2 for the helper thread). Raises ArgumentException for OpenBlas
/// when the system has no OpenBLAS, ArgumentOutOfRangeException for fewer than one thread.
let settings (backend: Backend) (storage: InputStorage) (threads: int) : Settings = Backprop.Core.Backend.Settings.create backend storage threads

/// The settings outside any `using`: OpenBLAS where the system has it (else Managed), storage
/// Auto, two threads where the machine has two cores or more.
let defaults () : Settings = Backprop.Core.Backend.Settings.defaults ()

/// The settings in effect here: those of the innermost `using`, else the defaults.
let current () : Settings = Backprop.Core.Backend.Settings.current ()

/// Runs f with settings in effect (in this call, the tasks it starts and the work it hands to
/// the helper thread), then restores the settings that were in effect before, also when f raises.
/// A lazy sequence f returns runs under the settings where it is enumerated: enumerate it in f.
[<CompiledName "Using">]
let using (settings: Settings) (f: unit -> 'a) : 'a = Backprop.Core.Backend.Settings.using settings f

/// The backend and threads in effect in words, e.g. "openblas (libopenblas.so.0), large products
/// in halves on 2 threads", or where the products of 5 million multiply-adds and more run on the
/// managed kernel (Settings.LargeProductsOnManaged) "openblas (libopenblas.so.0; large products:
/// managed Vector512), 2 threads" (short enough for `train`'s header line).
let describe () =
    let s = current ()
    let split = if s.Threads >= 2 then ", large products in halves on 2 threads" else ", 1 thread"
    match s.Backend with
    | ProductBackend.OpenBlas when s.LargeProductsOnManaged ->
        let threads = if s.Threads >= 2 then ", 2 threads" else ", 1 thread"
        $"""openblas ({defaultArg (OpenBlas.libraryName ()) "?"}; large products: managed Vector512){threads}"""
    | ProductBackend.OpenBlas -> $"""openblas ({defaultArg (OpenBlas.libraryName ()) "?"}){split}"""
    | ProductBackend.Managed -> Gemm.describe () + split
    | _ -> "mathnet (managed provider)"

/// The nonzero pixels among the first 1,000 images of this data (row-major bytes, rowLength per
/// image), and the pixels looked at: the sample Auto judges the data by.
let private firstImagesNonzero (pixels: byte[]) (rowLength: int) =
    let sample = ReadOnlySpan(pixels, 0, min pixels.Length (1000 * max rowLength 1))
    sample.Length - MemoryExtensions.Count(sample, 0uy), sample.Length

/// Whether gatherImages stores the images of this data (row-major bytes, rowLength per image)
/// sparsely: as the settings in effect say, and with Auto when at most a third of the pixels of its
/// first 1,000 images are nonzero (MNIST: about one in five; Fashion-MNIST: one in two).
let storesSparse (pixels: byte[]) (rowLength: int) =
    match (current ()).InputStorage with
    | InputStorage.Dense -> false
    | InputStorage.Sparse -> true
    | InputStorage.Auto ->
        let nonzero, looked = firstImagesNonzero pixels rowLength
        nonzero * 3 <= looked

/// Products of at least this many multiply-adds are split over two threads (Backend/Halves.fs):
/// the Affine layer's 100 × 784 by 784 × 50 is 3.9 million; the 50 × 10 layer stays whole.
let private splitAbove = 1_000_000L

/// Products of at least this many multiply-adds are split evenly; smaller ones give the training
/// thread 9/16 of the columns, since the helper starts its share later (a few microseconds, up to
/// tens when it was asleep), which is a large part of a 3.9-million product (about 40 µs a half)
/// but not of 784-1000x4-10's 100-million ones, where the 9/16 left the helper idle a fifth of
/// its time (1,000 steps: 19.1-19.5 s with 9/16, 17.9-18.5 even; docs/PERFORMANCE.md).
let private evenAbove = 5_000_000L

/// C ← alpha·op(A)·op(B) + beta·C through `gemmAt` (a backend's offset gemm), the columns of C
/// in two halves on two threads when the product is large (`splitAbove`; even halves from
/// `evenAbove`). (Halves of the rows, which pack only half of op(A) each, measured slower here.)
let inline private gemmInHalves gemmAt transA transB m n k (alpha: ^T) (a: ^T[]) lda (b: ^T[]) ldb (beta: ^T) (c: ^T[]) ldc =
    // Columns j0 .. j0+nj-1 of C need those columns of op(B): B's columns, or with transB its rows.
    let columns j0 nj = gemmAt transA transB m nj k alpha a 0 lda b (if transB then j0 else j0 * ldb) ldb beta c (j0 * ldc) ldc
    let work = int64 m * int64 n * int64 k
    if work >= splitAbove && n >= 2 then
        let half = if work >= evenAbove then (n + 1) / 2 else (n * 9 + 8) / 16
        Halves.run (fun () -> columns 0 half) (fun () -> columns half (n - half))
    else
        columns 0 n

/// Products of at least this many multiply-adds run on the managed kernel where the settings say
/// that it outruns OpenBLAS's (Settings.LargeProductsOnManaged): 784-1000x4-10's 100 × 1000 by
/// 1000 × 1000 (100 million), not the book's network nor chapter 6's (at most 1 million).
let private managedAbove = evenAbove

/// Whether this product (m·n·k multiply-adds) runs on the managed kernel under these settings.
let private onManaged (s: Settings) m n k =
    s.Backend = ProductBackend.Managed || (s.LargeProductsOnManaged && int64 m * int64 n * int64 k >= managedAbove)

/// op(A) = Aᵀ (A: k × m, leading dimension lda) as an m × k column-major array from the pool
/// (the caller returns it), transposed in 8 × 8 blocks in AVX registers (Sparse.transpose).
let private transposedCopy<'T when 'T: unmanaged> (a: 'T[]) (m: int) (k: int) (lda: int) : 'T[] =
    let at = Buffers.ArrayPool<'T>.Shared.Rent(m * k)
    use pa = fixed a
    use pat = fixed at
    Sparse.transpose pa m k lda pat m
    at

/// C ← alpha·op(A)·op(B) + beta·C on the settings' backend (column-major arrays): `blasAt` and
/// `managedAt` are OpenBLAS's and the managed kernel's offset gemm of the element type. On the
/// managed kernel a large op(A) = Aᵀ is transposed once into a pooled array, which both halves
/// then read in place, instead of each half packing all of Aᵀ element by element (784-1000x4-10's
/// xᵀ·dout: 124 → 173 GFLOP/s, docs/PERFORMANCE.md).
let inline private gemmOn (s: Settings) blasAt managedAt transA transB m n k (alpha: ^T) (a: ^T[]) lda (b: ^T[]) ldb (beta: ^T) (c: ^T[]) ldc =
    if not (onManaged s m n k) then
        gemmInHalves blasAt transA transB m n k alpha a lda b ldb beta c ldc // (Managed is always onManaged)
    elif transA && int64 m * int64 n * int64 k >= splitAbove then
        let at = transposedCopy a m k lda
        try gemmInHalves managedAt false transB m n k alpha at m b ldb beta c ldc
        finally Buffers.ArrayPool< ^T>.Shared.Return at
    else
        gemmInHalves managedAt transA transB m n k alpha a lda b ldb beta c ldc

/// C ← alpha·op(A)·op(B) + beta·C on the settings' backend, in float32 (gemmOn).
let private sgemm (s: Settings) transA transB m n k (alpha: float32) a lda b ldb beta c ldc =
    gemmOn s OpenBlas.sgemmAt Gemm.sgemmAt transA transB m n k alpha a lda b ldb beta c ldc

/// C ← alpha·op(A)·op(B) + beta·C on the settings' backend, in float64 (gemmOn).
let private dgemm (s: Settings) transA transB m n k (alpha: float) a lda b ldb beta c ldc =
    gemmOn s OpenBlas.dgemmAt Gemm.dgemmAt transA transB m n k alpha a lda b ldb beta c ldc

/// The sparse kernels' cost per nonzero and per vector of output columns, against the dense
/// product's cost per multiply-add and per vector, a ratio measured at batch 100 (see
/// docs/PERFORMANCE.md, "Speed that holds as the work grows"): the sparse kernels do each
/// nonzero's vector FMAs against a tile of W in L1 and L2 with the output row in registers, about
/// `sparseOverDense` times what OpenBLAS spends on a multiply-add vector of a dense product
/// (its register blocking loads each W vector once for several rows).
let private sparseOverDense = 3.0

/// Whether the sparse kernels (Backend/Sparse.fs) are expected to beat the dense product for an
/// m × k compressed-row A with `nonzeros` entries against n columns, the cost model of
/// `InputStorage.Auto`: sparse costs nonzeros × ⌈n / w⌉ vector FMAs (w the vector width: a
/// column past the last whole vector costs a whole one), each `sparseOverDense` times a dense
/// vector multiply-add; dense costs m × k × n / w of those, plus writing the m × k dense copy.
/// Under Auto the products run dense (on a dense copy of A) where this says no; under
/// InputStorage.Sparse or Dense, a sparse A always runs on the sparse kernels.
let sparsePays (m: int) (k: int) (nonzeros: int) (n: int) (vectorWidth: int) =
    let w = float (max vectorWidth 1)
    let sparse = float nonzeros * ceil (float n / w) * sparseOverDense
    let dense = float m * float k * (float n / w) + float m * float k / w
    sparse <= dense

/// Whether gatherImages stores a batch of this data sparsely (storesSparse) and a product of a
/// typical such batch of `batch` images against `width` columns of 'T (the first layer's x·W + b
/// and xᵀ·dout) then runs on the sparse kernels: always under InputStorage.Sparse, under Auto
/// where `sparsePays` for the mean nonzeros of the first 1,000 images. Each product judges its
/// own batch, so near the cost model's break-even (MNIST in float32: 3, 4, 9 or 10 outputs) a
/// few batches go the other way. False for dense storage.
let firstProductsSparse<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType> (pixels: byte[]) (rowLength: int) (batch: int) (width: int) =
    storesSparse pixels rowLength
    && match (current ()).InputStorage with
       | InputStorage.Auto ->
           let nonzero, looked = firstImagesNonzero pixels rowLength
           let perImage = float nonzero * float (max rowLength 1) / float (max looked 1)
           sparsePays batch rowLength (int (perImage * float batch)) width System.Numerics.Vector<'T>.Count
       | _ -> true

/// A thread's scratch for a dense copy of a sparse matrix (the product runs on it before the
/// thread's next product): reused, so that densifying a batch allocates nothing.
[<AbstractClass; Sealed>]
type private DenseCopy<'T> =
    [<ThreadStatic; DefaultValue>]
    static val mutable private buffer: 'T[]
    /// An array of exactly `length` elements, all 0, for this thread.
    static member Zeroed(length: int) : 'T[] =
        let mutable b = DenseCopy<'T>.buffer
        if isNull b || b.Length <> length then
            b <- Array.zeroCreate length
            DenseCopy<'T>.buffer <- b
        else
            Array.Clear b
        b

/// The sparse matrix a as a dense one, in this thread's scratch (valid until its next dense copy).
let private densify<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable>
    (a: Matrix<'T>) : Matrix<'T> =
    let s = a.Storage :?> Storage.SparseCompressedRowMatrixStorage<'T>
    let m = a.RowCount
    let c = DenseCopy<'T>.Zeroed(m * a.ColumnCount)
    for i in 0 .. m - 1 do
        for e in s.RowPointers[i] .. s.RowPointers[i + 1] - 1 do
            c[s.ColumnIndices[e] * m + i] <- s.Values[e]
    Matrix<'T>.Build.Dense(m, a.ColumnCount, c)

/// Whether the product of the sparse a with n columns runs on the sparse kernels: always under
/// InputStorage.Sparse or Dense (the storage was chosen), by `sparsePays` under Auto.
let private onSparseKernels<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable>
    (a: Matrix<'T>) (n: int) =
    match (current ()).InputStorage with
    | InputStorage.Auto ->
        let s = a.Storage :?> Storage.SparseCompressedRowMatrixStorage<'T>
        sparsePays a.RowCount a.ColumnCount s.RowPointers[a.RowCount] n (System.Numerics.Vector<'T>.Count)
    | _ -> true

/// A thread's pool of result arrays, inside `reusingResults`: for each element type and length,
/// the arrays given back, and the arrays lent since the last give-back.
[<Sealed; AllowNullLiteral>]
type private ResultPool() =
    let free = Dictionary<struct (Type * int), Stack<Array>>()
    let lent = List<Array>()

    [<ThreadStatic; DefaultValue>]
    static val mutable private current: ResultPool

    /// This thread's pool (null outside `reusingResults`).
    static member Current
        with get () = ResultPool.current
        and set (pool: ResultPool) = ResultPool.current <- pool

    /// An array of n elements, given back earlier or new; its contents are whatever they were.
    member _.Take<'T>(n: int) : 'T[] =
        let a =
            match free.TryGetValue(struct (typeof<'T>, n)) with
            | true, given when given.Count > 0 -> given.Pop() :?> 'T[]
            | _ -> GC.AllocateUninitializedArray<'T> n
        lent.Add a
        a

    /// Every array lent since the last give-back, back in the pool.
    member _.GiveBack() =
        for a in lent do
            let key = struct (a.GetType().GetElementType(), a.Length)
            match free.TryGetValue key with
            | true, given -> given.Push a
            | _ ->
                let given = Stack<Array>()
                given.Push a
                free[key] <- given
        lent.Clear()

/// A new array of n elements for a result that writes every one of them: from this thread's
/// pool inside `reusingResults`, else from the collector (uninitialized; a large one, such as a
/// wide first layer's weight gradient, may be one that the collector found unreachable:
/// Backend/Recycled.fs).
let private fresh<'T> (n: int) : 'T[] =
    match ResultPool.Current with
    | null -> Recycled.take<'T> n
    | pool -> pool.Take<'T> n

/// Runs f with a pool for the result arrays of the dense and sparse products, the affine maps
/// (x·W + b), the elementwise maps (ReLU and its mask, Hadamard products, scaled and filled
/// matrices) and the row broadcasts (Batch Normalization's) that this thread computes meanwhile.
/// f is given `giveBack`, which puts every array taken since its last call back in the pool,
/// for the next results of the same size. For a loop whose every turn computes matrices and
/// drops them (an evaluation's blocks, which keep only each block's predicted classes): the
/// arrays are made at the first turn and reused by the others, instead of a few MB of fresh
/// memory for the collector and the page faults at every turn. A matrix made before a
/// giveBack must not be used after it. Nothing outside f sees the pool: other threads, and
/// code after f returns, allocate as before; a reusingResults inside f has its own pool.
let reusingResults (f: (unit -> unit) -> 'a) : 'a =
    let outer = ResultPool.Current
    let pool = ResultPool()
    ResultPool.Current <- pool
    try f pool.GiveBack
    finally ResultPool.Current <- outer

/// A·B + r (r added to every row; empty for none) for a sparse A and a dense B with n columns,
/// as a new column-major array.
let private sparseAffine<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable>
    (a: Matrix<'T>) (b: 'T[]) (r: 'T[]) (n: int) : 'T[] =
    let s = a.Storage :?> Storage.SparseCompressedRowMatrixStorage<'T>
    let c = fresh (a.RowCount * n)
    Sparse.mulAddRow a.RowCount a.ColumnCount s.RowPointers s.ColumnIndices s.Values b n r c
    c

/// op(A)·B for a sparse A (compressed rows) and a dense B with n columns, as a new column-major array.
let private sparseProduct<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable>
    (transA: bool) (a: Matrix<'T>) (b: 'T[]) (n: int) : 'T[] =
    if transA then
        let s = a.Storage :?> Storage.SparseCompressedRowMatrixStorage<'T>
        let c = fresh (a.ColumnCount * n)
        Sparse.mulTN a.RowCount a.ColumnCount s.RowPointers s.ColumnIndices s.Values b n c
        c
    else
        sparseAffine a b Array.empty n

/// C = op(A)·op(B) on the backend in effect, op(X) = Xᵀ when transX.
let rec private product transA transB (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> =
    let settings = current ()
    let backend = settings.Backend
    let m, k = if transA then a.ColumnCount, a.RowCount else a.RowCount, a.ColumnCount
    let k', n = if transB then b.ColumnCount, b.RowCount else b.RowCount, b.ColumnCount
    if k <> k' then
        invalidArg "b" $"matrix product of op(A) %d{m}x%d{k} by op(B) %d{k'}x%d{n}: the inner sizes differ"
    match box a, box b with
    | (:? Single.SparseMatrix as a), (:? Single.DenseMatrix as b) when backend <> ProductBackend.MathNet && not transB ->
        if onSparseKernels a n then box (Single.DenseMatrix(m, n, sparseProduct transA a b.Values n)) :?> Matrix<'T>
        else product transA transB (densify (box a :?> Matrix<'T>)) (box b :?> Matrix<'T>)
    | (:? Double.SparseMatrix as a), (:? Double.DenseMatrix as b) when backend <> ProductBackend.MathNet && not transB ->
        if onSparseKernels a n then box (Double.DenseMatrix(m, n, sparseProduct transA a b.Values n)) :?> Matrix<'T>
        else product transA transB (densify (box a :?> Matrix<'T>)) (box b :?> Matrix<'T>)
    | (:? Single.DenseMatrix as a), (:? Single.DenseMatrix as b) when backend <> ProductBackend.MathNet ->
        let c = fresh (m * n) // beta = 0: every element is written
        sgemm settings transA transB m n k 1.0f a.Values a.RowCount b.Values b.RowCount 0.0f c (max m 1)
        box (Single.DenseMatrix(m, n, c)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as a), (:? Double.DenseMatrix as b) when backend <> ProductBackend.MathNet ->
        let c = fresh (m * n)
        dgemm settings transA transB m n k 1.0 a.Values a.RowCount b.Values b.RowCount 0.0 c (max m 1)
        box (Double.DenseMatrix(m, n, c)) :?> Matrix<'T>
    | _ ->
        match transA, transB with
        | false, false -> a.Multiply b
        | true, false -> a.TransposeThisAndMultiply b
        | false, true -> a.TransposeAndMultiply b
        | true, true -> a.TransposeThisAndMultiply(b.Transpose())

/// A · B
let times (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = product false false a b

/// A · B + r, with the vector r added to every row (the Affine layer's x · W + b): the product
/// accumulates onto a matrix whose rows already hold r.
let rec affine (a: Matrix<'T>) (b: Matrix<'T>) (r: Vector<'T>) : Matrix<'T> =
    if r.Count <> b.ColumnCount then invalidArg "r" $"a row of %d{r.Count} values added to a product with %d{b.ColumnCount} columns"
    let settings = current ()
    let backend = settings.Backend
    let m, n = a.RowCount, b.ColumnCount
    match box a, box b, box r with
    | (:? Single.SparseMatrix as a), (:? Single.DenseMatrix as b), (:? Single.DenseVector as r) when backend <> ProductBackend.MathNet && a.ColumnCount = b.RowCount ->
        if onSparseKernels a n then box (Single.DenseMatrix(m, n, sparseAffine a b.Values r.Values n)) :?> Matrix<'T>
        else affine (densify (box a :?> Matrix<'T>)) (box b :?> Matrix<'T>) (box r :?> Vector<'T>)
    | (:? Double.SparseMatrix as a), (:? Double.DenseMatrix as b), (:? Double.DenseVector as r) when backend <> ProductBackend.MathNet && a.ColumnCount = b.RowCount ->
        if onSparseKernels a n then box (Double.DenseMatrix(m, n, sparseAffine a b.Values r.Values n)) :?> Matrix<'T>
        else affine (densify (box a :?> Matrix<'T>)) (box b :?> Matrix<'T>) (box r :?> Vector<'T>)
    | (:? Single.DenseMatrix as a), (:? Single.DenseMatrix as b), (:? Single.DenseVector as r) when backend <> ProductBackend.MathNet && a.ColumnCount = b.RowCount ->
        let c = fresh (m * n) // filled with the bias below
        for j in 0 .. n - 1 do Array.Fill(c, r.Values[j], j * m, m)
        sgemm settings false false m n a.ColumnCount 1.0f a.Values m b.Values b.RowCount 1.0f c (max m 1)
        box (Single.DenseMatrix(m, n, c)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as a), (:? Double.DenseMatrix as b), (:? Double.DenseVector as r) when backend <> ProductBackend.MathNet && a.ColumnCount = b.RowCount ->
        let c = fresh (m * n)
        for j in 0 .. n - 1 do Array.Fill(c, r.Values[j], j * m, m)
        dgemm settings false false m n a.ColumnCount 1.0 a.Values m b.Values b.RowCount 1.0 c (max m 1)
        box (Double.DenseMatrix(m, n, c)) :?> Matrix<'T>
    | _ -> product false false a b + Matrix<'T>.Build.Dense(m, n, fun _ j -> r[j])

/// out ← y + alpha · x over whole arrays, with System.Numerics vectors; out may be x itself
/// (each element is read before it is written).
let inline private axpyInto (out: ^T[]) (y: ^T[]) (alpha: ^T) (x: ^T[]) =
    let w = System.Numerics.Vector< ^T>.Count
    let a = System.Numerics.Vector< ^T>(alpha)
    let range start stop =
        let mutable i = start
        while i <= stop - w do
            (System.Numerics.Vector< ^T>(y, i) + a * System.Numerics.Vector< ^T>(x, i)).CopyTo(out, i)
            i <- i + w
        while i < stop do
            out[i] <- y[i] + alpha * x[i]
            i <- i + 1
    // A large update (the first layer's 39,200 weights) in two halves on two threads.
    if y.Length >= 16384 then
        let half = y.Length / 2 / w * w
        Halves.run (fun () -> range 0 half) (fun () -> range half y.Length)
    else
        range 0 y.Length
    out

/// Y + alpha · X in one vectorized pass: into a new array, or, `over`, into X's own array.
let private scaledSum (over: bool) (y: Matrix<'T>) (alpha: 'T) (x: Matrix<'T>) : Matrix<'T> =
    if x.RowCount <> y.RowCount || x.ColumnCount <> y.ColumnCount then
        invalidArg "x" $"%d{x.RowCount}x%d{x.ColumnCount} added to %d{y.RowCount}x%d{y.ColumnCount}"
    let inline out (x: 'U[]) = if over then x else GC.AllocateUninitializedArray x.Length
    match box y, box x, box alpha with
    | (:? Single.DenseMatrix as y), (:? Single.DenseMatrix as x), (:? float32 as alpha) ->
        box (Single.DenseMatrix(y.RowCount, y.ColumnCount, axpyInto (out x.Values) y.Values alpha x.Values)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as y), (:? Double.DenseMatrix as x), (:? float as alpha) ->
        box (Double.DenseMatrix(y.RowCount, y.ColumnCount, axpyInto (out x.Values) y.Values alpha x.Values)) :?> Matrix<'T>
    | _ -> y + x.Multiply alpha

/// Y + alpha · X, element by element, in one vectorized pass (the SGD update W - lr · dW).
let addScaled (y: Matrix<'T>) (alpha: 'T) (x: Matrix<'T>) : Matrix<'T> = scaledSum false y alpha x

/// Y + alpha · X as addScaled computes it (the same numbers), written over X's array, which the
/// caller gives up: X must be a matrix that nothing else holds (Training.step's gradient, fresh
/// from backpropagation). The result is a new matrix over that array; Y is untouched. For a
/// matrix that is not dense float32 or float64, a new one (as addScaled).
let addScaledOver (y: Matrix<'T>) (alpha: 'T) (x: Matrix<'T>) : Matrix<'T> = scaledSum true y alpha x

/// Aᵀ · B (used for the weight gradient xᵀ · dout).
let transposeTimes (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = product true false a b

/// A · Bᵀ (used for the input gradient dout · Wᵀ).
let timesTranspose (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> = product false true a b

// ─── Elementwise kernels ────────────────────────────────────────────────────────────────────────

/// Runs `single` or `double` on the column-major array of a dense float32 or float64 matrix
/// into a new array of the same shape; `other` for any other kind of matrix.
let inline private elementwise (m: Matrix<'T>) ([<InlineIfLambda>] single: float32[] -> float32[] -> unit) ([<InlineIfLambda>] double: float[] -> float[] -> unit) ([<InlineIfLambda>] other: unit -> Matrix<'T>) : Matrix<'T> =
    match box m with
    | :? Single.DenseMatrix as m ->
        let out = fresh m.Values.Length // every kernel writes every element
        single m.Values out
        box (Single.DenseMatrix(m.RowCount, m.ColumnCount, out)) :?> Matrix<'T>
    | :? Double.DenseMatrix as m ->
        let out = fresh m.Values.Length
        double m.Values out
        box (Double.DenseMatrix(m.RowCount, m.ColumnCount, out)) :?> Matrix<'T>
    | _ -> other ()

/// max(x, 0), element by element (ReLU's output).
let relu (x: Matrix<'T>) : Matrix<'T> =
    elementwise x
        (fun x out -> TensorPrimitives.Max(ReadOnlySpan x, 0.0f, Span out))
        (fun x out -> TensorPrimitives.Max(ReadOnlySpan x, 0.0, Span out))
        (fun () -> x.PointwiseMaximum Unchecked.defaultof<'T>)

/// 1 where x > 0 and 0 elsewhere (NaN included), element by element: the mask ReLU keeps.
let inline private positiveMask (x: ^T[]) (out: ^T[]) =
    let w = System.Numerics.Vector< ^T>.Count
    let zero, one = System.Numerics.Vector< ^T>.Zero, System.Numerics.Vector< ^T>.One
    let mutable i = 0
    while i <= x.Length - w do
        // GreaterThan sets every bit of a lane where x > 0; and-ing with 1.0 leaves 1.0 there.
        System.Numerics.Vector.BitwiseAnd(System.Numerics.Vector.GreaterThan< ^T>(System.Numerics.Vector< ^T>(x, i), zero), one).CopyTo(out, i)
        i <- i + w
    while i < x.Length do
        out[i] <- if x[i] > LanguagePrimitives.GenericZero then LanguagePrimitives.GenericOne else LanguagePrimitives.GenericZero
        i <- i + 1

/// 1 where x > 0, else 0, element by element.
let positive (x: Matrix<'T>) : Matrix<'T> =
    elementwise x positiveMask positiveMask (fun () ->
        let zero, one = Unchecked.defaultof<'T>, Matrix<'T>.One
        x.Map((fun v -> if Comparer<'T>.Default.Compare(v, zero) > 0 then one else zero), Zeros.Include))

/// The Hadamard (element-by-element) product a ⊙ b.
let hadamard (a: Matrix<'T>) (b: Matrix<'T>) : Matrix<'T> =
    if a.RowCount <> b.RowCount || a.ColumnCount <> b.ColumnCount then
        invalidArg "b" $"%d{a.RowCount}x%d{a.ColumnCount} multiplied element by element by %d{b.RowCount}x%d{b.ColumnCount}"
    match box a, box b with
    | (:? Single.DenseMatrix as x), (:? Single.DenseMatrix as y) ->
        let out = fresh x.Values.Length
        TensorPrimitives.Multiply(ReadOnlySpan x.Values, ReadOnlySpan y.Values, Span out)
        box (Single.DenseMatrix(x.RowCount, x.ColumnCount, out)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as x), (:? Double.DenseMatrix as y) ->
        let out = fresh x.Values.Length
        TensorPrimitives.Multiply(ReadOnlySpan x.Values, ReadOnlySpan y.Values, Span out)
        box (Double.DenseMatrix(x.RowCount, x.ColumnCount, out)) :?> Matrix<'T>
    | _ -> a.PointwiseMultiply b

/// x · c, every element times the scalar c (Dropout's x · (1 - ratio) at inference).
let scaled (x: Matrix<'T>) (c: 'T) : Matrix<'T> =
    match box x, box c with
    | (:? Single.DenseMatrix as m), (:? float32 as c) ->
        let out = fresh m.Values.Length
        TensorPrimitives.Multiply(ReadOnlySpan m.Values, c, Span out)
        box (Single.DenseMatrix(m.RowCount, m.ColumnCount, out)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as m), (:? float as c) ->
        let out = fresh m.Values.Length
        TensorPrimitives.Multiply(ReadOnlySpan m.Values, c, Span out)
        box (Double.DenseMatrix(m.RowCount, m.ColumnCount, out)) :?> Matrix<'T>
    | _ -> x.Multiply c

/// A rows × columns matrix with every element c.
let filled (rows: int) (columns: int) (c: 'T) : Matrix<'T> =
    let out = fresh (rows * columns)
    Array.Fill(out, c)
    Matrix<'T>.Build.Dense(rows, columns, out)

/// Row-wise softmax on column-major storage, a column (every row at once) at a time: the row
/// maxima, then exp(x - max) with the row sums, then each column divided by the sums.
let inline private softmaxColumns (rows: int) (x: ^T[]) (out: ^T[]) =
    let columns = if rows = 0 then 0 else x.Length / rows
    let rowMax = Array.create rows (-(LanguagePrimitives.GenericOne< ^T> / LanguagePrimitives.GenericZero)) // -∞
    let rowSum = Array.zeroCreate< ^T> rows
    for j in 0 .. columns - 1 do
        TensorPrimitives.Max(ReadOnlySpan rowMax, ReadOnlySpan(x, j * rows, rows), Span rowMax)
    for j in 0 .. columns - 1 do
        TensorPrimitives.Subtract(ReadOnlySpan(x, j * rows, rows), ReadOnlySpan rowMax, Span(out, j * rows, rows))
        TensorPrimitives.Exp(ReadOnlySpan(out, j * rows, rows), Span(out, j * rows, rows))
        TensorPrimitives.Add(ReadOnlySpan rowSum, ReadOnlySpan(out, j * rows, rows), Span rowSum)
    for j in 0 .. columns - 1 do
        TensorPrimitives.Divide(ReadOnlySpan(out, j * rows, rows), ReadOnlySpan rowSum, Span(out, j * rows, rows))

/// softmax of each row: exp(x - the row's maximum), divided by its row sum.
let rec softmaxRows (x: Matrix<'T>) : Matrix<'T> =
    elementwise x (softmaxColumns x.RowCount) (softmaxColumns x.RowCount) (fun () ->
        if x.Storage.IsDense then invalidOp $"softmax of a matrix of {typeof<'T>.Name}: only float32 and float64 are supported"
        else softmaxRows (Matrix<'T>.Build.DenseOfMatrix x))

/// The sum of each column, as a vector (Σ over the rows).
let columnSums (x: Matrix<'T>) : Vector<'T> =
    match box x with
    | :? Single.DenseMatrix as m -> box (Single.DenseVector(Array.init m.ColumnCount (fun j -> TensorPrimitives.Sum(ReadOnlySpan(m.Values, j * m.RowCount, m.RowCount))))) :?> Vector<'T>
    | :? Double.DenseMatrix as m -> box (Double.DenseVector(Array.init m.ColumnCount (fun j -> TensorPrimitives.Sum(ReadOnlySpan(m.Values, j * m.RowCount, m.RowCount))))) :?> Vector<'T>
    | _ -> x.ColumnSums()

/// A row vector broadcast over the rows of a matrix (numpy's `x - mu` for x of N × D and mu of
/// D): `single` or `double` runs on each column j of a dense float32 or float64 matrix (its
/// `rows` elements from `start` in the column-major array) with r[j], into a new matrix.
let inline private byColumnWith
    (x: Matrix<'T>)
    (r: Vector<'T>)
    ([<InlineIfLambda>] single: ReadOnlyMemory<float32> -> float32 -> Memory<float32> -> unit)
    ([<InlineIfLambda>] double: ReadOnlyMemory<float> -> float -> Memory<float> -> unit)
    : Matrix<'T> =
    if r.Count <> x.ColumnCount then
        invalidArg "r" $"a row of %d{r.Count} broadcast over %d{x.RowCount}x%d{x.ColumnCount}"
    let x = if x.Storage.IsDense then x else Matrix<'T>.Build.DenseOfMatrix x
    let rows = x.RowCount
    match box x, box (r.AsArray()) with
    | (:? Single.DenseMatrix as m), (:? (float32[]) as r) ->
        let out = fresh m.Values.Length // every column is written
        for j in 0 .. r.Length - 1 do
            single (ReadOnlyMemory(m.Values, j * rows, rows)) r[j] (Memory(out, j * rows, rows))
        box (Single.DenseMatrix(rows, m.ColumnCount, out)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as m), (:? (float[]) as r) ->
        let out = fresh m.Values.Length
        for j in 0 .. r.Length - 1 do
            double (ReadOnlyMemory(m.Values, j * rows, rows)) r[j] (Memory(out, j * rows, rows))
        box (Double.DenseMatrix(rows, m.ColumnCount, out)) :?> Matrix<'T>
    | _ -> invalidOp $"row broadcasts of a matrix of {typeof<'T>.Name}: only float32 and float64 are supported"

/// x - r for each row of x (numpy's x - mu with mu a row of column means).
let minusRow (x: Matrix<'T>) (r: Vector<'T>) : Matrix<'T> =
    byColumnWith x r
        (fun c v out -> TensorPrimitives.Subtract(c.Span, v, out.Span))
        (fun c v out -> TensorPrimitives.Subtract(c.Span, v, out.Span))

/// x ⊙ r for each row of x (numpy's gamma * x with gamma a row).
let timesRow (x: Matrix<'T>) (r: Vector<'T>) : Matrix<'T> =
    byColumnWith x r
        (fun c v out -> TensorPrimitives.Multiply(c.Span, v, out.Span))
        (fun c v out -> TensorPrimitives.Multiply(c.Span, v, out.Span))

/// x / r for each row of x, element by element (numpy's xc / std with std a row).
let overRow (x: Matrix<'T>) (r: Vector<'T>) : Matrix<'T> =
    byColumnWith x r
        (fun c v out -> TensorPrimitives.Divide(c.Span, v, out.Span))
        (fun c v out -> TensorPrimitives.Divide(c.Span, v, out.Span))

/// x + r for each row of x (numpy's x + beta with beta a row).
let plusRow (x: Matrix<'T>) (r: Vector<'T>) : Matrix<'T> =
    byColumnWith x r
        (fun c v out -> TensorPrimitives.Add(c.Span, v, out.Span))
        (fun c v out -> TensorPrimitives.Add(c.Span, v, out.Span))

/// a + x ⊙ r for each row (numpy's a + x * r with r a row), for a and x of the same shape, in
/// one pass over each column.
let plusTimesRow (a: Matrix<'T>) (x: Matrix<'T>) (r: Vector<'T>) : Matrix<'T> =
    if a.RowCount <> x.RowCount || a.ColumnCount <> x.ColumnCount then
        invalidArg "x" $"%d{x.RowCount}x%d{x.ColumnCount} added to %d{a.RowCount}x%d{a.ColumnCount}"
    if r.Count <> x.ColumnCount then invalidArg "r" $"a row of %d{r.Count} broadcast over %d{x.RowCount}x%d{x.ColumnCount}"
    let rows = x.RowCount
    match box a, box x, box (r.AsArray()) with
    | (:? Single.DenseMatrix as a), (:? Single.DenseMatrix as x), (:? (float32[]) as r) ->
        let out = fresh a.Values.Length
        for j in 0 .. r.Length - 1 do
            TensorPrimitives.MultiplyAdd(ReadOnlySpan(x.Values, j * rows, rows), r[j], ReadOnlySpan(a.Values, j * rows, rows), Span(out, j * rows, rows))
        box (Single.DenseMatrix(rows, a.ColumnCount, out)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as a), (:? Double.DenseMatrix as x), (:? (float[]) as r) ->
        let out = fresh a.Values.Length
        for j in 0 .. r.Length - 1 do
            TensorPrimitives.MultiplyAdd(ReadOnlySpan(x.Values, j * rows, rows), r[j], ReadOnlySpan(a.Values, j * rows, rows), Span(out, j * rows, rows))
        box (Double.DenseMatrix(rows, a.ColumnCount, out)) :?> Matrix<'T>
    | _ -> a + timesRow x r

/// x ⊙ g + b for each row of x (numpy's gamma * x + beta with gamma and beta rows), in one pass.
let timesRowPlusRow (x: Matrix<'T>) (g: Vector<'T>) (b: Vector<'T>) : Matrix<'T> =
    if g.Count <> x.ColumnCount || b.Count <> x.ColumnCount then
        invalidArg "g" $"rows of %d{g.Count} and %d{b.Count} broadcast over %d{x.RowCount}x%d{x.ColumnCount}"
    let x = if x.Storage.IsDense then x else Matrix<'T>.Build.DenseOfMatrix x
    let rows = x.RowCount
    match box x, box (g.AsArray()), box (b.AsArray()) with
    | (:? Single.DenseMatrix as m), (:? (float32[]) as g), (:? (float32[]) as b) ->
        let out = fresh m.Values.Length
        for j in 0 .. g.Length - 1 do
            let o = Span(out, j * rows, rows)
            TensorPrimitives.Multiply(ReadOnlySpan(m.Values, j * rows, rows), g[j], o) // in L1: the column is 100-odd values
            TensorPrimitives.Add(ReadOnlySpan(out, j * rows, rows), b[j], o)
        box (Single.DenseMatrix(rows, m.ColumnCount, out)) :?> Matrix<'T>
    | (:? Double.DenseMatrix as m), (:? (float[]) as g), (:? (float[]) as b) ->
        let out = fresh m.Values.Length
        for j in 0 .. g.Length - 1 do
            let o = Span(out, j * rows, rows)
            TensorPrimitives.Multiply(ReadOnlySpan(m.Values, j * rows, rows), g[j], o)
            TensorPrimitives.Add(ReadOnlySpan(out, j * rows, rows), b[j], o)
        box (Double.DenseMatrix(rows, m.ColumnCount, out)) :?> Matrix<'T>
    | _ -> plusRow (timesRow x g) b

/// Σ_i a_ij · b_ij for each column j of two matrices of the same shape (numpy's
/// np.sum(a * b, axis=0)), without forming a ⊙ b.
let columnSumsOfProducts (a: Matrix<'T>) (b: Matrix<'T>) : Vector<'T> =
    if a.RowCount <> b.RowCount || a.ColumnCount <> b.ColumnCount then
        invalidArg "b" $"%d{a.RowCount}x%d{a.ColumnCount} and %d{b.RowCount}x%d{b.ColumnCount} multiplied element by element"
    let rows = a.RowCount
    match box a, box b with
    | (:? Single.DenseMatrix as a), (:? Single.DenseMatrix as b) ->
        box (Single.DenseVector(Array.init a.ColumnCount (fun j -> TensorPrimitives.Dot(ReadOnlySpan(a.Values, j * rows, rows), ReadOnlySpan(b.Values, j * rows, rows))))) :?> Vector<'T>
    | (:? Double.DenseMatrix as a), (:? Double.DenseMatrix as b) ->
        box (Double.DenseVector(Array.init a.ColumnCount (fun j -> TensorPrimitives.Dot(ReadOnlySpan(a.Values, j * rows, rows), ReadOnlySpan(b.Values, j * rows, rows))))) :?> Vector<'T>
    | _ -> (a.PointwiseMultiply b).ColumnSums()

// ─── Dropout's mask ─────────────────────────────────────────────────────────────────────────────

/// For each 8-bit mask, its bits as eight elements 0 or 1 (bit b at position b).
type private MaskRows<'T>() =
    static member val Table: 'T[] =
        let one: 'T =
            if Type.op_Equality(typeof<'T>, typeof<float32>) then unbox (box 1.0f)
            elif Type.op_Equality(typeof<'T>, typeof<float>) then unbox (box 1.0)
            else invalidOp $"a mask as {typeof<'T>.Name}: only float32 and float64 are supported"
        Array.init (256 * 8) (fun idx -> if (idx / 8) &&& (1 <<< (idx % 8)) <> 0 then one else Unchecked.defaultof<'T>)

/// Dropout's mask of a rows × columns input as float32 or float64, in column-major order: for
/// element (i, j), with index = i·columns + j, 1 where
/// mix(start + (index + 1)·0x9E3779B97F4A7C15) >>> 11 (SplitMix64's output function mix) is above
/// threshold, else 0. This is Core's Dropout.kept (its definition, read there; the tests compare
/// the two), computed eight indices at a time in 64-bit lanes where the CPU has 512-bit vectors
/// (two 64-bit multiplies per element, eight elements an instruction), and written as 'T at once
/// rather than as bytes converted after.
let keptMask<'T> (start: uint64) (threshold: uint64) (rows: int) (columns: int) : 'T[] =
    let table = MaskRows<'T>.Table
    let out: 'T[] = GC.AllocateUninitializedArray(rows * columns)
    let golden, c1, c2 = 0x9E3779B97F4A7C15UL, 0xBF58476D1CE4E5B9UL, 0x94D049BB133111EBUL
    let scalar (index: int) =
        let z = start + (uint64 index + 1UL) * golden
        let z = (z ^^^ (z >>> 30)) * c1
        let z = (z ^^^ (z >>> 27)) * c2
        if (z ^^^ (z >>> 31)) >>> 11 > threshold then table[8] else table[0]
    let mutable j = 0
    if Vector512.IsHardwareAccelerated && rows >= 8 then
        let all (x: uint64) : Vector512<uint64> = Vector512.Create x
        let shr (z: Vector512<uint64>) (n: int) = Vector512.ShiftRightLogical(z, n)
        // lane l holds index + l·columns (the next rows of the same column), times golden
        let lanes = Vector512.Create(0UL, 1UL, 2UL, 3UL, 4UL, 5UL, 6UL, 7UL) * all (uint64 columns * golden)
        let c1V, c2V, thresholdV = all c1, all c2, all threshold
        while j < columns do
            let mutable i = 0
            while i + 8 <= rows do
                let z = all (start + (uint64 (i * columns + j) + 1UL) * golden) + lanes
                let z = (z ^^^ shr z 30) * c1V
                let z = (z ^^^ shr z 27) * c2V
                let bits = shr (z ^^^ shr z 31) 11
                let m = int (Vector512.ExtractMostSignificantBits(Vector512.GreaterThan(bits, thresholdV)))
                // the eight elements of mask m at out[j·rows + i ..] (in bounds: i + 8 <= rows)
                if sizeof<'T> = 4 then Vector256.StoreUnsafe(Vector256.LoadUnsafe(&table[8 * m]), &out[j * rows + i])
                else Vector512.StoreUnsafe(Vector512.LoadUnsafe(&table[8 * m]), &out[j * rows + i])
                i <- i + 8
            while i < rows do
                out[j * rows + i] <- scalar (i * columns + j)
                i <- i + 1
            j <- j + 1
    while j < columns do
        for i in 0 .. rows - 1 do
            out[j * rows + i] <- scalar (i * columns + j)
        j <- j + 1
    out

// ─── Optimizer kernels ──────────────────────────────────────────────────────────────────────────

/// Adam's three lines over whole arrays, vectorized: m' = m + b1·(g - m),
/// v' = v + b2·(g² - v), u = -(lrT·m' / (√v' + eps)), each element as the scalar formula gives it.
let inline private adamArrays (lrT: ^T) (b1: ^T) (b2: ^T) (eps: ^T) (g: ^T[]) (m: ^T[]) (v: ^T[]) =
    let n = g.Length
    let u, m', v' = GC.AllocateUninitializedArray n, GC.AllocateUninitializedArray n, GC.AllocateUninitializedArray n
    let w = System.Numerics.Vector< ^T>.Count
    let lrV, b1V, b2V, epsV = System.Numerics.Vector< ^T>(lrT), System.Numerics.Vector< ^T>(b1), System.Numerics.Vector< ^T>(b2), System.Numerics.Vector< ^T>(eps)
    let range start stop =
        let mutable i = start
        while i <= stop - w do
            let gi = System.Numerics.Vector< ^T>(g, i)
            let mi = System.Numerics.Vector< ^T>(m, i)
            let vi = System.Numerics.Vector< ^T>(v, i)
            let mi = mi + b1V * (gi - mi)
            let vi = vi + b2V * (gi * gi - vi)
            mi.CopyTo(m', i)
            vi.CopyTo(v', i)
            (-(lrV * mi / (System.Numerics.Vector.SquareRoot vi + epsV))).CopyTo(u, i)
            i <- i + w
        while i < stop do
            let mi = m[i] + b1 * (g[i] - m[i])
            let vi = v[i] + b2 * (g[i] * g[i] - v[i])
            m'[i] <- mi
            v'[i] <- vi
            u[i] <- -(lrT * mi / (sqrt vi + eps))
            i <- i + 1
    // A large parameter (the first layer's weights) in two halves on two threads.
    if n >= 16384 then
        let half = n / 2 / w * w
        Halves.run (fun () -> range 0 half) (fun () -> range half n)
    else
        range 0 n
    u, m', v'

/// Adam's step for one parameter (the book's Adam.update), in one vectorized pass over its
/// gradient g and moments m and v (same length): returns the update u and the new moments,
/// m' = m + b1·(g - m), v' = v + b2·(g² - v), u = -(lrT·m' / (√v' + eps)), where b1 = 1 - β1,
/// b2 = 1 - β2 and lrT the bias-corrected learning rate. New arrays; the inputs are not changed.
let adam (lrT: 'T) (b1: 'T) (b2: 'T) (eps: 'T) (g: 'T[]) (m: 'T[]) (v: 'T[]) : 'T[] * 'T[] * 'T[] =
    if m.Length <> g.Length || v.Length <> g.Length then
        invalidArg "m" $"moments of %d{m.Length} and %d{v.Length} elements for a gradient of %d{g.Length}"
    match box g, box m, box v, box lrT, box b1, box b2, box eps with
    | (:? (float32[]) as g), (:? (float32[]) as m), (:? (float32[]) as v), (:? float32 as lrT), (:? float32 as b1), (:? float32 as b2), (:? float32 as eps) ->
        let u, m', v' = adamArrays lrT b1 b2 eps g m v
        unbox<'T[]> (box u), unbox<'T[]> (box m'), unbox<'T[]> (box v')
    | (:? (float[]) as g), (:? (float[]) as m), (:? (float[]) as v), (:? float as lrT), (:? float as b1), (:? float as b2), (:? float as eps) ->
        let u, m', v' = adamArrays lrT b1 b2 eps g m v
        unbox<'T[]> (box u), unbox<'T[]> (box m'), unbox<'T[]> (box v')
    | _ -> invalidOp $"Adam on arrays of {typeof<'T>.Name}: only float32 and float64 are supported"

// ─── Gathering images ───────────────────────────────────────────────────────────────────────────

/// Arrays that gathered images are stored in (gatherImages), kept for the next gather: a
/// training run gathers every mini-batch into one of a few buffers instead of new arrays. A
/// matrix gathered into a buffer changes when the buffer is gathered into again: use it first.
[<Sealed>]
type ImageBuffer<'T>() =
    /// The column-major values of the last dense gather.
    member val internal Dense: 'T[] = Array.empty with get, set
    /// The column indices of the last sparse gather's nonzeros.
    member val internal ColumnIndices: int[] = Array.empty with get, set
    /// The values of the last sparse gather's nonzeros.
    member val internal Values: 'T[] = Array.empty with get, set

/// The rows of `pixels` (row-major bytes, rowLength per image) at the given indices as a matrix
/// with one row per image, each byte v as v / 255 (float32 or float64), in buffer's arrays.
/// The matrix is sparse (its nonzeros in compressed rows, so that the products skip the zero
/// pixels) or dense, as the settings in effect say: with Auto, sparse when at most a third of the
/// pixels gathered are nonzero.
let gatherImages (buffer: ImageBuffer<'T>) (pixels: byte[]) (rowLength: int) (indices: int[]) : Matrix<'T> =
    let n, p = indices.Length, rowLength
    if not (typeof<'T> = typeof<float32> || typeof<'T> = typeof<float>) then invalidOp $"images are gathered as float32 or float64, not {typeof<'T>.Name}"
    let sparse =
        match (current ()).InputStorage with
        | InputStorage.Dense -> None
        | s ->
            let limit = if s = InputStorage.Sparse then n * p else n * p / 3
            if buffer.ColumnIndices.Length < limit + 8 then // 8 more: room to pack 8 bytes at a time
                buffer.ColumnIndices <- GC.AllocateUninitializedArray(limit + 8)
                buffer.Values <- GC.AllocateUninitializedArray(limit + 8)
            let rows = Storage.SparseCompressedRowMatrixStorage<'T>.OfValue(n, p, Unchecked.defaultof<'T>)
            let nnz =
                match box buffer.Values with
                | :? (float32[]) as v -> Sparse.gatherRows pixels p indices rows.RowPointers buffer.ColumnIndices v limit
                | :? (float[]) as v -> Sparse.gatherRows pixels p indices rows.RowPointers buffer.ColumnIndices v limit
                | _ -> -1
            if nnz < 0 then
                None
            else
                // MathNet's compressed-row storage over the buffer's arrays (its entries past
                // RowPointers[n] are not part of the matrix).
                rows.ColumnIndices <- buffer.ColumnIndices
                rows.Values <- buffer.Values
                Some(Matrix<'T>.Build.Sparse rows)
    match sparse with
    | Some m -> m
    | None ->
        if buffer.Dense.Length <> n * p then buffer.Dense <- GC.AllocateUninitializedArray(n * p) // every element is written
        match box buffer.Dense with
        | :? (float32[]) as a -> Gather.bytesToSingleColumnMajor pixels p indices a
        | :? (float[]) as a -> Gather.bytesToDoubleColumnMajor pixels p indices a
        | _ -> ()
        Matrix<'T>.Build.Dense(n, p, buffer.Dense)
