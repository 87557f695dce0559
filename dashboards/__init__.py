"""Dashboards: one self-contained HTML report (Plotly) from one or several perfkit stores.

    from perfkit.dashboards import build_report
    build_report(["perfkit.db"], "report.html", benchmarks_dir=".benchmarks")

Plotly is an optional dependency (`pip install 'perfkit[dashboards]'`); importing this package never needs it. Without
it `build_report` raises `MissingDependencyError` (a `DashboardError`) with that instruction, so a caller that builds a
report after a run can catch `DashboardError`, print it and carry on.

Sections appear only when the stores hold their data; see each module's docstring for what it needs:
overview, layers, speedup (the 2012 comparison), backends (and correctness), sweeps (batch and precision), roofline,
energy, training (train_time), activations (convergence curves: see `perfkit.dashboards.data` for the contract),
ingredients, augmentation and multigpu (each from its study's summary: see `perfkit.dashboards.summaries`),
machines (cross-machine comparison), regression (pytest-benchmark history).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

INSTALL_HINT = "pip install 'perfkit[dashboards]'"


class DashboardError(Exception):
    """The report could not be built or exported; the message says why and what to do."""


class MissingDependencyError(DashboardError):
    """An optional dependency of the dashboards (plotly, kaleido) is not installed."""


class NoBrowserError(DashboardError):
    """PNG export needs Chrome or Chromium and none was found."""


def require_plotly() -> str:
    """plotly's version; MissingDependencyError, with the install command, when it is not installed."""
    try:
        import plotly
    except ImportError:
        raise MissingDependencyError(f"the dashboards need plotly, which is not installed: {INSTALL_HINT}") from None
    return plotly.__version__


def build(store_paths: Sequence[str | os.PathLike], benchmarks_dir: str | os.PathLike | None = None):
    """The report (sections and figures) for the given stores, not yet written anywhere."""
    require_plotly()
    from perfkit.dashboards.report import build as _build

    return _build(store_paths, benchmarks_dir)


def build_report(store_paths: Sequence[str | os.PathLike] | str | os.PathLike, output_path: str | os.PathLike,
                 benchmarks_dir: str | os.PathLike | None = None) -> Path:
    """Write one self-contained HTML report built from `store_paths` (and, when given, the pytest-benchmark JSON
    files under `benchmarks_dir`) to `output_path`; returns the path written.

    Raises MissingDependencyError without plotly, and perfkit.results.store.StoreError for a file that is not a store."""
    if isinstance(store_paths, (str, os.PathLike)):
        store_paths = [store_paths]
    report = build(store_paths, benchmarks_dir)
    return report.write_html(output_path)


def export_png(report, out_dir: str | os.PathLike, browser: str | None = None) -> list[Path]:
    """Write each figure of `report` as a PNG into `out_dir` through kaleido and the system's Chrome/Chromium."""
    from perfkit.dashboards.export import export_png as _export

    return _export(report, out_dir, browser=browser)


def find_browser() -> str | None:
    from perfkit.dashboards.export import find_browser as _find

    return _find()


__all__ = ["DashboardError", "MissingDependencyError", "NoBrowserError", "build", "build_report", "export_png",
           "find_browser", "INSTALL_HINT"]
