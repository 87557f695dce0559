"""Assemble the sections a store has data for into one report."""
from __future__ import annotations

import datetime as _dt
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from perfkit.dashboards import (activations, augmentation, backends, energy, ingredients, layers, machines, multigpu,
                                overview, profiles, regression, roofline, speedup, sweeps, training)
from perfkit.dashboards.common import FigureBlock, NoteBlock, Section, esc
from perfkit.dashboards.data import ReportData, load

#: The report's sections, in order. Each module's `build(data)` returns a Section, or None when the stores lack its
#: data (then the section is left out of the report).
SECTION_BUILDERS = (overview, layers, speedup, backends, profiles, sweeps, roofline, energy, training, activations,
                    ingredients, augmentation, multigpu, machines, regression)


@dataclass
class Report:
    data: ReportData
    sections: list[Section]
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def figures(self) -> list[FigureBlock]:
        return [f for s in self.sections for f in s.figures]

    def to_html(self) -> str:
        from perfkit.dashboards.html import render

        return render(self)

    def write_html(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_html(), encoding="utf-8")
        os.replace(tmp, path)
        return path


def build(store_paths: Sequence[str | os.PathLike], benchmarks_dir: str | os.PathLike | None = None) -> Report:
    data = load(store_paths, benchmarks_dir)
    sections = []
    for builder in SECTION_BUILDERS:
        try:
            section = builder.build(data)
        except Exception as exc:  # one section's surprise (new study data, say) must not cost the whole report
            section = _failed_section(builder, exc)
        if section is not None and section.blocks:
            sections.append(section)
    _unique_names(sections)
    return Report(data, sections)


def _failed_section(builder, exc: Exception) -> Section:
    name = builder.__name__.rsplit(".", 1)[-1]
    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        frame = tb[-1]
        where = f" at {os.path.basename(frame.filename)}:{frame.lineno}"
    return Section(f"failed-{name}", f"{name} (not drawn)",
                   "This section could not be built from these stores; the rest of the report is unaffected.",
                   [NoteBlock(esc(f"{type(exc).__name__}: {exc}{where}"), kind="warn")])


def _unique_names(sections: list[Section]) -> None:
    seen: dict[str, int] = {}
    for block in (f for s in sections for f in s.figures):
        n = seen.get(block.name, 0)
        seen[block.name] = n + 1
        if n:
            block.name = f"{block.name}-{n + 1}"
