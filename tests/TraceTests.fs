/// One image through a network (Trace.fs): the input gradient against numerical differentiation,
/// the activations against a hand-written forward pass, and MNIST-style preprocessing of the
/// shipped digits moved and enlarged.
module TraceTests

open System
open System.IO
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

/// The model the tests of traces, the page and the pictures share: the book's network after
/// 3000 iterations of its recipe (`backprop train --iters 3000 --save tests/fixtures/book-3000.npz`:
/// test accuracy 0.9457), in float64.
let bookModelFile = Path.Combine(repoRoot, "tests", "fixtures", "book-3000.npz")

/// The shared model, read once.
let bookModel =
    lazy
        (match Npz.load bookModelFile with
         | SavedModel.Single m -> Network.convert float m
         | SavedModel.Double m -> m)

/// A grey-scale image as (width, height, pixels).
type private Image = int * int * byte[]

/// The image moved and scaled onto a w × h white canvas (nearest neighbour): the pixel at (x, y)
/// comes from ((x - dx) / s, (y - dy) / s) of the source.
let private transform ((w0, h0, p): Image) (w: int) (h: int) (s: float) (dx: float) (dy: float) : Image =
    w, h, Array.init (w * h) (fun k ->
        let x, y = k % w, k / w
        let sx, sy = int (floor ((float x + 0.5 - dx) / s)), int (floor ((float y + 0.5 - dy) / s))
        if sx >= 0 && sx < w0 && sy >= 0 && sy < h0 then p[sy * w0 + sx] else 255uy)

/// The shipped digits (black on white, 56 × 56: MNIST test images 0-4 drawn twice as large), with
/// their labels.
let private samples () =
    Directory.GetFiles(Path.Combine(repoRoot, "data", "samples"), "*.png")
    |> Array.sort
    |> Array.map (fun f -> int (Path.GetFileName(f).Split('-')[1]), Path.GetFileName f, Backprop.Cli.Images.readPng f)

let private predicted (model: Model<float>) (x: float[]) = Trace.probabilities model x |> Array.indexed |> Array.maxBy snd |> fst

