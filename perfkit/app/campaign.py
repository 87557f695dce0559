"""`perfkit campaign`: everything a GPU machine can tell, in one command, one folder and a time budget.

    perfkit campaign [--device auto|cpu|cuda] [--out DIR] [--budget-minutes 5] [--quick] [--full]
    perfkit campaign --plan [--gpu h100|h200|a100] [--budget-minutes M]     what it would run, and how long that takes

A GPU may be at hand for a few minutes at a time, so the phases run in the order of what they tell per minute, each
with a share of the budget left when it starts (time a phase leaves unused passes on to the phases after it):

1. headline (45%): the `headline` study: the alexnet2012 network at batch 128, forward and train_step, torch eager,
   Triton and torch.compile in float32 (IEEE), TF32 and bfloat16; the machine's CPU for the GPU-vs-CPU ratio; the
   kernelbench forward at batch 1024, eager against compile, beside KernelBench's published H100 times.
2. tests (15%): the GPU tests in a subprocess: the harness tests marked `gpu` first (they are few and each checks a
   GPU path of the harness), then tests/kernels and tests/test_triton_backend.py, at their representative shapes.
   The log goes to tests.log. Skipped without a GPU (the CPU suite is plain `pytest`).
3. energy (12%): the headline cases again, train steps first, with the sustained energy window (J/image).
4. roofline (8%): the `roofline` study on the conv and fc layers.
5. rest (20%): every other study (the most telling first, each with a slice in proportion to its weight), the
   headline train step under torch.profiler (perfkit.app.profile), and the regression suite's GPU half as a baseline.

Salvage: the folder holds valid, current files after every case, so a SIGKILL at any moment loses at most the case
in flight. The store is kept in rollback-journal mode (no -wal or -shm file beside it; every commit is in the file);
measurements.csv, HEADLINES.md and campaign.json are rewritten after each case by an atomic rename. Every case has a
time cap (and none runs past the budget's end): one that runs past it is stopped and recorded as an error saying so.
Subprocesses (the tests, the bench phase, torchrun) run in their own process group and are killed with it
(perfkit.support.procgroup); none outlives its phase's slice.

A second command into the same folder (a longer --budget-minutes, say) resumes: finished study runs are not measured
again, unfinished ones resume where they stopped, a tests or bench phase that ran is not run again.

Everything lands in one folder, default results/<device name>, at most eight files: perfkit.db, measurements.csv,
HEADLINES.md, campaign.json, tests.log, bench.json, bench-baseline.json and report.html (which needs plotly; without
it, HEADLINES.md says how to build it elsewhere from perfkit.db).

`--quick` narrows the studies to a few layers and the regression suite to a few benchmarks, with an 8-minute budget.
That is the form CI runs on a CPU-only machine, where the GPU phases are skipped with the reason.
"""
from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import perfkit
from perfkit.cases import NETWORK
from perfkit.results.store import load_measurements, load_summaries

BUDGET_MINUTES = 5.0
QUICK_BUDGET_MINUTES = 8.0
#: The phases in value order, with their share of the budget left when each starts (relative to the phases after it).
PHASE_SHARES = {"headline": 0.45, "tests": 0.15, "energy": 0.12, "roofline": 0.08, "rest": 0.20}
#: Within the rest phase: the other studies, the profile of the headline train step, the regression suite.
REST_SHARES = {"studies": 0.70, "profile": 0.10, "bench": 0.20}
#: The tests phase's share for the harness tests marked `gpu`, which run first.
MARKED_TESTS_SHARE = 0.4
#: A case still running after this long is stopped and recorded as such (a cold torch.compile of the network's train
#: step takes about a minute on a GPU host; nothing else comes close).
CASE_CAP_S = 240.0
QUICK_CASE_CAP_S = 120.0
#: Kept back from the phases at the end of the budget for the final export (the dashboard).
EXPORT_RESERVE_S = 10.0
#: The profile phase's cases: the headline train step on the GPU, Triton beside eager, bfloat16, the paper's batch.
PROFILE_CASES = (("triton", "bfloat16"), ("torch", "bfloat16"))
PROFILE_BATCH = 128
#: The roofline phase's layers: the conv and fc layers, where the FLOPs are.
ROOFLINE_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]

