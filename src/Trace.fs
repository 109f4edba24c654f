namespace Backprop.Core

// Seeing backpropagation: the values and gradients that running code computes, kept instead of
// thrown away. Read top-down:
//
// - Computational graphs of scalar nodes (5.4, and the layers' figures 5-18 to 5-30): an
//   expression of nodes (×, +, exp, /, log, ReLU) is run forward, then backward from its outputs,
//   each node applying its own local rule (× and + are Core's MulLayer and AddLayer); the result is
//   a Graph of nodes with their value and gradient, and edges.
// - A network traced on a sample: every layer's output, the gradient arriving at it (dout) and the
//   gradient it passes on (dx), the first layer's dx included: the gradient for the input pixels.
// - For one image: the input gradient for a class, the activations, the probabilities.
// - MNIST-style preprocessing of any grey-scale image (crop, fit into 20 × 20, centre of mass at
//   the centre of 28 × 28).
// - The lens on training (`train --inspect`): each activation layer's histogram on a fixed set of
//   images (the book's weight_init_activation_histogram.py), each parameter's gradient norm and
//   the size of its last update relative to it.
//
// Everything here is pure (no I/O); Dot.fs turns the graphs and traces into Graphviz text.

open System
open MathNet.Numerics.LinearAlgebra

/// One value of a computational graph: an input, or the output of an operation on other nodes.
type GraphNode =
    { /// A stable identifier, "n0", "n1", ... in the order the forward pass computes the nodes.
      Id: string
      /// The node's name ("apple", "exp(a1)").
      Label: string
      /// The operation that computed the value ("×", "+", "exp", "/", "log", "relu"); "" for an input.
      Op: string
      /// The forward value.
      Value: float
      /// The gradient of the graph's output with respect to this value (backward).
      Grad: float }

/// A computational graph after a forward and a backward pass.
type Graph =
    { /// What the graph shows ("buy_apple").
      Title: string
      /// The nodes in the order the forward pass computed them (inputs before their users).
      Nodes: GraphNode list
      /// (from, to) node ids: the value `from` is an input of the operation that computed `to`,
      /// in the order of that operation's inputs.
      Edges: (string * string) list }

/// An operation of a scalar node, each with its local forward and backward rule (Graph.run).
[<RequireQualifiedAccess>]
type NodeOp =
    /// x · y (MulLayer): the gradient of each input is dout times the other input.
    | Mul
    /// x + y + ... (AddLayer): dout passes unchanged to every input.
    | Add
    /// exp x: dx = dout · exp x.
    | Exp
    /// 1 / x (the book's "/" node): dx = -dout / x² = -dout · out².
    | Reciprocal
    /// log x: dx = dout / x.
    | Log
    /// max(0, x): dx = dout where x > 0, else 0.
    | Relu

    /// The symbol a drawing shows for the operation.
    member op.Symbol =
        match op with
        | Mul -> "×"
        | Add -> "+"
        | Exp -> "exp"
        | Reciprocal -> "/"
        | Log -> "log"
        | Relu -> "relu"

/// A scalar expression: inputs and operations on them. A node is known by its label: the same
/// label used twice is the same node (its value computed once, its gradients summed).
[<RequireQualifiedAccess>]
type Expr =
    /// An input value with its name.
    | Input of label: string * value: float
    /// An operation on other expressions, with the name of its result.
    | Node of op: NodeOp * label: string * inputs: Expr list

    /// The node's name.
    member e.Label =
        match e with
        | Input(label, _)
        | Node(_, label, _) -> label

