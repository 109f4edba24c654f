namespace Backprop.Core.Backend

#nowarn "9" // the offset products pass pointers into pinned arrays

open System
open Microsoft.FSharp.NativeInterop
open System.Reflection
open System.Runtime.InteropServices

/// OpenBLAS's matrix product, reached through P/Invoke where the system has the library.
/// The library is looked for once, at the first use, by its usual names on Linux, macOS and
/// Windows; `isAvailable` tells whether it was found, so a missing library is never a crash
/// at the first call. Column-major storage throughout, as MathNet keeps its dense matrices.
[<RequireQualifiedAccess>]
module OpenBlas =
    // CBLAS enumerations.
    let private colMajor, noTrans, trans = 102, 111, 112

    [<DllImport("openblas", CallingConvention = CallingConvention.Cdecl, EntryPoint = "cblas_sgemm")>]
    extern void private cblas_sgemm_p(int order, int transA, int transB, int m, int n, int k, float32 alpha, nativeint a, int lda, nativeint b, int ldb, float32 beta, nativeint c, int ldc)

    [<DllImport("openblas", CallingConvention = CallingConvention.Cdecl, EntryPoint = "cblas_dgemm")>]
    extern void private cblas_dgemm_p(int order, int transA, int transB, int m, int n, int k, float alpha, nativeint a, int lda, nativeint b, int ldb, float beta, nativeint c, int ldc)

    [<DllImport("openblas", CallingConvention = CallingConvention.Cdecl)>]
    extern void private openblas_set_num_threads(int n)

    [<DllImport("openblas", CallingConvention = CallingConvention.Cdecl)>]
    extern nativeint private openblas_get_corename()

    /// The names tried, in order.
    let candidates =
        [ "libopenblas.so.0"; "libopenblas.so"; "libopenblas.0.dylib"; "libopenblas.dylib"
          "/opt/homebrew/opt/openblas/lib/libopenblas.dylib"; "/usr/local/opt/openblas/lib/libopenblas.dylib"
          "libopenblas.dll"; "openblas.dll"; "openblas" ]

    /// The library found (its name) and loaded, with the P/Invoke declarations above bound to it
    /// and set to one thread: the products of a small network are faster on one thread than
    /// split over two, and the second core is left to evaluation.
    let private library: Lazy<(string * string option) option> =
        lazy
            (candidates
             |> List.tryPick (fun name ->
                 match NativeLibrary.TryLoad name with
                 | true, handle when fst (NativeLibrary.TryGetExport(handle, "cblas_sgemm")) -> Some(name, handle)
                 | true, handle -> NativeLibrary.Free handle; None
                 | _ -> None)
             |> Option.map (fun (name, handle) ->
                 NativeLibrary.SetDllImportResolver(
                     Assembly.GetExecutingAssembly(),
                     DllImportResolver(fun lib _ _ -> if lib = "openblas" then handle else IntPtr.Zero))
                 if fst (NativeLibrary.TryGetExport(handle, "openblas_set_num_threads")) then openblas_set_num_threads 1
                 let core =
                     if fst (NativeLibrary.TryGetExport(handle, "openblas_get_corename")) then
                         Marshal.PtrToStringAnsi(openblas_get_corename ()) |> Option.ofObj |> Option.filter (fun c -> c.Trim() <> "")
                     else None
                 name, core))

    /// Whether OpenBLAS was found on this system.
    let isAvailable () = library.Value.IsSome

    /// The file name OpenBLAS was loaded from, if it was found.
    let libraryName () = library.Value |> Option.map fst

    /// The kernels OpenBLAS runs on this CPU, by its own name for them ("Haswell", "Zen",
    /// "SkylakeX", ...: what it detected, or what the environment's OPENBLAS_CORETYPE asked for),
    /// if OpenBLAS was found and tells (openblas_get_corename).
    let coreName () = library.Value |> Option.bind snd

    let private check () =
        if not (isAvailable ()) then
            raise (DllNotFoundException $"""OpenBLAS was not found (tried {String.Join(", ", candidates)})""")

    /// sgemm on the matrices that start at the given offsets of a, b and c (e.g. a block of
    /// columns). The caller checks that the offsets and sizes lie inside the arrays.
    let sgemmAt transA transB m n k (alpha: float32) (a: float32[]) aOffset lda (b: float32[]) bOffset ldb (beta: float32) (c: float32[]) cOffset ldc =
        check ()
        use pa = fixed a
        use pb = fixed b
        use pc = fixed c
        cblas_sgemm_p (colMajor, (if transA then trans else noTrans), (if transB then trans else noTrans), m, n, k, alpha,
                       NativePtr.toNativeInt (NativePtr.add pa aOffset), lda, NativePtr.toNativeInt (NativePtr.add pb bOffset), ldb, beta,
                       NativePtr.toNativeInt (NativePtr.add pc cOffset), ldc)

    /// dgemm on the matrices that start at the given offsets of a, b and c.
    let dgemmAt transA transB m n k (alpha: float) (a: float[]) aOffset lda (b: float[]) bOffset ldb (beta: float) (c: float[]) cOffset ldc =
        check ()
        use pa = fixed a
        use pb = fixed b
        use pc = fixed c
        cblas_dgemm_p (colMajor, (if transA then trans else noTrans), (if transB then trans else noTrans), m, n, k, alpha,
                       NativePtr.toNativeInt (NativePtr.add pa aOffset), lda, NativePtr.toNativeInt (NativePtr.add pb bOffset), ldb, beta,
                       NativePtr.toNativeInt (NativePtr.add pc cOffset), ldc)

    /// C ← alpha·op(A)·op(B) + beta·C in float32, column-major, op(X) = Xᵀ when transX (cblas_sgemm).
    let sgemm transA transB m n k (alpha: float32) (a: float32[]) lda (b: float32[]) ldb (beta: float32) (c: float32[]) ldc =
        sgemmAt transA transB m n k alpha a 0 lda b 0 ldb beta c 0 ldc

    /// C ← alpha·op(A)·op(B) + beta·C in float64, column-major, op(X) = Xᵀ when transX (cblas_dgemm).
    let dgemm transA transB m n k (alpha: float) (a: float[]) lda (b: float[]) ldb (beta: float) (c: float[]) ldc =
        dgemmAt transA transB m n k alpha a 0 lda b 0 ldb beta c 0 ldc
