"""perfkit.support.procgroup: a command run in its own process group is ended with everything it started: on timeout
(SIGTERM, then SIGKILL for what ignores it), on an interrupt in the parent, after a normal exit (what it left behind),
and, on Linux, when the parent itself is SIGKILLed (PR_SET_PDEATHSIG). Real processes, a few seconds in all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from perfkit.support import procgroup
from perfkit.support.procgroup import run_in_group

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

#: A command whose child ("the grandchild", a sleep) it starts in its own group, printing "<own pid> <grandchild
#: pid>"; it then sleeps. {ignore} makes both ignore SIGTERM (an ignored signal is inherited across exec).
SPAWNER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    if {ignore}:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "300"])
    print(os.getpid(), child.pid, flush=True)
    time.sleep({sleep})
""")


def spawner(ignore_term=False, sleep=300) -> list[str]:
    return [sys.executable, "-c", SPAWNER.format(ignore=ignore_term, sleep=sleep)]


def alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (dead, not yet reaped by whoever inherited it) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pids, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


def pids_from(text: str) -> list[int]:
    return [int(p) for p in text.split()[:2]]


@pytest.fixture
def reaper():
    """Pids a test started, SIGKILLed at its end whatever happened (by pid, never by name)."""
    started: list[int] = []
    yield started
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def test_a_timeout_kills_the_whole_group_grandchild_included(reaper):
    result = run_in_group(spawner(), timeout_s=1.5, stdout=subprocess.PIPE, grace_s=2.0)
    pids = pids_from(result.output)
    reaper += pids
    assert result.timed_out and result.returncode == -signal.SIGTERM
    assert 1.5 <= result.seconds < 1.5 + 2.0 + 2.0
    assert gone_within(pids, 3.0), [p for p in pids if alive(p)]


def test_what_ignores_sigterm_gets_sigkill_after_the_grace(reaper):
    result = run_in_group(spawner(ignore_term=True), timeout_s=1.0, stdout=subprocess.PIPE, grace_s=0.5)
    pids = pids_from(result.output)
    reaper += pids
    assert result.timed_out and result.returncode == -signal.SIGKILL
    assert result.seconds < 1.0 + 0.5 + 2.0
    assert gone_within(pids, 3.0), [p for p in pids if alive(p)]


def test_a_normal_exit_reports_its_status_and_output_and_ends_what_it_left_behind(reaper, tmp_path):
    out = tmp_path / "out.txt"
    with out.open("w") as f:  # a file object, stderr with it
        result = run_in_group([sys.executable, "-c", "import sys; print('to stdout'); sys.exit(3)"], timeout_s=60,
                              stdout=f, stderr=subprocess.STDOUT)
    assert (result.returncode, result.timed_out, result.output) == (3, False, "")
    assert out.read_text() == "to stdout\n"
    lines = []
    result = run_in_group(spawner(sleep=0), timeout_s=60, stdout=subprocess.PIPE, on_line=lines.append, grace_s=1.0)
    pids = pids_from(result.output)
    reaper += pids
    assert (result.returncode, result.timed_out) == (0, False) and lines == [result.output]
    assert gone_within(pids[1:], 3.0)  # the sleep it started and left running


def test_an_interrupt_in_the_parent_kills_the_group_and_goes_on(reaper, tmp_path):
    out = tmp_path / "pids.txt"
    main = threading.main_thread().ident

    def interrupt_when_started():
        end = time.monotonic() + 30
        while time.monotonic() < end and len(out.read_text().split()) < 2:
            time.sleep(0.05)
        signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C, delivered to the waiting thread

    with out.open("w") as f:
        threading.Thread(target=interrupt_when_started, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_in_group(spawner(), timeout_s=None, stdout=f, grace_s=1.0)
    pids = pids_from(out.read_text())
    reaper += pids
    assert gone_within(pids, 3.0), [p for p in pids if alive(p)]


#: A parent that runs `cmd` through run_in_group (or, for die_with_parent, a plain Popen whose child sets it itself).
PARENT = textwrap.dedent("""
    import subprocess, sys
    from perfkit.support.procgroup import run_in_group
    cmd = [sys.executable, "-c", {child!r}]
    if {grouped}:
        run_in_group(cmd, timeout_s=300)
    else:
        subprocess.Popen(cmd).wait()
""")
CHILD = "import os, time; {setup}open({path!r}, 'w').write(str(os.getpid())); time.sleep(300)"


def _parent_killed_child_dies(tmp_path, reaper, grouped: bool, setup: str = ""):
    pid_file = tmp_path / "child.pid"
    child = CHILD.format(setup=setup, path=str(pid_file))
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(child=child, grouped=grouped)],
                              start_new_session=True)  # its own group: the test's cleanup cannot miss it
    reaper.append(parent.pid)
    end = time.monotonic() + 60
    while time.monotonic() < end and not (pid_file.exists() and pid_file.read_text()):
        assert parent.poll() is None
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    reaper.append(child_pid)
    assert alive(child_pid)
    parent.send_signal(signal.SIGKILL)  # no chance to clean up
    parent.wait()
    assert gone_within([child_pid], 5.0)


@linux_only
def test_a_sigkilled_parents_child_dies_with_it(tmp_path, reaper):
    _parent_killed_child_dies(tmp_path, reaper, grouped=True)


@linux_only
def test_die_with_parent_covers_a_process_started_by_someone_else(tmp_path, reaper):
    setup = "from perfkit.support.procgroup import die_with_parent; assert die_with_parent(); "
    _parent_killed_child_dies(tmp_path, reaper, grouped=False, setup=setup)


def test_elsewhere_the_parent_death_signal_is_a_no_op(monkeypatch):
    monkeypatch.setattr(procgroup, "_PRCTL", None)
    assert procgroup.die_with_parent() is False
    assert procgroup._death_preexec(signal.SIGKILL) is None
    result = run_in_group([sys.executable, "-c", "pass"], timeout_s=60)
    assert (result.returncode, result.timed_out) == (0, False)


@linux_only
def test_die_with_parent_sees_a_parent_that_died_before_it_asked():
    """A process whose parent died while it started up has been reparented: the parent it has now lacks the marker
    (torchrun's name, for perfkit's workers), so the signal comes at once instead of never."""
    ours = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")[0].decode()
    code = "from perfkit.support.procgroup import die_with_parent; die_with_parent(parent_markers={!r}); print('on')"
    gone = subprocess.run([sys.executable, "-c", code.format(("no-such-parent",))], timeout=60,
                          capture_output=True, text=True)
    assert gone.returncode == -signal.SIGKILL and gone.stdout == ""
    kept = subprocess.run([sys.executable, "-c", code.format((ours,))], timeout=60, capture_output=True, text=True)
    assert kept.returncode == 0 and kept.stdout == "on\n", kept.stderr
