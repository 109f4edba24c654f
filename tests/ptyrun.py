#!/usr/bin/env python3
"""Runs a command in a pseudo-terminal, as a person at a terminal would, for the CLI tests.

Usage: ptyrun.py TRANSCRIPT COLUMNS SPEC -- COMMAND [ARG ...]

The command gets a new session whose controlling terminal is the pty (COLUMNS wide, 24 rows),
so Ctrl-C typed into it reaches the command as SIGINT, exactly as in a terminal. Everything
the command writes to the terminal (stdout and stderr, escape sequences included) is saved,
byte for byte, to TRANSCRIPT. SPEC says what to type and when, as "COUNT:PATTERN:KEYS[:DELAY]":
once PATTERN (a regular expression over the transcript so far) has matched COUNT times, type
KEYS (\\x03 is Ctrl-C), then, if DELAY (seconds) is given, type KEYS again after DELAY seconds.
"-" types nothing. Prints the command's exit status: its exit code, or 128 + N when signal N
killed it. Gives up (and kills the command) after 300 seconds.
"""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time


def main():
    transcript_path, columns, spec = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    command = sys.argv[sys.argv.index("--") + 1:]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))

    def controlling_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave,
                               preexec_fn=controlling_terminal, close_fds=True)
    os.close(slave)
    count, pattern, keys, delay = None, None, b"", None
    if spec != "-":
        parts = spec.split(":")
        count, pattern = int(parts[0]), re.compile(parts[1].encode())
        keys = parts[2].encode().decode("unicode_escape").encode("latin-1")
        delay = float(parts[3]) if len(parts) > 3 else None
    transcript = bytearray()
    typed_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.02)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal
                chunk = b""
            if not chunk:
                break
            transcript += chunk
        if pattern is not None and typed_at is None and len(pattern.findall(bytes(transcript))) >= count:
            os.write(master, keys)
            typed_at = time.monotonic()
        if delay is not None and typed_at is not None and time.monotonic() - typed_at >= delay:
            os.write(master, keys)
            delay = None
        if process.poll() is not None and not ready:
            break
    else:
        process.kill()
    status = process.wait()
    # drain what is left
    while True:
        ready, _, _ = select.select([master], [], [], 0.05)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        transcript += chunk
    with open(transcript_path, "wb") as f:
        f.write(transcript)
    print(128 - status if status < 0 else status)


if __name__ == "__main__":
    main()