/// Running expressions of scalar nodes forward and backward into Graphs, and the book's examples.
[<RequireQualifiedAccess>]
module Graph =
    /// The nodes reachable from the roots, each once, inputs before the nodes that use them
    /// (depth first, inputs in order).
    let private topological (roots: Expr list) : Expr list =
        let rec visit (seen: Set<string>, order: Expr list) (e: Expr) =
            if seen.Contains e.Label then seen, order
            else
                let seen, order =
                    match e with
                    | Expr.Input _ -> seen, order
                    | Expr.Node(_, _, inputs) -> List.fold visit (seen, order) inputs
                // (a node's inputs are all visited first, so the label cannot have been added meanwhile
                // unless the graph has a cycle, which an immutable expression cannot have)
                seen.Add e.Label, e :: order
        roots |> List.fold visit (Set.empty, []) |> snd |> List.rev

    /// out for an operation on its input values.
    let private forward (op: NodeOp) (xs: float list) : float =
        match op, xs with
        | NodeOp.Mul, [ x; y ] -> fst (MulLayer.forward x y)
        | NodeOp.Add, x :: rest -> List.fold AddLayer.forward x rest
        | NodeOp.Exp, [ x ] -> exp x
        | NodeOp.Reciprocal, [ x ] -> 1.0 / x
        | NodeOp.Log, [ x ] -> log x
        | NodeOp.Relu, [ x ] -> Functions.Elementwise.relu x
        | _ -> invalidArg "xs" $"{op.Symbol} does not take %d{xs.Length} inputs"

    /// The gradient of each input from dout, the input values and the output (local rules).
    let private backward (op: NodeOp) (xs: float list) (out: float) (dout: float) : float list =
        match op, xs with
        | NodeOp.Mul, [ x; y ] -> let _, cache = MulLayer.forward x y in let dx, dy = MulLayer.backward cache dout in [ dx; dy ]
        | NodeOp.Add, _ -> xs |> List.map (fun _ -> fst (AddLayer.backward dout))
        | NodeOp.Exp, [ _ ] -> [ dout * out ]
        | NodeOp.Reciprocal, [ _ ] -> [ -dout * out * out ]
        | NodeOp.Log, [ x ] -> [ dout / x ]
        | NodeOp.Relu, [ x ] -> [ dout * Functions.Elementwise.step x ]
        | _ -> invalidArg "xs" $"{op.Symbol} does not take %d{xs.Length} inputs"

    /// Runs the graph of the roots: every node forward once (inputs first), then backward from
    /// the roots, each root seeded with its upstream gradient (1 for a final output, ∂L/∂y for a
    /// layer's output), each node handing dout to its inputs through its local rule; gradients
    /// reaching a node by several paths are summed.
    let run (title: string) (roots: (Expr * float) list) : Graph =
        let order = topological (List.map fst roots)
        let inputsOf (e: Expr) = match e with Expr.Node(_, _, inputs) -> inputs | Expr.Input _ -> []
        let values =
            order
            |> List.fold
                (fun (values: Map<string, float>) e ->
                    match e with
                    | Expr.Input(label, v) -> values.Add(label, v)
                    | Expr.Node(op, label, inputs) -> values.Add(label, forward op [ for i in inputs -> values[i.Label] ]))
                Map.empty
        let seeds = roots |> List.fold (fun (g: Map<string, float>) (e, dout) -> g.Add(e.Label, dout + defaultArg (g.TryFind e.Label) 0.0)) Map.empty
        let grads =
            List.rev order
            |> List.fold
                (fun (grads: Map<string, float>) e ->
                    match e with
                    | Expr.Input _ -> grads
                    | Expr.Node(op, label, inputs) ->
                        let dout = defaultArg (grads.TryFind label) 0.0
                        let dxs = backward op [ for i in inputs -> values[i.Label] ] values[label] dout
                        List.fold2 (fun (g: Map<string, float>) (i: Expr) dx -> g.Add(i.Label, dx + defaultArg (g.TryFind i.Label) 0.0)) grads inputs dxs)
                seeds
        let ids = order |> List.mapi (fun k e -> e.Label, $"n%d{k}") |> Map.ofList
        { Title = title
          Nodes =
            order
            |> List.map (fun e ->
                { Id = ids[e.Label]
                  Label = e.Label
                  Op = (match e with Expr.Node(op, _, _) -> op.Symbol | Expr.Input _ -> "")
                  Value = values[e.Label]
                  Grad = defaultArg (grads.TryFind e.Label) 0.0 })
          Edges = order |> List.collect (fun e -> [ for i in inputsOf e -> ids[i.Label], ids[e.Label] ]) }

    /// The node with the given label. Raises ArgumentException naming it when there is none.
    let node (label: string) (graph: Graph) : GraphNode =
        match graph.Nodes |> List.tryFind (fun n -> n.Label = label) with
        | Some n -> n
        | None -> invalidArg "label" $"no node {label} in {graph.Title}"

    /// buy_apple.py (figure 5-16) as a graph: apple × apple_num = apple_price, × tax = price,
    /// with every node's value and gradient (price 220; 2.2, 110, 200 for 100, 2 and 1.1).
    let buyApple (apple: float) (appleNum: float) (tax: float) : Graph =
        let applePrice = Expr.Node(NodeOp.Mul, "apple_price", [ Expr.Input("apple", apple); Expr.Input("apple_num", appleNum) ])
        let price = Expr.Node(NodeOp.Mul, "price", [ applePrice; Expr.Input("tax", tax) ])
        run "buy_apple" [ price, 1.0 ]

    /// buy_apple_orange.py (figure 5-17) as a graph: (apple × apple_num + orange × orange_num) ×
    /// tax (715; 2.2, 110, 3.3, 165, 650 for 100, 2, 150, 3 and 1.1).
    let buyAppleOrange (apple: float) (appleNum: float) (orange: float) (orangeNum: float) (tax: float) : Graph =
        let applePrice = Expr.Node(NodeOp.Mul, "apple_price", [ Expr.Input("apple", apple); Expr.Input("apple_num", appleNum) ])
        let orangePrice = Expr.Node(NodeOp.Mul, "orange_price", [ Expr.Input("orange", orange); Expr.Input("orange_num", orangeNum) ])
        let allPrice = Expr.Node(NodeOp.Add, "all_price", [ applePrice; orangePrice ])
        let price = Expr.Node(NodeOp.Mul, "price", [ allPrice; Expr.Input("tax", tax) ])
        run "buy_apple_orange" [ price, 1.0 ]

    /// ReLU (figure 5-18) on two inputs, one positive and one not, each with upstream gradient
    /// dout: the gradient passes where x > 0 and stops elsewhere.
    let relu (x1: float) (x2: float) (dout: float) : Graph =
        let y1 = Expr.Node(NodeOp.Relu, "y1", [ Expr.Input("x1", x1) ])
        let y2 = Expr.Node(NodeOp.Relu, "y2", [ Expr.Input("x2", x2) ])
        run "Relu" [ y1, dout; y2, dout ]

    /// Sigmoid as the book draws it (figures 5-19, 5-20): x × -1, exp, + 1, /; backward from y
    /// with upstream gradient dout, giving dx = dout · y(1 - y) at x.
    let sigmoid (x: float) (dout: float) : Graph =
        let minusX = Expr.Node(NodeOp.Mul, "-x", [ Expr.Input("x", x); Expr.Input("-1", -1.0) ])
        let e = Expr.Node(NodeOp.Exp, "exp(-x)", [ minusX ])
        let denominator = Expr.Node(NodeOp.Add, "1+exp(-x)", [ e; Expr.Input("1", 1.0) ])
        let y = Expr.Node(NodeOp.Reciprocal, "y", [ denominator ])
        run "Sigmoid" [ y, dout ]

    /// Affine for one sample (figures 5-24, 5-25) with each product and sum as its own node:
    /// a_j = Σ_i x_i · W_ij + b_j, backward from each a_j with upstream gradient dout_j.
    /// x has n values, W n × m (rows), b and dout m.
    let affine (x: float list) (W: float list list) (b: float list) (dout: float list) : Graph =
        let n, m = x.Length, b.Length
        if W.Length <> n || W |> List.exists (fun row -> row.Length <> m) || dout.Length <> m then
            invalidArg "W" $"x has %d{n} values and b %d{m}: W must be %d{n} × %d{m} and dout have %d{m} values"
        let xs = x |> List.mapi (fun i v -> Expr.Input($"x{i + 1}", v))
        let outputs =
            [ for j in 0 .. m - 1 ->
                let products =
                    [ for i in 0 .. n - 1 -> Expr.Node(NodeOp.Mul, $"x{i + 1}·W{i + 1}{j + 1}", [ xs[i]; Expr.Input($"W{i + 1}{j + 1}", W[i][j]) ]) ]
                Expr.Node(NodeOp.Add, $"a{j + 1}", products @ [ Expr.Input($"b{j + 1}", b[j]) ]), dout[j] ]
        run "Affine" outputs

    /// Softmax-with-Loss with elementary nodes (appendix A, figure A-5): exp of each score,
    /// their sum S, 1/S, y_k = exp(a_k) · 1/S, then the cross-entropy -Σ t_k log y_k as log, ×,
    /// + and × -1; backward from L with dout 1, giving y - t at the scores.
    let softmaxWithLoss (a: float list) (t: float list) : Graph =
        if a.Length <> t.Length then invalidArg "t" $"%d{a.Length} scores and %d{t.Length} labels"
        let k = List.length a
        let exps = a |> List.mapi (fun i v -> Expr.Node(NodeOp.Exp, $"exp(a{i + 1})", [ Expr.Input($"a{i + 1}", v) ]))
        let s = Expr.Node(NodeOp.Add, "S", exps)
        let inverse = Expr.Node(NodeOp.Reciprocal, "1/S", [ s ])
        let ys = exps |> List.mapi (fun i e -> Expr.Node(NodeOp.Mul, $"y{i + 1}", [ e; inverse ]))
        let terms =
            [ for i in 0 .. k - 1 ->
                let logY = Expr.Node(NodeOp.Log, $"log y{i + 1}", [ ys[i] ])
                Expr.Node(NodeOp.Mul, $"t{i + 1}·log y{i + 1}", [ logY; Expr.Input($"t{i + 1}", t[i]) ]) ]
        let sum = Expr.Node(NodeOp.Add, "Σ t·log y", terms)
        let loss = Expr.Node(NodeOp.Mul, "L", [ sum; Expr.Input("-1", -1.0) ])
        run "SoftmaxWithLoss" [ loss, 1.0 ]

    /// The layer figures with the small fixed examples of `backprop graph layer NAME`: "relu"
    /// (x = 1.5 and -0.5, dout 1), "sigmoid" (x = 1, dout 1), "affine" (the book's 3.4.3 numbers:
    /// x = [1, 0.5], W1, B1, giving a = [0.3, 0.7, 1.1]; dout = [0.1, -0.2, 0.3]) and
    /// "softmax-with-loss" (the scores [0.3, 2.9, 4.0] of 3.5.1, label 2).
    let tryLayer (name: string) : Graph option =
        match name.ToLowerInvariant() with
        | "relu" -> Some(relu 1.5 -0.5 1.0)
        | "sigmoid" -> Some(sigmoid 1.0 1.0)
        | "affine" -> Some(affine [ 1.0; 0.5 ] [ [ 0.1; 0.3; 0.5 ]; [ 0.2; 0.4; 0.6 ] ] [ 0.1; 0.2; 0.3 ] [ 0.1; -0.2; 0.3 ])
        | "softmax-with-loss" -> Some(softmaxWithLoss [ 0.3; 2.9; 4.0 ] [ 0.0; 0.0; 1.0 ])
        | _ -> None

    /// The names tryLayer knows.
    let layerNames = [ "relu"; "sigmoid"; "affine"; "softmax-with-loss" ]

