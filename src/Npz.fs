namespace Backprop.Core

// Models on disk as NumPy .npz archives: the named parameters (W1, b1, W2, b2, ...), the layers'
// states and any extra arrays (an optimizer's state) as .npy arrays (float32 or float64, C
// order), and a `meta` array holding a JSON object: the format version, the layer list (kind and
// sizes of every layer, in order) and the training settings as typed values, so that
// `numpy.load("model.npz")` reads it all with no pickle. Version 1 files (the first release's:
// W/b arrays, "sizes" and "activation" in meta) still load. The I/O edge of the core, like
// Mnist.fs: bad files raise DataError naming the file and the fault.

open System
open System.IO
open System.IO.Compression
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open MathNet.Numerics.LinearAlgebra

/// A model read from an .npz file, in the precision it was saved in.
[<RequireQualifiedAccess>]
type SavedModel =
    /// float32 parameters.
    | Single of Model<float32>
    /// float64 parameters.
    | Double of Model<float>

    /// The model's layers.
    member m.Layers = match m with Single m -> m.Layers | Double m -> m.Layers

/// Everything an .npz model file holds.
type ModelFile =
    { /// The model, in its precision.
      Model: SavedModel
      /// The arrays that are neither parameters nor states (an optimizer's state), by name,
      /// as float64 copies of their row-major values with their shapes.
      Extras: Map<string, int[] * float[]>
      /// The metadata (training settings), each value as JSON.
      Metadata: Map<string, JsonNode>
      /// 1 for the first release's files, 2 for files that list their layers.
      Version: int }

