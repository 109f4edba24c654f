/// Properties of the .npz reader and writer: whatever bytes it is given, the reader returns a
/// model or raises DataError (never another exception); and a model saved and read back keeps
/// every parameter bit for bit, in float32 and in float64.
module NpzPropertyTests

open System
open System.IO
open System.IO.Compression
open System.Text
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core

/// 1,000 cases a property, none shrunk for long.
let private config = { FsCheckConfig.defaultConfig with maxTest = 1000; endSize = 200 }

/// A .npy array's bytes with a header written as given (descr, fortran_order and shape text as
/// they appear in the dict), padded as numpy pads it.
let npy (descr: string) (fortran: string) (shape: string) (data: byte[]) =
    let dict = $"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    let unpadded = 10 + dict.Length + 1
    let header = dict + String(' ', (64 - unpadded % 64) % 64) + "\n"
    Array.concat
        [ [| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y'; 1uy; 0uy |]
          BitConverter.GetBytes(uint16 header.Length)
          Encoding.ASCII.GetBytes header
          data ]

/// A `meta` array holding the JSON text (a numpy unicode scalar).
let metaNpy (json: string) = npy $"'<U{json.Length}'" "False" "()" (Encoding.UTF32.GetBytes json)

/// A zip of the named entries (stored or deflated), in order.
let zipOf (level: CompressionLevel) (entries: (string * byte[]) list) =
    let ms = new MemoryStream()
    do
        use zip = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen = true)
        for name, bytes in entries do
            use s = zip.CreateEntry(name, level).Open()
            s.Write(bytes, 0, bytes.Length)
    ms.ToArray()

/// The entries of a zip, in order.
let entriesOf (bytes: byte[]) =
    use zip = new ZipArchive(new MemoryStream(bytes), ZipArchiveMode.Read)
    [ for e in zip.Entries ->
          use s = e.Open()
          use m = new MemoryStream()
          s.CopyTo m
          e.FullName, m.ToArray() ]

