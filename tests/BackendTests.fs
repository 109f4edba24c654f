/// The matrix-product backends: each against a naive triple loop, and against each other
/// through the layers' own Linalg functions, in float64 and float32.
module BackendTests

open System
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Backprop.Core.Backend

/// op(A)·op(B) by the definition, column-major, in float64.
let naive transA transB m n k (a: float[]) lda (b: float[]) ldb =
    Array.init (m * n) (fun idx ->
        let i, j = idx % m, idx / m
        Seq.sum (seq { for p in 0 .. k - 1 -> (if transA then a[p + i * lda] else a[i + p * lda]) * (if transB then b[j + p * ldb] else b[p + j * ldb]) }))

/// Shapes (m, n, k): degenerate, odd, around the kernels' block sizes, and the book's.
let shapes = [ 1, 1, 1; 3, 5, 7; 17, 9, 33; 33, 13, 257; 100, 50, 784; 784, 50, 100; 100, 10, 50; 100, 50, 10; 250, 7, 300 ]

let private rng = Random(11)
let private randomArray n = Array.init n (fun _ -> rng.NextDouble() - 0.5)

/// The GEMM implementations to check: the managed kernel always, OpenBLAS where the system has it.
let gemms =
    [ yield "managed", Gemm.dgemm, Gemm.sgemm
      if OpenBlas.isAvailable () then yield "openblas", OpenBlas.dgemm, OpenBlas.sgemm ]

