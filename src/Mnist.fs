namespace Backprop.Core

// The I/O edge of the core: reading IDX files (LeCun's MNIST format, gzip-compressed or raw)
// into Datasets. Bad files raise DataError with one line that names the file and the fault.

open System
open System.IO
open System.IO.Compression

/// A data file that cannot be used: the file and what is wrong with it.
exception DataError of file: string * problem: string with
    /// "file: problem", one line.
    override e.Message = $"{e.file}: {e.problem}"

/// Reading IDX files and MNIST-layout directories.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Mnist =
    /// The file names of the MNIST layout (Fashion-MNIST uses the same), without .gz.
    let trainImagesFile, trainLabelsFile = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    /// The test-set file names of the MNIST layout, without .gz.
    let testImagesFile, testLabelsFile = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"

    let private fail file problem = raise (DataError(file, problem))

    /// Opens a file for reading, through a gunzipping stream when it starts with the gzip magic
    /// bytes. For gzip, also returns the content length the file declares in its last 4 bytes.
    let private openIdx (path: string) : Stream * uint32 option =
        if not (File.Exists path) then fail path "file not found"
        let file = File.OpenRead path
        let head = Array.zeroCreate<byte> 2
        let isGzip = file.Read(head, 0, 2) = 2 && head[0] = 0x1fuy && head[1] = 0x8buy
        if isGzip && file.Length < 18L then file.Dispose(); fail path "corrupt gzip data (truncated)"
        if isGzip then
            let footer = Array.zeroCreate<byte> 4
            file.Seek(-4L, SeekOrigin.End) |> ignore
            file.ReadExactly(footer, 0, 4)
            file.Seek(0L, SeekOrigin.Begin) |> ignore
            new GZipStream(file, CompressionMode.Decompress) :> Stream, Some(BitConverter.ToUInt32(footer, 0))
        else
            file.Seek(0L, SeekOrigin.Begin) |> ignore
            file :> Stream, None

    /// Fills buffer from the stream as far as the stream goes; returns the bytes read.
    let private readUpTo (stream: Stream) (buffer: byte[]) =
        stream.ReadAtLeast(Span buffer, buffer.Length, throwOnEndOfStream = false)

    let private bigEndian (a: byte[]) offset =
        (int a[offset] <<< 24) ||| (int a[offset + 1] <<< 16) ||| (int a[offset + 2] <<< 8) ||| int a[offset + 3]

    /// Reads an IDX file of unsigned bytes with the given number of dimensions: its dimensions
    /// and its data. Checks the magic number and that the data is as long as the header says.
    /// Streams the file (gunzipping on the way), so the data is read straight into its array.
    let readIdx (path: string) (dimensions: int) : int[] * byte[] =
        let stream, declaredLength = openIdx path
        use stream = stream
        try
            let header = Array.zeroCreate<byte> (4 + 4 * dimensions)
            let got = readUpTo stream header
            let expected = 0x0800 ||| dimensions
            if got >= 4 && bigEndian header 0 <> expected then
                fail path $"wrong magic number 0x%08X{bigEndian header 0}, expected 0x%08X{expected} (an IDX file of unsigned bytes with %d{dimensions} dimension(s))"
            if got < header.Length then fail path $"truncated: %d{got} bytes, shorter than the %d{header.Length}-byte IDX header"
            let dims = Array.init dimensions (fun i -> bigEndian header (4 + 4 * i))
            let size = dims |> Array.fold (fun acc d -> acc * int64 d) 1L
            if dims |> Array.exists (fun d -> d < 0) || size > int64 Array.MaxLength then fail path $"invalid dimensions %A{dims}"
            let data = Array.zeroCreate<byte> (int size)
            let got = readUpTo stream data
            if got < data.Length then fail path $"truncated: the header announces %d{size} data bytes, the file has %d{got}"
            if stream.ReadByte() <> -1 then fail path $"trailing data after the %d{size} bytes the header announces"
            // A gzip file ends with the length of its content (mod 2^32): a damaged file that
            // inflates without an error still fails this check.
            match declaredLength with
            | Some n when n <> uint32 (int64 header.Length + size) -> fail path "corrupt gzip data (its length check fails)"
            | _ -> ()
            dims, data
        with :? InvalidDataException as e ->
            fail path $"corrupt gzip data ({e.Message.TrimEnd('.')})"

    /// The data/mnist folder in one of the given folders or in a folder above one of them (so a
    /// clone, a build output and an installed tool all find the MNIST that ships with them).
    let tryFindShipped (startingPoints: string list) : string option =
        let rec up (dir: DirectoryInfo) =
            if isNull dir then None
            else
                let candidate = Path.Combine(dir.FullName, "data", "mnist")
                if Directory.Exists candidate then Some candidate else up dir.Parent
        startingPoints |> List.tryPick (fun d -> up (DirectoryInfo d))

    /// The path of name in dir: name.gz if it exists, else the raw name.
    let resolve (dir: string) (name: string) =
        let gz = Path.Combine(dir, name + ".gz")
        if File.Exists gz then gz else Path.Combine(dir, name)

    /// Reads an image file and its label file into a Dataset, checking that they agree.
    let loadPair (imagesPath: string) (labelsPath: string) : Dataset =
        let dims, pixels = readIdx imagesPath 3
        let labelDims, labels = readIdx labelsPath 1
        if dims[0] <> labelDims[0] then
            fail labelsPath $"%d{labelDims[0]} labels for the %d{dims[0]} images of {imagesPath}"
        match labels |> Array.tryFind (fun l -> l > 9uy) with
        | Some l -> fail labelsPath $"label %d{l} out of range 0-9"
        | None -> ()
        { Pixels = pixels; Labels = labels; Count = dims[0]; Rows = dims[1]; Columns = dims[2] }

    /// Reads the training and test sets of a directory in the MNIST layout (the four files,
    /// each .gz or raw). Raises DataError naming the file when one is missing or malformed.
    let load (dir: string) : Dataset * Dataset =
        if not (Directory.Exists dir) then fail dir "data directory not found"
        // The test set loads on another core while the (six times larger) training set loads here.
        let testTask = Threading.Tasks.Task.Run(fun () -> loadPair (resolve dir testImagesFile) (resolve dir testLabelsFile))
        let train = loadPair (resolve dir trainImagesFile) (resolve dir trainLabelsFile)
        let test = testTask.GetAwaiter().GetResult() // rethrows its DataError as it is
        if test.PixelCount <> train.PixelCount then
            fail (resolve dir testImagesFile) $"images are %d{test.Rows}x%d{test.Columns}, the training images %d{train.Rows}x%d{train.Columns}"
        train, test
