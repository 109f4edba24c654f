/// Reading the chapter 6 fixtures (tests/fixtures/ch06: numbers from the book's own numpy code)
/// and the error measures the chapter 6 tests compare with.
module Ch06Fixtures

open System
open System.IO
open System.Text.Json.Nodes
open MathNet.Numerics.LinearAlgebra
open Backprop.Core
open Common

/// tests/fixtures/ch06.
let dir = Path.Combine(repoRoot, "tests", "fixtures", "ch06")

/// A JSON fixture of that folder, parsed.
let json (name: string) = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, name)))

/// The floats of a JSON list.
let floats (node: JsonNode) = node.AsArray() |> Seq.map (fun v -> v.GetValue<float>()) |> Array.ofSeq

/// A fixture array {"shape": [...], "data": [row-major floats]} as a value (a matrix for two
/// axes, else a vector).
let value (node: JsonNode) : Value<float> =
    let shape = node.["shape"].AsArray() |> Seq.map (fun v -> v.GetValue<int>()) |> Array.ofSeq
    let data = floats node.["data"]
    match shape with
    | [| r; c |] -> Value.Matrix(Matrix<float>.Build.DenseOfRowMajor(r, c, data))
    | _ -> Value.Vector(Vector<float>.Build.Dense data)

/// A fixture array as a matrix.
let matrixOf (node: JsonNode) = match value node with Value.Matrix m -> m | Value.Vector _ -> failwith "a matrix expected"

/// A fixture array as a vector.
let vectorOf (node: JsonNode) = match value node with Value.Vector v -> v | Value.Matrix _ -> failwith "a vector expected"

/// The named arrays of a JSON object, in the given order.
let named (node: JsonNode) (order: string list) : Named<float> = order |> List.map (fun n -> n, value node.[n])

/// An .npz array (Npz.readAll) as a value of its shape.
let npzValue (arrays: Map<string, int[] * float[]>) (name: string) : Value<float> =
    match arrays.TryFind name with
    | Some([| r; c |], data) -> Value.Matrix(Matrix<float>.Build.DenseOfRowMajor(r, c, data))
    | Some(_, data) -> Value.Vector(Vector<float>.Build.Dense data)
    | None -> failwith $"no array {name} in the fixture"

/// The largest elementwise relative error, |a - b| / max(|a|, |b|) (0 where both are 0).
let maxRelative (a: float[]) (b: float[]) =
    if a.Length <> b.Length then failwith $"%d{a.Length} values against %d{b.Length}"
    Array.map2 (fun (x: float) (y: float) -> let d = max (abs x) (abs y) in if d = 0.0 then 0.0 else abs (x - y) / d) a b |> Array.fold max 0.0

/// The largest absolute difference.
let maxAbsolute (a: float[]) (b: float[]) =
    if a.Length <> b.Length then failwith $"%d{a.Length} values against %d{b.Length}"
    Array.map2 (fun (x: float) y -> abs (x - y)) a b |> Array.fold max 0.0

/// The relative error of two arrays in the norm form used for gradient checks:
/// ‖a - b‖₂ / max(‖a‖₂, ‖b‖₂, 1e-300).
let normRelative (a: float[]) (b: float[]) =
    let norm (v: float[]) = sqrt (Array.sumBy (fun x -> x * x) v)
    norm (Array.map2 (-) a b) / max (max (norm a) (norm b)) 1e-300

/// Prints a measured error, for the record (the run's output lists them).
let measured (what: string) (error: float) = Common.note $"[measured] %s{what}: %.3g{error}"
