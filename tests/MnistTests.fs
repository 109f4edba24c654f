/// The IDX reader on the real MNIST files and on broken ones.
module MnistTests

open System
open System.IO
open System.IO.Compression
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

/// An IDX header: magic 0x0000_08_dims, then each dimension, big-endian.
let idx (dims: int list) (data: byte[]) =
    let be (v: int) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]
    Array.concat [ be (0x0800 ||| dims.Length); yield! List.map be dims; data ]

/// A fresh temporary directory with the four MNIST files: n training and m test images of 2x2.
let scratch (n: int) (m: int) =
    let dir = Directory.CreateTempSubdirectory("backprop-test-").FullName
    let write name (bytes: byte[]) = File.WriteAllBytes(Path.Combine(dir, name), bytes)
    write "train-images-idx3-ubyte" (idx [ n; 2; 2 ] (Array.init (n * 4) byte))
    write "train-labels-idx1-ubyte" (idx [ n ] (Array.init n (fun i -> byte (i % 10))))
    write "t10k-images-idx3-ubyte" (idx [ m; 2; 2 ] (Array.create (m * 4) 255uy))
    write "t10k-labels-idx1-ubyte" (idx [ m ] (Array.create m 7uy))
    dir

/// Expects Mnist.load dir to fail with a DataError naming file and containing the words.
let expectDataError dir (file: string) (words: string) =
    try
        Mnist.load dir |> ignore
        failtest "expected a DataError"
    with DataError(f, problem) ->
        Expect.equal (Path.GetFileName f) file "the error names the file"
        Expect.stringContains problem words "what is wrong"
        Expect.isFalse (problem.Contains '\n') "one line"

