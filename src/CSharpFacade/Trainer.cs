using Backprop.Core;
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Backprop.Core.Interop;
using Microsoft.FSharp.Core;

namespace Backprop;

/// <summary>The matrix-product backend of a trainer's runs (<see cref="Trainer.WithBackend"/>).</summary>
public enum MatrixBackend
{
    /// <summary>OpenBLAS if the system has it, else the managed kernel.</summary>
    Auto,
    /// <summary>OpenBLAS through P/Invoke, one thread.</summary>
    OpenBlas,
    /// <summary>The vectorized managed kernel.</summary>
    Managed,
}

/// <summary>How a trainer draws its mini-batches from the training set (<see cref="Trainer.WithSampling"/>; the CLI's <c>--sampling</c>).</summary>
public enum Sampling
{
    /// <summary>Uniformly with replacement, as the book's np.random.choice (the default).</summary>
    WithReplacement,
    /// <summary>A fresh random order each epoch, taken a batch at a time.</summary>
    Shuffle,
    /// <summary>In order from the first image, wrapping around: no randomness at all.</summary>
    Sequential,
}

/// <summary>What a run has reached at the end of an epoch.</summary>
/// <param name="Epoch">1 for the first epoch; 0 for the report of the untrained network that a run cancelled before its first step returns.</param>
/// <param name="Iteration">Training steps taken so far.</param>
/// <param name="TrainAccuracy">Accuracy on the training set (on its first images with <see cref="Trainer.WithEvaluationSample"/>).</param>
/// <param name="TestAccuracy">Accuracy on the evaluation set (on its first images with <see cref="Trainer.WithEvaluationSample"/>); NaN when the run has no evaluation set.</param>
/// <param name="Losses">The loss of each step in the epoch (none in an epoch-0 report).</param>
public sealed record EpochReport(int Epoch, int Iteration, double TrainAccuracy, double TestAccuracy, IReadOnlyList<double> Losses)
{
    /// <summary>The mean loss of the epoch's steps (NaN when it has none).</summary>
    public double MeanLoss => Losses.Count == 0 ? double.NaN : Losses.Average();
}

/// <summary>The outcome of <see cref="Trainer.Train"/>.</summary>
/// <param name="Model">The trained network (a new one; the network passed in is unchanged).</param>
/// <param name="History">
/// One report per epoch, in order; never empty: a run cancelled before its first step holds one
/// report of the untrained network (epoch 0, iteration 0, its accuracies measured).
/// </param>
/// <param name="Cancelled">True when the run was stopped by its cancellation token.</param>
public sealed record TrainingResult(NeuralNetwork Model, IReadOnlyList<EpochReport> History, bool Cancelled);

/// <summary>
/// An <see cref="IProgress{T}"/> that runs its handler at once, on the thread that reports: during
/// <see cref="Trainer.Train"/>, on the training thread, before the next step. Use it in console apps
/// and services. <see cref="Progress{T}"/> instead posts each report to the
/// <see cref="SynchronizationContext"/> it captured (the thread pool where there is none), so its
/// handler may run later, out of order, or after Train has returned; it suits a UI thread with
/// <see cref="Trainer.TrainAsync"/>.
/// </summary>
/// <typeparam name="T">The report type (<see cref="EpochReport"/>).</typeparam>
public sealed class SynchronousProgress<T> : IProgress<T>
{
    private readonly Action<T> handler;

    /// <summary>A progress sink that calls <paramref name="handler"/> with each report, at once.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="handler"/> is null.</exception>
    public SynchronousProgress(Action<T> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        this.handler = handler;
    }

    /// <summary>Calls the handler with <paramref name="value"/> on the calling thread.</summary>
    public void Report(T value) => handler(value);
}

