"""The pytest-benchmark regression suite: which cases it runs, how each is prepared and timed, and what goes in the JSON.

Cases: every layer of alexnet2012 and the whole network, forward and train_step, float32.
- CPU (always): the torch backend, batch 10, one torch thread, timed with `time.process_time` (see below).
- CUDA (marked `gpu`; skipped with a reason without a device): every backend of `GPU_BACKENDS` that the registry has
  and that says it can run the case, batch 128, timed with `time.perf_counter` around the call and a
  `torch.cuda.synchronize()` inside the timed function. The L2 cache is not flushed between rounds (hot cache): this
  suite watches for regressions; the runner's studies are where cold-cache numbers come from.

Before it is timed, every case is checked against the float64 CPU reference exactly as `perfkit.runner` checks it
(fresh random inputs, same parameters and dropout masks); over tolerance the test fails and nothing is timed. The
error goes into `benchmark.extra_info` with the cost model's FLOPs and bytes, the batch, dtype, backend, pass and layer.

Next to each case, right before and right after it, the suite times a calibration GEMM with the same timer on the same
device, into `extra_info`. `perfkit.benchgate` divides each case's time by the run's calibration; see that module for
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

import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from perfkit.backends import BACKENDS, float32_precision
from perfkit.cases import NETWORK
from perfkit.model import init_parameters, torch_dtype
from perfkit.specs import build_network
from perfkit.workload import TOLERANCES, Workload, check, make_inputs, reference_results

SUITE_DIR = Path(__file__).resolve().parent
VARIANT = "alexnet2012"
DTYPE = "float32"
PASSES = ("forward", "train_step")
SEED = 0


@dataclass(frozen=True)
class DeviceSettings:
    device: str
    batch: int
    check_batch: int  # images the float64 correctness check runs on
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
    repetitions. It is the yardstick `perfkit.benchgate` divides every case's time by."""

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
    """Per-session network, parameters and the last float64 reference (a network's is large, so only one is kept)."""

    def __init__(self):
        self.network = build_network(VARIANT)
        self.parameters = init_parameters(self.network, seed=SEED)
        self.reference_key = None
        self.reference = None

    def reference_for(self, key, layers, pass_name, inputs, masks, make_optimizer):
        active_dropout = any(spec.kind == "dropout" and spec.p > 0 for spec in layers)
        if not active_dropout and key == self.reference_key:
            return self.reference
        want = reference_results(layers, pass_name, self.parameters, inputs, masks, make_optimizer)
        self.reference_key, self.reference = (None, None) if active_dropout else (key, want)
        return want


@pytest.fixture(scope="session")
def shared():
    return _Shared()


def _seed(purpose: str, layer: str, pass_name: str, batch: int) -> int:
    return SEED * 1_000_003 + zlib.crc32(f"bench/{purpose}/{VARIANT}/{layer}/{pass_name}/{batch}".encode())


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

    saved_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    precision = float32_precision(DTYPE)
    precision.__enter__()
    try:
        yield _prepare(settings, backend, layer, pass_name, shared, calibrations(settings))
    finally:
        precision.__exit__(None, None, None)
        torch.set_num_threads(saved_threads)
        if device == "cuda":
            torch.cuda.empty_cache()


def _prepare(settings, backend, layer, pass_name, shared, calibration) -> PreparedCase:
    network = shared.network
    layers = network.layers_for(pass_name) if layer == NETWORK else (network.layer(layer),)
    dtype = torch_dtype(DTYPE)
    device = settings.device
    module = backend.build(layers, shared.parameters, device, dtype)

    tolerance = TOLERANCES[DTYPE]
    if os.environ.get(CHECKED_ENV) == "1":
        error, worst, checked = None, None, "earlier round"
    else:
        error, worst = _check(backend, module, layers, layer, pass_name, shared, settings)
        checked = "this round"
        if not error <= tolerance:
            pytest.fail(f"{backend.name} {layer} {pass_name}: error {error:.3g} in {worst} exceeds the {DTYPE} "
                        f"tolerance {tolerance:g}; not timed")

    batch = settings.batch
    workload = Workload(module, pass_name, make_inputs(layers, batch, _seed("time", layer, pass_name, batch)), device,
                        dtype, backend.make_optimizer)
    calls = [workload.run]
    inject = injected_slowdowns().get(layer)
    extra_images = 0
    if inject:
        extra_images = max(1, round(inject * batch))
        ballast = Workload(module, pass_name, make_inputs(layers, extra_images, _seed("inject", layer, pass_name,
                                                                                       extra_images)),
                           device, dtype, backend.make_optimizer)
        calls.append(ballast.run)
    cost = network.cost(pass_name, batch, DTYPE) if layer == NETWORK else layers[0].cost(pass_name, batch, DTYPE)
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
        "error_batch": settings.check_batch, "error_checked": checked,
        "calls_per_round": calls_per_round(settings, cost),
        "injected_extra_images": extra_images,
        **calibration.info(),
    }

    def warmup():  # one round's worth of calls: caches, the allocator and oneDNN's primitive cache are warm after it
        timed()

    return PreparedCase(settings, calibration, timed, warmup, info)


