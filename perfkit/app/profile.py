"""`perfkit profile`: where the time of a case goes, by layer, op and kernel, beside the case's timed median.

Per case, after the runner has checked and timed it (its usual row, so the profile always sits next to a correct,
timed measurement), the same call runs a few more steps under torch.profiler: CPU activity, and CUDA activity on a GPU,
on a wait / warm-up / active schedule, with every stage of the model inside a range named after its layers
(perfkit.model.layer_ranges: `record_function`, plus NVTX on a GPU). From the active steps it derives:

- a gzipped Chrome-format trace beside the store (`<store>-traces/<case>.json.gz`), which Perfetto and Holistic Trace
  Analysis open;
- a breakdown per op or kernel name and layer (`OpShare`): its kind (`classify`), calls, total and self time per step
  and self time's share of the step. Layers: an op inside a layer's range belongs to it; a backward op belongs to the
  layer of the forward op that made its autograd node (the profiler links the two by sequence number); what runs
  outside every layer is named for what it is: "optimizer" (SGD's step), "zero_grad", "accumulate grads" (autograd
  adding parameter gradients), "compiled graph (forward)" / "(backward)" for torch.compile's graphs (dynamo ignores
  ranges inside the graph it compiles), "step (outside layers)" for the rest;
- launches per step: CUDA kernels, memcpys and memsets on a GPU; on a CPU, aten op calls not nested in another aten
  op (what Python and autograd ask the dispatcher for);
- on a GPU, the share of the step in which no kernel ran (the union of kernel intervals against the step's span);
- the profiled step's mean duration over the timer's median for the same case (`profiled_over_timed`): the
  profiler's overhead, kept visible so that it is never mistaken for the case's time.

`--ncu` runs each GPU case once more under Nsight Compute (where `ncu` is on PATH) and stores per kernel the
achieved SM and DRAM throughput (% of peak), achieved occupancy and tensor-pipe use (`parse_ncu_csv`).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from perfkit.cases import Case

#: Profiler schedule: steps skipped, warm-up steps (profiled, discarded), then the steps analysed.
WAIT_STEPS = 1
WARMUP_STEPS = 1
DEFAULT_ACTIVE_STEPS = 3
DEFAULT_BATCH = 8  # images per step when no batch is given

# -- kinds ----------------------------------------------------------------------------------------------------------------
KIND_ATEN = "aten op"
KIND_AUTOGRAD = "autograd"
KIND_RANGE = "range"
KIND_COMPILED = "compiled graph"
KIND_RUNTIME = "CUDA runtime"
KIND_OTHER = "other"
KIND_PERFKIT_TRITON = "perfkit Triton kernel"
KIND_INDUCTOR_TRITON = "Inductor Triton kernel"
KIND_CUDNN = "cuDNN kernel"
KIND_CUBLAS = "cuBLAS kernel"
KIND_CUTLASS = "CUTLASS kernel"
KIND_ATEN_CUDA = "aten CUDA kernel"
KIND_CUDA = "CUDA kernel"
KIND_MEMCPY = "memcpy"
KIND_MEMSET = "memset"
DEVICE_KINDS = (KIND_PERFKIT_TRITON, KIND_INDUCTOR_TRITON, KIND_CUDNN, KIND_CUBLAS, KIND_CUTLASS, KIND_ATEN_CUDA,
                KIND_CUDA, KIND_MEMCPY, KIND_MEMSET)

# Library kernels by name, as they appear in CUDA traces (the order matters: a cuBLAS call can run a CUTLASS-built
# kernel, and then the kernel's own name says CUTLASS).
_CUTLASS = re.compile(r"cutlass", re.I)
_CUDNN = re.compile(r"cudnn|xmma_(fprop|dgrad|wgrad)|implicit_convolve|explicit_convolve|wgrad_alg|dgrad_engine|"
                    r"dgrad2d|fft2d_|fft_|winograd|conv2d_grouped_direct|convolve_common|scudnn|nchwToNhwc|"
                    r"nhwcToNchw", re.I)
_CUBLAS = re.compile(r"cublas|xmma_gemm|[sdhc]gemm|gemv|gemmSN|gemmk1|splitKreduce|gemm_.*kernel|ampere_.*gemm|"
                     r"volta_.*gemm|turing_.*gemm|sm\d+_.*gemm", re.I)
_INDUCTOR = re.compile(r"^triton_(poi|red|per|tem|for|mm|bmm|conv|helper)?_?")
_PERFKIT_KERNEL_NAMES: set[str] | None = None


def perfkit_kernel_names() -> set[str]:
    """The names of perfkit's own `@triton.jit` kernels, read from the kernels' source (no triton import). Only the
    `*_kernel` functions launch; the other jit functions are helpers inlined into them."""
    global _PERFKIT_KERNEL_NAMES
    if _PERFKIT_KERNEL_NAMES is None:
        import importlib.util

        root = Path(importlib.util.find_spec("perfkit.kernels").origin).parent  # the kernels' folder, not imported
        names = set()
        for path in root.glob("*.py"):
            names |= {name for name in re.findall(r"@triton\.jit[^\n]*\n(?:@[^\n]*\n)*def (\w+)\(", path.read_text())
                      if name.endswith("_kernel")}
        _PERFKIT_KERNEL_NAMES = names
    return _PERFKIT_KERNEL_NAMES


def classify(name: str, on_device: bool) -> str:
    """The kind of a profiled event: a GPU kernel by its library (from its name), or the kind of host work."""
    if on_device:
        lowered = name.lower()
        if "memcpy" in lowered:
            return KIND_MEMCPY
        if "memset" in lowered:
            return KIND_MEMSET
        if name in perfkit_kernel_names():
            return KIND_PERFKIT_TRITON
        if _INDUCTOR.match(name):
            return KIND_INDUCTOR_TRITON
        if _CUTLASS.search(name):
            return KIND_CUTLASS
        if _CUDNN.search(name):
            return KIND_CUDNN
        if _CUBLAS.search(name):
            return KIND_CUBLAS
        if "at::native" in name or "at::cuda" in name:
            return KIND_ATEN_CUDA
        return KIND_CUDA
    if name.startswith("aten::"):
        return KIND_ATEN
    if name.startswith(_COMPILED_PREFIXES):
        return KIND_COMPILED
    if name.startswith(("Optimizer.", "ProfilerStep")):
        return KIND_RANGE  # torch's own ranges: their self time is the Python between the ops they enclose
    if name.startswith("autograd::engine::evaluate_function") or re.search(r"Backward\d*$", name) \
            or "AccumulateGrad" in name:
        return KIND_AUTOGRAD
    if name.startswith(("cuda", "cu")) and not name.startswith("cudnn"):
        return KIND_RUNTIME
    return KIND_OTHER


# -- layers ---------------------------------------------------------------------------------------------------------------
OPTIMIZER = "optimizer"
ZERO_GRAD = "zero_grad"
ACCUMULATE = "accumulate grads"
COMPILED_FORWARD = "compiled graph (forward)"
COMPILED_BACKWARD = "compiled graph (backward)"
BACKWARD = "backward (outside layers)"  # perfkit.workload.BACKWARD_RANGE: the gradient seed, the engine's own work
OUTSIDE = "step (outside layers)"
#: The parts of a step that are no layer, named as such.
NON_LAYER_PARTS = (OPTIMIZER, ZERO_GRAD, ACCUMULATE, BACKWARD, COMPILED_FORWARD, COMPILED_BACKWARD, OUTSIDE)


@dataclass
class OpShare:
    """One op or kernel name within one layer of a profiled case, per step (seconds)."""

    name: str
    kind: str
    layer: str
    on_device: bool
    calls_per_step: float
    total_s_per_step: float
    self_s_per_step: float
    share_of_step: float | None


@dataclass
class CaseProfile:
    """What one profiled case comes to (seconds per step)."""

    steps: int
    step_s: float
    launches_per_step: float
    launches_note: str
    gpu_idle_share: float | None
    gpu_idle_note: str | None
    ops: list[OpShare] = field(default_factory=list)
    on_gpu: bool = False  # a GPU case: its kernels (device time) say where the time goes

    def top(self, n: int = 5, on_device: bool | None = None) -> list[OpShare]:
        """The n ops (or kernels) with the most self time per step."""
        ops = [o for o in self.ops if o.kind != KIND_RANGE and (on_device is None or o.on_device == on_device)]
        return sorted(ops, key=lambda o: -o.self_s_per_step)[:n]

    def layer_seconds(self, on_device: bool = False) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for op in self.ops:
            if op.on_device == on_device:
                out[op.layer] += op.self_s_per_step
        return dict(out)


def _is_device(event) -> bool:
    kind = getattr(event, "device_type", None)
    return kind is not None and getattr(kind, "name", str(kind)).upper() in ("CUDA", "PRIVATEUSE1", "XPU", "MTIA")


def _ancestors(event):
    while event is not None:
        yield event
        event = event.cpu_parent


_COMPILED_PREFIXES = ("CompiledFunction", "## Call CompiledFxGraph", "Torch-Compiled Region", "TorchDynamo")


def _is_layer_range(name: str, layer_names: set[str]) -> bool:
    """A stage's range: one layer's name, or the '+'-joined names of the layers a backend fused ("lrn1+pool1")."""
    return all(part in layer_names for part in name.split("+"))


def _host_kind(name: str, layer_names: set[str]) -> str:
    return KIND_RANGE if name == BACKWARD or _is_layer_range(name, layer_names) else classify(name, False)


def _part_of(event, layer_names: set[str], forward_layers: dict[int, str]) -> str:
    """The layer (or named non-layer part) an event belongs to (see the module docstring): the closest enclosing
    layer range, autograd node (by its forward op's layer), backward call, optimizer call or compiled graph."""
    compiled = False
    for e in _ancestors(event):
        name = e.name
        if _is_layer_range(name, layer_names):
            return name
        if name.startswith("autograd::engine::evaluate_function"):
            if "AccumulateGrad" in name:
                return ACCUMULATE
            if "CompiledFunctionBackward" in name:
                return COMPILED_BACKWARD
            layer = forward_layers.get(getattr(e, "sequence_nr", -1))
            if layer is not None:
                return layer
        if name.startswith("CompiledFunctionBackward"):
            return COMPILED_BACKWARD
        if name.startswith(_COMPILED_PREFIXES):
            compiled = True  # forward, unless a backward node encloses it further up
            continue
        if name == BACKWARD:
            return BACKWARD
        if name.startswith("Optimizer.step"):
            return OPTIMIZER
        if name.startswith("Optimizer.zero_grad"):
            return ZERO_GRAD
    return COMPILED_FORWARD if compiled else OUTSIDE


def _union_s(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of (start, end) intervals."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def gpu_idle_share(step_spans: list[tuple[float, float]], kernels: list[tuple[float, float]]) -> float | None:
    """The share of the steps' spans (start, end) in which no kernel interval ran (intervals in the same unit)."""
    span = sum(b - a for a, b in step_spans)
    if span <= 0:
        return None
    busy = 0.0
    for a, b in step_spans:
        busy += _union_s([(max(a, ka), min(b, kb)) for ka, kb in kernels if kb > a and ka < b])
    return max(0.0, 1.0 - busy / span)


def analyze(events, layer_names: Iterable[str], on_gpu: bool) -> CaseProfile:
    """The breakdown of the active steps of a torch.profiler run (`prof.events()`, FunctionEvents, times in us).

    `layer_names`: the case's layers; a range named after one, or after several joined by '+' (a fused stage), is
    a layer's. Events inside an "untimed" range (the
    backward pass's untimed forward) are left out, and their time is taken off the step."""
    layer_names = set(layer_names)
    events = list(events)
    steps = [e for e in events if e.name.startswith("ProfilerStep")]
    if not steps:
        raise ValueError("no ProfilerStep events: the profiler recorded no complete step")
    n = len(steps)
    untimed = [e for e in events if e.name == UNTIMED_RANGE]
    untimed_us = sum(e.cpu_time_total for e in untimed)
    host = [e for e in events if not _is_device(e)]
    # forward ops that made autograd nodes, by sequence number -> their layer
    forward_layers: dict[int, str] = {}
    for e in host:
        seq = getattr(e, "sequence_nr", -1)
        if seq is not None and seq >= 0 and not e.name.startswith("autograd::engine") \
                and not re.search(r"Backward\d*$", e.name):
            for a in _ancestors(e):
                if _is_layer_range(a.name, layer_names):
                    forward_layers.setdefault(seq, a.name)
                    break
    # a kernel's launching op: the host event whose id is the kernel's linked correlation id (the profiler links
    # them that way; kernels have no cpu_parent)
    launched_by = {e.id: e for e in host if not getattr(e, "linked_correlation_id", 0)}
    grouped: dict[tuple[str, str, str, bool], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    launches = 0
    kernel_spans = []
    for e in events:
        device = _is_device(e)
        parent = launched_by.get(getattr(e, "linked_correlation_id", 0)) if device else e
        if e.name.startswith("ProfilerStep") or any(a.name == UNTIMED_RANGE for a in _ancestors(parent)):
            continue
        if device:
            layer = _part_of(parent, layer_names, forward_layers) if parent is not None else OUTSIDE
            kind = classify(e.name, True)
            self_us = total_us = e.time_range.end - e.time_range.start
            launches += 1
            kernel_spans.append((e.time_range.start, e.time_range.end))
        else:
            layer = _part_of(e, layer_names, forward_layers)
            kind = _host_kind(e.name, layer_names)
            self_us, total_us = e.self_cpu_time_total, e.cpu_time_total
            if not on_gpu and kind == KIND_ATEN and not any(a.name.startswith("aten::") for a in
                                                            _ancestors(e.cpu_parent)):
                launches += 1
        g = grouped[(e.name, kind, layer, device)]
        g[0] += 1
        g[1] += total_us
        g[2] += self_us
    step_us = (sum(e.cpu_time_total for e in steps) - untimed_us) / n
    ops = [OpShare(name=name, kind=kind, layer=layer, on_device=device, calls_per_step=calls / n,
                   total_s_per_step=total / n / 1e6, self_s_per_step=self_ / n / 1e6, share_of_step=(self_ / n) / step_us if step_us > 0 else None)
           for (name, kind, layer, device), (calls, total, self_) in grouped.items()]
    ops.sort(key=lambda o: -o.self_s_per_step)
    if on_gpu:
        spans = [(e.time_range.start, e.time_range.end) for e in steps]
        idle = gpu_idle_share(spans, kernel_spans) if kernel_spans else None
        idle_note = None if idle is not None else "no CUDA kernel was recorded in the profiled steps"
        note = "CUDA kernels, memcpys and memsets per step, from the profiler's device activity"
    else:
        idle, idle_note = None, "no GPU in this case"
        note = "aten op calls per step that no other aten op made (what Python and autograd dispatch)"
    return CaseProfile(steps=n, step_s=step_us / 1e6, launches_per_step=launches / n, launches_note=note,
                       gpu_idle_share=idle, gpu_idle_note=idle_note, ops=ops, on_gpu=on_gpu)


# -- running a case under the profiler ----------------------------------------------------------------------------------
#: The range around a step's untimed part (the forward the backward pass needs), left out of the breakdown.
UNTIMED_RANGE = "perfkit: untimed prepare"


def trace_path_for(store_path: Path, case: Case) -> Path:
    """Where a case's trace goes: beside the store, `<store stem>-traces/<case key, path-safe>.json.gz`."""
    safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", case.key)
    return store_path.resolve().parent / f"{store_path.stem}-traces" / f"{safe}.json.gz"


def profile_call(run, prepare, device: str, layer_names: Iterable[str], active_steps: int = DEFAULT_ACTIVE_STEPS,
                 trace_path: Path | None = None) -> CaseProfile:
    """Run `prepare` + `run` on the profiler's schedule (WAIT_STEPS, WARMUP_STEPS, then `active_steps`) with layer
    ranges on, write the active steps' trace (gzipped Chrome JSON) to `trace_path`, and analyse them."""
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    from perfkit.model import layer_ranges

    gpu = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    captured = []

    def ready(prof):
        captured.append(prof.events())
        if trace_path is not None:
            write_trace(prof, trace_path)

    def step():
        if prepare is not None:
            with record_function(UNTIMED_RANGE):
                prepare()
        run()
        if gpu:
            torch.cuda.synchronize(device)

    with layer_ranges():
        step()  # a compiled module recompiles once with the ranges' flag set: not in the profile
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Profiler clears events at the end of each cycle": one cycle is wanted
            with profile(activities=activities, on_trace_ready=ready,
                         schedule=schedule(wait=WAIT_STEPS, warmup=WARMUP_STEPS, active=active_steps, repeat=1)) as p:
                for _ in range(WAIT_STEPS + WARMUP_STEPS + active_steps):
                    step()
                    p.step()
    if not captured:
        raise RuntimeError("the profiler delivered no trace")
    return analyze(captured[0], layer_names, gpu)


def write_trace(prof, path: Path) -> None:
    """The profiler's Chrome-format trace, gzipped (Perfetto and HTA read .json.gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)


def read_trace(path: Path) -> dict:
    """A trace written by `write_trace`, parsed as Chrome trace JSON."""
    with gzip.open(path, "rt") as f:
        return json.load(f)


# -- Nsight Compute ---------------------------------------------------------------------------------------------------------
#: The sections `perfkit profile --ncu` asks for, and the metrics it stores from them.
NCU_SECTIONS = ("SpeedOfLight", "Occupancy", "MemoryWorkloadAnalysis")
NCU_METRICS = {
    "sm_throughput_pct": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram_throughput_pct": "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
    "achieved_occupancy_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "tensor_pipe_pct": "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
}


@dataclass
class NcuKernel:
    kernel: str
    sm_throughput_pct: float | None
    dram_throughput_pct: float | None
    achieved_occupancy_pct: float | None
    tensor_pipe_pct: float | None


def _pct(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def parse_ncu_csv(text: str) -> list[NcuKernel]:
    """Kernels from `ncu --csv --page raw` output: one row per profiled kernel, a header row of metric names, and a
    units row ("%", "") after it. ncu's own log lines (==PROF== ...) before the header are skipped."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("==")]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if not rows:
        return []
    header = rows[0]
    if "Kernel Name" not in header:
        raise ValueError("not ncu --csv --page raw output: no 'Kernel Name' column")
    index = {name: i for i, name in enumerate(header)}
    out = []
    for row in rows[1:]:
        if len(row) < len(header) or not row[index["Kernel Name"]].strip():
            continue  # the units row ("", "%", ...) has no kernel name

        def metric(key):
            i = index.get(NCU_METRICS[key])
            return _pct(row[i]) if i is not None else None

        out.append(NcuKernel(kernel=row[index["Kernel Name"]], sm_throughput_pct=metric("sm_throughput_pct"),
                             dram_throughput_pct=metric("dram_throughput_pct"),
                             achieved_occupancy_pct=metric("achieved_occupancy_pct"),
                             tensor_pipe_pct=metric("tensor_pipe_pct")))
    return out


def ncu_command(child_args: Sequence[str]) -> list[str]:
    """ncu around `python -m perfkit profile ... --ncu-child`: the fixed sections, clocks left to the GPU (so the
    figures describe the clocks the timed runs saw), only the range the child marks with cudaProfilerStart/Stop."""
    cmd = ["ncu", "--csv", "--page", "raw", "--clock-control", "none", "--profile-from-start", "off",
           "--target-processes", "all"]
    for section in NCU_SECTIONS:
        cmd += ["--section", section]
    cmd += ["--metrics", ",".join(NCU_METRICS.values())]
    return cmd + [sys.executable, "-m", "perfkit", "profile", *child_args, "--ncu-child"]


def run_ncu(child_args: Sequence[str], timeout_s: float = 600) -> tuple[list[NcuKernel], str | None]:
    """(kernels, None), or ([], why) when ncu is not on PATH or failed; nothing is stored then."""
    if shutil.which("ncu") is None:
        return [], "ncu (Nsight Compute) is not on PATH: no hardware counters were read"
    try:
        done = subprocess.run(ncu_command(child_args), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return [], f"ncu ran past {timeout_s:g} s and was stopped"
    if done.returncode != 0:
        return [], f"ncu failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
    try:
        kernels = parse_ncu_csv(done.stdout)
    except ValueError as exc:
        return [], f"ncu's output could not be read: {exc}"
    return kernels, None if kernels else "ncu profiled no kernel"


# -- the command ------------------------------------------------------------------------------------------------------------
def layer_names(runner, case: Case) -> list[str]:
    """The layers of a case's model; its ranges are named after them (fused stages join theirs with '+')."""
    from perfkit.runner import case_layers

    return [spec.name for spec in case_layers(runner.network(case), case)]


def profile_cases(runner, cases: Sequence[Case], store_path: Path, active_steps: int = DEFAULT_ACTIVE_STEPS,
                  ncu: bool = False, ncu_args=None, show_progress: bool = True, keep_traces: bool = True,
                  deadline: float | None = None) -> list[dict]:
    """Measure each case (the runner's check and timing, its row stored), then profile it and store the profile.
    Returns the stored profile rows (dicts with PROFILE_COLUMNS, plus `profile`: the CaseProfile or None). Without
    `keep_traces` no trace file is written (the campaign's folder holds a fixed set of files); cases not started by
    `deadline` (time.monotonic()) are left out."""
    import time
    from perfkit.backends import float32_precision, get_backend
    from perfkit.support.progress import Progress
    from perfkit.runner import cpu_threads
    from perfkit.results.store import utc_now

    done = runner.store.finished_case_keys(runner.run_id)
    progress = Progress(len(cases), title="profile", enabled=show_progress)
    out = []
    try:
        for case in cases:
            if deadline is not None and time.monotonic() >= deadline:
                break
            progress.start(case.label)
            if case.key in done:
                row = None
            else:
                row = runner.measure(case)
                runner.store.add_measurement(row, runner.last_power_samples if row.status == "ok" else ())
            timed = _timed_median(runner, case) if row is None else row.time_median_s
            status = "ok" if row is None else row.status
            record = {"run_id": runner.run_id, "case_key": case.key, "steps": None, "profiled_at": utc_now(),
                      "timed_median_s": timed, "profile": None}
            if status != "ok":
                record["note"] = f"not profiled: the case is {status} ({(row.note or '')[:300]})"
                runner.store.add_profile(record)
                out.append(record)
                progress.done(status, record["note"])
                continue
            trace = trace_path_for(Path(store_path), case) if keep_traces else None
            kernels, ncu_note = [], None
            try:
                backend = get_backend(case.backend)
                with cpu_threads(case.threads), float32_precision(case.dtype):
                    run, prepare = runner.work(case, backend).timed()
                    result = profile_call(run, prepare, case.device, layer_names(runner, case), active_steps, trace)
                    del run, prepare
                if ncu and case.device.startswith("cuda"):
                    kernels, ncu_note = run_ncu(ncu_args(case))
                elif ncu:
                    ncu_note = "Nsight Compute profiles GPU kernels: not run for a CPU case"
            except Exception as exc:  # recorded, and the next case goes on
                record["note"] = f"profiling failed: {type(exc).__name__}: {exc}"[:2000]
                runner.store.add_profile(record)
                out.append(record)
                progress.done("error", record["note"])
                continue
            finally:
                if case.device.startswith("cuda") and torch.cuda.is_available():
                    torch.cuda.empty_cache()
            where = str(trace.relative_to(Path(store_path).resolve().parent)) if trace is not None else None
            record.update(trace_path=where, steps=result.steps,
                          profiled_step_s=result.step_s,
                          profiled_over_timed=result.step_s / timed if timed else None,
                          launches_per_step=result.launches_per_step, launches_note=result.launches_note,
                          gpu_idle_share=result.gpu_idle_share, gpu_idle_note=result.gpu_idle_note,
                          note=ncu_note, profile=result)
            runner.store.add_profile(record, result.ops, kernels)
            out.append(record)
            progress.done("ok", f"{result.step_s * 1e3:.3f} ms/step profiled, {result.launches_per_step:.0f} "
                                f"launches/step")
    finally:
        progress.close()
    return out


def _timed_median(runner, case: Case) -> float | None:
    """The timed median already stored for a case of this run (a resumed profile)."""
    rows = runner.store.stored_rows(runner.run_id, [case.key])
    return rows[0].time_median_s if rows else None


def format_profiles(records: list[dict], top: int = 5) -> str:
    """Per case: step time profiled and timed, launches, the top ops by self time with their layers."""
    from perfkit.app.tables import format_table

    parts = []
    for r in records:
        head = f"{r['case_key']}"
        prof: CaseProfile | None = r.get("profile")
        if prof is None:
            parts.append(f"{head}\n  {r.get('note') or 'not profiled'}")
            continue
        ratio = r.get("profiled_over_timed")
        lines = [head,
                 f"  profiled step {prof.step_s * 1e3:.3f} ms over {prof.steps} steps; timed median "
                 f"{(r['timed_median_s'] or 0) * 1e3:.3f} ms; profiled / timed {ratio:.3f}" if ratio else
                 f"  profiled step {prof.step_s * 1e3:.3f} ms over {prof.steps} steps (no timed median)",
                 f"  launches per step: {prof.launches_per_step:.1f} ({prof.launches_note})"]
        if prof.gpu_idle_share is not None:
            lines.append(f"  GPU idle: {prof.gpu_idle_share:.1%} of the step")
        rows = [{"name": o.name, "kind": o.kind, "layer": o.layer, "calls": o.calls_per_step,
                 "self_ms": o.self_s_per_step * 1e3, "share": o.share_of_step}
                for o in prof.top(top, on_device=prof.on_gpu)]
        lines.append("  " + format_table(rows, [
            ("name", "op", None), ("kind", "kind", None), ("layer", "layer", None),
            ("calls", "calls/step", lambda v: f"{v:g}"), ("self_ms", "self ms/step", lambda v: f"{v:.3f}"),
            ("share", "% of step", lambda v: "-" if v is None else f"{v * 100:.1f}")]).replace("\n", "\n  "))
        if r.get("trace_path"):
            lines.append(f"  trace: {r['trace_path']} (Perfetto: ui.perfetto.dev; HTA reads it too)")
        if r.get("note"):
            lines.append(f"  {r['note']}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)



# -- the command ----------------------------------------------------------------------------------------------------------
#: How profiled cases are checked and timed first: the studies' full timing (the ratio's denominator), no energy
#: window (a profile is not an energy measurement), no device peaks (their roofline fields are null, with the reason).
def profile_runner_config():
    from perfkit.runner import RunnerConfig
    from perfkit.study import FULL_TIMING

    return RunnerConfig(timing=FULL_TIMING, energy=False, device_peaks=False, precompile=True)


def selected_cases(args) -> list[Case]:
    """The cases `perfkit profile` was asked for: a study's (`--study`), or the product of the selection options."""
    from perfkit.cases import grid
    from perfkit.study import StudyOptions, resolve_devices

    devices = resolve_devices(args.device)
    if args.study:
        from perfkit.studies import get_study

        options = StudyOptions(devices=devices, quick=args.quick, batch=args.batch, variant=args.variant,
                               threads=args.threads)
        return get_study(args.study).cases(options)
    if args.device == "auto":
        devices = devices[-1:]  # the GPU when there is one, else the CPU
    return grid(variant=args.variant, layer=args.layer, backend=args.backend, device=list(devices),
                dtype=args.dtype, batch=args.batch or DEFAULT_BATCH, pass_name=args.passes, threads=args.threads)



def child_args(case: Case) -> list[str]:
    """The `perfkit profile` arguments that select exactly `case` (for the ncu child process)."""
    args = ["--variant", case.variant, "--layer", case.layer, "--backend", case.backend, "--device", case.device,
            "--dtype", case.dtype, "--batch", str(case.batch), "--pass", case.pass_name]
    return args + (["--threads", str(case.threads)] if case.threads else [])


def run_ncu_child(case: Case) -> int:
    """Inside ncu: build the case, warm it up, and run one step between cudaProfilerStart and Stop."""
    from perfkit.backends import float32_precision, get_backend
    from perfkit.runner import calls_only_runner

    runner = calls_only_runner()
    with float32_precision(case.dtype):
        run, prepare = runner.work(case, get_backend(case.backend)).timed()
        for _ in range(2):
            if prepare:
                prepare()
            run()
        if prepare:
            prepare()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        run()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    return 0


def run_profile_cli(args) -> int:
    """`perfkit profile`: measure and profile the selected cases into the store, print what they come to."""
    import perfkit
    from perfkit.measure.env import collect_environment, environment_id, git_commit, machine_label
    from perfkit.runner import Runner
    from perfkit.results.store import Store

    cases = selected_cases(args)
    if args.ncu_child:
        if len(cases) != 1:
            print("perfkit profile --ncu-child: exactly one case", file=sys.stderr)
            return 2
        return run_ncu_child(cases[0])
    env = collect_environment(probe_gpus=any(c.device.startswith("cuda") for c in cases))
    env_id = environment_id(env)
    store_path = Path(args.store)
    run_args = {"study": "profile", "cases": [c.key for c in cases], "steps": args.steps, "ncu": args.ncu}
    with Store.open(store_path) as store:
        store.add_environment(env, env_id, machine_label(env))
        run_id, resumed = store.start_or_resume_run("profile", run_args, env_id, git_commit(), perfkit.__version__,
                                                    cases_planned=len(cases), resume=not args.new_run)
        runner = Runner(store, run_id, "profile", env, env_id, profile_runner_config(), show_progress=False)
        runner.precompile(cases)  # the triton GPU cases compile on all cores first, as in a study
        records = profile_cases(runner, cases, store_path, args.steps, ncu=args.ncu, ncu_args=child_args,
                                show_progress=not args.no_progress)
        store.finish_run(run_id)
    print(format_profiles(records, args.top))
    print(f"\nstored in {store_path} (tables profiles and profile_ops; run {run_id}); `perfkit dashboard --store "
          f"{store_path}` draws them.", file=sys.stderr)
    failed = [r for r in records if (r.get("note") or "").startswith("profiling failed")]
    return 1 if failed else 0
