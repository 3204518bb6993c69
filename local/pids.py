"""Processes we started, and signals that can reach only them.

A pid alone names nobody for long: when a process exits its pid is free, and the next process
may get it. A pid file is worse when it lives in a directory another user can write (the embedded
PostgreSQL's ``postmaster.pid`` under root belongs to the ``postgres`` user). So a process is
recorded, when we start it, as a ``Process``: its pid, its start time (clock ticks since boot,
which a reused pid does not share), the exact binary it runs and the user it runs as. Later it
is ours only while all four still match, and it is signalled through a pidfd taken *before* that
check: the pidfd names the process that was checked, whatever becomes of the pid afterwards, and
every signal (SIGKILL included) goes through it.

Without /proc (macOS) ``ps`` tells the binary and the user but no start time, and without pidfds
(macOS, Linux before 5.3) the identity is checked again right before each signal: weaker, since a
pid reused in that instant by our own user running our binary passes, but never another user's
process or another program.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HAVE_PROC = Path("/proc/self/stat").exists()
POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Process:
    pid: int
    #: clock ticks since boot (/proc/PID/stat field 22); 0 where there is no /proc
    started: int
    #: the binary, resolved (as /proc/PID/exe shows it)
    exe: str
    #: the real and effective uid
    uid: int

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started, "exe": self.exe, "uid": self.uid}

    @classmethod
    def from_json(cls, data: object) -> Process | None:
        """The record read back from a state file, or None if it is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(int(data["pid"]), int(data["started"]), str(data["exe"]), int(data["uid"]))
        except (KeyError, TypeError, ValueError):
            return None


def binary(path: Path) -> str:
    """``path`` as /proc/PID/exe names it (symbolic links resolved)."""
    return os.path.realpath(path)


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), None if no such live process; 0 without
    /proc (a live process whose start time cannot be known)."""
    if not HAVE_PROC:
        return 0 if _ps(pid, "uid=") is not None else None
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def identify(pid: int, exe: str, uid: int) -> int | None:
    """The start time of ``pid`` if it is a live process running ``exe`` as ``uid`` (real and
    effective), else None."""
    if pid <= 0:
        return None
    if not HAVE_PROC:
        return _identify_ps(pid, exe, uid)
    before = start_time(pid)
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        running = os.readlink(f"/proc/{pid}/exe")
    except OSError:  # gone, or another user's process we may not look into
        return None
    uids = next((line.split()[1:3] for line in status.splitlines() if line.startswith("Uid:")), [])
    if uids != [str(uid), str(uid)] or running not in (exe, f"{exe} (deleted)"):
        return None
    # Read again: had the pid been reused between the reads, the start times would differ.
    return before if start_time(pid) == before else None


def argv(pid: int) -> list[str] | None:
    """The command line of ``pid``; None where it cannot be read (no /proc: not checked)."""
    if not HAVE_PROC:
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def adopt(
    pid: int, exe: str, uid: int, args_ok: Callable[[list[str]], bool], *, since: int
) -> Process | None:
    """``pid`` as a Process if it runs ``exe`` as ``uid``, with a command line ``args_ok``
    accepts, and started at or after ``since`` (ticks): how a pid read from a file that someone
    else may have written is taken for the server we just started."""
    started = identify(pid, exe, uid)
    if started is None or started < since:
        return None
    line = argv(pid)
    if line is not None and not args_ok(line):
        return None
    return Process(pid, started, exe, uid)


def alive(process: Process) -> bool:
    """True while ``process`` is the one recorded: same binary, user and start time."""
    return identify(process.pid, process.exe, process.uid) == process.started


def stop(
    targets: Sequence[tuple[Process, signal.Signals]], timeout_seconds: float
) -> tuple[list[Process], list[Process]]:
    """Send each process that is still ours its signal, all first, then wait for all of them;
    one still running after ``timeout_seconds`` gets SIGKILL through the same handle. Returns
    (the processes signalled, those of them that had to be killed)."""
    held = [(h, sig) for h, sig in ((_Held.take(p), sig) for p, sig in targets) if h is not None]
    try:
        for handle, sig in held:
            handle.signal(sig)
        deadline = time.monotonic() + timeout_seconds
        killed = []
        for handle, _ in held:
            if not handle.wait_gone(max(0.0, deadline - time.monotonic())):
                handle.signal(signal.SIGKILL)
                handle.wait_gone(5.0)
                killed.append(handle.process)
        return [handle.process for handle, _ in held], killed
    finally:
        for handle, _ in held:
            handle.close()


class _Held:
    """One of our processes, held so that signals reach it and nothing else."""

    def __init__(self, process: Process, fd: int | None) -> None:
        self.process, self.fd = process, fd

    @classmethod
    def take(cls, process: Process) -> _Held | None:
        # The pidfd first, the check second: the pidfd then refers to the checked process.
        fd = _pidfd(process.pid)
        if not alive(process):
            if fd is not None:
                os.close(fd)
            return None
        return cls(process, fd)

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif alive(self.process):
                os.kill(self.process.pid, sig)

    def wait_gone(self, timeout_seconds: float) -> bool:
        if self.fd is not None:
            # A pidfd becomes readable when its process exits.
            return bool(select.select([self.fd], [], [], timeout_seconds)[0])
        deadline = time.monotonic() + timeout_seconds
        while alive(self.process):
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # gone (then the check fails too), or no pidfds in this kernel
        return None


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and ')')."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def _identify_ps(pid: int, exe: str, uid: int) -> int | None:
    out = _ps(pid, "uid=,ruid=,comm=")
    if out is None:
        return None
    fields = out.split(None, 2)
    if len(fields) < 3 or fields[:2] != [str(uid), str(uid)]:
        return None
    return 0 if binary(Path(fields[2].strip())) == exe else None


def _ps(pid: int, columns: str) -> str | None:
    try:
        done = subprocess.run(
            ["ps", "-p", str(pid), "-o", columns], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
