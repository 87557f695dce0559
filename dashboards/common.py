"""What every section shares: names and colours, number formatting, row selection, and the figure frame that states
which machine and software produced the data.

Colours are fixed per backend (torch eager blue, torch.compile orange, Triton green) in every figure; dtypes are
told apart by bar pattern, marker symbol or line dash, never by a colour of their own.
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd

from perfkit.app import tables as report
from perfkit.specs import DTYPE_SHORT, DTYPES

FLOPS_CONVENTION = "a multiply-add is 2 FLOPs"

# -- names --------------------------------------------------------------------------------------------------------------
BACKEND_NAMES = {"torch": "torch eager", "compile": "torch.compile", "triton": "Triton",
                 "channels_last": "torch eager channels_last", "onnxruntime": "ONNX Runtime"}
BACKEND_COLORS = {"torch": "#3b6fb6", "compile": "#e08a2c", "triton": "#3a9a5b", "channels_last": "#8e6bbf",
                  "onnxruntime": "#8c6d4f"}
_EXTRA_COLORS = ("#8e6bbf", "#8c6d4f", "#d46a9f", "#6f7f8f", "#b5a33a", "#3fa7c4", "#c24d4d")
MACHINE_COLORS = ("#3b6fb6", "#c24d4d", "#3a9a5b", "#8e6bbf", "#e08a2c", "#3fa7c4", "#8c6d4f", "#d46a9f")
CPU_COLOR = "#6f7f8f"

DTYPE_NAMES = DTYPE_SHORT
DTYPE_ORDER = tuple(DTYPES)
DTYPE_PATTERNS = {"float32": "", "tf32": "/", "float16": ".", "bfloat16": "x", "float64": "-"}
DTYPE_SYMBOLS = {"float32": "circle", "tf32": "diamond", "float16": "square", "bfloat16": "triangle-up",
                 "float64": "star"}
DTYPE_DASHES = {"float32": "solid", "tf32": "dash", "float16": "dot", "bfloat16": "dashdot", "float64": "longdash"}
PASS_NAMES = {"forward": "forward", "backward": "backward", "train_step": "train step"}
PASS_ORDER = ("forward", "backward", "train_step")
PASS_SYMBOLS = {"forward": "circle", "backward": "square", "train_step": "diamond"}
STATUS_COLORS = {"ok": "#3a9a5b", "incorrect": "#c62828", "skipped": "#8a8f98", "oom": "#b8860b", "error": "#c24d4d"}

#: Columns that identify one measured configuration; rows equal on all of them are repeats (the latest is kept).
IDENTITY = ("machine_id", "variant", "layer", "backend", "device", "dtype", "batch", "pass_name", "activation",
            "threads", "options")


def backend_name(backend: str) -> str:
    return BACKEND_NAMES.get(backend, str(backend))


def backend_color(backend: str) -> str:
    if backend in BACKEND_COLORS:
        return BACKEND_COLORS[backend]
    return _EXTRA_COLORS[sum(map(ord, str(backend))) % len(_EXTRA_COLORS)]


def dtype_name(dtype: str) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype))


def dtype_rank(dtype: str) -> int:
    return DTYPE_ORDER.index(dtype) if dtype in DTYPE_ORDER else len(DTYPE_ORDER)


def pass_name(name: str) -> str:
    return PASS_NAMES.get(name, str(name))


def machine_color(index: int) -> str:
    return MACHINE_COLORS[index % len(MACHINE_COLORS)]


def device_label(row) -> str:
    """'CPU' or the GPU's name (the device index when the name is unknown)."""
    device = str(row["device"])
    if device == "cpu":
        return "CPU"
    name = row.get("device_name") if hasattr(row, "get") else None
    return str(name) if isinstance(name, str) and name else device


def short_device(row) -> str:
    """'CPU', 'GPU' (cuda:0) or 'GPU 1' (cuda:1)."""
    device = str(row["device"])
    if device == "cpu":
        return "CPU"
    if device.startswith("cuda"):
        index = device.partition(":")[2]
        return "GPU" if index in ("", "0") else f"GPU {index}"
    return device


