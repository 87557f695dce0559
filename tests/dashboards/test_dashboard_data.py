"""Loading stores and benchmark files for the report; the published figures module."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfkit.dashboards import published as ref
from perfkit.dashboards.data import OPTIONAL_COLUMNS, load, load_benchmarks
from perfkit.results.store import Store, StoreError



def test_cpu_store_loads_with_null_energy_and_measured_peaks(cpu_store):
    data = load([cpu_store])
    m = data.measurements
    assert len(m) > 0 and set(m.status) <= {"ok", "incorrect", "skipped", "oom", "error"}
    assert m.energy_j.isna().all() and m.energy_note.notna().all()  # no energy counter here: null with the reason
    assert data.power_samples.empty and len(data.device_peaks) >= 1
    assert len(data.environments) == 1 and data.machines() == [m.machine_id.iloc[0]]
    assert (m.machine_short == next(iter(data.environments.values())).get("hostname")).all()


def test_a_store_that_predates_some_columns_loads_them_as_null(cpu_store, tmp_path):
    import shutil
    import sqlite3

    old = tmp_path / "old.db"
    shutil.copy(cpu_store, old)
    con = sqlite3.connect(old)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for col in ("energy_j", "roofline_fraction"):
        con.execute(f"ALTER TABLE measurements DROP COLUMN {col}")
    con.commit()
    con.close()
    m = load([old]).measurements
    for col in OPTIONAL_COLUMNS:
        assert col in m
    assert m.energy_j.isna().all() and m.roofline_fraction.isna().all()


def test_fabricated_store_has_the_optional_tables(gpu_store):
    data = load([gpu_store])
    assert len(data.power_samples) > 0 and len(data.device_peaks) == 3
    assert data.measurements.energy_per_image_j.notna().any()
    assert all(e.get("fabricated") for e in data.environments.values())


def test_several_stores_and_a_merged_store_give_the_same_rows(cpu_store, gpu_store, merged_store):
    both = load([cpu_store, gpu_store])
    merged = load([merged_store])
    assert len(both.machines()) == 2 and len(merged.machines()) == 2
    key = ["run_id", "case_key"]
    assert sorted(map(tuple, both.measurements[key].values)) == sorted(map(tuple, merged.measurements[key].values))


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("not sqlite")
    with pytest.raises(StoreError):
        load([bad])
    with pytest.raises(StoreError):
        load([tmp_path / "missing.db"])


def test_an_empty_store_loads(tmp_path):
    Store.open(tmp_path / "empty.db").close()
    data = load([tmp_path / "empty.db"])
    assert data.measurements.empty and data.ok.empty


def test_benchmark_files_load_oldest_first_and_others_are_skipped(benchmarks_dir, tmp_path):
    runs = load_benchmarks(benchmarks_dir)
    assert len(runs) == 2 and runs[0].datetime <= runs[1].datetime
    assert {b["name"] for b in runs[0].benchmarks} == {"test_sum[2000]", "test_sum[40000]", "test_sorted"}
    assert runs[0].machine == Path(runs[0].path).parent.name  # pytest-benchmark's <machine>/ folder
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "x" / "broken.json").write_text("{")
    notes: list[str] = []
    assert load_benchmarks(tmp_path, notes) == [] and len(notes) == 2


def test_published_figures_have_sources():
    for r in ref.ALL:
        assert r.source and r.text and r.unit
        assert r.high is None or r.high > r.low


def test_reference_marks_are_perfkits_published_figures():
    """The dashboards keep no numbers of their own: every mark is a figure of perfkit.app.published, value and source."""
    from perfkit.app.published import figure

    for r in ref.ALL:
        f = figure(r.key)
        assert (r.low, r.high) == (f.value if isinstance(f.value, tuple) else (f.value, None))
        assert (r.source, r.derived) == (f.source, f.derived)
