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
module internal Backprop.Cli.Relaunch

open System
open System.Collections
open System.IO
open System.Reflection
open System.Runtime.InteropServices

/// The variable and the value set: 32 MB, in the runtime's hexadecimal.
let variable, value = "DOTNET_GCgen0size", "0x2000000"

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
           yield null |]
    execve(path, Array.concat [ [| path |]; argv; [| null |] ], environment) |> ignore
