"""Ahead-of-time compilation of recorded launches for a GPU that is not here.

A launch recorded by `perfkit.kernels.tuning.recording_launches` is turned into Triton's own specialization data
(`specialize`): the signature, constexprs and divisibility attributes that ``JITFunction.run`` derives from the
arguments, found by running Triton's binder with a compile hook that stops before compiling. `compile_binary` then
compiles that data for the target with Triton's ``preload``, which is the path a GPU run's first call takes, so the
binary lands in Triton's on-disk cache under the key that run looks up. Nothing here needs a GPU or a CUDA driver: a
stand-in driver reports the target, and the wheel's ptxas builds the cubin.

Per binary the compiler's figures are read back: registers per thread, stack frame, spill stores and loads (ptxas
-v), shared memory (Triton's metadata), and the tensor-core instructions in the PTX (wgmma on sm_90, mma.sync).
`launch_problems` says whether a binary can launch on its arch at all.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver


@dataclass(frozen=True)
class ArchLimits:
    """What one block may use on an arch, and the SM count of its GPUs (for host logic that sizes grids)."""

    arch: str
    capability: int
    shared_bytes_per_block: int
    registers_per_block: int
    multiprocessors: int
    gpus: str


ARCHES = {
    # H100 SXM and H200: 132 SMs, 227 KiB of dynamic shared memory per block (opt-in), 64 K registers per block.
    "sm_90": ArchLimits("sm_90", 90, 227 * 1024, 65536, 132, "H100, H200"),
    # A100: 108 SMs, 163 KiB per block.
    "sm_80": ArchLimits("sm_80", 80, 163 * 1024, 65536, 108, "A100"),
}


def arch_limits(arch: str) -> ArchLimits:
    try:
        return ARCHES[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHES)}") from None


class TargetDriver:
    """A stand-in for Triton's CUDA driver that reports a target and never touches a GPU: enough for the binder and
    the compiler. Its device number is the capability, so each target gets its own binder cache."""

    def __init__(self, capability: int):
        self.target = GPUTarget("cuda", capability, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return self.target.arch

    def get_current_stream(self, device=None):
        return 0

    def is_active(self):
        return True


@contextlib.contextmanager
def target_driver(arch: str):
    """Make Triton compile for ``arch`` ("sm_90") with no GPU present, for the duration of the block."""
    saved = driver._active
    driver.set_active(TargetDriver(arch_limits(arch).capability))
    try:
        yield
    finally:
        driver._active = saved


@dataclass(frozen=True)
class BinarySpec:
    """One binary to compile: Triton's specialization data for a kernel, and what it is for. ``key`` is Triton's
    kernel-cache key (signature, specialization, options): two launches with one key share one binary."""

    kernel: str
    module: str
    config: str | None  # the config label (perfkit.kernels.tuning.config_label); None for an untuned kernel
    key: str
    specialization: str  # Triton's specialization JSON, what JITFunction.preload takes


def specialize(jit_fn, args: tuple, kwargs: dict) -> tuple[str, str]:
    """(cache key, specialization data) that ``jit_fn[grid](*args, **kwargs)`` would compile with on the active
    target, from Triton's own binder: a compile hook records them and stops the compile."""
    captured = {}

    def hook(*, key, compile, **_):
        captured["key"] = str(key)
        captured["data"] = compile["specialization_data"]
        return True  # skip the compile

    saved = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = hook
    try:
        jit_fn.run(*args, grid=None, warmup=True, **kwargs)
    finally:
        knobs.runtime.jit_cache_hook = saved
    if "data" not in captured:
        raise RuntimeError(f"{jit_fn.fn.__name__}: Triton asked for no compile (already in this process's cache?)")
    return captured["key"], captured["data"]


def jit_function(module: str, name: str):
    """The JITFunction of a kernel of perfkit.kernels by module and name (a TunedKernel gives the one it wraps)."""
    obj = getattr(importlib.import_module(module), name)
    return getattr(obj, "fn", obj) if not hasattr(obj, "preload") else obj


@dataclass
class BinaryFigures:
    """The compiler's figures for one binary (sizes in bytes, time in seconds); ``error`` when it did not compile."""

    registers: int | None = None
    stack_bytes: int | None = None
    spill_store_bytes: int | None = None
    spill_load_bytes: int | None = None
    shared_bytes: int | None = None
    num_warps: int | None = None
    has_dot: bool | None = None
    wgmma: int | None = None  # wgmma.mma_async instructions in the PTX
    mma_sync: int | None = None  # mma.sync instructions in the PTX
    compile_s: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> dict | None:
    """Registers, stack frame and spills from ``ptxas -v`` output (its first entry function), or None."""
    regs, frame = _PTXAS_REGISTERS.search(log), _PTXAS_FRAME.search(log)
    if not regs or not frame:
        return None
    return {"registers": int(regs.group(1)), "stack_bytes": int(frame.group(1)),
            "spill_store_bytes": int(frame.group(2)), "spill_load_bytes": int(frame.group(3))}


def _ptxas_figures(ptx: str, arch: str) -> dict | None:
    """Run the wheel's ptxas -v on a PTX (when the binary came from Triton's cache, whose compile left no log)."""
    from triton.backends.nvidia.compiler import get_ptxas

    capability = arch_limits(arch).capability
    gpu_name = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([get_ptxas(capability).path, "-v", f"--gpu-name={gpu_name}", src, "-o",
                               os.path.join(tmp, "k.cubin")], capture_output=True, text=True)
    return parse_ptxas_log(proc.stderr + proc.stdout)


