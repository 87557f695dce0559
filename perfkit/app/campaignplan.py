"""`perfkit campaign --plan`: what a campaign would run on a GPU, in what order, and how long each part should take.

Runs nothing and needs no GPU. For each phase (perfkit.app.campaign) it lists the cases with an estimate of each, which of
them fit the phase's slice of the budget and which are left for a longer budget, and the Triton binaries the phase
would compile. The campaign itself uses the same estimates: a case whose estimate does not fit before its phase's
deadline is left for the next command (Runner's `estimate_s`), so the plan and the run agree on what a budget buys.

Estimates, per case (every constant below is an assumption, named as such in the output):
- the step time from the cost model (perfkit.specs) against the GPU's published peaks (perfkit.app.published): FLOPs at
  ACHIEVED_FLOPS_SHARE of the dtype's peak plus minimum bytes at ACHIEVED_BANDWIDTH_SHARE of its memory bandwidth,
  plus LAUNCH_S per layer and pass;
- the repetitions the timing policy asks for, each with the L2 flush; the untimed call before the memory window; the
  energy window where the phase measures energy;
- the float64 correctness check on the host CPU (HOST_FLOAT64_FLOPS_PER_S);
- torch.compile's compile time per shape (COMPILE_S), the Triton binaries' compile time spread over the host cores;
- CASE_OVERHEAD_S for building the module, the exports and the store.
Where a store holds a finished row of the same case on the same GPU model, its measured wall time replaces the model
(basis "measured").
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from perfkit.cases import Case
from perfkit.workload import STRICT_DTYPES

#: Published peaks of the GPUs a plan can be made for: dense tensor-core rates for tf32 and bf16, CUDA-core FP32 for
#: IEEE float32, and the memory bandwidth. H100 and H200 come from perfkit.app.published (REFERENCE.md); the A100 SXM4
#: 80 GB figures are NVIDIA's A100 datasheet values.
A100_DATASHEET = "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB)"


@dataclass(frozen=True)
class GpuSpec:
    key: str
    name: str
    arch: str
    flops_per_s: dict  # dtype -> FLOP/s
    bytes_per_s: float
    source: str


def gpu_spec(key: str) -> GpuSpec:
    from perfkit.app.published import VENDOR, figure

    if key == "a100":
        return GpuSpec("a100", "NVIDIA A100 SXM4 80GB", "sm_80",
                       {"float32": 19.5e12, "tf32": 156e12, "bfloat16": 312e12, "float16": 312e12}, 2039e9,
                       A100_DATASHEET)
    if key not in ("h100", "h200"):
        raise ValueError(f"unknown GPU {key!r}; expected h100, h200 or a100")
    prefix = f"{key}_sxm"
    bf16 = figure(f"{prefix}_bf16_flops_per_s").value
    return GpuSpec(key, f"NVIDIA {key.upper()} SXM", "sm_90",
                   {"float32": figure(f"{prefix}_fp32_flops_per_s").value,
                    "tf32": figure(f"{prefix}_tf32_flops_per_s").value, "bfloat16": bf16, "float16": bf16},
                   figure(f"{prefix}_bytes_per_s").value, VENDOR)


def gpu_key_for(name: str | None) -> str | None:
    """The plan's GPU key for a device name ("NVIDIA H200" -> "h200"), or None."""
    low = (name or "").lower()
    return next((key for key in ("h200", "h100", "a100") if key in low), None)