[<Tests>]
let tests =
    testList "backends" [
        test "OpenBLAS is found where the system has it (CI installs it)" {
            let expected = IO.File.Exists "/usr/lib/x86_64-linux-gnu/libopenblas.so.0" || IO.File.Exists "/usr/lib/aarch64-linux-gnu/libopenblas.so.0"
            if not expected then Common.requireOrSkip "this system has no libopenblas.so.0 in the Debian location (apt-get install libopenblas0-pthread): nothing to find"
            Expect.isTrue (OpenBlas.isAvailable ()) "OpenBLAS found"
            Expect.stringStarts (Option.get (OpenBlas.libraryName ())) "libopenblas" "its file name"
        }
        for name, dgemm, sgemm in gemms do
            for transA in [ false; true ] do
                for transB in [ false; true ] do
                    test $"%s{name} gemm equals the definition, transA %b{transA}, transB %b{transB}, float64 and float32, alpha and beta" {
                        for m, n, k in shapes do
                            let a, b = randomArray (m * k), randomArray (k * n)
                            let lda, ldb = (if transA then k else m), (if transB then n else k)
                            let expected = naive transA transB m n k a lda b ldb
                            let c = Array.init (m * n) (fun i -> float i / float (m * n))
                            dgemm transA transB m n k 2.0 a lda b ldb 0.5 c m
                            let worst = Seq.map3 (fun c e i -> abs (c - (2.0 * e + 0.5 * (float i / float (m * n))))) c expected [ 0 .. m * n - 1 ] |> Seq.max
                            Expect.isLessThan worst 1e-12 $"float64 %d{m}x%d{n}x%d{k}"
                            let c32 = Array.zeroCreate (m * n)
                            sgemm transA transB m n k 1.0f (Array.map float32 a) lda (Array.map float32 b) ldb 0.0f c32 m
                            let worst32 = Seq.map2 (fun (c: float32) e -> abs (float c - e)) c32 expected |> Seq.max
                            Expect.isLessThan worst32 (1e-5 * sqrt (float k)) $"float32 %d{m}x%d{n}x%d{k}"
                    }
        test "every backend gives the same Linalg products and the same training step" {
            let train, _ = Common.mnist.Force()
            let x: Matrix<float> = Dataset.images train [| 0 .. 99 |]
            let w = Common.random 5 784 50
            let dout = Common.random 6 100 50
            let results backend =
                Linalg.using (Linalg.settings backend Linalg.InputStorage.Auto 2) (fun () ->
                    let model: Model<float32> = Network.init 42 0.01 Training.bookNetwork
                    let stepped, loss = Training.sgdStep 0.1f model (Dataset.batch train [| 0 .. 99 |])
                    let w1 = match stepped.Params[0] with Params.Affine p -> p.W | _ -> failwith "W1"
                    Linalg.times x w, Linalg.transposeTimes x dout, Linalg.timesTranspose dout w, loss, w1)
            let reference = results Linalg.Backend.MathNet
            let others = [ yield Linalg.Backend.Managed; if OpenBlas.isAvailable () then yield Linalg.Backend.OpenBlas ]
            for backend in others do
                let mul, tn, nt, loss, w1 = results backend
                let r1, r2, r3, rl, rw = reference
                for name, got, want in [ "x·W", mul, r1; "xᵀ·dout", tn, r2; "dout·Wᵀ", nt, r3 ] do
                    Expect.isLessThan (Common.maxAbsDiff got want) 1e-11 $"%A{backend} {name}"
                Expect.floatClose { absolute = 1e-5; relative = 1e-5 } (float loss) (float rl) $"%A{backend} float32 loss"
                Expect.isLessThan ((w1 - rw).Enumerate() |> Seq.map abs |> Seq.max) 1e-6f $"%A{backend} float32 W1 after a step"
        }
        for name, dgemm, sgemm in gemms do
            test $"%s{name} gemm with beta = 0 never reads C (NaN there stays out), at every sliver tail" {
                // m = 100 leaves 4 rows past three 32-row slivers (the managed kernel's half-height
                // tail), 16 and 17 sit on either side of half a 512-bit sliver, 8 and 9 of a 256-bit one.
                for m, n, k in [ 100, 13, 70; 16, 7, 300; 17, 6, 9; 8, 12, 5; 9, 1, 260; 1, 1, 1 ] do
                    for transA in [ false; true ] do
                        for transB in [ false; true ] do
                            let a, b = randomArray (m * k), randomArray (k * n)
                            let lda, ldb = (if transA then k else m), (if transB then n else k)
                            let expected = naive transA transB m n k a lda b ldb
                            let c = Array.create (m * n) nan
                            dgemm transA transB m n k 1.5 a lda b ldb 0.0 c m
                            let worst = Seq.map2 (fun c e -> abs (c - 1.5 * e)) c expected |> Seq.max
                            Expect.isLessThan worst 1e-12 $"float64 %d{m}x%d{n}x%d{k} transA %b{transA} transB %b{transB}"
                            let c32 = Array.create (m * n) Single.NaN
                            sgemm transA transB m n k 1.0f (Array.map float32 a) lda (Array.map float32 b) ldb 0.0f c32 m
                            let worst32 = Seq.map2 (fun (c: float32) e -> abs (float c - e)) c32 expected |> Seq.max
                            Expect.isLessThan worst32 (1e-5 * sqrt (float k)) $"float32 %d{m}x%d{n}x%d{k} transA %b{transA} transB %b{transB}"
            }
        test "large products (5 million multiply-adds and more) equal the definition under every settings, whichever kernel Auto picks for them" {
            // x·W (100 x 240 by 240 x 210), xᵀ·dout (300 x 100 by 100 x 200, the transposed
            // copy of x on the managed kernel) and dout·Wᵀ (100 x 210 by 210 x 240), the shapes
            // of a wide layer's forward and backward products.
            let cases =
                [ "x·W", false, false, 100, 210, 240
                  "xᵀ·dout", true, false, 300, 200, 100
                  "dout·Wᵀ", false, true, 100, 240, 210 ]
            let backends = [ yield Linalg.Backend.Auto; yield Linalg.Backend.Managed; if OpenBlas.isAvailable () then yield Linalg.Backend.OpenBlas ]
            for label, transA, transB, m, n, k in cases do
                Expect.isGreaterThanOrEqual (m * n * k) 5_000_000 $"{label} is a large product"
                let a, b = randomArray (m * k), randomArray (k * n)
                let lda, ldb = (if transA then k else m), (if transB then n else k)
                let expected = naive transA transB m n k a lda b ldb
                let am = Matrix<float>.Build.Dense((if transA then k else m), (if transA then m else k), a)
                let bm = Matrix<float>.Build.Dense((if transB then n else k), (if transB then k else n), b)
                let product (x: Matrix<'T>) (y: Matrix<'T>) =
                    match transA, transB with
                    | false, false -> Linalg.times x y
                    | true, false -> Linalg.transposeTimes x y
                    | _ -> Linalg.timesTranspose x y
                for backend in backends do
                    let s = Linalg.settings backend Linalg.InputStorage.Auto 2
                    let c = Linalg.using s (fun () -> product am bm)
                    let worst = Seq.map2 (fun c e -> abs (c - e) / (abs e + 1.0)) (c.ToColumnMajorArray()) expected |> Seq.max
                    Expect.isLessThan worst 1e-12 $"{label} float64, {s}"
                    let c32 = Linalg.using s (fun () -> product (am.Map float32) (bm.Map float32))
                    let worst32 = Seq.map2 (fun (c: float32) e -> abs (float c - e) / (abs e + 1.0)) (c32.ToColumnMajorArray()) expected |> Seq.max
                    Expect.isLessThan worst32 1e-5 $"{label} float32, {s}"
        }
        test "a product of mismatched shapes names the sizes" {
            let ex = Expect.throwsC (fun () -> Linalg.times (Common.random 1 3 4) (Common.random 2 5 2) |> ignore) id
            Expect.stringContains ex.Message "op(A) 3x4 by op(B) 5x2" "message"
        }
    ]

