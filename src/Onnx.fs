namespace Backprop.Core

// The way out: a model as an ONNX file (IR version 8, opset 17) that any ONNX runtime runs.
// Input `x` [N, inputs] in the model's element type (N symbolic: any batch size), outputs
// `probabilities` [N, classes] (the softmax of the scores, what Softmax-with-Loss gives at
// inference) and `scores` [N, classes] (the book's predict). Each layer becomes standard
// operators: Affine → Gemm, ReLU → Relu, Sigmoid → Sigmoid; the helpers for chapter 6's layers
// (Tanh → Tanh, Dropout → Mul by 1 − ratio, BatchNorm → BatchNormalization with the running
// statistics) are here too, ready for when the Layer union has them.
//
// The file is a protobuf message (onnx/onnx.proto, proto2 syntax). The few messages an
// exported network needs are written by hand below, with the field numbers of onnx.proto in
// comments, so the core needs no protobuf package. Read top-down: the graph as F# values, the
// wire format, the operators, the network's graph, files.

open System
open System.Buffers.Binary
open System.IO
open System.Reflection
open System.Text
open MathNet.Numerics.LinearAlgebra

/// The element types an exported tensor can have (onnx.proto's TensorProto.DataType).
type OnnxElementType =
    /// 32-bit float (TensorProto.DataType FLOAT).
    | Float = 1
    /// 64-bit float (TensorProto.DataType DOUBLE).
    | Double = 11

/// One dimension of a graph input's or output's shape.
[<RequireQualifiedAccess>]
type OnnxDim =
    /// A fixed size, such as 784.
    | Value of int64
    /// A named size left to the caller, such as "N" for the batch.
    | Param of string

/// A named constant tensor of the graph (an initializer: a weight matrix, a bias).
type OnnxTensor =
    { /// The name nodes refer to it by (W1, b1, ...).
      Name: string
      /// float or double.
      ElementType: OnnxElementType
      /// The shape; empty for a scalar.
      Dims: int64 list
      /// The elements in row-major order, little-endian (TensorProto.raw_data).
      RawData: byte[] }

/// A node attribute's value.
[<RequireQualifiedAccess>]
type OnnxAttributeValue =
    /// An integer (AttributeProto.i).
    | Int of int64
    /// A float (AttributeProto.f; ONNX attributes are 32-bit).
    | Float of float32

/// One operator applied to named values.
type OnnxNode =
    { /// The operator, e.g. "Gemm" (default domain, ai.onnx).
      OpType: string
      /// The node's name, e.g. "Affine1".
      Name: string
      /// The names of its inputs: graph inputs, initializers or other nodes' outputs.
      Inputs: string list
      /// The names of its outputs.
      Outputs: string list
      /// Its attributes by name.
      Attributes: (string * OnnxAttributeValue) list }

/// A graph input or output: its name, element type and shape.
type OnnxValueInfo =
    { /// The name, e.g. "x".
      Name: string
      /// float or double.
      ElementType: OnnxElementType
      /// The shape, e.g. [Param "N"; Value 784].
      Shape: OnnxDim list }

/// A computation graph: nodes in topological order, its constants, inputs and outputs.
type OnnxGraph =
    { /// The graph's name.
      Name: string
      /// The nodes, each after the nodes whose outputs it reads.
      Nodes: OnnxNode list
      /// The constant tensors.
      Initializers: OnnxTensor list
      /// What the caller feeds.
      Inputs: OnnxValueInfo list
      /// What the caller gets back.
      Outputs: OnnxValueInfo list }

/// A whole ONNX model: the graph, the versions it is written against and its metadata.
type OnnxModel =
    { /// The IR version (8 for this exporter).
      IrVersion: int64
      /// The version of the default operator set (17 for this exporter).
      Opset: int64
      /// The program that wrote it ("Backprop").
      ProducerName: string
      /// That program's version.
      ProducerVersion: string
      /// A human-readable description.
      DocString: string
      /// The graph.
      Graph: OnnxGraph
      /// Named metadata (ModelProto.metadata_props), keys distinct.
      Metadata: (string * string) list }