# -- assumptions ---------------------------------------------------------------------------------------------------------
ACHIEVED_FLOPS_SHARE = 0.4  # of the dtype's peak, for AlexNet's GEMMs at batch 128
ACHIEVED_BANDWIDTH_SHARE = 0.6  # of the memory bandwidth, for the elementwise layers
LAUNCH_S = 8e-6  # per layer per pass direction: launch latency the GPU cannot hide at these sizes
HOST_FLOAT64_FLOPS_PER_S = 2e11  # the float64 reference on a GPU host's CPU (16 cores, MKL)
HOST_FLOAT32_FLOPS_PER_S = 6e11  # the CPU cases on the same host
HOST_CORES = 16
COMPILE_S = {"forward": 25.0, "backward": 45.0, "train_step": 50.0}  # torch.compile per new shape, cold cache
TRITON_BINARY_S = 2.0  # one Triton binary, on one host core
CASE_OVERHEAD_S = 1.5  # build, transfers, empty_cache, store write, the exports
NVML_WINDOW_S = 5.0  # the sustained energy window on a GPU (perfkit.measure.monitors)
TESTS_S = {"gpu-marked tests": 45.0, "kernel tests": 120.0}
BENCH_S = 150.0
PROFILE_CASE_S = 20.0
OWN_MEASUREMENT_S = 30.0  # a case a study measures itself (the activations study's training runs)
L2_FLUSH_BYTES = 256 * 2**20
ASSUMPTIONS = (f"achieved {ACHIEVED_FLOPS_SHARE:.0%} of the dtype's peak FLOP/s and {ACHIEVED_BANDWIDTH_SHARE:.0%} of "
               f"the memory bandwidth; {LAUNCH_S * 1e6:g} us per layer launch; host CPU {HOST_FLOAT64_FLOPS_PER_S / 1e9:g} "
               f"GFLOP/s float64, {HOST_FLOAT32_FLOPS_PER_S / 1e9:g} GFLOP/s float32, {HOST_CORES} cores; "
               f"torch.compile {COMPILE_S['forward']:g} s (forward) / {COMPILE_S['train_step']:g} s (train step) per "
               f"shape; {TRITON_BINARY_S:g} s per Triton binary per core; {CASE_OVERHEAD_S:g} s per case; "
               f"{OWN_MEASUREMENT_S:g} s per case a study measures itself")


@dataclass
class PlannedCase:
    case: Case
    estimate_s: float
    basis: str  # "model", "measured" (a store's row) or "assumed" (a study's own measurement)
    fits: bool = True
    study: str = ""


@dataclass
class PlannedPhase:
    name: str
    slice_s: float
    cases: list[PlannedCase] = field(default_factory=list)
    fixed_s: float = 0.0  # work that is not a case: a pytest run, the profile, the bench suite
    fixed_note: str = ""
    compile_s: float = 0.0  # precompiling the phase's Triton binaries
    binaries: list[str] | None = None
    binaries_note: str = ""

    @property
    def estimate_s(self) -> float:
        return self.fixed_s + self.compile_s + sum(c.estimate_s for c in self.cases if c.fits)

    @property
    def deferred(self) -> list[PlannedCase]:
        return [c for c in self.cases if not c.fits]


@dataclass
class Plan:
    gpu: GpuSpec
    budget_s: float
    phases: list[PlannedPhase]

    @property
    def estimate_s(self) -> float:
        return sum(p.estimate_s for p in self.phases)


