"""What a report is built from: the stores' rows and tables, and pytest-benchmark JSON files, loaded once.

Stores written by an older perfkit may lack columns (the harness's energy, memory, clock and roofline columns) or
tables (`power_samples`, `device_peaks`): they load with those columns present and null, and the sections that need
them are left out.

Data contract for the activation-convergence section (the activations study writes it):
    the summary of study "activations" carries in its `data` JSON a list `curves`, one entry per point:
        {"activation": "relu", "epoch": 3, "train_error": 0.31, "wall_s": 12.5, "dataset": "sklearn-digits"}
    `train_error` is a fraction (0.25 = 25 %), `epoch` counts completed epochs (1 after the first), `wall_s` is the
    training wall-clock time up to the end of that epoch; extra keys (e.g. "lr", "device") are shown in the hover.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

import perfkit
from perfkit.app.bench import AB_REPORT
from perfkit.results.records import MEASUREMENT_FIELDS
from perfkit.results.store import (load_device_peaks, load_environments, load_measurements, load_power_samples,
                           load_profile_ops, load_profiles, load_runs, load_summaries)

#: Every measurement column; a store that predates some of them gets them as nulls.
OPTIONAL_COLUMNS = MEASUREMENT_FIELDS

#: The summary data key (of study "activations") holding convergence curves, and the keys of each point.
CURVES_STUDY = "activations"
CURVES_KEY = "curves"
CURVE_FIELDS = ("activation", "epoch", "train_error", "wall_s", "dataset")


@dataclass(frozen=True)
class Environment:
    """One environment fingerprint of a store: a machine and its software."""

    env_id: str
    machine_id: str
    label: str
    data: dict

    def get(self, key, default=None):
        return self.data.get(key, default)

    @property
    def software(self) -> str:
        parts = [f"torch {self.get('torch') or '?'}"]
        if self.get("torch_cuda"):
            parts.append(f"CUDA {self.get('torch_cuda')}")
        parts.append(f"triton {self.get('triton') or 'absent'}")
        if self.get("gpu_driver"):
            parts.append(f"driver {self.get('gpu_driver')}")
        return ", ".join(parts)


@dataclass
class BenchmarkRun:
    """One pytest-benchmark JSON file (a saved run of the regression suite)."""

    path: Path
    machine: str  # the storage folder pytest-benchmark files it under, e.g. Linux-CPython-3.11-64bit
    node: str
    datetime: pd.Timestamp
    commit: str | None
    commit_dirty: bool
    branch: str | None
    benchmarks: list[dict]  # each: name, fullname, group, stats (seconds), extra_info
    machine_info: dict = field(default_factory=dict)


@dataclass
class ReportData:
    stores: list[Path]
    measurements: pd.DataFrame
    runs: pd.DataFrame
    summaries: pd.DataFrame
    environments: dict[str, Environment]
    power_samples: pd.DataFrame
    device_peaks: pd.DataFrame
    benchmarks: list[BenchmarkRun]
    notes: list[str] = field(default_factory=list)  # what could not be read, said in the report
    ab_check: dict | None = None  # the last `perfkit bench check` verdict (benchmarks_dir/ab-check.json), if any
    baselines: list[tuple[Path, dict]] = field(default_factory=list)  # the checkout's per-machine baselines
    profiles: pd.DataFrame = field(default_factory=pd.DataFrame)  # `perfkit profile`'s cases (store table profiles)
    profile_ops: pd.DataFrame = field(default_factory=pd.DataFrame)  # their breakdowns (table profile_ops)

    @property
    def ok(self) -> pd.DataFrame:
        """The rows that are speed results: status "ok" with a measured time. Nothing else is plotted as speed."""
        m = self.measurements
        return m[(m.status == "ok") & m.time_median_s.notna()]

    def machines(self) -> list[str]:
        return sorted({e.machine_id for e in self.environments.values()})

    def summary_data(self, study: str) -> list[dict]:
        if self.summaries.empty:
            return []
        rows = self.summaries[self.summaries.study == study]
        return [d for d in rows.data if isinstance(d, dict)]


def load(store_paths: Sequence[str | os.PathLike], benchmarks_dir: str | os.PathLike | None = None) -> ReportData:
    """Everything a report needs from the stores (and the pytest-benchmark folder, when given)."""
    paths = [Path(p) for p in store_paths]
    notes: list[str] = []
    measurements = load_measurements(*paths) if paths else pd.DataFrame()
    missing = [col for col in OPTIONAL_COLUMNS if col not in measurements]
    if missing:
        nulls = pd.DataFrame({col: pd.Series([None] * len(measurements), dtype=object) for col in missing},
                             index=measurements.index)
        measurements = pd.concat([measurements, nulls], axis=1)
    runs = load_runs(*paths) if paths else pd.DataFrame()
    summaries = load_summaries(*paths) if paths else pd.DataFrame()
    environments = {}
    envs = load_environments(*paths) if paths else pd.DataFrame()
    for env in envs.itertuples():
        environments.setdefault(env.env_id, Environment(env.env_id, env.machine_id or env.data.get("machine_id") or
                                                        env.env_id, env.label or env.env_id, env.data))
    if len(measurements):
        measurements = _with_order(measurements)
        short = machine_short_names(environments.values())
        measurements["machine_short"] = measurements.machine_id.map(short).fillna(measurements.machine)
        measurements = measurements.copy()  # one block per dtype: the sections add columns freely
    power = load_power_samples(*paths) if paths else pd.DataFrame()
    peaks = load_device_peaks(*paths) if paths else pd.DataFrame()
    benchmarks = load_benchmarks(benchmarks_dir, notes) if benchmarks_dir else []
    ab_check = load_ab_check(benchmarks_dir, notes) if benchmarks_dir else None
    baselines = load_baselines(notes=notes) if benchmarks_dir else []
    profiles = load_profiles(*paths) if paths else pd.DataFrame()
    profile_ops = load_profile_ops(*paths) if paths else pd.DataFrame()
    return ReportData(paths, measurements, runs, summaries, environments, power, peaks, benchmarks, notes, ab_check,
                      baselines, profiles, profile_ops)


def machine_short_names(environments: Iterable[Environment]) -> dict[str, str]:
    """A compact name per machine id for figure labels: its hostname when hostnames tell the machines apart, else
    its full label."""
    envs = {e.machine_id: e for e in environments}
    hosts = {mid: (e.get("hostname") or "") for mid, e in envs.items()}
    if all(hosts.values()) and len(set(hosts.values())) == len(hosts):
        return hosts
    return {mid: e.label for mid, e in envs.items()}


def _with_order(df: pd.DataFrame) -> pd.DataFrame:
    """Measurements with a stable order (as measured) and the columns every section relies on typed."""
    df = df.sort_values(["run_started_at", "started_at"], kind="stable", na_position="last").reset_index(drop=True)
    for col in ("time_median_s", "time_p10_s", "time_p90_s", "images_per_s", "achieved_flops_per_s", "error_rel",
                "error_tolerance", "flops", "bytes_min", "arithmetic_intensity_flops_per_byte", "cpu_peak_rss_bytes",
                *[c for c in OPTIONAL_COLUMNS if c.endswith(("_bytes", "_j", "_w", "_s", "_mhz", "_pct", "_per_s",
                                                             "_fraction", "_per_j", "_count"))
                  or c.startswith("temperature_")]):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["batch"] = pd.to_numeric(df["batch"], errors="coerce").astype("Int64")
    df["threads"] = pd.to_numeric(df["threads"], errors="coerce").astype("Int64")
    return df


# -- pytest-benchmark ---------------------------------------------------------------------------------------------------
def load_baselines(folder: str | os.PathLike | None = None, notes: list[str] | None = None) -> list[tuple[Path, dict]]:
    """The per-machine baselines `perfkit bench baseline` wrote (default: tests/benchmarks/baselines/ of the checkout
    perfkit runs from; none from a wheel), as (path, document), for the regression section's history."""
    folder = Path(folder) if folder else Path(perfkit.__file__).resolve().parent.parent / "tests/benchmarks/baselines"
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            (notes if notes is not None else []).append(f"{path}: not readable as JSON ({type(exc).__name__}); "
                                                        "skipped.")
            continue
        if isinstance(doc, dict) and isinstance(doc.get("perfkit_baseline"), dict):
            out.append((path, doc))
    return out


