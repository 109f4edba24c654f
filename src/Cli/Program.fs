/// Entry point: parse with Argu, run the subcommand, turn failures into one-line messages.
module Backprop.Cli.Program

open System
open Argu
open Backprop.Core
open Backprop.Cli.Args
open Backprop.Cli.Commands

// Exit codes (from sysexits.h where one fits):
//   0   success
//   1   a file is the problem: bad input data (DataError), an output that cannot be written
//       (OutputError, from SafeWrite), any other I/O or permission failure. OutputError shares
//       DataError's code rather than taking EX_CANTCREAT (73): scripts have always seen 1 for a
//       file that could not be read or written, and the message says which and why.
//   2   a bad command line (Argu's errors, UsageError)
//   70  an internal error (EX_SOFTWARE): an exception nobody foresaw, that is a bug; the stack
//       trace is printed only with --verbose or BACKPROP_DEBUG=1
//   71  out of memory (EX_OSERR): the machine cannot hold what was asked for
// Every failure is one line on stderr, "backprop: ...".

/// The exit code for a file that cannot be used (bad data, an unwritable output, I/O failures).
let exitFile = 1

/// The exit code for a bad command line.
let exitUsage = 2

/// The exit code for an exception nobody foresaw (EX_SOFTWARE).
let exitInternal = 70

/// The exit code for running out of memory (EX_OSERR).
let exitOutOfMemory = 71

/// The message on one line: control characters (a newline in a file name, say) shown as '?'.
let oneLine (message: string) : string =
    String.map (fun c -> if Char.IsControl c then '?' else c) (message.TrimEnd())

/// Whether the stack trace of an internal error is wanted: --verbose anywhere in argv, or the
/// environment variable BACKPROP_DEBUG=1.
let wantsTrace (argv: string[]) : bool =
    Array.contains "--verbose" argv || Environment.GetEnvironmentVariable "BACKPROP_DEBUG" = "1"

/// The exception that says what went wrong: wrappers (a task's AggregateException of one
/// exception, a reflection call's TargetInvocationException) are taken off.
let rec unwrap (e: exn) : exn =
    match e with
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> unwrap a.InnerExceptions[0]
    | :? Reflection.TargetInvocationException as t when not (isNull t.InnerException) -> unwrap t.InnerException
    | e -> e

/// The line (and, when trace is set, the stack trace after it) for an exception nobody foresaw.
let internalError (trace: bool) (e: exn) : string =
    let line = oneLine $"backprop: internal error: {e.GetType().FullName}: {e.Message}"
    if trace then $"{line}{Environment.NewLine}{e}"
    else $"{line} (run with --verbose or BACKPROP_DEBUG=1 for the trace)"

/// Runs body and turns every exception into one line on stderr and an exit code (see the table
/// at the top of Program.fs); the last line of defence: nothing escapes as a stack trace.
let guard (trace: bool) (body: unit -> int) : int =
    let fail (message: string) code = eprintfn "%s" (oneLine $"backprop: {message}"); code
    try
        body ()
    with e ->
        match unwrap e with
        | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText -> printfn $"{e.Message}"; 0
        | :? ArguParseException as e ->
            // Argu's message is the error line followed by the whole usage: keep the one line.
            let line = (e.Message.Split('\n')[0]).Trim().Replace("ERROR: ", "")
            fail $"{line} (see backprop --help, or backprop <command> --help)" exitUsage
        | UsageError message -> fail message exitUsage
        | DataError(file, problem) -> fail $"{file}: {problem}" exitFile
        | OutputError(file, problem) -> fail $"{file}: {problem}" exitFile
        | :? IO.IOException as e -> fail e.Message exitFile
        | :? UnauthorizedAccessException as e -> fail e.Message exitFile
        | :? OutOfMemoryException ->
            fail "out of memory: the machine cannot hold what was asked for (fewer or smaller --hidden layers, a smaller --batch, or a smaller data set)" exitOutOfMemory
        | e ->
            eprintfn "%s" (internalError trace e)
            exitInternal

/// Set once: an exception on another thread, which would end the process with the runtime's
/// own stack trace, ends it with the same one line and exit code 70 instead.
let private backgroundFailures =
    lazy
        (AppDomain.CurrentDomain.UnhandledException.Add(fun args ->
            let trace = wantsTrace (Environment.GetCommandLineArgs())
            match args.ExceptionObject with
            | :? exn as e ->
                match unwrap e with
                | :? OutOfMemoryException -> eprintfn "backprop: out of memory: the machine cannot hold what was asked for"; exit exitOutOfMemory
                | e -> eprintfn "%s" (internalError trace e); exit exitInternal
            | other -> eprintfn "%s" (oneLine $"backprop: internal error: {other}"); exit exitInternal))

/// `train`'s options read by a parser of TrainArgs alone, when they parse: Argu builds the
/// whole program's parser (every subcommand's options) in about 0.2 s on the critical path of
/// `train`'s start, and TrainArgs' alone in less (docs/PERFORMANCE.md). None for anything else,
/// for help, and for a command line it refuses: the whole program's parser then reads it again
/// and reports what it always reports.
let private quickTrain (argv: string[]) : ParseResults<TrainArgs> option =
    if argv.Length >= 1 && argv[0] = "train" && not (argv |> Array.exists (fun a -> a = "--help" || a = "-h")) then
        try
            Some(ArgumentParser.Create<TrainArgs>(programName = "backprop train", checkStructure = false).ParseCommandLine(argv[1..], raiseOnUsage = true))
        with :? ArguParseException -> None
    else
        None

/// `backprop`: parses the command line and runs the subcommand under guard. --verbose may come
/// anywhere (it is taken out before parsing).
[<EntryPoint>]
let main argv =
    if Relaunch.wanted argv then Relaunch.relaunch argv // returns only if it could not
    Preload.start argv
    backgroundFailures.Force()
    let trace = wantsTrace argv
    // --verbose may come anywhere: `train` takes it as its own option (the garbage collector's
    // figures, and traces); for the other commands it only asks for traces.
    let argv = normalize argv
    let argv = if Array.tryHead argv = Some "train" then argv else argv |> Array.filter (fun a -> a <> "--verbose")
    guard trace (fun () ->
        // The structure of the argument types is checked by a test (tests/CliTests.fs), not on
        // every start: checking it costs about 40 ms of reflection per run.
        let parser () = ArgumentParser.Create<Command>(programName = "backprop", checkStructure = false)
        try
            match quickTrain argv with
            | Some args -> train args
            | None ->
            let parser = parser ()
            if argv = [| "--version" |] then
                printfn $"backprop {version}"
                0
            else
                match parser.ParseCommandLine(argv, raiseOnUsage = true).GetSubCommand() with
                | Train args -> train args
                | Gradcheck args -> gradcheck args
                | Evaluate args -> evaluate args
                | Predict args -> predict args
                | Export args -> Export.export args
                | Graph args -> GraphCommand.run args
                | Serve args -> Serve.run args
                | Demo _ -> demo ()
                | Compare args -> Compare.run args
        with
        | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText -> printfn $"{helpText argv e.Message}"; 0
        | :? ArguParseException as e ->
            // Argu's message is the error line followed by the whole usage: keep the one line.
            let line = (e.Message.Split('\n')[0]).Trim().Replace("ERROR: ", "")
            let hint = didYouMean argv line |> Option.map (fun name -> $" did you mean '{name}'?") |> Option.defaultValue ""
            eprintfn "%s" (oneLine $"backprop: {line}{hint} (see backprop --help, or backprop <command> --help)")
            exitUsage)
