/// Training as a fold: the SGD step, reproducibility, and short end-to-end runs on MNIST.
module TrainingTests

open Expecto
open Backprop.Core
open Common

/// The reference for Evaluate.predictions: each image alone, as a 1-row batch, its largest score
/// found by hand.
let private classesAlone (model: Model<float>) (images: Dataset) =
    [| for i in 0 .. images.Count - 1 ->
           let x, _ = Dataset.batch images [| i |]
           let scores = Network.predict model x
           [ 0 .. 9 ] |> List.maxBy (fun c -> scores[0, c]) |]

/// Evaluate.predictions on two cores (with `backend`) and on one thread (the managed kernel), each
/// against every image alone.
let private expectAsAlone (backend: Linalg.Backend) (model: Model<float>) (images: Dataset) =
    let twoCores = Linalg.using (Linalg.settings backend Linalg.InputStorage.Auto 2) (fun () -> Evaluate.predictions model images)
    let oneThread = Linalg.using (Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Auto 1) (fun () -> Evaluate.predictions model images)
    let alone = classesAlone model images
    Expect.equal twoCores.Length images.Count "one class per image"
    Expect.equal twoCores alone "two halves = image by image"
    Expect.equal oneThread alone "one thread = image by image"
    Expect.isGreaterThan (Array.distinct alone).Length 2 "not one class for every image"

let private small = { Training.bookRecipe with Iterations = 50; BatchSize = 20 }

