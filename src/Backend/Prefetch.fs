namespace Backprop.Backend

#nowarn "9" // the prefetch hint takes a native pointer

open System.Runtime.Intrinsics.X86
open Microsoft.FSharp.NativeInterop

/// Cache hints for gathers from large arrays.
[<RequireQualifiedAccess>]
module Prefetch =
    /// Asks the CPU to start loading the given rows of a row-major byte array into cache, so the
    /// reads that follow overlap their memory latency instead of waiting for one row at a time.
    /// Only a hint: it changes no value, and does nothing where the CPU has no prefetch instruction.
    let rows (data: byte[]) (rowLength: int) (indices: int[]) =
        if Sse.IsSupported && data.Length > 0 then
            use p = fixed data
            for i in indices do
                let start = i * rowLength
                for k in 0 .. 64 .. rowLength - 1 do
                    Sse.Prefetch0(NativePtr.toVoidPtr (NativePtr.add p (start + k)))
