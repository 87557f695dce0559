"""Labels of a timed window that must be true: the warm-up (autotuning, compilation for the timed shape, the
allocator's first growth) runs before the memory window opens, and a compilation inside the timed repetitions is
counted and flagged, never silently timed."""
import torch

from perfkit import runner as runner_module
from perfkit.cases import Case
from perfkit.runner import RunnerConfig
from perfkit.measure.timer import TimingPolicy

FAST = RunnerConfig(timing=TimingPolicy(warmup=1, min_reps=2, min_time_s=0.0), check_batch=2, device_peaks=False,
                    energy=False)


def test_the_timed_call_runs_once_before_the_memory_window_opens(open_runner, monkeypatch):
    events = []

    class RecordingMonitor:
        min_window_s = 0.0

        def begin(self):
            events.append("window opens")

        def end(self):
            events.append("window closes")
            from perfkit.measure.monitors import CpuMemoryWindow

            return CpuMemoryWindow(None, "recording monitor")

    real_work = runner_module.Runner.work

    def recording_work(self, case, backend):
        work = real_work(self, case, backend)
        real_timed = work.timed

        def timed():
            run, prepare = real_timed()

            def run_recorded():
                events.append("timed call")
                return run()

            return run_recorded, prepare

        work.timed = timed
        return work

    monkeypatch.setattr(runner_module, "monitors_for", lambda *a, **k: [RecordingMonitor()])
    monkeypatch.setattr(runner_module.Runner, "work", recording_work)
    [row] = open_runner(FAST).run([Case(layer="conv2", batch=3)])
    assert row.status == "ok", row.note
    assert events[0] == "timed call" and events[1] == "window opens", events
    assert events.count("timed call") >= 1 + 1 + 2  # the one before the window, the timer's warm-up, 2 repetitions


def test_a_compile_inside_the_timed_repetitions_is_counted_and_flagged(open_runner, monkeypatch):
    real_timer_for = runner_module.timer_for

    class CompilingTimer:
        """The CPU timer, after compiling a fresh function with torch.compile: a real dynamo graph inside the
        window."""

        def __init__(self, device):
            self.inner = real_timer_for(device)

        def measure(self, run, prepare, policy, hot_cache=False):
            torch._dynamo.reset()
            torch.compile(lambda t: t * 2 + 1, backend="eager")(torch.ones(3))
            return self.inner.measure(run, prepare, policy, hot_cache)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(runner_module, "timer_for", CompilingTimer)
    [row] = open_runner(FAST).run([Case(layer="conv2", batch=3)])
    assert row.status == "ok" and row.compiles_in_window == 1
    assert "flagged" in row.timing_note and "compile" in row.compile_note


def test_an_eager_row_counts_no_compile_in_its_window(open_runner):
    [row] = open_runner(FAST).run([Case(layer="conv2", batch=3)])
    assert row.compiles_in_window == 0 and row.compile_note is None and row.graphs_compiled is None


def test_device_peaks_are_measured_once_per_machine_in_a_store(tmp_path, monkeypatch):
    """A second study run on the same machine reuses the first run's peaks (copied into its own rows, naming the run
    that measured them) instead of measuring them again."""
    from perfkit.measure.env import collect_environment, environment_id
    from perfkit.runner import Runner
    from perfkit.results.store import Store

    calls = []
    monkeypatch.setattr(runner_module, "measure_matmul_rate", lambda d, t: calls.append((d, t)) or (1e11, "fake mm"))
    monkeypatch.setattr(runner_module, "measure_copy_bandwidth", lambda d: calls.append(d) or (1e10, "fake copy"))
    env = collect_environment()
    env_id = environment_id(env)
    config = RunnerConfig(timing=FAST.timing, check_batch=2, energy=False)
    peaks = []
    with Store.open(tmp_path / "s.db") as store:
        store.add_environment(env, env_id, "m")
        for study in ("first", "second"):
            run_id, _ = store.start_or_resume_run(study, {"study": study}, env_id, None, "0")
            [row] = Runner(store, run_id, study, env, env_id, config, show_progress=False).run(
                [Case(layer="fc8", batch=2, threads=1)])
            assert row.status == "ok" and row.peak_flops_per_s == 1e11
            peaks.append(store.device_peaks(run_id))
    assert len(calls) == 2, calls  # one matmul rate and one copy bandwidth, for the first run only
    [(key, second)] = peaks[1].items()
    assert second["matmul_flops_per_s"] == 1e11 and "measured by run" in second["method"]


def test_a_case_past_its_time_cap_is_stopped_and_recorded_and_the_run_goes_on(open_runner, monkeypatch):
    import time

    real_measure = runner_module.Runner.measure

    def measure(self, case):
        if case.layer == "conv2":
            while True:  # a case that never ends (Python-level work, as a compile or a launch loop is)
                time.sleep(0.01)
        return real_measure(self, case)

    monkeypatch.setattr(runner_module.Runner, "measure", measure)
    # a cap far above what the second case needs, even on a loaded machine
    config = RunnerConfig(timing=FAST.timing, check_batch=2, device_peaks=False, energy=False, case_cap_s=4.0)
    started = time.monotonic()
    rows = open_runner(config).run([Case(layer="conv2", batch=2), Case(layer="relu7", batch=2)])
    assert time.monotonic() - started < 60
    stopped, after = rows
    assert stopped.status == "error" and "stopped after 4 s (its time cap)" in stopped.note
    assert stopped.time_median_s is None and after.status == "ok"


def test_a_case_in_flight_at_the_end_of_the_budget_is_stopped_there(open_runner, monkeypatch):
    import time

    monkeypatch.setattr(runner_module.Runner, "measure", lambda self, case: time.sleep(60))
    config = RunnerConfig(timing=FAST.timing, device_peaks=False, energy=False, case_cap_s=50,
                          stop_at=time.monotonic() + 0.3)
    [row] = open_runner(config).run([Case(layer="conv2", batch=2)])
    assert row.status == "error" and "the end of the time budget" in row.note
