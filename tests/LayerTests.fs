/// Each layer's backward against numerical gradients on random inputs (float64), and the
/// functions the layers are built on.
module LayerTests

open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

/// Backprop and numerical gradients agree to this (central differences with h = 1e-4 are
/// accurate to about h² · f''' ≈ 1e-8 on these smooth, O(1) inputs).
let private tolerance = 1e-7

/// A random input whose entries all lie at least 0.05 away from 0, where ReLU has its kink.
let private awayFromZero seed rows cols =
    random seed rows cols |> map (fun v -> if abs v < 0.05 then v + 0.1 * float (sign v + (if v = 0.0 then 1 else 0)) else v)

[<Tests>]
let tests =
    testList "layers (5.5, 5.6)" [
        testList "forward" [
            test "ReLU zeroes the non-positive inputs" {
                let out, _ = Relu.forward (matrix [ [ 1.0; -0.5 ]; [ -2.0; 3.0 ] ])
                Expect.equal out (matrix [ [ 1.0; 0.0 ]; [ 0.0; 3.0 ] ]) "max(0, x)"
            }
            test "Sigmoid of 0 is 0.5 and of ±large saturates" {
                let out, _ = Sigmoid.forward (matrix [ [ 0.0; 40.0; -40.0 ] ])
                Expect.floatClose Accuracy.veryHigh out[0, 0] 0.5 "sigmoid 0"
                Expect.isGreaterThan out[0, 1] 0.999999 "sigmoid 40"
                Expect.isLessThan out[0, 2] 1e-6 "sigmoid -40"
            }
            test "softmax rows sum to 1 and survive huge scores" {
                let y = Functions.softmax (matrix [ [ 1010.0; 1000.0; 990.0 ]; [ 0.3; 2.9; 4.0 ] ])
                for s in y.RowSums() do Expect.floatClose Accuracy.veryHigh s 1.0 "row sum"
                Expect.isFalse (y.Enumerate() |> Seq.exists System.Double.IsNaN) "no NaN from exp overflow"
                // The book's example (3.5.1): softmax([0.3, 2.9, 4.0]) = [0.01821127, 0.24519181, 0.73659691]
                let eightDigits = { absolute = 5e-9; relative = 0.0 }
                Expect.floatClose eightDigits y[1, 0] 0.01821127 "y0"
                Expect.floatClose eightDigits y[1, 1] 0.24519181 "y1"
                Expect.floatClose eightDigits y[1, 2] 0.73659691 "y2"
            }
            test "cross-entropy: the book's examples 0.510825457 and 2.302584092" {
                // 4.2.2: t = 2, y = [0.1, 0.05, 0.6, 0, 0.05, 0.1, 0, 0.1, 0, 0] -> 0.51082545709933802
                let y = matrix [ [ 0.1; 0.05; 0.6; 0.0; 0.05; 0.1; 0.0; 0.1; 0.0; 0.0 ] ]
                let e = Functions.crossEntropyError y (Labels.ClassIndices [| 2 |])
                Expect.floatClose Accuracy.veryHigh e 0.51082545709933802 "t = 2"
                let e7 = Functions.crossEntropyError y (Labels.OneHot(matrix [ [ 0.; 0.; 0.; 0.; 0.; 0.; 0.; 1.; 0.; 0. ] ]))
                Expect.floatClose Accuracy.veryHigh e7 2.3025840929945458 "t = 7, one-hot"
            }
            test "Affine adds the bias to every row and does not touch x" {
                let x = matrix [ [ 1.0; 2.0 ]; [ 3.0; 4.0 ] ]
                let before = x.Clone()
                let out, _ = Affine.forward { W = matrix [ [ 1.0; 0.0; 2.0 ]; [ 0.0; 1.0; 1.0 ] ]; b = vector [ 0.5; -1.0; 0.0 ] } x
                Expect.equal out (matrix [ [ 1.5; 1.0; 4.0 ]; [ 3.5; 3.0; 10.0 ] ]) "x·W + b"
                Expect.equal x before "x unchanged"
            }
        ]
        testList "backward vs numerical gradient" [
            test "ReLU: dx" {
                let x, r = awayFromZero 1 4 6, random 2 4 6
                let _, cache = Relu.forward x
                let dx = Relu.backward cache r
                let numerical = numericalGradient (fun x -> (fst (Relu.forward x)).PointwiseMultiply(r).Enumerate() |> Seq.sum) x
                Expect.isLessThan (maxAbsDiff dx numerical) tolerance "max |dx - numerical|"
            }
            test "ReLU backward leaves dout untouched (the book writes into it)" {
                let x, dout = random 3 3 5, random 4 3 5
                let before = dout.Clone()
                let _, cache = Relu.forward x
                let dx = Relu.backward cache dout
                Expect.equal dout before "dout unchanged"
                Expect.notEqual dx dout "some entries were masked"
            }
            test "Sigmoid: dx" {
                let x, r = random 5 4 6, random 6 4 6
                let _, cache = Sigmoid.forward x
                let dx = Sigmoid.backward cache r
                let numerical = numericalGradient (fun x -> (fst (Sigmoid.forward x)).PointwiseMultiply(r).Enumerate() |> Seq.sum) x
                Expect.isLessThan (maxAbsDiff dx numerical) tolerance "max |dx - numerical|"
            }
            test "Affine: dx, dW, db" {
                let x, W, b, r = random 7 5 4, random 8 4 3, (random 9 1 3).Row 0, random 10 5 3
                let f (x: Matrix<float>) (W: Matrix<float>) (b: Vector<float>) =
                    (fst (Affine.forward { W = W; b = b } x)).PointwiseMultiply(r).Enumerate() |> Seq.sum
                let _, cache = Affine.forward { W = W; b = b } x
                let dx, g = Affine.backward cache r
                Expect.isLessThan (maxAbsDiff dx (numericalGradient (fun x -> f x W b) x)) tolerance "dx"
                Expect.isLessThan (maxAbsDiff g.dW (numericalGradient (fun W -> f x W b) W)) tolerance "dW"
                let bm = b.ToRowMatrix()
                let numDb = numericalGradient (fun bm -> f x W (bm.Row 0)) bm
                Expect.isLessThan (maxAbsDiff (g.db.ToRowMatrix()) numDb) tolerance "db"
            }
            test "Affine on a 2x1x3x3 input: flattened per sample, dx back in the input's shape" {
                let data = (random 11 1 18).Row(0).ToArray()
                let W, b, r = random 12 9 4, vector [ 0.1; 0.2; 0.3; 0.4 ], random 13 2 4
                let x = { Shape = [| 2; 1; 3; 3 |]; Data = data }
                let out, cache = Affine.forwardTensor { W = W; b = b } x
                Expect.equal (out.RowCount, out.ColumnCount) (2, 4) "one row per sample"
                // sample 1 is data[9..17] in row-major order
                Expect.floatClose Accuracy.veryHigh out[1, 2] ((Seq.map2 (*) data[9..17] (W.Column 2) |> Seq.sum) + 0.3) "out[1,2]"
                let dx, _ = Affine.backwardTensor cache r
                Expect.equal dx.Shape [| 2; 1; 3; 3 |] "dx has the input's shape"
                let flat = Matrix<float>.Build.DenseOfRowMajor(2, 9, data)
                let numerical = numericalGradient (fun m -> (fst (Affine.forward { W = W; b = b } m)).PointwiseMultiply(r).Enumerate() |> Seq.sum) flat
                let dxFlat = Matrix<float>.Build.DenseOfRowMajor(2, 9, dx.Data)
                Expect.isLessThan (maxAbsDiff dxFlat numerical) tolerance "dx"
            }
            test "Softmax-with-Loss: dx, with class indices and with one-hot labels" {
                let x = random 14 4 5 |> map (fun v -> 3.0 * v)
                let classes = [| 0; 3; 4; 3 |]
                let oneHot = Matrix<float>.Build.Dense(4, 5, fun i j -> if classes[i] = j then 1.0 else 0.0)
                for t in [ Labels.ClassIndices classes; Labels.OneHot oneHot ] do
                    let loss, cache = SoftmaxWithLoss.forward x t
                    let dx = SoftmaxWithLoss.backward cache 1.0
                    // (y - t) / N is the exact gradient of the cross-entropy without the δ in the log.
                    let numerical = numericalGradient (fun x -> Functions.crossEntropyErrorWith 0.0 (Functions.softmax x) t) x
                    Expect.isLessThan (maxAbsDiff dx numerical) tolerance $"dx ({t.GetType().Name})"
                    // With the δ the true gradient moves by about δ / y per sample: small, but far above the tolerance.
                    let withDelta = numericalGradient (fun x -> fst (SoftmaxWithLoss.forward x t)) x
                    Expect.isLessThan (maxAbsDiff dx withDelta) 1e-4 "δ = 1e-7 changes the gradient by little"
                    Expect.isGreaterThan loss 0.0 "loss"
                let l1, _ = SoftmaxWithLoss.forward x (Labels.ClassIndices classes)
                let l2, _ = SoftmaxWithLoss.forward x (Labels.OneHot oneHot)
                Expect.floatClose Accuracy.veryHigh l1 l2 "class indices and one-hot give the same loss"
            }
        ]
    ]
