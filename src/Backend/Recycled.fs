/// Large result arrays used again once the collector has found them unreachable.
///
/// A wide first layer's weight gradient (784 × 1000 float64: 6.3 MB; 784 × 2000: 12.5 MB) is
/// made afresh at every step, becomes the new W (the SGD step writes over it), and the W before
/// it dies. Such arrays live in the large-object heap, which the collector sweeps only in full
/// collections and whose freed space it hands back to the system, so a run faults fresh pages
/// in for many of them: 400,000-650,000 page faults in 2,000 steps of 784-1000-10 in float64,
/// nearly all of them in the writes of dW1 (`perf record -e page-faults`, docs/PERFORMANCE.md).
///
/// Whether an old W is still held is not a local fact (the epoch's evaluation, the caller's
/// hooks and the CLI's last finite states keep states), so nothing here guesses it: each array
/// handed out gets a `Lease`, tied to the array's lifetime by a ConditionalWeakTable. When the
/// array becomes unreachable, so does its lease, and the lease's finalizer (which the collector
/// runs with the array kept alive for it) puts the array in a bin for the next array of the same
/// type and length. Nothing that anyone can still read is ever handed out again. When the bin is
/// empty, a full collection is asked for (and its finalizers awaited), so that dead arrays come
/// back without waiting for the large-object heap's budget; these collections are kept to a
/// `share` of the time (so a large heap, costly to collect, is collected rarely) and made rarer
/// still while they bring nothing back (every array still held).
/// The arrays' contents are whatever they were: for results that write every element.
module internal Backprop.Core.Backend.Recycled

open System
open System.Collections.Concurrent
open System.Runtime.CompilerServices
open System.Diagnostics

/// Arrays of this many bytes or more are recycled: the large-object threshold that the CLI sets
/// (Cli.fsproj's System.GC.LOHThreshold). Smaller ones die young in gen0, which reuses its memory.
let threshold = 4_194_304L

/// The arrays kept in a bin at most: more that come back are left to the collector.
let capacity = 4

/// The share of the time that the collections asked for may take: after one that took d, the
/// next waits (1 - share) / share · d; twice that after one that brought nothing back, and so on.
let share = 0.2

/// The bins: the unreachable arrays of each element type and length.
let private bins = ConcurrentDictionary<struct (Type * int), ConcurrentStack<Array>>()

/// When the next collection may be asked for (Stopwatch ticks).
let mutable private nextCollection = 0L

/// The waits' factor: doubled after a collection that brought nothing back, reset by one that did.
let mutable private waitFactor = 1L

/// Tied to one array's lifetime: when the array is unreachable, puts it in its bin.
[<Sealed; AllowNullLiteral>]
type private Lease(array: Array, bin: ConcurrentStack<Array>) =
    override _.Finalize() =
        if bin.Count < capacity then bin.Push array

let private leases = ConditionalWeakTable<Array, Lease>()

/// An unreachable array from the bin, after a full collection (and its finalizers) if the bin is
/// empty and the time allows one; else null.
let private reused (bin: ConcurrentStack<Array>) : Array =
    match bin.TryPop() with
    | true, a -> a
    | _ when Stopwatch.GetTimestamp() >= nextCollection ->
        let started = Stopwatch.GetTimestamp()
        GC.Collect(2, GCCollectionMode.Forced, true, false)
        GC.WaitForPendingFinalizers()
        let ended = Stopwatch.GetTimestamp()
        let back, a = bin.TryPop()
        waitFactor <- if back then 1L else min 64L (2L * waitFactor)
        nextCollection <- ended + int64 ((1.0 - share) / share * float (ended - started)) * waitFactor
        if back then a else null
    | _ -> null

/// An array of n elements, reused or new (uninitialized); of `threshold` bytes or more, it comes
/// back to the bin once unreachable.
let take<'T> (n: int) : 'T[] =
    if int64 n * int64 sizeof<'T> < threshold then
        GC.AllocateUninitializedArray<'T> n
    else
        let bin = bins.GetOrAdd(struct (typeof<'T>, n), fun _ -> ConcurrentStack<Array>())
        let a =
            match reused bin with
            | null -> GC.AllocateUninitializedArray<'T> n
            | a -> a :?> 'T[]
        leases.AddOrUpdate(a, Lease(a, bin))
        a
