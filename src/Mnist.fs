namespace Backprop.Core

#nowarn "9" // the address of a fresh array, for madvise

// The I/O edge of the core: reading IDX files (LeCun's MNIST format, gzip-compressed or raw)
// into Datasets. Bad files raise DataError with one line that names the file and the fault.

open System
open System.IO
open System.IO.Compression
open System.Runtime.InteropServices
open Microsoft.FSharp.NativeInterop

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

    /// The most images (or labels) an IDX file may announce.
    let maxCount = 10_000_000

    /// The most rows, and the most columns, an image may announce.
    let maxSide = 4096

    /// The most data bytes (the product of the dimensions) an IDX file may announce: 2 GB.
    let maxDataBytes = 2_000_000_000L

    /// The most bytes deflate can expand one compressed byte into: a gzip file of n bytes can
    /// hold at most about 1032 n bytes of content, whatever its footer says.
    let private deflateMaxRatio = 1032L

    /// Opens a regular file for reading, through a gunzipping stream when it starts with the gzip
    /// magic bytes. Returns the stream, the file's length and, for gzip, the content length the
    /// file declares in its last 4 bytes (mod 2^32). A folder, a device or a FIFO is refused
    /// before it is opened (a FIFO would block, a device never end).
    let private openIdx (path: string) : Stream * int64 * uint32 option =
        match FileKind.ofTarget path with
        | FileKind.Regular -> ()
        | FileKind.Missing -> fail path "file not found"
        | kind -> fail path $"is {FileKind.describe kind}, not a regular file"
        let file =
            try File.OpenRead path
            with
            | :? UnauthorizedAccessException -> fail path "permission denied"
            | :? IOException as e -> fail path $"cannot be opened: {e.Message.TrimEnd('.')}"
        let head = Array.zeroCreate<byte> 2
        let isGzip = file.Read(head, 0, 2) = 2 && head[0] = 0x1fuy && head[1] = 0x8buy
        if isGzip && file.Length < 18L then file.Dispose(); fail path "corrupt gzip data (truncated)"
        if isGzip then
            let footer = Array.zeroCreate<byte> 4
            file.Seek(-4L, SeekOrigin.End) |> ignore
            file.ReadExactly(footer, 0, 4)
            file.Seek(0L, SeekOrigin.Begin) |> ignore
            new GZipStream(file, CompressionMode.Decompress) :> Stream, file.Length, Some(BitConverter.ToUInt32(footer, 0))
        else
            file.Seek(0L, SeekOrigin.Begin) |> ignore
            file :> Stream, file.Length, None

    [<DllImport("libc", EntryPoint = "madvise")>]
    extern int private madvise(nativeint address, unativeint length, int advice)

    /// An array of n bytes for a file's data, not cleared (the file fills it). On Linux, an array
    /// of 4 MB or more (MNIST's training and test images) has its whole pages mapped in one call
    /// (madvise MADV_POPULATE_WRITE, Linux 5.14 and later) before the file is read into it:
    /// filling fresh memory otherwise takes a page fault every 4 KB, 11,500 for MNIST's training
    /// images, each several microseconds on a virtual machine. `load` of MNIST took 140-145 ms
    /// instead of 193-208 ms (docs/PERFORMANCE.md, "train's start, looked at a third time"). The
    /// pages stay ordinary 4 KB ones. Only a hint: refused (an older kernel, another system),
    /// nothing changes but the time.
    let private freshData (n: int) : byte[] =
        let data = GC.AllocateUninitializedArray<byte> n
        if OperatingSystem.IsLinux() && n >= 4 * 1024 * 1024 then
            try
                use p = fixed data
                let address = NativePtr.toNativeInt p |> int64
                let page = 4096L
                let first = (address + page - 1L) / page * page
                let last = (address + int64 n) / page * page
                madvise (nativeint first, unativeint (last - first), 23 (* MADV_POPULATE_WRITE *)) |> ignore
            with _ -> ()
        data

    /// Fills buffer from the stream as far as the stream goes; returns the bytes read.
    let private readUpTo (stream: Stream) (buffer: byte[]) =
        stream.ReadAtLeast(Span buffer, buffer.Length, throwOnEndOfStream = false)

    /// A big-endian 32-bit field, unsigned (a dimension of 0x80000000 or more is large, not negative).
    let private bigEndian (a: byte[]) offset =
        (uint32 a[offset] <<< 24) ||| (uint32 a[offset + 1] <<< 16) ||| (uint32 a[offset + 2] <<< 8) ||| uint32 a[offset + 3]

    /// What each dimension of an IDX file with n dimensions counts, for messages.
    let private dimensionNames (n: int) =
        match n with
        | 1 -> [| "labels" |]
        | 3 -> [| "images"; "rows"; "columns" |]
        | _ -> [| "records"; "entries per record" |]

    /// Checks the dimensions against the caps (all 64-bit arithmetic, before anything is
    /// allocated) and returns the number of data bytes they announce.
    let private checkedSize (path: string) (dims: uint32[]) =
        let names = dimensionNames dims.Length
        dims
        |> Array.iteri (fun i d ->
            let cap = if i = 0 then int64 maxCount else int64 maxSide
            if d = 0u then fail path $"the header announces 0 {names[i]}"
            if int64 d > cap then fail path $"the header announces %d{d} {names[i]}, more than the %d{cap} this reader accepts")
        let size = dims |> Array.fold (fun acc d -> acc * int64 d) 1L // at most 10^7 * 4096^(n-1): no overflow for n <= 3
        if size > maxDataBytes then
            let shape = dims |> Array.map string |> String.concat "x"
            fail path $"the header announces {shape} = %d{size} data bytes, more than the %d{maxDataBytes} this reader accepts"
        size

    /// Reads an IDX file of unsigned bytes with the given number of dimensions (1 to 3): its
    /// dimensions and its data. Checks the magic number, that every dimension is positive and
    /// within the caps (maxCount records, maxSide rows and columns, maxDataBytes in all), and,
    /// before allocating the data, that the file can hold what the header announces: a raw file
    /// by its length, a gzip file by the length in its footer and the most deflate can expand.
    /// Streams the file (gunzipping on the way), so the data is read straight into its array.
    let readIdx (path: string) (dimensions: int) : int[] * byte[] =
        if dimensions < 1 || dimensions > 3 then invalidArg (nameof dimensions) $"IDX files of 1 to 3 dimensions are read, not %d{dimensions}"
        let stream, fileLength, declaredLength = openIdx path
        use stream = stream
        try
            let header = Array.zeroCreate<byte> (4 + 4 * dimensions)
            let got = readUpTo stream header
            let expected = 0x0800u ||| uint32 dimensions
            if got >= 4 && bigEndian header 0 <> expected then
                fail path $"wrong magic number 0x%08X{bigEndian header 0}, expected 0x%08X{expected} (an IDX file of unsigned bytes with %d{dimensions} dimension(s))"
            // a gzip file cut short inflates without an error: say what it is
            let truncated detail = fail path (if declaredLength.IsSome then $"corrupt gzip data (truncated): {detail}" else $"truncated: {detail}")
            if got < header.Length then truncated $"%d{got} bytes, shorter than the %d{header.Length}-byte IDX header"
            let dims = Array.init dimensions (fun i -> bigEndian header (4 + 4 * i))
            let size = checkedSize path dims
            let total = int64 header.Length + size
            match declaredLength with
            | None ->
                if fileLength < total then fail path $"truncated: the header announces %d{size} data bytes, the file has %d{fileLength - int64 header.Length}"
                if fileLength > total then fail path $"trailing data after the %d{size} bytes the header announces"
            | Some n ->
                // A gzip file ends with the length of its content (mod 2^32), and deflate expands
                // at most 1032:1: a header that announces more than either is refused unread.
                if n <> uint32 total then
                    fail path $"corrupt gzip data: the header announces %d{size} data bytes, the gzip footer a content of %d{n} bytes (mod 2^32)"
                if total > fileLength * deflateMaxRatio then
                    fail path $"corrupt gzip data: the header announces %d{size} data bytes, more than a %d{fileLength}-byte gzip file can hold"
            let data = freshData (int size) // every byte is read into, or the read fails below
            let got = readUpTo stream data
            if got < data.Length then truncated $"the header announces %d{size} data bytes, the file has %d{got}"
            if stream.ReadByte() <> -1 then fail path $"trailing data after the %d{size} bytes the header announces"
            Array.map int dims, data
        with
        | :? InvalidDataException as e -> fail path $"corrupt gzip data ({e.Message.TrimEnd('.')})"
        | :? IOException as e -> fail path $"cannot be read: {e.Message.TrimEnd('.')}"

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
        match labels |> Array.tryFindIndex (fun l -> l > 9uy) with
        | Some i -> fail labelsPath $"label %d{labels[i]} at index %d{i} out of range 0-9"
        | None -> ()
        { Pixels = pixels; Labels = labels; Count = dims[0]; Rows = dims[1]; Columns = dims[2] }

    /// Reads the training and test sets of a directory in the MNIST layout (the four files,
    /// each .gz or raw). Raises DataError naming the file when one is missing or malformed.
    let load (dir: string) : Dataset * Dataset =
        match FileKind.ofTarget dir with
        | FileKind.Directory -> ()
        | FileKind.Missing -> fail dir "data directory not found"
        | kind -> fail dir $"is {FileKind.describe kind}, not a data directory (give the folder that holds the four IDX files)"
        // The test set loads on another core while the (six times larger) training set loads here.
        let testTask = Threading.Tasks.Task.Run(fun () -> loadPair (resolve dir testImagesFile) (resolve dir testLabelsFile))
        let train = loadPair (resolve dir trainImagesFile) (resolve dir trainLabelsFile)
        let test = testTask.GetAwaiter().GetResult() // rethrows its DataError as it is
        if test.PixelCount <> train.PixelCount then
            fail (resolve dir testImagesFile) $"images are %d{test.Rows}x%d{test.Columns}, the training images %d{train.Rows}x%d{train.Columns}"
        train, test
