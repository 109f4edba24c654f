/// Computational graphs from running code (Trace.fs's Graph) and their Graphviz text (Dot.fs):
/// the book's shopping numbers, the layer figures against the book's formulas and numbers, the
/// network trace against Network.gradient, golden DOT text, SVG where Graphviz is installed, and
/// the `graph` command.
module GraphTests

open System
open System.IO
open System.Xml.Linq
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

let private close = Accuracy.veryHigh

/// A program the test needs from Debian (dot, chromium): its path, or the test is skipped here and
/// fails under CI (CI=true), where .ci/run installs it.
let requireProgram (path: string) (package: string) =
    if not (File.Exists path) then
        requireOrSkip $"{path} is missing (apt-get install {package})"
    path

/// The repository's golden DOT files.
let goldenDir = Path.Combine(repoRoot, "tests", "golden")

/// The value and gradient of the node with that label.
let private valueGrad (label: string) (g: Graph) = let n = Graph.node label g in n.Value, n.Grad

/// Runs `dot -Tsvg` on the text and parses the SVG as XML; returns the text of its <text> elements.
let private svgTexts (dotText: string) =
    let dot = requireProgram "/usr/bin/dot" "graphviz"
    let info = Diagnostics.ProcessStartInfo(dot, "-Tsvg", RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false)
    use p = Diagnostics.Process.Start info
    let svg = p.StandardOutput.ReadToEndAsync()
    p.StandardInput.Write dotText
    p.StandardInput.Close()
    p.WaitForExit()
    Expect.equal p.ExitCode 0 "dot -Tsvg exit code"
    let xml = XDocument.Parse svg.Result // throws unless the SVG is well-formed XML
    let ns = XNamespace.Get "http://www.w3.org/2000/svg"
    Expect.equal xml.Root.Name (ns + "svg") "an <svg> root"
    [ for t in xml.Descendants(ns + "text") -> t.Value ]

