"""Helpers for the study tests: a fixture that runs a study in-process with a short timing policy and a narrowed grid,
DataFrames of measurements whose numbers the test chooses, and a fast runner config. (Not a conftest.py: tests/ has
no packages, and a second module named `conftest` would shadow tests/conftest.py for `from conftest import ...`.)"""
from __future__ import annotations

from dataclasses import asdict, replace

import pandas as pd
import pytest

from perfkit.cases import Case
from perfkit.results.records import Measurement
from perfkit.runner import RunnerConfig
from perfkit.results.store import load_measurements, load_summaries
from perfkit.studies import _common, get_study
from perfkit.study import StudyOptions, run_study
from perfkit.measure.timer import TimingPolicy

#: One repetition after one warm-up, a one-image check, no device-peak measurement: enough to exercise every path,
#: not to measure.
FAST = RunnerConfig(timing=TimingPolicy(warmup=1, min_reps=1, min_time_s=0.0), check_batch=1, device_peaks=False)


@pytest.fixture
def gpu_machine(monkeypatch):
    """Studies plan as on a machine with a GPU (no kernel runs: for the grids only)."""
    monkeypatch.setattr(_common, "gpu_visible", lambda: True)


@pytest.fixture
def cpu_machine(monkeypatch):
    """Studies plan as on a machine without a GPU."""
    monkeypatch.setattr(_common, "gpu_visible", lambda: False)


@pytest.fixture
def run_quick(tmp_path):
    """run_quick(name, peaks=False, **extra) -> (result, this run's rows, its summaries): the study's --quick form on
    the CPU at batch 1, its grid narrowed by `extra` (options.extra: layers, passes, dtypes, batches); `peaks` measures
    the device peaks (seconds per dtype and thread count on a small CPU)."""

    def run(name, devices=("cpu",), peaks=False, **extra):
        options = StudyOptions(devices=devices, quick=True, batch=1, extra=extra)
        store = tmp_path / f"{name}.db"
        study = get_study(name)
        config = replace(FAST, device_peaks=peaks, energy=study.energy_for(options))
        result = run_study(study, options, store, show_progress=False, config=config)
        df = load_measurements(store)
        summaries = load_summaries(store)
        return result, df[df.run_id == result.run_id].reset_index(drop=True), summaries

    return run


def measured(case: Case, status="ok", time_s=None, **fields) -> dict:
    """A measurement row as the store holds it, for `case`, with a chosen median time (images/s and rates follow)."""
    row = Measurement(run_id="run", case_key=case.key, study="test", variant=case.variant, layer=case.layer,
                      layer_kind="network" if case.layer == "network" else "conv", backend=case.backend,
                      is_baseline=case.backend == "torch", device=case.device, dtype=case.dtype, batch=case.batch,
                      pass_name=case.pass_name, activation=case.activation,
                      options="{" + ", ".join(f'"{k}": {str(v).lower()}' for k, v in case.options) + "}",
                      env_id="env", status=status, threads=case.threads,
                      device_name="Test GPU" if case.device.startswith("cuda") else "Test CPU")
    data = asdict(row)
    if status == "ok":
        data.update(time_median_s=time_s, images_per_s=case.batch / time_s, error_rel=1e-6)
    data.update(fields)
    return data


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows)
