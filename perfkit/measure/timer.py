"""Timers: repeat a call until enough time is measured and report the distribution.

`timer_for(device)` picks the device-aware timer: perf_counter on the CPU, CUDA events on a GPU. Every timer takes the
timed call `run` and an optional untimed `prepare` called before each repetition (the backward pass needs a fresh
forward graph each time), and returns a `Timing`. `repeat_for(run, prepare, seconds)` runs the call back to back,
untimed, for at least `seconds` of wall time: the sustained window the energy monitors measure.

On a GPU (`CudaEventTimer`), as `triton.testing.do_bench` does it:
- warm-up: the policy's warm-up repetitions, and at least 25 ms of them (do_bench's default), so clocks have ramped;
- each repetition is bracketed by two CUDA events on the current stream; events are read after the batch of
  repetitions, with no synchronisation in between, so the GPU never idles waiting for the next launch;
- before each repetition the L2 cache is flushed by zeroing an int32 buffer of at least twice the device's L2 size
  (and at least do_bench's 256 MiB), outside the events, unless a hot-cache run is asked for;
- CUDA-graph replay (`capture_cuda_graph`) turns the call into one graph launch, taking CPU launch overhead out.
Times are per repetition; the `Timing` reports their median, p10, p90 and count.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence


@dataclass(frozen=True)
class TimingPolicy:
    """How long to measure: `warmup` untimed repetitions, then at least `min_reps` and at least `min_time_s` of
    measured time, at most `max_reps`."""

    warmup: int = 1
    min_reps: int = 3
    max_reps: int = 10_000
    min_time_s: float = 0.5

    def with_min_time(self, min_time_s: float) -> TimingPolicy:
        return replace(self, min_time_s=max(self.min_time_s, min_time_s))


@dataclass(frozen=True)
class Timing:
    """Per-repetition times of one case, in seconds."""

    timer: str
    times_s: tuple[float, ...]
    warmup_repetitions: int
    l2_flushed: bool = False  # the GPU's L2 was flushed before each repetition (never on the CPU)
    note: str | None = None

    @property
    def repetitions(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    @property
    def p10_s(self) -> float:
        return percentile(self.times_s, 10)

    @property
    def p90_s(self) -> float:
        return percentile(self.times_s, 90)

    @property
    def total_s(self) -> float:
        return sum(self.times_s)

    def record_fields(self) -> dict:
        return {"timer": self.timer, "time_median_s": self.median_s, "time_p10_s": self.p10_s,
                "time_p90_s": self.p90_s, "time_mean_s": self.mean_s, "time_min_s": self.min_s,
                "repetitions": self.repetitions, "warmup_repetitions": self.warmup_repetitions,
                "l2_flushed": self.l2_flushed, "timing_note": self.note}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class CpuTimer:
    """Wall-clock time of each call with time.perf_counter (CPU work is synchronous)."""

    name = "perf_counter"

    def measure(self, run: Callable[[], object], prepare: Callable[[], object] | None = None,
                policy: TimingPolicy = TimingPolicy(), hot_cache: bool = False) -> Timing:
        """`hot_cache` is accepted for symmetry with the GPU timer: CPU caches are never flushed."""
        for _ in range(policy.warmup):
            if prepare:
                prepare()
            run()
        times: list[float] = []
        while len(times) < policy.max_reps and (len(times) < policy.min_reps or sum(times) < policy.min_time_s):
            if prepare:
                prepare()
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return Timing(self.name, tuple(times), policy.warmup)

    def repeat_for(self, run: Callable[[], object], prepare: Callable[[], object] | None, seconds: float) -> int:
        """Run `prepare` + `run` back to back for at least `seconds`; the number of calls of `run`."""
        return _repeat_for(run, prepare, seconds, sync=None)

    def cuda_graph(self, run, prepare=None):
        """CUDA graphs do not exist on the CPU: the call itself, unchanged, and why."""
        return run, False, "cuda_graph asked for, but CUDA graphs apply to GPU timing only"


#: do_bench's flush buffer (triton.runtime.driver ... get_empty_cache_for_benchmark): 256 MiB.
MIN_L2_FLUSH_BYTES = 256 * 1024 * 1024
#: do_bench's default warm-up time; the GPU timer warms up at least this long.
GPU_WARMUP_S = 0.025


def l2_flush_bytes(l2_cache_bytes: int | None) -> int:
    """Size of the buffer whose zeroing flushes the L2: at least twice the L2 (so no line of the previous repetition
    survives, whatever the replacement policy) and at least do_bench's 256 MiB (so the two agree). A multiple of 4:
    the buffer is int32, as do_bench's is."""
    size = max(MIN_L2_FLUSH_BYTES, 2 * int(l2_cache_bytes or 0))
    return (size + 3) // 4 * 4


_FLUSH_BUFFERS: dict = {}  # torch device -> the int32 tensor zeroed between repetitions (kept: allocating costs)


