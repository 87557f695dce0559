"""The pytest-benchmark regression suite: which cases it runs, how each is prepared and timed, and what goes in the JSON.

Cases: every layer of alexnet2012 and the whole network, forward and train_step, float32.
- CPU (always): the torch backend, batch 10, one torch thread, timed with `time.process_time` (see below).
- CUDA (marked `gpu`; skipped with a reason without a device): every backend of `GPU_BACKENDS` that the registry has
  and that says it can run the case, batch 128, timed with `time.perf_counter` around the call and a
  `torch.cuda.synchronize()` inside the timed function. The L2 cache is not flushed between rounds (hot cache): this
  suite watches for regressions; the runner's studies are where cold-cache numbers come from.

Each case is a `perfkit.cases.Case`, and the suite checks and times what the runner would: `calls_only_runner(...)
.work(case, backend)` (perfkit.runner.Runner.work). Its `check()` is the runner's one correctness check (fresh random
inputs; the float64 CPU reference with the same parameters, replaying the module's dropout masks and max-pool/ReLU
choices; the per-dtype tolerance policy), and the verdict is the runner's: finite and within the tolerance
(`passes`). Over tolerance the test fails and nothing is timed. The timed call is the `run` of `timed()` on the very
module that was checked. The error goes into `benchmark.extra_info` with the cost model's FLOPs and bytes, the batch,
dtype, backend, pass and layer.

Next to each case, right before and right after it, the suite times a calibration GEMM with the same timer on the same
device, into `extra_info`. `perfkit.app.benchgate` divides each case's time by the run's calibration; see that module for
why and for how the gate uses it.

Why one thread and CPU time on the CPU: CI runners and developer machines are small and shared. With two torch threads
on a 2-core machine that has other work, a parallel region waits for whichever thread was descheduled, and timings
spread by 100% and more. One thread measured with process CPU time does not see time slices given to other processes;
run-to-run spread drops to a few percent. The suite therefore guards the work a layer does, not its parallel scaling.

Why the suite turns off glibc's mmap for large allocations: a train_step allocates its gradients afresh each call
(`zero_grad(set_to_none=True)`). glibc serves blocks over its mmap threshold with fresh mappings, so every call page-
faults them in again (fc7's train_step: 32,770 faults, half its time), and how much that costs depends on the kernel's
huge-page luck, which made fc7's time jump between 56 ms and 120 ms from run to run. With mmap off and trimming deferred
(`mallopt`, for this pytest process only, when it runs the suite) freed blocks are reused and the suite times the
layer's work, not the page-fault path.

Cases too short to time alone: on the CPU a case without a GEMM whose one call moves under `ROUND_BYTES` by the cost
model (an activation of a small layer, dropout, the loss, pool5) makes several calls per timed round, enough to move
that much (at most `MAX_CALLS_PER_ROUND`). A 10-microsecond call is otherwise timed with the timer's own cost and the
last call's cache misses in it. The count is in `extra_info.calls_per_round`; the gate compares times per call.

Within one `perfkit bench check` the driver sets PERFKIT_BENCH_CHECKED=1 for a side's rounds after its first: the same
code on the same inputs was checked against the float64 reference in that first round (a failure there fails the
check), and the check of the whole network's train step alone takes seconds a round. The rows say so
(`error_checked: "earlier round"`, error null).

Test-only slowdown injection: PERFKIT_BENCH_INJECT_SLOWDOWN=LAYER[:FRACTION][,LAYER...] (e.g. `conv2`, `conv2:0.5`,
`network`) makes each named layer's benchmarks also run the same layer, in the same timed call, on an extra batch of
round(FRACTION * batch) images (FRACTION 0.3 unless given): about 30% more work at the CPU batch of 10. It lives here
and nowhere in perfkit itself; runs made with it say so in their JSON (`perfkit.inject`).

Plain `pytest` (the unit tests) skips this suite; it runs when the command line names tests/benchmarks (what
`perfkit bench` does) or passes --benchmark-only.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch

from perfkit.backends import BACKENDS, float32_precision
from perfkit.cases import NETWORK, Case
from perfkit.runner import Runner, RunnerConfig, calls_only_runner
from perfkit.specs import build_network
from perfkit.workload import Checked, Work, tolerance_for

SUITE_DIR = Path(__file__).resolve().parent
VARIANT = "alexnet2012"
DTYPE = "float32"
PASSES = ("forward", "train_step")
SEED = 0


@dataclass(frozen=True)
class DeviceSettings:
    device: str
    batch: int
    check_batch: int  # images the float64 correctness check runs on (at most; the runner takes min(batch, this))
    threads: int | None  # torch CPU threads during the case (None: leave as is)
    timer: Callable[[], float]
    backends: tuple[str, ...]


CPU_SETTINGS = DeviceSettings(device="cpu", batch=10, check_batch=4, threads=1, timer=time.process_time,
                              backends=("torch",))
GPU_SETTINGS = DeviceSettings(device="cuda", batch=128, check_batch=16, threads=None, timer=time.perf_counter,
                              backends=("torch", "triton", "compile"))
SETTINGS = {"cpu": CPU_SETTINGS, "cuda": GPU_SETTINGS}

INJECT_ENV = "PERFKIT_BENCH_INJECT_SLOWDOWN"
DEFAULT_INJECT_FRACTION = 0.3
CHECKED_ENV = "PERFKIT_BENCH_CHECKED"  # set by `perfkit bench check` for a side's rounds after its first
#: A CPU case without a GEMM repeats its call within a round until the round moves this many bytes (cost model).
ROUND_BYTES = 16 * 2**20
MAX_CALLS_PER_ROUND = 256

_SKIP_UNLESS_ASKED = ("benchmark suite: not part of the unit tests; run `perfkit bench run` (or `pytest tests/benchmarks`)")


# -- which cases ----------------------------------------------------------------------------------------------------
def case_id(device: str, backend: str, layer: str, pass_name: str) -> str:
    return f"{device}-{backend}-{layer}-{pass_name}"


def _case_params():
    network = build_network(VARIANT)
    layers = list(network.layer_names) + [NETWORK]
    params = []
    for settings in (CPU_SETTINGS, GPU_SETTINGS):
        # Only the timer and group are fixed here: pytest-benchmark lets a marker override the command line, and
        # --benchmark-max-time / --benchmark-min-rounds should stay adjustable (perfkit bench --quick uses them).
        marks = [pytest.mark.benchmark(timer=settings.timer, group=f"{settings.device} {VARIANT}")]
        if settings.device == "cuda":
            marks.append(pytest.mark.gpu)
        for backend in settings.backends:
            for pass_name in PASSES:
                for layer in layers:
                    case = (settings.device, backend, layer, pass_name)
                    params.append(pytest.param(case, id=case_id(*case), marks=marks))
    return params


def pytest_generate_tests(metafunc):
    if "bench_case" in metafunc.fixturenames:
        metafunc.parametrize("bench_case", _case_params())


def _suite_requested(config) -> bool:
    if config.getoption("benchmark_only", False):
        return True
    for arg in config.args:
        path = Path(str(arg).split("::")[0])
        path = (path if path.is_absolute() else Path(config.invocation_params.dir) / path).resolve()
        if path == SUITE_DIR or SUITE_DIR in path.parents:
            return True
    return False


def pytest_configure(config):
    if _suite_requested(config):
        config._perfkit_malloc_note = tune_malloc()


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_malloc() -> str:
    """Keep freed memory for reuse instead of unmapping it (see the module docstring); a note on what was done."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not tuned: glibc's mallopt is not available here"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError) as exc:
        return f"not tuned: {exc}"
    return "glibc mallopt: mmap off, trim threshold 2 GiB" if ok else "not tuned: mallopt refused"


