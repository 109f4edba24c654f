/// Runs the Expecto suite and ends with a plain `N passed, N failed, N skipped` line for CI logs.
module Main

open Expecto
open Expecto.Impl

[<EntryPoint>]
let main argv =
    let mutable counts = None
    let printer =
        { defaultConfig.printer with
            summary =
                fun config summary ->
                    async {
                        do! defaultConfig.printer.summary config summary
                        counts <- Some(summary.passed.Length, summary.failed.Length + summary.errored.Length, summary.ignored.Length)
                    } }
    let code = runTestsInAssemblyWithCLIArgs [ Printer printer ] argv
    let passed, failed, skipped = defaultArg counts (0, 0, 0)
    // Expecto wraps Console.Out (it pads lines to clear its progress display): write the closing
    // line to the raw standard output so it stands alone and clean.
    use stdout = new System.IO.StreamWriter(System.Console.OpenStandardOutput())
    stdout.Write($"\n%d{passed} passed, %d{failed} failed, %d{skipped} skipped\n")
    code
