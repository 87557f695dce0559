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
from perfkit.specs import DTYPE_SHORT, build_network


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




def config_label(backend: str, dtype: str, autocast: bool = False) -> str:
    """'torch fp32', 'triton bf16', 'torch bf16 autocast'."""
    return f"{backend} {DTYPE_SHORT.get(dtype, dtype)}" + (" autocast" if autocast else "")


def fmt_x(value, digits: int = 3) -> str:
    """A ratio: 61.2x; None -> '-'."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}x"


def fmt_bytes(value) -> str:
    from perfkit.app.tables import fmt_si

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


def this_run(df, load):
    """This run's rows of a store table: `load(store_path)` (a perfkit.results.store loader, e.g. load_device_peaks)
    on the store df's rows came from, kept to df's run. None when df is empty or names no store, the store cannot be
    read (StoreError), or the table holds no row of the run."""
    from perfkit.results.store import StoreError

    if df.empty or "store" not in df:
        return None
    try:
        rows = load(df.store.iloc[0])
    except StoreError:
        return None
    rows = rows[rows.run_id == df.run_id.iloc[0]] if len(rows) else rows
    return rows if len(rows) else None


def device_title(df, device: str) -> str:
    part = df[df.device == device]
    names = part.device_name.dropna() if "device_name" in part else []
    return f"{device} ({names.iloc[0]})" if len(names) else device


# -- CPU baselines --------------------------------------------------------------------------------------------------
#: The CPU configurations a GPU-vs-CPU ratio can be taken against, in the order summaries show them. Stock eager
#: NCHW ("torch") is the baseline the ratios to stock are over; ONNX Runtime has a forward pass only and is optional
#: (its rows are skipped with the reason where it is not installed).
CPU_BASELINES = ("torch", "channels_last", "compile", "onnxruntime")
CPU_BASELINE_NAMES = {"torch": "eager NCHW", "channels_last": "eager channels_last",
                      "compile": "torch.compile (C++)", "onnxruntime": "ONNX Runtime"}
#: Column headers of the CPU-baselines table (its legend line spells them out).
CPU_BASELINE_SHORT = {"torch": "NCHW", "channels_last": "NHWC", "compile": "compile", "onnxruntime": "ORT"}
STOCK_CPU = "torch"


def cpu_baseline_cases(options, layers, batch: int, passes, thread_counts) -> list:
    """Every CPU baseline (`options.extra["cpu_backends"]` narrows them) on each layer, pass and thread count, float32.

    Ordered layer by layer, pass by pass, thread count by thread count, with the baselines next to each other, so the
    cases a ratio divides are measured minutes apart at most, under the same machine conditions. A backend without
    the pass (ONNX Runtime's train_step) is left out rather than recorded as skipped."""
    from perfkit.backends import get_backend
    from perfkit.cases import Case

    backends = [get_backend(name) for name in choose(options, "cpu_backends", CPU_BASELINES)]
    out = []
    for layer in layers:
        for pass_name in passes:
            for threads in dict.fromkeys(thread_counts):
                out += [Case(variant=options.variant, layer=layer, backend=b.name, device="cpu", dtype="float32",
                             batch=batch, pass_name=pass_name, threads=threads) for b in backends
                        if pass_name in b.passes]
    return out


def cpu_thread_label(threads) -> str:
    return f"{int(threads)}t" if threads is not None and not (isinstance(threads, float) and math.isnan(threads)) \
        else "default threads"


def cpu_baseline_rows(df) -> list[dict]:
    """Per layer and pass, the CPU baselines' throughput from this run's ok float32 CPU rows, and each one's ratio to
    stock eager at the same thread count:

    [{"layer", "pass", "configs": [{"backend", "threads", "images_per_s", "vs_stock"}], "best": {"backend",
      "threads", "images_per_s", "vs_stock_same_threads", "vs_stock_all"} | None, "stock_all_images_per_s"}]

    "best" is the highest throughput of any configuration; "stock_all" is stock eager at the most threads measured."""
    ok = ok_rows(df)
    cpu = ok[(ok.device == "cpu") & (ok.dtype == "float32") & ok.backend.isin(CPU_BASELINES)]
    if cpu.empty:
        return []
    out = []
    for (layer, pass_name), part in cpu.groupby(["layer", "pass_name"], sort=False):
        if part.backend.nunique() < 2:
            continue  # stock eager alone: nothing to compare
        stock = part[part.backend == STOCK_CPU]
        stock_by_threads = {num(r.threads): num(r.images_per_s) for r in stock.itertuples()}
        stock_all = stock_by_threads[max(stock_by_threads, key=lambda t: t or 0)] if stock_by_threads else None
        configs = []
        for r in part.itertuples():
            rate, threads = num(r.images_per_s), num(r.threads)
            base = stock_by_threads.get(threads)
            configs.append({"backend": r.backend, "threads": None if threads is None else int(threads),
                            "images_per_s": rate, "vs_stock": rate / base if rate is not None and base else None})
        order = {name: i for i, name in enumerate(CPU_BASELINES)}
        configs.sort(key=lambda c: (c["threads"] or 0, order[c["backend"]]))
        rated = [c for c in configs if c["images_per_s"] is not None]
        best = max(rated, key=lambda c: c["images_per_s"]) if rated else None
        if best is not None:
            best = dict(best, vs_stock_same_threads=best["vs_stock"],
                        vs_stock_all=best["images_per_s"] / stock_all if stock_all else None)
        out.append({"layer": layer, "pass": pass_name, "configs": configs, "best": best,
                    "stock_all_images_per_s": stock_all})
    return out


def cpu_config_label(backend: str, threads) -> str:
    """'compile 2t', 'eager NCHW 1t'."""
    return f"{CPU_BASELINE_NAMES.get(backend, backend)} {cpu_thread_label(threads)}"


def cpu_baseline_text(rows: list[dict], title: str) -> str:
    """The CPU-baselines table: per layer and pass, each configuration's images/s and its ratio to stock eager at the
    same thread count, and the best configuration."""
    from perfkit.app.tables import fmt_num, format_table

    if not rows:
        return ""
    columns = list(dict.fromkeys((c["backend"], c["threads"]) for r in rows for c in r["configs"]))
    table = []
    for r in rows:
        t = {"layer": r["layer"], "pass": r["pass"]}
        by_key = {(c["backend"], c["threads"]): c for c in r["configs"]}
        for key in columns:
            c = by_key.get(key)
            t[key] = "-" if c is None or c["images_per_s"] is None else (
                f"{fmt_num(c['images_per_s'], ',.1f')}" + ("" if c["backend"] == STOCK_CPU else
                                                           f" ({fmt_x(c['vs_stock'])})"))
        best = r["best"]
        t["best"] = cpu_config_label(best["backend"], best["threads"]) if best else "-"
        table.append(t)
    spec = [("layer", "layer", None), ("pass", "pass", None)]
    spec += [(key, f"{CPU_BASELINE_SHORT.get(key[0], key[0])} {cpu_thread_label(key[1])}", None) for key in columns]
    spec += [("best", "best", None)]
    legend = ", ".join(f"{CPU_BASELINE_SHORT[b]} = {CPU_BASELINE_NAMES[b]}" for b in CPU_BASELINES
                       if any(key[0] == b for key in columns))
    return "\n".join([title, format_table(table, spec),
                      f"images/s ({legend}); in brackets, the ratio to stock eager NCHW at the same thread count."])
