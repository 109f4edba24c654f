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

/// The bytes gzip-compressed.
let gzip (bytes: byte[]) =
    let ms = new MemoryStream()
    do
        use z = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen = true)
        z.Write(bytes, 0, bytes.Length)
    ms.ToArray()

/// Writes bytes to a new file in a fresh temporary folder; returns its path.
let writeTemp (name: string) (bytes: byte[]) =
    let path = Path.Combine(Directory.CreateTempSubdirectory("backprop-idx-").FullName, name)
    File.WriteAllBytes(path, bytes)
    path

/// Expects Mnist.readIdx path to fail with a one-line DataError naming path, containing words.
let expectReadError (path: string) (dimensions: int) (words: string) =
    try
        Mnist.readIdx path dimensions |> ignore
        failtest $"expected a DataError for {path}"
    with DataError(f, problem) ->
        Expect.equal f path "the error names the file"
        Expect.stringContains problem words "what is wrong"
        Expect.isFalse (problem.Contains '\n') "one line"

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
                expectDataError dir "train-labels-idx1-ubyte" "label 12 at index 2 out of range 0-9"
            }
        ]
        testList "sizes checked before anything is allocated" [
            test "zero images, rows, columns or labels are refused" {
                for dims, dimensions, words in
                    [ [ 0; 2; 2 ], 3, "the header announces 0 images"
                      [ 3; 0; 2 ], 3, "the header announces 0 rows"
                      [ 3; 2; 0 ], 3, "the header announces 0 columns"
                      [ 0 ], 1, "the header announces 0 labels" ] do
                    let path = writeTemp "zero" (idx dims [||])
                    expectReadError path dimensions words
            }
            test "dimensions over the caps are refused, named with the cap" {
                for dims, words in
                    [ [ 10_000_001; 1; 1 ], "the header announces 10000001 images, more than the 10000000 this reader accepts"
                      [ 1; 4097; 1 ], "the header announces 4097 rows, more than the 4096 this reader accepts"
                      [ 1; 1; 4097 ], "the header announces 4097 columns, more than the 4096 this reader accepts"
                      [ -1; 28; 28 ], "the header announces 4294967295 images"
                      [ 10_000_000; 28; 28 ], "the header announces 10000000x28x28 = 7840000000 data bytes, more than the 2000000000 this reader accepts" ] do
                    expectReadError (writeTemp "caps" (idx dims [||])) 3 words
                expectReadError (writeTemp "caps" (idx [ 10_000_001 ] [||])) 1 "the header announces 10000001 labels, more than the 10000000"
            }
            test "the largest image the caps allow (4096x4096) loads" {
                let dims, data = Mnist.readIdx (writeTemp "big" (idx [ 1; 4096; 4096 ] (Array.create (4096 * 4096) 9uy))) 3
                Expect.equal (dims, data.Length, data[4096 * 4096 - 1]) ([| 1; 4096; 4096 |], 4096 * 4096, 9uy) "read whole"
            }
            test "a tiny raw file announcing 1.9 GB fails at once, without allocating it" {
                let path = writeTemp "liar" (idx [ 10_000_000; 14; 14 ] (Array.zeroCreate 100))
                let before = GC.GetAllocatedBytesForCurrentThread()
                expectReadError path 3 "truncated: the header announces 1960000000 data bytes, the file has 100"
                Expect.isLessThan (GC.GetAllocatedBytesForCurrentThread() - before) 1_000_000L "no big allocation"
            }
            test "a gzip file whose header announces more than its footer, or than deflate can expand, fails unread" {
                // honest footer, lying header: the footer's length disagrees
                let path = writeTemp "gz" (gzip (idx [ 10_000_000; 14; 14 ] (Array.zeroCreate 100)))
                let before = GC.GetAllocatedBytesForCurrentThread()
                expectReadError path 3 "corrupt gzip data: the header announces 1960000000 data bytes, the gzip footer a content of 116 bytes (mod 2^32)"
                // a bomb-like file: header and footer agree on 1.96 GB, the file is a few hundred bytes
                let bomb = gzip (idx [ 10_000_000; 14; 14 ] (Array.zeroCreate 100))
                let total = 16L + 1_960_000_000L
                Array.blit (BitConverter.GetBytes(uint32 total)) 0 bomb (bomb.Length - 4) 4
                let bombPath = writeTemp "bomb" bomb
                expectReadError bombPath 3 $"more than a %d{bomb.Length}-byte gzip file can hold"
                Expect.isLessThan (GC.GetAllocatedBytesForCurrentThread() - before) 1_000_000L "no big allocation"
            }
            test "a folder, a FIFO or a missing file where a data file should be: refused, without blocking" {
                let dir = Directory.CreateTempSubdirectory("backprop-idx-").FullName
                let fifo = Path.Combine(dir, "fifo")
                use mk = Diagnostics.Process.Start("mkfifo", [ fifo ])
                mk.WaitForExit()
                expectReadError fifo 1 "is a named pipe (FIFO), not a regular file"
                expectReadError dir 1 "is a folder, not a regular file"
                expectReadError (Path.Combine(dir, "none")) 1 "file not found"
                File.CreateSymbolicLink(Path.Combine(dir, "link"), Path.Combine(dir, "none")) |> ignore
                expectReadError (Path.Combine(dir, "link")) 1 "file not found"
                let file = writeTemp "plain" (idx [ 1 ] [| 3uy |])
                try
                    Mnist.load file |> ignore
                    failtest "expected a DataError"
                with DataError(f, p) -> Expect.equal (f, p) (file, "is a regular file, not a data directory (give the folder that holds the four IDX files)") "--data on a file"
            }
        ]
        testList "arbitrary and mutated files: data or DataError, nothing else" [
            let config = { FsCheckConfig.defaultConfig with maxTest = 1000 }
            let scratchDir = lazy (Directory.CreateTempSubdirectory("backprop-fuzz-").FullName)
            /// Reads bytes written to a fresh file: true when read (dimensions agreeing with the
            /// data), true for a one-line DataError naming the file; any other exception escapes.
            let readsOrRefuses (dimensions: int) (bytes: byte[]) =
                let path = Path.Combine(scratchDir.Force(), Guid.NewGuid().ToString("N"))
                File.WriteAllBytes(path, bytes)
                try
                    try
                        let dims, data = Mnist.readIdx path dimensions
                        dims.Length = dimensions && Array.forall (fun d -> d > 0) dims && int64 data.Length = Array.fold (fun a d -> a * int64 d) 1L dims
                    with DataError(f, problem) -> f = path && not (problem.Contains '\n') && problem <> ""
                finally
                    File.Delete path
            /// A valid IDX file of small random dimensions from seed.
            let valid (seed: int) (dimensions: int) =
                let rng = Random seed
                let dims = List.init dimensions (fun _ -> rng.Next(1, 5))
                idx dims (Array.init (List.fold (*) 1 dims) (fun _ -> byte (rng.Next 256)))
            /// bytes with each (position, value) written (positions taken modulo the length),
            /// then cut to the given length (modulo the length plus one) when asked.
            let mutate (bytes: byte[]) (changes: (int * byte) list) (cut: int option) =
                let b = Array.copy bytes
                for p, v in changes do
                    if b.Length > 0 then b[abs (p % b.Length)] <- v
                match cut with
                | Some c -> b[.. abs (c % (b.Length + 1)) - 1]
                | None -> b
            testPropertyWithConfig config "arbitrary bytes, raw" <| fun (bytes: byte[]) (three: bool) ->
                readsOrRefuses (if three then 3 else 1) bytes
            testPropertyWithConfig config "arbitrary bytes after the IDX magic (so the header is read)" <| fun (bytes: byte[]) (three: bool) ->
                let dimensions = if three then 3 else 1
                readsOrRefuses dimensions (Array.append [| 0uy; 0uy; 8uy; byte dimensions |] bytes)
            testPropertyWithConfig config "arbitrary bytes after the gzip magic" <| fun (bytes: byte[]) (three: bool) ->
                readsOrRefuses (if three then 3 else 1) (Array.append [| 0x1fuy; 0x8buy; 8uy; 0uy |] bytes)
            testPropertyWithConfig config "mutated valid raw files" <| fun (seed: int) (three: bool) (changes: (int * byte) list) (cut: int option) (dimension: int) (value: uint32) ->
                let dimensions = if three then 3 else 1
                let b = mutate (valid seed dimensions) changes cut
                // and one header field set to any value, where the header is still there
                let field = 4 + 4 * abs (dimension % dimensions)
                if b.Length >= field + 4 && dimension % 2 = 0 then b[field .. field + 3] <- [| byte (value >>> 24); byte (value >>> 16); byte (value >>> 8); byte value |]
                readsOrRefuses dimensions b
            testPropertyWithConfig config "mutated valid gzip files (header lies inside, damage outside)" <| fun (seed: int) (three: bool) (inner: (int * byte) list) (outer: (int * byte) list) (cut: int option) ->
                let dimensions = if three then 3 else 1
                let content = mutate (valid seed dimensions) inner None
                readsOrRefuses dimensions (mutate (gzip content) outer cut)
            test "the mutations do produce valid files too (the properties see both outcomes)" {
                Expect.isTrue (readsOrRefuses 3 (valid 1 3)) "a valid raw file reads"
                Expect.isTrue (readsOrRefuses 3 (gzip (valid 2 3))) "a valid gzip file reads"
                let dims, _ = Mnist.readIdx (writeTemp "ok" (gzip (valid 3 3))) 3
                Expect.equal dims.Length 3 "three dimensions"
            }
        ]
    ]
