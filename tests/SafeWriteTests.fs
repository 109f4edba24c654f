/// SafeWrite: whole files or nothing, never through a link, never over a device, FIFO or folder.
module SafeWriteTests

open System
open System.Diagnostics
open System.IO
open System.Text.RegularExpressions
open Expecto
open Backprop.Core

/// A fresh empty temporary folder.
let tempDir () = Directory.CreateTempSubdirectory("backprop-safewrite-").FullName

/// Runs a program and returns (exit code, stdout trimmed).
let exec (file: string) (args: string list) =
    let info = ProcessStartInfo(file, args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    use p = Process.Start info
    let out = p.StandardOutput.ReadToEnd()
    p.StandardError.ReadToEnd() |> ignore
    p.WaitForExit()
    p.ExitCode, out.Trim()

/// What `stat -c %F` says the path is ("regular file", "fifo", "character special file", ...).
let statKind (path: string) = snd (exec "stat" [ "-c"; "%F"; path ])

/// The names in a folder, hidden ones included, sorted.
let namesIn (dir: string) = Directory.GetFileSystemEntries dir |> Array.map Path.GetFileName |> Array.sort

/// Expects write to raise OutputError naming path with a problem containing words, on one line.
let expectRefused (path: string) (words: string) (write: unit -> unit) =
    try
        write ()
        failtest $"expected an OutputError for {path}"
    with OutputError(file, problem) ->
        Expect.equal file path "the error names the file as given"
        Expect.stringContains problem words "what is wrong"
        Expect.isFalse (problem.Contains '\n') "one line"

[<Tests>]
let tests =
    testList "safe write" [
        test "writes the content, and nothing else is left in the folder" {
            let dir = tempDir ()
            let path = Path.Combine(dir, "out.txt")
            SafeWrite.text path "héllo\n"
            Expect.equal (File.ReadAllBytes path) [| 0x68uy; 0xc3uy; 0xa9uy; 0x6cuy; 0x6cuy; 0x6fuy; 0x0auy |] "UTF-8 without a byte-order mark"
            SafeWrite.bytes (Path.Combine(dir, "b.bin")) [| 0uy; 255uy; 7uy |]
            Expect.equal (File.ReadAllBytes(Path.Combine(dir, "b.bin"))) [| 0uy; 255uy; 7uy |] "bytes"
            SafeWrite.file (Path.Combine(dir, "s.bin")) (fun s -> s.Write(Array.create 200000 42uy, 0, 200000))
            Expect.equal (FileInfo(Path.Combine(dir, "s.bin")).Length) 200000L "a stream of 200,000 bytes"
            Expect.equal (namesIn dir) [| "b.bin"; "out.txt"; "s.bin" |] "no temporary file left"
        }
        test "replaces an existing file by renaming: the old file stays whole until the new one is complete" {
            let dir = tempDir ()
            let path = Path.Combine(dir, "model.npz")
            File.WriteAllText(path, "old content")
            File.SetUnixFileMode(path, UnixFileMode.UserRead ||| UnixFileMode.UserWrite)
            use before = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite ||| FileShare.Delete)
            let mutable seenDuring = ""
            SafeWrite.file path (fun s ->
                s.Write("new "B, 0, 4)
                seenDuring <- File.ReadAllText path // half-way through the write
                s.Write("content"B, 0, 7))
            Expect.equal seenDuring "old content" "during the write the target is still the old file"
            Expect.equal (File.ReadAllText path) "new content" "after it, the new one"
            use reader = new StreamReader(before)
            Expect.equal (reader.ReadToEnd()) "old content" "a reader of the old file keeps it whole (a new file was renamed in, not the old one rewritten)"
            Expect.equal (File.GetUnixFileMode path) (UnixFileMode.UserRead ||| UnixFileMode.UserWrite) "the permissions of the file replaced are kept"
            Expect.equal (namesIn dir) [| "model.npz" |] "no temporary file left"
        }
        test "a writer that fails leaves the old file intact and no temporary file" {
            let dir = tempDir ()
            let path = Path.Combine(dir, "metrics.csv")
            File.WriteAllText(path, "epoch,acc\n1,0.9\n")
            let boom () =
                SafeWrite.file path (fun s ->
                    s.Write(Array.create 100000 1uy, 0, 100000)
                    invalidOp "the writer failed half-way")
            Expect.throwsT<InvalidOperationException> boom "the writer's own exception passes through"
            Expect.equal (File.ReadAllText path) "epoch,acc\n1,0.9\n" "old content intact"
            Expect.equal (namesIn dir) [| "metrics.csv" |] "the temporary file is deleted"
            // an I/O failure of the writer becomes an OutputError naming the file
            expectRefused path "cannot write: disk full (simulated)" (fun () -> SafeWrite.file path (fun _ -> raise (IOException "disk full (simulated)")))
            Expect.equal (namesIn dir) [| "metrics.csv" |] "no temporary file after an I/O failure either"
            // a new file that fails is not created at all
            let fresh = Path.Combine(dir, "new.csv")
            Expect.throwsT<InvalidOperationException> (fun () -> SafeWrite.file fresh (fun _ -> invalidOp "no")) "fails"
            Expect.isFalse (File.Exists fresh) "no partial new file"
        }
        test "temporary names are unpredictable: 1000 distinct, 64 random bits each, pid embedded" {
            let names = List.init 1000 (fun _ -> SafeWrite.tempName "model.npz")
            Expect.equal (List.distinct names).Length 1000 "1000 distinct names"
            let pattern = Regex($@"^\.model\.npz\.{Environment.ProcessId}\.[0-9a-f]{{16}}\.tmp$")
            for n in names do Expect.isTrue (pattern.IsMatch n) $"{n} is .NAME.<pid>.<16 hex>.tmp"
            // every hex position takes many values: the digits are random, not a counter
            for i in 0 .. 15 do
                let position = names |> List.map (fun n -> (n.Split('.')[4]).[i]) |> List.distinct
                Expect.isGreaterThan position.Length 10 $"hex digit {i} varies"
        }
        test "a link planted at a temporary name cannot redirect the write: CreateNew refuses it, the victim is untouched" {
            let dir = tempDir ()
            let victim = Path.Combine(dir, "victim")
            File.WriteAllText(victim, "precious")
            // CreateNew (O_CREAT | O_EXCL) fails on an existing name, a link included, even a dangling one
            let link = Path.Combine(dir, ".model.npz.123.0123456789abcdef.tmp")
            File.CreateSymbolicLink(link, victim) |> ignore
            Expect.throwsT<IOException> (fun () -> new FileStream(link, FileMode.CreateNew, FileAccess.Write) |> ignore) "CreateNew refuses a link"
            let dangling = Path.Combine(dir, "dangling")
            File.CreateSymbolicLink(dangling, Path.Combine(dir, "would-be-created")) |> ignore
            Expect.throwsT<IOException> (fun () -> new FileStream(dangling, FileMode.CreateNew, FileAccess.Write) |> ignore) "CreateNew refuses a dangling link"
            Expect.isFalse (File.Exists(Path.Combine(dir, "would-be-created"))) "nothing created through the dangling link"
            // links at every name a guesser would try, including this process's id
            let guesses =
                [ "model.npz.tmp"; ".model.npz.tmp"; $".model.npz.{Environment.ProcessId}.0000000000000000.tmp"; ".model.npz.~" ]
            for g in guesses do File.CreateSymbolicLink(Path.Combine(dir, g), victim) |> ignore
            let target = Path.Combine(dir, "model.npz")
            SafeWrite.text target "the model"
            Expect.equal (File.ReadAllText victim) "precious" "the victim is untouched"
            Expect.equal (File.ReadAllText target) "the model" "the target is written"
            Expect.equal (FileKind.ofLink target) FileKind.Regular "a regular file, not a link"
        }
        test "a device node is refused and stays a device" {
            let dir = tempDir ()
            let node = Path.Combine(dir, "null")
            let code, _ = exec "mknod" [ node; "c"; "1"; "3" ]
            if code <> 0 then skiptest "mknod needs root (CI runs as root)"
            Expect.equal (statKind node) "character special file" "made a device"
            expectRefused node "is a character device, not a regular file" (fun () -> SafeWrite.text node "x")
            Expect.equal (statKind node) "character special file" "still a device"
            Expect.equal (namesIn dir) [| "null" |] "no temporary file left"
            let block = Path.Combine(dir, "loop")
            if fst (exec "mknod" [ block; "b"; "7"; "200" ]) = 0 then
                expectRefused block "is a block device" (fun () -> SafeWrite.text block "x")
                Expect.equal (statKind block) "block special file" "still a block device"
        }
        test "a FIFO, a socket, a folder and a symbolic link are refused and left as they were" {
            let dir = tempDir ()
            let fifo = Path.Combine(dir, "pipe")
            Expect.equal (fst (exec "mkfifo" [ fifo ])) 0 "mkfifo"
            expectRefused fifo "is a named pipe (FIFO), not a regular file" (fun () -> SafeWrite.text fifo "x")
            Expect.equal (statKind fifo) "fifo" "still a FIFO"
            let socketPath = Path.Combine(dir, "sock")
            use socket = new Net.Sockets.Socket(Net.Sockets.AddressFamily.Unix, Net.Sockets.SocketType.Stream, Net.Sockets.ProtocolType.Unspecified)
            socket.Bind(Net.Sockets.UnixDomainSocketEndPoint socketPath)
            expectRefused socketPath "is a socket" (fun () -> SafeWrite.text socketPath "x")
            Expect.equal (statKind socketPath) "socket" "still a socket"
            let folder = Path.Combine(dir, "folder")
            Directory.CreateDirectory folder |> ignore
            expectRefused folder "that is a folder; give a file name" (fun () -> SafeWrite.text folder "x")
            expectRefused (folder + "/") "that is a folder" (fun () -> SafeWrite.text (folder + "/") "x")
            Expect.equal (statKind folder) "directory" "still a folder"
            let real = Path.Combine(dir, "real.txt")
            File.WriteAllText(real, "real")
            let link = Path.Combine(dir, "link.txt")
            File.CreateSymbolicLink(link, real) |> ignore
            expectRefused link "is a symbolic link" (fun () -> SafeWrite.text link "x")
            Expect.equal (File.ReadAllText real, statKind link) ("real", "symbolic link") "the link and its target unchanged"
            Expect.equal (namesIn dir) [| "folder"; "link.txt"; "pipe"; "real.txt"; "sock" |] "no temporary file left"
        }
        test "a file name over 255 bytes is refused; one of 255 bytes (or of multi-byte characters) is written" {
            let dir = tempDir ()
            let long = Path.Combine(dir, String('a', 256))
            expectRefused long "file name too long (256 bytes; at most 255)" (fun () -> SafeWrite.text long "x")
            let accents = Path.Combine(dir, String('\u00e9', 128)) // 256 bytes of UTF-8
            expectRefused accents "file name too long (256 bytes; at most 255)" (fun () -> SafeWrite.text accents "x")
            for name in [ String('b', 255); String('\u00e9', 127) + "c"; String('\u00e9', 127) ] do
                let path = Path.Combine(dir, name)
                SafeWrite.text path "fits"
                Expect.equal (File.ReadAllText path) "fits" $"a {Text.Encoding.UTF8.GetByteCount name}-byte name"
                let temp = SafeWrite.tempName name
                Expect.isLessThanOrEqual (Text.Encoding.UTF8.GetByteCount temp) 255 "its temporary name fits too"
                Expect.isTrue (temp.StartsWith ".") "hidden"
            Expect.equal (Directory.GetFileSystemEntries dir).Length 3 "three files, no temporaries"
        }
        test "a missing folder, a file used as a folder, and an empty name are refused with a message" {
            let dir = tempDir ()
            let missing = Path.Combine(dir, "no-such-folder", "m.npz")
            expectRefused missing $"""the folder {Path.Combine(dir, "no-such-folder")} does not exist""" (fun () -> SafeWrite.text missing "x")
            File.WriteAllText(Path.Combine(dir, "plain"), "")
            let under = Path.Combine(dir, "plain", "m.npz")
            expectRefused under "plain is a regular file, not a folder" (fun () -> SafeWrite.text under "x")
            expectRefused "" "no file name given" (fun () -> SafeWrite.text "" "x")
            Expect.equal (namesIn dir) [| "plain" |] "nothing created"
        }
        test "stale temporaries of dead processes, and old ones, are deleted on the next write; others are kept" {
            let dir = tempDir ()
            let path = Path.Combine(dir, "m.npz")
            let make name = let p = Path.Combine(dir, name) in File.WriteAllText(p, "partial"); p
            let dead = make ".m.npz.999999999.0123456789abcdef.tmp" // no such process (above Linux's pid_max)
            let old = make $".m.npz.{Environment.ProcessId}.00000000000000aa.tmp"
            File.SetLastWriteTimeUtc(old, DateTime.UtcNow.AddHours -2.0)
            let young = make $".m.npz.{Environment.ProcessId}.00000000000000bb.tmp" // a write of this process, in flight
            let other = make ".other.npz.999999999.0123456789abcdef.tmp" // another target's
            let unrelated = make ".m.npz.notes.tmp" // not a name SafeWrite makes
            SafeWrite.text path "done"
            Expect.isFalse (File.Exists dead) "a dead process's temporary is deleted"
            Expect.isFalse (File.Exists old) "a temporary older than an hour is deleted"
            for kept in [ young; other; unrelated ] do
                Expect.isTrue (File.Exists kept) $"{Path.GetFileName kept} is kept"
        }
        test "a process stopped by SIGTERM in the middle of a write deletes its temporary file" {
            // Another process writes through SafeWrite (an F# script on the built library) and
            // waits inside its writer; it is sent SIGTERM once its temporary file is there.
            let dir = tempDir ()
            let target = Path.Combine(dir, "m.npz")
            let script = Path.Combine(dir, "writer.fsx")
            let core = typeof<OutputError>.Assembly.Location
            File.WriteAllText(
                script,
                $"#r @\"{core}\"\nBackprop.Core.SafeWrite.file @\"{target}\" (fun s -> s.Write([| 1uy; 2uy |], 0, 2); s.Flush(); stdout.WriteLine \"writing\"; stdout.Flush(); System.Threading.Thread.Sleep 120000)\n"
            )
            let info = ProcessStartInfo("dotnet", [ "fsi"; "--quiet"; script ], RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            use p = Process.Start info
            p.StandardError.ReadToEndAsync() |> ignore
            let line = p.StandardOutput.ReadLineAsync()
            if not (line.Wait 90_000) || line.Result <> "writing" then
                p.Kill true
                failtest $"the writer did not start: {line.Result}"
            let temps = Directory.GetFiles(dir, ".m.npz.*.tmp")
            Expect.equal temps.Length 1 "one temporary file while writing"
            let pid = (Path.GetFileName temps[0]).Split('.')[3] // .m.npz.<pid>.<hex>.tmp: the writer's own id
            Expect.equal (fst (exec "kill" [ "-TERM"; pid ])) 0 "SIGTERM sent"
            if not (p.WaitForExit 30_000) then
                p.Kill true
                failtest "the writer did not stop"
            Expect.equal (Directory.GetFiles(dir, ".m.npz.*")) [||] "the temporary file is gone"
            Expect.isFalse (File.Exists target) "and no target was made"
        }
        test "file kinds: lstat does not follow a link, stat does" {
            let dir = tempDir ()
            let real = Path.Combine(dir, "f")
            File.WriteAllText(real, "")
            let link = Path.Combine(dir, "l")
            File.CreateSymbolicLink(link, real) |> ignore
            let dangling = Path.Combine(dir, "d")
            File.CreateSymbolicLink(dangling, Path.Combine(dir, "none")) |> ignore
            Expect.equal (FileKind.ofLink real, FileKind.ofLink link, FileKind.ofLink dangling) (FileKind.Regular, FileKind.Symlink, FileKind.Symlink) "lstat"
            Expect.equal (FileKind.ofTarget link, FileKind.ofTarget dangling, FileKind.ofTarget dir) (FileKind.Regular, FileKind.Missing, FileKind.Directory) "stat"
            Expect.equal (FileKind.ofTarget (Path.Combine(real, "below"))) FileKind.Missing "a path through a file (ENOTDIR) names nothing"
        }
    ]
