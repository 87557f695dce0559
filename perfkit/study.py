"""Running a study: resolve the devices, open (or resume) a run in the store, measure its cases, store its summary.

A study is declared as a `Study` (each module of `perfkit.studies` ends with `STUDY = Study(...)`, and
`perfkit.studies.STUDIES` maps names to them): its `name`, `description`, `cases(options) -> list[Case]` and
`summarize(df, options) -> Summary` (df: this run's measurements), and the optional hooks, each with its default:

- `timing(options) -> TimingPolicy` (default None: QUICK_TIMING with --quick, FULL_TIMING otherwise);
- `quick_energy=True` keeps the sustained energy window in its --quick form (the energy study does; default False);
- `measure_case(case, runner, options) -> perfkit.runner.CaseResult | None` measures the cases the runner's
  check-and-time path does not cover (the activations study's training runs; None hands a case to the runner);
- `run_cases(runner, cases) -> rows` measures all its cases itself into the runner's store and run instead of
  `runner.run(cases)` (batch sweeps up to the first OOM; multigpu: torchrun workers measure its cases and their rank 0
  stores the rows);
- `cli_options`: the study's own command-line options (`StudyOption`), which `perfkit study` (and `perfkit run`, where
  an option says so) adds for it; a value given lands in `StudyOptions.extra`.

Callers never probe: `study.timing_for(options)`, `study.energy_for(options)`, `study.runner_config(options)`,
`study.measure_hook(options)` and `study.run(runner, cases)` apply the defaults.
perfkit itself never imports the studies: the CLI hands a `Study` to `run_study`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import perfkit
from perfkit.measure.env import collect_environment, environment_id, git_commit, machine_label
from perfkit.runner import Runner, RunnerConfig
from perfkit.specs import DEFAULT_VARIANT
from perfkit.results.store import Store, load_measurements
from perfkit.measure.timer import TimingPolicy

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


class StudyOptionError(ValueError):
    """A study option's value is unusable (its message says why); `perfkit study` prints it and exits 2."""


@dataclass(frozen=True)
class StudyOption:
    """A command-line option a study declares. perfkit.app.cli adds it to the commands in `commands` (`perfkit study`
    by default), with "<study> only: " before its help, and rejects it (exit 2) for any other study. A value given
    (`given`: not None, "" or `default`) lands in `StudyOptions.extra[extra_key]`, through `to_extra` when there is
    one (it validates and converts the parsed value, raising StudyOptionError with the reason)."""

    flag: str  # "--cifar10"
    help: str
    metavar: str | None = None
    type: Callable[[str], Any] | None = None  # argparse's type
    default: Any = None  # argparse's default: this value is "not given" and lands nothing in extra
    action: str | None = None  # argparse's action, e.g. "store_true"
    key: str | None = None  # the key in StudyOptions.extra (default: the flag's name, "--cifar10" -> "cifar10")
    to_extra: Callable[[Any], Any] | None = None
    commands: tuple[str, ...] = ("study",)

    def __post_init__(self):
        if not self.flag.startswith("--") or len(self.flag) < 3:
            raise ValueError(f"a study option's flag is a long option ('--name'), not {self.flag!r}")

    @property
    def dest(self) -> str:
        """The argparse destination (the attribute of the parsed arguments)."""
        return self.flag[2:].replace("-", "_")

    @property
    def extra_key(self) -> str:
        return self.key or self.dest

    def argparse_kwargs(self) -> dict:
        kwargs = {"dest": self.dest, "default": self.default, "help": self.help}
        if self.action is not None:
            kwargs["action"] = self.action
        if self.type is not None:
            kwargs["type"] = self.type
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        return kwargs

    def given(self, value) -> bool:
        """Whether the command line set it: a value other than None, "" (`--cifar10 ''` always counted as not given)
        and `default`."""
        return value is not None and value != "" and value != self.default

    def extra_value(self, value):
        """What lands in StudyOptions.extra for a given value (StudyOptionError when it is unusable)."""
        return self.to_extra(value) if self.to_extra is not None else value


