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
///
/// For deep wide networks it also raises the gen0 floor and cap to 256 MB (`deep`). Weight
/// matrices under the 4 MB large-object threshold (784-1000x4-10's 1000 x 1000 float32 ones) are
/// made afresh each step in gen0; with a 32 MB budget a collection comes about every step and
/// copies the live ones into the older generations, where they die a step later (784-1000x4-10:
/// 319 gen0, 59 gen1 and 58 full collections in 400 steps, 1.9 s of 11.8 paused). With 256 MB:
/// 82, 60 and 3, 0.6 s paused. Measured, alternating (docs/PERFORMANCE.md): 784-1000x4-10 about
/// 12% less time, 784-1000-1000-10 a third, 784-500x4-10 in float64 a fifth, 784-1000-500-10 7%,
/// at 100-160 MB more peak memory; but 784-1000-10, 784-300-10 in float64 and chapter 6's
/// networks no faster or slower. So it is set only when those matrices add up to 6 MB or more.
///
/// For plain SGD on narrow networks at small batches it pins the gen0 cap at the 32 MB floor
/// (`pinnedBudget`): the book's recipe 7% less time, 784-100x4-10 11-14%, with less memory.
///
/// It also turns tiered compilation off (`DOTNET_TieredCompilation=0`, unless the user set it):
/// the precompiled (ReadyToRun) code then stays as it is, and what has none is compiled once,
/// optimized, instead of the runtime compiling hot methods again on a third thread while the
/// training keeps both cores busy (about 900 methods in the chapter 6 Adam run, 5% of its CPU
/// samples). Measured, alternating, on the published CLI (docs/PERFORMANCE.md): chapter 6's Adam
/// run 11% less time, the book's recipe 6%, the others (784-300-10, 784-1000x4-10, Adam with
/// BatchNorm and Dropout) no slower. Other commands keep tiering: `evaluate` started 10% slower
/// without it.
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

/// The words that follow `name` in the arguments, if it is there.
let private after (argv: string[]) (name: string) =
    argv |> Array.tryFindIndex ((=) name) |> Option.map (fun i -> argv[i + 1 ..])

/// The bytes of each weight matrix that `train` with these arguments makes, estimated before the
/// arguments are parsed or anything is read: from `--hidden`'s sizes as `train` reads them
/// (Commands.hiddenSizes: 50 when absent, `none` for no hidden layer; sizes it would refuse, or
/// none at all, count as no hidden layer), MNIST's 784 inputs and 10 classes and `--precision`
/// (double: 8 bytes an entry, else 4). Empty for any other command, and for `--init-from` without
/// `--hidden` (the file's layers are not read here).
let weightMatrices (argv: string[]) : int64 list =
    let bytes = if after argv "--precision" |> Option.bind Array.tryHead = Some "double" then 8L else 4L
    let given = after argv "--hidden" |> Option.map (Array.takeWhile (fun a -> not (a.StartsWith "--")) >> List.ofArray)
    match Array.tryHead argv, given, after argv "--init-from" with
    | Some "train", None, Some _ -> []
    | Some "train", given, _ ->
        let hidden = try Commands.hiddenSizes given with _ -> []
        784L :: List.map int64 hidden @ [ 10L ] |> List.pairwise |> List.map (fun (a, b) -> a * b * bytes)
    | _ -> []

/// The largest weight matrix that `train` with these arguments makes, in bytes (`weightMatrices`);
/// with `--init-from FILE` and no `--hidden`, the file's length (all of its arrays, so at least its
/// largest). 0 for any other command.
let widestWeights (argv: string[]) : int64 =
    match Array.tryHead argv, after argv "--hidden", after argv "--init-from" |> Option.bind Array.tryHead with
    | Some "train", None, Some file -> (try FileInfo(file).Length with _ -> 0L)
    | _ -> List.max (0L :: weightMatrices argv)

/// The collector's large-object threshold that Cli.fsproj sets (System.GC.LOHThreshold): arrays of
/// this many bytes or more live in the large-object heap, which gen0 collections do not copy.
let largeObjectBytes = 4_194_304L

/// The weight matrices that live in the small-object heap (under `largeObjectBytes`), added up:
/// what a gen0 collection in the middle of a step finds alive and copies.
let smallObjectWeights (argv: string[]) =
    weightMatrices argv |> List.filter (fun b -> b < largeObjectBytes) |> List.sum

