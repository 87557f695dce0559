"""Running a study: resolve the devices, open (or resume) a run in the store, measure its cases, store its summary.

A study is a module of `perfkit.studies` with `NAME`, `DESCRIPTION`, `cases(options) -> list[Case]` and
`summarize(df, options) -> Summary` (df: this run's measurements). It may define `timing(options) -> TimingPolicy`,
`QUICK_ENERGY = True` to keep the sustained energy window in its --quick form (the energy study does), and
`measure_case(case, runner, options) -> perfkit.runner.CaseResult | None` to measure the cases the runner's
check-and-time path does not cover (the activations study's training runs; None hands a case to the runner), or
`run_cases(runner, cases) -> rows` to measure all its cases itself into the runner's store and run instead of
`runner.run(cases)` (multigpu does: torchrun workers measure its cases and their rank 0 stores the rows).
perfkit itself never imports the studies: the CLI hands a study module to `run_study`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import perfkit
from perfkit.env import collect_environment, environment_id, git_commit, machine_label
from perfkit.runner import Runner, RunnerConfig
from perfkit.specs import DEFAULT_VARIANT
from perfkit.store import Store, load_measurements
from perfkit.timer import TimingPolicy

DEVICE_CHOICES = ("auto", "cpu", "cuda")

QUICK_TIMING = TimingPolicy(warmup=1, min_reps=3, min_time_s=0.2)
FULL_TIMING = TimingPolicy(warmup=2, min_reps=5, min_time_s=1.0)
#: `--quick` skips the sustained energy window (5 s per case on a GPU, 1 s per case on a CPU with readable RAPL): the
#: quick CPU study would otherwise take minutes longer. Its rows carry energy and power as None with that reason
#: (perfkit.runner.QUICK_ENERGY_NOTE); timings, memory and the roofline are measured as in a full run.
QUICK_ENERGY = False


@dataclass(frozen=True)
class StudyOptions:
    """What a study is asked to do. `devices` are resolved names ("cpu", "cuda:0")."""

    devices: tuple[str, ...] = ("cpu",)
    quick: bool = False
    batch: int | None = None  # override the study's batch size
    variant: str = DEFAULT_VARIANT
    threads: int | None = None  # CPU threads (None: torch's default, all cores)
    extra: dict = field(default_factory=dict)  # study-specific arguments

    def as_args(self, study: str) -> dict:
        """The arguments that identify a run (resuming needs the same ones)."""
        return {"study": study, "devices": list(self.devices), "quick": self.quick, "batch": self.batch,
                "variant": self.variant, "threads": self.threads, **self.extra}


@dataclass
class Summary:
    """What a study concludes: text for people, data for dashboards."""

    text: str
    data: dict = field(default_factory=dict)


@dataclass
class StudyResult:
    run_id: str
    resumed: bool
    rows_added: int
    summary: Summary
    store_path: Path
    cases_not_run: int = 0  # left out at the deadline; the run stays unfinished


def resolve_devices(device: str) -> tuple[str, ...]:
    """"auto": the CPU, and the first GPU when torch sees one; "cpu"; "cuda" or "cuda:N" (kept even without a GPU, so
    its cases are recorded as skipped with the reason). Only "auto" and "cuda" look for a GPU."""
    if device == "cpu":
        return ("cpu",)
    if device == "auto":
        import torch

        return ("cpu", "cuda:0") if torch.cuda.is_available() else ("cpu",)
    if device == "cuda":
        return ("cuda:0",)
    if device.startswith("cuda:") and device[5:].isdigit():
        return (device,)
    raise ValueError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")


def absent_device_reason(device: str) -> str | None:
    """Why a device asked for by name ("cuda", "cuda:N") is not usable here, or None when it is (and for "auto" and
    "cpu", which always are). Only an explicit GPU is checked: `--device auto` plans GPU cases that are stored as
    skipped on a machine without one, which is what a hardware study of any machine wants."""
    if not device.startswith("cuda"):
        return None
    import torch

    index = int(device[5:]) if device.startswith("cuda:") else 0
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return (f"this torch build ({torch.__version__}) has no CUDA support; install a CUDA build of torch (see "
                "pytorch.org) to measure a GPU")
    if not torch.cuda.is_available():
        driver = Path("/proc/driver/nvidia/version")
        if not driver.exists():
            return (f"no NVIDIA driver is loaded ({driver} is missing), so torch (CUDA {torch.version.cuda}) sees no "
                    "GPU")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return (f"torch (CUDA {torch.version.cuda}) finds no usable GPU although a driver is loaded"
                + (f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "")
                + "; `nvidia-smi` shows what the driver sees")
    count = torch.cuda.device_count()
    if index >= count:
        return f"{device} is out of range: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None


def run_study(study, options: StudyOptions, store_path, show_progress: bool = True, resume: bool = True,
              config: RunnerConfig | None = None, deadline: float | None = None,
              after_case=None, limits: dict | None = None) -> StudyResult:
    """Measure a study's cases into the store (resuming its unfinished run with the same arguments), then store and
    return its summary. With a `deadline` (time.monotonic()), cases not started by then are left for a rerun: the run
    stays unfinished and the summary says how many were left out. `after_case(row)` is called after each stored row
    (perfkit.runner.Runner). `limits`: RunnerConfig fields laid over the study's own config (the campaign's per-case
    time cap, `case_cap_s`, and the end of its budget, `stop_at`)."""
    env = collect_environment(probe_gpus=any(d.startswith("cuda") for d in options.devices))
    env_id = environment_id(env)
    cases = study.cases(options)
    if config is None:
        timing = study.timing(options) if hasattr(study, "timing") else (QUICK_TIMING if options.quick else
                                                                           FULL_TIMING)
        energy = getattr(study, "QUICK_ENERGY", QUICK_ENERGY) if options.quick else True  # a study may insist
        config = RunnerConfig(timing=timing, energy=energy)
    if deadline is not None:
        config = replace(config, deadline=deadline)
    if limits:
        config = replace(config, **limits)
    with Store.open(store_path) as store:
        store.add_environment(env, env_id, machine_label(env))
        run_id, resumed = store.start_or_resume_run(study.NAME, options.as_args(study.NAME), env_id, git_commit(),
                                                    perfkit.__version__, cases_planned=len(cases), resume=resume)

        def hook(case, runner):
            return study.measure_case(case, runner, options)

        runner = Runner(store, run_id, study.NAME, env, env_id, config, show_progress=show_progress,
                        measure_hook=hook if hasattr(study, "measure_case") else None, after_case=after_case)
        run_cases = getattr(study, "run_cases", None)
        rows = run_cases(runner, cases) if run_cases is not None else runner.run(cases)
        df = load_measurements(store.path)
        df = df[df.run_id == run_id].reset_index(drop=True)
        summary = study.summarize(df, options)
        if runner.cases_not_run:
            summary.text += (f"\n\nPartial: {runner.cases_not_run} of {len(cases)} cases were not run within the time "
                             "budget; rerunning the same command resumes this run.")
            summary.data["cases_not_run"] = runner.cases_not_run
        store.add_summary(run_id, study.NAME, summary.text, summary.data)
        if not runner.cases_not_run:
            store.finish_run(run_id)
        return StudyResult(run_id, resumed, len(rows), summary, store.path, runner.cases_not_run)