class Estimator:
    """Estimated wall seconds of one case on `gpu` (see the module docstring); `measured` maps case keys to the
    wall seconds a store recorded for them on the same GPU model."""

    def __init__(self, gpu: GpuSpec, energy: bool = False, measured: dict | None = None, check_batch: int = 16):
        self.gpu = gpu
        self.energy = energy
        self.measured = measured or {}
        self.check_batch = check_batch
        self._networks = {}

    def network(self, case: Case):
        from perfkit.specs import build_network

        key = (case.variant, case.activation)
        if key not in self._networks:
            self._networks[key] = build_network(case.variant, case.activation)
        return self._networks[key]

    def step_s(self, case: Case, batch: int | None = None, on_cpu: bool = False) -> float:
        from perfkit.runner import case_cost, case_layers

        network = self.network(case)
        layers = case_layers(network, case)
        cost = case_cost(network, replace(case, batch=batch or case.batch), layers)
        if on_cpu:
            rate = HOST_FLOAT64_FLOPS_PER_S if case.dtype == "float64" else HOST_FLOAT32_FLOPS_PER_S
            return cost.flops / rate
        passes = {"forward": 1, "backward": 2, "train_step": 3}.get(case.pass_name, 1)
        return (cost.flops / (self.gpu.flops_per_s.get(case.dtype, self.gpu.flops_per_s["float32"])
                              * ACHIEVED_FLOPS_SHARE)
                + cost.bytes_min / (self.gpu.bytes_per_s * ACHIEVED_BANDWIDTH_SHARE)
                + LAUNCH_S * len(layers) * passes)

    def estimate(self, case: Case, timing) -> PlannedCase:
        if case.key in self.measured:
            return PlannedCase(case, self.measured[case.key], "measured")
        from perfkit.measure.timer import reps_for

        on_cpu = case.device == "cpu"
        try:
            step = self.step_s(case, on_cpu=on_cpu)
        except (KeyError, ValueError):  # not a layer case: a study's own measurement (a training run, say)
            return PlannedCase(case, OWN_MEASUREMENT_S, "assumed")
        flush = 0.0 if on_cpu else L2_FLUSH_BYTES / self.gpu.bytes_per_s
        reps = max(timing.min_reps, reps_for(step + flush, timing))
        seconds = CASE_OVERHEAD_S + (1 + timing.warmup) * step + reps * (step + flush)
        check = replace(case, dtype="float64", batch=min(case.batch, self.check_batch))
        seconds += self.step_s(check, on_cpu=True)  # the float64 reference on the host
        if not on_cpu and case.dtype not in STRICT_DTYPES:
            seconds += self.step_s(case, batch=check.batch)  # stock PyTorch's own error, for the tolerance
        if case.backend == "compile":
            shapes = len({case.batch, check.batch})
            seconds += shapes * COMPILE_S.get(case.pass_name, COMPILE_S["forward"])
        if self.energy and not on_cpu:
            seconds += NVML_WINDOW_S
        return PlannedCase(case, seconds, "model")


def measured_case_seconds(store: Path | None, gpu: GpuSpec) -> dict:
    """{case key: wall seconds} of the finished rows a store holds for this GPU model (the latest of each)."""
    if store is None or not Path(store).exists():
        return {}
    import pandas as pd

    from perfkit.results.store import StoreError, load_measurements

    try:
        df = load_measurements(store)
    except StoreError:
        return {}
    if df.empty:
        return {}
    df = df[df.started_at.notna() & df.finished_at.notna() & (df.status != "skipped")]
    same = df.device_name.fillna("").str.lower().str.contains(gpu.key) | (df.device == "cpu")
    df = df[same]
    seconds = (pd.to_datetime(df.finished_at) - pd.to_datetime(df.started_at)).dt.total_seconds()
    return dict(zip(df.case_key, seconds))


def _triton_binaries(cases, arch: str, check_batch: int) -> tuple[list[str] | None, str]:
    """The Triton binaries the phase's triton cases launch (timed and check batch), as perfkit.app.kernelcheck lists them;
    None with the reason where they cannot be listed here (the interpreter is on)."""
    triton_cases = [c for c in cases if c.backend == "triton" and c.device.startswith("cuda")]
    if not triton_cases:
        return [], ""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None, "not listed: TRITON_INTERPRET=1 is set (run the plan without it to list them)"
    try:
        from perfkit.backends.triton_binaries import collect_binaries
    except Exception as exc:  # no triton: nothing to list
        return None, f"not listed: {type(exc).__name__}: {exc}"
    work = []
    for case in triton_cases:
        for batch in sorted({case.batch, min(case.batch, check_batch)}):
            work.append((case.key, replace(case, batch=batch, device="cuda", threads=None)))
    try:
        binaries = collect_binaries(work, arch)
    except Exception as exc:
        return None, f"not listed: {type(exc).__name__}: {exc}"[:300]
    return sorted(f"{b.spec.kernel}[{b.spec.config or 'untuned'}]" for b in binaries.values()), ""


