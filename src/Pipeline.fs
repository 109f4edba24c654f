namespace Backprop.Core

// The same training run as Run.epochs (Data.fs), computed on two cores, for speed only: the
// numbers are the same, report for report (tests/TrainingTests.fs checks it). The fold of
// Training.step is unchanged; around it,
//   - each mini-batch is gathered (by the helper thread, when it is free) while the step before
//     it runs, into a ring of three reused arrays, so a run allocates no image matrix per step;
//   - large matrix products are split between the two cores (Backend/Halves.fs, via Linalg);
//   - each epoch's model is evaluated on the helper while the next epoch trains.
// Models and datasets are immutable values, so work on the other core cannot race with the
// training: a batch's buffer is reused only two steps after its step is done.
// epochsWatchedBy and epochsWatchedFromWith do the same for any step (any optimizer), continuing
// a saved run's batches where it stopped.

open System.Threading.Tasks
open MathNet.Numerics.LinearAlgebra

/// Training on two cores with the reports of Run.epochs.
[<RequireQualifiedAccess>]
module Pipeline =
    /// The results of the items in order, each taken (by `result`) only once the next item has
    /// been made: item k + 1 starts on another core while result k is in use.
    let oneAheadBy (result: 'a -> 'b) (items: seq<'a>) : seq<'b> =
        Seq.append (Seq.map Some items) [ None ] |> Seq.pairwise |> Seq.map (fun (current, _) -> result current.Value)

    /// The results of the tasks in order, each awaited only once the next one has started, so
    /// that task k + 1 runs on another core while result k is in use. While it waits, this
    /// thread helps with the helper thread's products (Backend.Halves.await).
    let oneAhead (tasks: seq<Task<'a>>) : seq<'a> = oneAheadBy Backend.Halves.await tasks

    /// The config's Iterations mini-batches that come after the first `skip` of its seed's
    /// stream (the batches a run that has taken `skip` steps draws next), each offered to the
    /// helper thread to gather one step ahead. The skipped batches' indices are drawn (so the
    /// generator reaches the same position) but no image is gathered for them.
    let inline batchesAfter (skip: int) (config: TrainConfig) (train: Dataset) : seq<Matrix< ^T > * Labels< ^T >> =
        Training.batchesBy config.Sampling (config.Seed + 1) config.BatchSize train.Count
        |> Seq.skip skip
        |> Seq.truncate config.Iterations
        // Batch k + 1 is offered to the helper thread before batch k is taken, so the helper can
        // gather it while step k runs (or this thread gathers it, if the helper is busy).
        |> Dataset.batchesIn 3 (fun gather -> let batch = ref Unchecked.defaultof<_> in Backend.Halves.offer false (fun () -> batch.Value <- gather ()), batch) train
        |> oneAheadBy (fun (offer, batch) -> offer.Join(); batch.Value)

    /// The config's mini-batches from the start of its seed's stream (batchesAfter 0).
    let inline batches (config: TrainConfig) (train: Dataset) : seq<Matrix< ^T > * Labels< ^T >> = batchesAfter 0 config train

    /// The same reports as Run.epochsFrom, computed on two cores. Each report comes one epoch
    /// later than from Run.epochsFrom, with the same numbers.
    let inline epochsFrom (config: TrainConfig) (train: Dataset) (test: Dataset) (initial: TrainState< ^T >) : seq<EpochReport< ^T >> =
        batches config train
        |> Training.trainedOn config (Training.iterationsPerEpoch config train.Count) initial
        |> Seq.map (fun report -> Backend.Halves.inBackground (fun () -> Run.evaluated config train test report))
        |> oneAhead

    /// The same reports as Run.epochs, computed on two cores.
    let inline epochs (config: TrainConfig) (train: Dataset) (test: Dataset) (initial: Model< ^T >) : seq<EpochReport< ^T >> =
        epochsFrom config train test (Training.start initial)

    /// The steps (state, loss) in order, each passed to `onStep` before it is passed on; after
    /// the first step for which onStep returns false, no more steps are taken.
    let watched (onStep: 'S -> float -> bool) (steps: seq<'S * float>) : seq<'S * float> =
        seq {
            use e = steps.GetEnumerator()
            let mutable going = true
            while going && e.MoveNext() do
                let state, loss = e.Current
                going <- onStep state loss
                yield state, loss
        }

    /// The watched steps grouped into epochs, each epoch's report evaluated on the helper thread
    /// (passed to `onEvaluated` there as soon as it is done) while the next epoch trains.
    let inline private evaluatedByEpoch
        (config: TrainConfig)
        (train: Dataset)
        (test: Dataset)
        (onEvaluated: EpochReport< ^T > -> unit)
        (steps: seq<TrainState< ^T > * float>)
        : seq<EpochReport< ^T >> =
        steps
        |> Training.byEpoch (Training.iterationsPerEpoch config train.Count)
        |> Seq.map (fun report ->
            Backend.Halves.inBackground (fun () ->
                let evaluated = Run.evaluated config train test report
                onEvaluated evaluated
                evaluated))
        |> oneAhead

    /// The reports of epochsFrom (the same numbers), with two hooks for a live display:
    /// `onStep` is called on the training thread after every step with the state it reached and
    /// the step's loss (Training.steps's), and the run stops after the first step for which it
    /// returns false (its last epoch is then partial, and evaluated like the others);
    /// `onEvaluated` is called with each report as soon as its evaluation is done, on the thread
    /// that evaluated it (usually the helper, while the next epoch trains), before the report
    /// reaches the sequence. Both must be quick: they run between steps and products.
    let inline epochsWatchedFrom
        (config: TrainConfig)
        (train: Dataset)
        (test: Dataset)
        (initial: TrainState< ^T >)
        (onStep: TrainState< ^T > -> float -> bool)
        (onEvaluated: EpochReport< ^T > -> unit)
        : seq<EpochReport< ^T >> =
        batches config train
        |> Training.steps (ofFloat config.LearningRate) initial
        |> Seq.map (fun (state, loss) -> state, float loss)
        |> watched onStep
        |> evaluatedByEpoch config train test onEvaluated

    /// The watched run (as epochsWatchedFrom: the same hooks, the same stop) of any step
    /// function, continuing a run: from `initial`, which has taken initial.Step steps, it takes
    /// config.Iterations more on the batches that come after the first initial.Step of the
    /// config's stream (batchesAfter). So a run saved after N steps and resumed for M takes the
    /// batches N + 1 .. N + M and ends where one run of N + M steps ends, bit for bit. The
    /// reports count epochs from 1 and steps from initial.Step. `step` is one step of training
    /// (Training.step lr, or Training.stepWith optimizer): (state, batch) -> (new state, loss).
    let inline epochsWatchedBy
        ([<InlineIfLambda>] step: TrainState< ^T > -> Matrix< ^T > * Labels< ^T > -> TrainState< ^T > * ^T)
        (config: TrainConfig)
        (train: Dataset)
        (test: Dataset)
        (initial: TrainState< ^T >)
        (onStep: TrainState< ^T > -> float -> bool)
        (onEvaluated: EpochReport< ^T > -> unit)
        : seq<EpochReport< ^T >> =
        batchesAfter initial.Step config train
        |> Seq.scan (fun (state, _) batch -> step state batch) (initial, LanguagePrimitives.GenericZero)
        |> Seq.skip 1
        |> Seq.map (fun (state, loss) -> state, float loss)
        |> watched onStep
        |> evaluatedByEpoch config train test onEvaluated

    /// The watched run with any optimizer (Optimizer.adam, a chain with weight decay, ...):
    /// epochsWatchedBy (Training.stepWith optimizer). From a state at step 0 its reports are
    /// Run.epochsWith's, report for report; from a saved state it continues that run's batches.
    /// config.LearningRate is unused: the optimizer holds its own.
    let inline epochsWatchedFromWith
        (optimizer: Optimizer< ^T >)
        (config: TrainConfig)
        (train: Dataset)
        (test: Dataset)
        (initial: TrainState< ^T >)
        (onStep: TrainState< ^T > -> float -> bool)
        (onEvaluated: EpochReport< ^T > -> unit)
        : seq<EpochReport< ^T >> =
        epochsWatchedBy (Training.stepWith optimizer) config train test initial onStep onEvaluated

    /// The reports of Run.epochsWith (any optimizer: Adam, a chain with weight decay, ...),
    /// report for report, computed on two cores: epochsWatchedFromWith without hooks. From a
    /// state at step 0 the run is Run.epochsWith's; from a saved state it continues that run's
    /// batches (as epochsWatchedBy does).
    let inline epochsWith
        (optimizer: Optimizer< ^T >)
        (config: TrainConfig)
        (train: Dataset)
        (test: Dataset)
        (initial: TrainState< ^T >)
        : seq<EpochReport< ^T >> =
        epochsWatchedFromWith optimizer config train test initial (fun _ _ -> true) ignore