def _figures_path(arch: str, specialization: str) -> str:
    """Where the ptxas figures of a binary are kept beside Triton's cache: a binary that comes from the cache left
    no ptxas log, and rerunning ptxas would cost most of a compile again."""
    import hashlib

    digest = hashlib.sha256(f"{arch}\n{triton.__version__}\n{specialization}".encode()).hexdigest()[:32]
    return os.path.join(knobs.cache.dir, "perfkit-figures", f"{digest}.json")


def compile_binary(arch: str, module: str, kernel: str, specialization: str) -> BinaryFigures:
    """Compile one binary for ``arch`` through Triton's preload (into Triton's on-disk cache) and read its figures.
    ``compile_s`` is this call's time: a fraction of a second when the binary was already in the cache."""
    with target_driver(arch):
        jit = jit_function(module, kernel)
        saved = knobs.nvidia.dump_ptxas_log
        knobs.nvidia.dump_ptxas_log = True
        log = io.StringIO()
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(log):
                compiled = jit.preload(specialization)
        except Exception as exc:  # reported per binary: the check fails on it
            lines = [line for line in str(exc).splitlines() if line.strip()]
            return BinaryFigures(error=f"{type(exc).__name__}: {' '.join(lines[:4])[:400]}")
        finally:
            knobs.nvidia.dump_ptxas_log = saved
        seconds = time.perf_counter() - start
    ptx = compiled.asm["ptx"]
    stored = _figures_path(arch, specialization)
    ptxas = parse_ptxas_log(log.getvalue())
    if ptxas is None and os.path.exists(stored):
        with open(stored) as f:
            ptxas = json.load(f)
    if ptxas is None:
        ptxas = _ptxas_figures(ptx, arch)
    if ptxas is not None:
        os.makedirs(os.path.dirname(stored), exist_ok=True)
        with open(stored + ".tmp", "w") as f:
            json.dump(ptxas, f)
        os.replace(stored + ".tmp", stored)
    ptxas = ptxas or {}
    return BinaryFigures(
        shared_bytes=int(compiled.metadata.shared),
        num_warps=int(compiled.metadata.num_warps),
        has_dot="tt.dot" in compiled.asm.get("ttir", "") or "mma" in ptx,
        wgmma=ptx.count("wgmma.mma_async."),
        mma_sync=ptx.count("mma.sync."),
        compile_s=seconds,
        **ptxas,
    )


def launch_problems(figures: BinaryFigures, arch: str) -> list[str]:
    """Why a compiled binary cannot launch on ``arch`` (empty when it can)."""
    limits = arch_limits(arch)
    problems = []
    if figures.shared_bytes is not None and figures.shared_bytes > limits.shared_bytes_per_block:
        problems.append(f"shared memory {figures.shared_bytes} B over the {limits.shared_bytes_per_block} B per-block "
                        f"limit of {arch}")
    if figures.registers is not None and figures.num_warps is not None:
        per_block = figures.registers * figures.num_warps * 32
        if per_block > limits.registers_per_block:
            problems.append(f"{figures.registers} registers x {figures.num_warps * 32} threads = {per_block} over the "
                            f"{limits.registers_per_block} registers per block of {arch}")
    return problems


def _worker_init(arch: str) -> None:
    # Compile workers never run a kernel; a stand-in driver reports the target to Triton (see target_driver).
    import warnings

    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")  # triton 3.9's notice, once per worker
    driver.set_active(TargetDriver(arch_limits(arch).capability))


def _compile_task(arch: str, module: str, kernel: str, specialization: str) -> dict:
    return compile_binary(arch, module, kernel, specialization).to_dict()


def compile_in_parallel(arch: str, specs: list[BinarySpec], jobs: int, on_done=None) -> list[BinaryFigures]:
    """Compile ``specs`` for ``arch`` on ``jobs`` worker processes (each a fresh interpreter, so Triton's compiler
    runs in parallel without the GIL), filling Triton's on-disk cache. ``on_done(i, figures)`` is called as each
    finishes. The workers inherit this process's environment (TRITON_CACHE_DIR; TRITON_INTERPRET must be unset)."""
    import concurrent.futures
    import multiprocessing

    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("TRITON_INTERPRET=1 is set: compile workers would import the kernels for the interpreter")
    results: list[BinaryFigures | None] = [None] * len(specs)
    if not specs:
        return []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context,
                                                initializer=_worker_init, initargs=(arch,)) as pool:
        futures = {pool.submit(_compile_task, arch, s.module, s.kernel, s.specialization): i
                   for i, s in enumerate(specs)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            try:
                figures = BinaryFigures(**future.result())
            except Exception as exc:  # a worker that died (out of memory, a compiler crash)
                figures = BinaryFigures(error=f"{type(exc).__name__}: {exc}"[:400])
            results[i] = figures
            if on_done is not None:
                on_done(i, figures)
    return results


def describe_target(arch: str) -> dict:
    """The arch, its limits, and the toolchain that compiles for it here (triton version, ptxas release)."""
    from triton.backends.nvidia.compiler import get_ptxas

    limits = arch_limits(arch)
    try:
        version = subprocess.run([get_ptxas(limits.capability).path, "--version"], capture_output=True,
                                 text=True).stdout
        release = re.search(r"release ([\d.]+)", version)
        ptxas = release.group(1) if release else version.strip().splitlines()[-1]
    except OSError as exc:
        ptxas = f"unavailable: {exc}"
    return {**asdict(limits), "triton": triton.__version__, "ptxas": ptxas}


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)
