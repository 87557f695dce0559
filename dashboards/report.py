"""Assemble the sections a store has data for into one report."""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from perfkit.dashboards import (activations, backends, energy, layers, machines, overview, regression, roofline,
                                speedup, sweeps, training)
from perfkit.dashboards.common import FigureBlock, Section
from perfkit.dashboards.data import ReportData, load

#: The report's sections, in order. Each module's `build(data)` returns a Section, or None when the stores lack its
#: data (then the section is left out of the report).
SECTION_BUILDERS = (overview, layers, speedup, backends, sweeps, roofline, energy, training, activations, machines,
                    regression)


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
        section = builder.build(data)
        if section is not None and section.blocks:
            sections.append(section)
    _unique_names(sections)
    return Report(data, sections)


def _unique_names(sections: list[Section]) -> None:
    seen: dict[str, int] = {}
    for block in (f for s in sections for f in s.figures):
        n = seen.get(block.name, 0)
        seen[block.name] = n + 1
        if n:
            block.name = f"{block.name}-{n + 1}"
