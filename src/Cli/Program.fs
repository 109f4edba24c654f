/// Entry point: parse with Argu, run the subcommand, turn failures into one-line messages.
module Backprop.Cli.Program

open Argu
open Backprop
open Backprop.Cli.Args
open Backprop.Cli.Commands

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Command>(programName = "backprop")
    let fail (message: string) code = eprintfn $"backprop: {message}"; code
    try
        match parser.ParseCommandLine(argv, raiseOnUsage = true).GetSubCommand() with
        | Train args -> train args
        | Gradcheck args -> gradcheck args
        | Evaluate args -> evaluate args
        | Predict args -> predict args
        | Demo _ -> demo ()
        | Graph args -> GraphCommand.run args
        | Serve args -> Serve.run args
    with
    | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText -> printfn $"{e.Message}"; 0
    | :? ArguParseException as e ->
        // Argu's message is the error line followed by the whole usage: keep the one line.
        let line = (e.Message.Split('\n')[0]).Trim().Replace("ERROR: ", "")
        fail $"{line} (see backprop --help, or backprop <command> --help)" 2
    | UsageError message -> fail message 2
    | DataError(file, problem) -> fail $"{file}: {problem}" 1
    | :? System.IO.IOException as e -> fail e.Message 1
    | :? System.UnauthorizedAccessException as e -> fail e.Message 1