/// Reading and writing models as NumPy .npz archives.
[<RequireQualifiedAccess>]
module Npz =
    let private fail file problem = raise (DataError(file, problem))

    /// One .npy array: its dtype descriptor ('<f4', '<f8', '<U12'), shape and raw little-endian
    /// bytes in C (row-major) order.
    type private NpyArray = { Descr: string; Shape: int[]; Data: byte[] }

    /// A shape as numpy writes it: (), (3,), (784, 50).
    let private shapeText (shape: int[]) =
        match shape with
        | [||] -> "()"
        | [| n |] -> $"(%d{n},)"
        | dims -> "(" + String.Join(", ", dims) + ")"

    /// The .npy bytes of an array: magic, version 1.0, a header dict padded so that the data
    /// starts at a multiple of 64 bytes, then the data.
    let private npyBytes (descr: string) (shape: int[]) (data: byte[]) =
        let dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shapeText shape}, }}"
        let unpadded = 10 + dict.Length + 1
        let header = dict + String(' ', (64 - unpadded % 64) % 64) + "\n"
        use out = new MemoryStream()
        let write (b: byte[]) = out.Write(b, 0, b.Length)
        write [| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y'; 1uy; 0uy |]
        write (BitConverter.GetBytes(uint16 header.Length))
        write (Encoding.ASCII.GetBytes header)
        write data
        out.ToArray()

    /// The most dimensions an .npy array may have (numpy's own limit before 2.0).
    let maxDims = 32

    /// The largest element size a dtype may state, in bytes (a '<U' string counts 4 a character).
    let private maxItemBytes = 1L <<< 20

    /// The CRC-32 table of zip (ISO-HDLC, the reflected polynomial 0xEDB88320).
    let private crcTable =
        Array.init 256 (fun n ->
            let mutable c = uint32 n
            for _ in 1..8 do
                c <- if c &&& 1u <> 0u then 0xEDB88320u ^^^ (c >>> 1) else c >>> 1
            c)

    /// A running CRC-32 (start from 0xFFFFFFFF, finish with xor 0xFFFFFFFF) continued over
    /// count bytes of buffer from offset.
    let private crcStep (crc: uint32) (buffer: byte[]) (offset: int) (count: int) =
        let mutable c = crc
        for k in offset .. offset + count - 1 do
            c <- crcTable[int ((c ^^^ uint32 buffer[k]) &&& 0xFFu)] ^^^ (c >>> 8)
        c

    /// The CRC-32 of bytes, as a zip archive records it for each entry.
    let crc32 (bytes: byte[]) : uint32 = crcStep 0xFFFFFFFFu bytes 0 bytes.Length ^^^ 0xFFFFFFFFu

    /// The longest .npy header read (numpy writes a few hundred bytes; numpy itself refuses
    /// more than 10,000 from a file it does not trust).
    let maxHeaderBytes = 65_536L

    /// Reads one archive entry as an .npy array, bounded: its header is read and checked first
    /// (magic, header length, dtype, shape: every dimension a non-negative integer, at most
    /// maxDims of them, their product in 64 bits times the element size equal to the data
    /// length the entry declares), and only then its data, into a buffer that grows as the data
    /// arrives and never past the declared length, so a small archive that declares a large
    /// entry never makes the process take that memory. The entry must hold exactly its
    /// declared length and match its CRC-32; when it does not, that damage is what is
    /// reported, whatever else is wrong. Raises DataError naming file and entry.
    let private readEntry (file: string) (entryName: string) (declared: int64) (expectedCrc: uint32) (s: Stream) : NpyArray =
        let mutable crc = 0xFFFFFFFFu
        let mutable got = 0L
        // Up to count bytes into buffer at offset: fewer only at the end of the entry.
        let read (buffer: byte[]) (offset: int) (count: int) =
            let n = s.ReadAtLeast(Span(buffer, offset, count), count, throwOnEndOfStream = false)
            crc <- crcStep crc buffer offset n
            got <- got + int64 n
            n
        // The rest of the entry read and counted, not kept (at most one byte past the declared
        // length): the damage found, if any.
        let damage () =
            let scratch = Array.zeroCreate 65_536
            let mutable more = true
            while more && got <= declared do
                more <- read scratch 0 (int (min 65_536L (declared + 1L - got))) > 0
            if got <> declared then Some $"{entryName}: the archive declares %d{declared} bytes, it holds another length"
            else
                let actual = crc ^^^ 0xFFFFFFFFu
                if actual <> expectedCrc then Some $"{entryName}: CRC-32 mismatch (the archive records %08x{expectedCrc}, the data gives %08x{actual}): the file is damaged"
                else None
        let bad what =
            match damage () with
            | Some d -> fail file d
            | None -> fail file $"{entryName}: {what}"
        let readExactly (count: int) =
            let b = Array.zeroCreate count
            if read b 0 count < count then bad "not a .npy array"
            b
        if declared < 10L then bad "not a .npy array"
        let magic = readExactly 8
        if magic[0] <> 0x93uy || Encoding.ASCII.GetString(magic, 1, 5) <> "NUMPY" then bad "not a .npy array"
        let headerLength, start =
            match magic[6] with
            | 1uy -> int64 (BitConverter.ToUInt16(readExactly 2, 0)), 10L
            | 2uy | 3uy when declared >= 12L -> int64 (BitConverter.ToUInt32(readExactly 4, 0)), 12L
            | v -> bad $"unsupported .npy version %d{v}"
        if declared < start + headerLength then bad $"truncated header (%d{headerLength} bytes declared, %d{declared - start} present)"
        if headerLength > maxHeaderBytes then bad $"a header of %d{headerLength} bytes, more than the %d{maxHeaderBytes} read"
        let header = Encoding.Latin1.GetString(readExactly (int headerLength))
        let field name pattern =
            let m = Regex.Match(header, $"'{name}'\\s*:\\s*{pattern}")
            if m.Success then m.Groups[1].Value else bad $"no '{name}' in the header"
        let descr = field "descr" "'([^']*)'"
        let fortran = field "fortran_order" "(True|False)" = "True"
        let dims = (field "shape" "\\(([^)]*)\\)").Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        if dims.Length > maxDims then bad $"%d{dims.Length} dimensions, more than the %d{maxDims} an array may have"
        let shape =
            dims
            |> Array.map (fun d ->
                match Int64.TryParse(d, Globalization.NumberStyles.None, Globalization.CultureInfo.InvariantCulture) with
                | true, n when n <= int64 Int32.MaxValue -> int n
                | true, n -> bad $"dimension %d{n} in the shape, more than %d{Int32.MaxValue}"
                | _ -> bad $"the shape ({String.Join(',', dims)}) is not a list of non-negative integers")
        // A dtype is a byte order ('<', '>', '|' or '='), a kind and a size in bytes ('<f8', '>i4',
        // '|u1'); a unicode string ('<U12') counts characters of 4 bytes. Objects ('|O') and
        // structured dtypes have no fixed size here and cannot be model arrays.
        let itemSize =
            let m = Regex.Match(descr, "^[<>|=]([a-zA-Z])(\\d{1,9})$")
            if not m.Success then bad $"dtype {descr} is not supported (a model holds float32 '<f4' or float64 '<f8' arrays)"
            let size = int64 m.Groups[2].Value
            let size = if m.Groups[1].Value = "U" then 4L * size else size
            if size > maxItemBytes then bad $"dtype {descr}: elements of %d{size} bytes, more than %d{maxItemBytes}"
            size
        // The product in 64 bits, stopping as soon as it passes what the data could hold.
        let dataLength = declared - start - headerLength
        let count =
            shape
            |> Array.fold (fun (acc: int64) d -> if acc > dataLength + 1L then acc else acc * int64 d) 1L
        if shape |> Array.contains 0 then
            if dataLength <> 0L then bad $"%d{dataLength} data bytes for the empty shape {shapeText shape}"
        elif count * itemSize <> dataLength then
            let stated = if count > dataLength then "more elements than the data holds" else $"%d{count * itemSize} bytes"
            bad $"%d{dataLength} data bytes for shape {shapeText shape} of {descr} ({stated})"
        if fortran && shape.Length > 2 then bad $"Fortran order with %d{shape.Length} dimensions is not read (save in C order)"
        // The data, into a buffer that doubles as the bytes arrive (from 64 KiB, at most
        // dataLength): an entry that ends early stops it with what it allocated so far.
        let mutable data: byte[] = Array.zeroCreate (int (min dataLength 65_536L))
        let mutable filled = 0
        let mutable ended = false
        while not ended && int64 filled < dataLength do
            if filled = data.Length then
                let bigger = Array.zeroCreate (int (min dataLength (2L * int64 data.Length)))
                Buffer.BlockCopy(data, 0, bigger, 0, filled)
                data <- bigger
            let asked = data.Length - filled
            let n = read data filled asked
            filled <- filled + n
            ended <- n < asked
        match damage () with
        | Some d -> fail file d
        | None -> ()
        let itemSize = int itemSize
        // Fortran order (column-major) is turned into C order here, so the rest sees one layout.
        if fortran && shape.Length = 2 && itemSize > 1 then
            let rows, cols = shape[0], shape[1]
            let c = Array.zeroCreate data.Length
            for i in 0 .. rows - 1 do
                for j in 0 .. cols - 1 do
                    Buffer.BlockCopy(data, (j * rows + i) * itemSize, c, (i * cols + j) * itemSize, itemSize)
            { Descr = descr; Shape = shape; Data = c }
        else
            { Descr = descr; Shape = shape; Data = data }

    /// The most entries an archive may list (a model of maxLayers layers needs far fewer).
    let maxEntries = 50_000

    /// The most layers a model file may list.
    let maxLayers = 10_000

    /// How many entries the zip's end-of-central-directory record (or its zip64 one) announces,
    /// read from the last 64 KiB of a seekable stream; None when there is no such record (the
    /// zip reader then says what is wrong).
    let private declaredEntries (stream: Stream) : int64 option =
        let length = stream.Length
        let tailLength = int (min length (65_557L))
        let tail = Array.zeroCreate tailLength
        stream.Position <- length - int64 tailLength
        stream.ReadExactly(tail, 0, tailLength)
        stream.Position <- 0L
        let at (k: int) = BitConverter.ToUInt32(tail, k)
        let eocd = seq { tailLength - 22 .. -1 .. 0 } |> Seq.tryFind (fun k -> at k = 0x06054b50u)
        match eocd with
        | None -> None
        | Some k ->
            let count = int64 (BitConverter.ToUInt16(tail, k + 10))
            if count <> 0xFFFFL then Some count
            elif k >= 20 && at (k - 20) = 0x07064b50u then
                // zip64: the locator gives the offset of the zip64 record, which holds the count
                let offset = BitConverter.ToInt64(tail, k - 20 + 8)
                if offset < 0L || offset + 56L > length then Some Int64.MaxValue
                else
                    let record = Array.zeroCreate 56
                    stream.Position <- offset
                    stream.ReadExactly(record, 0, 56)
                    stream.Position <- 0L
                    if BitConverter.ToUInt32(record, 0) <> 0x06064b50u then Some Int64.MaxValue
                    else Some(let n = BitConverter.ToInt64(record, 32) in if n < 0L then Int64.MaxValue else n)
            else Some count

    /// The largest .npz the reader accepts (declared, before inflating): 2 GiB in all.
    let maxBytes = 2L <<< 30

    /// The largest `meta` array the reader accepts: 1 MiB.
    let maxMetaBytes = 1L <<< 20

    let private bytesOf (values: 'T[]) =
        let bytes = Array.zeroCreate (Buffer.ByteLength values)
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length)
        bytes

    /// A JSON object of the given fields, in order.
    let private jsonObject (fields: (string * JsonNode) list) : JsonNode =
        JsonObject(fields |> List.map (fun (k, v) -> Collections.Generic.KeyValuePair(k, v))) :> JsonNode

    /// The JSON description of a layer: {"kind": "affine", "inputs": 784, "outputs": 50},
    /// {"kind": "relu"}, {"kind": "sigmoid"}, {"kind": "tanh"}, {"kind": "batchnorm", "size":
    /// 100}, {"kind": "dropout", "ratio": 0.5}.
    let private layerJson (layer: Layer) : JsonNode =
        let kind (k: string) = "kind", JsonValue.Create k :> JsonNode
        match layer with
        | Layer.Affine(i, o) -> jsonObject [ kind "affine"; "inputs", JsonValue.Create i; "outputs", JsonValue.Create o ]
        | Layer.Relu -> jsonObject [ kind "relu" ]
        | Layer.Sigmoid -> jsonObject [ kind "sigmoid" ]
        | Layer.Tanh -> jsonObject [ kind "tanh" ]
        | Layer.BatchNorm n -> jsonObject [ kind "batchnorm"; "size", JsonValue.Create n ]
        | Layer.Dropout r -> jsonObject [ kind "dropout"; "ratio", JsonValue.Create r ]

    /// The layer a JSON description names; None when it is not one.
    let private layerOf (node: JsonNode) : Result<Layer, string> =
        let text (name: string) = match node[name] with :? JsonValue as v -> (match v.TryGetValue<string>() with true, s -> Some s | _ -> None) | _ -> None
        let size (name: string) =
            match node[name] with
            | :? JsonValue as v -> (match v.TryGetValue<int>() with true, n when n > 0 -> Some n | _ -> None)
            | _ -> None
        match node with
        | :? JsonObject ->
            match text "kind" with
            | Some "affine" ->
                match size "inputs", size "outputs" with
                | Some i, Some o -> Ok(Layer.Affine(i, o))
                | _ -> Error "an affine layer needs positive integer inputs and outputs"
            | Some "relu" -> Ok Layer.Relu
            | Some "sigmoid" -> Ok Layer.Sigmoid
            | Some "tanh" -> Ok Layer.Tanh
            | Some "batchnorm" ->
                match size "size" with
                | Some n -> Ok(Layer.BatchNorm n)
                | None -> Error "a batchnorm layer needs a positive integer size"
            | Some "dropout" ->
                match node["ratio"] with
                | :? JsonValue as v ->
                    match v.TryGetValue<float>() with
                    | true, r when r >= 0.0 && r < 1.0 -> Ok(Layer.Dropout r)
                    | _ -> Error "a dropout layer needs a ratio in [0, 1)"
                | _ -> Error "a dropout layer needs a ratio in [0, 1)"
            | Some k -> Error $"unknown layer kind '{k}'"
            | None -> Error "a layer without a kind"
        | _ -> Error "a layer is not a JSON object"

    /// The .npy descr of an element type.
    let private descrOf<'T> () =
        if typeof<'T> = typeof<float32> then "<f4" elif typeof<'T> = typeof<float> then "<f8" else invalidArg "model" "only float32 and float64 models can be saved"

    /// "W1 holds a NaN or infinite value (element 3)" for the first named array that does.
    let private nonFinite (named: Named<'T>) : string option =
        named
        |> List.tryPick (fun (name, value) ->
            let index =
                match box (Value.toRowMajor value) with
                | :? (float32[]) as v -> Array.tryFindIndex (Single.IsFinite >> not) v
                | :? (float[]) as v -> Array.tryFindIndex (Double.IsFinite >> not) v
                | _ -> None
            index |> Option.map (fun k -> $"{name} holds a NaN or infinite value (element %d{k})"))

    /// Writes a model to a stream as an .npz archive: its named parameters and states, the
    /// extra named arrays (an optimizer's state; names must not clash with the model's), and
    /// `meta` (format 2, the layer list, the element type and the given metadata).
    let write (stream: Stream) (model: Model<'T>) (extras: Named<'T>) (metadata: (string * JsonNode) list) =
        let descr = descrOf<'T> ()
        let meta = JsonObject()
        meta["format"] <- JsonValue.Create "backprop-npz-2"
        meta["dtype"] <- JsonValue.Create(if descr = "<f4" then "float32" else "float64")
        meta["layers"] <- JsonArray(model.Layers |> List.map layerJson |> Array.ofList)
        for key, value in metadata do
            if not (meta.ContainsKey key) then meta[key] <- (if isNull value then null else value.DeepClone())
        let json = meta.ToJsonString()
        let utf32 = Encoding.UTF32.GetBytes json // numpy's '<U' dtype: UTF-32 little-endian
        let named = Network.parameters model @ Network.states model @ extras
        match nonFinite named with
        | Some problem -> invalidArg "model" $"not written: {problem}"
        | None -> ()
        match named |> List.countBy fst |> List.tryFind (fun (_, n) -> n > 1) with
        | Some(name, _) -> invalidArg "extras" $"two arrays named {name}"
        | None -> ()
        use zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen = true)
        let entry (name: string) (bytes: byte[]) =
            use s = zip.CreateEntry(name, CompressionLevel.Fastest).Open()
            s.Write(bytes, 0, bytes.Length)
        for name, value in named do
            entry $"{name}.npy" (npyBytes descr (Value.shape value) (bytesOf (Value.toRowMajor value)))
        entry "meta.npy" (npyBytes $"<U{json.Length}" [||] utf32)

    /// Saves a model (and extra named arrays, such as an optimizer's state) to an .npz file,
    /// atomically: the file is either the previous one or the complete new one.
    /// Written through SafeWrite.file: an output that cannot be written raises OutputError with
    /// one line naming the file. A model holding a NaN or an infinity is refused (DataError
    /// naming the file and the array) before anything is written.
    let saveWith (path: string) (model: Model<'T>) (extras: Named<'T>) (metadata: (string * JsonNode) list) =
        match nonFinite (Network.parameters model @ Network.states model @ extras) with
        | Some problem -> fail path $"not saved: {problem}"
        | None -> ()
        SafeWrite.file path (fun s -> write s model extras metadata)

    /// Saves a model's parameters, states and metadata to an .npz file, atomically.
    let save (path: string) (model: Model<'T>) (metadata: (string * JsonNode) list) = saveWith path model [] metadata

    /// Reads the arrays of an .npz archive by name (without .npy). Before inflating anything it
    /// checks the number of entries (maxEntries) and each entry's declared size (maxBytes in all,
    /// maxMetaBytes for meta); each entry's .npy header is checked against its declared size
    /// before its data is read, the data is inflated into a buffer that grows as it arrives and
    /// never past the declared size (an entry that inflates to more or less is refused), and its
    /// CRC-32 is checked against the one the archive records (readEntry). The stream is read once.
    let private readArrays (file: string) (stream: Stream) : Map<string, NpyArray> =
        try
            // A zip is read from its end: a stream that cannot seek (a pipe) is copied first.
            let seekable =
                if stream.CanSeek then stream
                else
                    let m = new MemoryStream()
                    let buffer = Array.zeroCreate 81920
                    let mutable n = stream.Read(buffer, 0, buffer.Length)
                    while n > 0 do
                        if m.Length + int64 n > maxBytes then fail file $"larger than the %d{maxBytes >>> 30} GiB a model file may be"
                        m.Write(buffer, 0, n)
                        n <- stream.Read(buffer, 0, buffer.Length)
                    m.Position <- 0L
                    m :> Stream
            match declaredEntries seekable with
            | Some n when n > int64 maxEntries -> fail file $"the archive announces %d{n} entries, more than the %d{maxEntries} a model file may hold"
            | _ -> ()
            use zip = new ZipArchive(seekable, ZipArchiveMode.Read, leaveOpen = true)
            if zip.Entries.Count > maxEntries then fail file $"%d{zip.Entries.Count} entries, more than the %d{maxEntries} a model file may hold"
            let entries = zip.Entries |> Seq.filter (fun e -> e.FullName.EndsWith ".npy") |> List.ofSeq
            match entries |> List.countBy (fun e -> e.FullName) |> List.tryFind (fun (_, n) -> n > 1) with
            | Some(name, n) -> fail file $"the archive holds %d{n} entries named {name}: which one is meant cannot be told"
            | None -> ()
            let total = entries |> List.sumBy (fun e -> e.Length)
            if total > maxBytes then fail file $"its arrays declare %d{total} bytes, more than the %d{maxBytes >>> 30} GiB a model file may hold"
            entries
            |> List.map (fun e ->
                let name = e.FullName[.. e.FullName.Length - 5]
                if name = "meta" && e.Length > maxMetaBytes then fail file $"meta: %d{e.Length} bytes, more than the %d{maxMetaBytes} a model's metadata may be"
                if e.Length > int64 Array.MaxLength then fail file $"{e.FullName}: %d{e.Length} bytes, more than one array may hold"
                use s = e.Open()
                name, readEntry file e.FullName e.Length e.Crc32 s)
            |> Map.ofList
        with
        | :? InvalidDataException as e -> fail file $"not a valid .npz (zip) archive ({e.Message.TrimEnd('.')})"
        | :? EndOfStreamException -> fail file "not a valid .npz (zip) archive (truncated)"
        // the zip reader's other complaints about a damaged directory (offsets past the end,
        // before the start, compression methods it does not know)
        | :? NotSupportedException as e -> fail file $"not a valid .npz (zip) archive ({e.Message.TrimEnd('.')})"
        | :? ArgumentException as e -> fail file $"not a valid .npz (zip) archive ({e.Message.TrimEnd('.')})"
        | :? IOException as e when not (e :? FileNotFoundException) -> fail file $"not a valid .npz (zip) archive ({e.Message.TrimEnd('.')})"

    /// The metadata held in an archive's `meta` array (empty when it has none).
    let private metadataOf (file: string) (arrays: Map<string, NpyArray>) : Map<string, JsonNode> =
        match arrays.TryFind "meta" with
        | Some a when a.Descr.StartsWith "<U" && a.Shape.Length <> 0 -> fail file $"meta has shape {shapeText a.Shape}; one string (shape ()) expected"
        | Some a when a.Descr.StartsWith "<U" ->
            let json = Encoding.UTF32.GetString(a.Data).TrimEnd('\000')
            let fields =
                try
                    match JsonNode.Parse json with
                    | :? JsonObject as o -> o |> Seq.map (fun kv -> kv.Key, kv.Value) |> List.ofSeq
                    | null -> fail file "meta: null, not a JSON object"
                    | other -> fail file $"meta: a JSON {other.GetValueKind().ToString().ToLowerInvariant()}, not a JSON object"
                with
                | :? JsonException as e -> fail file $"meta: not a JSON object ({e.Message.Split('.')[0]})"
                | :? ArgumentException as e -> fail file $"meta: not a usable JSON object ({e.Message.TrimEnd('.')})"
                | :? InvalidOperationException as e -> fail file $"meta: not a usable JSON object ({e.Message.TrimEnd('.')})"
            match fields |> List.countBy fst |> List.tryFind (fun (_, n) -> n > 1) with
            | Some(key, _) -> fail file $"meta: the key \"{key}\" appears twice"
            | None -> Map.ofList fields
        | Some a -> fail file $"meta has dtype {a.Descr}; a unicode string ('<U') expected"
        | None -> Map.empty

    /// A metadata value as text: a string as it is, any other JSON value as its JSON text.
    let text (value: JsonNode) : string =
        match value with
        | null -> "null"
        | :? JsonValue as v -> (match v.TryGetValue<string>() with true, s -> s | _ -> v.ToJsonString())
        | v -> v.ToJsonString()

    /// The layers of a version-1 file: Affine layers from the W arrays' shapes, the activation
    /// from meta's "activation" (ReLU when absent), as the first release saved them.
    let private layersV1 (file: string) (arrays: Map<string, NpyArray>) (meta: Map<string, JsonNode>) =
        let count = Seq.initInfinite id |> Seq.takeWhile (fun i -> arrays.ContainsKey $"W{i + 1}") |> Seq.length
        if count = 0 then fail file "no W1 array: not a Backprop model"
        let ws = [ for i in 1 .. count -> arrays[$"W{i}"] ]
        for i, w in List.indexed ws do
            if w.Shape.Length <> 2 then fail file $"W{i + 1} has shape {shapeText w.Shape}; a matrix expected"
            if w.Shape |> Array.exists (fun d -> d <= 0) then fail file $"W{i + 1} has shape {shapeText w.Shape}; a layer needs at least one input and one output"
            if i > 0 && w.Shape[0] <> ws[i - 1].Shape[1] then
                fail file $"W{i + 1} has %d{w.Shape[0]} rows but W{i} has %d{ws[i - 1].Shape[1]} columns: the layers do not connect"
        let sizes = ws[0].Shape[0] :: [ for w in ws -> w.Shape[1] ]
        match meta.TryFind "sizes" |> Option.map text with
        | Some s when s <> String.Join("-", sizes) -> fail file $"the arrays give %s{String.Join('-', sizes)}, the metadata says {s}"
        | _ -> ()
        let activation = if (meta.TryFind "activation" |> Option.map text) = Some "sigmoid" then Activation.Sigmoid else Activation.ReLU
        Network.layers activation sizes

    /// The layers a version-2 file lists in meta.
    let private layersV2 (file: string) (meta: Map<string, JsonNode>) =
        match meta.TryFind "layers" with
        | Some(:? JsonArray as a) when a.Count > maxLayers -> fail file $"meta: %d{a.Count} layers, more than the %d{maxLayers} a model may have"
        | Some(:? JsonArray as a) when a.Count > 0 ->
            a
            |> Seq.mapi (fun i node ->
                match layerOf node with
                | Ok l -> l
                | Error e -> fail file $"meta: layer %d{i + 1}: {e}")
            |> List.ofSeq
        | _ -> fail file "meta: no layer list (format backprop-npz-2 lists its layers)"

    /// Reads a model file from a stream (`file` names it in errors): a version-2 file by its
    /// layer list, a version-1 file or one written by numpy (`numpy.savez(path, W1=..., b1=...,
    /// ...)`) by its W arrays. Checks every name, shape, dtype and value; raises DataError with
    /// one line naming the file and what does not fit.
    let readFrom (file: string) (stream: Stream) : ModelFile =
        let arrays = readArrays file stream
        let meta = metadataOf file arrays
        let version = if (meta.TryFind "format" |> Option.map text) = Some "backprop-npz-2" then 2 else 1
        let layers = if version = 2 then layersV2 file meta else layersV1 file arrays meta
        // The affine layers must connect: each one's inputs are the previous one's outputs.
        let affines = layers |> List.choose (function Layer.Affine(i, o) -> Some(i, o) | _ -> None)
        for k, ((_, o), (i, _)) in List.pairwise affines |> List.indexed do
            if i <> o then fail file $"layer list: Affine %d{k + 2} takes %d{i} inputs, Affine %d{k + 1} gives %d{o}"
        Network.mismatch layers |> Option.iter (fun problem -> fail file $"layer list: {problem}")
        let names = Network.parameterNames layers @ Network.stateNames layers
        match names |> List.tryFind (arrays.ContainsKey >> not) with
        | Some name -> fail file $"missing array {name}"
        | None -> ()
        // What the layer list asks for is compared with what the arrays hold before the
        // template below allocates it: a tiny file listing huge layers is refused here.
        let asked = layers |> List.sumBy (function Layer.Affine(i, o) -> int64 i * int64 o + int64 o | _ -> 0L)
        let held = arrays |> Map.fold (fun sum name a -> if name = "meta" then sum else sum + int64 a.Data.Length / 4L) 0L
        if asked > held then fail file $"the layer list asks for %d{asked} parameters, the arrays hold at most %d{held}"
        let descr =
            match names |> List.tryPick arrays.TryFind with
            | Some a -> a.Descr
            | None -> fail file "no parameter arrays"
        if descr <> "<f4" && descr <> "<f8" then fail file $"{List.head names} has dtype {descr}; float32 ('<f4') or float64 ('<f8') expected"
        let array name =
            match arrays.TryFind name with
            | Some a when a.Descr <> descr -> fail file $"{name} has dtype {a.Descr}, {List.head names} has {descr}: one precision for all arrays"
            | Some a -> a
            | None -> fail file $"missing array {name}"
        let floats (a: NpyArray) (make: int -> 'T[]) size =
            let v = make (a.Data.Length / size)
            Buffer.BlockCopy(a.Data, 0, v, 0, a.Data.Length)
            v
        let build (convert: NpyArray -> 'T[]) (finite: 'T -> bool) : Model<'T> =
            // A parameter must have the shape its layer gives; a state array is read in its own
            // shape (a Dropout layer keeps a key or a mask) and checked by its layer below.
            let value name (expected: int[] option) : Value<'T> =
                let a = array name
                let shape = defaultArg expected a.Shape
                if a.Shape <> shape then fail file $"{name} has shape {shapeText a.Shape}; {shapeText shape} expected for the layers %s{String.Join('-', Network.sizes layers)}"
                if shape.Length < 1 || shape.Length > 2 then fail file $"{name} has shape {shapeText a.Shape}; a vector or a matrix expected"
                let v = convert a
                match Array.tryFindIndex (finite >> not) v with
                | Some k -> fail file $"{name} holds a NaN or infinite value (element %d{k})"
                | None -> ()
                match shape with
                | [| r; c |] -> Value.Matrix(Matrix<'T>.Build.DenseOfRowMajor(r, c, v))
                | _ -> Value.Vector(Vector<'T>.Build.Dense v)
            let parameters = Network.parameterShapes layers |> List.map (fun (name, shape) -> name, value name (Some shape))
            let states = Network.stateNames layers |> List.map (fun name -> name, value name None)
            try
                Network.build layers parameters states
            with :? ArgumentException as e -> fail file (e.Message.Split(" (Parameter")[0])
        let model =
            if descr = "<f4" then SavedModel.Single(build (fun a -> floats a Array.zeroCreate<float32> 4) Single.IsFinite)
            else SavedModel.Double(build (fun a -> floats a Array.zeroCreate<float> 8) Double.IsFinite)
        let extras =
            arrays
            |> Map.filter (fun name _ -> name <> "meta" && not (List.contains name names) && not (version = 1 && Text.RegularExpressions.Regex.IsMatch(name, "^[Wb]\\d+$")))
            |> Map.map (fun name a ->
                let values =
                    match a.Descr with
                    | "<f4" -> floats a Array.zeroCreate<float32> 4 |> Array.map float
                    | "<f8" -> floats a Array.zeroCreate<float> 8
                    | d -> fail file $"{name} has dtype {d}; float32 or float64 expected"
                a.Shape, values)
        { Model = model; Extras = extras; Metadata = meta; Version = version }

    /// Reads a model file (see readFrom).
    let read (path: string) : ModelFile =
        if not (File.Exists path) then fail path "file not found"
        use stream = File.OpenRead path
        readFrom path stream

    /// Reads the model of an .npz file saved by `save` or by numpy (see readFrom).
    let load (path: string) : SavedModel = (read path).Model

    /// The metadata of an .npz model file as text (empty when it has none).
    let metadata (path: string) : Map<string, string> = (read path).Metadata |> Map.map (fun _ v -> text v)

    /// Every numeric array of an .npz archive (a model's or any numpy.savez output: float32,
    /// float64, signed and unsigned integers, bool), by name, as its shape and its row-major
    /// values converted to float64 (exact for floats and for integers up to 2⁵³).
    let readAll (path: string) : Map<string, int[] * float[]> =
        if not (File.Exists path) then fail path "file not found"
        use stream = File.OpenRead path
        readArrays path stream
        |> Map.filter (fun _ a -> not (a.Descr.Contains 'U'))
        |> Map.map (fun name a ->
            let values =
                match a.Descr.Substring 1 with
                | "f4" -> Array.init (a.Data.Length / 4) (fun i -> float (BitConverter.ToSingle(a.Data, 4 * i)))
                | "f8" -> Array.init (a.Data.Length / 8) (fun i -> BitConverter.ToDouble(a.Data, 8 * i))
                | "i1" -> a.Data |> Array.map (fun b -> float (sbyte b))
                | "u1" | "b1" -> a.Data |> Array.map float
                | "i2" -> Array.init (a.Data.Length / 2) (fun i -> float (BitConverter.ToInt16(a.Data, 2 * i)))
                | "i4" -> Array.init (a.Data.Length / 4) (fun i -> float (BitConverter.ToInt32(a.Data, 4 * i)))
                | "i8" -> Array.init (a.Data.Length / 8) (fun i -> float (BitConverter.ToInt64(a.Data, 8 * i)))
                | d -> fail path $"{name} has dtype {a.Descr}, not a number type read here ({d})"
            if a.Descr.StartsWith '>' then fail path $"{name} is big-endian ({a.Descr})"
            a.Shape, values)

    /// An optimizer as JSON: a list of its transformations, each {"name": "adam", "lr": 0.001,
    /// "beta1": 0.9, "beta2": 0.999}.
    let optimizerJson (spec: OptimizerSpec list) : JsonNode =
        JsonArray(
            spec
            |> List.map (fun s -> jsonObject (("name", JsonValue.Create(Optimizer.name s) :> JsonNode) :: (Optimizer.hyperparameters s |> List.map (fun (k, v) -> k, JsonValue.Create v :> JsonNode))))
            |> Array.ofList
        )

    /// The optimizer optimizerJson describes; Error names what is wrong.
    let optimizerOf (node: JsonNode) : Result<OptimizerSpec list, string> =
        match node with
        | :? JsonArray as a ->
            a
            |> Seq.map (fun t ->
                match t with
                | :? JsonObject as o ->
                    match o["name"] with
                    | :? JsonValue as n when (fst (n.TryGetValue<string>())) ->
                        let numbers =
                            o
                            |> Seq.filter (fun kv -> kv.Key <> "name")
                            |> Seq.map (fun kv ->
                                match kv.Value with
                                | :? JsonValue as v when fst (v.TryGetValue<float>()) -> Ok(kv.Key, v.GetValue<float>())
                                | _ -> Error $"{kv.Key} is not a number")
                            |> List.ofSeq
                        match numbers |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
                        | Some e -> Error e
                        | None -> Optimizer.specOf (n.GetValue<string>()) (numbers |> List.choose (function Ok kv -> Some kv | Error _ -> None))
                    | _ -> Error "a transformation without a name"
                | _ -> Error "a transformation is not a JSON object")
            |> Seq.fold (fun acc r -> match acc, r with Ok l, Ok s -> Ok(l @ [ s ]) | Error e, _ | _, Error e -> Error e) (Ok [])
        | _ -> Error "not a list of transformations"

    /// Saves a training state: the model, the optimizer's state arrays as extra arrays (m.W1,
    /// v.W1, ...), and in meta the optimizer ("optimizer", as optimizerJson) and the steps taken
    /// ("step"), atomically. trainState and loadState read it back.
    let saveState (path: string) (optimizer: Optimizer<'T>) (state: TrainState<'T>) (metadata: (string * JsonNode) list) =
        saveWith path state.Model state.Optimizer (("optimizer", optimizerJson optimizer.Spec) :: ("step", JsonValue.Create state.Step :> JsonNode) :: metadata)

    /// The optimizer (as data) and the training state a model file holds, as saveState saved
    /// them: the model in 'T (which must be the file's precision), the optimizer's state arrays
    /// from its extras in the order the optimizer's Init makes them, and the step count. A file
    /// without an optimizer gives [] and an empty state (Training.start's). Training on from it
    /// with `Training.stepWith (Optimizer.ofSpec spec)` continues the saved run exactly. Raises
    /// ArgumentException naming what is missing or does not fit.
    let trainState<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> (file: ModelFile) : OptimizerSpec list * TrainState<'T> =
        let model: Model<'T> =
            match file.Model with
            | SavedModel.Single m when typeof<'T> = typeof<float32> -> unbox (box m)
            | SavedModel.Double m when typeof<'T> = typeof<float> -> unbox (box m)
            | SavedModel.Single _ -> invalidArg "file" $"the file holds a float32 model, not {typeof<'T>.Name}"
            | SavedModel.Double _ -> invalidArg "file" $"the file holds a float64 model, not {typeof<'T>.Name}"
        let spec =
            match file.Metadata.TryFind "optimizer" with
            | Some node ->
                match optimizerOf node with
                | Ok spec -> spec
                | Error e -> invalidArg "file" $"meta: optimizer: {e}"
            | None -> []
        let step =
            match file.Metadata.TryFind "step" with
            | Some(:? JsonValue as v) when fst (v.TryGetValue<int>()) && v.GetValue<int>() >= 0 -> v.GetValue<int>()
            | Some _ -> invalidArg "file" "meta: step is not a count of steps"
            | None -> 0
        let parameters = Network.parameters model
        let value (name: string) (like: Value<'T>) : Value<'T> =
            match file.Extras.TryFind name with
            | Some(shape, values) when shape = Value.shape like ->
                let elements: 'T[] =
                    if typeof<'T> = typeof<float> then unbox (box values) else unbox (box (Array.map float32 values))
                match like with
                | Value.Matrix _ -> Value.Matrix(Matrix<'T>.Build.DenseOfRowMajor(shape[0], shape[1], elements))
                | Value.Vector _ -> Value.Vector(Vector<'T>.Build.Dense elements)
            | Some(shape, _) -> invalidArg "file" $"{name} has shape {shapeText shape}; {shapeText (Value.shape like)} expected"
            | None -> invalidArg "file" $"missing optimizer state array {name}"
        let state =
            [ for s in spec do
                  for slot in Optimizer.slots s do
                      for name, p in parameters -> $"{slot}.{name}", value $"{slot}.{name}" p ]
        spec, { Model = model; Optimizer = state; Step = step }

    /// Reads a training state from a file saved by saveState (see trainState); raises DataError
    /// naming the file and what is wrong.
    let loadState<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType and 'T :> IEquatable<'T> and 'T :> IFormattable> (path: string) : OptimizerSpec list * TrainState<'T> =
        let file = read path
        try
            trainState<'T> file
        with :? ArgumentException as e -> fail path (e.Message.Split(" (Parameter")[0])