/// A part of a graph: the nodes one layer becomes and the constants they read.
type OnnxPiece =
    { /// The nodes, in order.
      Nodes: OnnxNode list
      /// The constants the nodes read.
      Initializers: OnnxTensor list }

/// Writing ONNX models: the protobuf encoding, the operators each layer becomes, and files.
[<RequireQualifiedAccess>]
module Onnx =
    /// The IR version written: 8 (ONNX 1.10 and later read it).
    let irVersion = 8L

    /// The version of the default (ai.onnx) operator set the nodes are written against.
    let opsetVersion = 17L

    // ─── Protobuf wire format ───────────────────────────────────────────────────────────────────
    //
    // A message is a sequence of fields, each a key (field number << 3 | wire type) as a varint,
    // then the value: wire type 0 a varint (int32, int64, enums; negative numbers as their 64-bit
    // two's complement, ten bytes), 2 a length (varint) and that many bytes (strings, bytes,
    // embedded messages), 5 four little-endian bytes (float). A repeated field is the field
    // written once per element (proto2's unpacked default, which every parser reads).

    /// Builds one protobuf message, field after field.
    type private Message() =
        let out = new MemoryStream()

        member private _.Varint(value: uint64) =
            let mutable v = value
            while v >= 0x80UL do
                out.WriteByte(byte (v &&& 0x7FUL) ||| 0x80uy)
                v <- v >>> 7
            out.WriteByte(byte v)

        member private m.Key(field: int, wireType: int) = m.Varint(uint64 ((field <<< 3) ||| wireType))

        /// An int64, int32 or enum field (wire type 0).
        member m.Int(field: int, value: int64) =
            m.Key(field, 0)
            m.Varint(uint64 value)

        /// A float field (wire type 5).
        member m.Float(field: int, value: float32) =
            m.Key(field, 5)
            let bytes = Array.zeroCreate<byte> 4
            BinaryPrimitives.WriteSingleLittleEndian(Span bytes, value)
            out.Write(bytes, 0, 4)

        /// A bytes or embedded-message field (wire type 2).
        member m.Bytes(field: int, value: byte[]) =
            m.Key(field, 2)
            m.Varint(uint64 value.Length)
            out.Write(value, 0, value.Length)

        /// A string field: its UTF-8 bytes (wire type 2).
        member m.String(field: int, value: string) = m.Bytes(field, Encoding.UTF8.GetBytes value)

        /// The message's bytes so far.
        member _.ToArray() = out.ToArray()

    let private message (fill: Message -> unit) =
        let m = Message()
        fill m
        m.ToArray()

    /// TensorProto: dims = 1 (repeated int64), data_type = 2 (int32), name = 8, raw_data = 9.
    let private tensorProto (t: OnnxTensor) =
        message (fun m ->
            for d in t.Dims do m.Int(1, d)
            m.Int(2, int64 t.ElementType)
            m.String(8, t.Name)
            m.Bytes(9, t.RawData))

    /// AttributeProto: name = 1, type = 20 (AttributeType: FLOAT = 1, INT = 2), f = 2, i = 3.
    let private attributeProto (name: string, value: OnnxAttributeValue) =
        message (fun m ->
            m.String(1, name)
            match value with
            | OnnxAttributeValue.Float f ->
                m.Int(20, 1L)
                m.Float(2, f)
            | OnnxAttributeValue.Int i ->
                m.Int(20, 2L)
                m.Int(3, i))

    /// NodeProto: input = 1, output = 2 (repeated string), name = 3, op_type = 4, attribute = 5,
    /// domain = 7 (left out: the default domain, ai.onnx).
    let private nodeProto (n: OnnxNode) =
        message (fun m ->
            for i in n.Inputs do m.String(1, i)
            for o in n.Outputs do m.String(2, o)
            m.String(3, n.Name)
            m.String(4, n.OpType)
            for a in n.Attributes do m.Bytes(5, attributeProto a))

    /// ValueInfoProto: name = 1, type = 2 (TypeProto). TypeProto: tensor_type = 1
    /// (TypeProto.Tensor: elem_type = 1, shape = 2). TensorShapeProto: dim = 1 (repeated
    /// Dimension: dim_value = 1, dim_param = 2).
    let private valueInfoProto (v: OnnxValueInfo) =
        let dimension (d: OnnxDim) =
            message (fun m ->
                match d with
                | OnnxDim.Value n -> m.Int(1, n)
                | OnnxDim.Param p -> m.String(2, p))
        let shape = message (fun m -> for d in v.Shape do m.Bytes(1, dimension d))
        let tensorType = message (fun m -> m.Int(1, int64 v.ElementType); m.Bytes(2, shape))
        let typeProto = message (fun m -> m.Bytes(1, tensorType))
        message (fun m -> m.String(1, v.Name); m.Bytes(2, typeProto))

    /// GraphProto: node = 1, name = 2, initializer = 5, input = 11, output = 12.
    let private graphProto (g: OnnxGraph) =
        message (fun m ->
            for n in g.Nodes do m.Bytes(1, nodeProto n)
            m.String(2, g.Name)
            for t in g.Initializers do m.Bytes(5, tensorProto t)
            for i in g.Inputs do m.Bytes(11, valueInfoProto i)
            for o in g.Outputs do m.Bytes(12, valueInfoProto o))

    /// ModelProto: ir_version = 1, producer_name = 2, producer_version = 3, doc_string = 6,
    /// graph = 7, opset_import = 8 (OperatorSetIdProto: domain = 1, version = 2; the empty domain
    /// is ai.onnx), metadata_props = 14 (StringStringEntryProto: key = 1, value = 2).
    let encode (model: OnnxModel) : byte[] =
        message (fun m ->
            m.Int(1, model.IrVersion)
            m.String(2, model.ProducerName)
            m.String(3, model.ProducerVersion)
            m.String(6, model.DocString)
            m.Bytes(7, graphProto model.Graph)
            m.Bytes(8, message (fun o -> o.String(1, ""); o.Int(2, model.Opset)))
            for key, value in model.Metadata do
                m.Bytes(14, message (fun e -> e.String(1, key); e.String(2, value))))

    // ─── Tensors and operators ──────────────────────────────────────────────────────────────────

    /// The ONNX element type of float32 or float (float64); ArgumentException for any other.
    let elementType<'T> () : OnnxElementType =
        if typeof<'T> = typeof<float32> then OnnxElementType.Float
        elif typeof<'T> = typeof<float> then OnnxElementType.Double
        else invalidArg "T" $"ONNX export takes float32 or float64 models, not {typeof<'T>.Name}"

    /// A float32 or float64 value from a float (the element type of the model it goes into).
    let private scalar<'T> (v: float) : 'T =
        if typeof<'T> = typeof<float32> then unbox<'T> (box (float32 v)) else unbox<'T> (box v)

    /// a + b in the element type of a (float32 or float64).
    let private plus (a: 'T) (b: float) : 'T =
        match box a with
        | :? float32 as v -> unbox<'T> (box (v + float32 b))
        | :? float as v -> unbox<'T> (box (v + b))
        | _ -> invalidArg "a" $"float32 or float64 expected, not {typeof<'T>.Name}"

    /// Values as little-endian bytes, whatever the machine's byte order.
    let private littleEndian (values: 'T[]) : byte[] =
        match box values with
        | :? (float32[]) as a ->
            let bytes = Array.zeroCreate (4 * a.Length)
            for i in 0 .. a.Length - 1 do BinaryPrimitives.WriteSingleLittleEndian(Span(bytes, 4 * i, 4), a[i])
            bytes
        | :? (float[]) as a ->
            let bytes = Array.zeroCreate (8 * a.Length)
            for i in 0 .. a.Length - 1 do BinaryPrimitives.WriteDoubleLittleEndian(Span(bytes, 8 * i, 8), a[i])
            bytes
        | _ -> invalidArg "values" $"ONNX export takes float32 or float64 values, not {typeof<'T>.Name}"

    /// A named constant tensor of the given shape from its row-major elements.
    let tensor (name: string) (dims: int list) (rowMajor: 'T[]) : OnnxTensor =
        if List.fold (*) 1 dims <> rowMajor.Length then invalidArg "rowMajor" $"{name}: %d{rowMajor.Length} values for the shape %A{dims}"
        { Name = name; ElementType = elementType<'T> (); Dims = List.map int64 dims; RawData = littleEndian rowMajor }

    /// A node with no attributes.
    let private node (opType: string) (name: string) (inputs: string list) (output: string) =
        { OpType = opType; Name = name; Inputs = inputs; Outputs = [ output ]; Attributes = [] }

    /// Affine → Gemm(x, W, b) = x · W + b: the book's W (inputs × outputs) is Gemm's B as it is
    /// (transB = 0), b is C, broadcast over the rows. W and b become initializers under the given
    /// names (W1 and b1, as the model file names them).
    let gemm (name: string) (input: string) (output: string) (wName: string, bName: string) (p: AffineParams<'T>) : OnnxPiece =
        { Nodes = [ node "Gemm" name [ input; wName; bName ] output ]
          Initializers = [ tensor wName [ p.W.RowCount; p.W.ColumnCount ] (p.W.ToRowMajorArray()); tensor bName [ p.b.Count ] (p.b.ToArray()) ] }

    /// ReLU → Relu.
    let relu (name: string) (input: string) (output: string) : OnnxPiece =
        { Nodes = [ node "Relu" name [ input ] output ]; Initializers = [] }

    /// Sigmoid → Sigmoid.
    let sigmoid (name: string) (input: string) (output: string) : OnnxPiece =
        { Nodes = [ node "Sigmoid" name [ input ] output ]; Initializers = [] }

    /// Tanh → Tanh (for chapter 6's Tanh layer).
    let tanh (name: string) (input: string) (output: string) : OnnxPiece =
        { Nodes = [ node "Tanh" name [ input ] output ]; Initializers = [] }

    /// Dropout at inference → Mul by the constant 1 − ratio (the book's Dropout multiplies by the
    /// mask in training and by 1 − ratio at test time; it is not "inverted" dropout). The
    /// constant is a scalar initializer named `keepName`, in the model's element type ('T).
    let dropout<'T> (name: string) (input: string) (output: string) (keepName: string) (ratio: float) : OnnxPiece =
        if not (ratio >= 0.0 && ratio < 1.0) then invalidArg "ratio" $"a dropout ratio in [0, 1), got %g{ratio}"
        { Nodes = [ node "Mul" name [ input; keepName ] output ]
          Initializers = [ tensor keepName [] [| scalar<'T> (1.0 - ratio) |] ] }

    /// Batch Normalization at inference → BatchNormalization(x, gamma, beta, running mean,
    /// running variance + epsilon) with its epsilon attribute 0: y = gamma · (x − mean) /
    /// sqrt(var + epsilon) + beta per feature (column), for an input [N, features]. The epsilon
    /// (the book's 10e-7) is added to the variance here, in the model's precision, because the
    /// attribute is a float32: in a float64 model a float32 epsilon would be off by about 1e-15,
    /// a relative error near 1e-9 in the output of a feature whose variance is close to 0. The
    /// four vectors become initializers under the names given (gamma1, beta1, running_mean1,
    /// running_var1).
    let batchNormalization
        (name: string)
        (input: string)
        (output: string)
        (gammaName: string, betaName: string, meanName: string, varName: string)
        (gamma: Vector<'T>, beta: Vector<'T>, runningMean: Vector<'T>, runningVar: Vector<'T>)
        (epsilon: float)
        : OnnxPiece =
        let n = gamma.Count
        if beta.Count <> n || runningMean.Count <> n || runningVar.Count <> n then
            invalidArg "gamma" $"{name}: gamma, beta, mean and variance have %d{n}, %d{beta.Count}, %d{runningMean.Count} and %d{runningVar.Count} elements"
        let varPlusEps = runningVar.ToArray() |> Array.map (fun v -> plus v epsilon)
        { Nodes =
            [ { node "BatchNormalization" name [ input; gammaName; betaName; meanName; varName ] output with
                  Attributes = [ "epsilon", OnnxAttributeValue.Float 0.0f ] } ]
          Initializers =
            [ tensor gammaName [ n ] (gamma.ToArray())
              tensor betaName [ n ] (beta.ToArray())
              tensor meanName [ n ] (runningMean.ToArray())
              tensor varName [ n ] varPlusEps ] }

    /// Softmax over the last axis (the classes of each row): the probabilities.
    let softmax (name: string) (input: string) (output: string) : OnnxPiece =
        { Nodes = [ { node "Softmax" name [ input ] output with Attributes = [ "axis", OnnxAttributeValue.Int -1L ] } ]
          Initializers = [] }

    // ─── A network's graph ──────────────────────────────────────────────────────────────────────

    /// A layer's name in node names and in the metadata's layer list, as the book writes it.
    let private kindName (layer: Layer) =
        match layer with
        | Layer.Affine _ -> "Affine"
        | Layer.Relu -> "ReLU"
        | Layer.Sigmoid -> "Sigmoid"
        | Layer.Tanh -> "Tanh"
        | Layer.BatchNorm _ -> "BatchNorm"
        | Layer.Dropout _ -> "Dropout"

    /// A layer as the metadata lists it: "Affine(784, 50)", "ReLU", "Sigmoid".
    let private describe (layer: Layer) = Layer.describe layer

    /// The operators one layer becomes, reading `input` and writing `output`; `k` is the layer's
    /// number among the layers of its kind (1 for the first Affine), which names its
    /// initializers as the model file names its arrays. Total over the Layer union: a new layer
    /// kind does not compile until it is mapped here.
    let private layerPiece (layer: Layer) (k: int) (p: Params<'T>) (state: LayerState<'T>) (input: string) (output: string) : OnnxPiece =
        let name = $"{kindName layer}{k}"
        match layer, p with
        | Layer.Affine _, Params.Affine ap ->
            match Layer.parameterNames layer k with
            | [ w; b ] -> gemm name input output (w, b) ap
            | names -> invalidArg "layer" $"{name}: parameters %A{names}, W and b expected"
        | Layer.Affine _, _ -> invalidArg "p" $"{name} has no Affine parameters"
        | Layer.Relu, _ -> relu name input output
        | Layer.Sigmoid, _ -> sigmoid name input output
        | Layer.Tanh, _ -> tanh name input output
        | Layer.Dropout ratio, _ -> dropout<'T> name input output $"keep{k}" ratio
        | Layer.BatchNorm _, Params.BatchNorm bp ->
            match Layer.parameterNames layer k @ Layer.stateNames layer k, state with
            | [ g; b; m; v ], LayerState.BatchNorm st -> batchNormalization name input output (g, b, m, v) (bp.gamma, bp.beta, st.runningMean, st.runningVar) BatchNormalization.eps
            | names, _ -> invalidArg "layer" $"{name}: parameters and states %A{names} with its running statistics expected"
        | Layer.BatchNorm _, _ -> invalidArg "p" $"{name} has no gamma and beta"

    /// The version of this library, without build metadata ("0.1.0").
    let producerVersion =
        let a = typeof<OnnxModel>.Assembly
        match a.GetCustomAttribute<AssemblyInformationalVersionAttribute>() with
        | null -> string (a.GetName().Version)
        | v -> v.InformationalVersion.Split('+')[0]

    /// The ONNX model of a network: input `x` [N, inputs], each layer's operators, the scores
    /// (output `scores` [N, classes]) and their softmax (output `probabilities` [N, classes]).
    /// The metadata holds "producer", "layers" and "precision", then the given entries whose
    /// keys are not among those (a model file's training settings). ArgumentException for a
    /// model with no Affine layer or of another element type than float32 and float64.
    let ofModel (model: Model<'T>) (metadata: (string * string) list) : OnnxModel =
        let elem = elementType<'T> ()
        let sizes = Network.sizes model.Layers
        if sizes.IsEmpty then invalidArg "model" "a model with no Affine layer has no input size to export"
        let count = model.Layers.Length
        let numbered =
            model.Layers
            |> List.mapFold (fun (seen: Map<string, int>) l ->
                let k = 1 + (seen.TryFind(kindName l) |> Option.defaultValue 0)
                (l, k), seen.Add(kindName l, k)) Map.empty
            |> fst
        let outputs = numbered |> List.mapi (fun i (l, k) -> if i = count - 1 then "scores" else (kindName l).ToLowerInvariant() + string k)
        let inputs = "x" :: List.truncate (count - 1) outputs
        let pieces =
            List.zip3 numbered model.Params model.States
            |> List.mapi (fun i ((layer, k), p, s) -> layerPiece layer k p s inputs[i] outputs[i])
        let pieces = pieces @ [ softmax "Softmax" "scores" "probabilities" ]
        let batch = OnnxDim.Param "N"
        let layers = model.Layers |> List.map describe |> String.concat ", "
        let precision = if elem = OnnxElementType.Float then "float32" else "float64"
        let own = [ "producer", $"Backprop {producerVersion}"; "layers", layers + ", Softmax"; "precision", precision ]
        let sizeText = sizes |> List.map string |> String.concat "-"
        { IrVersion = irVersion
          Opset = opsetVersion
          ProducerName = "Backprop"
          ProducerVersion = producerVersion
          DocString = $"A {sizeText} network ({layers}) in {precision}, exported by Backprop: input x [N, %d{sizes.Head}], outputs probabilities (softmax of the scores) and scores [N, %d{List.last sizes}]."
          Graph =
            { Name = "backprop"
              Nodes = pieces |> List.collect (fun p -> p.Nodes)
              Initializers = pieces |> List.collect (fun p -> p.Initializers)
              Inputs = [ { Name = "x"; ElementType = elem; Shape = [ batch; OnnxDim.Value(int64 sizes.Head) ] } ]
              Outputs =
                [ { Name = "probabilities"; ElementType = elem; Shape = [ batch; OnnxDim.Value(int64 (List.last sizes)) ] }
                  { Name = "scores"; ElementType = elem; Shape = [ batch; OnnxDim.Value(int64 (List.last sizes)) ] } ] }
          Metadata = own @ (metadata |> List.filter (fun (key, _) -> not (List.exists (fst >> (=) key) own)) |> List.distinctBy fst) }

    // ─── Files ──────────────────────────────────────────────────────────────────────────────────

    /// A model file's metadata as ONNX metadata entries: each setting as text (Npz.text), without
    /// what the ONNX model states itself (the file format, the layer list, the element type).
    let metadataOf (file: ModelFile) : (string * string) list =
        file.Metadata
        |> Map.toList
        |> List.filter (fun (key, _) -> key <> "format" && key <> "layers" && key <> "dtype")
        |> List.map (fun (key, value) -> key, Npz.text value)

    /// Writes an encoded model to `path` through SafeWrite.file (a temporary file renamed over
    /// the target once complete); raises OutputError with one line naming the file when it
    /// cannot be written.
    let private writeAtomically (path: string) (bytes: byte[]) = SafeWrite.bytes path bytes

    /// Writes the ONNX model of a network (see ofModel) to a stream.
    let write (stream: Stream) (model: Model<'T>) (metadata: (string * string) list) =
        let bytes = encode (ofModel model metadata)
        stream.Write(bytes, 0, bytes.Length)

    /// Saves the ONNX model of a network (see ofModel) to a file, atomically; raises OutputError
    /// naming the file when it cannot be written.
    let save (path: string) (model: Model<'T>) (metadata: (string * string) list) =
        writeAtomically path (encode (ofModel model metadata))

    /// Saves an ONNX model (built by ofModel or by hand) to a file, atomically.
    let saveModel (path: string) (model: OnnxModel) = writeAtomically path (encode model)

    /// Saves the model of a model file (.npz, as Npz.read gives it) as ONNX, in its precision,
    /// with its training settings as metadata.
    let saveFile (path: string) (file: ModelFile) =
        match file.Model with
        | SavedModel.Single m -> save path m (metadataOf file)
        | SavedModel.Double m -> save path m (metadataOf file)
