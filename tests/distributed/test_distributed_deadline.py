"""The multigpu study's time budget: measure_cases honours the runner's deadline like Runner.run. No launch after it
(the cases are counted not run, the run stays unfinished and a rerun resumes); a launch still running past it is
stopped, its whole process group and the workers it started in sessions of their own, and the case in flight is an
error that says so, not a speed result; the workers themselves start no case past the deadline. Without torchrun: a
stand-in launcher, a stand-in torchrun process, and the real worker loop in this process on a 1-rank gloo group."""
from __future__ import annotations

import json
import socket
import sys
import textwrap
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from perfkit.workloads import distributed as D
from perfkit.cases import Case
from perfkit.support.procgroup import GroupResult
from perfkit.runner import RunnerConfig, case_row
from perfkit.results.store import Store, load_measurements
from perfkit.study import StudyOptions, run_study
from perfkit.studies import _common, multigpu

needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="needs torch.distributed with gloo")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
CONFIG = RunnerConfig(check_batch=1, device_peaks=False)


def _case(parallel, world, batch=2):
    return Case(layer="network", pass_name="train_step", device="cpu", batch=batch,
                options=D.case_options(parallel, world, "gloo"))


def ok_row(job: dict, case: Case):
    return replace(case_row(case, job["run_id"], job["study"], job["env_id"], "network"), status="ok",
                   time_median_s=1.0, images_per_s=float(case.batch), error_rel=1e-7)


def storing_launch(launches: list):
    """A stand-in for distributed.launch that measures every case of its job at once (no process)."""

    def launch(nproc, args, threads=1, echo=True, timeout_s=None):
        job = json.loads(Path(args[args.index("--job") + 1]).read_text())
        launches.append(([c["batch"] for c in job["cases"]], timeout_s))
        with Store.open(job["store"]) as store:
            for d in job["cases"]:
                store.add_measurement(ok_row(job, D.case_from_dict(d)))
        return GroupResult(0, False, 0.1, "")

    return launch