/// A summary of a tensor too large to print: its shape, L2 norm, minimum, maximum and mean.
type TensorSummary =
    { /// Rows × columns (a sample is one row).
      Shape: int[]
      /// The square root of the sum of squares.
      Norm: float
      /// The smallest element.
      Min: float
      /// The largest element.
      Max: float
      /// The mean of the elements.
      Mean: float }

/// One layer of a traced network: what went in and out in each direction.
type LayerTrace =
    { /// The layer's name as the book's TwoLayerNet names it: "Affine1", "Relu1", "Affine2".
      Name: string
      /// The layer.
      Layer: Layer
      /// The input x (the previous layer's output).
      Input: Matrix<float>
      /// The output of forward.
      Output: Matrix<float>
      /// The gradient of the loss with respect to the output (what backward received).
      DOut: Matrix<float>
      /// The gradient with respect to the input (what backward returned; for the first layer, the
      /// gradient for the input pixels).
      DX: Matrix<float>
      /// The gradients of the layer's parameters under their network names (dW1 under "W1").
      Gradients: Named<float> }

/// A network run forward and backward on a batch (usually one sample), every layer kept.
type NetworkTrace =
    { /// The layers in order.
      Layers: LayerTrace list
      /// The scores, the last layer's output.
      Scores: Matrix<float>
      /// softmax(scores): the class probabilities.
      Probabilities: Matrix<float>
      /// The labels the loss was measured against.
      Labels: Labels<float>
      /// The mean cross-entropy loss.
      Loss: float
      /// The gradient of the loss with respect to the scores: (y - t) / N.
      DScores: Matrix<float> }