[<Tests>]
let settings =
    testList "settings" [
        test "settings resolve Auto, check OpenBLAS and the threads where they are made, and the defaults are made once" {
            let resolved = if OpenBlas.isAvailable () then Linalg.Backend.OpenBlas else Linalg.Backend.Managed
            Expect.equal (Linalg.settings Linalg.Backend.Auto Linalg.InputStorage.Dense 1).Backend resolved "Auto: OpenBLAS where the system has it, else Managed"
            if OpenBlas.isAvailable () then
                Expect.equal (Linalg.settings Linalg.Backend.OpenBlas Linalg.InputStorage.Auto 2).Backend Linalg.Backend.OpenBlas "OpenBlas where it is"
            else
                let e = Expect.throwsC (fun () -> Linalg.settings Linalg.Backend.OpenBlas Linalg.InputStorage.Auto 2 |> ignore) id
                Expect.isTrue (e :? ArgumentException) "an ArgumentException"
                Expect.stringContains e.Message "OpenBLAS was not found on this system" "the message the CLI and the facade show"
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Auto 0 |> ignore) "at least one thread"
            let d = Linalg.defaults ()
            Expect.isTrue (obj.ReferenceEquals(d, Linalg.defaults ())) "made once"
            Expect.equal (d.Backend, d.InputStorage, d.Threads) (resolved, Linalg.InputStorage.Auto, min 2 Environment.ProcessorCount) "the defaults"
            Expect.equal (Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Sparse 2) (Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Sparse 2) "equal settings are equal"
            // The large products leave OpenBLAS only under Auto, and never for OpenBLAS's own
            // AVX-512 kernels or kernels it does not name.
            Expect.isFalse (Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Auto 2).LargeProductsOnManaged "Managed: every product is managed already"
            if OpenBlas.isAvailable () then
                Expect.isFalse (Linalg.settings Linalg.Backend.OpenBlas Linalg.InputStorage.Auto 2).LargeProductsOnManaged "OpenBlas asked for by name: all of it"
            for core in [ Some "SkylakeX"; Some "Cooperlake"; Some "SapphireRapids"; None ] do
                Expect.isFalse (Gemm.outrunsOpenBlas core) $"OpenBLAS kernels {core}"
            if not Runtime.Intrinsics.Vector512.IsHardwareAccelerated then
                Expect.isFalse (Gemm.outrunsOpenBlas (Some "Haswell")) "no 512-bit vectors here: OpenBLAS's"
        }
        test "using puts settings in effect for its call (and the tasks it starts) alone, nests, and restores the outer ones after an exception" {
            let a = Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Dense 1
            let b = Linalg.settings Linalg.Backend.MathNet Linalg.InputStorage.Sparse 2
            Expect.isTrue (obj.ReferenceEquals(Linalg.current (), Linalg.defaults ())) "outside any using: the defaults"
            Linalg.using a (fun () ->
                Expect.isTrue (obj.ReferenceEquals(Linalg.current (), a)) "inside: a"
                Expect.isTrue (obj.ReferenceEquals(Threading.Tasks.Task.Run(Linalg.current).Result, a)) "a task started inside: a"
                Expect.isTrue (obj.ReferenceEquals(Linalg.using b Linalg.current, b)) "nested: b"
                Expect.throwsT<InvalidOperationException> (fun () -> Linalg.using b (fun () -> invalidOp "fails")) "the exception passes"
                Expect.isTrue (obj.ReferenceEquals(Linalg.current (), a)) "after the nested using, and its exception: a again"
                Expect.stringContains (Linalg.describe ()) "1 thread" "describe tells the settings in effect")
            Expect.isTrue (obj.ReferenceEquals(Linalg.current (), Linalg.defaults ())) "after: the defaults again"
            Expect.stringContains (Linalg.using (Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Auto 2) Linalg.describe) "managed" "describe: the backend"
        }
    ]
