namespace Backprop.Core.Backend

#nowarn "9" // the kernels read the byte rows and write the matrix through native pointers

open System
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86
open Microsoft.FSharp.NativeInterop

/// Gathering rows of a byte matrix (images, one byte per pixel) into a column-major matrix of
/// float32 or float64 scaled to [0, 1]: the mini-batch and evaluation-block gather under
/// `Dataset.images`. The rows are stored one after the other and MathNet stores matrices column
/// by column, so the gather is also a transpose. Where the CPU has AVX2 it is done 8 rows by
/// 8 columns at a time in vector registers; elsewhere element by element. Either way each value
/// is byte / 255 rounded once to the element type, bit for bit the same on every path.
[<RequireQualifiedAccess>]
module Gather =
    /// Asks the CPU to start loading the given rows of a row-major byte array into cache, so the
    /// reads that follow overlap their memory latency instead of waiting for one row at a time.
    /// Only a hint: it changes no value, and does nothing where the CPU has no prefetch instruction.
    let prefetchRows (data: byte[]) (rowLength: int) (indices: int[]) =
        if Sse.IsSupported && data.Length > 0 then
            use p = fixed data
            for i in indices do
                let start = i * rowLength
                for k in 0 .. 64 .. rowLength - 1 do
                    Sse.Prefetch0(NativePtr.toVoidPtr (NativePtr.add p (start + k)))

    let private checkArguments (data: byte[]) (rowLength: int) (indices: int[]) (destinationLength: int) =
        if rowLength < 0 then invalidArg "rowLength" $"a row length of %d{rowLength}"
        if destinationLength < indices.Length * rowLength then
            invalidArg "destination" $"%d{destinationLength} values cannot hold %d{indices.Length} rows of %d{rowLength}"
        for i in indices do
            if i < 0 || (i + 1) * rowLength > data.Length then
                raise (ArgumentOutOfRangeException("indices", $"row %d{i} lies outside the %d{data.Length / max rowLength 1} rows of the data"))

    /// Eight rows of 8 float32 in AVX registers, transposed: the k-th vector returned holds
    /// element k of each row (column k of the 8 × 8 block). Also used by Sparse's transposes.
    let inline transpose8x8 (r0: Vector256<float32>) (r1: Vector256<float32>) (r2: Vector256<float32>) (r3: Vector256<float32>) (r4: Vector256<float32>) (r5: Vector256<float32>) (r6: Vector256<float32>) (r7: Vector256<float32>) =
        // The classic 8 × 8 transpose: interleave pairs, then quadruples, then 128-bit halves.
        let t0, t1, t2, t3 = Avx.UnpackLow(r0, r1), Avx.UnpackHigh(r0, r1), Avx.UnpackLow(r2, r3), Avx.UnpackHigh(r2, r3)
        let t4, t5, t6, t7 = Avx.UnpackLow(r4, r5), Avx.UnpackHigh(r4, r5), Avx.UnpackLow(r6, r7), Avx.UnpackHigh(r6, r7)
        let u0, u1, u2, u3 = Avx.Shuffle(t0, t2, 0x44uy), Avx.Shuffle(t0, t2, 0xEEuy), Avx.Shuffle(t1, t3, 0x44uy), Avx.Shuffle(t1, t3, 0xEEuy)
        let u4, u5, u6, u7 = Avx.Shuffle(t4, t6, 0x44uy), Avx.Shuffle(t4, t6, 0xEEuy), Avx.Shuffle(t5, t7, 0x44uy), Avx.Shuffle(t5, t7, 0xEEuy)
        struct (Avx.Permute2x128(u0, u4, 0x20uy), Avx.Permute2x128(u1, u5, 0x20uy), Avx.Permute2x128(u2, u6, 0x20uy), Avx.Permute2x128(u3, u7, 0x20uy),
                Avx.Permute2x128(u0, u4, 0x31uy), Avx.Permute2x128(u1, u5, 0x31uy), Avx.Permute2x128(u2, u6, 0x31uy), Avx.Permute2x128(u3, u7, 0x31uy))

    /// Eight rows of eight bytes (at rows[0..7] + column) converted to float32 (exactly) and
    /// transposed: the k-th vector returned holds column k of the 8 × 8 block.
    let inline private block8x8 (rows: nativeptr<nativeptr<byte>>) (column: int) =
        let load k =
            let bytes = Vector128.CreateScalarUnsafe(NativePtr.read (NativePtr.ofNativeInt<uint64> (NativePtr.toNativeInt (NativePtr.add (NativePtr.get rows k) column)))).AsByte()
            Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32 bytes)
        transpose8x8 (load 0) (load 1) (load 2) (load 3) (load 4) (load 5) (load 6) (load 7)

    /// The gather, generic over the element type: `store k v` writes the 8 values of v (rows
    /// i .. i+7 of column j+k, still unscaled bytes) and `scalar v` converts one byte.
    let inline private gather
        (data: byte[]) (rowLength: int) (indices: int[]) (destination: ^T[])
        ([<InlineIfLambda>] scalar: byte -> ^T)
        ([<InlineIfLambda>] store: nativeptr< ^T > -> Vector256<float32> -> unit) =
        checkArguments data rowLength indices destination.Length
        let n, p = indices.Length, rowLength
        use src = fixed data
        use dst = fixed destination
        let mutable i = 0
        if Avx2.IsSupported then
            let rows = NativePtr.stackalloc<nativeptr<byte>> 8
            // Groups of 8 rows; a last, partial group is done as the 8 rows ending at row n - 1,
            // overlapping the group before it (its rows are written twice, with the same values).
            let mutable last = false
            while i + 8 <= n do
                for k in 0 .. 7 do NativePtr.set rows k (NativePtr.add src (indices[i + k] * p))
                let mutable j = 0
                while j + 8 <= p do
                    let struct (c0, c1, c2, c3, c4, c5, c6, c7) = block8x8 rows j
                    let at k = NativePtr.add dst ((j + k) * n + i)
                    store (at 0) c0; store (at 1) c1; store (at 2) c2; store (at 3) c3
                    store (at 4) c4; store (at 5) c5; store (at 6) c6; store (at 7) c7
                    j <- j + 8
                for jj in j .. p - 1 do
                    for k in 0 .. 7 do
                        NativePtr.set dst (jj * n + i + k) (scalar (NativePtr.get (NativePtr.get rows k) jj))
                i <- if last || i + 8 = n || i + 16 <= n then i + 8 else (last <- true; n - 8)
        // The rows left over (all of them without AVX2), element by element, 16 columns at a
        // time so that the columns being written stay in cache while the rows pass.
        for j0 in 0 .. 16 .. p - 1 do
            let j1 = min p (j0 + 16) - 1
            for r in i .. n - 1 do
                let row = NativePtr.add src (indices[r] * p)
                for j in j0 .. j1 do
                    NativePtr.set dst (j * n + r) (scalar (NativePtr.get row j))

    /// destination (column-major, indices.Length rows × rowLength columns) ← the rows of data
    /// (row-major bytes, rowLength per row) at the given indices, each byte v as v / 255.
    let bytesToSingleColumnMajor (data: byte[]) (rowLength: int) (indices: int[]) (destination: float32[]) =
        let r, c = Vector256.Create(1.0f / 255.0f), Vector256.Create 255.0f
        gather data rowLength indices destination (fun v -> float32 v / 255.0f) (fun at v ->
            if Fma.IsSupported then
                // v / 255 correctly rounded without a division: q = v·(1/255), then q + (v - 255q)·(1/255)
                // (Markstein's correction; the tests check it against the division for every byte).
                let q = Avx.Multiply(v, r)
                Fma.MultiplyAdd(Fma.MultiplyAddNegated(q, c, v), r, q).Store at
            else
                Avx.Divide(v, c).Store at)

    /// As bytesToSingleColumnMajor, in float64.
    let bytesToDoubleColumnMajor (data: byte[]) (rowLength: int) (indices: int[]) (destination: float[]) =
        let r, c = Vector256.Create(1.0 / 255.0), Vector256.Create 255.0
        let divide (v: Vector256<float>) =
            if Fma.IsSupported then
                let q = Avx.Multiply(v, r)
                Fma.MultiplyAdd(Fma.MultiplyAddNegated(q, c, v), r, q)
            else
                Avx.Divide(v, c)
        gather data rowLength indices destination (fun v -> float v / 255.0) (fun at v ->
            (divide (Avx.ConvertToVector256Double(v.GetLower()))).Store at
            (divide (Avx.ConvertToVector256Double(v.GetUpper()))).Store(NativePtr.add at 4))