@dataclass(frozen=True)
class Study:
    """A study's declaration: what `run_study`, the CLI, the campaign and its plan need to know about it. The hooks
    are optional (see the module docstring); use the methods rather than reading them, so the defaults live here."""

    name: str
    description: str
    cases: Callable[[StudyOptions], list]
    summarize: Callable[..., Summary]
    timing: Callable[[StudyOptions], TimingPolicy] | None = None
    quick_energy: bool = QUICK_ENERGY
    measure_case: Callable | None = None
    run_cases: Callable | None = None
    cli_options: tuple[StudyOption, ...] = ()

    def __post_init__(self):
        if not self.name:
            raise ValueError("a study needs a name")
        for hook in ("cases", "summarize", "timing", "measure_case", "run_cases"):
            value = getattr(self, hook)
            if value is not None and not callable(value):
                raise TypeError(f"study {self.name}: {hook} must be callable, not {type(value).__name__}")
        object.__setattr__(self, "cli_options", tuple(self.cli_options))
        flags = [o.flag for o in self.cli_options]
        if len(flags) != len(set(flags)):
            raise ValueError(f"study {self.name} declares an option twice: {', '.join(flags)}")

    # the names of the module attributes a study was once found by (perfkit.app.campaign and older callers)
    @property
    def NAME(self) -> str:  # noqa: N802
        return self.name

    @property
    def DESCRIPTION(self) -> str:  # noqa: N802
        return self.description

    def timing_for(self, options: StudyOptions) -> TimingPolicy:
        """The study's timing policy, else QUICK_TIMING with --quick and FULL_TIMING otherwise."""
        if self.timing is not None:
            return self.timing(options)
        return QUICK_TIMING if options.quick else FULL_TIMING

    def energy_for(self, options: StudyOptions) -> bool:
        """Whether its cases get the sustained energy window: always in the full form; in the --quick form only when
        the study insists (`quick_energy`)."""
        return self.quick_energy if options.quick else True

    def runner_config(self, options: StudyOptions, **fields) -> RunnerConfig:
        """The RunnerConfig `run_study` measures the study with, `fields` laid over it (e.g. energy=False)."""
        return RunnerConfig(**{"timing": self.timing_for(options), "energy": self.energy_for(options), **fields})

    def measure_hook(self, options: StudyOptions):
        """The runner's `measure_hook(case, runner)` for this study and options, or None (the runner's path)."""
        if self.measure_case is None:
            return None
        measure_case = self.measure_case

        def hook(case, runner):
            return measure_case(case, runner, options)

        return hook

    def run(self, runner, cases) -> list:
        """Measure `cases` with `runner`: the study's own `run_cases`, else `runner.run(cases)`."""
        return self.run_cases(runner, cases) if self.run_cases is not None else runner.run(cases)

    def cli_option(self, flag: str) -> StudyOption | None:
        return next((o for o in self.cli_options if o.flag == flag), None)


#: The module attributes a study was found by before `Study`: an object still using them must declare a Study.
def as_study(study) -> Study:
    """The Study of a Study or of a study module (its `STUDY`). Anything else is refused: a study declares its hooks
    (perfkit.study.Study), it is never probed for them; a narrowed copy of one is `dataclasses.replace(module.STUDY,
    cases=...)`."""
    if isinstance(study, Study):
        return study
    declared = getattr(study, "STUDY", None)
    if isinstance(declared, Study):
        return declared
    raise TypeError(f"{study!r} is not a study: declare a perfkit.study.Study (a study module ends with STUDY = ...)")


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
    return its summary. `study`: a Study (or what `as_study` takes). `config`: the RunnerConfig to measure with
    (default: `study.runner_config(options)`). With a `deadline` (time.monotonic()), cases not started by then are
    left for a rerun: the run stays unfinished and the summary says how many were left out. `after_case(row)` is
    called after each stored row (perfkit.runner.Runner). `limits`: RunnerConfig fields laid over the config (the
    campaign's per-case time cap, `case_cap_s`, and the end of its budget, `stop_at`)."""
    study = as_study(study)
    env = collect_environment(probe_gpus=any(d.startswith("cuda") for d in options.devices))
    env_id = environment_id(env)
    cases = study.cases(options)
    if config is None:
        config = study.runner_config(options)
    if deadline is not None:
        config = replace(config, deadline=deadline)
    if limits:
        config = replace(config, **limits)
    with Store.open(store_path) as store:
        store.add_environment(env, env_id, machine_label(env))
        run_id, resumed = store.start_or_resume_run(study.name, options.as_args(study.name), env_id, git_commit(),
                                                    perfkit.__version__, cases_planned=len(cases), resume=resume)
        runner = Runner(store, run_id, study.name, env, env_id, config, show_progress=show_progress,
                        measure_hook=study.measure_hook(options), after_case=after_case)
        rows = study.run(runner, cases)
        df = load_measurements(store.path)
        df = df[df.run_id == run_id].reset_index(drop=True)
        summary = study.summarize(df, options)
        if runner.cases_not_run:
            summary.text += (f"\n\nPartial: {runner.cases_not_run} of {len(cases)} cases were not run within the time "
                             "budget; rerunning the same command resumes this run.")
            summary.data["cases_not_run"] = runner.cases_not_run
        store.add_summary(run_id, study.name, summary.text, summary.data)
        if not runner.cases_not_run:
            store.finish_run(run_id)
        return StudyResult(run_id, resumed, len(rows), summary, store.path, runner.cases_not_run)
