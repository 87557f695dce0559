"""Helpers the studies share: which devices a study plans for, which layers, and reading measured rows.

Devices. `perfkit study NAME --device auto|cpu|cuda` resolves to `options.devices`. A study plans its GPU cases on the
GPUs asked for; when none was asked for and this machine has no GPU at all, it still plans them on "cuda:0" so that the
store says, row by row, that they were skipped and why ("no CUDA device is available"). When a GPU exists but was not
asked for (`--device cpu` on a GPU machine), the GPU half is left out. GPU-centred studies run their CPU half only when
the CPU was asked for without a GPU (`--device cpu`, or `auto` on a machine without one); studies whose point is the CPU
(speedup2012) always include it.

Layers. A study's `options.extra["layers"]` (a list of layer names, "network" for the whole network) narrows its grid;
the tests use it to keep their runs short.
"""
from __future__ import annotations

import json
import math

from perfkit.cases import NETWORK
from perfkit.specs import build_network


def gpu_visible() -> bool:
    """Whether torch sees a CUDA device (checked only when no GPU was asked for)."""
    import torch

    return torch.cuda.is_available()


def plan_devices(options, cpu: str = "alone") -> tuple[list[str], list[str]]:
    """(CPU devices, GPU devices) a study measures on. `cpu`: "always" (the CPU is part of the study), "alone" (only
    when no GPU was asked for), or "asked" (whenever the CPU was asked for)."""
    asked_gpus = [d for d in options.devices if d.startswith("cuda")]
    gpus = asked_gpus or ([] if gpu_visible() else ["cuda:0"])
    if cpu == "always":
        cpus = ["cpu"]
    elif cpu == "asked":
        cpus = ["cpu"] if "cpu" in options.devices else []
    else:
        cpus = ["cpu"] if "cpu" in options.devices and not asked_gpus else []
    return cpus, gpus


def network_layers(variant: str, kinds: tuple[str, ...] | None = None) -> list[str]:
    """The layer names of a variant (those of the given kinds only, when given), without the whole network."""
    return [spec.name for spec in build_network(variant).layers if kinds is None or spec.kind in kinds]


def choose_layers(options, default: list[str]) -> list[str]:
    """The study's layers, or the ones `options.extra["layers"]` names."""
    return list(options.extra.get("layers") or default)


def choose(options, name: str, default):
    """A study knob from `options.extra` (tests narrow grids this way), else the default."""
    value = options.extra.get(name)
    return default if value is None else value


GEMM_KINDS = ("conv", "linear")


def gemm_layers_and_network(variant: str) -> list[str]:
    return network_layers(variant, GEMM_KINDS) + [NETWORK]


def all_layers_and_network(variant: str) -> list[str]:
    return network_layers(variant) + [NETWORK]


# -- reading rows ---------------------------------------------------------------------------------------------------
def num(value) -> float | None:
    """A row value as a float, None for missing/NaN/NA."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def get(row, name: str):
    """A column of a row (a pandas Series or dict) that may be absent (columns another issue adds) or null."""
    try:
        value = row[name]
    except (KeyError, IndexError):
        return None
    try:
        import pandas as pd

        if value is pd.NA or (not isinstance(value, str) and pd.isna(value)):
            return None
    except (TypeError, ValueError):
        pass
    return value


def options_of(row) -> dict:
    text = get(row, "options")
    try:
        return json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}


def is_autocast(row) -> bool:
    return bool(options_of(row).get("autocast"))


def ok_rows(df):
    return df[df.status == "ok"]


def first(df, **where):
    """The first row of df matching column == value for each keyword (None when there is none)."""
    sel = df
    for name, value in where.items():
        if name not in sel:
            return None
        sel = sel[sel[name] == value]
    return sel.iloc[0] if len(sel) else None


DTYPE_SHORT = {"float32": "fp32", "tf32": "tf32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def config_label(backend: str, dtype: str, autocast: bool = False) -> str:
    """'torch fp32', 'triton bf16', 'torch bf16 autocast'."""
    return f"{backend} {DTYPE_SHORT.get(dtype, dtype)}" + (" autocast" if autocast else "")


def fmt_x(value, digits: int = 3) -> str:
    """A ratio: 61.2x; None -> '-'."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}x"


def fmt_bytes(value) -> str:
    from perfkit.report import fmt_si

    return fmt_si(value, "B")


def not_measured(df) -> list[str]:
    """Lines saying which cases gave no speed result and why, grouped by status and reason."""
    lines = []
    bad = df[df.status != "ok"]
    if bad.empty:
        return lines
    groups = bad.groupby(["status", bad.note.fillna("(no reason recorded)")], sort=False)
    for (status, note), part in groups:
        devices = ", ".join(sorted(set(part.device)))
        lines.append(f"  {len(part)} {status} ({devices}): {note}")
    return ["cases without a speed result:"] + lines


def device_title(df, device: str) -> str:
    part = df[df.device == device]
    names = part.device_name.dropna() if "device_name" in part else []
    return f"{device} ({names.iloc[0]})" if len(names) else device
