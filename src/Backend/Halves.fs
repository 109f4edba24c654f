namespace Backprop.Core.Backend

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Runtime.ExceptionServices
open System.Threading
open System.Threading.Tasks

/// Counts of how offers ended, for the benchmark's profile (Halves.statistics).
module internal OfferCounts =
    /// Offers done by the helper.
    let mutable helped = 0L
    /// Offers their owners took back.
    let mutable takenBack = 0L
    /// Stopwatch ticks owners spent waiting for the helper to finish a job it had begun.
    let mutable waitTicks = 0L

/// A piece of work offered to the helper thread (see Halves), which its owner either finds done
/// by the helper or takes back and does itself when it needs the result.
[<Sealed; AllowNullLiteral>]
type Offer(work: unit -> unit) =
    // posted → taken (by the helper) → finished, or posted → takenBack (by the owner).
    let mutable state = 0
    let mutable failure: exn = null
    // Dropped once run: an offer its owner took back stays in the helper's queue until the
    // helper reaches it, and must not keep the job's arrays (a product's operands) alive.
    let mutable job = work

    /// The helper's side: takes the job unless its owner already took it back; runs it if taken.
    member internal _.TryRun() =
        if Interlocked.CompareExchange(&state, 1, 0) = 0 then
            try
                try job () with e -> failure <- e
            finally
                job <- Unchecked.defaultof<_>
                Volatile.Write(&state, 3)

    /// The owner's side: returns once the job is done, doing it here if the helper has not begun
    /// it (never waiting on a helper that is not running it). Raises the job's exception.
    member _.Join() =
        if Interlocked.CompareExchange(&state, 2, 0) = 0 then
            Interlocked.Increment(&OfferCounts.takenBack) |> ignore
            let run = job
            job <- Unchecked.defaultof<_>
            run ()
        else
            Interlocked.Increment(&OfferCounts.helped) |> ignore
            let started = Stopwatch.GetTimestamp()
            let mutable spin = SpinWait()
            while Volatile.Read(&state) <> 3 do
                spin.SpinOnce(-1) // never sleeps: the helper is running the job
            Interlocked.Add(&OfferCounts.waitTicks, Stopwatch.GetTimestamp() - started) |> ignore
            if not (isNull failure) then ExceptionDispatchInfo.Throw failure