/// Whether the arguments ask for a network whose small-object weights add up to 6 MB or more
/// (784-1000-1000-10 and deeper in float32, 784-500x4-10 in float64; not 784-1000-10, 784-2000-10,
/// whose W1 is a large object, or chapter 6's networks): then the gen0 floor and cap are 256 MB.
let deep (argv: string[]) = smallObjectWeights argv >= 6_291_456L

/// The gen0 floor and cap for `deep` networks: 256 MB, in the runtime's hexadecimal.
let deepValue = "0x10000000"

/// The variable that turns tiered compilation off, and its value.
let tieringVariable, tieringValue = "DOTNET_TieredCompilation", "0"

/// The variable that caps the gen0 budget (runtimeconfig's System.GC.Gen0MaxBudget, 64 MB, is
/// below the deep networks' floor, and above the floor `pinnedBudget` pins it at).
let budgetVariable = "DOTNET_GCGen0MaxBudget"

/// The batch size `train` with these arguments takes: `--batch`'s, else the book's (100); a value
/// it would refuse counts as large (Int32.MaxValue).
let private batchOf (argv: string[]) =
    match after argv "--batch" |> Option.bind Array.tryHead with
    | None -> Backprop.Core.Training.bookRecipe.BatchSize
    | Some text ->
        match Int32.TryParse text with
        | true, b when b > 0 -> b
        | _ -> Int32.MaxValue

/// Whether the arguments ask for a network wide enough for the larger regions: a weight matrix
/// of 1 MB or more (784-300-10 in float64, 784-1000-10 in float32, not the book's recipe or
/// chapter 6's 784-100x4-10).
let wide (argv: string[]) = widestWeights argv >= 1_048_576L

/// Whether the arguments ask for plain SGD (no `--optimizer` but sgd, no `--weight-decay`,
/// `--batchnorm`, `--dropout` or `--init-from`, whose file may carry an optimizer's state) on a
/// network neither `wide` nor `deep`, at a batch of at most 128: the book's recipe, 784-50-10 to
/// 784-300-10 in float32, 784-100x4-10. Then the gen0 cap is pinned at the floor, 32 MB, instead
/// of runtimeconfig's 64 MB. Such a step allocates little, and a budget that moves between 32
/// and 64 MB has the collector hand surplus regions back to the system and fault them in again;
/// pinned (measured, alternating, on the published CLI; docs/PERFORMANCE.md): 784-100x4-10 with
/// SGD 45-55% fewer page faults and 11-14% less time, the book's recipe 7%, 784-300-10 8%,
/// 784-50-10 at 2000 steps 4-6%, all with 10-35 MB less peak memory. Not for the others, which
/// it made slower: Adam on 784-100x4-10 by 4-6%, with BatchNorm and Dropout by a fifth,
/// 784-1000-10 by 16%, batch 1000 by 2%.
let pinnedBudget (argv: string[]) =
    let given (name: string) = Array.contains name argv
    Array.tryHead argv = Some "train"
    && (match after argv "--optimizer" |> Option.bind Array.tryHead with
        | None
        | Some "sgd" -> true
        | Some _ -> false)
    && not (given "--weight-decay" || given "--batchnorm" || given "--dropout" || given "--init-from")
    && batchOf argv <= 128
    && not (wide argv)
    && not (deep argv)

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
    let deep = deep argv
    // The gen0 cap: 256 MB with the deep networks' floor, pinned at the 32 MB floor, or runtimeconfig's.
    let budget = if deep then Some deepValue elif pinnedBudget argv then Some value else None
    let environment =
        [| for entry in Environment.GetEnvironmentVariables() |> Seq.cast<DictionaryEntry> -> $"{entry.Key}={entry.Value}"
           yield $"{variable}={if deep then deepValue else value}"
           match budget with
           | Some cap when isNull (Environment.GetEnvironmentVariable budgetVariable) -> yield $"{budgetVariable}={cap}"
           | _ -> ()
           if wide argv && isNull (Environment.GetEnvironmentVariable regionVariable) then yield $"{regionVariable}={regionValue}"
           if isNull (Environment.GetEnvironmentVariable tieringVariable) then yield $"{tieringVariable}={tieringValue}"
           yield null |]
    execve(path, Array.concat [ [| path |]; argv; [| null |] ], environment) |> ignore
