namespace Backprop

// Models on disk as NumPy .npz archives: W1, b1, W2, b2, ... as .npy arrays (float32 or
// float64, C order) and a `meta` array holding a JSON string with the architecture and the
// training settings, so that `numpy.load("model.npz")` reads it with no pickle. The I/O edge of
// the core, like Mnist.fs: bad files raise DataError naming the file and the fault.

open System
open System.IO
open System.IO.Compression
open System.Text
open System.Text.Json
open System.Text.RegularExpressions
open MathNet.Numerics.LinearAlgebra

/// A model read from an .npz file, in the precision it was saved in.
[<RequireQualifiedAccess>]
type SavedModel =
    /// float32 parameters.
    | Single of Model<float32>
    /// float64 parameters.
    | Double of Model<float>

/// Reading and writing models as NumPy .npz archives.
[<RequireQualifiedAccess>]
module Npz =
    let private fail file problem = raise (DataError(file, problem))

    /// One .npy array: its dtype descriptor ('<f4', '<f8', '<U12'), shape and raw little-endian
    /// bytes in C (row-major) order.
    type private NpyArray = { Descr: string; Shape: int[]; Data: byte[] }

    /// The .npy bytes of an array: magic, version 1.0, a header dict padded so that the data
    /// starts at a multiple of 64 bytes, then the data.
    let private npyBytes (descr: string) (shape: int[]) (data: byte[]) =
        let shapeText =
            match shape with
            | [||] -> "()"
            | [| n |] -> $"(%d{n},)"
            | dims -> "(" + String.Join(", ", dims) + ")"
        let dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shapeText}, }}"
        let unpadded = 10 + dict.Length + 1
        let header = dict + String(' ', (64 - unpadded % 64) % 64) + "\n"
        use out = new MemoryStream()
        let write (b: byte[]) = out.Write(b, 0, b.Length)
        write [| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y'; 1uy; 0uy |]
        write (BitConverter.GetBytes(uint16 header.Length))
        write (Encoding.ASCII.GetBytes header)
        write data
        out.ToArray()

    /// Parses .npy bytes; raises DataError naming file and entry when they are not an .npy array.
    let private parseNpy (file: string) (entry: string) (bytes: byte[]) : NpyArray =
        let bad what = fail file $"{entry}: {what}"
        if bytes.Length < 10 || bytes[0] <> 0x93uy || Encoding.ASCII.GetString(bytes, 1, 5) <> "NUMPY" then bad "not a .npy array"
        let headerLength, start =
            match bytes[6] with
            | 1uy -> int (BitConverter.ToUInt16(bytes, 8)), 10
            | 2uy | 3uy when bytes.Length >= 12 -> int (BitConverter.ToUInt32(bytes, 8)), 12
            | v -> bad $"unsupported .npy version %d{v}"
        if bytes.Length < start + headerLength then bad "truncated header"
        let header = Encoding.Latin1.GetString(bytes, start, headerLength)
        let field name pattern =
            let m = Regex.Match(header, $"'{name}'\\s*:\\s*{pattern}")
            if m.Success then m.Groups[1].Value else bad $"no '{name}' in the header"
        let descr = field "descr" "'([^']*)'"
        let fortran = field "fortran_order" "(True|False)" = "True"
        let shape =
            (field "shape" "\\(([^)]*)\\)").Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
            |> Array.map int
        let data = bytes[start + headerLength ..]
        // A dtype is a byte order ('<', '>', '|' or '='), a kind and a size in bytes ('<f8', '>i4',
        // '|u1'); a unicode string ('<U12') counts characters of 4 bytes. Objects ('|O') and
        // structured dtypes have no fixed size here and cannot be model arrays.
        let itemSize =
            let m = Regex.Match(descr, "^[<>|=]([a-zA-Z])(\\d+)$")
            if not m.Success then bad $"dtype {descr} is not supported (a model holds float32 '<f4' or float64 '<f8' arrays)"
            let size = int m.Groups[2].Value
            if m.Groups[1].Value = "U" then 4 * size else size
        let count = shape |> Array.fold (*) 1
        if data.Length <> count * itemSize then bad $"%d{data.Length} data bytes for shape %A{shape} of {descr}"
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

    /// Writes the archive to a temporary file in the same folder and then renames it over path:
    /// an interrupted save never leaves a half-written file, and an existing file is replaced
    /// only by a complete new one.
    let private writeAtomically (path: string) (entries: (string * byte[]) list) =
        let full = Path.GetFullPath path
        let dir = Path.GetDirectoryName full
        if not (Directory.Exists dir) then fail path "the folder does not exist"
        let temp = Path.Combine(dir, $".{Path.GetFileName full}.{Guid.NewGuid():N}.tmp")
        try
            do
                use zip = ZipFile.Open(temp, ZipArchiveMode.Create)
                for name, bytes in entries do
                    use stream = zip.CreateEntry(name, CompressionLevel.Fastest).Open()
                    stream.Write(bytes, 0, bytes.Length)
            File.Move(temp, full, overwrite = true)
        finally
            if File.Exists temp then File.Delete temp

    let private bytesOf (values: 'T[]) =
        let bytes = Array.zeroCreate (Buffer.ByteLength values)
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length)
        bytes

    /// Saves a model's parameters (W1, b1, W2, b2, ...) and metadata (a JSON object of strings:
    /// the architecture is added as "sizes" and "activation") to an .npz file, atomically.
    let save (path: string) (model: Model<'T>) (metadata: (string * string) list) =
        let descr = if typeof<'T> = typeof<float32> then "<f4" elif typeof<'T> = typeof<float> then "<f8" else invalidArg "model" "only float32 and float64 models can be saved"
        let activation = if model.Layers |> List.contains Layer.Sigmoid then "sigmoid" else "relu"
        let meta =
            [ "format", "backprop-npz-1"
              "sizes", String.Join("-", Network.sizes model.Layers)
              "activation", activation
              yield! metadata ]
            |> dict
        let json = JsonSerializer.Serialize meta
        let utf32 = Encoding.UTF32.GetBytes json // numpy's '<U' dtype: UTF-32 little-endian
        let arrays =
            model.Params
            |> List.choose (function Params.Affine p -> Some p | Params.Empty -> None)
            |> List.mapi (fun i p ->
                [ $"W{i + 1}.npy", npyBytes descr [| p.W.RowCount; p.W.ColumnCount |] (bytesOf (p.W.ToRowMajorArray()))
                  $"b{i + 1}.npy", npyBytes descr [| p.b.Count |] (bytesOf (p.b.ToArray())) ])
            |> List.concat
        writeAtomically path (arrays @ [ "meta.npy", npyBytes $"<U{json.Length}" [||] utf32 ])

    /// Reads the arrays of an .npz file by name (without .npy).
    let private readArrays (path: string) : Map<string, NpyArray> =
        if not (File.Exists path) then fail path "file not found"
        try
            use zip = ZipFile.OpenRead path
            zip.Entries
            |> Seq.filter (fun e -> e.FullName.EndsWith ".npy")
            |> Seq.map (fun e ->
                use s = e.Open()
                use m = new MemoryStream()
                s.CopyTo m
                let name = e.FullName[.. e.FullName.Length - 5]
                name, parseNpy path e.FullName (m.ToArray()))
            |> Map.ofSeq
        with :? InvalidDataException as e -> fail path $"not a valid .npz (zip) archive ({e.Message.TrimEnd('.')})"

    /// The metadata held in an archive's `meta` array (empty when it has none).
    let private metadataOf (path: string) (arrays: Map<string, NpyArray>) : Map<string, string> =
        match arrays.TryFind "meta" with
        | Some a when a.Descr.StartsWith "<U" ->
            let json = Encoding.UTF32.GetString(a.Data).TrimEnd('\000')
            try JsonSerializer.Deserialize<Collections.Generic.Dictionary<string, string>>(json) |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq
            with :? JsonException -> fail path "meta: not a JSON object of strings"
        | _ -> Map.empty

    /// The metadata of an .npz model file (empty when it has none).
    let metadata (path: string) : Map<string, string> = metadataOf path (readArrays path)

    /// Reads a model saved by `save` or by numpy (`numpy.savez(path, W1=..., b1=..., ...)`),
    /// checking names, shapes, dtypes and values. Raises DataError with one line naming the file
    /// and what does not fit.
    let load (path: string) : SavedModel =
        let arrays = readArrays path
        let meta = metadataOf path arrays
        let count = Seq.initInfinite id |> Seq.takeWhile (fun i -> arrays.ContainsKey $"W{i + 1}") |> Seq.length
        if count = 0 then fail path "no W1 array: not a Backprop model"
        for i in 1 .. count do
            if not (arrays.ContainsKey $"b{i}") then fail path $"missing array b{i} (next to W{i})"
        let ws = [ for i in 1 .. count -> arrays[$"W{i}"] ]
        let bs = [ for i in 1 .. count -> arrays[$"b{i}"] ]
        let descr = ws[0].Descr
        if descr <> "<f4" && descr <> "<f8" then fail path $"W1 has dtype {descr}; float32 ('<f4') or float64 ('<f8') expected"
        for i, a in List.indexed (ws @ bs) do
            let name = if i < count then $"W{i + 1}" else $"b{i - count + 1}"
            if a.Descr <> descr then fail path $"{name} has dtype {a.Descr}, W1 has {descr}: one precision for all arrays"
        for i in 0 .. count - 1 do
            let w, b = ws[i], bs[i]
            if w.Shape.Length <> 2 then fail path $"W{i + 1} has shape %A{w.Shape}; a matrix expected"
            if b.Shape <> [| w.Shape[1] |] then fail path $"b{i + 1} has shape %A{b.Shape}; ({w.Shape[1]},) expected to match W{i + 1} %A{w.Shape}"
            if i > 0 && w.Shape[0] <> ws[i - 1].Shape[1] then
                fail path $"W{i + 1} has %d{w.Shape[0]} rows but W{i} has %d{ws[i - 1].Shape[1]} columns: the layers do not connect"
        match meta.TryFind "sizes" with
        | Some sizes when sizes <> String.Join("-", ws[0].Shape[0] :: [ for w in ws -> w.Shape[1] ]) ->
            fail path $"the arrays give %s{String.Join('-', ws[0].Shape[0] :: [ for w in ws -> w.Shape[1] ])}, the metadata says {sizes}"
        | _ -> ()
        let activation = if meta.TryFind "activation" = Some "sigmoid" then Activation.Sigmoid else Activation.ReLU
        let layers = Network.layers activation (ws[0].Shape[0] :: [ for w in ws -> w.Shape[1] ])
        let build (convert: byte[] -> 'T[]) (finite: 'T -> bool) : Model<'T> =
            let values name (a: NpyArray) =
                let v = convert a.Data
                match Array.tryFindIndex (finite >> not) v with
                | Some k -> fail path $"{name} holds a NaN or infinite value (element %d{k})"
                | None -> v
            let affine =
                List.init count (fun i ->
                    let w, b = ws[i], bs[i]
                    Params.Affine
                        { W = Matrix<'T>.Build.DenseOfRowMajor(w.Shape[0], w.Shape[1], values $"W{i + 1}" w)
                          b = Vector<'T>.Build.Dense(values $"b{i + 1}" b) })
            let rec interleave (ls: Layer list) (ps: Params<'T> list) =
                match ls, ps with
                | Layer.Affine _ :: rest, p :: ps -> p :: interleave rest ps
                | _ :: rest, ps -> Params.Empty :: interleave rest ps
                | [], _ -> []
            { Layers = layers; Params = interleave layers affine; States = layers |> List.map (fun _ -> LayerState.Stateless) }
        let floats (bytes: byte[]) (size: int) (make: int -> 'T[]) =
            let v = make (bytes.Length / size)
            Buffer.BlockCopy(bytes, 0, v, 0, bytes.Length)
            v
        if descr = "<f4" then SavedModel.Single(build (fun b -> floats b 4 Array.zeroCreate<float32>) Single.IsFinite)
        else SavedModel.Double(build (fun b -> floats b 8 Array.zeroCreate<float>) Double.IsFinite)
