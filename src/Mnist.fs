namespace Backprop

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
[<RequireQualifiedAccess>]
module Mnist =
    /// The file names of the MNIST layout (Fashion-MNIST uses the same), without .gz.
    let trainImagesFile, trainLabelsFile = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    /// The test-set file names of the MNIST layout, without .gz.
    let testImagesFile, testLabelsFile = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"

    let private fail file problem = raise (DataError(file, problem))

    /// The whole content of a file, gunzipped when it starts with the gzip magic bytes.
    let private readBytes (path: string) =
        if not (File.Exists path) then fail path "file not found"
        let raw = File.ReadAllBytes path
        if raw.Length >= 2 && raw[0] = 0x1fuy && raw[1] = 0x8buy then
            try
                use gz = new GZipStream(new MemoryStream(raw), CompressionMode.Decompress)
                use out = new MemoryStream()
                gz.CopyTo out
                // A gzip file ends with the length of its content (mod 2^32): a truncated or
                // damaged file that inflates without an error still fails this check.
                let size = BitConverter.ToUInt32(raw, raw.Length - 4)
                if raw.Length < 18 || uint32 out.Length <> size then fail path "corrupt gzip data (truncated or damaged)"
                out.ToArray()
            with :? InvalidDataException as e -> fail path $"corrupt gzip data ({e.Message.TrimEnd('.')})"
        else
            raw

    let private bigEndian (a: byte[]) offset =
        (int a[offset] <<< 24) ||| (int a[offset + 1] <<< 16) ||| (int a[offset + 2] <<< 8) ||| int a[offset + 3]

    /// Reads an IDX file of unsigned bytes with the given number of dimensions: its dimensions
    /// and its data. Checks the magic number and that the data is as long as the header says.
    let readIdx (path: string) (dimensions: int) : int[] * byte[] =
        let bytes = readBytes path
        let header = 4 + 4 * dimensions
        let expected = 0x0800 ||| dimensions
        if bytes.Length >= 4 && bigEndian bytes 0 <> expected then
            fail path $"wrong magic number 0x%08X{bigEndian bytes 0}, expected 0x%08X{expected} (an IDX file of unsigned bytes with %d{dimensions} dimension(s))"
        if bytes.Length < header then fail path $"truncated: %d{bytes.Length} bytes, shorter than the %d{header}-byte IDX header"
        let dims = Array.init dimensions (fun i -> bigEndian bytes (4 + 4 * i))
        if dims |> Array.exists (fun d -> d < 0) then fail path $"invalid dimensions %A{dims}"
        let size = dims |> Array.fold (fun acc d -> acc * int64 d) 1L
        let available = int64 (bytes.Length - header)
        if available < size then fail path $"truncated: the header announces %d{size} data bytes, the file has %d{available}"
        if available > size then fail path $"%d{available - size} bytes of trailing data after the %d{size} the header announces"
        dims, bytes[header..]

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
        let train = loadPair (resolve dir trainImagesFile) (resolve dir trainLabelsFile)
        let test = loadPair (resolve dir testImagesFile) (resolve dir testLabelsFile)
        if test.PixelCount <> train.PixelCount then
            fail (resolve dir testImagesFile) $"images are %d{test.Rows}x%d{test.Columns}, the training images %d{train.Rows}x%d{train.Columns}"
        train, test