/// Tracing networks: every layer's forward and backward values; for one image, the input
/// gradient, the activations and the probabilities.
[<RequireQualifiedAccess>]
module Trace =
    /// The summary of a matrix (Norm, Min, Max and Mean 0 for an empty one).
    [<CompiledName("Summarize")>]
    let summarize (m: Matrix<float>) : TensorSummary =
        let a = m.AsColumnMajorArray()
        let a = if isNull a then m.ToColumnMajorArray() else a
        if a.Length = 0 then { Shape = [| m.RowCount; m.ColumnCount |]; Norm = 0.0; Min = 0.0; Max = 0.0; Mean = 0.0 }
        else
            { Shape = [| m.RowCount; m.ColumnCount |]
              Norm = sqrt (Array.sumBy (fun v -> v * v) a)
              Min = Array.min a
              Max = Array.max a
              Mean = Array.average a }

    /// The name of the layer's kind, the union case ("Affine", "Relu", "Sigmoid").
    let private kindOf (layer: Layer) =
        let case, _ = Microsoft.FSharp.Reflection.FSharpValue.GetUnionFields(layer, typeof<Layer>)
        case.Name

    /// Each layer's name as the book's TwoLayerNet names it: its kind and its number among the
    /// layers of that kind ("Affine1", "Relu1", "Affine2").
    [<CompiledName("LayerNames")>]
    let layerNames (layers: Layer list) : string list =
        layers
        |> List.mapFold
            (fun (counts: Map<string, int>) layer ->
                let kind = kindOf layer
                let k = defaultArg (counts.TryFind kind) 0 + 1
                $"%s{kind}%d{k}", counts.Add(kind, k))
            Map.empty
        |> fst

    /// Runs every layer forward in the given mode: each layer's input, output and cache.
    let private forwardAll (mode: Mode) (model: Model<float>) (x: Matrix<float>) =
        List.zip3 model.Layers model.Params model.States
        |> List.mapFold
            (fun x (layer, p, s) ->
                let out, cache, _ = Layer.forward mode layer p s x
                (x, out, cache), out)
            x

    /// The network run on x against labels t in training mode (as Network.gradient runs it),
    /// then backward from the loss with dout = 1, every layer's output, dout and dx kept, the
    /// first layer's dx included. The gradients equal Network.gradient's.
    [<CompiledName("Network")>]
    let network (model: Model<float>) (x: Matrix<float>) (t: Labels<float>) : NetworkTrace =
        let forwards, scores = forwardAll Mode.Train model x
        let loss, lossCache = SoftmaxWithLoss.forward scores t
        let dscores = SoftmaxWithLoss.backward lossCache 1.0
        let names = layerNames model.Layers
        let backwards, _ =
            List.foldBack
                (fun (_, _, cache) (acc, dout) ->
                    let dx, grads = Layer.backward cache dout
                    (dout, dx, Layer.gradientValues grads) :: acc, dx)
                forwards
                ([], dscores)
        // The parameters' names in network order, handed out layer by layer as many as each has.
        let _, layers =
            List.zip3 model.Layers forwards backwards
            |> List.zip names
            |> List.fold
                (fun (remaining: string list, acc) (name, (layer, (input, output, _), (dout, dx, values))) ->
                    let mine, rest = List.splitAt values.Length remaining
                    rest,
                    { Name = name
                      Layer = layer
                      Input = input
                      Output = output
                      DOut = dout
                      DX = dx
                      Gradients = List.zip mine values }
                    :: acc)
                (Network.parameterNames model.Layers, [])
        { Layers = List.rev layers
          Scores = scores
          Probabilities = lossCache.y
          Labels = t
          Loss = loss
          DScores = dscores }

    /// The named parameter gradients of a trace, in network order (as Network.gradient names them).
    [<CompiledName("Gradients")>]
    let gradients (trace: NetworkTrace) : Named<float> = trace.Layers |> List.collect (fun l -> l.Gradients)

    let private row (model: Model<float>) (image: float[]) =
        let inputs = (Network.sizes model.Layers).Head
        if image.Length <> inputs then invalidArg "image" $"the network takes %d{inputs} values, the image has %d{image.Length}"
        Matrix<float>.Build.Dense(1, image.Length, Array.copy image)

    /// The gradient of the loss for class c with respect to each input value of one image (the
    /// first layer's dx): where a pixel made brighter raises the loss (positive) or lowers it
    /// (negative), so its negative shows what would make the network more sure of c.
    [<CompiledName("InputGradient")>]
    let inputGradient (model: Model<float>) (image: float[]) (c: int) : float[] =
        let classes = List.last (Network.sizes model.Layers)
        if c < 0 || c >= classes then invalidArg "c" $"the class must be between 0 and %d{classes - 1}, got %d{c}"
        let trace = network model (row model image) (Labels.ClassIndices [| c |])
        trace.Layers.Head.DX.Row(0).ToArray()

    /// Each layer's output for one image in inference mode, named as layerNames names them; the
    /// hidden activations are the outputs of the layers between the Affine ones ("Relu1").
    [<CompiledName("Activations")>]
    let activations (model: Model<float>) (image: float[]) : (string * float[]) list =
        let forwards, _ = forwardAll Mode.Inference model (row model image)
        List.zip (layerNames model.Layers) [ for _, out, _ in forwards -> out.Row(0).ToArray() ]

    /// The class probabilities (softmax of the scores) of one image, in inference mode.
    [<CompiledName("Probabilities")>]
    let probabilities (model: Model<float>) (image: float[]) : float[] =
        (Functions.softmax (Network.predict model (row model image))).Row(0).ToArray()