def make_plan(gpu_key: str = "h100", budget_minutes: float | None = None, quick: bool = False, full: bool = False,
              store: Path | None = None, list_binaries: bool = True) -> Plan:
    """The campaign's plan on one GPU of `gpu_key` (see the module docstring), scheduled as the campaign schedules:
    each phase gets its share of the budget left when it starts, a case runs only if its estimate fits before the
    phase's deadline (the first case of a phase always runs), and time a phase leaves passes on."""
    from perfkit.app import campaign as C
    gpu = gpu_spec(gpu_key)
    budget_s = (budget_minutes if budget_minutes is not None else
                (C.QUICK_BUDGET_MINUTES if quick else C.BUDGET_MINUTES)) * 60.0
    stop = max(budget_s - C.EXPORT_RESERVE_S, budget_s * 0.9)
    measured = measured_case_seconds(store, gpu)
    devices = ("cpu", "cuda:0")
    fake = C.Campaign(Path("."), devices, gpu.name, budget_s, quick, full)
    now = 0.0
    phases = []
    compiled: set = set()  # Triton binaries an earlier phase compiles
    names = list(C.PHASE_SHARES)
    for i, name in enumerate(names):
        later = sum(C.PHASE_SHARES[n] for n in names[i:])
        slice_s = max(0.0, stop - now) * C.PHASE_SHARES[name] / later
        phase = PlannedPhase(name, slice_s)
        for study, options, energy in _phase_studies(C, fake, name):
            _plan_study(phase, study, options, Estimator(gpu, energy=energy, measured=measured), gpu, list_binaries,
                        compiled)
        if name == "tests":
            phase.fixed_s = min(sum(TESTS_S.values()), slice_s)
            phase.fixed_note = (f"pytest in its own process group, cut at the slice: gpu-marked harness tests first "
                                f"({C.MARKED_TESTS_SHARE:.0%} of the slice), then tests/kernels and "
                                f"tests/test_triton_backend.py (assumed {sum(TESTS_S.values()):.0f} s in all)")
        if name == "rest":
            profile = min(C.REST_SHARES["profile"] * slice_s, PROFILE_CASE_S * len(C.PROFILE_CASES))
            bench = min(C.REST_SHARES["bench"] * slice_s, BENCH_S)
            phase.fixed_s += profile + bench
            phase.fixed_note = (f"then the profile of the headline train step ({profile:.0f} s) and the regression "
                                f"suite's GPU half ({bench:.0f} s), each cut at its share")
        _schedule(phase, slice_s)
        phases.append(phase)
        now += phase.estimate_s
    return Plan(gpu, budget_s, phases)


def _phase_studies(C, campaign, name: str):
    """(Study, options, energy window?) for each study a phase runs."""
    from perfkit.studies import STUDIES
    from perfkit.study import StudyOptions

    if name == "headline":
        return [(STUDIES["headline"], C.headline_options(campaign), False)]
    if name == "energy":
        return [(STUDIES["headline"], C.headline_options(campaign, energy=True), True)]
    if name == "roofline":
        layers = C.QUICK_EXTRA["layers"] if campaign.quick else C.ROOFLINE_LAYERS
        return [(STUDIES["roofline"], StudyOptions(devices=campaign.devices, quick=not campaign.full,
                                                   extra={"layers": list(layers)}), False)]
    if name == "rest":
        options = StudyOptions(devices=campaign.devices, quick=not campaign.full,
                               extra=dict(C.QUICK_EXTRA) if campaign.quick else {})
        order = [n for n, _ in C.STUDY_WEIGHTS if n in STUDIES and n != "multigpu"]  # multigpu needs 2 GPUs
        return [(STUDIES[n], options, STUDIES[n].energy_for(options)) for n in order]
    return []