def pytest_collection_modifyitems(config, items):
    if _suite_requested(config):
        return
    skip = pytest.mark.skip(reason=_SKIP_UNLESS_ASKED)
    for item in items:
        if SUITE_DIR == Path(str(item.path)).resolve().parent:
            item.add_marker(skip)


# -- test-only slowdown injection -----------------------------------------------------------------------------------
def injected_slowdowns() -> dict[str, float]:
    """{layer: fraction} from PERFKIT_BENCH_INJECT_SLOWDOWN ("conv2", "conv2:0.5,fc6")."""
    text = os.environ.get(INJECT_ENV, "").strip()
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, fraction = part.partition(":")
        try:
            value = float(fraction) if fraction else DEFAULT_INJECT_FRACTION
        except ValueError:
            raise pytest.UsageError(f"{INJECT_ENV}: {part!r} is not LAYER or LAYER:FRACTION") from None
        if value <= 0:
            raise pytest.UsageError(f"{INJECT_ENV}: the fraction in {part!r} must be positive")
        out[name.strip()] = value
    return out


# -- calibration ----------------------------------------------------------------------------------------------------
class Calibration:
    """A square float32 GEMM (IEEE, never TF32) timed with the suite's timer on the case's device: the fastest of a few
    repetitions. It is the yardstick `perfkit.app.benchgate` divides every case's time by."""

    CPU_GEMM_N, CPU_REPS = 256, 12  # about 0.3 ms a repetition on one core of a 2020s server CPU
    GPU_GEMM_N, GPU_REPS = 4096, 10  # a few ms on a data-centre GPU

    def __init__(self, settings: DeviceSettings):
        self.settings = settings
        gpu = settings.device == "cuda"
        n = self.GPU_GEMM_N if gpu else self.CPU_GEMM_N
        self.reps = self.GPU_REPS if gpu else self.CPU_REPS
        gen = torch.Generator().manual_seed(1)
        self.a = torch.randn(n, n, generator=gen).to(settings.device)
        self.b = torch.randn(n, n, generator=gen).to(settings.device)
        self.c = torch.empty(n, n, device=settings.device)
        self.gemm_flops = 2 * n ** 3

    def _sync(self):
        if self.settings.device == "cuda":
            torch.cuda.synchronize()

    def measure(self) -> dict:
        timer = self.settings.timer
        with float32_precision("float32"):
            torch.mm(self.a, self.b, out=self.c)
            self._sync()
            best = float("inf")
            for _ in range(self.reps):
                start = timer()
                torch.mm(self.a, self.b, out=self.c)
                self._sync()
                best = min(best, timer() - start)
        return {"calib_gemm_s": best}

    def info(self) -> dict:
        return {"calib_gemm_flops": self.gemm_flops}