#: The rest phase's studies in the order it runs them, with their share of its studies part. Registered studies not
#: named here run last with weight 1; those of LEFT_OUT are not run (headline and roofline have their own phases;
#: speedup2012 measures baseline's CPU layers and more).
STUDY_WEIGHTS = (("speedup2012", 3.0), ("backends", 3.0), ("train_time", 1.0), ("energy", 2.0), ("precision", 2.0),
                 ("batch", 2.0), ("activations", 2.0), ("ingredients", 1.0), ("augmentation", 1.5),
                 ("multigpu", 1.0))
LEFT_OUT = ("baseline", "headline", "roofline")
#: --quick: a few layers per study (the heaviest conv, the largest linear, the whole network).
QUICK_EXTRA = {"layers": ["conv2", "fc6", NETWORK]}
QUICK_BENCH = "conv2 or fc6 or network"
BENCH_RUNS, QUICK_BENCH_RUNS = 3, 1
#: Why the headline phase's rows have no energy.
HEADLINE_ENERGY_NOTE = "not measured in the headline phase: the campaign's energy phase measures it in a run of its own"
FILES = ("perfkit.db", "measurements.csv", "HEADLINES.md", "campaign.json", "tests.log", "bench.json",
         "bench-baseline.json", "report.html")


@dataclass
class Phase:
    name: str
    status: str  # running, ran, partial, skipped, failed, done (by an earlier command)
    seconds: float = 0.0
    budget_s: float = 0.0
    note: str = ""
    detail: dict = field(default_factory=dict)
    command: int = 0  # which command of the folder's campaign.json ran it (0: the first)


@dataclass
class Campaign:
    out: Path
    devices: tuple[str, ...]
    gpu_name: str | None
    budget_s: float
    quick: bool
    full: bool
    started_at: float = field(default_factory=time.monotonic)
    phases: list[Phase] = field(default_factory=list)
    earlier: list[Phase] = field(default_factory=list)  # phases of earlier commands into the same folder
    commands: list[dict] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    env_id: str = ""
    case_cap_s: float = CASE_CAP_S
    _estimators: dict = field(default_factory=dict, repr=False)

    @property
    def store(self) -> Path:
        return self.out / "perfkit.db"

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def stop_at(self) -> float:
        """time.monotonic() at which a case in flight is stopped: the budget's end, less the export's reserve."""
        return self.started_at + max(self.budget_s - EXPORT_RESERVE_S, self.budget_s * 0.9)

    def left(self) -> float:
        return max(0.0, self.stop_at - time.monotonic())

    def slice_for(self, phase: str) -> float:
        """This phase's share of the budget left, in proportion to the phases still to come."""
        names = list(PHASE_SHARES)
        later = sum(PHASE_SHARES[n] for n in names[names.index(phase):])
        return self.left() * PHASE_SHARES[phase] / later

    def limits(self, energy: bool = False) -> dict:
        """RunnerConfig fields every case of the campaign runs under: its time cap, the budget's end, and (on a GPU
        the plan knows) the plan's estimate, so that a case that would not fit before its phase's deadline is left
        for the next command (perfkit.app.campaignplan)."""
        limits = {"case_cap_s": self.case_cap_s, "stop_at": self.stop_at}
        estimator = self.estimator(energy)
        if estimator is not None:
            limits["estimate_s"] = lambda case, timing: estimator.estimate(case, timing).estimate_s
        return limits

    def estimator(self, energy: bool = False):
        from perfkit.app.campaignplan import Estimator, gpu_key_for, gpu_spec, measured_case_seconds

        key = gpu_key_for(self.gpu_name)
        if key is None:
            return None
        if key not in self._estimators:
            spec = gpu_spec(key)
            self._estimators[key] = measured_case_seconds(self.store, spec), spec
        measured, spec = self._estimators[key]
        return Estimator(spec, energy=energy, measured=measured)

    def earlier_phase(self, name: str) -> Phase | None:
        done = [p for p in self.earlier if p.name == name and p.status in ("ran", "failed")]
        return done[-1] if done else None

    @property
    def ok(self) -> bool:
        return not any(p.status == "failed" for p in self.phases)

    # -- salvage ----------------------------------------------------------------------------------------------------
    def save(self) -> None:
        """Rewrite measurements.csv, HEADLINES.md and campaign.json from the store, each by an atomic rename (the
        store itself is current after every commit: see the module docstring)."""
        if self.store.exists():
            df = load_measurements(self.store)
            _atomic_write(self.out / "measurements.csv", df.to_csv(index=False))
            _atomic_write(self.out / "HEADLINES.md", headlines(self, df))
        _atomic_write(self.out / "campaign.json", json.dumps(self.document(), indent=1, default=str) + "\n")

    def after_case(self, row) -> None:
        self.save()

    def document(self) -> dict:
        return {"out": str(self.out), "devices": list(self.devices), "gpu": self.gpu_name,
                "budget_s": self.budget_s, "elapsed_s": round(self.elapsed(), 1), "quick": self.quick,
                "full": self.full, "case_cap_s": self.case_cap_s, "perfkit": perfkit.__version__,
                "commands": self.commands, "environment": self.environment,
                "phases": [asdict(p) for p in self.earlier + self.phases]}


