namespace Backprop.Core.Backend

#nowarn "9" // the kernels read the caller's rows and write the buffers through native pointers

open System
open System.Numerics
open System.Runtime.InteropServices
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86
open Microsoft.FSharp.NativeInterop

/// Blocks of rows of float32 or float64 values (samples handed to batch prediction, row-major,
/// one after the other) stored as the first product wants them, read straight from the caller's
/// memory with no copy in between: compressed rows (each row's nonzero values and their columns,
/// so that the first Affine layer skips the zeros) or a dense column-major matrix. The
/// counterpart for values of Sparse.gatherRows and Gather, which start from image bytes.
[<RequireQualifiedAccess>]
module RowGather =
    /// Entries of room that columnIndices and values need past `limit` (sparseRows packs whole
    /// groups of 8 at once, writing up to 8 entries past the last nonzero).
    [<Literal>]
    let Room = 8

    /// For each 4-bit mask, the 32-bit lane permutation that packs the float64 lanes it sets to
    /// the front (a float64 is two 32-bit lanes; the rest 0).
    let private pairs: int[] =
        Array.init (16 * 8) (fun idx ->
            let mask, lane = idx / 8, idx % 8
            let set = [| for b in 0 .. 3 do if mask &&& (1 <<< b) <> 0 then yield b |]
            if lane / 2 < set.Length then 2 * set[lane / 2] + lane % 2 else 0)

    let private check (length: int) (inputs: int) (rows: int) =
        if inputs < 0 || rows < 0 then invalidArg "rows" $"%d{rows} rows of %d{inputs} values"
        if int64 length < int64 rows * int64 inputs then invalidArg "values" $"%d{length} values cannot hold %d{rows} rows of %d{inputs}"

    /// sparseRows in float32: 8 values at a time where the CPU has AVX2 (a mask of the nonzero
    /// lanes, then one lane permutation packs their values and their columns, as
    /// Sparse.gatherRows packs bytes), else one by one.
    let private sparseSingle (values: ReadOnlySpan<float32>) (inputs: int) (rows: int) (rowPointers: int[]) (columnIndices: int[]) (kept: float32[]) (limit: int) : int =
        use src = fixed values
        use ci = fixed columnIndices
        use vs = fixed kept
        use pack = fixed Sparse.packing
        let packs = Avx2.IsSupported && limit + Room <= min columnIndices.Length kept.Length
        let lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7)
        let mutable nnz = 0
        let mutable r = 0
        rowPointers[0] <- 0
        while r < rows && nnz >= 0 do
            let row = NativePtr.add src (r * inputs)
            let mutable j = 0
            if packs then
                // Groups of 8 packed with no branch (a group of zeros writes 8 entries and counts
                // none), after one test that skips 32 zeros at once (most of an image's border).
                // At most 8 entries more per group: within the limit, and within the room past it.
                let inline group (v: Vector256<float32>) (c: int) =
                    let mask = int (~~~(Vector256.Equals(v, Vector256<float32>.Zero).ExtractMostSignificantBits()) &&& 0xFFu)
                    let order = Avx.LoadVector256(NativePtr.add pack (mask * 8))
                    Avx.Store(NativePtr.add ci nnz, Avx2.PermuteVar8x32(Avx2.Add(lanes, Vector256.Create c), order))
                    Avx.Store(NativePtr.add vs nnz, Avx2.PermuteVar8x32(v, order))
                    nnz <- nnz + BitOperations.PopCount(uint mask)
                while j + 32 <= inputs && nnz + 32 <= limit do
                    let v0, v1 = Avx.LoadVector256(NativePtr.add row j), Avx.LoadVector256(NativePtr.add row (j + 8))
                    let v2, v3 = Avx.LoadVector256(NativePtr.add row (j + 16)), Avx.LoadVector256(NativePtr.add row (j + 24))
                    let zero = Vector256<float32>.Zero
                    let allZero = Vector256.Equals(v0, zero) &&& Vector256.Equals(v1, zero) &&& Vector256.Equals(v2, zero) &&& Vector256.Equals(v3, zero)
                    if allZero.ExtractMostSignificantBits() <> 0xFFu then
                        group v0 j
                        group v1 (j + 8)
                        group v2 (j + 16)
                        group v3 (j + 24)
                    j <- j + 32
                while j + 8 <= inputs && nnz + 8 <= limit do
                    group (Avx.LoadVector256(NativePtr.add row j)) j
                    j <- j + 8
            while j < inputs && nnz >= 0 do
                let v = NativePtr.get row j
                if v <> 0.0f then
                    if nnz = limit then
                        nnz <- -1
                    else
                        NativePtr.set ci nnz j
                        NativePtr.set vs nnz v
                        nnz <- nnz + 1
                j <- j + 1
            if nnz >= 0 then rowPointers[r + 1] <- nnz
            r <- r + 1
        nnz

    /// sparseRows in float64: 4 values at a time where the CPU has AVX2, else one by one.
    let private sparseDouble (values: ReadOnlySpan<float>) (inputs: int) (rows: int) (rowPointers: int[]) (columnIndices: int[]) (kept: float[]) (limit: int) : int =
        use src = fixed values
        use ci = fixed columnIndices
        use vs = fixed kept
        use pack = fixed Sparse.packing
        use pair = fixed pairs
        let packs = Avx2.IsSupported && limit + Room <= min columnIndices.Length kept.Length
        let lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7)
        let mutable nnz = 0
        let mutable r = 0
        rowPointers[0] <- 0
        while r < rows && nnz >= 0 do
            let row = NativePtr.add src (r * inputs)
            let mutable j = 0
            if packs then
                // Groups of 4 packed with no branch (4 values, but 8 column indices written: the 4
                // past the packed ones are overwritten later), after one test that skips 16 zeros at once.
                let inline group (v: Vector256<float>) (c: int) =
                    let mask = int (~~~(Vector256.Equals(v, Vector256<float>.Zero).ExtractMostSignificantBits()) &&& 0xFu)
                    Avx.Store(NativePtr.add ci nnz, Avx2.PermuteVar8x32(Avx2.Add(lanes, Vector256.Create c), Avx.LoadVector256(NativePtr.add pack (mask * 8))))
                    Avx.Store(NativePtr.add vs nnz, Avx2.PermuteVar8x32(v.AsSingle(), Avx.LoadVector256(NativePtr.add pair (mask * 8))).AsDouble())
                    nnz <- nnz + BitOperations.PopCount(uint mask)
                while j + 16 <= inputs && nnz + 16 <= limit do
                    let v0, v1 = Avx.LoadVector256(NativePtr.add row j), Avx.LoadVector256(NativePtr.add row (j + 4))
                    let v2, v3 = Avx.LoadVector256(NativePtr.add row (j + 8)), Avx.LoadVector256(NativePtr.add row (j + 12))
                    let zero = Vector256<float>.Zero
                    let allZero = Vector256.Equals(v0, zero) &&& Vector256.Equals(v1, zero) &&& Vector256.Equals(v2, zero) &&& Vector256.Equals(v3, zero)
                    if allZero.ExtractMostSignificantBits() <> 0xFu then
                        group v0 j
                        group v1 (j + 4)
                        group v2 (j + 8)
                        group v3 (j + 12)
                    j <- j + 16
                while j + 4 <= inputs && nnz + 4 <= limit do
                    group (Avx.LoadVector256(NativePtr.add row j)) j
                    j <- j + 4
            while j < inputs && nnz >= 0 do
                let v = NativePtr.get row j
                if v <> 0.0 then
                    if nnz = limit then
                        nnz <- -1
                    else
                        NativePtr.set ci nnz j
                        NativePtr.set vs nnz v
                        nnz <- nnz + 1
                j <- j + 1
            if nnz >= 0 then rowPointers[r + 1] <- nnz
            r <- r + 1
        nnz

    /// The first `rows` rows of `values` (row-major, `inputs` values a row) as compressed rows:
    /// each row's nonzero values (v <> 0: -0.0 left out, NaN kept) and their columns, in column
    /// order, into columnIndices and kept; writes rowPointers[0 .. rows]. Returns the number of
    /// nonzeros, or -1 (leaving the arrays partly written) as soon as there are more than `limit`.
    /// columnIndices and kept must hold `limit` entries; with Room more, the values are packed
    /// several at a time. Float32 and float64 only.
    let sparseRows<'T when 'T: unmanaged and 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType>
        (values: ReadOnlySpan<'T>) (inputs: int) (rows: int) (rowPointers: int[]) (columnIndices: int[]) (kept: 'T[]) (limit: int) : int =
        check values.Length inputs rows
        if rowPointers.Length < rows + 1 then invalidArg "rowPointers" $"%d{rowPointers.Length} row pointers for %d{rows} rows"
        if limit < 0 || min columnIndices.Length kept.Length < limit then invalidArg "limit" $"room for %d{min columnIndices.Length kept.Length} entries, not %d{limit}"
        if Type.op_Equality(typeof<'T>, typeof<float32>) then
            sparseSingle (MemoryMarshal.Cast<'T, float32> values) inputs rows rowPointers columnIndices (box kept :?> float32[]) limit
        elif Type.op_Equality(typeof<'T>, typeof<float>) then
            sparseDouble (MemoryMarshal.Cast<'T, float> values) inputs rows rowPointers columnIndices (box kept :?> float[]) limit
        else invalidArg "values" $"rows are gathered as float32 or float64, not {typeof<'T>.Name}"

    /// The first `rows` rows of `values` (row-major, `inputs` values a row) into `destination`
    /// as a rows × inputs column-major matrix: a transpose, 8 × 8 (float32) or 4 × 4 (float64)
    /// blocks at a time in AVX registers where the CPU has AVX (Sparse.transpose).
    let denseColumnMajor<'T when 'T: unmanaged> (values: ReadOnlySpan<'T>) (inputs: int) (rows: int) (destination: 'T[]) =
        check values.Length inputs rows
        if int64 destination.Length < int64 rows * int64 inputs then invalidArg "destination" $"%d{destination.Length} values cannot hold %d{rows} rows of %d{inputs}"
        if rows > 0 && inputs > 0 then
            use src = fixed values
            use dst = fixed destination
            Sparse.transpose src rows inputs inputs dst rows