def options_label(options) -> str:
    if not isinstance(options, str) or options in ("", "{}"):
        return ""
    try:
        parsed = json.loads(options)
    except json.JSONDecodeError:
        return options
    return ", ".join(f"{k}={v}" for k, v in parsed.items()) if isinstance(parsed, dict) else str(parsed)


# -- numbers ------------------------------------------------------------------------------------------------------------
def is_num(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA \
        and not (isinstance(value, str))


def fmt_si(value, unit: str = "", digits: int = 4) -> str:
    """1.234e9, 'FLOP/s' -> '1.234 GFLOP/s'; missing -> '-'. (Four digits: hover text shows exact-enough values.)"""
    return report.fmt_si(value, unit, digits)


def fmt_bytes(value) -> str:
    if not is_num(value):
        return "-"
    value = float(value)
    for scale, unit in ((2 ** 40, "TiB"), (2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value:.0f} B"


def fmt_seconds(value) -> str:
    if not is_num(value):
        return "-"
    value = float(value)
    if value >= 1:
        return f"{value:.4g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.4g} ms"
    return f"{value * 1e6:.4g} µs"


def fmt_num(value, spec: str = ",.4g") -> str:
    return format(float(value), spec) if is_num(value) else "-"


def short_commit(commit) -> str:
    if not isinstance(commit, str) or not commit:
        return "no git commit"
    dirty = commit.endswith("-dirty")
    sha = commit[:-len("-dirty")] if dirty else commit
    if not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
        return commit  # e.g. pytest-benchmark's "unversioned"
    return sha[:7] + ("-dirty" if dirty else "")


def fmt_rate(value) -> str:
    """Images/s and similar rates for bar labels: 149,410 / 6.54."""
    if not is_num(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def esc(text) -> str:
    return html.escape("" if text is None else str(text))


# -- rows ---------------------------------------------------------------------------------------------------------------
def latest(df: pd.DataFrame, columns: Sequence[str] = IDENTITY) -> pd.DataFrame:
    """One row per configuration: the last measured (rows arrive in measurement order)."""
    if df.empty:
        return df
    cols = [c for c in columns if c in df]
    return df.drop_duplicates(subset=cols, keep="last")


def prefer_study(df: pd.DataFrame, study: str) -> pd.DataFrame:
    """The rows of `study` when there are any, else all rows."""
    own = df[df.study == study]
    return own if len(own) else df


def layer_order(df: pd.DataFrame) -> list[str]:
    """Layers in network order (from the variants' specs), then any others as they first appear; "network" last."""
    order: list[str] = []
    try:
        from perfkit.specs import VARIANTS, build_network

        for variant in dict.fromkeys(df.variant.dropna()):
            if variant in VARIANTS:
                for spec in build_network(variant).layers:
                    if spec.name not in order:
                        order.append(spec.name)
    except Exception:  # an older or newer perfkit: appearance order is good enough
        pass
    for layer in df.layer.dropna():
        if layer not in order and layer != "network":
            order.append(layer)
    if "network" in set(df.layer):
        order.append("network")
    return [layer for layer in order if layer in set(df.layer)]


def sort_configs(df: pd.DataFrame) -> pd.DataFrame:
    """A stable, readable order of configurations: machine, device (CPU first), backend (eager first), dtype."""
    backend_rank = {"torch": 0, "channels_last": 1, "compile": 2, "onnxruntime": 3, "triton": 4}
    key = pd.DataFrame({
        "m": df.get("machine", pd.Series("", index=df.index)).astype(str),
        "d": df.device.map(lambda d: (0 if d == "cpu" else 1, str(d))),
        "b": df.backend.map(lambda b: (backend_rank.get(b, 9), str(b))),
        "t": df.dtype.map(dtype_rank),
        "n": df.batch.fillna(0).astype(int),
        "h": df.threads.fillna(0).astype(int),
    }, index=df.index)
    return df.loc[key.sort_values(list(key.columns), kind="stable").index]


#: How each configuration field reads in a label.
_LABELERS = {
    "machine": lambda r: str(r.get("machine_short") or r["machine"]),
    "device": device_label,
    "variant": lambda r: str(r["variant"]),
    "backend": lambda r: backend_name(r["backend"]),
    "dtype": lambda r: dtype_name(r['dtype']),
    "batch": lambda r: f"batch {r['batch']}",
    "threads": lambda r: f"{r['threads']} thread{'s' if r['threads'] != 1 else ''}" if is_num(r["threads"]) else "",
    "pass_name": lambda r: pass_name(r["pass_name"]),
    "activation": lambda r: str(r["activation"]),
    "layer": lambda r: str(r["layer"]),
    "options": lambda r: options_label(r["options"]),
    "study": lambda r: f"study {r['study']}",
}


def config_labels(df: pd.DataFrame, fields: Sequence[str], always: Sequence[str] = ("backend",)) -> pd.Series:
    """A label per row naming the fields that vary across `df` (plus `always`), e.g. 'torch eager · fp32 · batch 8'."""
    varying = [f for f in fields if f in df and (f in always or df[f].astype(str).nunique(dropna=False) > 1)]
    if not varying:
        varying = [f for f in always if f in df]
    labelers = dict(_LABELERS)
    if "machine" in varying:  # the machine is named: the device only needs to say CPU or GPU
        labelers["device"] = short_device

    def label(row):
        parts = [labelers[f](row) if f in labelers else str(row[f]) for f in varying]
        return " · ".join(p for p in parts if p)

    return df.apply(label, axis=1) if len(df) else pd.Series(dtype=str)


CONFIG_FIELDS = ("machine", "device", "variant", "backend", "dtype", "batch", "threads", "activation", "options")
CONTEXT_FIELDS = ("variant", "device", "backend", "dtype", "batch", "threads", "pass_name", "activation", "options")


def constant_context(df: pd.DataFrame, fields: Sequence[str] = CONTEXT_FIELDS) -> str:
    """What every row of `df` shares, e.g. 'alexnet2012 · CPU · fp32 · batch 8 · 2 threads' (for captions)."""
    if df is None or df.empty:
        return ""
    parts = []
    for f in fields:
        if f not in df or f not in _LABELERS:
            continue
        values = df[f].astype(str).unique()
        if len(values) == 1 and values[0] not in ("<NA>", "None", "nan"):
            parts.append(_LABELERS[f](df.iloc[0]))
    return " · ".join(p for p in parts if p)


# -- provenance ---------------------------------------------------------------------------------------------------------
def run_provenance(data, run_ids) -> str:
    """Subtitle lines for data that are not measurement rows (e.g. a summary's curves): the runs' machines,
    software and commits."""
    runs = data.runs[data.runs.run_id.isin(list(run_ids))] if len(data.runs) else data.runs
    lines = []
    for _, r in runs.drop_duplicates("env_id").iterrows():
        env = data.environments.get(r.env_id)
        label = env.label if env else str(r.machine or r.env_id)
        software = env.software if env else "software not recorded"
        lines.append(f"{label}: {software} · perfkit {r.perfkit_version or '?'} @ {short_commit(r.git_commit)}")
    return "\n".join(lines)


def provenance(rows: pd.DataFrame, data) -> tuple[str, str]:
    """Which machines and software produced `rows`: (subtitle lines joined by newlines, one per machine with its
    software and perfkit commit; and the same as an HTML caption sentence)."""
    if rows is None or rows.empty or "env_id" not in rows:
        return "", ""
    lines, parts = [], []
    machine_ids = list(dict.fromkeys(rows.machine_id.dropna())) if "machine_id" in rows else []
    for machine_id in machine_ids:
        mine = rows[rows.machine_id == machine_id]
        envs = [data.environments[e] for e in dict.fromkeys(mine.env_id.dropna()) if e in data.environments]
        label = envs[0].label if envs else str(mine.iloc[0].get("machine") or machine_id)
        software = "; ".join(dict.fromkeys(e.software for e in envs)) or "software not recorded"
        commits = ", ".join(dict.fromkeys(short_commit(c) for c in mine.get("git_commit", pd.Series(dtype=object))
                                          .dropna())) or "no git commit"
        versions = ", ".join(dict.fromkeys(mine.get("perfkit_version", pd.Series(dtype=object)).dropna())) or "?"
        lines.append(f"{label}: {software} · perfkit {versions} @ {commits}")
        parts.append(f"<b>{esc(label)}</b> ({esc(software)}; perfkit {esc(versions)} @ {esc(commits)})")
    if len(lines) > 3:
        lines = [f"{len(lines)} machines: " + ", ".join(l.split(":")[0] for l in lines) + " (software in the caption)"]
    studies = ", ".join(dict.fromkeys(rows.study.dropna())) if "study" in rows else ""
    caption = (f"Data: {'; '.join(parts) or 'unknown machine'}"
               + (f"; studies: {esc(studies)}" if studies else "") + f"; {len(rows)} row(s).")
    return "\n".join(lines), caption


# -- the report's building blocks ---------------------------------------------------------------------------------------
@dataclass
class FigureBlock:
    name: str  # unique slug, used for the div id and the PNG file name
    fig: object  # plotly.graph_objects.Figure
    caption: str = ""  # HTML (already escaped)


@dataclass
class TableBlock:
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]  # cells as HTML (already escaped)
    title: str = ""
    note: str = ""


@dataclass
class NoteBlock:
    html: str
    kind: str = "note"  # note, warn


@dataclass
class CardsBlock:
    cards: Sequence[tuple[str, str, str]]  # (value, label, detail), escaped HTML


@dataclass
class Section:
    id: str
    title: str
    lead: str  # HTML paragraph: what the section shows and what it needs
    blocks: list = field(default_factory=list)

    @property
    def figures(self) -> list[FigureBlock]:
        return [b for b in self.blocks if isinstance(b, FigureBlock)]


def status_badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#6f7f8f")
    return f'<span class="badge" style="background:{color}">{esc(status)}</span>'


def rows_not_plotted(df: pd.DataFrame, statuses: Iterable[str] = ("incorrect", "oom", "error", "skipped"),
                     limit: int = 40) -> TableBlock | None:
    """The rows of a section that are not speed results, with their reason (incorrect rows first)."""
    bad = df[df.status.isin(list(statuses))]
    if bad.empty:
        return None
    rank = {"incorrect": 0, "oom": 1, "error": 2, "skipped": 3}
    bad = bad.assign(_r=bad.status.map(lambda s: rank.get(s, 9))).sort_values("_r", kind="stable")
    groups = bad.groupby(["status", "note"], dropna=False, sort=False)
    rows = []
    for (status, note), part in groups:
        if status == "incorrect":
            for _, r in part.iterrows():
                rows.append([status_badge(status), esc(r.layer), esc(backend_name(r.backend)), esc(device_label(r)),
                             esc(dtype_name(r['dtype'])), esc(pass_name(r.pass_name)), esc(r.batch),
                             esc(f"error {fmt_num(r.error_rel, '.3g')} > tolerance {fmt_num(r.error_tolerance, 'g')}"),
                             "1"])
        else:
            first = part.iloc[0]
            many = lambda col, fmt=str: esc(fmt(first[col])) if part[col].nunique(dropna=False) == 1 else "(several)"
            rows.append([status_badge(status), many("layer"), many("backend", backend_name),
                         esc(device_label(first)) if part.device.nunique() == 1 else "(several)",
                         many("dtype", dtype_name), many("pass_name", pass_name), many("batch"),
                         esc(note if isinstance(note, str) else "-"), str(len(part))])
    shown = rows[:limit]
    note = f"{len(rows) - limit} more groups not listed." if len(rows) > limit else ""
    return TableBlock(["status", "layer", "backend", "device", "dtype", "pass", "batch", "reason", "rows"], shown,
                      title="Rows not shown as speed results", note=note)
