/// The bad-input corpus: the real `backprop` process on crafted IDX files, images and option
/// values. Each case must end in its exit code with exactly one line on stderr holding the
/// expected words, no stack trace, within 30 seconds. Add a case by adding a record to `cases`.
module HostileTests

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Text
open Expecto
open Backprop.Core
open Common

/// What a file of a case is made of.
type Content =
    /// These bytes.
    | Bytes of byte[]
    /// A named pipe (mkfifo): a reader that opens it blocks until a writer comes.
    | Fifo
    /// A character device node like /dev/zero (mknod c 1 5; the case is skipped where mknod is not allowed).
    | ZeroDevice
    /// An empty folder.
    | Folder
    /// A symbolic link to the given path (relative to the case's folder).
    | Link of string
    /// No file by that name (takes a file of the base set away).
    | Absent

/// One run of the CLI on crafted files.
type Case =
    { /// What the case shows.
      Name: string
      /// The files made in the case's fresh folder, by name; a later entry replaces an earlier one.
      Files: (string * Content) list
      /// The command line; "{dir}" is the case's folder, "{model}" a small trained model.
      Argv: string list
      /// The expected exit code.
      Code: int
      /// Words the one stderr line must hold (or, for exit code 0, stdout); "{dir}" as in Argv.
      Fragment: string }

/// A big-endian 32-bit field.
let be32 (v: uint32) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]

/// An IDX file of unsigned bytes: magic 0x000008nn, the dimensions, the data.
let idxFile (dims: uint32 list) (data: byte[]) =
    Array.concat [ be32 (0x0800u ||| uint32 dims.Length); yield! List.map be32 dims; data ]

/// An IDX file of the given dimensions with zero data of the right length.
let idxOf (dims: int list) = idxFile (List.map uint32 dims) (Array.zeroCreate (List.fold (*) 1 dims))

/// The bytes gzip-compressed.
let gzipped (bytes: byte[]) =
    let ms = new MemoryStream()
    do
        use z = new GZipStream(ms, CompressionLevel.Optimal, leaveOpen = true)
        z.Write(bytes, 0, bytes.Length)
    ms.ToArray()

/// The gzip file with the content length in its footer replaced.
let withFooter (length: uint32) (gz: byte[]) =
    let b = Array.copy gz
    Array.blit (BitConverter.GetBytes length) 0 b (b.Length - 4) 4
    b

/// A valid MNIST-layout set: 4 training and 2 test images of 2x2, labels in range.
let baseSet =
    [ "train-images-idx3-ubyte", Bytes(idxFile [ 4u; 2u; 2u ] (Array.init 16 byte))
      "train-labels-idx1-ubyte", Bytes(idxFile [ 4u ] [| 0uy; 1uy; 2uy; 3uy |])
      "t10k-images-idx3-ubyte", Bytes(idxFile [ 2u; 2u; 2u ] (Array.create 8 200uy))
      "t10k-labels-idx1-ubyte", Bytes(idxFile [ 2u ] [| 7uy; 1uy |]) ]

/// The CRC-32 of PNG chunks (ISO 3309), bit by bit.
let crc32 (bytes: byte[]) =
    let mutable c = 0xFFFFFFFFu
    for b in bytes do
        c <- c ^^^ uint32 b
        for _ in 1..8 do
            c <- if c &&& 1u <> 0u then 0xEDB88320u ^^^ (c >>> 1) else c >>> 1
    c ^^^ 0xFFFFFFFFu

/// A PNG chunk: length, type, data, CRC.
let chunk (kind: string) (data: byte[]) =
    let body = Array.append (Encoding.ASCII.GetBytes kind) data
    Array.concat [ be32 (uint32 data.Length); body; be32 (crc32 body) ]

/// A PNG declaring width x height at the bit depth and colour type given, with the scanlines
/// (each starting with its filter byte) as its zlib-compressed image data.
let png (width: uint32) (height: uint32) (bitDepth: byte) (colourType: byte) (scanlines: byte[]) =
    let ihdr = Array.concat [ be32 width; be32 height; [| bitDepth; colourType; 0uy; 0uy; 0uy |] ]
    let ms = new MemoryStream()
    do
        use z = new ZLibStream(ms, CompressionLevel.Optimal, leaveOpen = true)
        z.Write(scanlines, 0, scanlines.Length)
    Array.concat
        [ [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |]
          chunk "IHDR" ihdr
          chunk "IDAT" (ms.ToArray())
          chunk "IEND" [||] ]