/// The .npz bytes of a model, as Npz.save writes them.
let npzOf (model: Model<'T>) (metadata: (string * Text.Json.Nodes.JsonNode) list) =
    use ms = new MemoryStream()
    Npz.write ms model [] metadata
    ms.ToArray()

/// A layer list drawn from rng: one to four Affine layers that connect (sizes 1 to 6), with
/// zero to two activations (ReLU or sigmoid) before, between and after them.
let randomLayers (rng: Random) =
    let activations () = List.init (rng.Next 3) (fun _ -> if rng.Next 2 = 0 then Layer.Relu else Layer.Sigmoid)
    let sizes = List.init (2 + rng.Next 4) (fun _ -> 1 + rng.Next 6)
    activations () @ (List.pairwise sizes |> List.collect (fun (i, o) -> Layer.Affine(i, o) :: activations ()))

/// The model of the layers with every parameter a random finite bit pattern (subnormals,
/// negative zeros and extremes included).
let randomModel (rng: Random) (template: Model<'T>) (element: Random -> 'T) : Model<'T> =
    let layers = template.Layers
    let fresh (v: Value<'T>) =
        match v with
        | Value.Matrix m -> Value.Matrix(Matrix<'T>.Build.Dense(m.RowCount, m.ColumnCount, fun _ _ -> element rng))
        | Value.Vector v -> Value.Vector(Vector<'T>.Build.Dense(v.Count, fun _ -> element rng))
    Network.build layers (Network.parameters template |> List.map (fun (n, v) -> n, fresh v)) (Network.states template)

let private single (rng: Random) =
    let f = BitConverter.Int32BitsToSingle(rng.Next() ||| (if rng.Next 2 = 0 then Int32.MinValue else 0))
    if Single.IsFinite f then f else -0.0f

let private double (rng: Random) =
    let d = BitConverter.Int64BitsToDouble(rng.NextInt64() ||| (if rng.Next 2 = 0 then Int64.MinValue else 0L))
    if Double.IsFinite d then d else Double.Epsilon

/// Reads bytes as a model file: true when a model comes back or DataError is raised; any other
/// exception escapes and fails the property.
let readsOrRefuses (bytes: byte[]) =
    try
        Npz.readFrom "fuzz.npz" (new MemoryStream(bytes)) |> ignore
        true
    with DataError _ -> true

/// A small valid file: float32 or float64, a 4-3-2 network with metadata.
let private valid =
    let meta = [ "seed", Text.Json.Nodes.JsonValue.Create 7 :> Text.Json.Nodes.JsonNode ]
    [| npzOf (Network.init 1 0.1 (Network.layers Activation.ReLU [ 4; 3; 2 ]): Model<float32>) meta
       npzOf (Network.init 2 0.1 (Network.layers Activation.Sigmoid [ 3; 2; 2 ]): Model<float>) meta |]

/// Headers an entry might claim.
let private descrs = [| "'<f4'"; "'<f8'"; "'>f4'"; "'<i4'"; "'|O'"; "'<U3'"; "'<f99999999999'"; "'<f0'"; "''"; "'<c16'" |]
let private shapes = [| "()"; "(3,)"; "(4, 3)"; "(3, 4)"; "(0, 3)"; "(-1, 3)"; "(100000, 100000)"; "(2147483647, 2147483647, 2147483647, 4)"; "(9999999999999999999999,)"; "(a, b)"; "(1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1)" |]
let private metas =
    [| "null"; "[]"; "1"; "\"text\""; "{}"; "{\"format\": \"backprop-npz-2\"}"; "{\"format\": \"backprop-npz-2\", \"layers\": null}"
       "{\"format\": \"backprop-npz-2\", \"layers\": [null]}"; "{\"format\": \"backprop-npz-2\", \"layers\": [{\"kind\": \"affine\", \"inputs\": 100000, \"outputs\": 100000}]}"
       "{\"format\": \"backprop-npz-2\", \"layers\": [{\"kind\": \"affine\", \"inputs\": -4, \"outputs\": 3}]}"
       "{\"format\": \"backprop-npz-2\", \"layers\": [{\"kind\": \"relu\"}]}"
       "{\"a\": 1, \"a\": 2}"; String('[', 500) + String(']', 500); "{\"format\": \"backprop-npz-2\", \"layers\": [{\"kind\": \"affine\", \"inputs\": 4.5, \"outputs\": 3}]}"
       "{\"format\": \"backprop-npz-2\", \"layers\": [{\"kind\": \"affine\", \"inputs\": 4, \"outputs\": 3}, {\"kind\": \"affine\", \"inputs\": 4, \"outputs\": 2}]}" |]

/// A mutation of a valid file, drawn from rng: bit flips, a truncation, renamed entries,
/// rewritten .npy headers, another meta, an entry's bytes overwritten, entries dropped or doubled.
let mutate (rng: Random) (bytes: byte[]) =
    let pick (a: 'a[]) = a[rng.Next a.Length]
    let rebuild f = zipOf (if rng.Next 2 = 0 then CompressionLevel.NoCompression else CompressionLevel.Fastest) (f (entriesOf bytes))
    match rng.Next 8 with
    | 0 ->
        let b = Array.copy bytes
        for _ in 1 .. 1 + rng.Next 8 do
            let k = rng.Next b.Length
            b[k] <- b[k] ^^^ (1uy <<< rng.Next 8)
        b
    | 1 -> bytes[.. rng.Next bytes.Length - 1]
    | 2 -> rebuild (List.map (fun (n, d) -> (if rng.Next 3 = 0 then pick [| "W1.npy"; "b1.npy"; "meta.npy"; "x.npy"; "W1"; "W1.npy/"; "../W9.npy" |] else n), d))
    | 3 ->
        rebuild (List.map (fun (n, d: byte[]) ->
            if n = "meta.npy" || rng.Next 2 = 0 then n, d
            else n, npy (pick descrs) (pick [| "False"; "True"; "None" |]) (pick shapes) (if rng.Next 2 = 0 then d[min d.Length 128 ..] else Array.zeroCreate (rng.Next 64))))
    | 4 -> rebuild (List.map (fun (n, d) -> if n = "meta.npy" then n, metaNpy (pick metas) else n, d))
    | 5 ->
        let stored = zipOf CompressionLevel.NoCompression (entriesOf bytes)
        let k = rng.Next stored.Length
        let run = min (1 + rng.Next 16) (stored.Length - k)
        Array.blit (Array.init run (fun _ -> byte (rng.Next 256))) 0 stored k run
        stored
    | 6 -> rebuild (fun es -> es |> List.filter (fun _ -> rng.Next 3 <> 0))
    | _ -> rebuild (fun es -> es @ [ pick (Array.ofList es) ])

/// Whether back has model's layers and every parameter's name, shape and bits.
let sameBits (model: Model<'T>) (back: Model<'T>) (bits: 'T -> int64) =
    back.Layers = model.Layers
    && List.forall2
        (fun (n1, v1) (n2, v2) -> n1 = n2 && Value.shape v1 = Value.shape v2 && Array.map bits (Value.toRowMajor v1) = Array.map bits (Value.toRowMajor v2))
        (Network.parameters model)
        (Network.parameters back)

[<Tests>]
let tests =
    testList "npz properties" [
        testPropertyWithConfig config "arbitrary bytes: a model or DataError, nothing else" (fun (bytes: byte[]) (asZip: bool) ->
            // half the inputs start like a zip (local header or end-of-directory signature)
            let bytes = if asZip then Array.append [| 0x50uy; 0x4Buy; 0x03uy; 0x04uy |] bytes else bytes
            readsOrRefuses bytes && readsOrRefuses (Array.append bytes [| 0x50uy; 0x4Buy; 5uy; 6uy; yield! Array.zeroCreate 18 |]))
        testPropertyWithConfig config "mutated valid files: a model or DataError, nothing else" (fun (seed: int) ->
            let rng = Random seed
            let bytes = mutate rng valid[rng.Next valid.Length]
            // a second mutation on top, where the first left a zip that can be taken apart
            let twice = if rng.Next 4 = 0 then (try mutate rng bytes with :? InvalidDataException -> bytes) else bytes
            readsOrRefuses twice)
        testPropertyWithConfig config "a damaged byte in a stored entry's data is caught by its CRC-32" (fun (seed: int) ->
            let rng = Random seed
            let entries = entriesOf valid[rng.Next valid.Length]
            let stored = zipOf CompressionLevel.NoCompression entries
            // the data of the first entry starts after its 30-byte local header and its name
            let first, data = entries.Head
            let k = 30 + first.Length + rng.Next data.Length
            let b = Array.copy stored
            b[k] <- b[k] ^^^ (1uy <<< rng.Next 8)
            try
                Npz.readFrom "crc.npz" (new MemoryStream(b)) |> ignore
                false
            with DataError(_, problem) -> problem.Contains "CRC-32 mismatch")
        testPropertyWithConfig config "save then read keeps every parameter bit for bit (float32 and float64)" (fun (seed: int) ->
            let rng = Random seed
            let layers = randomLayers rng
            if rng.Next 2 = 0 then
                let model = randomModel rng (Network.init 1 0.1 layers: Model<float32>) single
                match (Npz.readFrom "rt.npz" (new MemoryStream(npzOf model []))).Model with
                | SavedModel.Single back -> sameBits model back (fun f -> int64 (BitConverter.SingleToInt32Bits f))
                | SavedModel.Double _ -> false
            else
                let model = randomModel rng (Network.init 1 0.1 layers: Model<float>) double
                match (Npz.readFrom "rt.npz" (new MemoryStream(npzOf model []))).Model with
                | SavedModel.Double back -> sameBits model back BitConverter.DoubleToInt64Bits
                | SavedModel.Single _ -> false)
        test "a model holding a NaN or an infinity is not saved, and the old file stays" {
            let dir = Directory.CreateTempSubdirectory("backprop-npz-nan-").FullName
            let path = Path.Combine(dir, "m.npz")
            File.WriteAllText(path, "the old file")
            let layers = Network.layers Activation.ReLU [ 3; 2; 2 ]
            let m: Model<float32> = Network.init 1 0.1 layers
            let bad = Network.withParameters m (Network.parameters m |> List.map (fun (n, v) -> n, (if n = "b2" then Value.Vector(Vector<float32>.Build.Dense(2, Single.NaN)) else v)))
            try
                Npz.save path bad []
                failtest "a NaN model was saved"
            with DataError(file, problem) ->
                Expect.equal file path "names the file"
                Expect.stringContains problem "not saved: b2 holds a NaN or infinite value (element 0)" "names the array"
            Expect.equal (File.ReadAllText path) "the old file" "the old file is as it was"
            Expect.equal (Directory.GetFiles dir).Length 1 "no temporary file"
            Expect.throwsT<ArgumentException> (fun () -> npzOf bad [] |> ignore) "Npz.write refuses it too"
        }
    ]