/// MNIST-style preprocessing of a grey-scale image of any size, so that a digit drawn anywhere,
/// at any size, in dark or light ink, reaches the network the way MNIST's digits did.
[<RequireQualifiedAccess>]
module Preprocess =
    /// The side of the square a digit is fitted into (MNIST: 20).
    let box = 20

    /// The side of the network's image (MNIST: 28).
    let side = 28

    /// Ink below this fraction of the brightest ink is taken as background (noise, paper texture).
    let threshold = 0.2

    /// The image resampled to newWidth × newHeight, each target pixel the mean of the source area
    /// it covers (fractions of pixels weighted by their share): an area average when shrinking,
    /// blocks when enlarging.
    [<CompiledName("Resample")>]
    let resample (width: int, height: int, pixels: float[]) (newWidth: int) (newHeight: int) : float[] =
        let sx, sy = float width / float newWidth, float height / float newHeight
        // the overlaps of target cell t (covering [t·s, (t+1)·s)) with source cells, as (index, weight)
        let spans (s: float) (count: int) (t: int) =
            let a, b = float t * s, float (t + 1) * s
            [| for i in int (floor a) .. min (count - 1) (int (ceil b) - 1) do
                   let w = min b (float (i + 1)) - max a (float i)
                   if w > 0.0 then yield i, w |]
        let xs = Array.init newWidth (spans sx width)
        let ys = Array.init newHeight (spans sy height)
        Array.init (newWidth * newHeight) (fun k ->
            let ty, tx = k / newWidth, k % newWidth
            let mutable total, weight = 0.0, 0.0
            for y, wy in ys[ty] do
                for x, wx in xs[tx] do
                    total <- total + wy * wx * pixels[y * width + x]
                    weight <- weight + wy * wx
            if weight > 0.0 then total / weight else 0.0)

    /// The ink of an image as values in [0, 1], 1 the strongest: inverted when the background is
    /// light (its median brighter than mid-grey), the background level subtracted, scaled so the
    /// strongest ink is 1, and faint ink (below `threshold`) dropped. All zeros when there is no ink.
    [<CompiledName("Ink")>]
    let ink (width: int, height: int, pixels: byte[]) : float[] =
        if width < 1 || height < 1 || pixels.Length <> width * height then
            invalidArg "pixels" $"a %d{width} × %d{height} image has %d{width * height} pixels, got %d{pixels.Length}"
        let sorted = Array.sort pixels
        let median = float sorted[sorted.Length / 2]
        let light = median > 127.0
        let level (v: byte) = if light then 255.0 - float v else float v
        let background = level (byte median)
        let raw = pixels |> Array.map (fun v -> max 0.0 (level v - background))
        let strongest = Array.max raw
        if strongest <= 0.0 then Array.zeroCreate pixels.Length
        else raw |> Array.map (fun v -> let v = v / strongest in if v < threshold then 0.0 else v)

    /// The image as MNIST's digits were made: the ink (see `ink`) cropped to its bounding box,
    /// fitted into a 20 × 20 box keeping its aspect ratio, placed in 28 × 28 so that its centre of
    /// mass is at the centre, as grey levels 0-255 (white ink on black), row by row. An image
    /// without ink gives 784 zeros.
    [<CompiledName("Mnist")>]
    let mnist (width: int, height: int, pixels: byte[]) : byte[] =
        let ink = ink (width, height, pixels)
        let inked = [| for k in 0 .. ink.Length - 1 do if ink[k] > 0.0 then yield k % width, k / width |]
        if inked.Length = 0 then Array.zeroCreate (side * side)
        else
            let x0, x1 = inked |> Array.minBy fst |> fst, inked |> Array.maxBy fst |> fst
            let y0, y1 = inked |> Array.minBy snd |> snd, inked |> Array.maxBy snd |> snd
            let w, h = x1 - x0 + 1, y1 - y0 + 1
            let cropped = Array.init (w * h) (fun k -> ink[(y0 + k / w) * width + x0 + k % w])
            let scale = float box / float (max w h)
            let fw, fh = max 1 (int (round (float w * scale))), max 1 (int (round (float h * scale)))
            let fitted = resample (w, h, cropped) fw fh
            // the centre of mass in the fitted box (pixel centres at i + 0.5)
            let mass = Array.sum fitted
            let cx = (fitted |> Array.mapi (fun k v -> v * (float (k % fw) + 0.5)) |> Array.sum) / mass
            let cy = (fitted |> Array.mapi (fun k v -> v * (float (k / fw) + 0.5)) |> Array.sum) / mass
            let centre = float side / 2.0
            let ox = int (round (centre - cx)) |> max 0 |> min (side - fw)
            let oy = int (round (centre - cy)) |> max 0 |> min (side - fh)
            let result = Array.zeroCreate<byte> (side * side)
            for k in 0 .. fitted.Length - 1 do
                result[(oy + k / fw) * side + ox + k % fw] <- byte (round (255.0 * min 1.0 fitted[k]))
            result

    /// The network's input for an image: `mnist`'s grey levels scaled to [0, 1].
    [<CompiledName("ToInput")>]
    let toInput (width: int, height: int, pixels: byte[]) : float[] =
        mnist (width, height, pixels) |> Array.map (fun v -> float v / 255.0)