@pytest.fixture(scope="session")
def calibrations():
    cache: dict[str, Calibration] = {}

    def get(settings: DeviceSettings) -> Calibration:
        if settings.device not in cache:
            cache[settings.device] = Calibration(settings)
        return cache[settings.device]

    return get


# -- one prepared case ----------------------------------------------------------------------------------------------
@dataclass
class PreparedCase:
    settings: DeviceSettings
    calibration: Calibration
    timed: Callable[[], object]
    warmup: Callable[[], object]
    info: dict = field(default_factory=dict)

    def calibrate(self) -> dict:
        return self.calibration.measure()


class _Shared:
    """Per-session network and the runner whose checks and calls the suite uses. One runner at a time: it keeps the
    parameters and the last float64 reference (a network's is large), and the CPU and GPU halves differ in their
    check batch, so moving from one half to the other replaces it."""

    def __init__(self):
        self.network = build_network(VARIANT)
        self._runner: tuple[DeviceSettings, Runner] | None = None

    def runner(self, settings: DeviceSettings) -> Runner:
        if self._runner is None or self._runner[0] != settings:
            self._runner = None  # the previous runner's parameters and reference go before the next one's come
            self._runner = (settings, make_runner(settings))
        return self._runner[1]


@pytest.fixture(scope="session")
def shared():
    return _Shared()


def make_runner(settings: DeviceSettings) -> Runner:
    """An unstored runner (perfkit.runner.calls_only_runner) with the suite's seed and its check batch on `settings`'s
    device. Nothing else of its config matters here: the suite times with pytest-benchmark, not with the runner."""
    return calls_only_runner(RunnerConfig(check_batch=settings.check_batch, seed=SEED, precompile=False,
                                          device_peaks=False, energy=False))


def bench_case(settings: DeviceSettings, backend_name: str, layer: str, pass_name: str, variant: str = VARIANT) -> Case:
    """The runner's Case for one benchmark."""
    return Case(variant=variant, layer=layer, backend=backend_name, device=settings.device, dtype=DTYPE,
                batch=settings.batch, pass_name=pass_name, threads=settings.threads)


@contextlib.contextmanager
def case_context(settings: DeviceSettings):
    """What a case is built, checked and timed under: the suite's torch threads on the device and IEEE float32."""
    saved_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        with float32_precision(DTYPE):
            yield
    finally:
        torch.set_num_threads(saved_threads)


def check_case(runner: Runner, case: Case, backend) -> tuple[Work, Checked]:
    """Correct before fast: the runner's own work for `case` and its one correctness check (perfkit.runner.Runner.work:
    float64 CPU reference replaying the dropout masks and max-pool/ReLU choices, the per-dtype tolerance policy)."""
    work = runner.work(case, backend)
    return work, work.check()


def passes(checked: Checked) -> bool:
    """The runner's verdict (perfkit.runner.Runner._check_and_time): a finite error within the tolerance."""
    return math.isfinite(checked.error) and checked.error <= checked.tolerance