[<Tests>]
let tests =
    testList "graphs (5.4, figures 5-18 to 5-30)" [
        test "buy_apple graph: forward 200, 220; backward 2.2, 110, 1.1, 200" {
            let g = Graph.buyApple 100.0 2.0 1.1
            Expect.equal [ for n in g.Nodes -> n.Label ] [ "apple"; "apple_num"; "apple_price"; "tax"; "price" ] "nodes in forward order"
            Expect.equal [ for n in g.Nodes -> n.Op ] [ ""; ""; "×"; ""; "×" ] "two multiply nodes"
            Expect.equal g.Edges [ "n0", "n2"; "n1", "n2"; "n2", "n4"; "n3", "n4" ] "edges"
            for label, (value, grad) in [ "apple", (100.0, 2.2); "apple_num", (2.0, 110.0); "apple_price", (200.0, 1.1); "tax", (1.1, 200.0); "price", (220.0, 1.0) ] do
                let v, d = valueGrad label g
                Expect.floatClose close v value $"{label} value"
                Expect.floatClose close d grad $"{label} gradient"
        }
        test "buy_apple_orange graph: 715; 2.2, 110, 3.3, 165, 650" {
            let g = Graph.buyAppleOrange 100.0 2.0 150.0 3.0 1.1
            for label, (value, grad) in
                [ "apple", (100.0, 2.2); "apple_num", (2.0, 110.0); "orange", (150.0, 3.3); "orange_num", (3.0, 165.0)
                  "apple_price", (200.0, 1.1); "orange_price", (450.0, 1.1); "all_price", (650.0, 1.1); "tax", (1.1, 650.0); "price", (715.0, 1.0) ] do
                let v, d = valueGrad label g
                Expect.floatClose close v value $"{label} value"
                Expect.floatClose close d grad $"{label} gradient"
        }
        test "DOT of graph apple and apple-orange: the golden text, with the book's numbers" {
            for name, g, numbers in
                [ "apple", Graph.buyApple 100.0 2.0 1.1, [ "value 220"; "grad 2.2"; "grad 110"; "grad 200" ]
                  "apple-orange", Graph.buyAppleOrange 100.0 2.0 150.0 3.0 1.1, [ "value 715"; "grad 2.2"; "grad 110"; "grad 3.3"; "grad 165"; "grad 650" ] ] do
                let text = Dot.ofGraph g
                Expect.equal text (File.ReadAllText(Path.Combine(goldenDir, $"{name}.dot"))) $"{name}.dot unchanged"
                for n in numbers do Expect.stringContains text $"{n}</font>" $"{name}: {n}"
                Expect.stringContains text "rankdir=LR" "left to right"
                Expect.equal (Dot.ofGraph g) text "the same text twice"
        }
        test "SVG of graph apple and apple-orange (Graphviz): well-formed XML with the book's numbers" {
            for g, numbers in
                [ Graph.buyApple 100.0 2.0 1.1, [ "value 220"; "grad 2.2"; "grad 110"; "grad 200" ]
                  Graph.buyAppleOrange 100.0 2.0 150.0 3.0 1.1, [ "value 715"; "grad 2.2"; "grad 110"; "grad 3.3"; "grad 165"; "grad 650" ] ] do
                let texts = svgTexts (Dot.ofGraph g)
                for n in numbers do Expect.contains texts n $"{g.Title}: {n} drawn"
        }
        test "layer relu (figure 5-18): dout passes where x > 0, stops elsewhere" {
            let g = (Graph.tryLayer "relu").Value
            Expect.equal (valueGrad "y1" g) (1.5, 1.0) "y1 = x1, dout 1"
            Expect.equal (valueGrad "x1" g) (1.5, 1.0) "passed"
            Expect.equal (valueGrad "y2" g) (0.0, 1.0) "y2 = 0"
            Expect.equal (valueGrad "x2" g) (-0.5, 0.0) "stopped"
        }
        test "layer sigmoid (figures 5-19, 5-20): y = 1/(1+e^-1), dx = y(1 - y) (5.12)" {
            let g = (Graph.tryLayer "sigmoid").Value
            let y = 0.7310585786300049 // 1 / (1 + e^-1)
            Expect.equal [ for n in g.Nodes -> n.Op ] [ ""; ""; "×"; "exp"; ""; "+"; "/" ] "the book's nodes: ×, exp, +, /"
            Expect.floatClose close (fst (valueGrad "y" g)) y "forward"
            Expect.floatClose close (snd (valueGrad "x" g)) (y * (1.0 - y)) "backward: 0.19661193324148185"
            Expect.floatClose close (snd (valueGrad "exp(-x)" g)) (-y * y) "the / node's -y² (figure 5-20)"
        }
        test "layer affine (figures 5-24, 5-25): the book's A1 = [0.3, 0.7, 1.1]; backward equals the Affine layer's" {
            let g = (Graph.tryLayer "affine").Value
            for label, a in [ "a1", 0.3; "a2", 0.7; "a3", 1.1 ] do
                Expect.floatClose close (fst (valueGrad label g)) a $"{label} (3.4.3)"
            // the matrix layer (Affine.backward: dx = dout · Wᵀ, dW = xᵀ · dout) as the reference
            let W = matrix [ [ 0.1; 0.3; 0.5 ]; [ 0.2; 0.4; 0.6 ] ]
            let _, cache = Affine.forward { W = W; b = vector [ 0.1; 0.2; 0.3 ] } (matrix [ [ 1.0; 0.5 ] ])
            let dx, grads = Affine.backward cache (matrix [ [ 0.1; -0.2; 0.3 ] ])
            for i in 0..1 do
                Expect.floatClose close (snd (valueGrad $"x{i + 1}" g)) dx[0, i] $"dx{i + 1}"
                for j in 0..2 do
                    Expect.floatClose close (snd (valueGrad $"W{i + 1}{j + 1}" g)) grads.dW[i, j] $"dW{i + 1}{j + 1}"
            for j in 0..2 do
                Expect.floatClose close (snd (valueGrad $"b{j + 1}" g)) grads.db[j] $"db{j + 1}"
        }
        test "layer softmax-with-loss (figure A-5): the book's y = [0.0182, 0.245, 0.737] (3.5.1), L = -log y3, dx = y - t" {
            let g = (Graph.tryLayer "softmax-with-loss").Value
            let y = [ 0.01821127; 0.24519181; 0.73659691 ] // np.exp(a) / np.sum(np.exp(a)) for a = [0.3, 2.9, 4.0]
            let t = [ 0.0; 0.0; 1.0 ]
            let tight = { absolute = 1e-8; relative = 0.0 }
            for i in 0..2 do
                Expect.floatClose tight (fst (valueGrad $"y{i + 1}" g)) y[i] $"y{i + 1}"
                Expect.floatClose tight (snd (valueGrad $"a{i + 1}" g)) (y[i] - t[i]) $"da{i + 1} = y - t"
            Expect.floatClose tight (fst (valueGrad "L" g)) (-log 0.73659691) "L"
            let ops = [ for n in g.Nodes -> n.Op ] |> List.distinct |> List.sort
            Expect.equal ops (List.sort [ ""; "exp"; "+"; "/"; "×"; "log" ]) "elementary nodes only"
        }
        test "every layer graph's input gradients match central differences of its outputs" {
            // Rebuild each graph with one input moved by ±h and compare Σ dout·Δout / 2h (an
            // independent, numerical reference) with the input's gradient.
            let h = 1e-5
            let tol = { absolute = 1e-8; relative = 1e-6 }
            let sigmoidOut x = (Graph.sigmoid x 1.0 |> Graph.node "y").Value
            Expect.floatClose tol (Graph.node "x" (Graph.sigmoid 1.0 1.0)).Grad ((sigmoidOut (1.0 + h) - sigmoidOut (1.0 - h)) / (2.0 * h)) "sigmoid"
            let loss (a: float list) = (Graph.softmaxWithLoss a [ 0.0; 0.0; 1.0 ] |> Graph.node "L").Value
            let g = Graph.softmaxWithLoss [ 0.3; 2.9; 4.0 ] [ 0.0; 0.0; 1.0 ]
            for i in 0..2 do
                let shifted d = [ 0.3; 2.9; 4.0 ] |> List.mapi (fun k v -> if k = i then v + d else v)
                Expect.floatClose tol (Graph.node $"a{i + 1}" g).Grad ((loss (shifted h) - loss (shifted -h)) / (2.0 * h)) $"softmax-with-loss a{i + 1}"
        }
        test "unknown layer names give None; the four names give graphs" {
            Expect.isNone (Graph.tryLayer "tanh") "not a figure here"
            for name in Graph.layerNames do Expect.isSome (Graph.tryLayer name) name
        }
        test "network trace: gradients equal Network.gradient's; the first layer's dx is there" {
            let model: Model<float> = Network.init 7 0.1 (Network.layers Activation.ReLU [ 784; 20; 10 ])
            let _, test = mnist.Force()
            let x: Matrix<float> = Dataset.images test [| 0 |]
            let t = Labels.ClassIndices [| 7 |]
            let trace = Trace.network model x t
            let loss, expected, _ = Network.gradient model x t
            Expect.floatClose close trace.Loss loss "loss"
            Expect.equal (Trace.gradients trace |> List.map fst) [ "W1"; "b1"; "W2"; "b2" ] "names"
            for (name, a), (_, b) in List.zip (Trace.gradients trace) expected do
                Expect.sequenceEqual (Value.toRowMajor a) (Value.toRowMajor b) name
            Expect.equal [ for l in trace.Layers -> l.Name ] [ "Affine1"; "Relu1"; "Affine2" ] "the book's layer names"
            Expect.equal (trace.Layers.Head.DX.RowCount, trace.Layers.Head.DX.ColumnCount) (1, 784) "dx of the first layer: one per pixel"
            for lower, upper in List.pairwise trace.Layers do
                Expect.equal lower.DOut upper.DX "each layer's dout is the dx of the layer above"
                Expect.equal upper.Input lower.Output "each layer's input is the output of the layer below"
            Expect.equal (List.last trace.Layers).DOut trace.DScores "the last layer's dout is (y - t) / N"
        }
        test "DOT of a network trace: layers with shapes, summaries of large tensors, every number of small ones" {
            let model: Model<float> = Network.init 7 0.1 (Network.layers Activation.ReLU [ 784; 20; 10 ])
            let _, test = mnist.Force()
            let trace = Trace.network model (Dataset.images test [| 0 |]) (Labels.ClassIndices [| 7 |])
            let text = Dot.ofTrace "trace" trace
            for part in [ "<b>Affine1</b>"; "W1 784×20"; "b1 20"; "<b>Relu1</b>"; "<b>Affine2</b>"; "W2 20×10"; "<b>x</b> 784"; "<b>scores</b> 10"; "<b>SoftmaxWithLoss</b>"; "rankdir=LR" ] do
                Expect.stringContains text part part
            let s = Trace.summarize trace.Layers.Head.Input
            Expect.stringContains text $"value norm {Dot.number s.Norm}, mean {Dot.number s.Mean}<br/>min 0, max 1" "the input summarized (784 numbers)"
            let scores = trace.Scores.Row(0).ToArray() |> Array.map Dot.number
            Expect.stringContains text ("value [" + String.concat ", " scores[..4] + ",<br/>" + String.concat ", " scores[5..] + "]") "the 10 scores in full, five to a line"
            Expect.stringContains text $"value {Dot.number trace.Loss}" "the loss"
        }
        test "Dot.number: invariant culture, 4 significant digits, no -0" {
            Expect.equal (List.map Dot.number [ 220.00000000000003; 2.2; 3.3000000000000003; -0.0; 0.19661193324148185; 1.5e-7; -74.1234 ]) [ "220"; "2.2"; "3.3"; "0"; "0.1966"; "1.5E-07"; "-74.12" ] "formats"
        }
        testSequencedGroup Common.console <| testList "graph command" [
            test "graph apple prints the DOT text; --out .dot writes it" {
                let code, out, err = CliTests.run [ "graph"; "apple" ]
                Expect.equal (code, err) (0, "") "exit code and stderr"
                Expect.equal out (File.ReadAllText(Path.Combine(goldenDir, "apple.dot"))) "stdout is the golden DOT"
                let file = Path.Combine(Directory.CreateTempSubdirectory("backprop-graph-").FullName, "ao.dot")
                let code, out, _ = CliTests.run [ "graph"; "apple-orange"; "--out"; file ]
                Expect.equal code 0 "exit code"
                Expect.stringStarts out "graph: buy_apple_orange" "what was drawn"
                Expect.equal (File.ReadAllText file) (File.ReadAllText(Path.Combine(goldenDir, "apple-orange.dot"))) "the file"
            }
            test "graph layer softmax-with-loss --out .svg and graph network --out .png draw with Graphviz" {
                requireProgram "/usr/bin/dot" "graphviz" |> ignore
                let dir = Directory.CreateTempSubdirectory("backprop-graph-").FullName
                let svg = Path.Combine(dir, "swl.svg")
                let code, _, err = CliTests.run [ "graph"; "layer"; "softmax-with-loss"; "--out"; svg ]
                Expect.equal (code, err) (0, "") "svg"
                let xml = XDocument.Load svg
                Expect.stringContains (xml.Root.Value) "value 0.3057" "L = -log 0.7366 drawn"
                let model = Path.Combine(dir, "m.npz")
                Npz.save model (Network.init 3 0.01 Training.bookNetwork: Model<float32>) []
                let png = Path.Combine(dir, "net.png")
                let code, out, err = CliTests.run [ "graph"; "network"; "--model"; model; "--index"; "0"; "--out"; png; "--data"; mnistDir ]
                Expect.equal (code, err) (0, "") "png"
                Expect.stringContains out "on test image 0 (label 7," "what was traced"
                Expect.equal (File.ReadAllBytes png).[1..3] "PNG"B "a PNG file"
            }
            test "graph: bad targets and options give one line and exit 2" {
                for args, expected in
                    [ [ "graph" ], "graph needs what to draw"
                      [ "graph"; "layer"; "tanh" ], "graph layer: unknown layer 'tanh' (one of relu, sigmoid, affine, softmax-with-loss)"
                      [ "graph"; "apple"; "--index"; "3" ], "graph apple takes no --index"
                      [ "graph"; "network" ], "graph network needs --model FILE.npz"
                      [ "graph"; "apple"; "--out"; "x.jpg" ], "--out x.jpg: give a .dot, .svg or .png file" ] do
                    let code, _, err = CliTests.run args
                    Expect.equal code 2 $"exit code of %A{args}"
                    Expect.stringContains err expected $"message of %A{args}"
                    Expect.equal (err.TrimEnd().Split('\n').Length) 1 $"one line for %A{args}"
                let code, _, err = CliTests.run [ "graph"; "network"; "--model"; "/no/such.npz" ]
                Expect.equal (code, err.Trim()) (1, "backprop: /no/such.npz: model file not found") "missing model"
            }
            test "the README's pictures are current: docs/pictures/*.dot is what graph writes now" {
                // (scripts/make-pictures.sh regenerates them; the PNGs are drawn from this text)
                let pictures = Path.Combine(repoRoot, "docs", "pictures")
                let model = Path.Combine(repoRoot, "tests", "fixtures", "book-3000.npz")
                for name, args in [ "apple-orange", [ "graph"; "apple-orange" ]; "network", [ "graph"; "network"; "--model"; model; "--index"; "0"; "--data"; mnistDir ] ] do
                    let code, out, err = CliTests.run args
                    Expect.equal (code, err) (0, "") name
                    Expect.equal out (File.ReadAllText(Path.Combine(pictures, $"{name}.dot"))) $"docs/pictures/{name}.dot: run scripts/make-pictures.sh and commit"
                    Expect.isTrue (File.Exists(Path.Combine(pictures, $"{name}.png"))) $"{name}.png"
                for name in [ "page"; "lens-std0.01-activations"; "lens-std0.01-gradients"; "lens-xavier-activations" ] do
                    Expect.isTrue (File.Exists(Path.Combine(pictures, $"{name}.png"))) $"{name}.png (made by scripts/make-pictures.sh)"
            }
        ]
    ]