/// A 28x28 8-bit grey PNG: a white bar on black.
let greyPng =
    png 28u 28u 8uy 0uy (Array.init (28 * 29) (fun k -> if k % 29 = 0 then 0uy elif k % 29 >= 12 && k % 29 <= 16 then 255uy else 0uy))

/// A 28x28 16-bit grey PNG of the same bar (two bytes a pixel, big-endian).
let grey16Png =
    png 28u 28u 16uy 0uy (Array.init (28 * 57) (fun k -> if k % 57 = 0 then 0uy elif (k % 57 - 1) / 2 >= 11 && (k % 57 - 1) / 2 <= 15 then 255uy else 0uy))

/// A P5 PGM of the given header and pixel bytes.
let pgm (header: string) (pixels: byte[]) = Array.append (Encoding.ASCII.GetBytes header) pixels

/// A case on the IDX files: `train` on the base set with files replaced.
let train name files code fragment =
    { Name = name; Files = baseSet @ files; Argv = [ "train"; "--iters"; "1"; "--batch"; "2"; "--data"; "{dir}" ]; Code = code; Fragment = fragment }

/// A case on an image file: `predict` of {dir}/name made of content.
let predictFile name (file: string) content code fragment =
    { Name = name; Files = [ file, content ]; Argv = [ "predict"; "--model"; "{model}"; $"{{dir}}/{file}" ]; Code = code; Fragment = fragment }