def load_ab_check(folder: str | os.PathLike, notes: list[str] | None = None) -> dict | None:
    """The last A/B verdict `perfkit bench check` wrote into the history folder (see perfkit.app.benchgate.ab_summary), or
    None when there is none; an unreadable one is skipped with a note."""
    path = Path(folder) / AB_REPORT
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        (notes if notes is not None else []).append(f"{path}: not readable as JSON ({type(exc).__name__}); skipped.")
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        (notes if notes is not None else []).append(f"{path}: no A/B cases in it; skipped.")
        return None
    return doc


def load_benchmarks(folder: str | os.PathLike, notes: list[str] | None = None) -> list[BenchmarkRun]:
    """Every pytest-benchmark JSON file under `folder` (pytest-benchmark's storage layout: `<machine>/NNNN_*.json`),
    oldest first. Files that are not pytest-benchmark output are skipped with a note."""
    notes = notes if notes is not None else []
    folder = Path(folder)
    if not folder.is_dir():
        notes.append(f"benchmark folder {folder} does not exist; no regression history.")
        return []
    runs = []
    for path in sorted(folder.rglob("*.json")):
        if path == folder / AB_REPORT:
            continue  # the A/B gate's verdict, not a run: load_ab_check
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            notes.append(f"{path}: not readable as JSON ({type(exc).__name__}); skipped.")
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
            notes.append(f"{path}: not a pytest-benchmark file (no 'benchmarks' list); skipped.")
            continue
        commit = doc.get("commit_info") or {}
        machine_info = doc.get("machine_info") or {}
        when = pd.to_datetime(doc.get("datetime"), utc=True, errors="coerce")
        if pd.isna(when):
            when = pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC")
        rel = path.relative_to(folder)
        machine = rel.parts[0] if len(rel.parts) > 1 else (machine_info.get("node") or "unknown machine")
        benches = [b for b in doc["benchmarks"] if isinstance(b, dict) and isinstance(b.get("stats"), dict)]
        runs.append(BenchmarkRun(path=path, machine=machine, node=machine_info.get("node") or "", datetime=when,
                                 commit=commit.get("id"), commit_dirty=bool(commit.get("dirty")),
                                 branch=commit.get("branch"), benchmarks=benches, machine_info=machine_info))
    runs.sort(key=lambda r: (r.datetime, str(r.path)))
    return runs
