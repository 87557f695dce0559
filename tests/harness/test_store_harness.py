"""Store schema 2: power_samples and device_peaks tables, the harness columns, older stores, merging."""
from __future__ import annotations

import sqlite3
from collections import namedtuple

import pytest

from perfkit.results.records import MEASUREMENT_FIELDS, Measurement
from perfkit.results.store import (SCHEMA_VERSION, Store, load_device_peaks, load_measurements, load_power_samples, merge)

PowerSample = namedtuple("PowerSample", "t_s power_w source")  # what the NVML monitor's samples look like

HARNESS_COLUMNS = (
    "l2_flushed", "cuda_graph", "torch_peak_allocated_bytes", "torch_peak_reserved_bytes", "nvml_used_bytes",
    "gpu_memory_note", "energy_j", "energy_window_s", "energy_source", "energy_note", "energy_per_image_j",
    "images_per_j", "cpu_energy_j", "cpu_energy_note", "power_mean_w", "power_max_w", "power_sample_count",
    "power_note", "sm_clock_mhz", "mem_clock_mhz", "temperature_c_start", "temperature_c_end", "power_limit_w",
    "gpu_utilization_pct", "clock_event_reasons", "power_or_thermal_throttled", "gpu_note", "peak_flops_per_s",
    "peak_bytes_per_s", "roofline_bound_flops_per_s", "roofline_fraction", "roofline_note")


def test_the_columns_the_dashboards_expect():
    missing = [c for c in HARNESS_COLUMNS if c not in MEASUREMENT_FIELDS]
    assert not missing


def row(run_id, key, **kw):
    return Measurement(run_id=run_id, case_key=key, study="s", variant="alexnet2012", layer="conv1",
                       layer_kind="conv", backend="torch", is_baseline=True, device="cuda:0", dtype="bfloat16",
                       batch=128, pass_name="forward", activation="relu", options="{}", env_id="e", **kw)


def fill(path, run_id="run-a", samples=3):
    with Store.open(path) as store:
        store.add_environment({"machine_id": "m"}, "e", "gpu box")
        rid, _ = store.start_or_resume_run("s", {"a": run_id}, "e", None, "0.1.0")
        store.add_measurement(row(rid, "k1", energy_j=12.5, power_mean_w=250.0, l2_flushed=True, cuda_graph=False,
                                  power_or_thermal_throttled=True),
                              [PowerSample(0.02 * i, 200.0 + i, "nvml_power_instant") for i in range(samples)])
        store.add_device_peak({"run_id": rid, "device": "cuda:0", "device_name": "H100", "dtype": "bfloat16",
                               "threads": 8, "matmul_flops_per_s": 7.9e14, "copy_bytes_per_s": 3.0e12, "method": "m",
                               "measured_at": "now"})
        store.finish_run(rid)
        return rid


def test_new_tables_and_loaders(tmp_path):
    path = tmp_path / "a.db"
    rid = fill(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    con.close()
    samples = load_power_samples(path)
    assert list(samples.sample_index) == [0, 1, 2] and list(samples.power_w) == [200.0, 201.0, 202.0]
    assert set(samples.case_key) == {"k1"} and set(samples.run_id) == {rid}
    peaks = load_device_peaks(path)
    assert len(peaks) == 1 and peaks.matmul_flops_per_s[0] == 7.9e14 and peaks.dtype[0] == "bfloat16"
    df = load_measurements(path)
    assert df.l2_flushed.dtype == "boolean" and bool(df.power_or_thermal_throttled[0]) is True
    assert df.energy_j[0] == 12.5
    with Store.open(path) as store:
        assert store.device_peaks(rid)[("cuda:0", "bfloat16", 8)]["copy_bytes_per_s"] == 3.0e12


def test_measurement_and_its_samples_commit_together(tmp_path):
    path = tmp_path / "a.db"
    rid = fill(path)
    with Store.open(path) as store:
        with pytest.raises(sqlite3.IntegrityError):  # the same case again: neither the row nor its samples land
            store.add_measurement(row(rid, "k1"), [PowerSample(0.0, 1.0, "x")] * 5)
    assert len(load_power_samples(path)) == 3


def test_first_device_peak_stays(tmp_path):
    path = tmp_path / "a.db"
    rid = fill(path)
    with Store.open(path) as store:
        store.add_device_peak({"run_id": rid, "device": "cuda:0", "dtype": "bfloat16", "threads": 8,
                               "matmul_flops_per_s": 1.0})
    assert load_device_peaks(path).matmul_flops_per_s.tolist() == [7.9e14]


def make_v1_store(path):
    """A store as schema 1 wrote it: without the new tables and harness columns."""
    fill(path)
    con = sqlite3.connect(path)
    v1_cols = [c for c in MEASUREMENT_FIELDS if c not in HARNESS_COLUMNS]
    con.executescript(f"""
        DROP TABLE power_samples; DROP TABLE device_peaks;
        CREATE TABLE m1 (id INTEGER PRIMARY KEY, {", ".join(v1_cols)}, UNIQUE (run_id, case_key));
        INSERT INTO m1 ({", ".join(v1_cols)}) SELECT {", ".join(v1_cols)} FROM measurements;
        DROP TABLE measurements; ALTER TABLE m1 RENAME TO measurements;
        PRAGMA user_version=1;""")
    con.close()


def test_an_older_store_still_loads_and_migrates(tmp_path):
    path = tmp_path / "v1.db"
    make_v1_store(path)
    assert load_power_samples(path).empty and load_device_peaks(path).empty  # read-only: no tables, no rows
    df = load_measurements(path)
    assert len(df) == 1 and "energy_j" not in df
    with Store.open(path):
        pass
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()
    df = load_measurements(path)
    assert df.energy_j.isna().all() and "power_or_thermal_throttled" in df


def test_merge_copies_and_dedupes_the_new_tables(tmp_path):
    a, b, out = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "out.db"
    fill(a, "one", samples=3)
    fill(b, "two", samples=4)
    added = merge(out, [a, b])
    assert added["power_samples"] == 7 and added["device_peaks"] == 2 and added["measurements"] == 2
    again = merge(out, [a, b])
    assert again["power_samples"] == 0 and again["device_peaks"] == 0 and again["measurements"] == 0
    assert len(load_power_samples(out)) == 7 and len(load_device_peaks(out)) == 2


def test_merge_with_an_older_store_either_way(tmp_path):
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    make_v1_store(old)
    fill(new, "two")
    added = merge(new, [old])  # old into new: the tables it lacks are skipped
    assert added["measurements"] == 1 and added["power_samples"] == 0
    old2 = tmp_path / "old2.db"
    make_v1_store(old2)
    added = merge(old2, [new])  # new into old: the old store is migrated first
    assert added["power_samples"] == 3 and added["device_peaks"] == 1
    df = load_measurements(old2)  # its own row, the v1 row merged into `new`, and `new`'s own
    assert len(df) == 3 and df.energy_j.notna().sum() == 1
