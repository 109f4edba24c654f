namespace Backprop.Core.Backend

open System
open System.Threading

/// Which implementation computes the matrix products (Linalg.Backend names the same type).
[<RequireQualifiedAccess>]
type ProductBackend =
    /// OpenBLAS if the system has it, else Managed (resolved when the settings are made).
    | Auto
    /// OpenBLAS through P/Invoke, one thread.
    | OpenBlas
    /// The vectorized managed kernel of Backend/Gemm.fs.
    | Managed
    /// MathNet.Numerics's own managed provider (slow; kept as a reference).
    | MathNet

/// How gathered images are stored (Linalg.gatherImages), and so which products the first layer
/// runs (Linalg.InputStorage names the same type).
[<RequireQualifiedAccess>]
type InputStorage =
    /// Sparse where at most a third of the pixels gathered are nonzero (MNIST: about one in
    /// five), else dense.
    | Auto
    /// Every pixel, in a dense matrix: the products are dense BLAS-style products.
    | Dense
    /// The nonzero pixels alone, in a sparse (compressed-row) matrix: the products skip the zeros.
    | Sparse

/// How the library computes: the matrix-product backend, how gathered images are stored and how
/// many threads a training uses. An immutable value, made (and checked) by `Settings.create`; it
/// applies inside `Settings.using` (Linalg.using), to that call and to the work it hands to other
/// threads, and nowhere else: two trainings in one process may run under different settings.
[<Sealed>]
type Settings internal (backend: ProductBackend, storage: InputStorage, threads: int, largeOnManaged: bool) =
    /// The backend that runs the products: never Auto (resolved when the settings were made).
    member _.Backend = backend
    /// Whether the large products (5 million multiply-adds and more) run on the managed kernel
    /// although Backend is OpenBlas: chosen by Auto where that kernel outruns OpenBLAS's
    /// (Gemm.outrunsOpenBlas: 512-bit vectors against OpenBLAS's 256-bit Haswell or Zen
    /// kernels), never when OpenBlas was asked for by name.
    member _.LargeProductsOnManaged = largeOnManaged
    /// How gathered images are stored.
    member _.InputStorage = storage
    /// The threads a training uses: 1, or 2 and more for the helper thread of Backend/Halves.fs
    /// (large products in two halves, the next batch's gather and the evaluation on the second
    /// core). No more than two are ever used.
    member _.Threads = threads
    /// Equal settings: the same backend, storage and threads.
    override _.Equals(other: obj) =
        match other with
        | :? Settings as s -> s.Backend = backend && s.InputStorage = storage && s.Threads = threads && s.LargeProductsOnManaged = largeOnManaged
        | _ -> false
    /// A hash of the four fields.
    override _.GetHashCode() = HashCode.Combine(backend, storage, threads, largeOnManaged)
    /// E.g. "Managed, inputs Auto, 2 threads" or "OpenBlas (large products Managed), inputs Auto, 2 threads".
    override _.ToString() =
        let large = if largeOnManaged then " (large products Managed)" else ""
        $"""{backend}{large}, inputs {storage}, {threads} thread{if threads = 1 then "" else "s"}"""

/// Making settings, reading the ones in effect, and running code under other ones. The settings in
/// effect live in an AsyncLocal: they follow the code that runs under them (into tasks it starts,
/// and into the work it offers to the helper thread, see Halves), and nothing else sees them.
[<RequireQualifiedAccess>]
module Settings =
    /// Settings with the given backend (Auto: OpenBLAS if the system has it, else Managed; with
    /// OpenBLAS, the large products on the managed kernel where it outruns OpenBLAS's, see
    /// Settings.LargeProductsOnManaged), storage and threads (at least 1). Raises ArgumentException
    /// for OpenBlas when the system has no OpenBLAS, ArgumentOutOfRangeException for fewer than
    /// one thread.
    let create (backend: ProductBackend) (storage: InputStorage) (threads: int) : Settings =
        if threads < 1 then
            raise (ArgumentOutOfRangeException("threads", threads, "at least one thread"))
        let backend, largeOnManaged =
            match backend with
            | ProductBackend.Auto when OpenBlas.isAvailable () -> ProductBackend.OpenBlas, Gemm.outrunsOpenBlas (OpenBlas.coreName ())
            | ProductBackend.Auto -> ProductBackend.Managed, false
            | ProductBackend.OpenBlas when not (OpenBlas.isAvailable ()) ->
                invalidArg "backend" $"""OpenBLAS was not found on this system (tried {String.concat ", " OpenBlas.candidates}); install it (Debian: libopenblas0-pthread) or use the managed backend"""
            | b -> b, false
        Settings(backend, storage, threads, largeOnManaged)

    let private defaultSettings = lazy (create ProductBackend.Auto InputStorage.Auto (min 2 Environment.ProcessorCount))

    /// The settings outside any `using`, made once: OpenBLAS where the system has it (else the
    /// managed kernel), storage Auto, two threads where the machine has two cores or more.
    let defaults () : Settings = defaultSettings.Value

    /// The settings of the innermost `using` around this code (null: none).
    let private scope = AsyncLocal<Settings>()

    /// The settings in effect here: those of the innermost `using`, else the defaults.
    let current () : Settings =
        let s = scope.Value
        if isNull (box s) then defaultSettings.Value else s

    /// Runs f with settings in effect, and then the settings that were in effect before (also
    /// when f raises). Tasks f starts and work it offers to the helper thread run under them
    /// too; a lazy sequence f returns runs under the settings where it is enumerated.
    let using (settings: Settings) (f: unit -> 'a) : 'a =
        if isNull (box settings) then nullArg "settings"
        let previous = scope.Value
        // The helper thread runs every offer under its owner's settings: skip the two writes of
        // the AsyncLocal (each a small allocation) when equal settings are already in effect.
        if (if isNull (box previous) then defaultSettings.Value else previous).Equals settings then
            f ()
        else
            scope.Value <- settings
            try f () finally scope.Value <- previous
