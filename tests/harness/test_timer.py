"""Timers: percentile math, L2-flush sizing, repetition planning, and the CUDA timer's logic on a fake torch.cuda."""
from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

from perfkit.measure import timer as timer_module
from perfkit.measure.timer import (MIN_L2_FLUSH_BYTES, CpuTimer, CudaEventTimer, Timing, TimingPolicy, l2_flush_bytes,
                           percentile, reps_for)

MiB = 1 << 20


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], list(np.linspace(0, 1, 37) ** 2)])
@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
def test_percentile_matches_numpy_linear(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_timing_summary():
    t = Timing("cuda_event", (0.004, 0.001, 0.003, 0.002, 0.005), 2, l2_flushed=True)
    fields = t.record_fields()
    assert fields["time_median_s"] == 0.003 and fields["repetitions"] == 5 and fields["warmup_repetitions"] == 2
    assert fields["time_p10_s"] == pytest.approx(0.0014) and fields["time_p90_s"] == pytest.approx(0.0046)
    assert fields["l2_flushed"] is True and fields["timing_note"] is None


@pytest.mark.parametrize("l2, want", [
    (None, MIN_L2_FLUSH_BYTES),  # do_bench's 256 MiB at least
    (50 * MiB, MIN_L2_FLUSH_BYTES),  # H100: 50 MiB L2, twice is 100 MiB < 256 MiB
    (40 * MiB, MIN_L2_FLUSH_BYTES),
    (192 * MiB, 384 * MiB),  # a large L2: twice its size
    (200 * MiB + 3, 400 * MiB + 8),  # int32 elements: a multiple of 4
])
def test_l2_flush_bytes(l2, want):
    got = l2_flush_bytes(l2)
    assert got == want and got % 4 == 0 and got >= 2 * (l2 or 0)


def test_reps_for():
    policy = TimingPolicy(warmup=1, min_reps=5, max_reps=100, min_time_s=0.1)
    assert reps_for(0.001, policy) == 100  # 100 x 1 ms fills 0.1 s; capped by max_reps
    assert reps_for(0.05, policy) == 5  # the minimum count dominates
    assert reps_for(0.01, policy, done_reps=5, done_s=0.05) == 5
    assert reps_for(0.01, policy, done_reps=10, done_s=0.1) == 0
    assert reps_for(0.0, policy, done_reps=99, done_s=0.0) == 1


def test_cpu_timer_keeps_its_behaviour():
    calls = []
    t = CpuTimer().measure(lambda: calls.append("run"), lambda: calls.append("prep"),
                           TimingPolicy(warmup=2, min_reps=4, min_time_s=0.0))
    assert t.timer == "perf_counter" and t.repetitions == 4 and t.warmup_repetitions == 2
    assert calls == ["prep", "run"] * 6
    assert t.l2_flushed is False and t.note is None


def test_cpu_repeat_for_and_graph():
    timer = CpuTimer()
    began = time.perf_counter()
    calls = timer.repeat_for(lambda: time.sleep(0.01), None, 0.05)
    assert time.perf_counter() - began >= 0.05 and 1 <= calls <= 6  # sleeps overshoot on a loaded machine
    run = object()
    assert timer.cuda_graph(run) == (run, False, "cuda_graph asked for, but CUDA graphs apply to GPU timing only")


# -- the CUDA timer on a fake torch.cuda --------------------------------------------------------------------------------
class FakeCuda:
    """Events stamp the wall clock, so a fake 'GPU' runs synchronously on the CPU."""

    def __init__(self, log):
        self.log = log
        self.syncs = 0
        outer = self

        class Event:
            def __init__(self, enable_timing=False):
                self.t = None

            def record(self):
                outer.log.append("event")
                self.t = time.perf_counter()

            def elapsed_time(self, other):
                return (other.t - self.t) * 1e3

        self.Event = Event

    def synchronize(self, device=None):
        self.syncs += 1

    def device(self, device):
        return contextlib.nullcontext()


class FakeFlush:
    def __init__(self, log):
        self.log = log

    def zero_(self):
        self.log.append("flush")


@pytest.fixture
def fake_gpu_timer(monkeypatch):
    log: list[str] = []
    timer = CudaEventTimer("cuda:0")  # builds a torch.device only: no CUDA
    timer.torch = type("FakeTorch", (), {"cuda": FakeCuda(log)})()
    monkeypatch.setattr(timer_module, "l2_flush_buffer", lambda device: FakeFlush(log))
    return timer, log


def test_cuda_timer_flushes_before_every_repetition_outside_the_events(fake_gpu_timer):
    timer, log = fake_gpu_timer
    policy = TimingPolicy(warmup=1, min_reps=10, min_time_s=0.0)
    t = timer.measure(lambda: (log.append("run"), time.sleep(0.001)), None, policy)
    assert t.timer == "cuda_event" and t.l2_flushed is True
    assert t.repetitions >= 10
    assert t.warmup_repetitions >= 2  # the policy's one, then more until 25 ms have passed
    timed = log[log.index("event") - 1:]  # from the first timed repetition's flush
    assert timed == ["flush", "event", "run", "event"] * t.repetitions
    assert log[:log.index("event") - 1] == ["flush", "run"] * t.warmup_repetitions
    assert all(0.0009 < s < 1.0 for s in t.times_s)


def test_cuda_timer_hot_cache_never_flushes(fake_gpu_timer):
    timer, log = fake_gpu_timer
    t = timer.measure(lambda: log.append("run"), None, TimingPolicy(warmup=1, min_reps=5, min_time_s=0.0),
                      hot_cache=True)
    assert "flush" not in log and t.l2_flushed is False


def test_cuda_timer_prepare_runs_before_the_flush(fake_gpu_timer):
    timer, log = fake_gpu_timer
    timer.measure(lambda: log.append("run"), lambda: log.append("prep"),
                  TimingPolicy(warmup=1, min_reps=3, min_time_s=0.0))
    assert log[-5:] == ["prep", "flush", "event", "run", "event"]


def test_cuda_timer_meets_the_policy_without_a_sync_per_repetition(fake_gpu_timer):
    timer, log = fake_gpu_timer
    cuda = timer.torch.cuda
    policy = TimingPolicy(warmup=1, min_reps=3, max_reps=10_000, min_time_s=0.05)
    t = timer.measure(lambda: time.sleep(0.0005), None, policy)
    assert sum(t.times_s) >= 0.05 and t.repetitions >= 3
    syncs_timed = cuda.syncs - t.warmup_repetitions  # warm-up drains once per repetition past the policy's
    assert syncs_timed <= 5 < t.repetitions  # a sync per batch, not per repetition


def test_cuda_timer_respects_max_reps(fake_gpu_timer):
    timer, _ = fake_gpu_timer
    t = timer.measure(lambda: None, None, TimingPolicy(warmup=0, min_reps=1, max_reps=7, min_time_s=10.0))
    assert t.repetitions == 7


def test_cuda_graph_refused_for_a_pass_with_a_prepare_step(fake_gpu_timer):
    timer, _ = fake_gpu_timer
    run = object()
    call, used, note = timer.cuda_graph(run, prepare=lambda: None)
    assert call is run and used is False and "untimed step" in note


def test_cuda_repeat_for_drains_the_gpu_at_both_ends(fake_gpu_timer):
    timer, _ = fake_gpu_timer
    began = time.perf_counter()
    calls = timer.repeat_for(lambda: time.sleep(0.005), None, 0.03)
    assert time.perf_counter() - began >= 0.03 and 1 <= calls <= 7 and timer.torch.cuda.syncs == 2