def _atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it, so a reader (or a kill) sees the old file or
    the new one, never half of one. The temporary file goes beside the folder when that is on the same file system,
    so that the folder itself never holds more than its eight files."""
    parent = path.parent.parent
    where = parent if os.access(parent, os.W_OK) and parent.stat().st_dev == path.parent.stat().st_dev \
        else path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.parent.name}-{path.name}.", dir=where)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary file would be, not mkstemp's owner-only 0600
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "machine"


def default_out(gpu_name: str | None) -> Path:
    if gpu_name:
        return Path("results") / slug(gpu_name)
    from perfkit.measure.env import collect_environment

    return Path("results") / slug(f"cpu {collect_environment().get('cpu_model') or platform.machine()}")


def checkout_tests() -> Path | None:
    tests = Path(perfkit.__file__).resolve().parent.parent / "tests"
    return tests if (tests / "conftest.py").is_file() else None


def _read_earlier(out: Path) -> tuple[list[Phase], list[dict]]:
    """The phases and commands an earlier campaign into the same folder recorded (none when there is no readable
    campaign.json). A phase left "running" was cut by a kill: it counts as partial."""
    try:
        doc = json.loads((out / "campaign.json").read_text())
    except (OSError, ValueError):
        return [], []
    phases = []
    for p in doc.get("phases", []):
        phase = Phase(**{k: p[k] for k in ("name", "status", "seconds", "budget_s", "note", "detail", "command")
                         if k in p})
        if phase.status == "running":
            phase.status, phase.note = "partial", "cut short: the command was killed during this phase"
        phases.append(phase)
    return phases, list(doc.get("commands", []))


def run_campaign(device: str = "auto", out: str | Path | None = None, budget_minutes: float | None = None,
                 quick: bool = False, full: bool = False, show_progress: bool = True, log=sys.stderr) -> Campaign:
    from perfkit.measure.env import collect_environment, environment_id
    from perfkit.results.store import Store
    from perfkit.study import resolve_devices

    started = time.monotonic()
    devices = resolve_devices(device)
    gpu_name = None
    if any(d.startswith("cuda") for d in devices):
        import torch

        if torch.cuda.is_available():
            gpu_name = torch.cuda.get_device_name(0)
    budget = budget_minutes if budget_minutes is not None else (QUICK_BUDGET_MINUTES if quick else BUDGET_MINUTES)
    campaign = Campaign(Path(out) if out else default_out(gpu_name), devices, gpu_name, budget * 60.0, quick, full,
                        started_at=started, case_cap_s=QUICK_CASE_CAP_S if quick else CASE_CAP_S)
    campaign.out.mkdir(parents=True, exist_ok=True)
    campaign.earlier, campaign.commands = _read_earlier(campaign.out)
    command = len(campaign.commands)
    campaign.commands.append({"command": command, "argv": sys.argv[1:], "budget_s": campaign.budget_s,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    campaign.environment = collect_environment(probe_gpus=bool(gpu_name))
    campaign.env_id = environment_id(campaign.environment)
    Store.open(campaign.store, wal=False).close()  # rollback-journal mode from now on, for every opening
    print(f"perfkit campaign: {', '.join(devices)}{' (' + gpu_name + ')' if gpu_name else ''}, budget "
          f"{budget:g} min{', quick' if quick else ''}{', full grids' if full else ''} -> {campaign.out}"
          + (f" (command {command + 1}: resuming)" if command else ""), file=log, flush=True)
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        for phase in (_headline_phase, _tests_phase, _energy_phase, _roofline_phase, _rest_phase):
            name = phase.__name__.strip("_").removesuffix("_phase")
            running = Phase(name, "running", command=command)
            campaign.phases.append(running)
            campaign.save()
            try:
                result = phase(campaign, show_progress, log)
            except (KeyboardInterrupt, SystemExit):
                running.status, running.seconds = "partial", round(time.monotonic() - started, 1)
                running.note = "stopped by a signal"
                raise
            result.command = command
            campaign.phases[-1] = result
            print(f"perfkit campaign: {result.name} {result.status} in {result.seconds:.0f} s (slice "
                  f"{result.budget_s:.0f} s){': ' + result.note if result.note else ''}", file=log, flush=True)
            campaign.save()
        export = _export_phase(campaign, log)
        export.command = command
        campaign.phases.append(export)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        campaign.save()
    return campaign


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: children's groups are killed, the folder is saved


# -- phases -------------------------------------------------------------------------------------------------------------
def _study_phase(campaign: Campaign, phase: str, study_names, options, budget: float, show_progress, log,
                 config=None, weights=None, energy: bool = False) -> Phase:
    """Run studies one after another within `budget` seconds (each with a share in proportion to its weight), into
    the campaign's store, its exports rewritten after every case. A study run an earlier command finished is not run
    again."""
    from perfkit.results.store import Store
    from perfkit.studies import STUDIES
    from perfkit.study import run_study

    weights = weights or {}
    phase_end = time.monotonic() + budget
    detail, status, started = {}, "ran", time.monotonic()
    names = [n for n in study_names if n in STUDIES]
    for i, name in enumerate(names):
        with Store.open(campaign.store) as store:
            done = store.finished_run_id(name, options.as_args(name), campaign.env_id)
        if done:
            detail[name] = {"run_id": done, "note": "finished by an earlier command"}
            continue
        remaining_weight = sum(weights.get(n, 1.0) for n in names[i:])
        left = max(0.0, phase_end - time.monotonic())
        deadline = time.monotonic() + left * weights.get(name, 1.0) / remaining_weight
        study_started = time.monotonic()
        try:
            result = run_study(STUDIES[name], options, campaign.store, show_progress=show_progress, deadline=deadline,
                               config=config, after_case=campaign.after_case, limits=campaign.limits(energy))
            detail[name] = {"run_id": result.run_id, "rows_added": result.rows_added, "resumed": result.resumed,
                            "cases_not_run": result.cases_not_run, "seconds": round(time.monotonic() - study_started)}
            if result.cases_not_run:
                status = "partial"
        except Exception as exc:  # one study's failure does not stop the others
            detail[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            status = "failed"
            print(f"perfkit campaign: study {name} failed: {type(exc).__name__}: {exc}", file=log, flush=True)
    cut = [n for n, d in detail.items() if d.get("cases_not_run")]
    note = f"cut short by the budget: {', '.join(cut)} (rerun into the same folder to resume)" if cut else ""
    if names and all(d.get("note") == "finished by an earlier command" for d in detail.values()):
        status, note = "done", "finished by an earlier command"
    return Phase(phase, status, round(time.monotonic() - started, 1), round(budget, 1), note, detail)


def headline_options(campaign: Campaign, energy: bool = False):
    from perfkit.study import StudyOptions

    return StudyOptions(devices=campaign.devices, quick=campaign.quick, extra={"energy": True} if energy else {})


def _headline_phase(campaign: Campaign, show_progress, log) -> Phase:
    from perfkit.studies import STUDIES

    options = headline_options(campaign)
    config = STUDIES["headline"].runner_config(options, energy=False, energy_off_note=HEADLINE_ENERGY_NOTE)
    return _study_phase(campaign, "headline", ["headline"], options, campaign.slice_for("headline"), show_progress,
                        log, config=config)


def _energy_phase(campaign: Campaign, show_progress, log) -> Phase:
    from perfkit.studies import STUDIES

    options = headline_options(campaign, energy=True)
    config = STUDIES["headline"].runner_config(options, energy=True)
    return _study_phase(campaign, "energy", ["headline"], options, campaign.slice_for("energy"), show_progress, log,
                        config=config, energy=True)


def _roofline_phase(campaign: Campaign, show_progress, log) -> Phase:
    from perfkit.study import StudyOptions

    layers = QUICK_EXTRA["layers"] if campaign.quick else ROOFLINE_LAYERS
    options = StudyOptions(devices=campaign.devices, quick=not campaign.full, extra={"layers": list(layers)})
    return _study_phase(campaign, "roofline", ["roofline"], options, campaign.slice_for("roofline"), show_progress,
                        log)


def _rest_phase(campaign: Campaign, show_progress, log) -> Phase:
    from perfkit.studies import STUDIES
    from perfkit.study import StudyOptions

    budget = campaign.slice_for("rest")
    started = time.monotonic()
    order = [name for name, _ in STUDY_WEIGHTS if name in STUDIES]
    order += [name for name in STUDIES if name not in dict(STUDY_WEIGHTS) and name not in LEFT_OUT]
    options = StudyOptions(devices=campaign.devices, quick=not campaign.full,
                           extra=dict(QUICK_EXTRA) if campaign.quick else {})
    studies_budget = budget * REST_SHARES["studies"]
    parts = [_study_phase(campaign, "studies", order, options, studies_budget, show_progress, log,
                          weights=dict(STUDY_WEIGHTS))]
    left = max(0.0, budget - (time.monotonic() - started))
    parts.append(_profile_part(campaign, left * REST_SHARES["profile"] / (REST_SHARES["profile"] + REST_SHARES["bench"]),
                               show_progress))
    parts.append(_bench_part(campaign, max(0.0, budget - (time.monotonic() - started))))
    statuses = [p.status for p in parts]
    status = "failed" if "failed" in statuses else "partial" if "partial" in statuses else \
        "done" if all(s in ("done", "skipped") for s in statuses) and "done" in statuses else "ran"
    note = "; ".join(f"{p.name}: {p.note}" for p in parts if p.note)
    return Phase("rest", status, round(time.monotonic() - started, 1), round(budget, 1), note,
                 {p.name: {"status": p.status, "seconds": p.seconds, "budget_s": p.budget_s, **p.detail}
                  for p in parts})


def _tests_phase(campaign: Campaign, show_progress, log) -> Phase:
    budget = campaign.slice_for("tests")
    if not campaign.gpu_name:
        return Phase("tests", "skipped", 0.0, round(budget, 1),
                     "no GPU: the GPU tests need CUDA (the CPU suite is `pytest`)")
    earlier = campaign.earlier_phase("tests")
    if earlier is not None:
        return Phase("tests", "done", 0.0, round(budget, 1),
                     f"{earlier.status} in command {earlier.command + 1}: see tests.log", earlier.detail)
    tests = checkout_tests()
    if tests is None:
        return Phase("tests", "skipped", 0.0, round(budget, 1),
                     "the tests come with perfkit's source checkout, not the wheel")
    log_path = campaign.out / "tests.log"
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
    started = time.monotonic()
    marked = _subprocess_part("gpu-marked tests", base + ["-m", "gpu", str(tests), "--ignore", str(tests / "dashboards"),
                                                          "--ignore", str(tests / "benchmarks")],
                              budget * MARKED_TESTS_SHARE, log_path, cwd=tests.parent)
    kernels = _subprocess_part("kernel tests", base + [str(tests / "kernels"), str(tests / "test_triton_backend.py")],
                               max(budget - (time.monotonic() - started), 1.0), log_path, cwd=tests.parent)
    results = _pytest_counts(log_path.read_text())
    parts = (marked, kernels)
    status = "failed" if any(p.status == "failed" for p in parts) else \
        "partial" if any(p.status == "partial" for p in parts) else "ran"
    return Phase("tests", status, round(time.monotonic() - started, 1), round(budget, 1),
                 "; ".join(f"{p.name}: {p.note}" for p in parts if p.note), {"pytest": results})


def _subprocess_part(name: str, cmd: list[str], budget_s: float, log_path: Path, cwd: Path | None = None) -> Phase:
    """`cmd` in its own process group (perfkit.support.procgroup), its output appended to `log_path`, the whole group killed
    at the end of `budget_s`."""
    from perfkit.support.procgroup import run_in_group

    with log_path.open("a") as logf:
        logf.write(f"$ {' '.join(cmd)}\n")
        logf.flush()
        result = run_in_group(cmd, timeout_s=max(budget_s, 1.0), cwd=cwd, stdout=logf, stderr=subprocess.STDOUT)
    if result.timed_out:
        return Phase(name, "partial", round(result.seconds, 1), round(budget_s, 1),
                     f"stopped at the end of its {budget_s:.0f} s slice (its process group killed)")
    ok = result.returncode == 0
    return Phase(name, "ran" if ok else "failed", round(result.seconds, 1), round(budget_s, 1),
                 "" if ok else f"exit status {result.returncode}: see {log_path.name}")


def _pytest_counts(text: str) -> list[str]:
    """pytest's closing count lines ('12 passed, 3 skipped in 4.5s')."""
    return re.findall(r"^=*\s*(\d+ (?:passed|failed|error|skipped|deselected).*?)\s*=*$", text, flags=re.MULTILINE)