@pytest.fixture
def prepared(bench_case, shared, calibrations, request):
    """The case built, checked against the reference, and ready to time; skips with the reason when it cannot run."""
    device, backend_name, layer, pass_name = bench_case
    settings = SETTINGS[device]
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device: the GPU half of the suite needs one")
    backend = BACKENDS.get(backend_name)
    if backend is None:
        pytest.skip(f"backend {backend_name!r} is not registered in perfkit.backends")
    reason = backend.unavailable_reason(device, DTYPE, pass_name)
    if reason:
        pytest.skip(f"backend {backend_name!r}: {reason}")

    try:
        with case_context(settings):
            yield _prepare(settings, backend, layer, pass_name, shared, calibrations(settings))
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()


def _prepare(settings, backend, layer, pass_name, shared, calibration) -> PreparedCase:
    network = shared.network
    layers = network.layers_for(pass_name) if layer == NETWORK else (network.layer(layer),)
    device = settings.device
    runner = shared.runner(settings)
    case = bench_case(settings, backend.name, layer, pass_name)

    if os.environ.get(CHECKED_ENV) == "1":
        work = runner.work(case, backend)
        error, worst, checked = None, None, "earlier round"
        tolerance, images = tolerance_for(DTYPE, None), min(case.batch, settings.check_batch)
    else:
        work, result = check_case(runner, case, backend)
        error, worst, tolerance, images = result.error, result.worst, result.tolerance, result.images
        checked = "this round"
        if not passes(result):
            pytest.fail(f"{backend.name} {layer} {pass_name}: error {error:.3g} in {worst} exceeds the {DTYPE} "
                        f"tolerance {tolerance:g}; not timed")

    batch = settings.batch
    run = _untimed_step_free(work, case)
    calls = [run]
    inject = injected_slowdowns().get(layer)
    extra_images = 0
    if inject:
        extra_images = max(1, round(inject * batch))
        ballast = replace(case, batch=extra_images)  # the same layer and parameters, a module of its own
        calls.append(_untimed_step_free(runner.work(ballast, backend), ballast))
    cost = work.cost
    calls *= calls_per_round(settings, cost)
    if device == "cuda":
        calls.append(torch.cuda.synchronize)

    def timed():
        for call in calls:
            call()

    info = {
        "variant": VARIANT, "layer": layer, "layer_kind": "network" if layer == NETWORK else layers[0].kind,
        "pass": pass_name, "backend": backend.name, "device": device, "device_name": _device_name(device),
        "dtype": DTYPE, "batch": batch, "threads": torch.get_num_threads() if device == "cpu" else None,
        "timer": f"time.{settings.timer.__name__}" + (" + cuda.synchronize" if device == "cuda" else ""),
        "flops": cost.flops, "gemm_flops": cost.gemm_flops, "bytes_min": cost.bytes_min,
        "error_rel": error, "error_tolerance": tolerance, "error_worst_tensor": worst,
        "error_batch": images, "error_checked": checked,
        "calls_per_round": calls_per_round(settings, cost),
        "injected_extra_images": extra_images,
        **calibration.info(),
    }

    def warmup():  # one round's worth of calls: caches, the allocator and oneDNN's primitive cache are warm after it
        timed()

    return PreparedCase(settings, calibration, timed, warmup, info)


def _untimed_step_free(work: Work, case: Case) -> Callable[[], object]:
    """The timed call of `work` (its `timed()` run, at the case's batch); the suite's passes have no untimed step
    before each call, which pytest-benchmark could not leave out."""
    run, prepare = work.timed()
    if prepare is not None:
        pytest.fail(f"{case.label}: a pass with an untimed step before each call cannot be timed here")
    return run


def calls_per_round(settings: DeviceSettings, cost) -> int:
    """Calls per timed round: 1, or on the CPU for a case without a GEMM enough to move `ROUND_BYTES`."""
    if settings.device != "cpu" or cost.gemm_flops or not cost.bytes_min:
        return 1
    return max(1, min(MAX_CALLS_PER_ROUND, math.ceil(ROUND_BYTES / cost.bytes_min)))


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    from perfkit.measure.env import collect_environment

    return collect_environment().get("cpu_model") or "CPU"