/// The corpus.
let cases: Case list =
    let images = "train-images-idx3-ubyte"
    let labels = "train-labels-idx1-ubyte"
    let testImages = "t10k-images-idx3-ubyte"
    let testLabels = "t10k-labels-idx1-ubyte"
    let bombSize = 16L + 1_960_000_000L
    [ // IDX: the control, then every way the header can lie
      train "the base set trains (the control)" [] 0 "done: iterations 1"
      train "images: empty file" [ images, Bytes [||] ] 1 "truncated: 0 bytes, shorter than the 16-byte IDX header"
      train "images: header cut after 8 bytes" [ images, Bytes((idxOf [ 4; 2; 2 ])[..7]) ] 1 "truncated: 8 bytes, shorter than the 16-byte IDX header"
      train "images: data cut short" [ images, Bytes(idxFile [ 4u; 2u; 2u ] (Array.zeroCreate 10)) ] 1 "truncated: the header announces 16 data bytes, the file has 10"
      train "images: a labels file in their place (wrong magic)" [ images, Bytes(idxOf [ 4 ]) ] 1 "wrong magic number 0x00000801, expected 0x00000803"
      train "images: a text file" [ images, Bytes(Encoding.ASCII.GetBytes "hello, this is not an IDX file\n") ] 1 "wrong magic number 0x68656C6C"
      train "images: zero images" [ images, Bytes(idxFile [ 0u; 2u; 2u ] [||]) ] 1 "the header announces 0 images"
      train "images: zero rows" [ images, Bytes(idxFile [ 4u; 0u; 2u ] [||]) ] 1 "the header announces 0 rows"
      train "images: zero columns" [ images, Bytes(idxFile [ 4u; 2u; 0u ] [||]) ] 1 "the header announces 0 columns"
      train "images: 2^31-1 images declared in a 16-byte file" [ images, Bytes(idxFile [ 0x7FFFFFFFu; 1u; 1u ] [||]) ] 1 "the header announces 2147483647 images, more than the 10000000 this reader accepts"
      train "images: 2^32-1 rows declared" [ images, Bytes(idxFile [ 1u; 0xFFFFFFFFu; 1u ] [||]) ] 1 "the header announces 4294967295 rows, more than the 4096"
      train "images: 4097 columns declared" [ images, Bytes(idxFile [ 1u; 1u; 4097u ] [||]) ] 1 "the header announces 4097 columns, more than the 4096"
      train "images: 7.8 GB declared (over the 2 GB cap)" [ images, Bytes(idxFile [ 10_000_000u; 28u; 28u ] [||]) ] 1 "10000000x28x28 = 7840000000 data bytes, more than the 2000000000"
      train "images: 1.96 GB declared in a 116-byte file" [ images, Bytes(idxFile [ 10_000_000u; 14u; 14u ] (Array.zeroCreate 100)) ] 1 "truncated: the header announces 1960000000 data bytes, the file has 100"
      train "images: trailing data" [ images, Bytes(idxFile [ 4u; 2u; 2u ] (Array.zeroCreate 20)) ] 1 "trailing data after the 16 bytes the header announces"
      train "images: a folder" [ images, Folder ] 1 $"{images}: is a folder, not a regular file"
      train "images: a FIFO (would block a reader)" [ images, Fifo ] 1 $"{images}: is a named pipe (FIFO), not a regular file"
      train "images: a character device like /dev/zero (would never end)" [ images, ZeroDevice ] 1 $"{images}: is a character device, not a regular file"
      train "images: a dangling link" [ images, Link "nowhere" ] 1 $"{images}: file not found"
      train "images: missing" [ images, Absent ] 1 $"{images}: file not found"
      train "labels: an images file in their place" [ labels, Bytes(idxOf [ 4; 2; 2 ]) ] 1 "wrong magic number 0x00000803, expected 0x00000801"
      train "labels: zero labels" [ labels, Bytes(idxFile [ 0u ] [||]) ] 1 "the header announces 0 labels"
      train "labels: 3 labels for 4 images" [ labels, Bytes(idxFile [ 3u ] [| 0uy; 1uy; 2uy |]) ] 1 "3 labels for the 4 images of"
      train "labels: 10,000,001 labels declared" [ labels, Bytes(idxFile [ 10_000_001u ] [||]) ] 1 "the header announces 10000001 labels, more than the 10000000"
      train "labels: out of range, named with its index" [ labels, Bytes(idxFile [ 4u ] [| 0uy; 1uy; 12uy; 3uy |]) ] 1 "label 12 at index 2 out of range 0-9"
      train "test labels: 255 at the last index" [ testLabels, Bytes(idxFile [ 2u ] [| 7uy; 255uy |]) ] 1 "label 255 at index 1 out of range 0-9"
      train "test images: another size than the training images" [ testImages, Bytes(idxOf [ 2; 3; 3 ]) ] 1 "images are 3x3, the training images 2x2"
      // gzip
      train "gzip: a valid compressed set trains (the control)" [ images, Absent; images + ".gz", Bytes(gzipped (idxFile [ 4u; 2u; 2u ] (Array.init 16 byte))) ] 0 "done: iterations 1"
      train "gzip: cut in half" [ images, Absent; images + ".gz", Bytes((gzipped (idxOf [ 4; 2; 2 ]))[..20]) ] 1 "corrupt gzip data"
      train "gzip: the magic and garbage" [ images, Absent; images + ".gz", Bytes(Array.append [| 0x1fuy; 0x8buy; 8uy; 0uy |] (Array.init 40 (fun i -> byte (i * 37)))) ] 1 "corrupt gzip data"
      train "gzip: header lies, honest footer" [ images, Absent; images + ".gz", Bytes(gzipped (idxFile [ 10_000_000u; 14u; 14u ] (Array.zeroCreate 100))) ] 1 "the gzip footer a content of 116 bytes"
      train "gzip: bomb-like, header and footer agree on 1.96 GB in a tiny file" [ images, Absent; images + ".gz", Bytes(withFooter (uint32 bombSize) (gzipped (idxFile [ 10_000_000u; 14u; 14u ] (Array.zeroCreate 100)))) ] 1 "gzip file can hold"
      train "gzip: footer damaged" [ labels, Absent; labels + ".gz", Bytes(withFooter 99u (gzipped (idxFile [ 4u ] [| 0uy; 1uy; 2uy; 3uy |]))) ] 1 "corrupt gzip data: the header announces 4 data bytes, the gzip footer a content of 99 bytes"
      // --data itself, and the other commands reading data
      { Name = "--data: a file"; Files = [ "plain", Bytes [| 1uy |] ]; Argv = [ "train"; "--data"; "{dir}/plain" ]; Code = 1; Fragment = "{dir}/plain: is a regular file, not a data directory" }
      { Name = "--data: a missing folder"; Files = []; Argv = [ "train"; "--data"; "{dir}/none" ]; Code = 1; Fragment = "{dir}/none: data directory not found" }
      { Name = "--data: a FIFO"; Files = [ "pipe", Fifo ]; Argv = [ "train"; "--data"; "{dir}/pipe" ]; Code = 1; Fragment = "{dir}/pipe: is a named pipe (FIFO), not a data directory" }
      { Name = "gradcheck: zero rows"; Files = baseSet @ [ images, Bytes(idxFile [ 4u; 0u; 2u ] [||]) ]; Argv = [ "gradcheck"; "--data"; "{dir}" ]; Code = 1; Fragment = "the header announces 0 rows" }
      { Name = "evaluate: test label out of range"; Files = baseSet @ [ testLabels, Bytes(idxFile [ 2u ] [| 7uy; 10uy |]) ]; Argv = [ "evaluate"; "--model"; "{model}"; "--data"; "{dir}" ]; Code = 1; Fragment = "label 10 at index 1 out of range 0-9" }
      { Name = "predict --index: truncated test images"; Files = baseSet @ [ testImages, Bytes(idxFile [ 2u; 28u; 28u ] (Array.zeroCreate 700)) ]; Argv = [ "predict"; "--model"; "{model}"; "--index"; "0"; "--data"; "{dir}" ]; Code = 1; Fragment = "truncated: the header announces 1568 data bytes, the file has 700" }
      // images for predict: controls first
      predictFile "png: an 8-bit grey 28x28 PNG is read (the control)" "bar.png" (Bytes greyPng) 0 "bar.png: predicted"
      predictFile "png: a 16-bit grey PNG is read too" "bar16.png" (Bytes grey16Png) 0 "bar16.png: predicted"
      predictFile "pgm: a P5 PGM is read (the control)" "bar.pgm" (Bytes(pgm "P5\n2 2\n255\n" [| 0uy; 255uy; 255uy; 0uy |])) 0 "bar.pgm: predicted"
      predictFile "png: 20000x20000 declared in about 100 bytes" "huge.png" (Bytes(png 20000u 20000u 8uy 0uy [| 0uy; 0uy; 0uy |])) 1 "the PNG header declares 20000x20000 pixels, more than the 4096x4096 this program reads"
      predictFile "png: 4097x1 declared" "wide.png" (Bytes(png 4097u 1u 8uy 0uy (Array.zeroCreate 4098))) 1 "the PNG header declares 4097x1 pixels, more than the 4096x4096"
      predictFile "png: zero width" "zero.png" (Bytes(png 0u 28u 8uy 0uy [||])) 1 "the PNG header declares 0x28 pixels: an image needs at least one"
      predictFile "png: cut short in its image data" "cut.png" (Bytes(greyPng[.. greyPng.Length - 30])) 1 "truncated PNG image: 28x28 pixels declared"
      predictFile "png: signature only" "sig.png" (Bytes(greyPng[..7])) 1 "truncated or damaged PNG: no IHDR header"
      predictFile "png: image data that is not zlib" "garbage.png" (Bytes(Array.concat [ greyPng[..32]; chunk "IDAT" (Array.init 64 (fun i -> byte (i * 91))); chunk "IEND" [||] ])) 1 "garbage.png: "
      predictFile "png: a text file named .png" "text.png" (Bytes(Encoding.ASCII.GetBytes "just some text, not a picture\n")) 1 "it is named .png but has no PNG signature"
      predictFile "png: an empty file named .png" "empty.png" (Bytes [||]) 1 "empty.png: empty file"
      predictFile "pgm: 20000x20000 declared in a tiny file" "huge.pgm" (Bytes(pgm "P5\n20000 20000\n255\n" (Array.zeroCreate 10))) 1 "the PGM header declares 20000x20000 pixels, more than the 4096x4096"
      predictFile "pgm: zero width" "zero.pgm" (Bytes(pgm "P5\n0 5\n255\n" [||])) 1 "the PGM header declares 0x5 pixels"
      predictFile "pgm: a width past 2^63" "long.pgm" (Bytes(pgm "P5\n99999999999999999999 5\n255\n" [||])) 1 "bad width in the PGM header"
      predictFile "pgm: pixel data cut short" "cut.pgm" (Bytes(pgm "P5\n28 28\n255\n" (Array.zeroCreate 10))) 1 "truncated: 28x28 pixels declared, 10 bytes of pixel data"
      predictFile "pgm: a P2 pixel that is not a number" "bad.pgm" (Bytes(Encoding.ASCII.GetBytes "P2\n2 2\n255\n0 1 x 3\n")) 1 "truncated or bad pixel value at pixel 2 of 4"
      predictFile "pgm: 16-bit" "deep.pgm" (Bytes(pgm "P5\n2 2\n65535\n" (Array.zeroCreate 8))) 1 "16-bit PGM images (maximum value 65535) are not read"
      predictFile "pgm: a pixel above the maximum value" "over.pgm" (Bytes(Encoding.ASCII.GetBytes "P2\n2 2\n100\n0 1 200 3\n")) 1 "pixel value 200 above the maximum value 100"
      predictFile "image: a folder" "folder.png" Folder 1 "folder.png: is a folder, not a regular file"
      predictFile "image: a FIFO" "pipe.png" Fifo 1 "pipe.png: is a named pipe (FIFO), not a regular file"
      predictFile "image: a character device like /dev/zero" "zero-device.png" ZeroDevice 1 "zero-device.png: is a character device, not a regular file"
      { Name = "image: missing"; Files = []; Argv = [ "predict"; "--model"; "{model}"; "{dir}/none.png" ]; Code = 1; Fragment = "{dir}/none.png: image file not found" }
      { Name = "--verbose is accepted anywhere (and changes nothing on success)"; Files = []; Argv = [ "demo"; "--verbose" ]; Code = 0; Fragment = "price: 715" } ]