def _profile_part(campaign: Campaign, budget: float, show_progress) -> Phase:
    """The headline train step under torch.profiler (perfkit.app.profile): launches per step, GPU idle share and the
    breakdown by kernel kind and layer, into the store (no trace file: the folder's file set is fixed)."""
    from perfkit.cases import Case
    from perfkit.measure.env import git_commit, machine_label
    from perfkit.app.profile import profile_cases, profile_runner_config
    from perfkit.runner import Runner
    from perfkit.results.store import Store

    gpus = [d for d in campaign.devices if d.startswith("cuda")]
    if not campaign.gpu_name or not gpus:
        return Phase("profile", "skipped", 0.0, round(budget, 1),
                     "no GPU: the campaign profiles the GPU's headline train step")
    started = time.monotonic()
    cases = [Case(layer=NETWORK, backend=backend, device=gpus[0], dtype=dtype, batch=PROFILE_BATCH,
                  pass_name="train_step") for backend, dtype in PROFILE_CASES]
    args = {"study": "profile", "cases": [c.key for c in cases]}
    try:
        with Store.open(campaign.store) as store:
            if store.finished_run_id("profile", args, campaign.env_id):
                return Phase("profile", "done", 0.0, round(budget, 1), "finished by an earlier command")
            store.add_environment(campaign.environment, campaign.env_id, machine_label(campaign.environment))
            run_id, _ = store.start_or_resume_run("profile", args, campaign.env_id, git_commit(), perfkit.__version__,
                                                  len(cases))
            from dataclasses import replace

            config = replace(profile_runner_config(), **campaign.limits())
            runner = Runner(store, run_id, "profile", campaign.environment, campaign.env_id, config,
                            show_progress=False, after_case=campaign.after_case)
            records = profile_cases(runner, cases, campaign.store, show_progress=show_progress, keep_traces=False,
                                    deadline=started + budget)
            if len(records) == len(cases):
                store.finish_run(run_id)
    except Exception as exc:  # the campaign goes on to the bench part and the export
        return Phase("profile", "failed", round(time.monotonic() - started, 1), round(budget, 1),
                     f"{type(exc).__name__}: {exc}"[:500])
    detail = {r["case_key"]: {"launches_per_step": r.get("launches_per_step"), "gpu_idle_share": r.get("gpu_idle_share"),
                              "profiled_over_timed": r.get("profiled_over_timed"), "note": r.get("note")}
              for r in records}
    status = "ran" if len(records) == len(cases) else "partial"
    return Phase("profile", status, round(time.monotonic() - started, 1), round(budget, 1),
                 "" if status == "ran" else "the budget ended before every case was profiled", detail)


