namespace Backprop.Core

// The one way this program writes a file: into a fresh temporary file beside the target, with an
// unpredictable name, created exclusively, written in full, flushed to the disk, then renamed over
// the target. A reader sees the old file or the new one, never half of one; a failure leaves the
// old file as it was and no temporary behind. What the target may be is checked first: only a
// missing name or a regular file is replaced (never a folder, a device, a FIFO, a socket, or a
// symbolic link, which is refused rather than followed).

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Security.Cryptography
open System.Text

/// An output file that cannot be written: the file and what is wrong, one line "file: problem".
exception OutputError of file: string * problem: string with
    /// "file: problem", one line.
    override e.Message = $"{e.file}: {e.problem}"

/// What a name in the file system is, as lstat(2) or stat(2) tells it.
[<RequireQualifiedAccess>]
type FileKind =
    /// Nothing by that name (or a folder on the way is missing).
    | Missing
    /// A regular file.
    | Regular
    /// A folder.
    | Directory
    /// A symbolic link (only when links are not followed).
    | Symlink
    /// A character device, such as /dev/null.
    | CharDevice
    /// A block device, such as a disk.
    | BlockDevice
    /// A named pipe (FIFO).
    | Fifo
    /// A Unix-domain socket.
    | Socket
    /// Something that cannot be examined (e.g. permission denied on a folder on the way).
    | Unknown