/// <summary>
/// An immutable mini-batch training configuration, the book's chapter 5 recipe by default (SGD
/// with learning rate 0.1, no weight decay, batch 100 drawn with replacement, 10,000 iterations,
/// seed 42, evaluation on the whole sets); chapter 6's optimizers and weight decay with
/// <see cref="WithOptimizer"/> and <see cref="WithWeightDecay"/>. Every method returns a new
/// trainer and rejects a bad argument at once; <see cref="ToString"/> lists the settings.
/// </summary>
public sealed record Trainer
{
    /// <summary>The optimizer (<see cref="Optimizer.Sgd"/> with learning rate 0.1, the book's chapter 5 recipe).</summary>
    public Optimizer Optimizer { get; private init; } = Optimizer.Sgd(0.1);

    /// <summary>The optimizer's learning rate (0.1).</summary>
    public double LearningRate => Optimizer.LearningRate;

    /// <summary>The weight decay λ (0: none): λ·W is added to the gradient of every weight matrix (not the biases, γ or β) before the optimizer's step, and 0.5·λ·ΣW² to the reported loss (the book's 6.4.2).</summary>
    public double WeightDecay { get; private init; }

    /// <summary>The images per mini-batch (100).</summary>
    public int BatchSize { get; private init; } = 100;

    /// <summary>The number of training steps (10,000), or null when the run is set in <see cref="Epochs"/>.</summary>
    public int? Iterations { get; private init; } = 10000;

    /// <summary>The number of epochs, or null when the run is set in <see cref="Iterations"/>.</summary>
    public int? Epochs { get; private init; }

    /// <summary>The seed of the batches drawn (42).</summary>
    public int Seed { get; private init; } = 42;

    /// <summary>How batches are drawn (<see cref="Sampling.WithReplacement"/>).</summary>
    public Sampling Sampling { get; private init; } = Sampling.WithReplacement;

    /// <summary>The images of each set measured each epoch (the first this many), or null for all of them.</summary>
    public int? EvaluationSample { get; private init; }

    /// <summary>The matrix-product backend (<see cref="MatrixBackend.Auto"/>).</summary>
    public MatrixBackend Backend { get; private init; } = MatrixBackend.Auto;

    /// <summary>A trainer with the book's recipe.</summary>
    public static Trainer Create() => new();

    /// <summary>Sets the learning rate of the optimizer (keeping its kind and other hyperparameters).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="learningRate"/> is not a positive finite number.</exception>
    public Trainer WithLearningRate(double learningRate) => this with { Optimizer = Optimizer.WithLearningRate(learningRate) };

    /// <summary>
    /// Sets the optimizer: <see cref="Optimizer.Sgd"/>, <see cref="Optimizer.Momentum"/>,
    /// <see cref="Optimizer.Nesterov"/>, <see cref="Optimizer.AdaGrad"/>, <see cref="Optimizer.RmsProp"/>
    /// or <see cref="Optimizer.Adam"/>, each with the book's defaults for the hyperparameters not given.
    /// Its state (velocities, Adam's moments) starts at zero with each <see cref="Train"/>.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="optimizer"/> is null.</exception>
    public Trainer WithOptimizer(Optimizer optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        return this with { Optimizer = optimizer };
    }

