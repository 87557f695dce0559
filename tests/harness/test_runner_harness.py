"""The runner with the harness: energy windows, null fields with reasons, roofline, device peaks, monitor clean-up."""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import perfkit.runner as runner_module
from perfkit.cases import grid
from perfkit.measure.monitors import GpuEnergyWindow, NvmlMonitor, PowerSample
from perfkit.runner import QUICK_ENERGY_NOTE, RunnerConfig, run_in_window
from perfkit.results.store import load_device_peaks, load_measurements, load_power_samples
from perfkit.study import QUICK_TIMING, Study, StudyOptions, Summary, run_study

FAST = RunnerConfig(timing=QUICK_TIMING)

#: Numeric measurement columns that must be None (with a note) or a real, positive reading: never a stand-in 0.
NEVER_ZERO = {
    "energy_j": "energy_note", "energy_window_s": "energy_note", "energy_per_image_j": "energy_note",
    "images_per_j": "energy_note", "cpu_energy_j": "cpu_energy_note", "power_mean_w": "power_note",
    "power_max_w": "power_note", "power_sample_count": "power_note", "sm_clock_mhz": "gpu_note",
    "mem_clock_mhz": "gpu_note", "power_limit_w": "gpu_note", "torch_peak_allocated_bytes": "gpu_memory_note",
    "torch_peak_reserved_bytes": "gpu_memory_note", "nvml_used_bytes": "gpu_memory_note",
    "peak_flops_per_s": "roofline_note", "peak_bytes_per_s": "roofline_note",
    "roofline_bound_flops_per_s": "roofline_note", "roofline_fraction": "roofline_note",
}


def tiny_study(layers=("conv1", "relu1"), passes=("forward",), dtypes=("float32",), batch=2):
    return Study(
        name="tiny", description="a tiny test study", cases=lambda options: grid(layer=list(layers), pass_name=list(passes), dtype=list(dtypes),
                                                batch=batch, device=list(options.devices)),
        summarize=lambda df, options: Summary("done"))


def run(tmp_path, study=None, quick=True, config=None, name="s.db"):
    path = tmp_path / name
    result = run_study(study or tiny_study(), StudyOptions(devices=("cpu",), quick=quick), path, show_progress=False,
                       config=config)
    df = load_measurements(path)
    return df[df.run_id == result.run_id].reset_index(drop=True), path


def assert_null_with_reason_never_zero(df):
    for _, r in df[df.status == "ok"].iterrows():
        for col, note in NEVER_ZERO.items():
            value = r[col]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert isinstance(r[note], str) and r[note], f"{col} is null without a reason in {note}"
            else:
                assert value > 0, f"{col} = {value}"


def test_cpu_run_on_this_machine_stores_null_energy_and_power_with_reasons(tmp_path):
    """A real quick run with the real /sys/class/powercap, whatever this machine offers."""
    df, path = run(tmp_path)
    assert (df.status == "ok").all() and len(df) == 2
    assert_null_with_reason_never_zero(df)
    assert df.energy_j.isna().all()  # quick: skipped, or no RAPL at all
    assert df.energy_note.str.len().gt(0).all() and df.cpu_energy_note.str.len().gt(0).all()
    assert df.power_mean_w.isna().all() and df.power_note.str.contains("GPU rows only").all()
    assert df.sm_clock_mhz.isna().all() and df.gpu_note.str.contains("GPU rows only").all()
    assert df.torch_peak_allocated_bytes.isna().all() and df.gpu_memory_note.notna().all()
    assert (df.l2_flushed == False).all() and (df.cuda_graph == False).all()  # noqa: E712 (nullable booleans)
    assert load_power_samples(path).empty


def test_cpu_run_with_energy_on_this_machine(tmp_path):
    """Not quick: RAPL is measured where readable (a >= 1 s window per case), else null with the reason."""
    df, _ = run(tmp_path, tiny_study(layers=("relu1",)), quick=False, config=FAST)
    assert_null_with_reason_never_zero(df)
    rapl = df.energy_source.eq("rapl")
    assert (df.energy_j[rapl] > 0).all() and df.energy_note[~rapl].notna().all()