# -- pytest-benchmark hooks -----------------------------------------------------------------------------------------
def pytest_benchmark_update_machine_info(config, machine_info):
    """perfkit's view of the machine under `machine_info["perfkit"]`: CPU model and the suite's torch threads, and on a
    GPU machine each GPU's name, driver and clocks (from NVML; null with a note where it cannot be read)."""
    from perfkit.measure.env import collect_environment

    env = collect_environment(probe_gpus=False)
    info = {
        "cpu_model": env.get("cpu_model"),
        **_cpu_identity(),
        "cpu_count_logical": env.get("cpu_count_logical"),
        "cpu_affinity": env.get("cpu_affinity"),
        "memory_total_bytes": env.get("memory_total_bytes"),
        "machine_id": env.get("machine_id"),
        "torch": env.get("torch"),
        "torch_threads_default": env.get("torch_threads_default"),
        "torch_threads_cpu_suite": CPU_SETTINGS.threads,
        "triton": env.get("triton"),
        "perfkit": env.get("perfkit"),
        "git_commit": env.get("git_commit"),
        "malloc": getattr(config, "_perfkit_malloc_note", None),
    }
    if torch.cuda.is_available():
        info["gpus"], info["gpu_driver"], info["gpu_note"] = _gpu_info()
        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["gpus"], info["gpu_driver"], info["gpu_note"] = [], None, "no CUDA device visible to torch"
    machine_info["perfkit"] = info


#: Instruction-set extensions that change which kernels oneDNN and MKL run (and so how layers compare with each other).
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
              "amx_bf16", "asimd", "sve")


def _cpu_identity() -> dict:
    """CPU family/model numbers and the relevant ISA extensions: a VM's model name ("AMD EPYC") can hide which
    generation it is; these do not."""
    fields = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_family_model": None, "cpu_isa": None}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("cpu family", "model", "flags", "Features", "CPU part", "CPU implementer") and key not in fields:
            fields[key] = value.strip()
        if not line.strip() and fields:
            break
    family = fields.get("cpu family") or fields.get("CPU implementer")
    model = fields.get("model") or fields.get("CPU part")
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"cpu_family_model": f"{family}/{model}" if family or model else None,
            "cpu_isa": [flag for flag in _ISA_FLAGS if flag in flags]}


def _gpu_info():
    """Each visible GPU (as torch numbers them), the driver version and a note: NVML through perfkit's own access
    (perfkit.measure.nvml, loaded once per process; handles from perfkit.measure.monitors.gpu_nvml, the runner's
    monitors' lookup: by UUID, PCI bus id, or index through CUDA_VISIBLE_DEVICES). What NVML cannot give is null, and
    the note says why."""
    from perfkit.measure import nvml as _nvml
    from perfkit.measure.monitors import gpu_nvml

    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name, "memory_bytes": props.total_memory,
                     "compute_capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count})
    nvml, reason = _nvml.load()
    if nvml is None:
        return gpus, None, f"{reason}; driver and clocks unknown"
    driver, reason = _nvml.call(nvml, "nvmlSystemGetDriverVersion")
    notes = [] if reason is None else [f"driver version unknown ({reason})"]
    driver = driver.decode() if isinstance(driver, bytes) else driver
    for gpu in gpus:
        _, handle, reason = gpu_nvml(f"cuda:{gpu['index']}")
        if handle is None:
            notes.append(f"GPU {gpu['index']}: clocks and power limit unknown ({reason})")
            gpu["clocks"], gpu["power_limit_w"] = None, None
            continue
        clocks = {}
        for label, kind in (("sm", getattr(nvml, "NVML_CLOCK_SM", 1)), ("memory", getattr(nvml, "NVML_CLOCK_MEM", 2)),
                            ("graphics", getattr(nvml, "NVML_CLOCK_GRAPHICS", 0))):  # nvml.h's nvmlClockType_t
            for what, getter in (("now", "nvmlDeviceGetClockInfo"), ("max", "nvmlDeviceGetMaxClockInfo"),
                                 ("application", "nvmlDeviceGetApplicationsClock")):
                value, _ = _nvml.call(nvml, getter, handle, kind)  # None where this GPU does not support it
                clocks[f"{label}_{what}_mhz"] = value
        gpu["clocks"] = clocks
        limit_mw, _ = _nvml.call(nvml, "nvmlDeviceGetEnforcedPowerLimit", handle)
        gpu["power_limit_w"] = None if limit_mw is None else limit_mw / 1000.0
    return gpus, driver, "; ".join(notes) or None


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Each benchmark gets `perfkit`: its time over the run's calibration (what the gate compares); the run gets
    `perfkit`: the calibration, the normalization used and any injected slowdown."""
    from perfkit.app import benchgate
    benchgate.annotate(output_json, inject=injected_slowdowns())
