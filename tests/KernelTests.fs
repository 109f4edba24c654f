/// The vectorized kernels under the layers: the transposing byte gather of Dataset.images and the
/// elementwise kernels of Linalg, each against its definition written element by element.
module KernelTests

open System
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Backprop.Core.Backend

/// A small byte "dataset": rows × columns random bytes, every value 0-255 present.
let private bytes rows columns =
    let rng = Random(3)
    Array.init (rows * columns) (fun i -> if i < 256 then byte i else byte (rng.Next 256))

/// The gather by its definition: column-major, element [i, j] = data[indices[i], j] / 255.
let private gatherDefinition (data: byte[]) columns (indices: int[]) =
    Array.init (indices.Length * columns) (fun idx ->
        let i, j = idx % indices.Length, idx / indices.Length
        float data[indices[i] * columns + j] / 255.0)

/// xᵀ·d, dropped as soon as it is made: a long weak reference to its array (which follows the
/// array through its finalization), from a frame of its own so that nothing else holds it.
[<System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)>]
let private droppedProduct (x: Matrix<float>) (d: Matrix<float>) =
    WeakReference((Linalg.transposeTimes x d).AsColumnMajorArray(), true)

[<Tests>]
let tests =
    testList "kernels" [
        test "the gather equals its definition bit for bit, in both precisions, for block-sized and ragged shapes" {
            for rows, columns, picked in [ 1, 1, 1; 40, 784, 100; 300, 13, 17; 64, 16, 8; 9, 7, 9; 1000, 784, 500 ] do
                let data = bytes rows columns
                let rng = Random(rows + columns)
                let indices = Array.init picked (fun i -> if i < rows then i else rng.Next rows) |> Array.rev
                let expected = gatherDefinition data columns indices
                let single = Array.zeroCreate (picked * columns)
                Gather.bytesToSingleColumnMajor data columns indices single
                Expect.sequenceEqual single (Array.map float32 expected) $"float32, %d{picked} of %d{rows} rows of %d{columns}"
                let double = Array.zeroCreate (picked * columns)
                Gather.bytesToDoubleColumnMajor data columns indices double
                Expect.sequenceEqual double expected $"float64, %d{picked} of %d{rows} rows of %d{columns}"
        }
        test "the gather refuses rows outside the data and a destination too small" {
            let data = bytes 10 8
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> Gather.bytesToSingleColumnMajor data 8 [| 0; 10 |] (Array.zeroCreate 16)) "row 10 of 10"
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> Gather.bytesToSingleColumnMajor data 8 [| -1 |] (Array.zeroCreate 8)) "row -1"
            Expect.throwsT<ArgumentException> (fun () -> Gather.bytesToDoubleColumnMajor data 8 [| 0; 1 |] (Array.zeroCreate 15)) "15 < 2 × 8"
        }
        test "Dataset.imagesInto reuses its buffer's arrays, dense and sparse, and holds the images it was given" {
            let rng = Random(5)
            let arrays (m: Matrix<float32>) =
                match m.Storage with
                | :? Storage.SparseCompressedRowMatrixStorage<float32> as s -> box s.Values
                | _ -> box (m.AsColumnMajorArray())
            // random bytes are dense; bytes nine in ten 0 are gathered sparse
            for name, pixels in [ "dense", bytes 50 12; "sparse", Array.init 600 (fun _ -> if rng.Next 10 = 0 then byte (1 + rng.Next 255) else 0uy) ] do
                let d = { Pixels = pixels; Labels = Array.zeroCreate 50; Count = 50; Rows = 3; Columns = 4 }
                let buffer = Linalg.ImageBuffer<float32>()
                let m = Dataset.imagesInto buffer d [| 4; 3; 2; 1; 0 |]
                Expect.equal m.Storage.IsDense (name = "dense") $"{name}: the storage"
                Expect.equal (m.ToArray()) (Array2D.init 5 12 (fun i j -> float32 d.Pixels[(4 - i) * 12 + j] / 255.0f)) $"{name}: the images' values"
                let first = arrays m
                let other = Dataset.imagesInto buffer d [| 1; 2; 3; 4; 5 |]
                Expect.isTrue (obj.ReferenceEquals(arrays other, first)) $"{name}: the second gather reuses the buffer's arrays"
                Expect.equal other[1, 5] (float32 d.Pixels[2 * 12 + 5] / 255.0f) $"{name}: element [1, 5] is image 2's pixel 5"
        }
        test "Dataset.batchesIn reuses its ring: batch k + ring shares batch k's storage, and every batch holds its images" {
            let d = { Pixels = bytes 50 12; Labels = Array.init 50 (fun i -> byte (i % 10)); Count = 50; Rows = 3; Columns = 4 }
            let indices = [ for k in 0 .. 6 -> Array.init 4 (fun i -> (7 * k + i) % 50) ]
            let batches = Dataset.batchesIn 3 (fun gather -> gather ()) d indices |> Seq.map (fun (x: Matrix<float>, t) -> x.Clone(), x.AsColumnMajorArray(), t) |> Array.ofSeq
            for k in 0 .. 6 do
                let x, _, t = batches[k]
                Expect.equal x (Dataset.images d indices[k]) $"batch %d{k}'s images"
                Expect.equal t (Labels.ClassIndices(Dataset.labels d indices[k])) $"batch %d{k}'s labels"
            let storage k = let _, s, _ = batches[k] in s
            Expect.isTrue (obj.ReferenceEquals(storage 0, storage 3)) "batch 3 reuses batch 0's array"
            Expect.isFalse (obj.ReferenceEquals(storage 0, storage 1)) "batch 1 has its own"
        }
        test "an offer drops its job once run or taken back, so a queued offer keeps no arrays alive" {
            // (made in a function of its own, so that no local of the test holds the array)
            let offerOverArray () =
                let big = Array.zeroCreate<float> 100_000
                let offer = Halves.offer false (fun () -> big[0] <- 1.0)
                offer, WeakReference big
            let offer, weak = offerOverArray ()
            offer.Join()
            GC.Collect()
            GC.WaitForPendingFinalizers()
            GC.Collect()
            Expect.isFalse weak.IsAlive "the array the job held is collected after Join, though the offer is alive"
            GC.KeepAlive offer
        }
        test "relu, its mask and the Hadamard product equal their definitions, NaN and signed zeros included" {
            let values = [| -2.5; -0.0; 0.0; 1e-30; -1e-30; 3.0; nan; infinity; -infinity |]
            let x = Matrix<float>.Build.Dense(9, 11, fun i j -> if j = 0 then values[i] else float ((i * 7 + j * 3) % 13) - 6.0)
            let relu = Linalg.relu x
            let mask = Linalg.positive x
            for i in 0 .. x.RowCount - 1 do
              for j in 0 .. x.ColumnCount - 1 do
                let v = x[i, j]
                if Double.IsNaN v then Expect.isTrue (Double.IsNaN relu[i, j]) "relu(NaN) is NaN"
                else Expect.equal relu[i, j] (if v > 0.0 then v else 0.0) $"relu at %d{i},%d{j}"
                Expect.equal mask[i, j] (if v > 0.0 then 1.0 else 0.0) $"mask at %d{i},%d{j}"
            let y = Common.random 4 9 11
            Expect.equal (Linalg.hadamard y mask) (y.PointwiseMultiply mask) "hadamard = MathNet's pointwise product"
            let x32 = x.Map float32
            Expect.equal (Linalg.positive x32) (mask.Map float32) "the float32 mask"
            Expect.equal ((Linalg.relu x32).Map(fun v -> if Single.IsNaN v then 0.0 else float v)) (relu.Map(fun v -> if Double.IsNaN v then 0.0 else float (float32 v))) "the float32 relu"
            Expect.throwsT<ArgumentException> (fun () -> Linalg.hadamard y (Common.random 1 9 10) |> ignore) "shapes must match"
        }
        test "softmaxRows and columnSums equal their definitions within rounding" {
            for rows, columns in [ 1, 1; 3, 10; 100, 10; 17, 33 ] do
                let x = (Common.random (rows + columns) rows columns) * 30.0
                let y = Linalg.softmaxRows x
                for i in 0 .. rows - 1 do
                    let row = x.Row i
                    let e = row.Map(fun v -> exp (v - row.Maximum()))
                    for j in 0 .. columns - 1 do
                        Expect.floatClose Accuracy.veryHigh y[i, j] (e[j] / e.Sum()) $"softmax %d{i},%d{j} of %d{rows}x%d{columns}"
                let sums = Linalg.columnSums x
                for j in 0 .. columns - 1 do
                    Expect.floatClose Accuracy.veryHigh sums[j] (x.Column(j).Sum()) $"column sum %d{j}"
                let y32 = Linalg.softmaxRows (x.Map float32)
                Expect.isLessThan ((y32.Map float - y).Enumerate() |> Seq.map abs |> Seq.max) 1e-6 "float32 softmax"
            let huge = Common.matrix [ [ 1000.0; 1001.0; 999.0 ] ]
            Expect.isFalse ((Linalg.softmaxRows huge).Exists(fun v -> Double.IsNaN v)) "no overflow for large scores"
        }
        test "row broadcasts and column sums of products equal their definitions element by element" {
            for rows, columns in [ 1, 1; 4, 3; 128, 100; 17, 33 ] do
                let x, a = Common.random (rows + 1) rows columns, Common.random (rows + 2) rows columns
                let r = Vector<float>.Build.Dense(columns, fun j -> 0.5 + float j / float columns)
                let b = Vector<float>.Build.Dense(columns, fun j -> float j - 3.0)
                let check name (got: Matrix<float>) (f: int -> int -> float) (close: bool) =
                    for i in 0 .. rows - 1 do
                        for j in 0 .. columns - 1 do
                            if close then Expect.floatClose Accuracy.veryHigh got[i, j] (f i j) $"{name} %d{i},%d{j} of %d{rows}x%d{columns}"
                            else Expect.equal got[i, j] (f i j) $"{name} %d{i},%d{j} of %d{rows}x%d{columns}"
                check "minusRow" (Linalg.minusRow x r) (fun i j -> x[i, j] - r[j]) false
                check "timesRow" (Linalg.timesRow x r) (fun i j -> x[i, j] * r[j]) false
                check "overRow" (Linalg.overRow x r) (fun i j -> x[i, j] / r[j]) false
                check "plusRow" (Linalg.plusRow x r) (fun i j -> x[i, j] + r[j]) false
                check "timesRowPlusRow" (Linalg.timesRowPlusRow x r b) (fun i j -> x[i, j] * r[j] + b[j]) false
                check "plusTimesRow" (Linalg.plusTimesRow a x r) (fun i j -> a[i, j] + x[i, j] * r[j]) true
                let dots = Linalg.columnSumsOfProducts x a
                for j in 0 .. columns - 1 do
                    Expect.floatClose Accuracy.veryHigh dots[j] (Seq.sum (seq { for i in 0 .. rows - 1 -> x[i, j] * a[i, j] })) $"column dot %d{j}"
                let x32, r32 = x.Map float32, r.Map float32
                Expect.equal (Linalg.overRow x32 r32) (Matrix<float32>.Build.Dense(rows, columns, fun i j -> x32[i, j] / r32[j])) "float32 overRow"
            Expect.throwsT<ArgumentException> (fun () -> Linalg.minusRow (Common.random 1 3 4) (Vector<float>.Build.Dense 3) |> ignore) "the row must have a value per column"
        }
        test "Adam's step on arrays equals the book's three lines element by element, float64 and float32" {
            let n = 40000 // over the size that splits the work in halves
            let rnd = Random 5
            let g, m, v = Array.init n (fun _ -> rnd.NextDouble() - 0.5), Array.init n (fun _ -> rnd.NextDouble() - 0.5), Array.init n (fun _ -> rnd.NextDouble())
            let lrT, b1, b2, eps = 0.0031, 0.1, 0.001, 1e-7
            let u, m', v' = Linalg.adam lrT b1 b2 eps g m v
            for i in 0 .. n - 1 do
                let mi = m[i] + b1 * (g[i] - m[i]) // m += (1 - beta1)*(grads - m)
                let vi = v[i] + b2 * (g[i] * g[i] - v[i]) // v += (1 - beta2)*(grads**2 - v), numpy squares exactly
                if m'[i] <> mi || v'[i] <> vi || u[i] <> -(lrT * mi / (sqrt vi + eps)) then failtestf "element %d: %g %g %g" i u[i] m'[i] v'[i]
            let g, m, v = Array.map float32 g, Array.map float32 m, Array.map float32 v
            let lrT, b1, b2, eps = float32 lrT, float32 b1, float32 b2, float32 eps
            let u, m', v' = Linalg.adam lrT b1 b2 eps g m v
            for i in 0 .. n - 1 do
                let mi = m[i] + b1 * (g[i] - m[i])
                let vi = v[i] + b2 * (g[i] * g[i] - v[i])
                if m'[i] <> mi || v'[i] <> vi || u[i] <> -(lrT * mi / (sqrt vi + eps)) then failtestf "float32 element %d: %g %g %g" i u[i] m'[i] v'[i]
            Expect.throwsT<ArgumentException> (fun () -> Linalg.adam lrT b1 b2 eps g (Array.zeroCreate 3) v |> ignore) "lengths must match"
        }
        test "reusingResults: after giveBack the next results of a size take the arrays given back, with the same numbers; before it, and outside, new arrays" {
            let x, w = Common.random 31 40 60, Common.random 32 60 70
            let b = Vector<float>.Build.Dense(70, fun j -> float j / 70.0)
            let x32, w32 = x.Map float32, w.Map float32
            // The references: MathNet's own product and maximum, outside any pool.
            let affineRef, reluRef = x * w + Matrix<float>.Build.Dense(40, 70, fun _ j -> b[j]), (x * w).PointwiseMaximum 0.0
            let arrayOf (m: Matrix<'T>) = m.AsColumnMajorArray()
            let outside = Linalg.times x w
            let seen, again, inside =
                Linalg.reusingResults (fun giveBack ->
                    let first, product = Linalg.affine x w b, Linalg.times x w
                    let second = Linalg.relu product
                    let single = Linalg.times x32 w32
                    Expect.isFalse (obj.ReferenceEquals(arrayOf first, arrayOf second)) "two results before a giveBack: two arrays"
                    Expect.isFalse (obj.ReferenceEquals(arrayOf product, arrayOf second)) "a map's result: not its argument's array"
                    Expect.floatClose Accuracy.high ((first - affineRef).FrobeniusNorm()) 0.0 "x·W + b"
                    Expect.floatClose Accuracy.high ((second - reluRef).FrobeniusNorm()) 0.0 "max(x·W, 0)"
                    let seen = [ arrayOf first; arrayOf product; arrayOf second ]
                    giveBack ()
                    let again = [ Linalg.relu (Linalg.times x w); Linalg.affine x w b ]
                    Expect.floatClose Accuracy.high ((again[0] - reluRef).FrobeniusNorm()) 0.0 "max(x·W, 0) in reused arrays"
                    Expect.floatClose Accuracy.high ((again[1] - affineRef).FrobeniusNorm()) 0.0 "x·W + b in reused arrays"
                    Expect.isLessThan (float ((Linalg.times x32 w32 - x32 * w32).FrobeniusNorm() / (x32 * w32).FrobeniusNorm())) 1e-5 "float32 x·W in a pool of its own type"
                    Expect.isFalse (obj.ReferenceEquals(arrayOf single, arrayOf (Linalg.times x32 w32))) "float32 taken before no giveBack: new"
                    seen, again, Threading.Tasks.Task.Run(fun () -> Linalg.times x w).Result)
            let wasSeen (m: Matrix<float>) = seen |> List.exists (fun a -> obj.ReferenceEquals(a, arrayOf m))
            Expect.equal (again |> List.filter wasSeen |> List.length) 2 "both results after giveBack took the arrays given back"
            Expect.isFalse (wasSeen inside) "another thread does not take from this thread's pool"
            Expect.isFalse (wasSeen (Linalg.times x w)) "after the scope, a new array"
            Expect.isFalse (wasSeen outside) "before the scope, a new array"
        }
        test "a large result (4 MB or more) takes only an array that nothing holds any more, and its numbers are right" {
            // xᵀ·d for a sparse x (MNIST's first 100 images, 784 pixels each) and a dense d with 1,001
            // columns, in float64: 784 × 1001 × 8 bytes, a wide first layer's weight gradient (a
            // size no other test makes, so no other test takes from its bin).
            let train, _ = Common.mnist.Force()
            let x: Matrix<float> = Dataset.images train [| 0 .. 99 |]
            let dense = Matrix<float>.Build.DenseOfMatrix x
            let d1, d2 = Common.random 51 100 1001, Common.random 52 100 1001
            // The references: MathNet's own product on the dense copy.
            let reference1, reference2 = dense.TransposeThisAndMultiply d1, dense.TransposeThisAndMultiply d2
            let arrayOf (m: Matrix<float>) = m.AsColumnMajorArray()
            let held = Linalg.transposeTimes x d1
            // A result dropped at once, tracked through its finalization (a long weak reference).
            let dropped = droppedProduct x d1
            GC.Collect()
            GC.WaitForPendingFinalizers()
            let next = Linalg.transposeTimes x d2
            Expect.isTrue (obj.ReferenceEquals(dropped.Target, arrayOf next)) "the dropped result's array is taken again"
            Expect.isLessThan (Common.maxAbsDiff next reference2) 1e-12 "xᵀ·d2 in the reused array (which held xᵀ·d1)"
            for _ in 1..3 do
                let other = Linalg.transposeTimes x d2
                Expect.isFalse (obj.ReferenceEquals(arrayOf other, arrayOf held) || obj.ReferenceEquals(arrayOf other, arrayOf next)) "an array still held is not taken"
                GC.Collect()
                GC.WaitForPendingFinalizers()
            Expect.isLessThan (Common.maxAbsDiff held reference1) 1e-12 "the held result keeps its numbers"
            Expect.isLessThan (Common.maxAbsDiff next reference2) 1e-12 "so does the other"
        }
    ]

