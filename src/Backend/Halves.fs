namespace Backprop.Backend

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Runtime.ExceptionServices
open System.Threading
open System.Threading.Tasks

/// The second core, shared between two kinds of work by one helper thread: halves of large
/// matrix products, and background work such as the evaluation of an epoch's model.
///
/// A large product is split in two halves (by columns): the calling thread computes the first
/// while the helper computes the second. If the helper has not begun its half by the time the
/// caller is done with its own (it is running background work, or the OS has not run it yet),
/// the caller takes that half back and computes it too, so a product never waits on a thread
/// that is not running: at worst it costs what one thread costs.
///
/// Background work runs on the helper whenever no half is waiting, one item at a time; products
/// made by background work stay on the helper thread. With the helper disabled (one core, or
/// `setEnabled false`), products stay whole and background work goes to the thread pool.
[<RequireQualifiedAccess>]
module Halves =
    // The states of the half posted to the helper.
    let private idle, posted, takenByHelper, takenBack, finished = 0, 1, 2, 3, 4

    let mutable private enabled = Environment.ProcessorCount >= 2
    let mutable private busy = 0
    let mutable private state = idle
    let mutable private work: unit -> unit = ignore
    let mutable private failure: exn = null
    let mutable private sleeping = 0
    let mutable private helped = 0L
    let mutable private alone = 0L
    let private signal = new SemaphoreSlim(0)
    let private background = ConcurrentQueue<unit -> unit>()
    /// Set on the helper thread, whose products stay whole.
    let private isHelper = new ThreadLocal<bool>()

    /// How long the helper keeps watching for work after its last item before it sleeps: a
    /// training step posts its large products a few hundred microseconds apart, and waking a
    /// sleeping thread (on a virtual machine, an idle virtual CPU) can cost tens of microseconds.
    let private watchTicks = Stopwatch.Frequency / 2000L // 0.5 ms

    let private wake () =
        if Volatile.Read(&sleeping) = 1 then signal.Release() |> ignore

    let private hasWork () = Volatile.Read(&state) = posted || not background.IsEmpty

    let private helperLoop () =
        isHelper.Value <- true
        while true do
            // Watch for work for a while, then sleep until signalled. Both sides write their flag
            // before reading the other's (full fences), so work is never missed.
            let until = Stopwatch.GetTimestamp() + watchTicks
            while not (hasWork ()) && Stopwatch.GetTimestamp() < until do
                Thread.SpinWait 20
            if not (hasWork ()) then
                Interlocked.Exchange(&sleeping, 1) |> ignore
                if not (hasWork ()) then signal.Wait()
                Interlocked.Exchange(&sleeping, 0) |> ignore
            if Interlocked.CompareExchange(&state, takenByHelper, posted) = posted then
                try
                    try work () with e -> failure <- e
                finally
                    Volatile.Write(&state, finished)
            else
                match background.TryDequeue() with
                | true, item -> item ()
                | _ -> ()

    let private helper =
        lazy
            (let t = Thread(helperLoop, IsBackground = true, Name = "Backprop helper")
             t.Start()
             t)

    /// Whether the helper thread is in use (by default where the machine has two or more cores).
    let isEnabled () = enabled

    /// Uses the helper thread (true), or keeps products whole on their caller's thread and sends
    /// background work to the thread pool (false).
    let setEnabled (on: bool) = enabled <- on

    /// Starts f on the helper thread (when no product half is waiting) and returns its result as
    /// a task; the products f makes stay on the helper thread.
    let inBackground (f: unit -> 'a) : Task<'a> =
        if not enabled then
            Task.Run f
        else
            helper.Force() |> ignore
            let result = TaskCompletionSource<'a>(TaskCreationOptions.RunContinuationsAsynchronously)
            background.Enqueue(fun () ->
                try result.SetResult(f ()) with e -> result.SetException e)
            Interlocked.MemoryBarrier()
            wake ()
            result.Task

    /// Runs first () and second (), on two threads when the helper is free, and returns when
    /// both are done. An exception in either is raised here.
    let run (first: unit -> unit) (second: unit -> unit) =
        if not enabled || isHelper.Value || Interlocked.CompareExchange(&busy, 1, 0) <> 0 then
            first ()
            second ()
        else
            helper.Force() |> ignore
            failure <- null
            work <- second
            Interlocked.Exchange(&state, posted) |> ignore
            wake ()
            let firstFailure = try first (); null with e -> e
            if Interlocked.CompareExchange(&state, takenBack, posted) = posted then
                // The helper has not begun: the second half is ours too.
                alone <- alone + 1L
                try second () with e -> failure <- e
            else
                helped <- helped + 1L
                let mutable spin = SpinWait()
                while Volatile.Read(&state) <> finished do
                    spin.SpinOnce(-1) // never sleeps: the helper is running its half
            let secondFailure = failure
            work <- ignore
            failure <- null
            Volatile.Write(&state, idle)
            Volatile.Write(&busy, 0)
            if not (isNull firstFailure) then ExceptionDispatchInfo.Throw firstFailure
            if not (isNull secondFailure) then ExceptionDispatchInfo.Throw secondFailure

    /// How many split products had their second half computed by the helper, and how many were
    /// computed wholly by their caller because the helper was busy (for the benchmark's profile).
    let counts () = helped, alone