[<Tests>]
let tests =
    testList "trace of one image" [
        test "input gradient passes the gradient check: central differences of the loss w.r.t. each pixel, below 1e-7 relative" {
            let model = bookModel.Force()
            let _, test = mnist.Force()
            for n in [ 0; 1; 8 ] do
                let image = Array.init 784 (fun j -> float test.Pixels[n * 784 + j] / 255.0)
                let c = int test.Labels[n]
                let analytic = Trace.inputGradient model image c
                // the reference: the loss without the log's δ (Network.lossWithoutDelta), differentiated numerically
                let x = Matrix<float>.Build.Dense(1, 784, Array.copy image)
                let numerical = Network.numericalGradientOf (fun () -> Network.lossWithoutDelta model x (Labels.ClassIndices [| c |])) (x.AsColumnMajorArray())
                let norm (a: float[]) = sqrt (Array.sumBy (fun v -> v * v) a)
                let relative = norm (Array.map2 (-) analytic numerical) / (norm analytic + norm numerical)
                Expect.isLessThan relative 1e-7 $"test image %d{n}: |analytic - numerical| / (|analytic| + |numerical|)"
                Expect.isGreaterThan (norm analytic) 1e-6 "a gradient that is not zero"
        }
        test "input gradient for another class differs, and its negative raises that class's probability" {
            let model = bookModel.Force()
            let _, test = mnist.Force()
            let image = Array.init 784 (fun j -> float test.Pixels[j] / 255.0) // a 7
            let g = Trace.inputGradient model image 1
            let p0 = (Trace.probabilities model image)[1]
            let stepped = Array.map2 (fun x d -> x - 0.5 * d) image g
            Expect.isGreaterThan (Trace.probabilities model stepped).[1] p0 "a small step against the gradient of class 1's loss makes 1 more likely"
            Expect.throwsT<ArgumentException> (fun () -> Trace.inputGradient model image 10 |> ignore) "class out of range"
            Expect.throwsT<ArgumentException> (fun () -> Trace.inputGradient model [| 0.0 |] 1 |> ignore) "wrong size"
        }
        test "activations equal a hand-written forward pass: relu(x·W1 + b1), then x·W2 + b2" {
            let model = bookModel.Force()
            let _, test = mnist.Force()
            let image = Array.init 784 (fun j -> float test.Pixels[784 + j] / 255.0)
            let w1, b1, w2, b2 =
                match Network.parameters model with
                | [ _, Value.Matrix w1; _, Value.Vector b1; _, Value.Matrix w2; _, Value.Vector b2 ] -> w1, b1, w2, b2
                | _ -> failtest "W1, b1, W2, b2"
            let hidden = Array.init 50 (fun j -> max 0.0 (b1[j] + Seq.sum (seq { for i in 0..783 -> image[i] * w1[i, j] })))
            let scores = Array.init 10 (fun k -> b2[k] + Seq.sum (seq { for j in 0..49 -> hidden[j] * w2[j, k] }))
            let acts = Trace.activations model image
            Expect.equal (List.map fst acts) [ "Affine1"; "Relu1"; "Affine2" ] "every layer's output, named"
            let tol = { absolute = 1e-12; relative = 1e-12 }
            Array.iter2 (fun a e -> Expect.floatClose tol a e "hidden") (snd acts[1]) hidden
            Array.iter2 (fun a e -> Expect.floatClose tol a e "scores") (snd acts[2]) scores
            let p = Trace.probabilities model image
            Expect.floatClose tol (Array.sum p) 1.0 "probabilities sum to 1"
            let e = scores |> Array.map (fun s -> exp (s - Array.max scores))
            Array.iter2 (fun a b -> Expect.floatClose tol a b "softmax") p (e |> Array.map (fun v -> v / Array.sum e))
        }
        test "preprocessing: a light rectangle on dark ground is fitted into 20 × 20 and centred in 28 × 28" {
            // 10 wide, 40 high ink block at (50, 5) in a 100 × 60 image: fitted to 5 × 20, centred.
            let image = Array.init (100 * 60) (fun k -> let x, y = k % 100, k / 100 in if x >= 50 && x < 60 && y >= 5 && y < 45 then 200uy else 10uy)
            let out = Preprocess.mnist (100, 60, image)
            let rows = [ for y in 0..27 do if Array.exists (fun x -> out[y * 28 + x] > 0uy) [| 0..27 |] then yield y ]
            let cols = [ for x in 0..27 do if Array.exists (fun y -> out[y * 28 + x] > 0uy) [| 0..27 |] then yield x ]
            Expect.equal (rows.Head, List.last rows) (4, 23) "20 rows, centred (4..23)"
            Expect.equal (cols.Head, List.last cols) (12, 16) "5 columns (aspect ratio kept), centred (12..16)"
            Expect.equal (Array.max out) 255uy "ink at full strength"
            Expect.equal (out |> Array.filter (fun v -> v > 0uy) |> Array.distinct) [| 255uy |] "a uniform block stays uniform"
        }
        test "preprocessing: dark ink on light ground is inverted; an empty image gives zeros; a bad size is refused" {
            let dark = Array.init (30 * 30) (fun k -> if k % 30 = 15 then 0uy else 250uy) // a vertical dark line
            let out = Preprocess.mnist (30, 30, dark)
            Expect.equal out[0] 0uy "background black"
            Expect.equal out[4 * 28 + 14] 255uy "ink white, the line fitted to 20 rows from row 4"
            Expect.equal (Preprocess.mnist (5, 5, Array.create 25 255uy)) (Array.zeroCreate 784) "no ink"
            Expect.throwsT<ArgumentException> (fun () -> Preprocess.mnist (5, 5, Array.zeroCreate 24) |> ignore) "24 pixels for 5 × 5"
        }
        test "preprocessing: the five shipped digits, moved 5 pixels and enlarged 1.5 times, are still their digits; resizing alone misses some" {
            let model = bookModel.Force()
            // resizing alone: the whole image averaged down to 28 × 28 and inverted (what predict did
            // before: Backprop.Cli.Images.toInput)
            let resizeOnly ((w, h, p): Image) = Backprop.Cli.Images.toInput 28 (w, h, p)
            let mutable resizeMisses = []
            for label, name, image in samples () do
                let variants =
                    [ "as shipped", image
                      "moved 5 px right and down", transform image 56 56 1.0 5.0 5.0
                      "enlarged 1.5x about the centre", transform image 56 56 1.5 -14.0 -14.0
                      "enlarged 1.5x on a 112 x 112 canvas, 5 px from its corner", transform image 112 112 1.5 5.0 5.0 ]
                for variant, v in variants do
                    Expect.equal (predicted model (Preprocess.toInput v)) label $"{name}, {variant}, preprocessed"
                    let r = predicted model (resizeOnly v)
                    if r <> label then resizeMisses <- $"{name} {variant} -> {r}" :: resizeMisses
            // Measured with this model: resizing alone misread 10 of the 15 moved or enlarged
            // variants (the 0, 1 and 4 moved: 8, 7, 6; the 2, 4 and 7 enlarged: 5, 6, 0; in the
            // corner all but the 7: 9, 5, 4, 1) and none of the five as shipped.
            Expect.isGreaterThanOrEqual resizeMisses.Length 1 $"resizing alone misses some: %A{List.rev resizeMisses}"
        }
        testSequencedGroup Common.console <| test "predict preprocesses image files as the page does: the moved and enlarged digits are read right" {
            // the same 20 variants as above, written as PGM files and given to `backprop predict`
            let dir = Directory.CreateTempSubdirectory("backprop-predict-").FullName
            let files =
                [ for label, name, image in samples () do
                      for tag, (w, h, p) in
                          [ "shipped", image
                            "moved", transform image 56 56 1.0 5.0 5.0
                            "enlarged", transform image 56 56 1.5 -14.0 -14.0
                            "corner", transform image 112 112 1.5 5.0 5.0 ] do
                          let file = Path.Combine(dir, $"{Path.GetFileNameWithoutExtension name}-{tag}.pgm")
                          File.WriteAllBytes(file, Array.append (Text.Encoding.ASCII.GetBytes $"P5\n{w} {h}\n255\n") p)
                          yield label, file ]
            let code, out, err = CliTests.run ([ "predict"; "--model"; bookModelFile; "--no-render" ] @ List.map snd files)
            Expect.equal (code, err) (0, "") "predict"
            for label, file in files do
                Expect.stringContains out $"{file}: predicted {label}" (Path.GetFileName file)
        }
    ]