def _plan_study(phase: PlannedPhase, study, options, estimator: Estimator, gpu: GpuSpec, list_binaries: bool,
                compiled: set):
    timing = study.timing_for(options)
    cases = [c for c in study.cases(options) if c.device == "cpu" or c.device.startswith("cuda")]
    phase.cases += [replace(estimator.estimate(c, timing), study=study.name) for c in cases]
    triton = [c for c in cases if c.backend == "triton"]
    if triton:
        binaries, note = _triton_binaries(triton, gpu.arch, estimator.check_batch) if list_binaries else \
            (None, "not listed")
        if binaries is not None:  # those an earlier phase compiled are in Triton's cache already
            new = sorted(set(binaries) - compiled)
            compiled.update(new)
            phase.binaries = sorted(set((phase.binaries or []) + new))
            phase.compile_s += math.ceil(len(new) / HOST_CORES) * TRITON_BINARY_S
        else:
            phase.binaries_note = note
            if not phase.compile_s:  # a few rounds of parallel compiles, unlisted; later studies find them cached
                phase.compile_s = TRITON_BINARY_S * 4


def _schedule(phase: PlannedPhase, slice_s: float) -> None:
    """Mark the cases that fit, as the runner decides (Runner's `estimate_s`): in order, a case runs when its estimate
    ends within what is left of the slice; one that does not is left for a longer budget, and later ones may fit."""
    from perfkit.app import campaign as C
    limit = (slice_s * C.REST_SHARES["studies"] if phase.name == "rest" else slice_s - phase.fixed_s) - phase.compile_s
    used = 0.0
    for planned in phase.cases:
        planned.fits = used + planned.estimate_s <= limit
        if planned.fits:
            used += planned.estimate_s


VERBOSE_CASES = 40  # a phase with more cases lists only those that fit


def format_plan(plan: Plan, verbose: bool = True) -> str:
    gpu = plan.gpu
    peaks = ", ".join(f"{d} {gpu.flops_per_s[d] / 1e12:g}" for d in ("float32", "tf32", "bfloat16"))
    lines = [f"perfkit campaign --plan: {gpu.name} ({gpu.arch}; published peaks TFLOP/s: {peaks}; "
             f"{gpu.bytes_per_s / 1e9:,.0f} GB/s; {gpu.source}), budget {plan.budget_s / 60:g} min",
             f"Estimated: {plan.estimate_s:.0f} s of {plan.budget_s:.0f} s. Assumptions: {ASSUMPTIONS}.", ""]
    for i, phase in enumerate(plan.phases, 1):
        fits = [c for c in phase.cases if c.fits]
        lines.append(f"{i}. {phase.name}: slice {phase.slice_s:.0f} s, estimate {phase.estimate_s:.0f} s, "
                     f"{len(fits)} of {len(phase.cases)} cases" + (f"; {phase.fixed_note}" if phase.fixed_note else ""))
        if verbose:
            for planned in phase.cases if len(phase.cases) <= VERBOSE_CASES else fits:
                c = planned.case
                lines.append(f"   {' ' if planned.fits else '-'} {planned.estimate_s:7.1f} s  {c.variant} {c.layer} "
                             f"{c.pass_name} {c.backend} {c.dtype} b{c.batch} {c.device}"
                             f"{'' if planned.basis == 'model' else f' ({planned.basis})'}")
        if phase.deferred:
            by_study = {}
            for planned in phase.deferred:
                by_study[planned.study] = by_study.get(planned.study, 0) + 1
            lines.append(f"   left for a longer budget{' (marked -)' if len(phase.cases) <= VERBOSE_CASES else ''}: "
                         f"{len(phase.deferred)} cases, {sum(c.estimate_s for c in phase.deferred):.0f} s more ("
                         + ", ".join(f"{n} {study}" for study, n in by_study.items()) + ")")
        if phase.binaries is not None and phase.binaries:
            lines.append(f"   Triton binaries to compile ({len(phase.binaries)}, about "
                         f"{math.ceil(len(phase.binaries) / HOST_CORES) * TRITON_BINARY_S:.0f} s on {HOST_CORES} "
                         f"cores): " + ", ".join(phase.binaries))
        elif phase.binaries_note:
            lines.append(f"   Triton binaries: {phase.binaries_note}")
    return "\n".join(lines)
