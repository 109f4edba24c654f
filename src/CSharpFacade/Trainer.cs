using Backprop.Core;
using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
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

/// <summary>What a run has reached at the end of an epoch.</summary>
/// <param name="Epoch">1 for the first epoch.</param>
/// <param name="Iteration">SGD steps taken so far.</param>
/// <param name="TrainAccuracy">Accuracy on the whole training set.</param>
/// <param name="TestAccuracy">Accuracy on the whole evaluation set (NaN without one).</param>
/// <param name="Losses">The loss of each step in the epoch.</param>
public sealed record EpochReport(int Epoch, int Iteration, double TrainAccuracy, double TestAccuracy, IReadOnlyList<double> Losses)
{
    /// <summary>The mean loss of the epoch's steps.</summary>
    public double MeanLoss => Losses.Count == 0 ? double.NaN : Losses.Average();
}

/// <summary>The outcome of <see cref="Trainer.Train"/>.</summary>
/// <param name="Model">The trained network (a new one; the network passed in is unchanged).</param>
/// <param name="History">One report per epoch, in order.</param>
/// <param name="Cancelled">True when the run was stopped by its cancellation token.</param>
public sealed record TrainingResult(NeuralNetwork Model, IReadOnlyList<EpochReport> History, bool Cancelled);

/// <summary>
/// An immutable mini-batch SGD configuration, the book's recipe by default (learning rate 0.1,
/// batch 100 drawn with replacement, 10,000 iterations, seed 42). Every method returns a new
/// trainer and rejects a bad argument at once.
/// </summary>
public sealed record Trainer
{
    private double learningRate = 0.1;
    private int batchSize = 100;
    private int? iterations = 10000;
    private int? epochs;
    private int seed = 42;
    private MatrixBackend backend = MatrixBackend.Auto;

    /// <summary>A trainer with the book's recipe.</summary>
    public static Trainer Create() => new();