def run_finished(store_path, run_id: str) -> bool:
    with Store.open(store_path) as store:
        [(finished,)] = store.con.execute("SELECT finished_at FROM runs WHERE run_id=?", (run_id,)).fetchall()
    return finished is not None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead and not yet reaped by whoever inherited it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone_within(pids, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


@pytest.fixture
def runner(open_runner):
    return open_runner(CONFIG)


def test_a_deadline_already_past_launches_nothing_and_the_rerun_resumes(tmp_path, monkeypatch):
    """Through run_study, as the campaign calls it: the run stays unfinished with every case counted not run; the
    same command without a deadline resumes it, launching them."""
    monkeypatch.setattr(multigpu, "gpu_count", lambda: 0)
    monkeypatch.setattr(_common, "gpu_visible", lambda: False)
    launches = []
    monkeypatch.setattr(D, "launch", storing_launch(launches))
    options = StudyOptions(devices=("cpu",), quick=True, batch=1, extra={"forms": ["ddp", "two_column"]})
    store = tmp_path / "multigpu.db"
    first = run_study(multigpu, options, store, show_progress=False, config=CONFIG, deadline=time.monotonic() - 1)
    assert launches == []
    assert first.cases_not_run == 2
    skipped = load_measurements(store)  # only the GPU form's rows, skipped here whatever the deadline
    assert first.rows_added == len(skipped) and set(skipped.status) == {"skipped"}
    assert skipped.device.str.startswith("cuda").all()
    assert f"Partial: 2 of {2 + len(skipped)} cases were not run" in first.summary.text
    assert not run_finished(store, first.run_id)
    again = run_study(multigpu, options, store, show_progress=False, config=CONFIG)
    assert again.run_id == first.run_id and again.resumed and again.cases_not_run == 0
    assert launches == [([2, 1], None)]  # ddp over 2 ranks at 2 images, two columns at 1; no deadline, no timeout
    assert run_finished(store, first.run_id)


def test_no_new_launch_after_the_deadline_and_skips_are_still_recorded(runner, monkeypatch):
    """A launch that fails (not at the deadline) is followed by a relaunch only while there is time: here the
    deadline passes during the first launch, which dies in its first case; the rest of the group is not run."""
    cases = [_case("single", 1), _case("single", 1, batch=4), _case("single", 1, batch=8), _case("ddp", 2, batch=3)]
    runner.config = replace(CONFIG, deadline=time.monotonic() + 0.5)
    launches = []

    def failing_launch(nproc, args, threads=1, echo=True, timeout_s=None):
        launches.append(timeout_s)
        time.sleep(0.6)  # the deadline passes meanwhile
        return GroupResult(1, False, 0.6, "RuntimeError: a worker died")

    monkeypatch.setattr(D, "launch", failing_launch)
    rows = D.measure_cases(runner, cases)
    assert len(launches) == 1 and launches[0] == pytest.approx(0.5 + D.DEADLINE_GRACE_S, abs=0.2)
    assert [(r.batch, r.status) for r in rows] == [(3, "skipped"), (2, "error")]  # the case the launch died in
    assert runner.cases_not_run == 2


@linux_only
def test_a_deadline_during_the_launch_stops_its_group_and_cuts_the_case_in_flight(runner, monkeypatch, tmp_path):
    """A stand-in torchrun (a real process) stores the first case, reports the second in flight, starts a "worker"
    in a session of its own (as torchrun does) that dies with its parent, ignores SIGTERM and sleeps. The launch is
    stopped DEADLINE_GRACE_S after the deadline, with SIGKILL KILL_GRACE_S later; both processes are gone."""
    cases = [_case("single", 1), _case("single", 1, batch=4), _case("single", 1, batch=8)]
    ahead, grace, kill_grace = 3.0, 0.5, 0.5  # seconds
    monkeypatch.setattr(D, "DEADLINE_GRACE_S", grace)
    monkeypatch.setattr(D, "KILL_GRACE_S", kill_grace)
    pids, first_row = tmp_path / "pids.json", tmp_path / "row.json"
    first_row.write_text(json.dumps(asdict(ok_row({"run_id": runner.run_id, "study": runner.study,
                                                   "env_id": runner.env_id}, cases[0]))))
    fake = textwrap.dedent(f"""
        import json, os, signal, subprocess, sys, time
        from perfkit.results.records import Measurement
        from perfkit.results.store import Store
        job = json.load(open(sys.argv[sys.argv.index("--job") + 1]))
        row = json.loads(open({str(first_row)!r}).read())
        with Store.open(job["store"]) as store:
            store.add_measurement(Measurement(**row))
        json.dump({{"in_flight": {cases[1].key!r}, "stopped_at_deadline": False}}, open(job["report"], "w"))
        worker = subprocess.Popen([sys.executable, "-c", "import time; from perfkit.support.procgroup import die_with_parent; "
                                   "die_with_parent(); time.sleep(300)"], start_new_session=True)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
        json.dump({{"torchrun": os.getpid(), "worker": worker.pid, "deadline_wall": job["deadline_wall"]}},
                  open({str(pids)!r}, "w"))
        time.sleep(300)
    """)
    monkeypatch.setattr(D, "torchrun_command", lambda nproc, args: [sys.executable, "-c", fake, *args])
    started, wall = time.monotonic(), time.time()
    runner.config = replace(CONFIG, deadline=started + ahead)
    rows = D.measure_cases(runner, cases, echo=False)
    took = time.monotonic() - started
    assert ahead + grace <= took < ahead + grace + kill_grace + 3.0
    seen = json.loads(pids.read_text())
    assert seen["deadline_wall"] == pytest.approx(wall + ahead, abs=0.5)  # the workers got the deadline
    assert gone_within([seen["torchrun"], seen["worker"]], 3.0)
    by_batch = {r.batch: r for r in rows}
    assert by_batch[2].status == "ok"
    cut = by_batch[4]
    assert cut.status == "error" and cut.note.startswith("stopped at the deadline")
    assert "not a speed result" in cut.note
    assert cut.time_median_s is None and cut.images_per_s is None
    assert 8 not in by_batch and runner.cases_not_run == 1
    # a rerun with time resumes with the case never started; the cut one keeps its honest row
    launches = []
    monkeypatch.setattr(D, "launch", storing_launch(launches))
    runner.config = CONFIG
    assert [r.batch for r in D.measure_cases(runner, cases)] == [8] and launches == [([8], None)]
    assert runner.cases_not_run == 0
    assert len(load_measurements(runner.store.path)) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_gloo
def test_the_workers_start_no_case_after_the_deadline(runner, monkeypatch, tmp_path):
    """The real worker loop (run_worker), in this process as a 1-rank gloo group: the first case runs past the
    deadline; the next ones do not start, and rank 0 reports that the workers stopped there."""
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                        "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    measured = []

    def measure_case(case, job, network, parameters):
        measured.append(case.batch)
        while job["deadline_wall"] and time.time() < job["deadline_wall"] + 0.05:  # still running at the deadline
            time.sleep(0.01)
        return ok_row(job, case)

    monkeypatch.setattr(D, "measure_case", measure_case)
    monkeypatch.setattr(D, "init_parameters", lambda network, seed: {})  # measure_case does not look at them
    def run(batches, deadline_wall):
        cases = [_case("single", 1, batch=b) for b in batches]
        job = {"store": str(runner.store.path), "run_id": runner.run_id, "study": runner.study,
               "env_id": runner.env_id, "env": runner.env, "seed": 0, "check_batch": 1, "timing": {},
               "show_progress": False, "cases": [asdict(c) for c in cases], "deadline_wall": deadline_wall,
               "report": str(tmp_path / "report.json")}
        (tmp_path / "job.json").write_text(json.dumps(job, default=str))
        assert D.run_worker(str(tmp_path / "job.json")) == 0
        assert not torch.distributed.is_initialized()
        return D.read_report(tmp_path / "report.json")

    report = run([2, 4, 8], time.time() + 2.0)
    assert measured == [2]
    assert report == {"in_flight": None, "stopped_at_deadline": True, "not_started": 2}
    assert list(load_measurements(runner.store.path).batch) == [2]
    report = run([4, 8], time.time() - 1)  # already past: not even the first case starts
    assert measured == [2] and report["not_started"] == 2
    report = run([4, 8], None)  # no deadline: every case
    assert measured == [2, 4, 8] and report == {"in_flight": None, "stopped_at_deadline": False}
    assert sorted(load_measurements(runner.store.path).batch) == [2, 4, 8]