    /// <summary>
    /// Sets the weight decay λ (the book's <c>weight_decay_lambda</c>; 0 for none): λ·W is added to
    /// the gradient of every weight matrix W1, W2, ... (never the biases, γ or β) before the
    /// optimizer's step, and 0.5·λ·ΣW² to the loss each step reports.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="lambda"/> is negative or not finite.</exception>
    public Trainer WithWeightDecay(double lambda)
    {
        if (!(lambda >= 0 && double.IsFinite(lambda)))
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "The weight decay must be zero or a positive finite number.");
        return this with { WeightDecay = lambda };
    }

    /// <summary>Sets the number of images per mini-batch.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batchSize"/> is not positive.</exception>
    public Trainer WithBatchSize(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        return this with { BatchSize = batchSize };
    }

    /// <summary>Sets the number of training steps (replaces any epoch count).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="iterations"/> is not positive.</exception>
    public Trainer WithIterations(int iterations)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(iterations);
        return this with { Iterations = iterations, Epochs = null };
    }

    /// <summary>
    /// Sets the number of epochs (training-set size / batch size steps each, at least one; replaces
    /// any iteration count). A run takes at most <see cref="int.MaxValue"/> steps: <see cref="Train"/>
    /// refuses more epochs than that allows for its training set.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="epochs"/> is not positive.</exception>
    public Trainer WithEpochs(int epochs)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(epochs);
        return this with { Epochs = epochs, Iterations = null };
    }

    /// <summary>Fixes the batches drawn: the same seed gives the same run.</summary>
    public Trainer WithSeed(int seed) => this with { Seed = seed };

    /// <summary>Sets how the mini-batches are drawn (the CLI's <c>--sampling</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sampling"/> is not a defined value.</exception>
    public Trainer WithSampling(Sampling sampling)
    {
        if (!Enum.IsDefined(sampling)) throw new ArgumentOutOfRangeException(nameof(sampling), sampling, "Unknown sampling.");
        return this with { Sampling = sampling };
    }

    /// <summary>
    /// Measures each epoch's accuracies on only the first <paramref name="count"/> images of the
    /// training and evaluation sets (the CLI's <c>--eval-sample</c>, the book's
    /// evaluate_sample_num_per_epoch): faster epochs, rougher numbers.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is not positive.</exception>
    public Trainer WithEvaluationSample(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        return this with { EvaluationSample = count };
    }

    /// <summary>
    /// Chooses the matrix-product backend for the runs of this trainer: it applies inside its
    /// <see cref="Train"/> calls only (other trainers, other threads and the rest of the process keep
    /// theirs), so trainings with different backends may run at the same time.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="backend"/> is not a defined value.</exception>
    public Trainer WithBackend(MatrixBackend backend)
    {
        if (!Enum.IsDefined(backend)) throw new ArgumentOutOfRangeException(nameof(backend), backend, "Unknown backend.");
        return this with { Backend = backend };
    }

    /// <summary>The settings, e.g. "Trainer { Optimizer = Sgd(learningRate: 0.1), WeightDecay = 0, BatchSize = 100, Iterations = 10000, ... }".</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"Trainer {{ Optimizer = {Optimizer}, WeightDecay = {WeightDecay}, BatchSize = {BatchSize}, {(Epochs is { } e ? $"Epochs = {e}" : $"Iterations = {Iterations}")}, Seed = {Seed}, Sampling = {Sampling}, EvaluationSample = {(EvaluationSample is { } n ? n.ToString(CultureInfo.InvariantCulture) : "all")}, Backend = {Backend} }}");

    /// <summary>
    /// Trains a copy of <paramref name="network"/> on <paramref name="train"/>, measuring accuracy on
    /// the training set and on <paramref name="evaluation"/> once an epoch.
    /// </summary>
    /// <param name="network">The network to start from; it is not changed.</param>
    /// <param name="train">The training images.</param>
    /// <param name="evaluation">The images to measure test accuracy on (e.g. the MNIST test set); null for none (<see cref="EpochReport.TestAccuracy"/> is then NaN).</param>
    /// <param name="progress">
    /// Receives one report per epoch, in order: <see cref="IProgress{T}.Report"/> is called on the training
    /// thread, between two steps, as soon as the epoch's evaluation is done (it runs on the second core
    /// while the next epoch trains; the last epoch's, before Train returns). <see cref="Progress{T}"/> then posts the report to its
    /// captured <see cref="SynchronizationContext"/> (the thread pool in a console app), so its handler
    /// may run after Train returns: use <see cref="SynchronousProgress{T}"/> to handle each report at once.
    /// </param>
    /// <param name="cancellationToken">
    /// Stops the run after the training step in progress; the run then returns what it has trained (its
    /// last report covers the partial epoch, evaluated; a run cancelled before its first step
    /// reports the untrained network as epoch 0), with <see cref="TrainingResult.Cancelled"/> set.
    /// It never throws <see cref="OperationCanceledException"/>.
    /// </param>
    /// <exception cref="ArgumentNullException"><paramref name="network"/> or <paramref name="train"/> is null.</exception>
    /// <exception cref="ArgumentException">The images do not fit the network's inputs, or a label is not below its number of classes.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The epochs set would take more than <see cref="int.MaxValue"/> steps on this training set (ParamName "epochs").</exception>
    /// <exception cref="InvalidOperationException">OpenBLAS was chosen and the system has none.</exception>
    public TrainingResult Train(NeuralNetwork network, ImageSet train, ImageSet? evaluation = null, IProgress<EpochReport>? progress = null, CancellationToken cancellationToken = default)
    {
        var (steps, settings) = Prepare(network, train, evaluation);
        return Linalg.Using(settings, FuncConvert.FromFunc(() => Run(network, train, evaluation, steps, progress, cancellationToken)));
    }

    /// <summary>
    /// <see cref="Train"/> on a thread-pool thread: the arguments are checked at once (a bad one
    /// throws here, not in the task), and the task completes with the result. Cancellation is as in
    /// <see cref="Train"/>: the task completes (never cancelled, never <see cref="OperationCanceledException"/>)
    /// with <see cref="TrainingResult.Cancelled"/> set. With a <see cref="Progress{T}"/> made on a UI
    /// thread, its handler runs on that thread.
    /// </summary>
    /// <param name="network">The network to start from; it is not changed.</param>
    /// <param name="train">The training images.</param>
    /// <param name="evaluation">The images to measure test accuracy on; null for none.</param>
    /// <param name="progress">Receives one report per epoch (see <see cref="Train"/>).</param>
    /// <param name="cancellationToken">Stops the run after the training step in progress (see <see cref="Train"/>).</param>
    /// <exception cref="ArgumentNullException"><paramref name="network"/> or <paramref name="train"/> is null.</exception>
    /// <exception cref="ArgumentException">The images do not fit the network's inputs, or a label is not below its number of classes.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The epochs set would take more than <see cref="int.MaxValue"/> steps on this training set.</exception>
    /// <exception cref="InvalidOperationException">OpenBLAS was chosen and the system has none.</exception>
    public Task<TrainingResult> TrainAsync(NeuralNetwork network, ImageSet train, ImageSet? evaluation = null, IProgress<EpochReport>? progress = null, CancellationToken cancellationToken = default)
    {
        var (steps, settings) = Prepare(network, train, evaluation);
        return RunAsync();

        async Task<TrainingResult> RunAsync() =>
            await Task.Run(() => Linalg.Using(settings, FuncConvert.FromFunc(() => Run(network, train, evaluation, steps, progress, cancellationToken))), CancellationToken.None)
                .ConfigureAwait(false);
    }

    /// <summary>Checks the arguments; the run's number of steps and its backend settings.</summary>
    private (int Steps, Core.Backend.Settings Settings) Prepare(NeuralNetwork network, ImageSet train, ImageSet? evaluation)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(train);
        foreach (var (set, name) in new[] { (train, nameof(train)), (evaluation, nameof(evaluation)) })
        {
            if (set is null) continue;
            if (set.PixelCount != network.Inputs)
                throw new ArgumentException($"The network takes {network.Inputs} values, the images have {set.PixelCount}.", name);
            NeuralNetwork.CheckLabels(set, network.Classes, name);
        }
        // 64-bit: epochs × steps per epoch overflows int for large epoch counts (4,000,000 on MNIST).
        long steps = Iterations ?? (long)Epochs!.Value * Math.Max(train.Count / BatchSize, 1);
        if (steps > int.MaxValue)
            throw new ArgumentOutOfRangeException("epochs", Epochs,
                $"{Epochs} epochs of {Math.Max(train.Count / BatchSize, 1)} steps are {steps} steps; a run takes at most {int.MaxValue} (at most {int.MaxValue / Math.Max(train.Count / BatchSize, 1)} epochs here).");
        // The backend applies to this run alone: the run goes inside Linalg.Using, whose settings
        // follow it (onto the helper thread too) and are gone when it returns. Nothing process-wide
        // (MathNet's Control included) is changed.
        try
        {
            var settings = Linalg.settings(
                Backend switch
                {
                    MatrixBackend.OpenBlas => Core.Backend.ProductBackend.OpenBlas,
                    MatrixBackend.Managed => Core.Backend.ProductBackend.Managed,
                    _ => Core.Backend.ProductBackend.Auto,
                },
                Core.Backend.InputStorage.Auto,
                Linalg.defaults().Threads);
            return ((int)steps, settings);
        }
        catch (ArgumentException e)
        {
            throw new InvalidOperationException(e.Message.Split(" (Parameter")[0], e);
        }
    }

    /// <summary>The body of <see cref="Train"/>, under the trainer's settings.</summary>
    private TrainingResult Run(NeuralNetwork network, ImageSet train, ImageSet? evaluation, int steps, IProgress<EpochReport>? progress, CancellationToken cancellationToken)
    {
        var sampling = Sampling switch
        {
            Sampling.Shuffle => Core.Sampling.Shuffle,
            Sampling.Sequential => Core.Sampling.Sequential,
            _ => Core.Sampling.WithReplacement,
        };
        var config = Api.Config(LearningRate, BatchSize, steps, Seed, sampling, EvaluationSample ?? 0);
        // SGD without decay is the chapter 5 fold (Training.step, as the CLI's train runs it); any
        // other optimizer, or a decay chained before it, is Optimizer.ofSpec's (Training.stepWith).
        OptimizerSpec[]? specs = Optimizer.Spec.IsSgd && WeightDecay == 0 ? null
            : WeightDecay > 0 ? new[] { OptimizerSpec.NewWeightDecay(WeightDecay), Optimizer.Spec } : new[] { Optimizer.Spec };
        // No evaluation set: an empty one, whose accuracy is NaN.
        var test = evaluation?.Data ?? DatasetModule.take(0, train.Data);
        var history = new List<EpochReport>();
        NeuralNetwork? last = null;
        // On two cores (the core's Pipeline, as the CLI's train): each report reaches Report on
        // this thread as soon as its evaluation is done, in order.
        if (network.Single is not null)
        {
            void OnReport32(Core.EpochReport<float> r) { last = new NeuralNetwork(r.Model); Report(r.Epoch, r.Iteration, r.TrainAccuracy, r.TestAccuracy, r.Losses); }
            _ = specs is null ? Api.Train(config, train.Data, test, network.Single, cancellationToken, OnReport32) : Api.Train(specs, config, train.Data, test, network.Single, cancellationToken, OnReport32);
        }
        else
        {
            void OnReport64(Core.EpochReport<double> r) { last = new NeuralNetwork(r.Model); Report(r.Epoch, r.Iteration, r.TrainAccuracy, r.TestAccuracy, r.Losses); }
            _ = specs is null ? Api.Train(config, train.Data, test, network.Double!, cancellationToken, OnReport64) : Api.Train(specs, config, train.Data, test, network.Double!, cancellationToken, OnReport64);
        }
        if (history.Count == 0)
        {
            // Cancelled before the first step: the untrained network, measured as an epoch would be.
            Dataset Sample(Dataset d) => EvaluationSample is { } n ? DatasetModule.take(n, d) : d;
            double Accuracy(Dataset d) => network.Single is not null ? Api.Accuracy(network.Single, Sample(d)) : Api.Accuracy(network.Double!, Sample(d));
            Report(0, 0, Accuracy(train.Data), Accuracy(test), Array.Empty<double>());
        }
        var cancelled = cancellationToken.IsCancellationRequested && history[^1].Iteration < steps;
        return new TrainingResult(last ?? network, history, cancelled);

        void Report(int epoch, int iteration, double trainAccuracy, double testAccuracy, double[] losses)
        {
            var report = new EpochReport(epoch, iteration, trainAccuracy, testAccuracy, Array.AsReadOnly(losses));
            history.Add(report);
            progress?.Report(report);
        }
    }
}