[<Tests>]
let tests =
    testList "training" [
        test "sgdStep returns a new model and leaves the old one as it was" {
            let train, _ = mnist.Force()
            let m: Model<float> = Network.init 42 0.01 Training.bookNetwork
            let before = match m.Params[0] with Params.Affine p -> p.W.Clone() | _ -> failwith "W1"
            let m', loss = Training.sgdStep 0.1 m (Dataset.batch train [| 0 .. 19 |])
            Expect.floatClose { absolute = 0.01; relative = 0.0 } loss (log 10.0) "the first loss is about ln 10 (uniform guesses)"
            match m.Params[0], m'.Params[0] with
            | Params.Affine p, Params.Affine p' ->
                Expect.equal p.W before "old W1 unchanged"
                Expect.notEqual p'.W before "new W1 moved"
            | _ -> failtest "W1"
        }
        test "Training.step: each new parameter is p - lr·g element by element, written over the gradient, the old model untouched" {
            let train, _ = mnist.Force()
            let inline check (lr: ^T) (model: Model< ^T >) (minus: ^T -> ^T -> ^T -> ^T) =
                let batch = Dataset.batch train [| 0 .. 31 |]
                let before = Network.clone model
                // the reference: the gradient of a copy, and the update by hand, element by element
                let _, grads, _ = Network.gradient (Network.clone model) (fst batch) (snd batch)
                let expected =
                    List.map2 (fun (name, p) (_, g) -> name, Array.map2 (fun p g -> minus p lr g) (Value.toRowMajor p) (Value.toRowMajor g)) (Network.parameters model) grads
                let state, _ = Training.step lr (Training.start model) batch
                let again, _ = Training.step lr (Training.start model) batch
                let after = Network.parameters state.Model |> List.map (fun (name, v) -> name, Value.toRowMajor v)
                Expect.equal after expected "W - lr·dW, b - lr·db for every parameter"
                Expect.equal (Network.parameters again.Model |> List.map (fun (name, v) -> name, Value.toRowMajor v)) expected "the same step again from the same model: the same parameters"
                Expect.equal (Network.parameters model) (Network.parameters before) "the old model's parameters unchanged"
                for (_, a), (_, b) in List.zip (Network.parameters state.Model) (Network.parameters again.Model) do
                    Expect.isFalse (obj.ReferenceEquals(Value.storage a, Value.storage b)) "two steps share no parameter memory"
                for (_, a), (_, b) in List.zip (Network.parameters state.Model) (Network.parameters model) do
                    Expect.isFalse (obj.ReferenceEquals(Value.storage a, Value.storage b)) "the new parameters share no memory with the old"
            let layers = [ Layer.Affine(784, 40); Layer.Relu; Layer.Affine(40, 30); Layer.Sigmoid; Layer.Affine(30, 10) ]
            check 0.1 (Network.init 5 0.1 layers: Model<float>) (fun p lr g -> p - lr * g)
            check 0.1f (Network.init 5 0.1 layers: Model<float32>) (fun p lr g -> p - lr * g)
            Linalg.using (Linalg.settings Linalg.Backend.Managed Linalg.InputStorage.Dense 1) (fun () ->
                check 0.1 (Network.init 6 0.1 layers: Model<float>) (fun p lr g -> p - lr * g))
        }
        test "same seed, same numbers; another seed, other numbers" {
            let train, test = mnist.Force()
            let sub = Dataset.take 1000 train
            let run seed = Run.epochs { small with Seed = seed } sub (Dataset.take 500 test) (Network.init seed 0.01 Training.bookNetwork: Model<float>) |> Seq.toList
            let a, b, c = run 1, run 1, run 2
            Expect.equal (a |> List.map (fun r -> r.Losses, r.TestAccuracy)) (b |> List.map (fun r -> r.Losses, r.TestAccuracy)) "identical runs"
            Expect.notEqual (a |> List.map (fun r -> r.Losses)) (c |> List.map (fun r -> r.Losses)) "other seed"
            Expect.equal (a |> List.map (fun r -> r.Epoch, r.Iteration)) [ 1, 50 ] "1000 images / batch 20 = 50 steps an epoch"
        }
        test "epochs: one report per epoch, the last one partial" {
            let train, test = mnist.Force()
            let sub = Dataset.take 200 train
            let reports = Run.epochs { small with Iterations = 25 } sub (Dataset.take 100 test) (Network.init 42 0.01 Training.bookNetwork: Model<float>) |> Seq.toList
            Expect.equal (reports |> List.map (fun r -> r.Epoch, r.Iteration, r.Losses.Length)) [ 1, 10, 10; 2, 20, 10; 3, 25, 5 ] "200 / 20 = 10 steps an epoch"
        }
        test "Pipeline.epochs (two cores) gives exactly the reports of Run.epochs (the plain fold)" {
            let train, test = mnist.Force()
            let sub, testSub = Dataset.take 600 train, Dataset.take 300 test
            let config = { small with Iterations = 95 }
            let initial: Model<float32> = Network.init 42 0.01 Training.bookNetwork
            let strip (r: EpochReport<float32>) = r.Epoch, r.Iteration, r.Losses, r.TrainAccuracy, r.TestAccuracy
            let sequential = Run.epochs config sub testSub initial |> Seq.map strip |> Seq.toList
            let overlapped = Pipeline.epochs config sub testSub initial |> Seq.map strip |> Seq.toList
            Expect.equal overlapped sequential "same epochs, losses and accuracies"
            Expect.equal (sequential |> List.map (fun (e, i, _, _, _) -> e, i)) [ 1, 30; 2, 60; 3, 90; 4, 95 ] "four epochs"
        }
        test "Evaluate.predictions: in two halves on two cores, one thread, and image by image, the same classes" {
            let train, _ = mnist.Force()
            // 1,050 images: an odd number of 100-image blocks and a partial last block
            let images = Dataset.take 1050 train
            let model: Model<float> = Network.init 7 0.1 [ Layer.Affine(784, 30); Layer.Relu; Layer.Affine(30, 10) ]
            expectAsAlone Linalg.Backend.Managed model images
        }
        test "Evaluate.predictions of a BatchNorm and Dropout network (its blocks' arrays reused): the same classes as image by image" {
            let train, _ = mnist.Force()
            let images = Dataset.take 1050 train
            let init: Model<float> = Network.initWith WeightInit.He 5 (Network.extended Activation.ReLU [ 784; 30; 20; 10 ] true (Some 0.3))
            // a few steps, so that the running statistics, gamma and beta are not their start
            let model = Seq.fold (fun m k -> fst (Training.sgdStep 0.1 m (Dataset.batch train [| 20 * k .. 20 * k + 19 |]))) init [ 0 .. 4 ]
            Expect.notEqual model.States init.States "the running statistics moved"
            expectAsAlone Linalg.Backend.Managed model images
        }
        test "Evaluate.predictions: 500-row blocks for wide later layers, the same classes as image by image" {
            let train, _ = mnist.Force()
            // 1,250 images: two 500-row blocks and a partial third
            let images = Dataset.take 1250 train
            let model: Model<float> =
                Network.init 3 0.1 [ Layer.Affine(784, 30); Layer.Relu; Layer.Affine(30, 600); Layer.Relu; Layer.Affine(600, 500); Layer.Relu; Layer.Affine(500, 10) ]
            Expect.equal (Evaluate.blockSizeFor model) 500 "600 x 500 = 300,000 weights after the first layer: 500-row blocks"
            Expect.equal (Evaluate.blockSizeFor (Network.init 3 0.1 Training.bookNetwork: Model<float>)) 100 "the book's network: 100-row blocks"
            Expect.equal (Evaluate.blockSizeFor (Network.init 3 0.1 [ Layer.Affine(784, 2000); Layer.Relu; Layer.Affine(2000, 10) ]: Model<float>)) 100 "a wide first layer alone: 100"
            expectAsAlone Linalg.Backend.Auto model images
        }
        test "sampling: sequential takes the images in order, shuffle each once an epoch" {
            let sequential = Training.batchesBy Sampling.Sequential 1 4 10 |> Seq.take 3 |> Seq.toList
            Expect.equal sequential [ [| 0; 1; 2; 3 |]; [| 4; 5; 6; 7 |]; [| 8; 9; 0; 1 |] ] "in order, wrapping"
            let shuffled = Training.batchesBy Sampling.Shuffle 1 5 10 |> Seq.take 4 |> Seq.toList
            Expect.equal (shuffled[0..1] |> Array.concat |> Array.sort) [| 0 .. 9 |] "first epoch: every image once"
            Expect.equal (shuffled[2..3] |> Array.concat |> Array.sort) [| 0 .. 9 |] "second epoch: every image once"
            Expect.notEqual shuffled[0..1] shuffled[2..3] "a new order each epoch"
            Expect.notEqual (shuffled[0..1] |> Array.concat) [| 0 .. 9 |] "not in order"
        }
        test "--eval-sample: the epoch's accuracy on the first N images only" {
            let train, test = mnist.Force()
            let model: Model<float32> = Network.init 42 0.01 Training.bookNetwork
            let report = { Epoch = 1; Iteration = 0; State = Training.start model; Losses = [||]; TrainAccuracy = nan; TestAccuracy = nan }
            let sampled = Run.evaluated { Training.bookRecipe with EvalSample = Some 300 } train test report
            Expect.equal sampled.TrainAccuracy (Evaluate.accuracy model (Dataset.take 300 train)) "train on 300"
            Expect.equal sampled.TestAccuracy (Evaluate.accuracy model (Dataset.take 300 test)) "test on 300"
        }
        test "one epoch of the book's recipe (600 steps, float64) reaches test accuracy above 0.90" {
            let train, test = mnist.Force()
            let config = { Training.bookRecipe with Iterations = 600 }
            let last = Run.epochs config train test (Network.init 42 0.01 Training.bookNetwork: Model<float>) |> Seq.last
            Expect.isGreaterThan last.TestAccuracy 0.90 "test accuracy"
            Expect.isGreaterThan last.TrainAccuracy 0.90 "train accuracy"
            Expect.isLessThan (Array.last last.Losses) 0.6 "the loss fell from ln 10 = 2.30"
        }
        test "float32 trains through the same code: 600 steps above 0.90" {
            let train, test = mnist.Force()
            let config = { Training.bookRecipe with Iterations = 600 }
            let last = Run.epochs config train test (Network.init 42 0.01 Training.bookNetwork: Model<float32>) |> Seq.last
            Expect.isGreaterThan last.TestAccuracy 0.90 "test accuracy"
        }
    ]