[<Tests>]
let tests =
    testList "mnist" [
        test "the real files: 60000 and 10000 records of 28x28, every class present" {
            let train, test = mnist.Force()
            Expect.equal (train.Count, test.Count) (60000, 10000) "records"
            Expect.equal (train.Rows, train.Columns, train.PixelCount) (28, 28, 784) "image size"
            Expect.equal (train.Labels[0..4]) [| 5uy; 0uy; 4uy; 1uy; 9uy |] "the first training labels"
            Expect.equal (test.Labels[0..2]) [| 7uy; 2uy; 1uy |] "the first test labels"
            for d in [ train; test ] do
                Expect.equal (d.Labels |> Array.distinct |> Array.sort) [| 0uy .. 9uy |] "every class present"
        }
        test "images are flattened to 784 columns and normalized to [0, 1]" {
            let train, _ = mnist.Force()
            let x: Matrix<float> = Dataset.images train [| 0 .. 999 |]
            Expect.equal (x.RowCount, x.ColumnCount) (1000, 784) "one row per image"
            Expect.equal (x.Enumerate() |> Seq.min, x.Enumerate() |> Seq.max) (0.0, 1.0) "pixel range"
            Expect.floatClose Accuracy.veryHigh x[0, 7 * 28 + 14] (float train.Pixels[7 * 28 + 14] / 255.0) "pixel (7, 14) of image 0, row-major"
            let t: Matrix<float> = Dataset.oneHot 10 train [| 0; 1 |]
            Expect.equal (t.Row 0 |> Seq.toList) [ 0.; 0.; 0.; 0.; 0.; 1.; 0.; 0.; 0.; 0. ] "one-hot 5"
        }
        test "raw (uncompressed) files and a Fashion-MNIST-like directory load too" {
            let dir = scratch 12 3
            let train, test = Mnist.load dir
            Expect.equal (train.Count, test.Count, train.Rows) (12, 3, 2) "counts and size"
            Expect.equal train.Labels[11] 1uy "labels"
        }
        test "gzip-compressed files load the same as raw ones" {
            let dir = scratch 5 2
            let raw = Path.Combine(dir, "train-images-idx3-ubyte")
            let bytes = File.ReadAllBytes raw
            do
                use f = File.Create(raw + ".gz")
                use gz = new GZipStream(f, CompressionLevel.Fastest)
                gz.Write(bytes, 0, bytes.Length)
            File.Delete raw
            let train, _ = Mnist.load dir
            Expect.equal train.Pixels (Array.init 20 byte) "same pixels"
        }
        testList "bad data: one line naming the file" [
            test "missing directory" {
                try
                    Mnist.load "/no/such/dir" |> ignore
                    failtest "expected a DataError"
                with DataError(f, p) -> Expect.equal (f, p) ("/no/such/dir", "data directory not found") "message"
            }
            test "missing file" {
                let dir = scratch 4 2
                File.Delete(Path.Combine(dir, "t10k-labels-idx1-ubyte"))
                expectDataError dir "t10k-labels-idx1-ubyte" "file not found"
            }
            test "wrong magic number" {
                let dir = scratch 4 2
                File.WriteAllBytes(Path.Combine(dir, "train-images-idx3-ubyte"), idx [ 4 ] (Array.zeroCreate 4))
                expectDataError dir "train-images-idx3-ubyte" "wrong magic number 0x00000801, expected 0x00000803"
            }
            test "truncated data" {
                let dir = scratch 4 2
                File.WriteAllBytes(Path.Combine(dir, "train-images-idx3-ubyte"), idx [ 4; 2; 2 ] (Array.zeroCreate 10))
                expectDataError dir "train-images-idx3-ubyte" "truncated: the header announces 16 data bytes, the file has 10"
            }
            test "truncated header" {
                let dir = scratch 4 2
                File.WriteAllBytes(Path.Combine(dir, "train-labels-idx1-ubyte"), [| 0uy; 0uy; 8uy |])
                expectDataError dir "train-labels-idx1-ubyte" "truncated"
            }
            test "image and label counts disagree" {
                let dir = scratch 4 2
                File.WriteAllBytes(Path.Combine(dir, "t10k-labels-idx1-ubyte"), idx [ 3 ] (Array.zeroCreate 3))
                expectDataError dir "t10k-labels-idx1-ubyte" "3 labels for the 2 images"
            }
            test "corrupt gzip" {
                let dir = scratch 4 2
                File.Delete(Path.Combine(dir, "train-labels-idx1-ubyte"))
                File.WriteAllBytes(Path.Combine(dir, "train-labels-idx1-ubyte.gz"), [| 0x1fuy; 0x8buy; 8uy; 0uy; 1uy; 2uy; 3uy |])
                expectDataError dir "train-labels-idx1-ubyte.gz" "corrupt gzip data"
            }
            test "trailing data" {
                let dir = scratch 4 2
                File.WriteAllBytes(Path.Combine(dir, "train-labels-idx1-ubyte"), idx [ 4 ] (Array.zeroCreate 6))
                expectDataError dir "train-labels-idx1-ubyte" "trailing data after the 4 bytes the header announces"
            }
            test "gzip whose length check fails" {
                let dir = scratch 4 2
                let path = Path.Combine(dir, "train-labels-idx1-ubyte")
                let bytes = File.ReadAllBytes path
                let gz = new MemoryStream()
                do
                    use z = new GZipStream(gz, CompressionLevel.Fastest, leaveOpen = true)
                    z.Write(bytes, 0, bytes.Length)
                let damaged = gz.ToArray()
                damaged[damaged.Length - 4] <- damaged[damaged.Length - 4] + 1uy // the declared length
                File.Delete path
                File.WriteAllBytes(path + ".gz", damaged)
                expectDataError dir "train-labels-idx1-ubyte.gz" "corrupt gzip data"
            }
            test "label out of range" {
                let dir = scratch 4 2
                File.WriteAllBytes(Path.Combine(dir, "train-labels-idx1-ubyte"), idx [ 4 ] [| 1uy; 2uy; 12uy; 0uy |])
                expectDataError dir "train-labels-idx1-ubyte" "label 12 out of range 0-9"
            }
        ]
    ]
