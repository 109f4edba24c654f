using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;

namespace Backprop;

/// <summary>
/// A network's evaluation on a labelled set (<see cref="NeuralNetwork.Evaluate"/>), named as ML.NET's
/// MulticlassClassificationMetrics: the numbers the CLI's <c>evaluate</c> prints, from the same confusion matrix.
/// </summary>
public sealed class MulticlassClassificationMetrics
{
    private readonly int[][] confusion;

    internal MulticlassClassificationMetrics(int[,] counts)
    {
        var k = counts.GetLength(0);
        confusion = Enumerable.Range(0, k).Select(t => Enumerable.Range(0, k).Select(p => counts[t, p]).ToArray()).ToArray();
        Count = confusion.Sum(row => row.Sum());
        var correct = Enumerable.Range(0, k).Sum(c => confusion[c][c]);
        PerClassCount = confusion.Select(row => row.Sum()).ToArray();
        PerClassPrecision = Enumerable.Range(0, k).Select(c => Ratio(confusion[c][c], confusion.Sum(row => row[c]))).ToArray();
        PerClassRecall = Enumerable.Range(0, k).Select(c => Ratio(confusion[c][c], PerClassCount[c])).ToArray();
        MicroAccuracy = Ratio(correct, Count);
        var present = PerClassRecall.Where(r => !double.IsNaN(r)).ToArray();
        MacroAccuracy = present.Length == 0 ? double.NaN : present.Average();
    }

    private static double Ratio(int a, int b) => b == 0 ? double.NaN : (double)a / b;

    /// <summary>The number of images evaluated.</summary>
    public int Count { get; }

    /// <summary>The number of classes (the network's outputs).</summary>
    public int NumberOfClasses => confusion.Length;

    /// <summary>Accuracy: the fraction of all images classified right (NaN for an empty set).</summary>
    public double MicroAccuracy { get; }

    /// <summary>The mean of the per-class recalls over the classes that have images (NaN if none has).</summary>
    public double MacroAccuracy { get; }

    /// <summary>For each class c: of the images predicted as c, the fraction that are c (NaN where none is predicted as c).</summary>
    public IReadOnlyList<double> PerClassPrecision { get; }

    /// <summary>For each class c: of the images of class c, the fraction predicted as c (NaN where there is none).</summary>
    public IReadOnlyList<double> PerClassRecall { get; }

    /// <summary>For each class: the number of its images in the set.</summary>
    public IReadOnlyList<int> PerClassCount { get; }

    /// <summary>The confusion matrix: <c>ConfusionMatrix[t][p]</c> counts the images of class t predicted as p (rows: true class, columns: predicted class).</summary>
    public IReadOnlyList<IReadOnlyList<int>> ConfusionMatrix => confusion;

    /// <summary>The table the CLI's <c>evaluate</c> prints: accuracy, per-class precision, recall and count, and the confusion matrix.</summary>
    public override string ToString()
    {
        var inv = CultureInfo.InvariantCulture;
        var s = new StringBuilder();
        s.AppendLine(string.Format(inv, "test acc {0:F4}", MicroAccuracy));
        s.AppendLine("class          precision  recall  count");
        for (var c = 0; c < NumberOfClasses; c++)
            s.AppendLine(string.Format(inv, "{0,-13}  {1,9:F4}  {2,6:F4}  {3,5}", c, PerClassPrecision[c], PerClassRecall[c], PerClassCount[c]));
        s.AppendLine("confusion matrix (rows: true class, columns: predicted class)");
        s.AppendLine("      " + string.Concat(Enumerable.Range(0, NumberOfClasses).Select(p => p.ToString(inv).PadLeft(6))));
        for (var t = 0; t < NumberOfClasses; t++)
            s.AppendLine(t.ToString(inv).PadLeft(6) + string.Concat(confusion[t].Select(n => n.ToString(inv).PadLeft(6))));
        return s.ToString();
    }
}