def test_every_ok_row_has_its_roofline(tmp_path):
    df, path = run(tmp_path)
    peaks = load_device_peaks(path)
    assert len(peaks) == 1 and peaks.device[0] == "cpu" and peaks.dtype[0] == "float32"
    assert peaks.matmul_flops_per_s[0] > 0 and peaks.copy_bytes_per_s[0] > 0 and "2048" in peaks.method[0]
    for _, r in df.iterrows():
        assert r.peak_flops_per_s == peaks.matmul_flops_per_s[0] and r.peak_bytes_per_s == peaks.copy_bytes_per_s[0]
        bound = min(r.peak_flops_per_s, r.arithmetic_intensity_flops_per_byte * r.peak_bytes_per_s)
        assert r.roofline_bound_flops_per_s == pytest.approx(bound)
        assert r.roofline_fraction == pytest.approx(r.achieved_flops_per_s / bound)
    notes = dict(zip(df.layer, df.roofline_note))
    assert notes["conv1"].startswith("compute-bound") and notes["relu1"].startswith("memory-bound")


@pytest.fixture
def fake_peaks(monkeypatch):
    calls = {"matmul": [], "copy": []}

    def matmul(device, dtype):
        calls["matmul"].append((device, dtype))
        return {"float32": 1e11, "bfloat16": 4e11}[dtype], "fake matmul"

    def copy(device):
        calls["copy"].append(device)
        return 1e10, "fake copy"
    monkeypatch.setattr(runner_module, "measure_matmul_rate", matmul)
    monkeypatch.setattr(runner_module, "measure_copy_bandwidth", copy)
    return calls


def test_peaks_once_per_run_device_and_dtype(tmp_path, fake_peaks):
    study = tiny_study(layers=("relu1", "pool1"), dtypes=("float32", "bfloat16"), batch=1)
    df, path = run(tmp_path, study)
    assert sorted(fake_peaks["matmul"]) == [("cpu", "bfloat16"), ("cpu", "float32")]
    assert fake_peaks["copy"] == ["cpu"]  # one copy measurement per device, shared by its dtypes
    peaks = load_device_peaks(path).set_index("dtype")
    assert peaks.loc["bfloat16", "copy_bytes_per_s"] == peaks.loc["float32", "copy_bytes_per_s"] == 1e10
    assert set(df[df.dtype == "bfloat16"].peak_flops_per_s) == {4e11}


def test_cpu_peaks_are_measured_per_thread_count(tmp_path, fake_peaks):
    """A one-thread case must not be judged against an all-core peak, nor the reverse."""
    study = Study(
        name="threads", description="one layer at 1 and 2 threads", summarize=lambda df, options: Summary("done"),
        cases=lambda options: grid(layer="relu1", batch=1, threads=[1, 2]))
    df, path = run(tmp_path, study)
    assert sorted(fake_peaks["matmul"]) == [("cpu", "float32"), ("cpu", "float32")]
    assert len(fake_peaks["copy"]) == 2
    assert sorted(load_device_peaks(path).threads) == [1, 2]


def test_failed_peak_measurement_leaves_a_reason(tmp_path, monkeypatch):
    def broken(device, dtype):
        raise RuntimeError("no matmul today")
    monkeypatch.setattr(runner_module, "measure_matmul_rate", broken)
    monkeypatch.setattr(runner_module, "measure_copy_bandwidth", lambda device: (1e10, "fake"))
    df, path = run(tmp_path, tiny_study(layers=("relu1",)))
    assert (df.status == "ok").all()
    assert df.roofline_fraction.isna().all() and df.peak_flops_per_s.isna().all()
    assert df.roofline_note.str.contains("no matmul today").all()
    assert "no matmul today" in load_device_peaks(path).note[0]


# -- energy windows with a fake RAPL tree ---------------------------------------------------------------------------------
@pytest.fixture
def live_powercap(powercap):
    """The fake powercap tree, its package-0 counter rising 1 uJ per 10 us (about 100 W) while the test runs."""
    stop = threading.Event()

    def tick():
        energy = powercap / "intel-rapl:0" / "energy_uj"
        value = int(energy.read_text())
        while not stop.wait(0.002):
            value += 200
            # replaced whole, as sysfs reads are: a reader never sees a half-written file
            tmp = energy.with_name("energy_uj.tmp")
            tmp.write_text(f"{value}\n")
            os.replace(tmp, energy)
    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield powercap
    stop.set()
    thread.join()


