/// The sparse input path: the compressed-row gather and the products that skip zero pixels
/// (Backend/Sparse.fs), each against its definition, and through Linalg and a training step
/// against the dense path, in float32 and float64.
module SparseTests

open System
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Backprop.Core.Backend

/// rows × columns bytes, about `zeros` of them 0 (the rest 1-255), from a seed.
let private sparseBytes (seed: int) rows columns (zeros: float) =
    let rng = Random(seed)
    Array.init (rows * columns) (fun _ -> if rng.NextDouble() < zeros then 0uy else byte (1 + rng.Next 255))

/// A random m × k matrix with about `zeros` of its entries 0, as compressed rows.
let private compressed (seed: int) m k (zeros: float) =
    let rng = Random(seed)
    let dense = Array2D.init m k (fun _ _ -> if rng.NextDouble() < zeros then 0.0 else rng.NextDouble() * 2.0 - 1.0)
    let rowPointers = Array.zeroCreate (m + 1)
    let columns, values = ResizeArray(), ResizeArray()
    for i in 0 .. m - 1 do
        for j in 0 .. k - 1 do
            if dense[i, j] <> 0.0 then
                columns.Add j
                values.Add dense[i, j]
        rowPointers[i + 1] <- columns.Count
    dense, rowPointers, columns.ToArray(), values.ToArray()

/// Column-major values of a 2-D array.
let private columnMajor (a: float[,]) = Array.init a.Length (fun idx -> a[idx % Array2D.length1 a, idx / Array2D.length1 a])

/// Shapes (m, k, n): empty rows and tiny sizes, n around the vector width and past 8 vectors
/// (a second block of columns), k past several 16 KB tiles, the book's 100 × 784 × 50 (large
/// enough to go in halves of its rows on two threads) and 60 × 800 × 130 (in halves of its
/// columns).
let private shapes = [ 1, 1, 1; 3, 5, 7; 9, 17, 8; 20, 33, 9; 7, 300, 70; 40, 1000, 13; 100, 784, 50; 5, 8, 130; 60, 800, 130 ]

/// The widths of the issue "Speed that holds as the work grows": around the vector width, the
/// book's 50, and hidden layers of one to 32 panels of 8 vectors.
let private widths = [ 1; 7; 8; 9; 50; 300; 1000; 2000 ]