/// Settings with the managed kernel and two threads (the helper in use) or one (no helper).
let private managed threads = Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Auto threads

[<Tests>]
let halves =
    testList "halves" [
        test "a product split over two threads equals the whole product on one, on every backend" {
            let a, b = Common.random 21 100 784, Common.random 22 784 50
            let dout = Common.random 23 100 50
            for backend in [ Linalg.Backend.Managed; (if OpenBlas.isAvailable () then Linalg.Backend.OpenBlas else Linalg.Backend.Managed) ] do
                let on threads f = Linalg.using (Linalg.settings backend Linalg.InputStorage.Auto threads) f
                let products () = [ Linalg.times a b; Linalg.transposeTimes a dout; Linalg.timesTranspose dout b; Linalg.affine a b (b.Row 0) ]
                let whole = on 1 products
                on 2 (fun () ->
                    for _ in 1 .. 20 do // the helper takes some halves and its caller others
                        List.iter2 (fun (s: Matrix<float>) w -> Expect.isLessThan (Common.maxAbsDiff s w) 1e-12 $"{backend}: split equals whole") (products ()) whole)
                let w32 = on 2 (fun () -> Linalg.transposeTimes (a.Map float32) (dout.Map float32))
                let whole32 = on 1 (fun () -> Linalg.transposeTimes (a.Map float32) (dout.Map float32))
                Expect.isLessThan ((whole32 - w32).Enumerate() |> Seq.map abs |> Seq.max) 1e-4f $"{backend}: float32"
        }
        test "both halves run, an exception in either reaches the caller, and the helper serves the next product" {
            Linalg.using (managed 2) (fun () ->
                let ran = Array.zeroCreate 2
                Halves.run (fun () -> ran[0] <- 1) (fun () -> ran[1] <- 1)
                Expect.equal ran [| 1; 1 |] "both halves"
                Expect.throwsT<InvalidOperationException> (fun () -> Halves.run ignore (fun () -> invalidOp "second")) "the second half's exception"
                Expect.throwsT<ArgumentException> (fun () -> Halves.run (fun () -> invalidArg "x" "first") ignore) "the first half's exception"
                let sum = ref 0
                Halves.run (fun () -> lock sum (fun () -> sum.Value <- sum.Value + 1)) (fun () -> lock sum (fun () -> sum.Value <- sum.Value + 2))
                Expect.equal sum.Value 3 "the next product after the failures")
        }
        test "an offered job runs once, by the helper or taken back by its owner, and its exception reaches Join" {
            for threads in [ 2; 1 ] do
                Linalg.using (managed threads) (fun () ->
                    let counts: int[] = Array.zeroCreate 200
                    let offers = [ for i in 0 .. 199 -> Halves.offer (i % 2 = 0) (fun () -> Threading.Interlocked.Increment(&counts[i]) |> ignore) ]
                    for o in offers do o.Join()
                    Expect.isTrue (counts |> Array.forall ((=) 1)) $"every job ran exactly once, %d{threads} threads"
                    let failing = Halves.offer false (fun () -> invalidOp "gather failed")
                    Expect.throwsT<InvalidOperationException> (fun () -> failing.Join()) $"the job's exception, %d{threads} threads")
        }
        test "a thread awaiting background work may compute halves of its products: the results are the same" {
            Linalg.using (managed 2) (fun () ->
                let a, b = Common.random 31 300 784, Common.random 32 784 50
                let expected = Linalg.times a b
                for _ in 1 .. 5 do
                    let task = Halves.inBackground (fun () -> [ for _ in 1 .. 20 -> Linalg.times a b ])
                    for product in Halves.await task do
                        Expect.isLessThan (Common.maxAbsDiff product expected) 1e-12 "each background product"
                let failing = Halves.inBackground (fun () -> failwith "evaluation failed": int)
                Expect.throwsT<AggregateException> (fun () -> Halves.await failing |> ignore) "its exception")
        }
        test "background work returns its result or its exception, with the helper on or off" {
            for threads in [ 2; 1 ] do
                Linalg.using (managed threads) (fun () ->
                    let results = [ for i in 1 .. 5 -> Halves.inBackground (fun () -> i * i) ]
                    Expect.equal [ for t in results -> t.Result ] [ 1; 4; 9; 16; 25 ] $"results, %d{threads} threads"
                    let failing = Halves.inBackground (fun () -> failwith "evaluation failed": int)
                    Expect.throwsT<AggregateException> (fun () -> failing.Result |> ignore) $"exception, %d{threads} threads")
        }
        test "work on the helper runs under the settings of the code that offered it" {
            // Distinct settings (storage differs), each in effect on its own thread at once.
            let choices = [ for storage in [ Linalg.InputStorage.Dense; Linalg.InputStorage.Sparse; Linalg.InputStorage.Auto ] do
                              for threads in [ 2; 1 ] -> Linalg.settings Linalg.Backend.Managed storage threads ]
            let seen (settings: Linalg.Settings) =
                Linalg.using settings (fun () ->
                    [ for _ in 1 .. 50 do
                        let offered = ref Unchecked.defaultof<Linalg.Settings>
                        let o = Halves.offer (Random.Shared.Next 2 = 0) (fun () -> offered.Value <- Linalg.current ())
                        let background = Halves.inBackground Linalg.current
                        // on the helper with its own products' halves: a half may be taken by this
                        // thread, waiting in `await`, which must run it under the helper job's settings
                        let halves = Halves.inBackground (fun () -> let seen = Collections.Concurrent.ConcurrentBag() in Halves.run (fun () -> seen.Add(Linalg.current ())) (fun () -> seen.Add(Linalg.current ())); List.ofSeq seen)
                        o.Join()
                        yield offered.Value
                        yield Halves.await background
                        yield! Halves.await halves ])
            let all = choices |> List.map (fun s -> Threading.Tasks.Task.Run(fun () -> s, seen s)) |> Array.ofList |> Threading.Tasks.Task.WhenAll
            for settings, seen in all.Result do
                Expect.all seen (fun s -> s = settings) $"every job of the code under {settings} saw those settings"
        }
    ]