def test_rapl_energy_window_on_cpu_rows(tmp_path, live_powercap, fake_peaks):
    config = RunnerConfig(timing=QUICK_TIMING, powercap_root=str(live_powercap))
    df, _ = run(tmp_path, tiny_study(layers=("relu1",), passes=("forward", "backward"), batch=2), quick=False,
                config=config)
    assert (df.status == "ok").all()
    assert_null_with_reason_never_zero(df)
    assert (df.energy_source == "rapl").all() and (df.energy_window_s >= 1.0).all()
    assert (df.energy_j == df.cpu_energy_j).all() and (df.energy_j > 0).all()
    fwd = df[df.pass_name == "forward"].iloc[0]
    assert fwd.energy_per_image_j * fwd.images_per_j == pytest.approx(1.0)
    assert fwd.energy_per_image_j < fwd.energy_j / 2  # many repetitions of 2 images in the window
    bwd = df[df.pass_name == "backward"].iloc[0]
    assert math.isnan(bwd.energy_per_image_j) and "untimed forward" in bwd.energy_note


def test_quick_runs_skip_the_energy_window_and_say_so(tmp_path, live_powercap, fake_peaks):
    config = RunnerConfig(timing=QUICK_TIMING, powercap_root=str(live_powercap), energy=False)
    df, _ = run(tmp_path, tiny_study(layers=("relu1",)), config=config)
    assert df.energy_j.isna().all() and (df.energy_note == QUICK_ENERGY_NOTE).all()
    assert (df.cpu_energy_note == QUICK_ENERGY_NOTE).all()


def test_study_quick_option_turns_energy_off(tmp_path, monkeypatch, fake_peaks):
    seen = []
    real = runner_module.Runner.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.config.energy)
    monkeypatch.setattr(runner_module.Runner, "__init__", spy)
    run(tmp_path, tiny_study(layers=("relu1",)), quick=True, name="q.db")
    run(tmp_path, tiny_study(layers=("relu1",)), quick=False, name="f.db")
    assert seen == [False, True]


# -- the monitor seam, with recording monitors ----------------------------------------------------------------------------
@dataclass
class Noted:
    cpu_memory_note: str | None = None


class Recording:
    """A monitor that counts its windows; a sustained one returns GPU-like energy and power samples."""

    def __init__(self, min_window_s=0.0, fail_end=False):
        self.min_window_s = min_window_s
        self.fail_end = fail_end
        self.began = self.ended = 0
        self.samples = []

    def begin(self):
        self.began += 1

    def end(self):
        self.ended += 1
        if self.fail_end:
            raise OSError("monitor end failed")
        if not self.min_window_s:
            return Noted("recorded")
        self.samples = [PowerSample(0.01 * i, 100.0 + i, "fake") for i in range(4)]
        return GpuEnergyWindow(energy_j=6.0, energy_window_s=0.05, energy_source="nvml_total_energy",
                               power_mean_w=101.5, power_max_w=103.0, power_sample_count=4)

    def unmeasured(self, reason):
        return GpuEnergyWindow.unmeasured(reason)


@pytest.fixture
def recording(monkeypatch, fake_peaks):
    made = []

    def monitors_for(device, *args, **kwargs):
        group = [Recording(), Recording(min_window_s=0.05)]
        made.append(group)
        return group
    monkeypatch.setattr(runner_module, "monitors_for", monitors_for)
    return made


def test_sustained_window_energy_per_image_and_power_samples(tmp_path, recording):
    df, path = run(tmp_path, tiny_study(layers=("relu1",), batch=2), quick=False, config=FAST)
    r = df.iloc[0]
    assert r.status == "ok" and r.cpu_memory_note == "recorded" and r.energy_j == 6.0
    images = 6.0 / r.energy_per_image_j
    assert images == pytest.approx(r.images_per_j * 6.0) and images % 2 == 0 and images >= 2
    samples = load_power_samples(path)
    assert list(samples.sample_index) == [0, 1, 2, 3] and (samples.case_key == r.case_key).all()
    timing, sustained = recording[0]
    assert (timing.began, timing.ended, sustained.began, sustained.ended) == (1, 1, 1, 1)


