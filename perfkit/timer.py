"""Timers: repeat a call until enough time is measured and report the distribution.

`timer_for(device)` picks the device-aware timer: perf_counter on the CPU, CUDA events on a GPU. Every timer takes the
timed call `run` and an optional untimed `prepare` called before each repetition (the backward pass needs a fresh
forward graph each time), and returns a `Timing`.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
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
        return TimingPolicy(self.warmup, self.min_reps, self.max_reps, max(self.min_time_s, min_time_s))


@dataclass(frozen=True)
class Timing:
    """Per-repetition times of one case, in seconds."""

    timer: str
    times_s: tuple[float, ...]
    warmup_repetitions: int

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
                "repetitions": self.repetitions, "warmup_repetitions": self.warmup_repetitions}


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
                policy: TimingPolicy = TimingPolicy()) -> Timing:
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


class CudaEventTimer:
    """GPU time of each call between two CUDA events on the current stream, synchronized per repetition so a
    repetition's prepare step never overlaps the timed call."""

    name = "cuda_event"

    def __init__(self, device: str = "cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def measure(self, run, prepare=None, policy: TimingPolicy = TimingPolicy()) -> Timing:
        torch = self.torch
        with torch.cuda.device(self.device):
            for _ in range(policy.warmup):
                if prepare:
                    prepare()
                run()
            torch.cuda.synchronize()
            times: list[float] = []
            while len(times) < policy.max_reps and (len(times) < policy.min_reps or sum(times) < policy.min_time_s):
                if prepare:
                    prepare()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
        return Timing(self.name, tuple(times), policy.warmup)


def timer_for(device: str):
    """The timer that measures work on `device` ("cpu", "cuda", "cuda:1")."""
    if device.startswith("cuda"):
        return CudaEventTimer(device)
    return CpuTimer()