/// The second core, shared by one helper thread between the training's own work and
/// background work such as the evaluation of an epoch's model.
///
/// The training offers work to the helper: the second half of each large matrix product (the
/// first half it computes itself meanwhile), and the gather of its next mini-batch. What the
/// helper has not begun when the owner needs it, the owner takes back and does itself, so the
/// training never waits on a thread that is not running: at worst it costs what one thread costs.
/// Product halves come first, then gathers, then background work; background work lets offers
/// in between its own products.
///
/// Whether the helper is used is a setting (Settings.Threads >= 2; the default where the machine
/// has two cores or more), read where work is offered: under settings with one thread, offers run
/// at once on their owner's thread and background work goes to the thread pool. Work run on the
/// helper (an offer, background work, or a half of background work's product taken by a thread in
/// `await`) runs under the settings of the code that offered it, so one helper serves trainings
/// under different settings at once.
[<RequireQualifiedAccess>]
module Halves =
    let mutable private sleeping = 0
    let private signal = new SemaphoreSlim(0)
    let private urgent = ConcurrentQueue<Offer>()
    let private relaxed = ConcurrentQueue<Offer>()
    let private background = ConcurrentQueue<unit -> unit>()
    /// Halves of background work's products, for threads waiting in `await`.
    let private helperOffers = ConcurrentQueue<Offer>()
    /// The number of threads waiting in `await`.
    let mutable private awaiting = 0
    /// Set on the helper thread, whose own products stay whole.
    let private isHelper = new ThreadLocal<bool>()

    /// How long the helper keeps watching for work after its last item before it sleeps: a
    /// training step offers its products a few hundred microseconds apart, and waking a
    /// sleeping thread (on a virtual machine, an idle virtual CPU) can cost tens of microseconds.
    let private watchTicks = Stopwatch.Frequency / 2000L // 0.5 ms

    let private wake () =
        Interlocked.MemoryBarrier()
        if Volatile.Read(&sleeping) = 1 then signal.Release() |> ignore

    let private hasOffers () = not urgent.IsEmpty || not relaxed.IsEmpty

    /// Runs the offers waiting, urgent ones first.
    let private serveOffers () =
        let mutable offer = null
        while urgent.TryDequeue(&offer) || relaxed.TryDequeue(&offer) do
            offer.TryRun()

    let private helperLoop () =
        isHelper.Value <- true
        while true do
            // Watch for work for a while, then sleep until signalled. Both sides write their flag
            // before reading the other's (full fences), so work is never missed.
            let until = Stopwatch.GetTimestamp() + watchTicks
            while not (hasOffers ()) && background.IsEmpty && Stopwatch.GetTimestamp() < until do
                Thread.SpinWait 20
            if not (hasOffers ()) && background.IsEmpty then
                Interlocked.Exchange(&sleeping, 1) |> ignore
                if not (hasOffers ()) && background.IsEmpty then signal.Wait()
                Interlocked.Exchange(&sleeping, 0) |> ignore
            serveOffers ()
            match background.TryDequeue() with
            | true, item -> item ()
            | _ -> ()

    let private helper =
        lazy
            (let t = Thread(helperLoop, IsBackground = true, Name = "Backprop helper")
             // UnsafeStart: the helper inherits no caller's execution context (its settings); each
             // job brings its own.
             t.UnsafeStart()
             t)

    /// Whether the settings in effect use the helper thread.
    let private enabled () = (Settings.current ()).Threads >= 2

    /// job, to run under the settings in effect here wherever it runs.
    let private underCurrent (job: unit -> 'a) : unit -> 'a =
        let settings = Settings.current ()
        fun () -> Settings.using settings job

    /// Offers job to the helper: it runs there if the helper gets to it first, else on the
    /// thread that calls Join; either way under the settings in effect here. With the helper
    /// disabled, it runs at Join. `urgent` offers (a product half, needed within microseconds) go
    /// before the others (a next batch's gather).
    let offer (isUrgent: bool) (job: unit -> unit) : Offer =
        if enabled () && not isHelper.Value then
            let o = Offer(underCurrent job)
            helper.Force() |> ignore
            (if isUrgent then urgent else relaxed).Enqueue o
            wake ()
            o
        else
            Offer job

    /// Starts f on the helper thread (after the offers waiting), under the settings in effect
    /// here, and returns its result as a task; the products f makes stay on the helper thread.
    /// With the helper disabled, f runs on the thread pool (under these settings too).
    let inBackground (f: unit -> 'a) : Task<'a> =
        if not (enabled ()) then
            Task.Run f // the task flows the caller's execution context, settings included
        else
            helper.Force() |> ignore
            let result = TaskCompletionSource<'a>(TaskCreationOptions.RunContinuationsAsynchronously)
            background.Enqueue(underCurrent (fun () -> try result.SetResult(f ()) with e -> result.SetException e))
            wake ()
            result.Task

    /// Runs first () and second (), the second offered to the helper, and returns when both are
    /// done. An exception in either is raised here (the first's if both fail). On the helper
    /// itself, both run there, each after the offers waiting.
    let run (first: unit -> unit) (second: unit -> unit) =
        if isHelper.Value then
            // Background work's product: with the offers waiting served first, so that the
            // training waits at most half a product for the helper. Its second half is offered
            // to a thread waiting for background work (see `await`), else done here too.
            serveOffers ()
            if Volatile.Read(&awaiting) > 0 then
                let o = Offer(underCurrent second) // taken by a thread under its own settings
                helperOffers.Enqueue o
                first ()
                o.Join()
            else
                first ()
                serveOffers ()
                second ()
        elif not (enabled ()) then
            first ()
            second ()
        else
            let o = offer true second
            let firstFailure = try first (); null with e -> e
            let secondFailure = try o.Join(); null with e -> e
            if not (isNull firstFailure) then ExceptionDispatchInfo.Throw firstFailure
            if not (isNull secondFailure) then ExceptionDispatchInfo.Throw secondFailure

    /// Whether splitting a product here can pay: on any thread but the helper, or on the helper
    /// while a thread waits in `await` (which takes halves of its products). The helper's own
    /// products (an evaluation in the background) otherwise run both halves one after the other.
    let splitPays () = not isHelper.Value || Volatile.Read(&awaiting) > 0

    /// Offers done by the helper, offers taken back by their owners, and the seconds owners spent
    /// waiting for the helper to finish a job it had begun (for the benchmark's profile).
    let statistics () = Volatile.Read(&OfferCounts.helped), Volatile.Read(&OfferCounts.takenBack), float (Volatile.Read(&OfferCounts.waitTicks)) / float Stopwatch.Frequency

    /// The task's result; while it is not done, the calling thread takes halves of the helper's
    /// products (a training thread waiting for the last epoch's evaluation helps with it).
    let await (task: Task<'a>) : 'a =
        if enabled () && not isHelper.Value && not task.IsCompleted then
            Interlocked.Increment(&awaiting) |> ignore
            try
                let mutable spin = SpinWait()
                let mutable offer = null
                while not task.IsCompleted do
                    if helperOffers.TryDequeue(&offer) then
                        offer.TryRun()
                        spin <- SpinWait()
                    else
                        spin.SpinOnce(-1)
            finally
                Interlocked.Decrement(&awaiting) |> ignore
        task.Result