def _bench_part(campaign: Campaign, budget: float) -> Phase:
    if not campaign.gpu_name:
        return Phase("bench", "skipped", 0.0, round(budget, 1), "no GPU: the regression suite's GPU half needs CUDA")
    if checkout_tests() is None:
        return Phase("bench", "skipped", 0.0, round(budget, 1),
                     "the benchmark suite comes with perfkit's source checkout")
    earlier = campaign.earlier_phase("bench")
    if earlier is not None or any(p.name == "rest" and p.detail.get("bench", {}).get("status") == "ran"
                                  for p in campaign.earlier):
        return Phase("bench", "done", 0.0, round(budget, 1), "ran in an earlier command: see bench.json")
    cmd = [sys.executable, "-m", "perfkit", "bench", "baseline", "--device", "cuda", "--no-save",
           "--runs", str(QUICK_BENCH_RUNS if campaign.quick else BENCH_RUNS),
           "--json", str(campaign.out / "bench.json"), "--out", str(campaign.out / "bench-baseline.json")]
    if campaign.quick:
        cmd += ["--quick", "-k", QUICK_BENCH]
    return _subprocess_part("bench", cmd, budget, campaign.out / "tests.log")


def _export_phase(campaign: Campaign, log) -> Phase:
    started = time.monotonic()
    if not campaign.store.exists():
        return Phase("export", "skipped", 0.0, campaign.left(), "no store: no study ran")
    campaign.save()
    note = ""
    try:
        from perfkit.dashboards import DashboardError, build_report

        try:
            build_report([campaign.store], campaign.out / "report.html")
        except DashboardError as exc:
            note = f"no dashboard here ({exc}); build it elsewhere: perfkit dashboard --store {campaign.store}"
    except ImportError as exc:
        note = f"no dashboard here ({exc}); build it elsewhere: perfkit dashboard --store {campaign.store}"
    return Phase("export", "ran", round(time.monotonic() - started, 1), round(campaign.left(), 1), note,
                 {"files": sorted(p.name for p in campaign.out.iterdir())})


