"""Study tests: run a study in-process with a short timing policy and a narrowed grid."""
from __future__ import annotations

import pytest
from study_helpers import FAST

from perfkit.store import load_measurements, load_summaries
from perfkit.studies import get_study
from perfkit.study import StudyOptions, run_study


@pytest.fixture
def run_quick(tmp_path):
    """run_quick(name, **extra) -> (result, this run's rows, its summaries): the study's --quick form on the CPU at
    batch 1, its grid narrowed by `extra` (options.extra: layers, passes, dtypes, batches)."""

    def run(name, devices=("cpu",), **extra):
        options = StudyOptions(devices=devices, quick=True, batch=1, extra=extra)
        store = tmp_path / f"{name}.db"
        result = run_study(get_study(name), options, store, show_progress=False, config=FAST)
        df = load_measurements(store)
        summaries = load_summaries(store)
        return result, df[df.run_id == result.run_id].reset_index(drop=True), summaries

    return run
