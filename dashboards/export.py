"""Static PNG export of a report's figures through kaleido (1.x), which drives a Chrome or Chromium it is given.

The browser is the system's: $PERFKIT_BROWSER, then $BROWSER_PATH (the variable kaleido's choreographer reads), then
chromium, chromium-browser, google-chrome or google-chrome-stable on PATH. Nothing is downloaded; without a browser
the export stops with a message saying how to get one.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from perfkit.dashboards import INSTALL_HINT, DashboardError, MissingDependencyError, NoBrowserError

BROWSER_ENV_VARS = ("PERFKIT_BROWSER", "BROWSER_PATH")
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PNG_WIDTH = 1200
PNG_SCALE = 2


def find_browser() -> str | None:
    """The Chrome/Chromium executable to use, or None."""
    for var in BROWSER_ENV_VARS:
        value = os.environ.get(var)
        if value and os.path.isfile(value) and os.access(value, os.X_OK):
            return value
        if value and shutil.which(value):
            return shutil.which(value)
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def no_browser_message() -> str:
    return ("PNG export needs Chrome or Chromium and none was found: install one (Debian/Ubuntu: "
            "`apt-get install chromium`) or point PERFKIT_BROWSER (or BROWSER_PATH) at its executable. "
            "The HTML report does not need it.")


def png_name(index: int, name: str) -> str:
    return f"{index:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}.png"


def export_png(report, out_dir: str | os.PathLike, browser: str | None = None) -> list[Path]:
    """Write every figure of `report` to `out_dir` as `NN-<name>.png`; returns the paths written."""
    try:
        import kaleido
    except ImportError:
        raise MissingDependencyError(f"PNG export needs kaleido, which is not installed: {INSTALL_HINT}") from None
    browser = browser or find_browser()
    if not browser:
        raise NoBrowserError(no_browser_message())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs, paths = [], []
    for i, block in enumerate(report.figures, start=1):
        path = out / png_name(i, block.name)
        height = int(block.fig.layout.height or 460)
        jobs.append({"fig": block.fig, "path": path,
                     "opts": {"format": "png", "width": PNG_WIDTH, "height": height, "scale": PNG_SCALE}})
        paths.append(path)
    if not jobs:
        return []
    # mathjax=False: the figures use no LaTeX, and kaleido would otherwise fetch MathJax from a CDN.
    try:
        errors = kaleido.write_fig_from_object_sync(jobs, kopts={"mathjax": False, "path": browser})
    except Exception as exc:  # kaleido/choreographer failures: the browser would not start or crashed
        raise DashboardError(f"PNG export failed with browser {browser}: {type(exc).__name__}: {exc}") from exc
    if errors:
        raise _export_error(errors)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DashboardError(f"kaleido wrote no image for {len(missing)} figure(s) (first: {missing[0].name}); "
                             f"browser used: {browser}")
    return paths


def _export_error(errors) -> DashboardError:
    first = errors[0]
    return DashboardError(f"PNG export failed for {len(errors)} figure(s): {type(first).__name__}: {first}")
