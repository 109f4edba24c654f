/// The matrix-product backends: each against a naive triple loop, and against each other
/// through the layers' own Linalg functions, in float64 and float32.
module BackendTests

open System
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop
open Backprop.Backend

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
            if not expected then skiptest "this system has no libopenblas.so.0 in the Debian location: nothing to find"
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
        // it switches the process-wide backend: never at the same time as a test that compares runs
        testSequencedGroup Common.processWide <| test "every backend gives the same Linalg products and the same training step" {
            let train, _ = Common.mnist.Force()
            let x: Matrix<float> = Dataset.images train [| 0 .. 99 |]
            let w = Common.random 5 784 50
            let dout = Common.random 6 100 50
            let results backend =
                Linalg.useBackend backend
                try
                    let model: Model<float32> = Network.init 42 0.01 Training.bookNetwork
                    let stepped, loss = Training.sgdStep 0.1f model (Dataset.batch train [| 0 .. 99 |])
                    let w1 = match stepped.Params[0] with Params.Affine p -> p.W | _ -> failwith "W1"
                    Linalg.mul x w, Linalg.mulTN x dout, Linalg.mulNT dout w, loss, w1
                finally
                    Linalg.useBackend Linalg.Backend.Auto
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
        test "a product of mismatched shapes names the sizes" {
            let ex = Expect.throwsC (fun () -> Linalg.mul (Common.random 1 3 4) (Common.random 2 5 2) |> ignore) id
            Expect.stringContains ex.Message "op(A) 3x4 by op(B) 5x2" "message"
        }
    ]