/// One activation layer's outputs on a set of images, at one point of training: the histogram of
/// the book's weight_init_activation_histogram.py and the figures that tell a dead ReLU or a
/// saturated sigmoid.
type ActivationStats =
    { /// The layer as Trace.layerNames names it ("Relu1", "Sigmoid3").
      Layer: string
      /// The histogram's range [Lo, Hi] (Sigmoid [0, 1], Tanh [-1, 1], ReLU [0, max(1, largest output)]).
      Lo: float
      /// The upper end of the range (the last bin includes it).
      Hi: float
      /// The number of outputs in each of the equal bins between Lo and Hi.
      Counts: int[]
      /// The mean of all outputs.
      Mean: float
      /// The standard deviation of all outputs (population).
      Std: float
      /// The fraction of outputs that are exactly 0 (a ReLU that is off).
      ZeroFraction: float
      /// The units whose output is 0 for every image: dead ReLUs (no gradient reaches their weights).
      DeadUnits: int
      /// The number of units of the layer.
      Units: int
      /// The fraction of outputs within 0.01 of the ends of a Sigmoid's (0, 1) or a Tanh's (-1, 1)
      /// range, where its gradient vanishes (0 for ReLU).
      SaturatedFraction: float }

/// One parameter (W1, b1, ...) at one point of training.
type ParameterStats =
    { /// The parameter's name (Network.parameterNames).
      Name: string
      /// The norm (square root of the sum of squares) of the gradient of the loss on the images.
      GradientNorm: float
      /// The norm of the parameter.
      WeightNorm: float
      /// The norm of the last update (the parameter after the step minus before it).
      UpdateNorm: float
      /// UpdateNorm / the norm of the parameter before the step (NaN when that is 0: a bias at 0).
      UpdateRatio: float }