[<Tests>]
let tests =
    testList "sparse" [
        test "gatherRows gives each row's nonzero bytes in column order, as v / 255, packed or one by one" {
            for rows, columns in [ 1, 1; 30, 784; 17, 13; 9, 64; 5, 100 ] do
                let data = sparseBytes (rows + columns) rows columns 0.8
                let indices = Array.init (2 * rows) (fun i -> (i * 7) % rows)
                let table = Array.init 256 (fun v -> float32 v / 255.0f)
                let rowPointers = Array.zeroCreate (indices.Length + 1)
                let limit = indices.Length * columns
                // 8 entries of room past the limit let every row be packed 8 bytes at a time
                for room in [ 0; 8 ] do
                let ci, vs = Array.zeroCreate (limit + room), Array.zeroCreate (limit + room)
                let nnz = Sparse.gatherRows data columns indices rowPointers ci vs limit
                let expected = [| for i in indices do for j in 0 .. columns - 1 do if data[i * columns + j] <> 0uy then yield j, table[int data[i * columns + j]] |]
                Expect.equal nnz expected.Length $"%d{rows}x%d{columns}: the number of nonzeros"
                Expect.equal (Array.zip ci[.. nnz - 1] vs[.. nnz - 1]) expected $"%d{rows}x%d{columns}: columns and values"
                for r in 0 .. indices.Length - 1 do
                    let count = data[indices[r] * columns .. indices[r] * columns + columns - 1] |> Array.filter ((<>) 0uy) |> Array.length
                    Expect.equal (rowPointers[r + 1] - rowPointers[r]) count $"%d{rows}x%d{columns}: row %d{r}'s entries"
        }
        test "gatherRows stops at the limit with -1, and refuses rows outside the data or too small arrays" {
            let data = sparseBytes 1 10 40 0.5
            let nonzero = data |> Array.filter ((<>) 0uy) |> Array.length
            let gather limit = Sparse.gatherRows data 40 [| 0 .. 9 |] (Array.zeroCreate 11) (Array.zeroCreate 400) (Array.zeroCreate<float> 400) limit
            Expect.equal (gather nonzero) nonzero "exactly at the limit"
            Expect.equal (gather (nonzero - 1)) -1 "one past the limit"
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> Sparse.gatherRows data 40 [| 10 |] (Array.zeroCreate 2) (Array.zeroCreate 40) (Array.zeroCreate<float> 40) 40 |> ignore) "row 10 of 10"
            Expect.throwsT<ArgumentException> (fun () -> Sparse.gatherRows data 40 [| 0 |] (Array.zeroCreate 2) (Array.zeroCreate 10) (Array.zeroCreate<float> 40) 40 |> ignore) "column indices too short"
        }
        test "RowGather.sparseRows gives each row's nonzero values in column order (-0.0 left out, NaN kept), packed or one by one, float64 and float32" {
            for rows, inputs in [ 1, 1; 3, 5; 7, 13; 2, 8; 4, 9; 5, 100; 30, 784 ] do
                let rng = Random(rows * 1000 + inputs)
                let values =
                    Array.init (rows * inputs) (fun _ ->
                        match rng.Next 20 with
                        | 0 -> -0.0
                        | 1 -> nan
                        | k when k < 16 -> 0.0
                        | _ -> rng.NextDouble() * 2.0 - 1.0)
                // the definition: each row's values v <> 0, with their columns, row after row
                let expected = [| for i in 0 .. rows - 1 do for j in 0 .. inputs - 1 do if values[i * inputs + j] <> 0.0 then yield j, values[i * inputs + j] |]
                let perRow = Array.init rows (fun i -> values[i * inputs .. i * inputs + inputs - 1] |> Array.filter (fun v -> v <> 0.0) |> Array.length)
                let limit = rows * inputs
                // without room past the limit one value at a time; with RowGather.Room, packed
                for room in [ 0; RowGather.Room ] do
                    // got and want as bits (NaN equals NaN), float32 values rounded as the input was
                    let check (label: string) (nnz: int) (rowPointers: int[]) (columns: int[]) (got: int64[]) (want: int64[]) =
                        Expect.equal nnz expected.Length $"%s{label} %d{rows}x%d{inputs} room %d{room}: the number of nonzeros"
                        Expect.equal columns[.. nnz - 1] (Array.map fst expected) $"%s{label} %d{rows}x%d{inputs} room %d{room}: columns"
                        Expect.equal got[.. nnz - 1] want $"%s{label} %d{rows}x%d{inputs} room %d{room}: values, bit for bit"
                        Expect.equal (Array.init rows (fun i -> rowPointers[i + 1] - rowPointers[i])) perRow $"%s{label} %d{rows}x%d{inputs} room %d{room}: each row's entries"
                    let rowPointers, columns, kept = Array.zeroCreate (rows + 1), Array.zeroCreate (limit + room), Array.zeroCreate<float> (limit + room)
                    let nnz = RowGather.sparseRows (ReadOnlySpan values) inputs rows rowPointers columns kept limit
                    check "float64" nnz rowPointers columns (Array.map BitConverter.DoubleToInt64Bits kept) (expected |> Array.map (snd >> BitConverter.DoubleToInt64Bits))
                    let values32 = Array.map float32 values
                    let rowPointers32, columns32, kept32 = Array.zeroCreate (rows + 1), Array.zeroCreate (limit + room), Array.zeroCreate<float32> (limit + room)
                    let nnz32 = RowGather.sparseRows (ReadOnlySpan values32) inputs rows rowPointers32 columns32 kept32 limit
                    let bits32 (v: float32) = int64 (BitConverter.SingleToInt32Bits v)
                    check "float32" nnz32 rowPointers32 columns32 (Array.map bits32 kept32) (expected |> Array.map (snd >> float32 >> bits32))
        }
        test "RowGather.sparseRows stops at the limit with -1, and denseColumnMajor is the row-major to column-major transpose, float64 and float32" {
            let rng = Random(7)
            let values = Array.init (10 * 40) (fun _ -> if rng.Next 2 = 0 then 0.0 else rng.NextDouble())
            let nonzero = values |> Array.filter ((<>) 0.0) |> Array.length
            for room in [ 0; RowGather.Room ] do
                let gather limit = RowGather.sparseRows (ReadOnlySpan values) 40 10 (Array.zeroCreate 11) (Array.zeroCreate (400 + room)) (Array.zeroCreate<float> (400 + room)) limit
                let gather32 limit = RowGather.sparseRows (ReadOnlySpan(Array.map float32 values)) 40 10 (Array.zeroCreate 11) (Array.zeroCreate (400 + room)) (Array.zeroCreate<float32> (400 + room)) limit
                Expect.equal (gather nonzero, gather32 nonzero) (nonzero, nonzero) $"exactly at the limit, room %d{room}"
                Expect.equal (gather (nonzero - 1), gather32 (nonzero - 1)) (-1, -1) $"one past the limit, room %d{room}"
                Expect.equal (gather 0, gather32 0) (-1, -1) $"a limit of 0, room %d{room}"
            Expect.throwsT<ArgumentException> (fun () -> RowGather.sparseRows (ReadOnlySpan values) 40 11 (Array.zeroCreate 12) (Array.zeroCreate 440) (Array.zeroCreate<float> 440) 440 |> ignore) "11 rows of 40 in 400 values"
            Expect.throwsT<ArgumentException> (fun () -> RowGather.sparseRows (ReadOnlySpan values) 40 10 (Array.zeroCreate 11) (Array.zeroCreate 10) (Array.zeroCreate<float> 400) 400 |> ignore) "column indices too short"
            for rows, inputs in [ 1, 1; 3, 5; 8, 8; 9, 17; 16, 12; 100, 784 ] do
                let values = Array.init (rows * inputs) (fun k -> float k + 0.5)
                let expected = Array.init (rows * inputs) (fun idx -> values[(idx % rows) * inputs + idx / rows])
                let dense = Array.zeroCreate (rows * inputs)
                RowGather.denseColumnMajor (ReadOnlySpan values) inputs rows dense
                Expect.equal dense expected $"float64 %d{rows}x%d{inputs}"
                let dense32 = Array.zeroCreate (rows * inputs)
                RowGather.denseColumnMajor (ReadOnlySpan(Array.map float32 values)) inputs rows dense32
                Expect.equal dense32 (Array.map float32 expected) $"float32 %d{rows}x%d{inputs}"
        }
        test "Api.ProbabilitiesOfRows on 1,000 MNIST test images equals the book's forward pass written out naively, float64, in every input storage" {
            let _, test = Common.mnist.Force()
            let n, inputs = 1000, test.PixelCount
            let pixels = Array.init (n * inputs) (fun k -> float test.Pixels[k] / 255.0)
            // a model with larger weights than the book's 0.01 (scores of several units, so the
            // softmax is far from uniform) and a bias
            let model: Model<float> = Network.init 3 0.1 Training.bookNetwork
            let model = { model with Params = model.Params |> List.map (function Params.Affine p -> Params.Affine { p with b = p.b.Map(fun v -> v + 0.1) } | p -> p) }
            let W1, b1, W2, b2 =
                match model.Params |> List.choose (function Params.Affine p -> Some p | _ -> None) with
                | [ a; b ] -> a.W, a.b, b.W, b.b
                | _ -> failwith "two Affine layers"
            // affine, ReLU, affine, softmax exp(a - max) / Σ exp(a - max), one sample at a time in loops
            let expected =
                [| for i in 0 .. n - 1 do
                       let h = Array.init 50 (fun j -> max 0.0 (b1[j] + Seq.sum (seq { for p in 0 .. inputs - 1 -> pixels[i * inputs + p] * W1[p, j] })))
                       let a = Array.init 10 (fun c -> b2[c] + Seq.sum (seq { for j in 0 .. 49 -> h[j] * W2[j, c] }))
                       let m = Array.max a
                       let e = a |> Array.map (fun v -> exp (v - m))
                       yield! e |> Array.map (fun v -> v / Array.sum e) |]
            for storage in [ Linalg.InputStorage.Auto; Linalg.InputStorage.Sparse; Linalg.InputStorage.Dense ] do
                for backend in [ Linalg.Backend.Managed; Linalg.Backend.Auto ] do
                    let got = Linalg.using (Linalg.settings backend storage 1) (fun () -> Interop.Api.ProbabilitiesOfRows(model, ReadOnlySpan pixels, n))
                    Expect.equal got.Length expected.Length "count × classes"
                    let worst = Array.fold2 (fun w u v -> max w (abs (u - v))) 0.0 got expected
                    Expect.isLessThan worst 1e-12 $"%A{backend}, %A{storage}: the largest difference"
        }
        test "mulAddRow equals A · W + bias, and mulTN equals Aᵀ · D, in float64 and float32, for every shape" {
            for m, k, n in shapes do
                let a, rowPointers, columns, values = compressed (m * k + n) m k 0.8
                let rng = Random(m + n)
                let W = Array.init (k * n) (fun _ -> rng.NextDouble() - 0.5)
                let bias = Array.init n (fun _ -> rng.NextDouble())
                let D = Array.init (m * n) (fun _ -> rng.NextDouble() - 0.5)
                let A = Matrix<float>.Build.DenseOfArray a
                let expected = (A * Matrix<float>.Build.Dense(k, n, W)).ToColumnMajorArray() |> Array.mapi (fun idx v -> v + bias[idx / m])
                let expectedTN = (A.TransposeThisAndMultiply(Matrix<float>.Build.Dense(m, n, D))).ToColumnMajorArray()
                let out, outTN = Array.zeroCreate (m * n), Array.zeroCreate (k * n)
                Sparse.mulAddRow m k rowPointers columns values W n bias out
                Sparse.mulTN m k rowPointers columns values D n outTN
                let worst (x: float[]) (y: float[]) = Array.fold2 (fun w u v -> max w (abs (u - v))) 0.0 x y
                Expect.isLessThan (worst out expected) 1e-12 $"float64 A·W + b, %d{m}x%d{k}x%d{n}"
                Expect.isLessThan (worst outTN expectedTN) 1e-12 $"float64 Aᵀ·D, %d{m}x%d{k}x%d{n}"
                let out32, outTN32 = Array.zeroCreate (m * n), Array.zeroCreate (k * n)
                Sparse.mulAddRow m k rowPointers columns (Array.map float32 values) (Array.map float32 W) n (Array.map float32 bias) out32
                Sparse.mulTN m k rowPointers columns (Array.map float32 values) (Array.map float32 D) n outTN32
                let tolerance = 1e-5 * sqrt (float k)
                Expect.isLessThan (worst (Array.map float out32) expected) tolerance $"float32 A·W + b, %d{m}x%d{k}x%d{n}"
                Expect.isLessThan (worst (Array.map float outTN32) expectedTN) (1e-5 * sqrt (float m)) $"float32 Aᵀ·D, %d{m}x%d{k}x%d{n}"
                // no bias: A · W alone
                Sparse.mulAddRow m k rowPointers columns values W n Array.empty out
                Expect.isLessThan (worst out ((A * Matrix<float>.Build.Dense(k, n, W)).ToColumnMajorArray())) 1e-12 $"float64 A·W, %d{m}x%d{k}x%d{n}"
        }
        test "the products refuse entries outside the matrix and arrays shorter than the shapes" {
            let _, rowPointers, columns, values = compressed 5 3 10 0.5
            let bad = Array.copy columns
            bad[0] <- 10
            let W, out = Array.zeroCreate<float> 40, Array.zeroCreate 12
            Expect.throwsT<ArgumentException> (fun () -> Sparse.mulAddRow 3 10 rowPointers bad values W 4 Array.empty out) "column 10 of 10"
            Expect.throwsT<ArgumentException> (fun () -> Sparse.mulTN 3 10 rowPointers columns values (Array.zeroCreate 11) 4 W) "D of 11 values for 3 × 4"
            let pointers = Array.copy rowPointers
            pointers[1] <- -1
            Expect.throwsT<ArgumentException> (fun () -> Sparse.mulAddRow 3 10 pointers columns values W 4 Array.empty out) "a negative row pointer"
        }
        test "Linalg's products on a sparse matrix equal those on the same matrix dense, float64 and float32" {
            let train, _ = Common.mnist.Force()
            let x: Matrix<float> = Dataset.images train [| 0 .. 99 |]
            Expect.isFalse x.Storage.IsDense "MNIST images are gathered sparse"
            let dense = Matrix<float>.Build.DenseOfMatrix x
            let w, b, dout = Common.random 5 784 50, Vector<float>.Build.Dense(50, fun j -> float j / 10.0), Common.random 6 100 50
            Expect.isLessThan (Common.maxAbsDiff (Linalg.affine x w b) (Linalg.affine dense w b)) 1e-12 "x·W + b"
            Expect.isLessThan (Common.maxAbsDiff (Linalg.times x w) (Linalg.times dense w)) 1e-12 "x·W"
            Expect.isLessThan (Common.maxAbsDiff (Linalg.transposeTimes x dout) (Linalg.transposeTimes dense dout)) 1e-12 "xᵀ·dout"
            Expect.isLessThan (Common.maxAbsDiff (Linalg.timesTranspose x (Common.random 7 50 784)) (Linalg.timesTranspose dense (Common.random 7 50 784))) 1e-12 "x·Bᵀ (MathNet's sparse product)"
            let x32: Matrix<float32> = Dataset.images train [| 0 .. 99 |]
            let w32, b32 = w.Map float32, b.Map float32
            let got, want = Linalg.affine x32 w32 b32, Linalg.affine (Matrix<float32>.Build.DenseOfMatrix x32) w32 b32
            Expect.isLessThan ((got - want).Enumerate() |> Seq.map abs |> Seq.max) 1e-4f "float32 x·W + b (sums of about 150 products near 1)"
        }
        test "a training step on sparse images equals the step on the same images dense" {
            let train, _ = Common.mnist.Force()
            let indices = [| 100 .. 199 |]
            let t = Labels.ClassIndices(Dataset.labels train indices)
            let x64: Matrix<float> = Dataset.images train indices
            let model64: Model<float> = Network.init 42 0.01 Training.bookNetwork
            let sparse64, loss64 = Training.sgdStep 0.5 model64 (x64, t)
            let dense64, lossDense64 = Training.sgdStep 0.5 model64 (Matrix<float>.Build.DenseOfMatrix x64, t)
            Expect.floatClose Accuracy.veryHigh loss64 lossDense64 "float64 loss"
            for p, q in List.zip sparse64.Params dense64.Params do
                match p, q with
                | Params.Affine p, Params.Affine q -> Expect.isLessThan (Common.maxAbsDiff p.W q.W) 1e-14 "float64 W after the step"
                | _ -> ()
            let x32: Matrix<float32> = Dataset.images train indices
            let model32: Model<float32> = Network.init 42 0.01 Training.bookNetwork
            let sparse32, loss32 = Training.sgdStep 0.5f model32 (x32, Labels.ClassIndices(Dataset.labels train indices))
            let dense32, lossDense32 = Training.sgdStep 0.5f model32 (Matrix<float32>.Build.DenseOfMatrix x32, Labels.ClassIndices(Dataset.labels train indices))
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } (float loss32) (float lossDense32) "float32 loss"
            match sparse32.Params[0], dense32.Params[0] with
            | Params.Affine p, Params.Affine q -> Expect.isLessThan ((p.W - q.W).Enumerate() |> Seq.map abs |> Seq.max) 1e-7f "float32 W1 after the step"
            | _ -> failtest "W1"
        }
        test "panels of columns: the sparse kernels equal the dense definitions at widths 1 to 2000 (batch 100, MNIST-like)" {
            // 81% zeros as MNIST; widths around the vector width, one and several panels of 8 vectors
            let m, k = 100, 784
            let a, rowPointers, columns, values = compressed 19 m k 0.81
            for n in widths do
                let rng = Random(n)
                let W = Array.init (k * n) (fun _ -> rng.NextDouble() - 0.5)
                let bias = Array.init n (fun _ -> rng.NextDouble())
                let D = Array.init (m * n) (fun _ -> rng.NextDouble() - 0.5)
                // the definitions, summed in float64 over the nonzeros in column order
                let expected = Array.zeroCreate (m * n)
                let expectedTN = Array.zeroCreate (k * n)
                for j in 0 .. n - 1 do
                    for i in 0 .. m - 1 do
                        let mutable sum = bias[j]
                        for e in rowPointers[i] .. rowPointers[i + 1] - 1 do
                            sum <- sum + values[e] * W[j * k + columns[e]]
                            expectedTN[j * k + columns[e]] <- expectedTN[j * k + columns[e]] + values[e] * D[j * m + i]
                        expected[j * m + i] <- sum
                let out, outTN = Array.zeroCreate (m * n), Array.zeroCreate (k * n)
                Sparse.mulAddRow m k rowPointers columns values W n bias out
                Sparse.mulTN m k rowPointers columns values D n outTN
                let worst (x: float[]) (y: float[]) = Array.fold2 (fun w u v -> max w (abs (u - v))) 0.0 x y
                Expect.isLessThan (worst out expected) 1e-12 $"float64 A·W + b, width %d{n}"
                Expect.isLessThan (worst outTN expectedTN) 1e-12 $"float64 Aᵀ·D, width %d{n}"
                let out32, outTN32 = Array.zeroCreate (m * n), Array.zeroCreate (k * n)
                Sparse.mulAddRow m k rowPointers columns (Array.map float32 values) (Array.map float32 W) n (Array.map float32 bias) out32
                Sparse.mulTN m k rowPointers columns (Array.map float32 values) (Array.map float32 D) n outTN32
                // 1e-5 relative to the sum of the magnitudes added
                let scale = 1.0 + float (rowPointers[m] / m)
                Expect.isLessThan (worst (Array.map float out32) expected) (1e-5 * scale) $"float32 A·W + b, width %d{n}"
                Expect.isLessThan (worst (Array.map float outTN32) expectedTN) (1e-5 * float m) $"float32 Aᵀ·D, width %d{n}"
        }
        test "withFixedWeights (W read from one row-major copy): A·W + b equals the definition and, bit for bit, the tile-by-tile product, widths 1 to 2000, every shape" {
            let m, k = 100, 784
            let _, rowPointers, columns, values = compressed 23 m k 0.81
            let cases =
                [ for n in widths -> m, k, n, rowPointers, columns, values ]
                @ [ for (m, k, n) in shapes ->
                        let _, rp, cs, vs = compressed (m + k + n) m k 0.7
                        m, k, n, rp, cs, vs ]
            for (m, k, n, rowPointers, columns, values) in cases do
                let rng = Random(n + 1)
                let W = Array.init (k * n) (fun _ -> rng.NextDouble() - 0.5)
                let bias = Array.init n (fun _ -> rng.NextDouble())
                let expected = Array.init (m * n) (fun idx ->
                    let i, j = idx % m, idx / m
                    let mutable sum = bias[j]
                    for e in rowPointers[i] .. rowPointers[i + 1] - 1 do
                        sum <- sum + values[e] * W[j * k + columns[e]]
                    sum)
                let plain, fixed1, fixed2 = Array.zeroCreate (m * n), Array.zeroCreate (m * n), Array.zeroCreate (m * n)
                Sparse.mulAddRow m k rowPointers columns values W n bias plain
                // twice in one scope: the copy made by the first product, read by the second
                Sparse.withFixedWeights (fun () ->
                    Sparse.mulAddRow m k rowPointers columns values W n bias fixed1
                    Sparse.mulAddRow m k rowPointers columns values W n bias fixed2)
                let worst = Array.fold2 (fun w u v -> max w (abs (u - v))) 0.0 fixed2 expected
                Expect.isLessThan worst 1e-12 $"float64 A·W + b from the copy, %d{m} × %d{k} × %d{n}"
                Expect.equal fixed1 plain $"float64 first product in the scope = tile by tile, %d{m} × %d{k} × %d{n}"
                Expect.equal fixed2 plain $"float64 second product in the scope = tile by tile, %d{m} × %d{k} × %d{n}"
                let W32, b32, v32 = Array.map float32 W, Array.map float32 bias, Array.map float32 values
                let plain32, fixed32 = Array.zeroCreate (m * n), Array.zeroCreate (m * n)
                Sparse.mulAddRow m k rowPointers columns v32 W32 n b32 plain32
                Sparse.withFixedWeights (fun () ->
                    Sparse.mulAddRow m k rowPointers columns v32 W32 n b32 fixed32
                    Sparse.mulAddRow m k rowPointers columns v32 W32 n b32 fixed32)
                Expect.equal fixed32 plain32 $"float32 from the copy = tile by tile, %d{m} × %d{k} × %d{n}"
            // outside the scope W is read afresh: a W changed in place gives the new product
            let n = 9
            let W = Array.init (k * n) (fun i -> float (i % 7) - 3.0)
            let before, after = Array.zeroCreate (m * n), Array.zeroCreate (m * n)
            Sparse.withFixedWeights (fun () -> Sparse.mulAddRow m k rowPointers columns values W n Array.empty before)
            for i in 0 .. W.Length - 1 do W[i] <- 2.0 * W[i]
            Sparse.withFixedWeights (fun () -> Sparse.mulAddRow m k rowPointers columns values W n Array.empty after)
            Expect.equal after (Array.map (fun x -> 2.0 * x) before) "a new scope copies W again"
            // inside one scope the products read the copy made at the first (the contract: W
            // does not change there), which shows the copy is what they read
            let first, second = Array.zeroCreate (m * n), Array.zeroCreate (m * n)
            Sparse.withFixedWeights (fun () ->
                Sparse.mulAddRow m k rowPointers columns values W n Array.empty first
                for i in 0 .. W.Length - 1 do W[i] <- 0.5 * W[i]
                Sparse.mulAddRow m k rowPointers columns values W n Array.empty second)
            Expect.equal second first "the second product of the scope read the copy"
        }
        test "the cost model keeps MNIST sparse at the book's width and sends what sparse cannot win to dense" {
            // a batch of 100 MNIST images has about 15,000 nonzeros (19%)
            for n in [ 7; 8; 9; 50; 300; 1000; 2000 ] do
                Expect.isTrue (Linalg.sparsePays 100 784 15_000 n 8) $"float32, 19%% nonzero, width %d{n}: sparse"
                Expect.isTrue (Linalg.sparsePays 100 784 15_000 n 4) $"float64, 19%% nonzero, width %d{n}: sparse"
                Expect.isFalse (Linalg.sparsePays 100 784 39_200 n 8) $"float32, 50%% nonzero, width %d{n}: dense"
            Expect.isFalse (Linalg.sparsePays 100 784 15_000 1 8) "width 1: a whole vector per nonzero for one column, dense"
        }
        test "train's account of the first layer's kernels is the decision of most MNIST batches, widths 1 to 12 and 50 to 2000" {
            // Linalg.firstProductsSparse (what train prints) judges from the first 1,000 images;
            // each product judges its own batch (sparsePays on its nonzeros): over the 600
            // sequential batches of 100 training images, the majority must agree with it.
            let train, _ = Common.mnist.Force()
            let nonzeros =
                Array.init 600 (fun b ->
                    let block = ReadOnlySpan(train.Pixels, b * 100 * 784, 100 * 784)
                    block.Length - MemoryExtensions.Count(block, 0uy))
            let majority n w = 2 * (nonzeros |> Array.filter (fun z -> Linalg.sparsePays 100 784 z n w) |> Array.length) > nonzeros.Length
            Linalg.using (Linalg.settings Linalg.Backend.Auto Linalg.InputStorage.Auto 2) (fun () ->
                for n in [ 1 .. 12 ] @ [ 50; 300; 1000; 2000 ] do
                    Expect.equal (Linalg.firstProductsSparse<float32> train.Pixels 784 100 n) (majority n 8) $"float32, width %d{n}"
                    Expect.equal (Linalg.firstProductsSparse<float> train.Pixels 784 100 n) (majority n 4) $"float64, width %d{n}")
            Expect.isFalse (Linalg.using (Linalg.settings Linalg.Backend.Auto Linalg.InputStorage.Auto 2) (fun () -> Linalg.firstProductsSparse<float32> train.Pixels 784 100 2)) "float32, 2 outputs: dense"
            Expect.isTrue (Linalg.using (Linalg.settings Linalg.Backend.Auto Linalg.InputStorage.Sparse 2) (fun () -> Linalg.firstProductsSparse<float32> train.Pixels 784 100 2)) "InputStorage.Sparse: the sparse kernels at any width"
            Expect.isFalse (Linalg.using (Linalg.settings Linalg.Backend.Auto Linalg.InputStorage.Dense 2) (fun () -> Linalg.firstProductsSparse<float32> train.Pixels 784 100 50)) "InputStorage.Dense: no sparse storage"
        }
        test "whichever kernel Linalg picks, x·W + b and xᵀ·dout equal the dense products, widths 1 to 2000" {
            let train, _ = Common.mnist.Force()
            let indices = [| 0 .. 99 |]
            let gather storage : Matrix<'T> = Linalg.using (Linalg.settings Linalg.Backend.Auto storage 2) (fun () -> Dataset.images train indices)
            let under storage f = Linalg.using (Linalg.settings Linalg.Backend.Auto storage 2) f
            let x64, d64 = gather Linalg.InputStorage.Sparse, gather Linalg.InputStorage.Dense
            let x32: Matrix<float32> = gather Linalg.InputStorage.Sparse
            let d32: Matrix<float32> = gather Linalg.InputStorage.Dense
            Expect.isFalse x64.Storage.IsDense "gathered sparse"
            Expect.isTrue d64.Storage.IsDense "gathered dense"
            let nnz = (x64.Storage :?> Storage.SparseCompressedRowMatrixStorage<float>).RowPointers[100]
            for n in widths do
                let w, b, dout = Common.random n 784 n, Vector<float>.Build.Dense(n, fun j -> float j / 10.0), Common.random (n + 1) 100 n
                let dense = under Linalg.InputStorage.Dense (fun () -> Linalg.affine d64 w b), under Linalg.InputStorage.Dense (fun () -> Linalg.transposeTimes d64 dout)
                let sparse = under Linalg.InputStorage.Sparse (fun () -> Linalg.affine x64 w b), under Linalg.InputStorage.Sparse (fun () -> Linalg.transposeTimes x64 dout)
                let auto = under Linalg.InputStorage.Auto (fun () -> Linalg.affine x64 w b), under Linalg.InputStorage.Auto (fun () -> Linalg.transposeTimes x64 dout)
                Expect.isLessThan (Common.maxAbsDiff (fst sparse) (fst dense)) 1e-12 $"float64 x·W + b, sparse kernels, width %d{n}"
                Expect.isLessThan (Common.maxAbsDiff (snd sparse) (snd dense)) 1e-12 $"float64 xᵀ·dout, sparse kernels, width %d{n}"
                // Auto runs either the sparse kernels or the dense product on a dense copy: the
                // latter is the dense path's own sum, to the last bit
                if Linalg.sparsePays 100 784 nnz n 4 then
                    Expect.equal ((fst auto).ToColumnMajorArray()) ((fst sparse).ToColumnMajorArray()) $"float64 x·W + b, auto = sparse kernels, width %d{n}"
                    Expect.equal ((snd auto).ToColumnMajorArray()) ((snd sparse).ToColumnMajorArray()) $"float64 xᵀ·dout, auto = sparse kernels, width %d{n}"
                else
                    Expect.equal ((fst auto).ToColumnMajorArray()) ((fst dense).ToColumnMajorArray()) $"float64 x·W + b, auto = dense, width %d{n}"
                    Expect.equal ((snd auto).ToColumnMajorArray()) ((snd dense).ToColumnMajorArray()) $"float64 xᵀ·dout, auto = dense, width %d{n}"
                let w32, b32, dout32 = w.Map float32, b.Map float32, dout.Map float32
                let relative (got: Matrix<float32>) (want: Matrix<float32>) =
                    Seq.zip (got.Enumerate()) (want.Enumerate()) |> Seq.map (fun (u, v) -> float (abs (u - v)) / (1.0 + float (abs v))) |> Seq.max
                let want = under Linalg.InputStorage.Dense (fun () -> Linalg.affine d32 w32 b32), under Linalg.InputStorage.Dense (fun () -> Linalg.transposeTimes d32 dout32)
                for storage in [ Linalg.InputStorage.Sparse; Linalg.InputStorage.Auto ] do
                    let got = under storage (fun () -> Linalg.affine x32 w32 b32), under storage (fun () -> Linalg.transposeTimes x32 dout32)
                    Expect.isLessThan (relative (fst got) (fst want)) 1e-5 $"float32 x·W + b, {storage}, width %d{n}"
                    Expect.isLessThan (relative (snd got) (snd want)) 1e-5 $"float32 xᵀ·dout, {storage}, width %d{n}"
        }
        test "a training step of 784-H-10 gives the same weights whichever kernel runs its first layer, H from 1 to 2000" {
            let train, _ = Common.mnist.Force()
            let indices = [| 200 .. 299 |]
            let t = Labels.ClassIndices(Dataset.labels train indices)
            let step storage =
                Linalg.using (Linalg.settings Linalg.Backend.Auto storage 2) (fun () ->
                    [ for h in widths do
                        let x: Matrix<float> = Dataset.images train indices
                        let model: Model<float> = Network.init 7 0.01 (Network.layers Activation.ReLU [ 784; h; 10 ])
                        let after, loss = Training.sgdStep 0.1 model (x, t)
                        yield h, loss, after ])
            let dense, sparse, auto = step Linalg.InputStorage.Dense, step Linalg.InputStorage.Sparse, step Linalg.InputStorage.Auto
            for (h, lossD, d), (_, lossS, s), (_, lossA, a) in List.zip3 dense sparse auto do
                Expect.floatClose Accuracy.veryHigh lossS lossD $"loss, sparse kernels, H = %d{h}"
                Expect.floatClose Accuracy.veryHigh lossA lossD $"loss, auto, H = %d{h}"
                for p, q, r in List.zip3 d.Params s.Params a.Params do
                    match p, q, r with
                    | Params.Affine p, Params.Affine q, Params.Affine r ->
                        Expect.isLessThan (Common.maxAbsDiff q.W p.W) 1e-13 $"W after the step, sparse kernels, H = %d{h}"
                        Expect.isLessThan (Common.maxAbsDiff r.W p.W) 1e-13 $"W after the step, auto, H = %d{h}"
                    | _ -> ()
        }
        test "auto storage: sparse for MNIST-like images, dense where more than a third of the pixels are nonzero" {
            // Auto storage (as in the defaults), in effect for this test alone
            Linalg.using (Linalg.settings Linalg.Backend.Auto Linalg.InputStorage.Auto 2) (fun () ->
                let mostlyZero = sparseBytes 2 20 784 0.8
                let mostlyNonzero = sparseBytes 3 20 784 0.5
                let d pixels = { Pixels = pixels; Labels = Array.zeroCreate 20; Count = 20; Rows = 28; Columns = 28 }
                let sparse: Matrix<float32> = Dataset.images (d mostlyZero) [| 0 .. 19 |]
                let dense: Matrix<float32> = Dataset.images (d mostlyNonzero) [| 0 .. 19 |]
                Expect.isFalse sparse.Storage.IsDense "80% zeros: sparse"
                Expect.isTrue dense.Storage.IsDense "50% zeros: dense"
                Expect.isTrue (Linalg.storesSparse mostlyZero 784) "storesSparse agrees (sparse)"
                Expect.isFalse (Linalg.storesSparse mostlyNonzero 784) "storesSparse agrees (dense)"
                Expect.equal (sparse.ToArray()) (Array2D.init 20 784 (fun i j -> float32 mostlyZero[i * 784 + j] / 255.0f)) "the sparse matrix holds every pixel's value")
        }
    ]