/// The path of the CLI built next to the tests (an apphost: `Backprop.Cli`, `.exe` on Windows).
let cliPath =
    let name = if OperatingSystem.IsWindows() then "Backprop.Cli.exe" else "Backprop.Cli"
    Path.Combine(AppContext.BaseDirectory, name)

/// Runs the CLI as its own process with a 30-second limit: (exit code, stdout, stderr, seconds).
/// A run that is still going after 30 s is killed and fails the test.
let runCli (argv: string list) =
    let info = ProcessStartInfo(cliPath, argv, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    info.Environment["BACKPROP_PROGRESS"] <- "0"
    info.Environment.Remove "BACKPROP_DEBUG" |> ignore
    // loops jitted quickly first (the CLI asks for optimized code at once, for long training
    // runs): a third less start-up time for these short runs, the same behaviour
    info.Environment["DOTNET_TC_QuickJitForLoops"] <- "1"
    let clock = Stopwatch.StartNew()
    use p = Process.Start info
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 30_000) then
        p.Kill true
        failtest $"still running after 30 s: backprop %A{argv}"
    p.WaitForExit()
    p.ExitCode, out.Result, err.Result, clock.Elapsed.TotalSeconds

/// A small model for the commands that need one: trained by the CLI itself (one step, 5 hidden).
let model =
    lazy
        (let path = Path.Combine(Directory.CreateTempSubdirectory("backprop-hostile-").FullName, "small.npz")
         let code, _, err, _ = runCli [ "train"; "--iters"; "1"; "--hidden"; "5"; "--save"; path ]
         if code <> 0 then failwith $"could not train the model for the corpus: {err}"
         path)