/// The lens at one point of training: every activation layer and every parameter.
type LensSnapshot =
    { /// The epoch just ended (0: the initial network, with the first step's update).
      Epoch: int
      /// The optimizer step the network was measured after (0 for the initial network).
      Step: int
      /// The activation layers (ReLU, Sigmoid, Tanh) in order.
      Activations: ActivationStats list
      /// The parameters in order.
      Parameters: ParameterStats list }

/// The lens on training: activation histograms, gradient norms and update-to-weight ratios,
/// computed from models and a fixed batch of images (pure, float64).
[<RequireQualifiedAccess>]
module Lens =
    /// The number of histogram bins (the book's 30).
    let bins = 30

    /// How many values fall in each of `count` equal bins between lo and hi, as numpy.histogram
    /// counts them: bin k holds lo + k·w <= v < lo + (k + 1)·w, the last bin includes hi; values
    /// outside [lo, hi] and NaN are not counted.
    [<CompiledName("Histogram")>]
    let histogram (count: int) (lo: float) (hi: float) (values: float[]) : int[] =
        if count < 1 then invalidArg "count" $"a histogram needs at least one bin, got %d{count}"
        if not (hi > lo) then invalidArg "hi" $"the range must be [lo, hi] with lo < hi, got [%g{lo}, %g{hi}]"
        let counts = Array.zeroCreate count
        let width = (hi - lo) / float count
        for v in values do
            if v >= lo && v <= hi then
                let k = min (count - 1) (int ((v - lo) / width))
                counts[k] <- counts[k] + 1
        counts

    /// The statistics of an activation layer's outputs (one row per image, one column per unit).
    [<CompiledName("ActivationStatsOf")>]
    let activationStats (name: string) (layer: Layer) (out: Matrix<float>) : ActivationStats =
        let values = out.ToColumnMajorArray()
        let n = float (max 1 values.Length)
        let mean = Array.sum values / n
        let std = sqrt (Array.sumBy (fun v -> (v - mean) * (v - mean)) values / n)
        let largest = if values.Length = 0 then 1.0 else Array.max values
        let lo, hi, saturated =
            match layer with
            | Layer.Sigmoid -> 0.0, 1.0, (fun v -> v < 0.01 || v > 0.99)
            | Layer.Tanh -> -1.0, 1.0, (fun v -> abs v > 0.99)
            | _ -> 0.0, max 1.0 largest, (fun _ -> false)
        // a unit's outputs are one column: values[j·rows .. (j + 1)·rows - 1] (column-major)
        let rows = out.RowCount
        let dead = [ for j in 0 .. out.ColumnCount - 1 do if Array.forall (fun v -> v = 0.0) values[j * rows .. (j + 1) * rows - 1] then yield j ]
        { Layer = name
          Lo = lo
          Hi = hi
          Counts = histogram bins lo hi values
          Mean = mean
          Std = std
          ZeroFraction = float (values |> Array.filter (fun v -> v = 0.0) |> Array.length) / n
          DeadUnits = (if out.RowCount = 0 then 0 else dead.Length)
          Units = out.ColumnCount
          SaturatedFraction = float (values |> Array.filter saturated |> Array.length) / n }

    /// Each activation layer's (ReLU, Sigmoid, Tanh) outputs for x in inference mode, named as
    /// Trace.layerNames names them.
    [<CompiledName("ActivationOutputs")>]
    let activationOutputs (model: Model<float>) (x: Matrix<float>) : (string * Layer * Matrix<float>) list =
        List.zip3 model.Layers model.Params model.States
        |> List.zip (Trace.layerNames model.Layers)
        |> List.mapFold
            (fun x (name, (layer, p, s)) ->
                let out, _, _ = Layer.forward Mode.Inference layer p s x
                (name, layer, out), out)
            x
        |> fst
        |> List.filter (fun (_, layer, _) -> match layer with Layer.Relu | Layer.Sigmoid | Layer.Tanh -> true | _ -> false)

    /// The norm of a named array: the square root of the sum of its squares.
    let private norm (v: Value<float>) = sqrt (Value.sumOfSquares v)

    /// The lens of `measured` on images x with labels t: its activation layers' statistics and
    /// its gradients' norms (Network.gradient on x, t), with the update of one step, from the
    /// parameters `before` to `after`, against the parameters before it.
    [<CompiledName("Snapshot")>]
    let snapshot (epoch: int) (step: int) (measured: Model<float>) (before: Model<float>) (after: Model<float>) (x: Matrix<float>) (t: Labels<float>) : LensSnapshot =
        let _, grads, _ = Network.gradient measured x t
        let parameters =
            List.zip3 (Network.parameters measured) (Network.parameters before) (Network.parameters after)
            |> List.map2
                (fun (_, g) ((name, p), (_, b), (_, a)) ->
                    let update = norm (Value.map2 (-) a b)
                    let weight = norm b
                    { Name = name
                      GradientNorm = norm g
                      WeightNorm = norm p
                      UpdateNorm = update
                      UpdateRatio = (if weight > 0.0 then update / weight else nan) })
                grads
        { Epoch = epoch
          Step = step
          Activations = activationOutputs measured x |> List.map (fun (name, layer, out) -> activationStats name layer out)
          Parameters = parameters }