def test_monitors_end_when_the_timed_case_fails(tmp_path, recording, monkeypatch):
    class BrokenTimer:
        def cuda_graph(self, run, prepare=None):
            return run, False, None

        def measure(self, *args, **kwargs):
            raise RuntimeError("kernel exploded")
    monkeypatch.setattr(runner_module, "timer_for", lambda device: BrokenTimer())
    df, path = run(tmp_path, tiny_study(layers=("relu1",)), quick=False, config=FAST)
    assert df.status[0] == "error" and "kernel exploded" in df.note[0]
    timing, sustained = recording[0]
    assert (timing.began, timing.ended) == (1, 1) and sustained.began == 0
    assert load_power_samples(path).empty


def test_monitors_end_when_the_sustained_window_fails(tmp_path, recording, monkeypatch):
    real_timer_for = runner_module.timer_for

    def timer_for(device):
        timer = real_timer_for(device)
        timer.repeat_for = lambda *a: (_ for _ in ()).throw(RuntimeError("window exploded"))
        return timer
    monkeypatch.setattr(runner_module, "timer_for", timer_for)
    df, path = run(tmp_path, tiny_study(layers=("relu1",)), quick=False, config=FAST)
    assert df.status[0] == "error" and "window exploded" in df.note[0]
    timing, sustained = recording[0]
    assert (sustained.began, sustained.ended) == (1, 1)
    assert load_power_samples(path).empty  # an error row keeps no samples


def test_a_failing_end_still_ends_the_others(tmp_path, monkeypatch, fake_peaks):
    group = [Recording(), Recording(fail_end=True), Recording()]
    monkeypatch.setattr(runner_module, "monitors_for", lambda device, *a, **k: group)
    df, _ = run(tmp_path, tiny_study(layers=("relu1",)), quick=False, config=FAST)
    assert df.status[0] == "error" and "monitor end failed" in df.note[0]
    assert [m.ended for m in group] == [1, 1, 1]


def test_quick_marks_sustained_monitors_unmeasured(tmp_path, recording):
    df, _ = run(tmp_path, tiny_study(layers=("relu1",)), quick=True)
    assert recording[0][1].began == 0
    assert df.energy_note[0] == df.power_note[0] == df.gpu_note[0] == QUICK_ENERGY_NOTE


def test_cuda_graph_option_on_cpu_is_noted(tmp_path, fake_peaks):
    study = Study(name="g", description="the cuda_graph option", summarize=lambda df, o: Summary("done"),
                  cases=lambda o: grid(layer="relu1", batch=1, options=(("cuda_graph", True),)))
    df, _ = run(tmp_path, study)
    assert df.status[0] == "ok" and df.cuda_graph[0] == False  # noqa: E712
    assert "GPU timing only" in df.timing_note[0]


def test_resumed_run_reuses_stored_peaks(tmp_path, fake_peaks):
    path = Path(tmp_path / "r.db")
    study = tiny_study(layers=("relu1", "pool1"), batch=1)
    from perfkit.results.store import Store

    result = run_study(study, StudyOptions(devices=("cpu",), quick=True), path, show_progress=False)
    with Store.open(path) as store:  # pretend the run was killed after its first case
        store.con.execute("UPDATE runs SET finished_at = NULL")
        store.con.execute("DELETE FROM measurements WHERE layer = 'pool1'")
    fake_peaks["matmul"].clear()
    again = run_study(study, StudyOptions(devices=("cpu",), quick=True), path, show_progress=False)
    assert again.resumed and again.run_id == result.run_id and again.rows_added == 1
    assert fake_peaks["matmul"] == []  # the stored peaks were used


def test_nvml_monitor_is_ended_when_the_window_body_fails(fake_nvml):
    monitor = NvmlMonitor(fake_nvml, fake_nvml.gpu, interval_s=0.005)

    def body():
        time.sleep(0.02)
        raise RuntimeError("the case failed")
    with pytest.raises(RuntimeError, match="the case failed"):
        run_in_window([monitor], body)
    assert monitor._thread is None
    assert not [t for t in threading.enumerate() if t.name == "perfkit-nvml-sampler"]
