namespace Backprop.Core.Backend

#nowarn "9" // the kernels read and write pinned arrays through native pointers

open System
open System.Buffers
open System.Numerics
open System.Numerics.Tensors
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86
open Microsoft.FSharp.NativeInterop

/// Products whose left operand A is sparse, in compressed rows (for each row of A, its nonzero
/// values and their columns: `rowPointers[i] .. rowPointers[i+1]-1` index row i's entries in
/// `columnIndices` and `values`), and the gather that builds such rows from bytes. This is the
/// storage the image gather picks when most pixels are 0 (four in five for MNIST): the first
/// Affine layer's x·W + b and xᵀ·dout then skip the zero pixels, doing a fifth of the dense
/// arithmetic.
///
/// For each nonzero x[i, p] the products need row p of W (or of dW) as a whole, and W is stored
/// by columns: so W is copied (and dW made) a tile of rows at a time in row-major scratch of
/// about 64 KB (in L1 and L2), rows padded to whole vectors, with AVX transposes in and out. The kernels keep up
/// to 8 vectors of an output row (or of dout's row) in registers while a row's nonzeros stream
/// past. Generic in the element type (float32, float64) through System.Numerics.Vector; large
/// products in two halves on two threads (Halves); scratch from ArrayPool.
[<RequireQualifiedAccess>]
module Sparse =
    let inline private load (p: nativeptr<'T>) : Vector<'T> = NativePtr.read (NativePtr.ofNativeInt<Vector<'T>> (NativePtr.toNativeInt p))

    let inline private store (p: nativeptr<'T>) (v: Vector<'T>) = NativePtr.write (NativePtr.ofNativeInt<Vector<'T>> (NativePtr.toNativeInt p)) v

    /// acc + x · y, fused (one rounding) where the CPU has FMA and vectors are 256 bits wide.
    let inline private fma (x: Vector<'T>) (y: Vector<'T>) (acc: Vector<'T>) : Vector<'T> =
        if Fma.IsSupported && Vector<byte>.Count = 32 && Type.op_Equality(typeof<'T>, typeof<float32>) then
            Vector.As<float32, 'T>(Vector256.AsVector(Fma.MultiplyAdd(Vector256.AsVector256(Vector.As<'T, float32> x), Vector256.AsVector256(Vector.As<'T, float32> y), Vector256.AsVector256(Vector.As<'T, float32> acc))))
        elif Fma.IsSupported && Vector<byte>.Count = 32 && Type.op_Equality(typeof<'T>, typeof<float>) then
            Vector.As<float, 'T>(Vector256.AsVector(Fma.MultiplyAdd(Vector256.AsVector256(Vector.As<'T, float> x), Vector256.AsVector256(Vector.As<'T, float> y), Vector256.AsVector256(Vector.As<'T, float> acc))))
        else
            acc + x * y

    /// The v-th vector from p.
    let inline private at (p: nativeptr<'T>) (v: int) = load (NativePtr.add p (v * Vector<'T>.Count))

    /// The v-th vector from p ← itself + x · y.
    let inline private addTo (p: nativeptr<'T>) (v: int) (x: Vector<'T>) (y: Vector<'T>) =
        let q = NativePtr.add p (v * Vector<'T>.Count)
        store q (fma x y (load q))

    /// n rounded up to whole vectors of 'T.
    let private padded<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType> (n: int) =
        let w = Vector<'T>.Count
        (n + w - 1) / w * w

    /// v / 255 for each byte v, in the element type (float32, float64; empty for any other).
    type private PixelValues<'T>() =
        static member val Table: 'T[] =
            if Type.op_Equality(typeof<'T>, typeof<float32>) then box (Array.init 256 (fun v -> float32 v / 255.0f)) :?> 'T[]
            elif Type.op_Equality(typeof<'T>, typeof<float>) then box (Array.init 256 (fun v -> float v / 255.0)) :?> 'T[]
            else Array.empty

    /// For each 8-bit mask, the positions of its set bits in order (the rest 0): the lane
    /// permutation that packs the nonzero lanes of a group of 8 to the front.
    let internal packing: int[] =
        Array.init (256 * 8) (fun idx ->
            let mask, lane = idx / 8, idx % 8
            let set = [| for b in 0 .. 7 do if mask &&& (1 <<< b) <> 0 then yield b |]
            if lane < set.Length then set[lane] else 0)

    /// The compressed rows of the byte rows at `indices` (row-major `data`, rowLength bytes a row):
    /// for each row its nonzero bytes v, as v / 255 in float32 or float64 (rounded once, as the
    /// dense gather's), and their columns, in column order; writes
    /// rowPointers[0 .. indices.Length]. Returns the number of nonzeros, or -1 (leaving the arrays
    /// partly written) as soon as there are more than `limit` of them. columnIndices and values
    /// must hold `limit` entries; with 8 more, whole groups of 8 bytes are packed at once (AVX2).
    let gatherRows<'T when 'T: unmanaged> (data: byte[]) (rowLength: int) (indices: int[]) (rowPointers: int[]) (columnIndices: int[]) (values: 'T[]) (limit: int) : int =
        let table = PixelValues<'T>.Table
        if table.Length = 0 then invalidArg "values" $"pixels are gathered as float32 or float64, not {typeof<'T>.Name}"
        if rowPointers.Length < indices.Length + 1 then invalidArg "rowPointers" $"%d{rowPointers.Length} row pointers for %d{indices.Length} rows"
        let capacity = min columnIndices.Length values.Length
        if capacity < limit then invalidArg "limit" $"room for %d{capacity} entries, not %d{limit}"
        for i in indices do
            if i < 0 || (int64 i + 1L) * int64 rowLength > int64 data.Length then
                raise (ArgumentOutOfRangeException("indices", $"row %d{i} lies outside the %d{data.Length / max rowLength 1} rows of the data"))
        if data.Length = 0 || rowLength = 0 then
            Array.Fill(rowPointers, 0, 0, indices.Length + 1)
            0
        else
        use src = fixed data
        use tab = fixed table
        use pack = fixed packing
        use ci = fixed (if columnIndices.Length = 0 then [| 0 |] else columnIndices)
        use vs = fixed (if values.Length = 0 then Array.zeroCreate 1 else values)
        let packs = Avx2.IsSupported && Fma.IsSupported
        let lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7)
        let mutable nnz = 0
        let mutable r = 0
        rowPointers[0] <- 0
        while r < indices.Length && nnz >= 0 do
            let row = NativePtr.add src (indices[r] * rowLength)
            let mutable j = 0
            // Rows that cannot overflow the limit (nor, 8 at a time, the arrays) go 32 bytes at a
            // time: a bit mask of the nonzero bytes, then each group of 8 with any nonzero packed
            // by one lane permutation of its columns and its values.
            if packs && nnz + rowLength <= limit && nnz + rowLength + 8 <= capacity then
                while j + 32 <= rowLength do
                    let zero = Vector256.Equals(Vector256.Load(NativePtr.add row j), Vector256<byte>.Zero)
                    let bits = ~~~(zero.ExtractMostSignificantBits())
                    if bits <> 0u then
                        for g in 0 .. 3 do
                            let mask = int ((bits >>> (8 * g)) &&& 0xFFu)
                            if mask <> 0 then
                                let c = j + 8 * g
                                let order = Avx.LoadVector256(NativePtr.add pack (mask * 8))
                                let bytes = Avx2.PermuteVar8x32(Avx2.ConvertToVector256Int32(NativePtr.add row c), order)
                                Avx.Store(NativePtr.add ci nnz, Avx2.PermuteVar8x32(Avx2.Add(lanes, Vector256.Create c), order))
                                // the values v / 255, correctly rounded without a division (as
                                // Gather's: q = v·(1/255), then q + (v - 255q)·(1/255)); the lanes
                                // past the nonzeros are overwritten by the next group
                                if sizeof<'T> = 4 then
                                    let v = Avx.ConvertToVector256Single bytes
                                    let q = Avx.Multiply(v, Vector256.Create(1.0f / 255.0f))
                                    let x = Fma.MultiplyAdd(Fma.MultiplyAddNegated(q, Vector256.Create 255.0f, v), Vector256.Create(1.0f / 255.0f), q)
                                    Avx.Store(NativePtr.ofNativeInt<float32> (NativePtr.toNativeInt (NativePtr.add vs nnz)), x)
                                else
                                    let at = NativePtr.ofNativeInt<float> (NativePtr.toNativeInt (NativePtr.add vs nnz))
                                    let divide (v: Vector256<float>) =
                                        let q = Avx.Multiply(v, Vector256.Create(1.0 / 255.0))
                                        Fma.MultiplyAdd(Fma.MultiplyAddNegated(q, Vector256.Create 255.0, v), Vector256.Create(1.0 / 255.0), q)
                                    Avx.Store(at, divide (Avx.ConvertToVector256Double(bytes.GetLower())))
                                    Avx.Store(NativePtr.add at 4, divide (Avx.ConvertToVector256Double(bytes.GetUpper())))
                                nnz <- nnz + BitOperations.PopCount(uint mask)
                    j <- j + 32
            while j < rowLength && nnz >= 0 do
                let v = NativePtr.get row j
                if v <> 0uy then
                    if nnz = limit then
                        nnz <- -1
                    else
                        NativePtr.set ci nnz j
                        NativePtr.set vs nnz (NativePtr.get tab (int v))
                        nnz <- nnz + 1
                j <- j + 1
            if nnz >= 0 then rowPointers[r + 1] <- nnz
            r <- r + 1
        nnz

    /// An 8 × 8 block of float32 transposed: rows src, src + ld, ... into rows dst, dst + dstLd, ...
    let inline private transpose8x8 (src: nativeptr<float32>) (ld: int) (dst: nativeptr<float32>) (dstLd: int) =
        let row k = Avx.LoadVector256(NativePtr.add src (k * ld))
        let struct (c0, c1, c2, c3, c4, c5, c6, c7) = Gather.transpose8x8 (row 0) (row 1) (row 2) (row 3) (row 4) (row 5) (row 6) (row 7)
        let put k (v: Vector256<float32>) = Avx.Store(NativePtr.add dst (k * dstLd), v)
        put 0 c0; put 1 c1; put 2 c2; put 3 c3; put 4 c4; put 5 c5; put 6 c6; put 7 c7

    /// A 4 × 4 block of float64 transposed.
    let inline private transpose4x4 (src: nativeptr<float>) (ld: int) (dst: nativeptr<float>) (dstLd: int) =
        let row k = Avx.LoadVector256(NativePtr.add src (k * ld))
        let r0, r1, r2, r3 = row 0, row 1, row 2, row 3
        let t0, t1, t2, t3 = Avx.UnpackLow(r0, r1), Avx.UnpackHigh(r0, r1), Avx.UnpackLow(r2, r3), Avx.UnpackHigh(r2, r3)
        let put k (v: Vector256<float>) = Avx.Store(NativePtr.add dst (k * dstLd), v)
        put 0 (Avx.Permute2x128(t0, t2, 0x20uy)); put 1 (Avx.Permute2x128(t1, t3, 0x20uy))
        put 2 (Avx.Permute2x128(t0, t2, 0x31uy)); put 3 (Avx.Permute2x128(t1, t3, 0x31uy))

    /// dst[c · dstLd + r] ← src[r · ld + c] for r < rows, c < columns: a row-major transpose
    /// (column-major is the same with the roles of rows and columns swapped). Blocks of 8 × 8
    /// (float32) or 4 × 4 (float64) go through AVX registers where the CPU has AVX; the rest
    /// element by element.
    let internal transpose<'T when 'T: unmanaged> (src: nativeptr<'T>) (rows: int) (columns: int) (ld: int) (dst: nativeptr<'T>) (dstLd: int) =
        let b = if not Avx.IsSupported then 1 elif Type.op_Equality(typeof<'T>, typeof<float32>) then 8 elif Type.op_Equality(typeof<'T>, typeof<float>) then 4 else 1
        let rowsInBlocks, columnsInBlocks = rows / b * b, columns / b * b
        if b > 1 then
            // (while loops: a `for .. b ..` loop with a variable step enumerates a sequence)
            let mutable r0 = 0
            while r0 < rowsInBlocks do
                let mutable c0 = 0
                while c0 < columnsInBlocks do
                    let s, d = NativePtr.add src (r0 * ld + c0), NativePtr.add dst (c0 * dstLd + r0)
                    if b = 8 then transpose8x8 (NativePtr.ofNativeInt (NativePtr.toNativeInt s)) ld (NativePtr.ofNativeInt (NativePtr.toNativeInt d)) dstLd
                    else transpose4x4 (NativePtr.ofNativeInt (NativePtr.toNativeInt s)) ld (NativePtr.ofNativeInt (NativePtr.toNativeInt d)) dstLd
                    c0 <- c0 + b
                r0 <- r0 + b
        // The edges: the columns past the blocks in every row, then the rows past the blocks.
        for r in 0 .. rowsInBlocks - 1 do
            for c in columnsInBlocks .. columns - 1 do
                NativePtr.set dst (c * dstLd + r) (NativePtr.get src (r * ld + c))
        for r in rowsInBlocks .. rows - 1 do
            for c in 0 .. columns - 1 do
                NativePtr.set dst (c * dstLd + r) (NativePtr.get src (r * ld + c))

    /// dst (rows × ld, row-major; columns past `columns` set to 0) ← src (rows × columns, column-major).
    let private toRowMajor<'T when 'T: unmanaged> (src: nativeptr<'T>) (rows: int) (columns: int) (dst: nativeptr<'T>) (ld: int) =
        transpose src columns rows rows dst ld
        if ld > columns then
            for p in 0 .. rows - 1 do
                for j in columns .. ld - 1 do
                    NativePtr.set dst (p * ld + j) Unchecked.defaultof<'T>

    /// Row-major copies of weight matrices, inside `withFixedWeights` on this thread (null
    /// outside): W's array → its copy, made at W's first product there, in an array from
    /// ArrayPool (so that evaluation after evaluation makes no garbage) returned at the end.
    [<Sealed; AbstractClass>]
    type private FixedWeights =
        [<ThreadStatic; DefaultValue>]
        static val mutable private copies: Collections.Generic.Dictionary<obj, obj>

        [<ThreadStatic; DefaultValue>]
        static val mutable private returns: Collections.Generic.List<unit -> unit>

        /// Starts the scope (false when it had begun already).
        static member Begin() =
            if isNull FixedWeights.copies then
                FixedWeights.copies <- Collections.Generic.Dictionary<obj, obj>(Collections.Generic.ReferenceEqualityComparer.Instance :> Collections.Generic.IEqualityComparer<obj>)
                FixedWeights.returns <- Collections.Generic.List<unit -> unit>()
                true
            else false

        /// Ends the scope, giving its copies back to the pool.
        static member End() =
            let returns = FixedWeights.returns
            FixedWeights.copies <- null
            FixedWeights.returns <- null
            for giveBack in returns do giveBack ()

        /// W (k × n, column-major) in row-major with rows `padded n` long, zeros past n: made once
        /// in the scope; null outside it.
        static member RowMajorOf<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType>
            (W: 'T[]) (k: int) (n: int) : 'T[] =
            let copies = FixedWeights.copies
            if isNull copies then null
            else
                match copies.TryGetValue W with
                | true, copy -> copy :?> 'T[]
                | _ ->
                    let ld = padded<'T> n
                    let copy = ArrayPool<'T>.Shared.Rent(max 1 (k * ld)) // every entry used is written
                    FixedWeights.returns.Add(fun () -> ArrayPool<'T>.Shared.Return copy)
                    use pw = fixed W
                    use pc = fixed copy
                    toRowMajor pw k n pc ld
                    copies[W] <- copy
                    copy

    /// Runs f with the weights of the sparse products it makes on this thread taken as fixed:
    /// each W is copied to row-major once, at its first product, and read there by the products
    /// after it, instead of a tile of it being transposed for each (an evaluation multiplies
    /// the same W1 by 700 blocks of 100 images). f must not change a W it multiplies (the core's
    /// models never change). The copies go when f returns.
    let withFixedWeights (f: unit -> 'a) : 'a =
        if FixedWeights.Begin() then
            try f () finally FixedWeights.End()
        else
            f ()

    /// The entries of rows 0 .. m-1 of A whose columns lie in p0 .. p1-1, against tile (rows
    /// p0 .. p1-1 of W, row-major, wld apart): out[i] += values[e] · tile[p - p0] for each such
    /// entry e = (i, p), at columns j0 .. j0 + count·w - 1 (w the vector width; out's rows ld
    /// apart), with the `count` (1 to 8, a literal at each call) vectors of out's row i in
    /// registers meanwhile. Row i's entries in the tile start at cursor[i]; where they end is
    /// written to after[i].
    let inline private forwardTile
        (count: int) (rp: nativeptr<int>) (ci: nativeptr<int>) (vs: nativeptr<'T>) (tile: nativeptr<'T>) (wld: int) (ld: int) (j0: int)
        (out: nativeptr<'T>) (p0: int) (p1: int) (m: int) (cursor: nativeptr<int>) (after: nativeptr<int>) =
        let w = Vector<'T>.Count
        // W's row p at columns j0.. is origin + p·wld (origin lies before the tile when p0 > 0)
        let origin = NativePtr.add tile (j0 - p0 * wld)
        for i in 0 .. m - 1 do
            let start = NativePtr.get cursor i
            let stop = NativePtr.get rp (i + 1)
            let mutable e = start
            while e < stop && NativePtr.get ci e < p1 do e <- e + 1
            NativePtr.set after i e
            if e > start then
                let o = NativePtr.add out (i * ld + j0)
                let mutable a0 = at o 0
                let mutable a1 = if count > 1 then at o 1 else Vector<'T>.Zero
                let mutable a2 = if count > 2 then at o 2 else Vector<'T>.Zero
                let mutable a3 = if count > 3 then at o 3 else Vector<'T>.Zero
                let mutable a4 = if count > 4 then at o 4 else Vector<'T>.Zero
                let mutable a5 = if count > 5 then at o 5 else Vector<'T>.Zero
                let mutable a6 = if count > 6 then at o 6 else Vector<'T>.Zero
                let mutable a7 = if count > 7 then at o 7 else Vector<'T>.Zero
                // pointers that walk the entries: few live values, so the loop keeps them in registers
                let mutable pc = NativePtr.add ci start
                let mutable pv = NativePtr.add vs start
                let last = NativePtr.toNativeInt (NativePtr.add ci e)
                while NativePtr.toNativeInt pc < last do
                    // out[i, :] += x[i, p] · W[p, :] for the entry's column p
                    let x = Vector<'T>(NativePtr.read pv)
                    let row = NativePtr.add origin (NativePtr.read pc * wld)
                    a0 <- fma x (at row 0) a0
                    if count > 1 then a1 <- fma x (at row 1) a1
                    if count > 2 then a2 <- fma x (at row 2) a2
                    if count > 3 then a3 <- fma x (at row 3) a3
                    if count > 4 then a4 <- fma x (at row 4) a4
                    if count > 5 then a5 <- fma x (at row 5) a5
                    if count > 6 then a6 <- fma x (at row 6) a6
                    if count > 7 then a7 <- fma x (at row 7) a7
                    pc <- NativePtr.add pc 1
                    pv <- NativePtr.add pv 1
                store o a0
                if count > 1 then store (NativePtr.add o w) a1
                if count > 2 then store (NativePtr.add o (2 * w)) a2
                if count > 3 then store (NativePtr.add o (3 * w)) a3
                if count > 4 then store (NativePtr.add o (4 * w)) a4
                if count > 5 then store (NativePtr.add o (5 * w)) a5
                if count > 6 then store (NativePtr.add o (6 * w)) a6
                if count > 7 then store (NativePtr.add o (7 * w)) a7

    /// The entries of rows 0 .. m-1 of A whose columns lie in p0 .. p1-1, scattered into tile
    /// (rows p0 .. p1-1 of dW, row-major, ld columns) at columns j0 .. j0 + count·w - 1, w the
    /// vector width: tile[p - p0] += values[e] · d[i] (d's rows dld apart) for each such entry e = (i, p), with the
    /// `count` (1 to 8, a literal at each call) vectors of d's row i in registers. Row i's
    /// entries in the tile start at cursor[i] (its columns are in order); where they end is
    /// written to after[i].
    let inline private scatterTile
        (count: int) (rp: nativeptr<int>) (ci: nativeptr<int>) (vs: nativeptr<'T>) (d: nativeptr<'T>) (dld: int) (ld: int) (j0: int)
        (tile: nativeptr<'T>) (p0: int) (p1: int) (m: int) (cursor: nativeptr<int>) (after: nativeptr<int>) =
        for i in 0 .. m - 1 do
            let stop = NativePtr.get rp (i + 1)
            let mutable e = NativePtr.get cursor i
            if e < stop && NativePtr.get ci e < p1 then
                let di = NativePtr.add d (i * dld + j0)
                let d0 = at di 0
                let d1 = if count > 1 then at di 1 else Vector<'T>.Zero
                let d2 = if count > 2 then at di 2 else Vector<'T>.Zero
                let d3 = if count > 3 then at di 3 else Vector<'T>.Zero
                let d4 = if count > 4 then at di 4 else Vector<'T>.Zero
                let d5 = if count > 5 then at di 5 else Vector<'T>.Zero
                let d6 = if count > 6 then at di 6 else Vector<'T>.Zero
                let d7 = if count > 7 then at di 7 else Vector<'T>.Zero
                while e < stop && NativePtr.get ci e < p1 do
                    // dW[p, :] += x[i, p] · dout[i, :] for the entry's column p
                    let x = Vector<'T>(NativePtr.get vs e)
                    let row = NativePtr.add tile ((NativePtr.get ci e - p0) * ld + j0)
                    addTo row 0 x d0
                    if count > 1 then addTo row 1 x d1
                    if count > 2 then addTo row 2 x d2
                    if count > 3 then addTo row 3 x d3
                    if count > 4 then addTo row 4 x d4
                    if count > 5 then addTo row 5 x d5
                    if count > 6 then addTo row 6 x d6
                    if count > 7 then addTo row 7 x d7
                    e <- e + 1
            NativePtr.set after i e

    let private checkRows (m: int) (k: int) (rowPointers: int[]) (columnIndices: int[]) (values: 'T[]) =
        if rowPointers.Length < m + 1 then invalidArg "rowPointers" $"%d{rowPointers.Length} row pointers for %d{m} rows"
        let nnz = rowPointers[m]
        if nnz > columnIndices.Length || nnz > values.Length then invalidArg "rowPointers" $"%d{nnz} entries, more than the arrays hold"
        // The kernels read through pointers: every entry they reach must lie inside the arrays.
        let pointers = ReadOnlySpan(rowPointers, 0, m + 1)
        if TensorPrimitives.Min pointers < 0 || TensorPrimitives.Max pointers > nnz then invalidArg "rowPointers" $"row pointers outside 0 .. %d{nnz}"
        if nnz > 0 then
            let columns = ReadOnlySpan(columnIndices, 0, nnz)
            if TensorPrimitives.Min columns < 0 || TensorPrimitives.Max columns >= k then invalidArg "columnIndices" $"a column index outside 0 .. %d{k - 1}"

    /// Rows of W (or dW) in a tile: about 64 KB of them, a multiple of 8 (the transpose's blocks),
    /// so that a tile stays in the caches closest to the core (L1 and L2) while every row of A is
    /// run against it. Every tile takes one more pass over the rows of A, each pass with its
    /// set-up per row (the row's first entry in the tile, the output vectors loaded and stored):
    /// at 16 KB, L1's share, that set-up outweighed what the smaller tile saved in loads.
    /// Measured on MNIST batches against float32 W, microseconds a call (docs/PERFORMANCE.md,
    /// "train's start, looked at a third time, and the sparse kernels' tiles"): 100 × 50 outputs
    /// forward 50-52 → 39-47, gradient 55-63 → 49-54; 100 × 300 182-210 → 156-157 and 243-261 →
    /// 198-203; 1000 × 300 2205 → 1524 and 2848 → 2115. The sums are the same whatever the tile's
    /// size: each output is summed over its entries in the same order.
    let private tileRows<'T> (ld: int) = max 8 (65536 / (ld * sizeof<'T>) / 8 * 8)

    /// Runs kernel for each block of up to 8 vectors (w wide) of a row ld long, from the left:
    /// `kernel count j0` with count a literal (1 to 8) at each call, so that an inline kernel
    /// keeps exactly `count` vectors in registers, and j0 the block's first column.
    let inline private eachBlock (w: int) (ld: int) ([<InlineIfLambda>] kernel: int -> int -> unit) =
        let mutable j0 = 0
        while j0 < ld do
            match min 8 ((ld - j0) / w) with
            | 1 -> kernel 1 j0
            | 2 -> kernel 2 j0
            | 3 -> kernel 3 j0
            | 4 -> kernel 4 j0
            | 5 -> kernel 5 j0
            | 6 -> kernel 6 j0
            | 7 -> kernel 7 j0
            | _ -> kernel 8 j0
            j0 <- j0 + 8 * w

    /// Products with at least this many multiply-adds (nonzeros × columns) go in two halves on
    /// two threads (Halves): a batch of 100 MNIST images against 50 columns is about 750,000.
    let private splitAbove = 200_000L

    /// Runs part over the whole product at once, or, when it is large (and not on the helper
    /// thread alone, where two halves would only repeat the set-up), in two halves on two
    /// threads (Halves.run): halves of the columns (whole vectors) when a row of the result
    /// takes more than 8 vectors (each half then takes one pass over the entries, with its
    /// vectors in registers), else halves of `total` (the rows of A, or of the result) with all
    /// the columns. `part r0 r1 c0 c1` does rows r0 .. r1-1 and columns c0 .. c1-1.
    let private inHalves<'T> (work: int64) (total: int) (ld: int) (part: int -> int -> int -> int -> unit) =
        let w = Vector<'T>.Count
        let vectors = ld / w
        // Columns c0 .. c1-1 (whole vectors) in panels of at most 8 vectors, of about equal
        // widths (19 vectors: 7, 6, 6): each panel is one pass of the kernel over the entries
        // with all its vectors in registers, and its tiles of W (or dW) are 64 KB of rows of
        // the panel's width alone. A part as wide as the whole row would make tiles of a
        // few rows (few entries to share the per-row set-up) and walk every row's entries once
        // per 8 vectors of every tile.
        let panels r0 r1 c0 c1 =
            let v = (c1 - c0) / w
            let count = (v + 7) / 8
            let mutable start = c0
            for p in 0 .. count - 1 do
                let stop = c0 + (v * (p + 1) / count) * w
                part r0 r1 start stop
                start <- stop
        if work < splitAbove || (total < 2 && vectors < 2) || not (Halves.splitPays ()) then
            panels 0 total 0 ld
        elif vectors > 8 then
            let half = (vectors + 1) / 2 * w
            Halves.run (fun () -> panels 0 total 0 half) (fun () -> panels 0 total half ld)
        else
            let half = total / 2
            Halves.run (fun () -> part 0 half 0 ld) (fun () -> part half total 0 ld)

    /// Rows i0 .. i1-1 and columns c0 .. c1-1 (whole vectors; the last may run past n) of
    /// out ← A · W + bias. With `rowMajor` (W whole in row-major, rows `padded n` long, zeros past
    /// n: see `withFixedWeights`) each tile of W is read there instead of transposed afresh; the
    /// tiles, and so the sums, are the same.
    let private forwardPart<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType>
        (m: int) (k: int) (rowPointers: int[]) (columnIndices: int[]) (values: 'T[]) (W: 'T[]) (rowMajor: 'T[]) (n: int) (bias: 'T[]) (out: 'T[])
        (i0: int) (i1: int) (c0: int) (c1: int) =
        let w = Vector<'T>.Count
        let ld = c1 - c0 // the part's row length in the scratch arrays, whole vectors
        let nc = min c1 n - c0 // the part's columns of W and out
        let rows = i1 - i0
        let rowsPerTile = tileRows<'T> ld
        let tile = ArrayPool<'T>.Shared.Rent(rowsPerTile * ld)
        let outRows = ArrayPool<'T>.Shared.Rent(max 1 (rows * ld))
        let cursor = ArrayPool<int>.Shared.Rent(max 1 rows)
        let after = ArrayPool<int>.Shared.Rent(max 1 rows)
        try
            for i in 0 .. rows - 1 do
                if bias.Length <> 0 then Array.Copy(bias, c0, outRows, i * ld, nc) else Array.Fill(outRows, Unchecked.defaultof<'T>, i * ld, nc)
                Array.Fill(outRows, Unchecked.defaultof<'T>, i * ld + nc, ld - nc)
            Array.Copy(rowPointers, i0, cursor, 0, rows)
            use pw = fixed W
            use ptile = fixed tile
            use pcopy = fixed (if isNull rowMajor then tile else rowMajor)
            let wide = padded<'T> n // the copy's row length
            use prp0 = fixed rowPointers
            let prp = NativePtr.add prp0 i0 // the part's rows as rows 0 .. rows-1
            use pci = fixed (if columnIndices.Length = 0 then [| 0 |] else columnIndices)
            use pvs = fixed (if values.Length = 0 then Array.zeroCreate 1 else values)
            use po = fixed outRows
            use pcur = fixed cursor
            use paft = fixed after
            use pout = fixed out
            let mutable p0 = 0
            while p0 < k do
                let p1 = min k (p0 + rowsPerTile)
                if isNull rowMajor then
                    // W[p0 .. p1-1, c0 .. c0+nc-1] row by row: W's columns are rows of length k
                    transpose (NativePtr.add pw (c0 * k + p0)) nc (p1 - p0) k ptile ld
                    if ld > nc then
                        for p in 0 .. p1 - p0 - 1 do Array.Fill(tile, Unchecked.defaultof<'T>, p * ld + nc, ld - nc)
                    eachBlock w ld (fun count j0 -> forwardTile count prp pci pvs ptile ld ld j0 po p0 p1 rows pcur paft)
                else
                    // the same rows of the copy, at its columns c0 ..
                    let ptileCopy = NativePtr.add pcopy (p0 * wide + c0)
                    eachBlock w ld (fun count j0 -> forwardTile count prp pci pvs ptileCopy wide ld j0 po p0 p1 rows pcur paft)
                Array.Copy(after, cursor, rows)
                p0 <- p1
            // out[i0 + r, c0 + j] = out[c0·m + i0 + r + j·m]
            transpose po rows nc ld (NativePtr.add pout (c0 * m + i0)) m
        finally
            ArrayPool<'T>.Shared.Return tile
            ArrayPool<'T>.Shared.Return outRows
            ArrayPool<int>.Shared.Return cursor
            ArrayPool<int>.Shared.Return after

    /// out (m × n, column-major) ← A · W + bias (bias added to every row), A the m × k compressed
    /// rows, W k × n column-major, bias n values (or empty for none). W is taken a tile of rows at
    /// a time, copied to row-major; each row of A adds its entries in the tile to its output row.
    /// Large products go in two halves on two threads.
    let mulAddRow<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType>
        (m: int) (k: int) (rowPointers: int[]) (columnIndices: int[]) (values: 'T[]) (W: 'T[]) (n: int) (bias: 'T[]) (out: 'T[]) =
        checkRows m k rowPointers columnIndices values
        if W.Length < k * n || out.Length < m * n || (bias.Length <> 0 && bias.Length < n) then invalidArg "W" "W, bias or out is smaller than the shapes say"
        if m > 0 && n > 0 then
            let rowMajor = FixedWeights.RowMajorOf W k n
            inHalves<'T> (int64 rowPointers[m] * int64 n) m (padded<'T> n) (fun i0 i1 c0 c1 -> forwardPart m k rowPointers columnIndices values W rowMajor n bias out i0 i1 c0 c1)

    /// Rows q0 .. q1-1 (the columns of A, pixels) and columns c0 .. c1-1 (whole vectors; the
    /// last may run past n) of out ← Aᵀ · D, from dRows (D row-major, dld columns).
    let private gradientPart<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType>
        (m: int) (k: int) (rowPointers: int[]) (columnIndices: int[]) (values: 'T[]) (dRows: 'T[]) (dld: int) (n: int) (out: 'T[])
        (q0: int) (q1: int) (c0: int) (c1: int) =
        let w = Vector<'T>.Count
        let ld = c1 - c0
        let nc = min c1 n - c0
        let rowsPerTile = tileRows<'T> ld
        let tile = ArrayPool<'T>.Shared.Rent(rowsPerTile * ld)
        let cursor = ArrayPool<int>.Shared.Rent(max 1 m)
        let after = ArrayPool<int>.Shared.Rent(max 1 m)
        try
            // each row's first entry at column q0 or past it (the columns of a row are in order)
            for i in 0 .. m - 1 do
                let mutable e = rowPointers[i]
                while e < rowPointers[i + 1] && columnIndices[e] < q0 do e <- e + 1
                cursor[i] <- e
            use pdr0 = fixed dRows
            let pdr = NativePtr.add pdr0 c0 // the part's columns of D
            use prp = fixed rowPointers
            use pci = fixed (if columnIndices.Length = 0 then [| 0 |] else columnIndices)
            use pvs = fixed (if values.Length = 0 then Array.zeroCreate 1 else values)
            use ptile = fixed tile
            use pcur = fixed cursor
            use paft = fixed after
            use pout = fixed out
            let mutable p0 = q0
            while p0 < q1 do
                let p1 = min q1 (p0 + rowsPerTile)
                Array.Fill(tile, Unchecked.defaultof<'T>, 0, (p1 - p0) * ld)
                eachBlock w ld (fun count j0 -> scatterTile count prp pci pvs pdr dld ld j0 ptile p0 p1 m pcur paft)
                Array.Copy(after, cursor, m)
                // out[p, c0 + j] = out[c0·k + p + j·k] for the tile's rows p
                transpose ptile (p1 - p0) nc ld (NativePtr.add pout (c0 * k + p0)) k
                p0 <- p1
        finally
            ArrayPool<'T>.Shared.Return tile
            ArrayPool<int>.Shared.Return cursor
            ArrayPool<int>.Shared.Return after

    /// out (k × n, column-major) ← Aᵀ · D, A the m × k compressed rows, D m × n column-major.
    /// The rows of the result are made a tile of columns of A at a time, small enough to stay in
    /// L1 and L2 while every row of A scatters its entries into it; each finished tile is transposed
    /// into out. Large products go in two halves on two threads.
    let mulTN<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType>
        (m: int) (k: int) (rowPointers: int[]) (columnIndices: int[]) (values: 'T[]) (D: 'T[]) (n: int) (out: 'T[]) =
        checkRows m k rowPointers columnIndices values
        if D.Length < m * n || out.Length < k * n then invalidArg "D" "D or out is smaller than the shapes say"
        if k > 0 && n > 0 then
            let ld = padded<'T> n
            let dRows = ArrayPool<'T>.Shared.Rent(max 1 (m * ld))
            try
                // D's rows, each padded with zeros to whole vectors
                if m > 0 then
                    use pd = fixed D
                    use pdr = fixed dRows
                    toRowMajor pd m n pdr ld
                inHalves<'T> (int64 rowPointers[m] * int64 n) k ld (fun q0 q1 c0 c1 -> gradientPart m k rowPointers columnIndices values dRows ld n out q0 q1 c0 c1)
            finally
                ArrayPool<'T>.Shared.Return dRows