/// Makes the files of a case in dir; false when a device node cannot be made here (not root).
let make (dir: string) (files: (string * Content) list) =
    let final = files |> List.fold (fun (m: Map<string, Content>) (name, c) -> m.Add(name, c)) Map.empty
    final
    |> Map.forall (fun name content ->
        let path = Path.Combine(dir, name)
        let tool (file: string) (args: string list) =
            use p = Process.Start(ProcessStartInfo(file, args, UseShellExecute = false, RedirectStandardError = true))
            p.StandardError.ReadToEnd() |> ignore
            p.WaitForExit()
            p.ExitCode = 0
        match content with
        | Bytes b -> File.WriteAllBytes(path, b); true
        | Folder -> Directory.CreateDirectory path |> ignore; true
        | Link target -> File.CreateSymbolicLink(path, Path.Combine(dir, target)) |> ignore; true
        | Absent -> true
        | Fifo -> tool "mkfifo" [ path ]
        | ZeroDevice -> tool "mknod" [ path; "c"; "1"; "5" ])

/// The test of one case.
let caseTest (c: Case) =
    test c.Name {
        let dir = Directory.CreateTempSubdirectory("backprop-hostile-").FullName
        if not (make dir c.Files) then skiptest "mknod or mkfifo is not allowed here (CI runs as root)"
        let fill (s: string) = s.Replace("{dir}", dir).Replace("{model}", if s.Contains "{model}" then model.Force() else "")
        let code, out, err, seconds = runCli (List.map fill c.Argv)
        let fragment = fill c.Fragment
        Expect.isLessThan seconds 30.0 "answered within 30 s"
        Expect.isFalse (err.Contains "   at ") $"no stack trace on stderr: {err}"
        Expect.isFalse (out.Contains "   at ") "no stack trace on stdout"
        if c.Code = 0 then
            Expect.equal (code, err) (0, "") "exit code 0, nothing on stderr"
            Expect.stringContains out fragment "the output"
        else
            Expect.equal code c.Code $"exit code (stderr: {err.Trim()})"
            let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 1 $"exactly one line on stderr: {err}"
            Expect.stringStarts lines[0] "backprop: " "the line names the program"
            Expect.stringContains lines[0] fragment "the line says what is wrong"
            Expect.isFalse (out.Contains "predicted") "no prediction made from a bad input"
    }