def l2_flush_buffer(device):
    """The L2-flush buffer of a CUDA device, allocated on first use and kept for the process."""
    import torch

    device = torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in _FLUSH_BUFFERS:
        l2 = torch.cuda.get_device_properties(device).L2_cache_size
        _FLUSH_BUFFERS[device] = torch.empty(l2_flush_bytes(l2) // 4, dtype=torch.int32, device=device)
    return _FLUSH_BUFFERS[device]


def l2_flush_buffer_bytes(device) -> int:
    """Bytes the L2-flush buffer of `device` holds in torch's allocator (0 before its first use). The CUDA memory
    monitor subtracts them: the buffer is the harness's, not the case's."""
    import torch

    device = torch.device(device)
    for dev, buf in _FLUSH_BUFFERS.items():
        if dev == device or (device.index is None and dev.type == device.type):
            return buf.numel() * buf.element_size()
    return 0


def reps_for(estimate_s: float, policy: TimingPolicy, done_reps: int = 0, done_s: float = 0.0) -> int:
    """How many more repetitions of about `estimate_s` each reach the policy's minimum count and minimum time, given
    `done_reps` taking `done_s` already; never past `max_reps`."""
    left = policy.max_reps - done_reps
    if left <= 0:
        return 0
    want = max(policy.min_reps - done_reps, 0)
    if done_s < policy.min_time_s:
        want = max(want, math.ceil((policy.min_time_s - done_s) / max(estimate_s, 1e-7)))
    return min(max(want, 0), left)


def capture_cuda_graph(run: Callable[[], object], warmup: int = 3):
    """`run` captured into a CUDA graph; returns the graph's replay (which keeps the graph alive).

    As torch.cuda.graphs documents: warm up on a side stream (lazy allocations and cuBLAS workspaces happen before
    capture), then capture one call on the capturing stream. Tensors the call allocates live in the graph's private
    memory pool and are rewritten in place by each replay."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    torch.cuda.synchronize()
    return graph.replay


class CudaEventTimer:
    """GPU time of each call between two CUDA events on the current stream (see the module docstring)."""

    name = "cuda_event"

    def __init__(self, device: str = "cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def cuda_graph(self, run, prepare=None):
        """(call, used, note): `run` as the replay of a captured CUDA graph, or unchanged with the reason why not.
        A pass with an untimed `prepare` (backward needs a fresh forward graph each time) cannot be replayed."""
        if prepare is not None:
            return run, False, ("cuda_graph asked for, but not used: this pass needs an untimed step before each "
                                "repetition, which one replayed graph cannot interleave")
        with self.torch.cuda.device(self.device):
            return capture_cuda_graph(run), True, None

    def measure(self, run, prepare=None, policy: TimingPolicy = TimingPolicy(), hot_cache: bool = False) -> Timing:
        torch = self.torch
        with torch.cuda.device(self.device):
            flush = None if hot_cache else l2_flush_buffer(self.device)

            def one(start=None, end=None):
                if prepare:
                    prepare()
                if flush is not None:
                    flush.zero_()
                if start is not None:
                    start.record()
                run()
                if end is not None:
                    end.record()

            # warm-up: the policy's repetitions, then one at a time (drained, so the clock sees GPU time) until
            # GPU_WARMUP_S has passed
            began = time.perf_counter()
            for _ in range(policy.warmup):
                one()
            warm = policy.warmup
            torch.cuda.synchronize()
            while time.perf_counter() - began < GPU_WARMUP_S and warm < policy.max_reps:
                one()
                warm += 1
                torch.cuda.synchronize()
            # a first batch sized from one timed repetition, then more batches while the policy is not met
            times: list[float] = []
            batch = 1
            while batch > 0:
                events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                          for _ in range(batch)]
                for start, end in events:
                    one(start, end)
                torch.cuda.synchronize()
                times.extend(start.elapsed_time(end) / 1e3 for start, end in events)
                batch = reps_for(statistics.median(times), policy, len(times), sum(times))
        return Timing(self.name, tuple(times), warm, l2_flushed=flush is not None)

    def repeat_for(self, run, prepare, seconds: float) -> int:
        """Run back to back (no flush, no events) for at least `seconds` of wall time, the GPU drained at both ends;
        the number of calls of `run`."""
        with self.torch.cuda.device(self.device):
            return _repeat_for(run, prepare, seconds, sync=self.torch.cuda.synchronize)


def _repeat_for(run, prepare, seconds: float, sync) -> int:
    if sync:
        sync()
    began = time.perf_counter()
    calls = 0
    while True:
        if prepare:
            prepare()
        run()
        calls += 1
        # On a GPU the CPU runs ahead of the device by up to the launch queue; the window then ends when the queue
        # has drained (the final sync), a little past `seconds`, and the monitors time the window themselves.
        if time.perf_counter() - began >= seconds:
            break
    if sync:
        sync()
    return calls


def timer_for(device: str):
    """The timer that measures work on `device` ("cpu", "cuda", "cuda:1")."""
    if device.startswith("cuda"):
        return CudaEventTimer(device)
    return CpuTimer()