# -- headlines ----------------------------------------------------------------------------------------------------------
#: HEADLINES.md's sections: (heading, the study whose stored summary it shows, which of its runs). Each figure is
#: computed once, by its study; the campaign only gathers the summaries.
HEADLINE_SECTIONS = (
    ("Headline: Triton and torch.compile against torch eager, the GPU against the CPU", "headline", "timed"),
    ("Energy: J/image of the headline cases", "headline", "energy"),
    ("Fraction of the roofline per layer", "roofline", None),
    ("The 2012 comparison per layer: GPU against CPU", "speedup2012", None),
    ("Days to train alexnet2012 (90 epochs of 1.2M images)", "train_time", None),
)


def _is_energy_run(text: str) -> bool:
    return text.splitlines()[0].startswith("headline energy") if text else False


def headlines(campaign: Campaign, df=None) -> str:
    """The campaign's headlines: the stored summary of each study that computes one (HEADLINE_SECTIONS), the latest
    of each, then every other study's summary. Nothing is recomputed here."""
    df = load_measurements(campaign.store) if df is None else df
    ok = df[(df.status == "ok") & df.time_median_s.notna()] if len(df) else df
    parts = [f"# perfkit campaign: {campaign.gpu_name or 'no GPU'}",
             f"Devices {', '.join(campaign.devices)}; budget {campaign.budget_s / 60:g} min, "
             f"{'quick' if campaign.quick else 'full grids' if campaign.full else 'quick study grids'}; "
             f"{len(df)} rows ({len(ok)} speed results) in perfkit.db. Each section is the summary its study stored, "
             "computed from that run's measured rows; FLOPs count a multiply-add as 2."]
    summaries = load_summaries(campaign.store)
    if len(summaries):
        summaries = summaries.sort_values("created_at")
    shown = set()
    for heading, study, which in HEADLINE_SECTIONS:
        rows = summaries[summaries.study == study] if len(summaries) else summaries
        if which is not None and len(rows):
            rows = rows[rows.text.map(_is_energy_run) == (which == "energy")]
        if len(rows):
            row = rows.iloc[-1]
            shown.add(row.run_id)
            parts.append(f"## {heading}\n\n```text\n{row.text}\n```")
        else:
            parts.append(f"## {heading}\n\nNot in this folder's store yet: the campaign has not run the {study} study "
                         "here (see campaign.json for what ran and what the budget left out).")
    others = summaries[~summaries.run_id.isin(shown)] if len(summaries) else summaries
    if len(others):
        parts.append("## Other studies")
        for row in others.itertuples():
            parts.append(f"### {row.study}\n\n```text\n{row.text}\n```")
    note = _dashboard_note(campaign)
    if note:
        parts.append(note)
    return "\n\n".join(parts) + "\n"


def _dashboard_note(campaign: Campaign) -> str:
    export = [p for p in campaign.phases if p.name == "export"]
    return export[-1].note if export and export[-1].note else ""