    /// <summary>Sets the SGD learning rate.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="learningRate"/> is not a positive finite number.</exception>
    public Trainer WithLearningRate(double learningRate)
    {
        if (!(learningRate > 0 && double.IsFinite(learningRate)))
            throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "The learning rate must be a positive finite number.");
        return this with { learningRate = learningRate };
    }

    /// <summary>Sets the number of images per mini-batch.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batchSize"/> is not positive.</exception>
    public Trainer WithBatchSize(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        return this with { batchSize = batchSize };
    }

    /// <summary>Sets the number of SGD steps (replaces any epoch count).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="iterations"/> is not positive.</exception>
    public Trainer WithIterations(int iterations)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(iterations);
        return this with { iterations = iterations, epochs = null };
    }

    /// <summary>Sets the number of epochs (training-set size / batch size steps each; replaces any iteration count).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="epochs"/> is not positive.</exception>
    public Trainer WithEpochs(int epochs)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(epochs);
        return this with { epochs = epochs, iterations = null };
    }

    /// <summary>Fixes the batches drawn: the same seed gives the same run.</summary>
    public Trainer WithSeed(int seed) => this with { seed = seed };

    /// <summary>
    /// Chooses the matrix-product backend for the runs of this trainer: it applies inside its
    /// <see cref="Train"/> calls only (other trainers, other threads and the rest of the process keep
    /// theirs), so trainings with different backends may run at the same time.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="backend"/> is not a defined value.</exception>
    public Trainer WithBackend(MatrixBackend backend)
    {
        if (!Enum.IsDefined(backend)) throw new ArgumentOutOfRangeException(nameof(backend), backend, "Unknown backend.");
        return this with { backend = backend };
    }

    /// <summary>
    /// Trains a copy of <paramref name="network"/> on <paramref name="train"/>, measuring accuracy on
    /// the whole training set and on <paramref name="evaluation"/> once an epoch.
    /// </summary>
    /// <param name="network">The network to start from; it is not changed.</param>
    /// <param name="train">The training images.</param>
    /// <param name="evaluation">The images to measure test accuracy on (e.g. the MNIST test set).</param>
    /// <param name="progress">Receives one report per epoch, as the epoch ends.</param>
    /// <param name="cancellationToken">
    /// Stops the run after the SGD step in progress; the run then returns what it has trained (its
    /// last report covers the partial epoch, evaluated), with <see cref="TrainingResult.Cancelled"/> set.
    /// It never throws <see cref="OperationCanceledException"/>.
    /// </param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">The images do not fit the network's inputs or classes.</exception>
    /// <exception cref="InvalidOperationException">OpenBLAS was chosen and the system has none.</exception>
    public TrainingResult Train(NeuralNetwork network, ImageSet train, ImageSet evaluation, IProgress<EpochReport>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(evaluation);
        foreach (var (set, name) in new[] { (train, nameof(train)), (evaluation, nameof(evaluation)) })
            if (set.PixelCount != network.Inputs)
                throw new ArgumentException($"The network takes {network.Inputs} values, the images have {set.PixelCount}.", name);
        foreach (var (set, name) in new[] { (train, nameof(train)), (evaluation, nameof(evaluation)) })
        {
            var largest = set.Data.Count == 0 ? -1 : System.Linq.Enumerable.Max(set.Data.Labels.Take(set.Data.Count));
            if (largest >= network.Classes)
                throw new ArgumentException($"The labels of {name} go up to {largest}; the network has {network.Classes} outputs (classes 0 to {network.Classes - 1}).", name);
        }
        // The backend applies to this run alone: the run goes inside Linalg.Using, whose settings
        // follow it (onto the helper thread too) and are gone when it returns. Nothing process-wide
        // (MathNet's Control included) is changed.
        Core.Backend.Settings settings;
        try
        {
            settings = Linalg.settings(
                backend switch
                {
                    MatrixBackend.OpenBlas => Core.Backend.ProductBackend.OpenBlas,
                    MatrixBackend.Managed => Core.Backend.ProductBackend.Managed,
                    _ => Core.Backend.ProductBackend.Auto,
                },
                Core.Backend.InputStorage.Auto,
                Linalg.defaults().Threads);
        }
        catch (ArgumentException e)
        {
            throw new InvalidOperationException(e.Message.Split(" (Parameter")[0], e);
        }
        return Linalg.Using(settings, FuncConvert.FromFunc(() => Run(network, train, evaluation, progress, cancellationToken)));
    }

    /// <summary>The body of <see cref="Train"/>, under the trainer's settings.</summary>
    private TrainingResult Run(NeuralNetwork network, ImageSet train, ImageSet evaluation, IProgress<EpochReport>? progress, CancellationToken cancellationToken)
    {
        var steps = iterations ?? epochs!.Value * Math.Max(train.Count / batchSize, 1);
        var config = Api.Config(learningRate, batchSize, steps, seed);
        var history = new List<EpochReport>();
        NeuralNetwork? last = null;
        if (network.Single is not null)
            foreach (var r in Api.Epochs(config, train.Data, evaluation.Data, network.Single, cancellationToken))
            {
                last = new NeuralNetwork(r.Model);
                Report(r.Epoch, r.Iteration, r.TrainAccuracy, r.TestAccuracy, r.Losses);
            }
        else
            foreach (var r in Api.Epochs(config, train.Data, evaluation.Data, network.Double!, cancellationToken))
            {
                last = new NeuralNetwork(r.Model);
                Report(r.Epoch, r.Iteration, r.TrainAccuracy, r.TestAccuracy, r.Losses);
            }
        var cancelled = cancellationToken.IsCancellationRequested && (history.Count == 0 || history[^1].Iteration < steps);
        return new TrainingResult(last ?? network, history, cancelled);

        void Report(int epoch, int iteration, double trainAccuracy, double testAccuracy, double[] losses)
        {
            var report = new EpochReport(epoch, iteration, trainAccuracy, testAccuracy, Array.AsReadOnly(losses));
            history.Add(report);
            progress?.Report(report);
        }
    }
}