/// File kinds: which of FileKind a path names.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module FileKind =
    // .NET has no public API for the file type beyond folders and links (FileAttributes says
    // Normal for a device or a FIFO on Linux). The runtime's own native shim, libSystem.Native,
    // exports stat/lstat with a platform-independent struct: Flags (int32) then Mode (int32, the
    // POSIX S_IF* bits) at offset 4. The buffer is larger than the struct, which has grown by
    // appending fields only.
    [<DllImport("libSystem.Native", EntryPoint = "SystemNative_LStat", SetLastError = true)>]
    extern int private nativeLStat([<MarshalAs(UnmanagedType.LPUTF8Str)>] string path, [<In; Out>] byte[] status)

    [<DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat", SetLastError = true)>]
    extern int private nativeStat([<MarshalAs(UnmanagedType.LPUTF8Str)>] string path, [<In; Out>] byte[] status)

    let private ofMode (mode: int) =
        match mode &&& 0xF000 with
        | 0x8000 -> FileKind.Regular
        | 0x4000 -> FileKind.Directory
        | 0xA000 -> FileKind.Symlink
        | 0x2000 -> FileKind.CharDevice
        | 0x6000 -> FileKind.BlockDevice
        | 0x1000 -> FileKind.Fifo
        | 0xC000 -> FileKind.Socket
        | _ -> FileKind.Unknown

    /// Where the native call is missing (Windows), what FileSystemInfo can tell.
    let private fallback (path: string) (followLinks: bool) =
        let info = FileInfo path
        if not info.Exists && not (Directory.Exists path) && isNull info.LinkTarget then FileKind.Missing
        elif not followLinks && not (isNull info.LinkTarget) then FileKind.Symlink
        elif Directory.Exists path then FileKind.Directory
        elif info.Exists then FileKind.Regular
        else FileKind.Missing

    let private examine (path: string) (followLinks: bool) =
        if OperatingSystem.IsWindows() then fallback path followLinks
        else
            let status = Array.zeroCreate<byte> 512
            let result =
                try Some(if followLinks then nativeStat (path, status) else nativeLStat (path, status))
                with :? EntryPointNotFoundException | :? DllNotFoundException -> None
            match result with
            | None -> fallback path followLinks
            | Some 0 -> ofMode (BitConverter.ToInt32(status, 4))
            | Some _ ->
                // ENOENT (2) and ENOTDIR (20): nothing there; anything else: cannot tell.
                match Marshal.GetLastPInvokeError() with
                | 2
                | 20 -> FileKind.Missing
                | _ -> FileKind.Unknown

    /// What path names, without following a symbolic link at its last component (lstat).
    let ofLink (path: string) : FileKind = examine path false

    /// What path names, following symbolic links (stat): a dangling link is Missing.
    let ofTarget (path: string) : FileKind = examine path true

    /// "a folder", "a character device", ...: the kind in words, for messages.
    let describe (kind: FileKind) : string =
        match kind with
        | FileKind.Missing -> "missing"
        | FileKind.Regular -> "a regular file"
        | FileKind.Directory -> "a folder"
        | FileKind.Symlink -> "a symbolic link"
        | FileKind.CharDevice -> "a character device"
        | FileKind.BlockDevice -> "a block device"
        | FileKind.Fifo -> "a named pipe (FIFO)"
        | FileKind.Socket -> "a socket"
        | FileKind.Unknown -> "a file that cannot be examined"

/// Writing files safely: a temporary file renamed over the target once complete (see the top of
/// SafeWrite.fs). Raises OutputError with one line naming the file for anything it refuses or
/// that fails on the way.
[<RequireQualifiedAccess>]
module SafeWrite =
    /// The longest file name (one path component) most Linux file systems take, in UTF-8 bytes.
    let maxNameBytes = 255

    /// A temporary file of a process that is still running is deleted as stale after this long.
    let staleAfter = TimeSpan.FromHours 1.0

    let private fail file problem = raise (OutputError(file, problem))

    // The temporary files being written right now, deleted on Ctrl-C, SIGTERM and exit. This is
    // a cleanup registry (written only by `file`), not a setting.
    let private inFlight = ConcurrentDictionary<string, byte>()

    /// Deletes every temporary file still being written (called when the process is stopped).
    let private deleteInFlight () =
        for temp in inFlight.Keys do
            try File.Delete temp with _ -> ()
            inFlight.TryRemove temp |> ignore

    // Kept referenced: a PosixSignalRegistration that is collected stops handling its signal.
    // The handlers do not cancel the signal, so the process still stops as it would have.
    let private cleanupHooks =
        lazy
            (AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> deleteInFlight ())
             [ for signal in [ PosixSignal.SIGINT; PosixSignal.SIGTERM; PosixSignal.SIGHUP; PosixSignal.SIGQUIT ] do
                   try PosixSignalRegistration.Create(signal, fun _ -> deleteInFlight ())
                   with :? PlatformNotSupportedException -> () ])

    /// The prefix of name that fits in maxBytes of UTF-8, cut between characters.
    let private truncateUtf8 (name: string) (maxBytes: int) =
        if Encoding.UTF8.GetByteCount name <= maxBytes then name
        else
            let mutable n = 0
            let mutable bytes = 0
            let runes = name.EnumerateRunes() |> Seq.toArray
            while n < runes.Length && bytes + runes[n].Utf8SequenceLength <= maxBytes do
                bytes <- bytes + runes[n].Utf8SequenceLength
                n <- n + 1
            String.Concat(runes[.. n - 1] |> Array.map string)

    /// The part of a temporary name that comes from the target's name: ".NAME.", NAME shortened so
    /// that the whole temporary name stays within maxNameBytes.
    let private tempPrefix (name: string) =
        // "." + NAME + "." + pid (at most 10 digits) + "." + 16 hex digits + ".tmp"
        let room = maxNameBytes - (1 + 1 + 10 + 1 + 16 + 4)
        "." + truncateUtf8 name room + "."

    /// A fresh temporary name for a target called name: ".NAME.<pid>.<16 random hex digits>.tmp",
    /// unpredictable (64 bits from the system's cryptographic generator) and at most
    /// maxNameBytes long.
    let tempName (name: string) : string =
        $"{tempPrefix name}{Environment.ProcessId}.{RandomNumberGenerator.GetHexString(16, true)}.tmp"

    /// The process id in a temporary name made by tempName for name, if it is one.
    let private pidOfTemp (prefix: string) (candidate: string) =
        if not (candidate.StartsWith(prefix, StringComparison.Ordinal) && candidate.EndsWith(".tmp", StringComparison.Ordinal)) then None
        else
            match candidate.Substring(prefix.Length, candidate.Length - prefix.Length - 4).Split('.') with
            | [| pid; random |] when random.Length = 16 && Seq.forall Uri.IsHexDigit random ->
                match Int32.TryParse pid with
                | true, p when p > 0 -> Some p
                | _ -> None
            | _ -> None

    let private isRunning (pid: int) =
        try
            use p = Process.GetProcessById pid
            not p.HasExited
        with _ -> false

    /// Deletes the temporary files left beside target by writes that never finished: those of
    /// processes no longer running, and those older than staleAfter (their process id may have
    /// been reused). Only regular files and links named as tempName names them are touched.
    let cleanStale (target: string) : unit =
        let full = Path.GetFullPath target
        let dir, prefix = Path.GetDirectoryName full, tempPrefix (Path.GetFileName full)
        let entries = try Directory.GetFiles(dir, prefix + "*.tmp") with _ -> [||]
        for entry in entries do
            match pidOfTemp prefix (Path.GetFileName entry) with
            | Some pid when not (inFlight.ContainsKey entry) ->
                let kind = FileKind.ofLink entry
                let old = try DateTime.UtcNow - File.GetLastWriteTimeUtc entry > staleAfter with _ -> false
                if (kind = FileKind.Regular || kind = FileKind.Symlink) && (old || not (isRunning pid)) then
                    try File.Delete entry with _ -> ()
            | _ -> ()

    /// Checks that path can be written: a name that fits, an existing folder, and nothing there
    /// or a regular file. Returns the full path; raises OutputError naming the path otherwise.
    let check (path: string) : string =
        if String.IsNullOrWhiteSpace path then fail (string path) "no file name given"
        if path.Contains '\000' then fail (path.Replace('\000', '?')) "a file name cannot contain a NUL character"
        let full = Path.GetFullPath path
        let name = Path.GetFileName full
        if name = "" || path.EndsWith Path.DirectorySeparatorChar then fail path "that is a folder; give a file name"
        let bytes = Encoding.UTF8.GetByteCount name
        if bytes > maxNameBytes then fail path $"file name too long (%d{bytes} bytes; at most %d{maxNameBytes})"
        let dir = Path.GetDirectoryName full
        match FileKind.ofTarget dir with
        | FileKind.Directory -> ()
        | FileKind.Missing -> fail path $"the folder {dir} does not exist"
        | kind -> fail path $"{dir} is {FileKind.describe kind}, not a folder"
        match FileKind.ofLink full with
        | FileKind.Missing
        | FileKind.Regular -> ()
        | FileKind.Directory -> fail path "that is a folder; give a file name"
        | FileKind.Symlink ->
            fail path "is a symbolic link; links are not followed when writing: give the path of the file itself"
        | kind -> fail path $"is {FileKind.describe kind}, not a regular file: it is left as it is"
        full

    /// Writes path with write: into a new temporary file beside it, flushed to the disk, then
    /// renamed over path. On any failure the temporary file is deleted and path is untouched.
    /// Refuses (OutputError) a folder, a device, a FIFO, a socket or a symbolic link at path, a
    /// missing folder and a name longer than maxNameBytes; I/O failures become OutputError too.
    /// Exceptions of write itself other than I/O ones pass through (after the cleanup).
    let file (path: string) (write: Stream -> unit) : unit =
        cleanupHooks.Force() |> ignore
        let full = check path
        cleanStale full
        let dir = Path.GetDirectoryName full
        let temp = Path.Combine(dir, tempName (Path.GetFileName full))
        let mutable created = false
        try
            try
                do
                    // CreateNew is O_CREAT|O_EXCL: it fails on any existing name, a link included,
                    // so nothing planted at the temporary name can redirect the write.
                    use stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 65536)
                    created <- true
                    inFlight[temp] <- 0uy
                    if FileKind.ofLink full = FileKind.Regular && not (OperatingSystem.IsWindows()) then
                        // the new file keeps the permissions of the one it replaces
                        try File.SetUnixFileMode(stream.SafeFileHandle, File.GetUnixFileMode full) with _ -> ()
                    write stream
                    stream.Flush true
                // The target may have changed since the check: look again just before the rename
                // (rename(2) itself replaces a link at the target, never writes through it).
                check path |> ignore
                File.Move(temp, full, overwrite = true)
            with
            | :? OutputError -> reraise ()
            | :? UnauthorizedAccessException as e -> fail path $"permission denied ({e.Message.TrimEnd('.')})"
            | :? PathTooLongException -> fail path "path too long"
            | :? IOException as e -> fail path $"cannot write: {e.Message.TrimEnd('.')}"
        finally
            // only a file this call created (a name that was taken is someone else's)
            if created && FileKind.ofLink temp <> FileKind.Missing then
                try File.Delete temp with _ -> ()
            inFlight.TryRemove temp |> ignore

    /// Writes the bytes to path safely (see file).
    let bytes (path: string) (content: byte[]) : unit = file path (fun s -> s.Write(content, 0, content.Length))

    /// Writes the text to path safely as UTF-8 without a byte-order mark (see file).
    let text (path: string) (content: string) : unit = bytes path (UTF8Encoding(false).GetBytes content)
