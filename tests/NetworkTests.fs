/// The network (5.7): the book's fixed example, gradients of whole networks against numerical
/// ones, the gradient check on real images, and float32 next to float64.
module NetworkTests

open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

let private layers = Network.layers Activation.ReLU [ 2; 3; 2 ]
let private W1 = matrix [ [ 0.1; 0.2; 0.3 ]; [ 0.6; 0.5; 0.4 ] ]
let private W2 = matrix [ [ 0.3; 0.1 ]; [ 0.2; 0.5 ]; [ 0.8; 0.7 ] ]
let private withW1 (w1: Matrix<float>) =
    modelOf layers [ Params.Affine { W = w1; b = vector [ 0.0; 0.0; 0.0 ] }; Params.Empty; Params.Affine { W = W2; b = vector [ 0.0; 0.0 ] } ]
let private x = matrix [ [ 2.0; 3.0 ] ]
let private t = Labels.OneHot(matrix [ [ 0.0; 1.0 ] ])
let private exact = { absolute = 1e-12; relative = 0.0 }

[<Tests>]
let tests =
    testList "network (5.7)" [
        test "layers: 784-50-10 is Affine, ReLU, Affine; deeper specs interleave the activation" {
            Expect.equal (Network.layers Activation.ReLU [ 784; 50; 10 ]) [ Layer.Affine(784, 50); Layer.Relu; Layer.Affine(50, 10) ] "two-layer net"
            Expect.equal
                (Network.layers Activation.Sigmoid [ 4; 3; 2; 1 ])
                [ Layer.Affine(4, 3); Layer.Sigmoid; Layer.Affine(3, 2); Layer.Sigmoid; Layer.Affine(2, 1) ]
                "three layers"
            Expect.equal (Network.sizes (Network.layers Activation.ReLU [ 784; 100; 50; 10 ])) [ 784; 100; 50; 10 ] "sizes round trip"
            Expect.throwsT<System.ArgumentException> (fun () -> Network.layers Activation.ReLU [ 784 ] |> ignore) "one size is not a network"
            Expect.throwsT<System.ArgumentException> (fun () -> Network.layers Activation.ReLU [ 784; 0; 10 ] |> ignore) "zero-sized layer"
        }
        test "fixed example: loss 0.6981594795028659" {
            let loss, _, _ = Network.gradient (withW1 W1) x t
            Expect.floatClose exact loss 0.6981594795028659 "loss"
        }
        test "fixed example: W1 -= 1.0 * dW1 once gives 0.33984069124400607, ten times 0.0015803586491286087" {
            let _, grads, _ = Network.gradient (withW1 W1) x t
            let dW1 = match grads with ("W1", Value.Matrix g) :: _ -> g | _ -> failwith "W1 has gradients"
            Expect.floatClose exact (Network.loss (withW1 (W1 - dW1)) x t) 0.33984069124400607 "one step"
            let tenSteps = Seq.fold (fun (w: Matrix<float>) _ -> w - 1.0 * dW1) W1 [ 1..10 ]
            Expect.floatClose exact (Network.loss (withW1 tenSteps) x t) 0.0015803586491286087 "ten steps"
        }
        test "fixed example: the model passed in is never changed" {
            let m = withW1 (W1.Clone())
            Network.gradient m x t |> ignore
            Network.numericalGradient m x t |> ignore
            match m.Params[0] with
            | Params.Affine p -> Expect.equal p.W W1 "W1 unchanged"
            | _ -> failtest "W1"
        }
        for activation, sizes in [ Activation.ReLU, [ 6; 5; 4 ]; Activation.Sigmoid, [ 6; 5; 4 ]; Activation.ReLU, [ 6; 5; 4; 3 ] ] do
            test $"gradient equals the numerical gradient: %A{activation} %A{sizes}" {
                let model: Model<float> = Network.init 3 0.5 (Network.layers activation sizes)
                let x = random 21 4 6
                let t = Labels.ClassIndices [| 0; 2; 3; 1 |] |> fun l -> if List.last sizes = 3 then Labels.ClassIndices [| 0; 2; 1; 1 |] else l
                let diffs = Network.gradientCheck model x t
                Expect.equal (List.map fst diffs) ([ 1 .. sizes.Length - 1 ] |> List.collect (fun i -> [ $"W{i}"; $"b{i}" ])) "W1, b1, W2, b2, ..."
                for name, d in diffs do
                    Expect.isLessThan d 1e-9 $"mean |backprop - numerical| of {name}"
            }
        test "gradient check on the first 3 MNIST images, 784-50-10: every difference below 1e-9" {
            let train, _ = mnist.Force()
            let model: Model<float> = Network.init 42 0.01 (Network.layers Activation.ReLU [ 784; 50; 10 ])
            let x, t = Dataset.batch train [| 0; 1; 2 |]
            let diffs = Network.gradientCheck model x t
            Expect.equal (List.map fst diffs) [ "W1"; "b1"; "W2"; "b2" ] "names"
            for name, d in diffs do
                Expect.isLessThan d 1e-9 name
                Expect.isGreaterThan d 0.0 $"{name}: an exact zero would mean nothing was compared"
        }
        test "init: same seed same weights, N(0, 0.01²) statistics" {
            let a: Model<float> = Network.init 5 0.01 (Network.layers Activation.ReLU [ 784; 50; 10 ])
            let b: Model<float> = Network.init 5 0.01 (Network.layers Activation.ReLU [ 784; 50; 10 ])
            let c: Model<float> = Network.init 6 0.01 (Network.layers Activation.ReLU [ 784; 50; 10 ])
            let w (m: Model<float>) = match m.Params[0] with Params.Affine p -> p.W | _ -> failwith "W1"
            Expect.equal (w a) (w b) "same seed"
            Expect.notEqual (w a) (w c) "other seed"
            let values = (w a).Enumerate() |> Array.ofSeq
            Expect.floatClose { absolute = 2e-4; relative = 0.0 } (Array.average values) 0.0 "mean"
            let sd = sqrt (values |> Array.averageBy (fun v -> v * v))
            Expect.floatClose { absolute = 2e-4; relative = 0.0 } sd 0.01 "standard deviation"
        }
        test "float32 gives the fixed example's loss to float32 precision" {
            let m32: Model<float32> =
                { Layers = layers
                  States = layers |> List.map (fun _ -> LayerState.Stateless)
                  Params = (withW1 W1).Params |> List.map (function Params.Affine p -> Params.Affine { W = p.W.Map float32; b = p.b.Map float32 } | _ -> Params.Empty) }
            let loss = Network.loss m32 (x.Map float32) (Labels.ClassIndices [| 1 |])
            Expect.floatClose { absolute = 1e-6; relative = 0.0 } (float loss) 0.6981594795028659 "float32 loss"
        }
    ]
