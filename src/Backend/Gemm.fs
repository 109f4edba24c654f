namespace Backprop.Core.Backend

#nowarn "9" // the micro-kernel reads its packed panels through native pointers

open System
open System.Buffers
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86
open Microsoft.FSharp.NativeInterop

/// A managed matrix product for machines without OpenBLAS: C ← alpha·op(A)·op(B) + beta·C on
/// column-major arrays, as BLAS's gemm, in float32 and float64. Single-threaded.
///
/// The GotoBLAS scheme: op(B) is packed, KC rows deep, into slivers of NR columns and op(A),
/// MC rows at a time, into slivers of MR rows, so that the micro-kernel reads both contiguously.
/// The micro-kernel keeps an MR × NR block of C in 2 × NR vector registers and, for each of the
/// KC steps, loads two vectors of A, broadcasts NR values of B and does 2·NR fused multiply-adds.
[<RequireQualifiedAccess>]
module Gemm =
    /// Depth of the packed panels: a KC × NR sliver of B stays in L1, an MC × KC block of A in L2.
    let private KC = 256
    /// Rows of op(A) packed at a time (rounded down to a multiple of MR).
    let private MC = 192
    /// Columns of C a micro-kernel call computes.
    let private NR = 6

    /// The vector instructions the kernel uses: 512-bit vectors where the CPU has AVX-512, else
    /// 256-bit vectors, with FMA where the CPU has it.
    let describe () =
        if Vector512.IsHardwareAccelerated then "managed (Vector512 + FMA)"
        elif not Vector256.IsHardwareAccelerated then "managed (Vector256, not hardware accelerated)"
        elif Fma.IsSupported then "managed (Vector256 + FMA)"
        else "managed (Vector256)"

    /// Whether this kernel outruns OpenBLAS on large products here: .NET runs it on 512-bit
    /// vectors (Vector512 hardware-accelerated, AVX-512) while the OpenBLAS loaded runs kernels of
    /// 256-bit vectors, by its own name for them (`openBlasCore`, OpenBlas.coreName: Haswell or
    /// Zen, as an AVX-512 CPU gets under OPENBLAS_CORETYPE=Haswell, or from an OpenBLAS without
    /// AVX-512 kernels). Measured on such a machine (AMD EPYC, 2 cores, OPENBLAS_CORETYPE=Haswell;
    /// docs/PERFORMANCE.md, "Large products on 512-bit vectors"): 784-1000x4-10's products, in
    /// halves on two cores inside a training run, at 173-238 GFLOP/s against OpenBLAS's 127-174.
    /// Other kernels (SkylakeX, Cooperlake, SapphireRapids: AVX-512 themselves), or none named: no.
    let outrunsOpenBlas (openBlasCore: string option) : bool =
        Vector512.IsHardwareAccelerated
        && (match openBlasCore with
            | Some core -> List.contains (core.Trim().ToLowerInvariant()) [ "haswell"; "zen" ]
            | None -> false)

    /// Packs op(A)[i0+fromRow .. i0+mc-1, p0 .. p0+kc-1] (fromRow a multiple of mr) into slivers of
    /// mr rows: for each depth p the mr values of a sliver follow each other; rows past mc are zero.
    let inline private packA transA (a: ^T[]) aOff lda i0 fromRow mc p0 kc mr (dst: ^T[]) =
        let slivers = (mc + mr - 1) / mr
        Array.Fill(dst, LanguagePrimitives.GenericZero, fromRow * kc, (slivers * mr - fromRow) * kc)
        for i in fromRow .. mc - 1 do
            let d = (i / mr) * mr * kc + i % mr
            if transA then
                let src = aOff + (i0 + i) * lda + p0 // op(A)[i, p] = A[p, i]: contiguous in p
                for p in 0 .. kc - 1 do
                    dst[d + p * mr] <- a[src + p]
            else
                for p in 0 .. kc - 1 do
                    dst[d + p * mr] <- a[aOff + i0 + i + (p0 + p) * lda]

    /// Packs op(B)[p0 .. p0+kc-1, fromColumn .. n-1] (fromColumn a multiple of NR) into slivers of
    /// NR columns: for each depth p the NR values of a sliver follow each other; columns past n
    /// are zero. Only the last, partial sliver needs it: whole slivers are read in place.
    let inline private packB transB (b: ^T[]) bOff ldb p0 kc fromColumn n (dst: ^T[]) =
        let slivers = (n + NR - 1) / NR
        Array.Fill(dst, LanguagePrimitives.GenericZero, fromColumn * kc, (slivers * NR - fromColumn) * kc)
        for j in fromColumn .. n - 1 do
            let d = (j / NR) * NR * kc + j % NR
            if transB then
                for p in 0 .. kc - 1 do
                    dst[d + p * NR] <- b[bOff + j + (p0 + p) * ldb]
            else
                let src = bOff + j * ldb + p0 // op(B)[p, j] = B[p, j]: contiguous in p
                for p in 0 .. kc - 1 do
                    dst[d + p * NR] <- b[src + p]

    /// The micro-kernel on 256-bit vectors: tile (mr × NR, column-major, mr = two vectors) ←
    /// Σ_p A[:, p] ⊗ B[p, :] over kc steps. Column p of the A sliver starts at ap + p·aStride
    /// (aStride = mr for a packed sliver, or the leading dimension when A is read in place).
    let inline private kernel256 ([<InlineIfLambda>] fma: Vector256< ^T > -> Vector256< ^T > -> Vector256< ^T > -> Vector256< ^T >) (overwrite: bool) kc (ap: nativeptr< ^T >) aStride (bp: nativeptr< ^T >) bColumnStride bDepthStride (alpha: ^T) (pc: nativeptr< ^T >) ldc (tile: nativeptr< ^T >) =
        let w = Vector256< ^T>.Count
        let sq = bColumnStride
        let mutable c00, c10, c01, c11, c02, c12 = Vector256< ^T>.Zero, Vector256< ^T>.Zero, Vector256< ^T>.Zero, Vector256< ^T>.Zero, Vector256< ^T>.Zero, Vector256< ^T>.Zero
        let mutable c03, c13, c04, c14, c05, c15 = Vector256< ^T>.Zero, Vector256< ^T>.Zero, Vector256< ^T>.Zero, Vector256< ^T>.Zero, Vector256< ^T>.Zero, Vector256< ^T>.Zero
        let mutable pa, pb = ap, bp
        for _ in 1 .. kc do
            let a0, a1 = Vector256.Load pa, Vector256.Load(NativePtr.add pa w)
            let b0 = Vector256.Create(NativePtr.get pb 0)
            c00 <- fma a0 b0 c00; c10 <- fma a1 b0 c10
            let b1 = Vector256.Create(NativePtr.get pb (1 * sq))
            c01 <- fma a0 b1 c01; c11 <- fma a1 b1 c11
            let b2 = Vector256.Create(NativePtr.get pb (2 * sq))
            c02 <- fma a0 b2 c02; c12 <- fma a1 b2 c12
            let b3 = Vector256.Create(NativePtr.get pb (3 * sq))
            c03 <- fma a0 b3 c03; c13 <- fma a1 b3 c13
            let b4 = Vector256.Create(NativePtr.get pb (4 * sq))
            c04 <- fma a0 b4 c04; c14 <- fma a1 b4 c14
            let b5 = Vector256.Create(NativePtr.get pb (5 * sq))
            c05 <- fma a0 b5 c05; c15 <- fma a1 b5 c15
            pa <- NativePtr.add pa aStride
            pb <- NativePtr.add pb bDepthStride
        // A whole block: C += alpha · block in place (C ← alpha · block when overwrite: the first
        // block of depths with beta = 0, where C is not read). At an edge: the block goes to tile
        // for the caller.
        let alphaV = Vector256.Create alpha
        let store (v: Vector256< ^T >) offset =
            if NativePtr.isNullPtr tile then
                let target = NativePtr.add pc offset
                if overwrite then Vector256.Store(alphaV * v, target)
                else Vector256.Store(fma alphaV v (Vector256.Load target), target)
            else
                Vector256.Store(v, NativePtr.add tile offset)
        let ld = if NativePtr.isNullPtr tile then ldc else 2 * w
        store c00 0; store c10 w; store c01 ld; store c11 (ld + w); store c02 (2 * ld); store c12 (2 * ld + w)
        store c03 (3 * ld); store c13 (3 * ld + w); store c04 (4 * ld); store c14 (4 * ld + w); store c05 (5 * ld); store c15 (5 * ld + w)

    /// The same micro-kernel on 512-bit vectors (AVX-512): twice the rows per sliver.
    let inline private kernel512 ([<InlineIfLambda>] fma: Vector512< ^T > -> Vector512< ^T > -> Vector512< ^T > -> Vector512< ^T >) (overwrite: bool) kc (ap: nativeptr< ^T >) aStride (bp: nativeptr< ^T >) bColumnStride bDepthStride (alpha: ^T) (pc: nativeptr< ^T >) ldc (tile: nativeptr< ^T >) =
        let w = Vector512< ^T>.Count
        let sq = bColumnStride
        let mutable c00, c10, c01, c11, c02, c12 = Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero
        let mutable c03, c13, c04, c14, c05, c15 = Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero
        let mutable pa, pb = ap, bp
        for _ in 1 .. kc do
            let a0, a1 = Vector512.Load pa, Vector512.Load(NativePtr.add pa w)
            let b0 = Vector512.Create(NativePtr.get pb 0)
            c00 <- fma a0 b0 c00; c10 <- fma a1 b0 c10
            let b1 = Vector512.Create(NativePtr.get pb (1 * sq))
            c01 <- fma a0 b1 c01; c11 <- fma a1 b1 c11
            let b2 = Vector512.Create(NativePtr.get pb (2 * sq))
            c02 <- fma a0 b2 c02; c12 <- fma a1 b2 c12
            let b3 = Vector512.Create(NativePtr.get pb (3 * sq))
            c03 <- fma a0 b3 c03; c13 <- fma a1 b3 c13
            let b4 = Vector512.Create(NativePtr.get pb (4 * sq))
            c04 <- fma a0 b4 c04; c14 <- fma a1 b4 c14
            let b5 = Vector512.Create(NativePtr.get pb (5 * sq))
            c05 <- fma a0 b5 c05; c15 <- fma a1 b5 c15
            pa <- NativePtr.add pa aStride
            pb <- NativePtr.add pb bDepthStride
        // A whole block: C += alpha · block in place (C ← alpha · block when overwrite: the first
        // block of depths with beta = 0, where C is not read). At an edge: the block goes to tile
        // for the caller.
        let alphaV = Vector512.Create alpha
        let store (v: Vector512< ^T >) offset =
            if NativePtr.isNullPtr tile then
                let target = NativePtr.add pc offset
                if overwrite then Vector512.Store(alphaV * v, target)
                else Vector512.Store(fma alphaV v (Vector512.Load target), target)
            else
                Vector512.Store(v, NativePtr.add tile offset)
        let ld = if NativePtr.isNullPtr tile then ldc else 2 * w
        store c00 0; store c10 w; store c01 ld; store c11 (ld + w); store c02 (2 * ld); store c12 (2 * ld + w)
        store c03 (3 * ld); store c13 (3 * ld + w); store c04 (4 * ld); store c14 (4 * ld + w); store c05 (5 * ld); store c15 (5 * ld + w)

    /// The micro-kernel for a last sliver of at most half its height (m = 100 in 32-row slivers:
    /// rows 96-99): one vector of rows instead of two, so that the zero rows padding the sliver
    /// cost half as much. Always into tile (ld = two vectors), which the caller adds to C. On
    /// 512-bit vectors only: with 256-bit ones the whole kernel (kernel256 into tile) takes the
    /// tail, its slivers being half as tall.
    let inline private half512 ([<InlineIfLambda>] fma: Vector512< ^T > -> Vector512< ^T > -> Vector512< ^T > -> Vector512< ^T >) kc (ap: nativeptr< ^T >) aStride (bp: nativeptr< ^T >) bColumnStride bDepthStride (tile: nativeptr< ^T >) =
        let w = Vector512< ^T>.Count
        let sq = bColumnStride
        let mutable c0, c1, c2, c3, c4, c5 = Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero, Vector512< ^T>.Zero
        let mutable pa, pb = ap, bp
        for _ in 1 .. kc do
            let a0 = Vector512.Load pa
            c0 <- fma a0 (Vector512.Create(NativePtr.get pb 0)) c0
            c1 <- fma a0 (Vector512.Create(NativePtr.get pb sq)) c1
            c2 <- fma a0 (Vector512.Create(NativePtr.get pb (2 * sq))) c2
            c3 <- fma a0 (Vector512.Create(NativePtr.get pb (3 * sq))) c3
            c4 <- fma a0 (Vector512.Create(NativePtr.get pb (4 * sq))) c4
            c5 <- fma a0 (Vector512.Create(NativePtr.get pb (5 * sq))) c5
            pa <- NativePtr.add pa aStride
            pb <- NativePtr.add pb bDepthStride
        let ld = 2 * w
        Vector512.Store(c0, tile); Vector512.Store(c1, NativePtr.add tile ld); Vector512.Store(c2, NativePtr.add tile (2 * ld))
        Vector512.Store(c3, NativePtr.add tile (3 * ld)); Vector512.Store(c4, NativePtr.add tile (4 * ld)); Vector512.Store(c5, NativePtr.add tile (5 * ld))

    /// C ← alpha·op(A)·op(B) + beta·C, the loops around the micro-kernel. mr is the micro-kernel's
    /// sliver height (two vectors); kernel is kernel256 or kernel512 with its fma.
    let inline private gemm mr ([<InlineIfLambda>] kernel: bool -> int -> nativeptr< ^T > -> int -> nativeptr< ^T > -> int -> int -> ^T -> nativeptr< ^T > -> int -> nativeptr< ^T > -> unit) ([<InlineIfLambda>] halfKernel: int -> nativeptr< ^T > -> int -> nativeptr< ^T > -> int -> int -> nativeptr< ^T > -> unit) transA transB m n k (alpha: ^T) (a: ^T[]) aOff lda (b: ^T[]) bOff ldb (beta: ^T) (c: ^T[]) cOff ldc =
        let zero = LanguagePrimitives.GenericZero< ^T >
        // C ← beta·C first, where the blocks below cannot do it: with beta = 0 the first block of
        // depths writes C without reading it (so C may hold anything, NaN included), unless there
        // is no depth at all.
        let overwriteFirst = beta = zero && k > 0
        if beta <> LanguagePrimitives.GenericOne && not overwriteFirst then
            for j in 0 .. n - 1 do
                for i in cOff + j * ldc .. cOff + j * ldc + m - 1 do
                    c[i] <- if beta = zero then zero else beta * c[i]
        if m > 0 && n > 0 && k > 0 then
            let mcMax = max mr (MC / mr * mr)
            let ap = ArrayPool< ^T>.Shared.Rent(mcMax * KC)
            let bp = ArrayPool< ^T>.Shared.Rent(((n + NR - 1) / NR) * NR * KC)
            let tile = ArrayPool< ^T>.Shared.Rent(mr * NR)
            try
                use pA0 = fixed a
                use pB0 = fixed b
                use pC0 = fixed c
                let pA, pB, pC = NativePtr.add pA0 aOff, NativePtr.add pB0 bOff, NativePtr.add pC0 cOff
                use pAp = fixed ap
                use pBp = fixed bp
                use pTile = fixed tile
                let mutable p0 = 0
                while p0 < k do
                    let kc = min KC (k - p0)
                    let overwrite = overwriteFirst && p0 = 0
                    let fullColumns = n / NR * NR
                    if fullColumns < n then packB transB b bOff ldb p0 kc fullColumns n bp
                    // op(B)[p, j] in place: B[p, j] (columns ldb apart) or, transposed, B[j, p].
                    let bColumnStride, bDepthStride = if transB then 1, ldb else ldb, 1
                    let mutable i0 = 0
                    while i0 < m do
                        let mc = min mcMax (m - i0)
                        // Aᵀ is packed; A itself is read in place, its columns already contiguous,
                        // except for a last sliver shorter than mr, which is packed (zero-padded).
                        let fullSlivers = if transA then 0 else mc / mr
                        if fullSlivers * mr < mc then packA transA a aOff lda i0 (fullSlivers * mr) mc p0 kc mr ap
                        let mutable j = 0
                        while j < n do
                            let nr = min NR (n - j)
                            let mutable i = 0
                            while i < mc do
                                let aSliver, aStride =
                                    if i / mr < fullSlivers then NativePtr.add pA (i0 + i + p0 * lda), lda
                                    else NativePtr.add pAp (i * kc), mr
                                let rows = min mr (mc - i)
                                let whole = rows = mr && nr = NR
                                let pcBlock = NativePtr.add pC ((j * ldc) + i0 + i)
                                let target = if whole then NativePtr.nullPtr else pTile
                                let bSliver, bCol, bDepth =
                                    if j < fullColumns then NativePtr.add pB (if transB then j + p0 * ldb else p0 + j * ldb), bColumnStride, bDepthStride
                                    else NativePtr.add pBp (j * kc), 1, NR
                                if 2 * rows <= mr then halfKernel kc aSliver aStride bSliver bCol bDepth pTile
                                else kernel overwrite kc aSliver aStride bSliver bCol bDepth alpha pcBlock ldc target
                                if not whole then
                                    // C[i0 + i .., j ..] += alpha · tile (or ← with overwrite), for the rows and columns inside C.
                                    for q in 0 .. nr - 1 do
                                        let col = (j + q) * ldc + i0 + i
                                        for r in 0 .. rows - 1 do
                                            c[cOff + col + r] <- (if overwrite then zero else c[cOff + col + r]) + alpha * tile[r + q * mr]
                                i <- i + mr
                            j <- j + NR
                        i0 <- i0 + mc
                    p0 <- p0 + kc
            finally
                ArrayPool< ^T>.Shared.Return ap
                ArrayPool< ^T>.Shared.Return bp
                ArrayPool< ^T>.Shared.Return tile

    /// sgemm on the matrices that start at the given offsets of a, b and c (e.g. a block of
    /// columns). The caller checks that the offsets and sizes lie inside the arrays.
    let sgemmAt transA transB m n k (alpha: float32) (a: float32[]) aOff lda (b: float32[]) bOff ldb (beta: float32) (c: float32[]) cOff ldc =
        if Vector512.IsHardwareAccelerated then
            let fma (x: Vector512<float32>) y acc = Avx512F.FusedMultiplyAdd(x, y, acc)
            gemm (2 * Vector512<float32>.Count) (kernel512 fma) (half512 fma) transA transB m n k alpha a aOff lda b bOff ldb beta c cOff ldc
        else
            let fma (x: Vector256<float32>) y acc = if Fma.IsSupported then Fma.MultiplyAdd(x, y, acc) else x * y + acc
            gemm (2 * Vector256<float32>.Count) (kernel256 fma) (fun kc ap aStride bp bCol bDepth tile -> kernel256 fma false kc ap aStride bp bCol bDepth 1.0f NativePtr.nullPtr 0 tile) transA transB m n k alpha a aOff lda b bOff ldb beta c cOff ldc

    /// dgemm on the matrices that start at the given offsets of a, b and c.
    let dgemmAt transA transB m n k (alpha: float) (a: float[]) aOff lda (b: float[]) bOff ldb (beta: float) (c: float[]) cOff ldc =
        if Vector512.IsHardwareAccelerated then
            let fma (x: Vector512<float>) y acc = Avx512F.FusedMultiplyAdd(x, y, acc)
            gemm (2 * Vector512<float>.Count) (kernel512 fma) (half512 fma) transA transB m n k alpha a aOff lda b bOff ldb beta c cOff ldc
        else
            let fma (x: Vector256<float>) y acc = if Fma.IsSupported then Fma.MultiplyAdd(x, y, acc) else x * y + acc
            gemm (2 * Vector256<float>.Count) (kernel256 fma) (fun kc ap aStride bp bCol bDepth tile -> kernel256 fma false kc ap aStride bp bCol bDepth 1.0 NativePtr.nullPtr 0 tile) transA transB m n k alpha a aOff lda b bOff ldb beta c cOff ldc

    /// C ← alpha·op(A)·op(B) + beta·C in float32, column-major, op(X) = Xᵀ when transX (as sgemm).
    let sgemm transA transB m n k (alpha: float32) (a: float32[]) lda (b: float32[]) ldb (beta: float32) (c: float32[]) ldc =
        sgemmAt transA transB m n k alpha a 0 lda b 0 ldb beta c 0 ldc

    /// C ← alpha·op(A)·op(B) + beta·C in float64, column-major, op(X) = Xᵀ when transX (as dgemm).
    let dgemm transA transB m n k (alpha: float) (a: float[]) lda (b: float[]) ldb (beta: float) (c: float[]) ldc =
        dgemmAt transA transB m n k alpha a 0 lda b 0 ldb beta c 0 ldc
