/// The garbage collector's gen0 budget for the heavy commands, which only the environment can set.
///
/// A training step allocates its activations, gradients and new parameters afresh (the core is
/// pure), several MB a step. The collector's smallest gen0 budget (`DOTNET_GCgen0size`) decides
/// whether that memory is reused from one step to the next or handed back to the system and
/// faulted in again: with 32 MB, the chapter 6 Adam run of docs/PERFORMANCE.md takes 46,000 page
/// faults instead of 121,000 and its training about 20% less time; the book's recipe gains about
/// as much. runtimeconfig.json has no key for this setting (`System.GC.Gen0MaxBudget`, which it
/// has, caps the budget but does not set its floor), so `backprop train` and `backprop compare`,
/// started as their own executable without the variable, replace their process with themselves
/// with it set (execve: the same process id, terminal, arguments and open files), once, before
/// anything else runs. Nothing else is relaunched: other commands, Windows, `dotnet
/// Backprop.Cli.dll`, in-process callers (the tests), or a variable the user set.
///
/// For wide networks it also sets the collector's region size (`DOTNET_GCRegionSize`, 32 MB
/// instead of 4): with 4 MB regions, each step's fresh W1 and dW1 (3-6 MB each at 1000-2000
/// hidden units) take regions of their own that the collector hands back to the system after
/// each collection, so every step faults them in again (1.3 million page faults in 1,200 steps
/// of 784-2000-10, a quarter of its time); with 32 MB regions, 230,000. Measured, alternating,
/// on the published CLI (docs/PERFORMANCE.md): 784-2000-10 25% less time, 784-1000-10 14%,
/// 784-300-10 in float64 5-10%; for the narrow networks (the book's recipe, chapter 6's
/// 784-100x4-10) no gain and 20-40 MB more peak memory, which chapter 6's Adam run cannot
/// spare (its limit is 250 MB). So the region size is set only when the arguments ask for a
/// weight matrix of 1 MB or more (`wide`).
module internal Backprop.Cli.Relaunch

open System
open System.Collections
open System.IO
open System.Reflection
open System.Runtime.InteropServices

/// The variable and the value set: 32 MB, in the runtime's hexadecimal.
let variable, value = "DOTNET_GCgen0size", "0x2000000"

/// The region size set for wide networks: 32 MB, in the runtime's hexadecimal.
let regionVariable, regionValue = "DOTNET_GCRegionSize", "0x2000000"

/// The largest weight matrix that `train` with these arguments makes, in bytes, estimated before
/// the arguments are parsed or anything is read: from `--hidden`'s sizes as `train` reads them
/// (Commands.hiddenSizes: 50 when absent, `none` for no hidden layer; sizes it would refuse, or
/// none at all, count as no hidden layer), MNIST's 784 inputs and 10 classes and `--precision`
/// (double: 8 bytes an entry, else 4); with `--init-from FILE` and no `--hidden`, the file's
/// length (all of its arrays, so at least its largest). 0 for any other command.
let widestWeights (argv: string[]) : int64 =
    let after (name: string) = argv |> Array.tryFindIndex ((=) name) |> Option.map (fun i -> argv[i + 1 ..])
    let bytes = if after "--precision" |> Option.bind Array.tryHead = Some "double" then 8L else 4L
    let given = after "--hidden" |> Option.map (Array.takeWhile (fun a -> not (a.StartsWith "--")) >> List.ofArray)
    match Array.tryHead argv, given, after "--init-from" |> Option.bind Array.tryHead with
    | Some "train", None, Some file -> (try FileInfo(file).Length with _ -> 0L)
    | Some "train", given, _ ->
        let hidden = try Commands.hiddenSizes given with _ -> []
        let layers = 784L :: List.map int64 hidden @ [ 10L ]
        (layers |> List.pairwise |> List.map (fun (a, b) -> a * b) |> List.max) * bytes
    | _ -> 0L

/// Whether the arguments ask for a network wide enough for the larger regions: a weight matrix
/// of 1 MB or more (784-300-10 in float64, 784-1000-10 in float32, not the book's recipe or
/// chapter 6's 784-100x4-10).
let wide (argv: string[]) = widestWeights argv >= 1_048_576L

[<DllImport("libc", SetLastError = true)>]
extern int private execve(string path, string[] argv, string[] envp)

/// Whether this process should relaunch itself for these arguments (see the module).
let wanted (argv: string[]) =
    (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
    && (match Array.tryHead argv with Some("train" | "compare") -> true | _ -> false)
    && isNull (Environment.GetEnvironmentVariable variable)
    && (match Assembly.GetEntryAssembly() with null -> false | a -> a.GetName().Name = "Backprop.Cli")
    && (match Environment.ProcessPath with
        | null -> false
        | path -> not (Path.GetFileNameWithoutExtension(path).Equals("dotnet", StringComparison.OrdinalIgnoreCase)))

/// Replaces this process with the same executable and arguments, the variable set; returns only
/// when that fails (then the command runs here, as it would have without the variable).
let relaunch (argv: string[]) =
    let path = Environment.ProcessPath
    let environment =
        [| for entry in Environment.GetEnvironmentVariables() |> Seq.cast<DictionaryEntry> -> $"{entry.Key}={entry.Value}"
           yield $"{variable}={value}"
           if wide argv && isNull (Environment.GetEnvironmentVariable regionVariable) then yield $"{regionVariable}={regionValue}"
           yield null |]
    execve(path, Array.concat [ [| path |]; argv; [| null |] ], environment) |> ignore