def _check(backend, module, layers, layer, pass_name, shared, settings) -> tuple[float, str]:
    """Correct before fast: the same check as perfkit.runner, on fresh random inputs; (error, worst tensor)."""
    device, dtype = settings.device, torch_dtype(DTYPE)
    check_inputs = make_inputs(layers, settings.check_batch, _seed("check", layer, pass_name, settings.check_batch))
    module.capture_for_reference = True
    got = Workload(module, pass_name, check_inputs, device, dtype, backend.make_optimizer).run_once()
    module.capture_for_reference = False
    masks = dict(module.captured_dropout_masks)
    module.captured_dropout_masks.clear()
    want = shared.reference_for((layer, pass_name, settings.check_batch), layers, pass_name, check_inputs, masks,
                                BACKENDS["torch"].make_optimizer)
    return check(got, want)


def calls_per_round(settings: DeviceSettings, cost) -> int:
    """Calls per timed round: 1, or on the CPU for a case without a GEMM enough to move `ROUND_BYTES`."""
    if settings.device != "cpu" or cost.gemm_flops or not cost.bytes_min:
        return 1
    return max(1, min(MAX_CALLS_PER_ROUND, math.ceil(ROUND_BYTES / cost.bytes_min)))


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    from perfkit.env import collect_environment

    return collect_environment().get("cpu_model") or "CPU"


# -- pytest-benchmark hooks -----------------------------------------------------------------------------------------
def pytest_benchmark_update_machine_info(config, machine_info):
    """perfkit's view of the machine under `machine_info["perfkit"]`: CPU model and the suite's torch threads, and on a
    GPU machine each GPU's name, driver and clocks (from NVML; null with a note where it cannot be read)."""
    from perfkit.env import collect_environment

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
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name, "memory_bytes": props.total_memory,
                     "compute_capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count})
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no NVML: clocks and driver unknown, said so
        return gpus, None, f"NVML unavailable ({type(exc).__name__}: {exc}); driver and clocks unknown"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        for gpu in gpus:
            handle = _nvml_handle(pynvml, gpu["index"])
            clocks = {}
            for label, kind in (("sm", pynvml.NVML_CLOCK_SM), ("memory", pynvml.NVML_CLOCK_MEM),
                                ("graphics", pynvml.NVML_CLOCK_GRAPHICS)):
                for what, getter in (("now", pynvml.nvmlDeviceGetClockInfo),
                                     ("max", pynvml.nvmlDeviceGetMaxClockInfo),
                                     ("application", pynvml.nvmlDeviceGetApplicationsClock)):
                    try:
                        clocks[f"{label}_{what}_mhz"] = getter(handle, kind)
                    except Exception:  # noqa: BLE001 - not supported on this GPU
                        clocks[f"{label}_{what}_mhz"] = None
            gpu["clocks"] = clocks
            try:
                gpu["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
            except Exception:  # noqa: BLE001
                gpu["power_limit_w"] = None
        return gpus, driver, None
    finally:
        pynvml.nvmlShutdown()


def _nvml_handle(pynvml, torch_index: int):
    """NVML's handle for torch's device `torch_index`: matched by UUID (the two number devices differently under
    CUDA_VISIBLE_DEVICES), else by index."""
    uuid = getattr(torch.cuda.get_device_properties(torch_index), "uuid", None)
    if uuid is not None:
        text = str(uuid)
        for candidate in (text, f"GPU-{text}"):
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(candidate)
            except Exception:  # noqa: BLE001, S112 - try the next spelling, then the index
                continue
    return pynvml.nvmlDeviceGetHandleByIndex(torch_index)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Each benchmark gets `perfkit`: its time over the run's calibration (what the gate compares); the run gets
    `perfkit`: the calibration, the normalization used and any injected slowdown."""
    from perfkit import benchgate

    benchgate.annotate(output_json, inject=injected_slowdowns())
