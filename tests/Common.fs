/// Helpers shared by the tests: matrices from literals, random inputs, numerical gradients, data.
module Common

open System
open System.IO
open Expecto
open MathNet.Numerics.LinearAlgebra
open Backprop.Core

/// A float64 matrix from rows.
let matrix (rows: float list list) = Matrix<float>.Build.DenseOfRows(rows |> List.map Seq.ofList)

/// A float64 vector.
let vector (v: float list) = Vector<float>.Build.DenseOfEnumerable v

/// A random matrix with entries uniform in [-1, 1] from a fixed seed.
let random (seed: int) rows cols =
    let rng = Random(seed)
    Matrix<float>.Build.Dense(rows, cols, fun _ _ -> rng.NextDouble() * 2.0 - 1.0)

/// The numerical gradient of the scalar f at x (central difference, h = 1e-4), on a copy of x.
let numericalGradient (f: Matrix<float> -> float) (x: Matrix<float>) =
    let x = x.Clone()
    let g = Network.numericalGradientOf (fun () -> f x) (x.AsColumnMajorArray())
    Matrix<float>.Build.Dense(x.RowCount, x.ColumnCount, g)

/// The largest absolute difference between two matrices of the same shape.
let maxAbsDiff (a: Matrix<float>) (b: Matrix<float>) = (a - b).Enumerate() |> Seq.map abs |> Seq.max

/// A model with the given layers and parameters, stateless.
let modelOf (layers: Layer list) (ps: Params<'T> list) : Model<'T> =
    { Layers = layers; Params = ps; States = layers |> List.map (fun _ -> LayerState.Stateless) }

/// Skips the test for a dependency this machine lacks (reason names it and how to install it),
/// except under CI (the environment variable CI is "true"), which installs every dependency the
/// tests use (OpenBLAS, numpy for /usr/bin/python3, Fashion-MNIST): there the test fails, so
/// that a green CI run means every test ran.
let requireOrSkip (reason: string) : 'a =
    if Environment.GetEnvironmentVariable "CI" = "true" then
        failtest $"{reason} (CI=true: CI installs it, so this test must run, not skip)"
    else
        skiptest reason

/// The repository's root (the folder of Backprop.sln), found from the test binary upwards.
let repoRoot =
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "Backprop.sln not found above the test binary"
        if File.Exists(Path.Combine(d.FullName, "Backprop.sln")) then d.FullName else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// The repository's data/mnist.
let mnistDir = Path.Combine(repoRoot, "data", "mnist")

/// MNIST, read once for every test that needs it.
let mnist = lazy (Mnist.load mnistDir)

/// The sequenced group of the tests that redirect the process's console (the CLI run in-process):
/// Expecto runs no two of them at the same time.
let console = "the process's console"

/// The process's own standard output, not Console.Out: the CLI tests redirect Console.Out while
/// they run the command in-process, and a figure another test prints meanwhile must not land in
/// their captured output.
let private rawOut = lazy (new StreamWriter(Console.OpenStandardOutput(), AutoFlush = true))

/// Prints a line (a measured figure) to the process's standard output, whatever Console.Out is.
let note (line: string) = lock rawOut (fun () -> rawOut.Value.WriteLine line)
