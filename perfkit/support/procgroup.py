"""Subprocesses that cannot outlive perfkit: each runs in its own process group, with a wall-clock timeout, and the
whole group is killed when the timeout ends, when the parent is interrupted or fails, and (on Linux) when the parent
itself dies.

Why a group: the commands perfkit starts (pytest, the bench phase, torchrun) start processes of their own. Killing
only the direct child leaves those running, holding GPUs, cores and the output pipe. A child started here is the
leader of a new session (`start_new_session=True`), so it and everything it starts (unless they move out of the
group themselves) are reached by one `os.killpg`. A new session also keeps a terminal's Ctrl-C away from the child:
the parent gets the KeyboardInterrupt and ends the group itself, in order.

How a group ends (`kill_group`): SIGTERM to the group, up to `grace_s` seconds for the leader to exit (torchrun uses
them to stop its workers), then SIGKILL to whatever is left of the group. After a normal exit the same is done to
members still alive (a background process the command left behind).

When the parent dies without a chance to clean up (SIGKILL, an out-of-memory kill), Linux can still tell the child:
`prctl(PR_SET_PDEATHSIG)`, set in the child between fork and exec, sends it `death_signal` when the parent goes. This
reaches the direct child only; processes that leave the group (torchrun starts each worker in a session of its own)
must call `die_with_parent()` themselves. Elsewhere both are no-ops. Caveat of PR_SET_PDEATHSIG: it fires when the
*thread* that started the child ends, so start a child from a thread that outlives it (`run_in_group` waits in the
calling thread, which is always the case there).

API:
- `run_in_group(cmd, *, timeout_s, ...) -> GroupResult(returncode, timed_out, seconds, output)`: run and wait.
- `popen_in_group(cmd, **popen_kwargs)`: a context manager yielding the Popen; the group is ended on leaving it.
- `start_in_group(cmd, **popen_kwargs) -> Popen` and `kill_group(proc, grace_s)`: the two halves.
- `die_with_parent(sig, parent_markers)`: PR_SET_PDEATHSIG for the calling process itself.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

KILL_GRACE_S = 5.0  # seconds between SIGTERM and SIGKILL: enough for torchrun to stop its workers
TAIL_LINES = 60  # lines of captured output kept in GroupResult.output
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POSIX = os.name == "posix"


@dataclass
class GroupResult:
    """How a command run by `run_in_group` ended.

    returncode: the leader's exit status (negative: killed by that signal, as subprocess reports it); None only if it
    could not be reaped. timed_out: the timeout ended it (the group was killed). seconds: wall time from start to the
    end of the group, in seconds. output: the last TAIL_LINES lines of what the command wrote to the pipes asked for
    (stdout and/or stderr=subprocess.PIPE), "" when none was captured."""

    returncode: int | None
    timed_out: bool
    seconds: float
    output: str = ""


# -- dying with the parent ------------------------------------------------------------------------------------------
def _prctl():
    """libc's prctl, resolved in the parent: the child between fork and exec must not load libraries (a lock another
    thread held at the fork would never be released)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def die_with_parent(sig: int = signal.SIGKILL, parent_markers: Sequence[str] = ()) -> bool:
    """Ask the kernel to send `sig` to this process when its parent (the thread that started it) dies. For processes
    started by someone else (torchrun's workers). True where it is set, False where unsupported (not Linux).

    A parent that died before the request was in place would never send it; this process has then been reparented
    (to init or a subreaper). That shows as a parent pid that changed during this call, or, when the parent died
    earlier still (while this process was importing), as a parent whose command line has none of `parent_markers`
    (say "torch.distributed.run"); either way `sig` is sent at once. Without markers only the first can be seen."""
    if _PRCTL is None:
        return False
    parent = os.getppid()
    if _PRCTL(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    now = os.getppid()
    cmdline = _cmdline(now) if parent_markers else None
    if now != parent or (cmdline is not None and not any(m in cmdline for m in parent_markers)):
        os.kill(os.getpid(), sig)
    return True


def _death_preexec(sig: int | None) -> Callable[[], None] | None:
    """The function the child runs between fork and exec: PR_SET_PDEATHSIG, and the signal at once if the parent
    died in between (then the child has been reparented and its parent pid is no longer ours)."""
    if sig is None or _PRCTL is None:
        return None
    prctl, parent = _PRCTL, os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


# -- starting and ending a group ------------------------------------------------------------------------------------
def start_in_group(cmd: Sequence[str], death_signal: int | None = signal.SIGKILL, **popen_kwargs) -> subprocess.Popen:
    """subprocess.Popen(cmd, **popen_kwargs) as the leader of a new session and process group (its pgid is its pid),
    sent `death_signal` when this process dies (Linux; None: not). End it with `kill_group`."""
    if _POSIX:
        popen_kwargs["start_new_session"] = True
        preexec = _death_preexec(death_signal)
        if preexec is not None:
            if popen_kwargs.get("preexec_fn") is not None:
                raise ValueError("start_in_group sets preexec_fn itself (for the parent-death signal)")
            popen_kwargs["preexec_fn"] = preexec
    return subprocess.Popen(list(cmd), **popen_kwargs)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Zombies do not count: a member whose parent died is reaped by
    whoever inherited it, and an init that reaps late (some containers' never does) would otherwise keep a dead
    group "alive"; /proc tells them apart, kill(-pgid, 0) elsewhere cannot."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            for entry in proc.iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue  # gone meanwhile
                if int(fields[2]) == pgid and fields[0] != "Z":  # after the name: state, ppid, pgrp
                    return True
            return False
        except OSError:
            pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: it is there
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(proc: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> int | None:
    """End the process group that `proc` leads (see start_in_group): SIGTERM to the group, up to `grace_s` seconds for
    the leader to exit, then SIGKILL to every member left; the leader is reaped. Returns its exit status. Safe to call
    on a group that has already ended."""
    if not _POSIX:
        if proc.poll() is None:
            proc.kill()
        return proc.wait()
    pgid = proc.pid
    if proc.poll() is None or _group_alive(pgid):
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=max(grace_s, 0.0))
        except subprocess.TimeoutExpired:
            pass
        # members the leader did not stop (or the leader itself): no more waiting
        _signal_group(pgid, signal.SIGKILL)
    try:
        return proc.wait(timeout=max(grace_s, 1.0))
    except subprocess.TimeoutExpired:  # not even SIGKILL (uninterruptible sleep): leave it to the kernel
        return proc.returncode


def _end_leftovers(proc: subprocess.Popen, grace_s: float) -> None:
    """After the leader exited by itself: members of its group still alive are orphans; end them (SIGTERM, a grace of
    at most `grace_s` seconds, SIGKILL)."""
    if not _POSIX or not _group_alive(proc.pid):
        return
    _signal_group(proc.pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and _group_alive(proc.pid):
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def popen_in_group(cmd: Sequence[str], grace_s: float = KILL_GRACE_S, death_signal: int | None = signal.SIGKILL,
                   **popen_kwargs) -> Iterator[subprocess.Popen]:
    """`with popen_in_group(cmd, stdout=..., ...) as proc:` the Popen of `start_in_group`, for callers that talk to
    the process themselves. On leaving the block, by any route (an exception, KeyboardInterrupt, or normally), the
    group is ended with `kill_group` (at most `grace_s` seconds between SIGTERM and SIGKILL); wait for the process in
    the block if it should finish by itself."""
    proc = start_in_group(cmd, death_signal=death_signal, **popen_kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_group(proc, grace_s)
        else:
            _end_leftovers(proc, grace_s)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _reader(pipe, tail: collections.deque, on_line: Callable[[str], None] | None) -> threading.Thread:
    """A thread keeping the last lines of `pipe` in `tail` and passing each to `on_line`; it drains the pipe to the
    end even when `on_line` fails (a full pipe would stop the command)."""

    def read() -> None:
        callback = on_line
        for line in pipe:
            tail.append(line)
            if callback is not None:
                try:
                    callback(line)
                except Exception:  # e.g. our stderr went away: keep the tail, stop echoing
                    callback = None

    thread = threading.Thread(target=read, daemon=True, name="procgroup-reader")
    thread.start()
    return thread


def run_in_group(cmd: Sequence[str], *, timeout_s: float | None, cwd=None, env: dict | None = None, stdout=None,
                 stderr=None, on_line: Callable[[str], None] | None = None, grace_s: float = KILL_GRACE_S,
                 death_signal: int | None = signal.SIGKILL, tail_lines: int = TAIL_LINES) -> GroupResult:
    """Run `cmd` in its own process group and wait at most `timeout_s` seconds (None: no limit) of wall time.

    stdout, stderr: as for subprocess (None inherits, a file object, subprocess.DEVNULL, subprocess.STDOUT for
    stderr); subprocess.PIPE captures text lines (undecodable bytes replaced), passes each to `on_line` as it comes
    (from a reader thread) and keeps the last `tail_lines` in the result's `output`. stdin is /dev/null.

    On timeout the group is killed (SIGTERM, up to `grace_s` seconds, SIGKILL) and the result says timed_out. On any
    exception in this process while waiting (KeyboardInterrupt included) the group is killed the same way and the
    exception goes on. After a normal exit, members left in the group are ended too. `death_signal` is sent to the
    command if this process dies first (Linux; None: not sent).

    Returns GroupResult(returncode, timed_out, seconds, output)."""
    tail: collections.deque = collections.deque(maxlen=max(tail_lines, 1))
    text = subprocess.PIPE in (stdout, stderr)
    started = time.monotonic()
    timed_out = False
    proc = start_in_group(cmd, death_signal=death_signal, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                          stdin=subprocess.DEVNULL,
                          **({"text": True, "errors": "replace", "bufsize": 1} if text else {}))
    readers = []
    try:
        readers = [_reader(pipe, tail, on_line) for pipe in (proc.stdout, proc.stderr) if pipe is not None]
        try:
            returncode = proc.wait(timeout=None if timeout_s is None else max(timeout_s, 0.0))
            _end_leftovers(proc, grace_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            returncode = kill_group(proc, grace_s)
    except BaseException:
        kill_group(proc, grace_s)
        raise
    finally:
        for thread in readers:
            # the pipes reach their end once every member has gone; one that left the group could hold them open,
            # so the wait is bounded (the daemon thread is then abandoned, and the pipe with it)
            thread.join(timeout=max(grace_s, 1.0))
        for pipe, thread in zip((p for p in (proc.stdout, proc.stderr) if p is not None), readers):
            if not thread.is_alive():
                pipe.close()
    return GroupResult(returncode, timed_out, time.monotonic() - started, "".join(tail))
