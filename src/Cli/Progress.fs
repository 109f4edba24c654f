/// What a long command shows while it runs and how it stops: a live status line on stderr
/// (redrawn about ten times a second, whole lines printed above it), the recent rate and time
/// left, and a clean stop on the first SIGINT or SIGTERM.
module Backprop.Cli.Progress

open System
open System.Diagnostics
open System.Globalization
open System.Runtime.InteropServices
open System.Threading

/// Whether a live status line is shown: stderr is a terminal, and none of
/// BACKPROP_PROGRESS=0, NO_COLOR (set, not empty) or TERM=dumb says otherwise.
let isLive () =
    let env (name: string) = Environment.GetEnvironmentVariable name
    not Console.IsErrorRedirected
    && env "BACKPROP_PROGRESS" <> "0"
    && String.IsNullOrEmpty(env "NO_COLOR")
    && env "TERM" <> "dumb"

/// The terminal's width in columns: the console's, else $COLUMNS, else 80.
let terminalWidth () =
    let fromConsole = try Console.WindowWidth with _ -> 0
    if fromConsole > 0 then fromConsole
    else
        match Int32.TryParse(Environment.GetEnvironmentVariable "COLUMNS") with
        | true, n when n > 0 -> n
        | _ -> 80

/// A duration as "0:42", "12:05" or "1:02:05".
let clock (seconds: float) =
    if not (Double.IsFinite seconds) || seconds < 0.0 then "--:--"
    else
        let t = TimeSpan.FromSeconds(Math.Round seconds)
        if t.TotalHours >= 1.0 then $"%d{int t.TotalHours}:%02d{t.Minutes}:%02d{t.Seconds}" else $"%d{t.Minutes}:%02d{t.Seconds}"

/// A text bar of `width` characters, filled in proportion to done / total: [#####.....].
let bar (width: int) (done': int) (total: int) =
    let inner = max 1 (width - 2)
    let filled = if total <= 0 then 0 else int (float inner * float (min done' total) / float total)
    "[" + String('#', filled) + String('.', inner - filled) + "]"

/// Steps per second over the last few seconds: sampled (time, step) pairs, oldest dropped
/// once they are older than `window` seconds.
type RecentRate(window: float) =
    let samples = Collections.Generic.Queue<float * int>()

    /// Records that `step` steps were done at `seconds`; returns the rate over the window
    /// (NaN until two samples are apart).
    member _.Add(seconds: float, step: int) =
        samples.Enqueue((seconds, step))
        while samples.Count > 2 && seconds - fst (samples.Peek()) > window do
            samples.Dequeue() |> ignore
        let t0, s0 = samples.Peek()
        if seconds - t0 > 1e-3 && step > s0 then float (step - s0) / (seconds - t0) else nan

/// A live status line on stderr, redrawn every 100 ms from `status` (which gets the seconds
/// since the start), with whole lines printed above it by Line and Warn; the cursor is hidden
/// while it runs and shown again by Close (or Dispose). Not live: Line and Warn print plain
/// lines and nothing else is written. Safe to call from any thread.
type Display(live: bool, status: float -> string) =
    let gate = obj ()
    let started = Stopwatch.StartNew()
    let mutable shown = false
    let mutable closed = false
    let mutable draws = 0
    let err = Console.Error
    let clearLine () =
        if shown then
            err.Write "\r\u001b[K"
            shown <- false
    let draw () =
        let width = terminalWidth ()
        let text = status started.Elapsed.TotalSeconds
        // One line at most: a line as wide as the terminal would wrap on some terminals.
        let text = if text.Length > width - 1 then text.Substring(0, max 0 (width - 1)) else text
        err.Write("\r" + text + "\u001b[K")
        err.Flush()
        shown <- true
        draws <- draws + 1
    let timer =
        if live then
            err.Write "\u001b[?25l" // hide the cursor while the line is redrawn
            new Timer((fun _ -> lock gate (fun () -> if not closed then draw ())), null, 0, 100)
        else
            null

    /// Whether the status line is shown.
    member _.IsLive = live

    /// How many times the status line was drawn.
    member _.Draws = draws

    /// Prints a whole line to stdout (above the status line when it is shown).
    member _.Line(text: string) =
        lock gate (fun () ->
            clearLine ()
            err.Flush()
            Console.Out.WriteLine text
            Console.Out.Flush()
            if live && not closed then draw ())

    /// Prints a whole line to stderr (above the status line when it is shown).
    member _.Warn(text: string) =
        lock gate (fun () ->
            clearLine ()
            err.WriteLine text
            err.Flush()
            if live && not closed then draw ())

    /// Removes the status line and shows the cursor again; later Line and Warn print plain lines.
    member _.Close() =
        lock gate (fun () ->
            if not closed then
                closed <- true
                if live then
                    timer.Dispose()
                    clearLine ()
                    err.Write "\u001b[?25h"
                    err.Flush())

    /// What to write to put the terminal back at once (a second Ctrl-C): end the status line,
    /// show the cursor. Written without waiting for the lock.
    member _.Restore() =
        if live then
            err.Write "\r\u001b[K\u001b[?25h"
            err.Flush()

    interface IDisposable with
        /// Close.
        member d.Dispose() = d.Close()

/// The first SIGINT (Ctrl-C) or SIGTERM asks the command to stop cleanly (the default
/// termination is cancelled); a second one runs `hardStop` (e.g. restore the terminal) and lets
/// the process die at once, as the signal's default does. Dispose to let signals act as usual.
type Interruption(hardStop: unit -> unit) =
    let signal = ref 0
    let handle (context: PosixSignalContext) =
        let number = if context.Signal = PosixSignal.SIGTERM then 15 else 2
        if Interlocked.CompareExchange(&signal.contents, number, 0) = 0 then
            context.Cancel <- true
        else
            (try hardStop () with _ -> ())
            context.Cancel <- false
    let registrations =
        [ PosixSignalRegistration.Create(PosixSignal.SIGINT, handle)
          PosixSignalRegistration.Create(PosixSignal.SIGTERM, handle) ]

    /// Whether a stop was asked for.
    member _.Requested = Volatile.Read(&signal.contents) <> 0

    /// The name of the signal that asked for the stop ("SIGINT", "SIGTERM"), if any.
    member _.Signal =
        match Volatile.Read(&signal.contents) with
        | 0 -> None
        | 15 -> Some "SIGTERM"
        | _ -> Some "SIGINT"

    /// The exit code of a command stopped by the signal: 128 + its number (130, 143).
    member _.ExitCode = 128 + Volatile.Read(&signal.contents)

    /// Asks for a stop as a signal would (for tests and callers that stop on their own).
    member _.Request(number: int) = Interlocked.CompareExchange(&signal.contents, number, 0) |> ignore

    interface IDisposable with
        /// Gives the signals back their default handling.
        member _.Dispose() =
            for r in registrations do
                r.Dispose()

/// Formats a number with an exponent of at least two digits: 2.64e-13, 1.00e-07.
let scientific (digits: int) (x: float) =
    if Double.IsNaN x then "nan"
    elif Double.IsInfinity x then (if x > 0.0 then "inf" else "-inf")
    else x.ToString((if digits > 0 then "0." + String('0', digits) else "0") + "e+00", CultureInfo.InvariantCulture)