/// Runs body with stderr (and stdout) captured: (its result, stdout, stderr).
let captured (body: unit -> int) =
    let out, err = new StringWriter(), new StringWriter()
    let oldOut, oldErr = Console.Out, Console.Error
    Console.SetOut out
    Console.SetError err
    try
        let code = body ()
        code, out.ToString(), err.ToString()
    finally
        Console.SetOut oldOut
        Console.SetError oldErr

[<Tests>]
let tests =
    testList "hostile" [
        testList "corpus (the real CLI process)" (List.map caseTest cases)
        test "the corpus is large and its names distinct" {
            Expect.isGreaterThanOrEqual cases.Length 30 "30 cases or more"
            Expect.equal (cases |> List.distinctBy (fun c -> c.Name)).Length cases.Length "distinct names"
        }
        // The last line of defence, in-process (Console is process-wide: sequenced with the CLI tests).
        testSequencedGroup Common.console <| testList "last line of defence" [
            test "an exception nobody foresaw: one line, exit 70, the trace only when asked" {
                let code, _, err = captured (fun () -> Backprop.Cli.Program.guard false (fun () -> invalidOp "the bug\nsecond line"))
                Expect.equal code 70 "EX_SOFTWARE"
                Expect.equal
                    err
                    $"backprop: internal error: System.InvalidOperationException: the bug?second line (run with --verbose or BACKPROP_DEBUG=1 for the trace){Environment.NewLine}"
                    "one line, the newline in the message shown as ?"
                let code, _, err = captured (fun () -> Backprop.Cli.Program.guard true (fun () -> invalidOp "the bug"))
                Expect.equal code 70 "same code with the trace"
                Expect.stringStarts err "backprop: internal error: System.InvalidOperationException: the bug" "the line first"
                Expect.stringContains err "   at " "then the stack trace"
            }
            test "known failures keep their codes; wrappers are taken off" {
                for exn, expectedCode, expectedLine in
                    [ DataError("f.idx", "bad"), 1, "backprop: f.idx: bad"
                      OutputError("m.npz", "is a folder"), 1, "backprop: m.npz: is a folder"
                      AggregateException(DataError("t.idx", "in a task")) :> exn, 1, "backprop: t.idx: in a task"
                      Reflection.TargetInvocationException(IOException "disk gone") :> exn, 1, "backprop: disk gone"
                      Backprop.Cli.Commands.UsageError "--batch must be a positive integer, got 0", 2, "backprop: --batch must be a positive integer, got 0"
                      OutOfMemoryException() :> exn, 71, "backprop: out of memory"
                      DataError("evil\nname", "bad"), 1, "backprop: evil?name: bad" ] do
                    let code, _, err = captured (fun () -> Backprop.Cli.Program.guard false (fun () -> raise exn))
                    Expect.equal code expectedCode $"code for {exn.GetType().Name}"
                    Expect.stringStarts err expectedLine $"line for {exn.GetType().Name}"
                    Expect.equal (err.TrimEnd().Split('\n').Length) 1 "one line"
            }
            test "--verbose anywhere, or BACKPROP_DEBUG=1, asks for the trace" {
                Expect.isTrue (Backprop.Cli.Program.wantsTrace [| "train"; "--verbose"; "--iters"; "1" |]) "--verbose"
                let before = Environment.GetEnvironmentVariable "BACKPROP_DEBUG"
                try
                    Environment.SetEnvironmentVariable("BACKPROP_DEBUG", null)
                    Expect.isFalse (Backprop.Cli.Program.wantsTrace [| "train" |]) "neither"
                    Environment.SetEnvironmentVariable("BACKPROP_DEBUG", "1")
                    Expect.isTrue (Backprop.Cli.Program.wantsTrace [| "train" |]) "BACKPROP_DEBUG=1"
                finally
                    Environment.SetEnvironmentVariable("BACKPROP_DEBUG", before)
            }
        ]
    ]
