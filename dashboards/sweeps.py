"""Batch and precision sweeps, with memory.

Needs: rows of the `batch` study (throughput and peak memory over batch sizes; out-of-memory rows mark where the
sweep stopped) and rows of the `precision` study (throughput, error and memory per dtype). Peak memory is
`torch_peak_allocated_bytes` on a GPU (when the harness records it) and `cpu_peak_rss_bytes` on the CPU.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards.common import (DTYPE_PATTERNS, DTYPE_SYMBOLS, PASS_ORDER, NoteBlock, Section, backend_color,
                                       config_labels, dtype_name, dtype_rank, esc, fmt_bytes, fmt_rate, latest,
                                       pass_name, rows_not_plotted, sort_configs)
from perfkit.dashboards.plot import figure, finish, hover_bytes, hover_row, log_range

GIB = 2 ** 30


def build(data) -> Section | None:
    m = data.measurements
    if m.empty:
        return None
    batch_rows = m[m.study == "batch"]
    precision_rows = m[m.study == "precision"]
    if batch_rows.empty and precision_rows.empty:
        return None
    section = Section("sweeps", "Batch and precision sweeps",
                      "Throughput and peak memory as the batch grows (an out-of-memory case ends a sweep and is "
                      "marked, never plotted as a speed), then the same network across float32, TF32, float16 and "
                      "bfloat16: throughput, error against the float64 reference, and memory.")
    if len(batch_rows):
        section.blocks.extend(_batch(data, batch_rows))
    if len(precision_rows):
        section.blocks.extend(_precision(data, precision_rows))
    table = rows_not_plotted(pd.concat([batch_rows, precision_rows]))
    if table:
        section.blocks.append(table)
    return section


def peak_memory(row) -> tuple[float | None, str]:
    """(bytes, what was measured) for a row: the torch allocator's peak on a GPU, the process's peak RSS on a CPU."""
    if str(row["device"]).startswith("cuda"):
        value = row.get("torch_peak_allocated_bytes")
        if pd.notna(value):
            return float(value), "torch peak allocated"
        return None, str(row.get("gpu_memory_note") or "no GPU memory recorded")
    value = row.get("cpu_peak_rss_bytes")
    if pd.notna(value):
        return float(value), "process peak RSS"
    return None, str(row.get("cpu_memory_note") or "no memory recorded")


def _batch(data, rows: pd.DataFrame) -> list:
    blocks = []
    ok = latest(data.ok.loc[data.ok.index.intersection(rows.index)])
    ok = ok[ok.images_per_s.notna()]
    oom = rows[rows.status == "oom"]
    if ok.empty:
        blocks.append(NoteBlock("The batch study has no speed results in these stores.", kind="warn"))
        return blocks
    ok = sort_configs(ok).sort_values("batch", kind="stable")
    fields = ("machine", "device", "layer", "backend", "dtype", "pass_name", "threads", "options")
    ok = ok.assign(_label=config_labels(ok, fields, always=("backend", "pass_name")))
    oom = oom.assign(_label=config_labels(oom, fields, always=("backend", "pass_name"))) if len(oom) else oom
    mem = ok.apply(lambda r: peak_memory(r)[0], axis=1)
    has_mem = mem.notna().any()
    for what in ("throughput", "memory") if has_mem else ("throughput",):
        fig = figure()
        for label, grp in ok.groupby("_label", sort=False):
            first = grp.iloc[0]
            dash = "solid" if first.pass_name == "forward" else "dash"
            if what == "throughput":
                y = grp.images_per_s
                hover = [hover_row(r) for _, r in grp.iterrows()]
            else:
                pairs = [peak_memory(r) for _, r in grp.iterrows()]
                y = [v / GIB if v is not None else None for v, _ in pairs]
                hover = [hover_row(r, extra=[(kind, hover_bytes(v))]) for (_, r), (v, kind) in
                         zip(grp.iterrows(), pairs)]
            fig.add_trace(go.Scatter(x=grp.batch.astype(float), y=y, mode="lines+markers", name=label,
                                     line=dict(color=backend_color(first.backend), dash=dash, width=2),
                                     marker=dict(symbol=DTYPE_SYMBOLS.get(first['dtype'], "circle"), size=8),
                                     hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
        for _, r in oom.drop_duplicates(["_label", "batch"]).iterrows():
            fig.add_vline(x=float(r.batch), line=dict(color="#b8860b", width=1.5, dash="dot"),
                          annotation=dict(text=f"OOM: {esc(r._label)} at batch {r.batch}", textangle=-90,
                                          font=dict(size=10, color="#8a6100"), hovertext=esc(r.note or "")),
                          annotation_position="top left")
        if what == "memory":
            _capacity_lines(fig, data, ok)
        batches = sorted(set(ok.batch.astype(int)) | set(oom.batch.astype(int) if len(oom) else []))
        fig.update_xaxes(type="log", tickvals=batches, ticktext=[str(b) for b in batches],
                         title_text="batch size (images, log scale)")
        if what == "throughput":
            fig.update_yaxes(type="log", title_text="images/s (log scale)")
            title, name = "Throughput over batch size", "sweeps-batch-throughput"
            caption = "Median images/s at each batch; solid lines forward, dashed train step. "
        else:
            fig.update_yaxes(title_text="peak memory (GiB)", rangemode="tozero")
            title, name = "Peak memory over batch size", "sweeps-batch-memory"
            caption = ("GPU rows: the torch allocator's peak during the timed window; CPU rows: the process's peak "
                       "resident set size (which includes everything the process holds). ")
        blocks.append(finish(fig, name, title, data, ok, height=480, caption=caption + (
            "Dotted lines mark out-of-memory cases. " if len(oom) else "")))
    return blocks


def _capacity_lines(fig, data, ok: pd.DataFrame) -> None:
    """The GPU's memory as recorded in the store's environment, for the GPU devices plotted."""
    done = set()
    for env_id in ok[ok.device.astype(str).str.startswith("cuda")].env_id.unique():
        env = data.environments.get(env_id)
        for gpu in (env.get("gpus") or []) if env else []:
            total = gpu.get("memory_bytes")
            key = (env.machine_id, gpu.get("index"))
            if total and key not in done:
                done.add(key)
                fig.add_hline(y=total / GIB, line=dict(color="#8a8f98", width=1, dash="dash"),
                              name=f"{gpu.get('name')} memory: {fmt_bytes(total)}", showlegend=True)


def _precision(data, rows: pd.DataFrame) -> list:
    blocks = []
    ok = latest(data.ok.loc[data.ok.index.intersection(rows.index)])
    ok = ok[ok.images_per_s.notna()]
    if ok.empty:
        blocks.append(NoteBlock("The precision study has no speed results in these stores.", kind="warn"))
        return blocks
    network = ok[ok.layer == "network"]
    use = network if len(network) else ok
    use = sort_configs(use)
    dtypes = sorted(set(use.dtype), key=dtype_rank)
    passes = [p for p in PASS_ORDER if p in set(use.pass_name)]
    fields = ("machine", "device", "layer", "backend", "batch", "threads", "options")
    use = use.assign(_label=config_labels(use, fields, always=("backend",)))
    fig = figure(1, len(passes), shared_yaxes=False, horizontal_spacing=0.08,
                 subplot_titles=[pass_name(p) for p in passes])
    shown = set()
    for col, p in enumerate(passes, start=1):
        part = use[use.pass_name == p]
        for label, grp in part.groupby("_label", sort=False):
            grp = grp.assign(_r=grp.dtype.map(dtype_rank)).sort_values("_r")
            fig.add_trace(go.Bar(x=grp.dtype.map(dtype_name), y=grp.images_per_s, name=label, legendgroup=label,
                                 showlegend=label not in shown,
                                 marker=dict(color=backend_color(grp.iloc[0].backend),
                                             pattern=dict(shape=[DTYPE_PATTERNS.get(d, "") for d in grp.dtype])),
                                 text=[fmt_rate(v) for v in grp.images_per_s], textposition="outside",
                                 cliponaxis=False, hovertext=[hover_row(r) for _, r in grp.iterrows()],
                                 hovertemplate="%{hovertext}<extra></extra>"), row=1, col=col)
            shown.add(label)
    fig.update_xaxes(categoryorder="array", categoryarray=[dtype_name(d) for d in dtypes], title_text="dtype")
    fig.update_yaxes(title_text="throughput (images/s)", rangemode="tozero", col=1)
    fig.update_layout(barmode="group")
    blocks.append(finish(fig, "sweeps-precision-throughput", "Throughput by precision", data, use, height=460,
                         caption="tf32 is float32 storage with TF32 tensor-core matmuls; float16 and bfloat16 use "
                                 "autocast for torch and native kernels for Triton."))
    checked = latest(rows[rows.error_rel.fillna(0) > 0])
    if len(checked):
        checked = checked.assign(_label=config_labels(checked, ("machine", "device", "layer", "backend", "pass_name"),
                                                      always=("backend", "pass_name")))
        fig = figure()
        for label, grp in checked.groupby("_label", sort=False):
            grp = grp.assign(_r=grp.dtype.map(dtype_rank)).sort_values("_r")
            fig.add_trace(go.Scatter(x=grp.dtype.map(dtype_name), y=grp.error_rel, mode="lines+markers", name=label,
                                     line=dict(color=backend_color(grp.iloc[0].backend),
                                               dash="solid" if grp.iloc[0].pass_name == "forward" else "dash"),
                                     marker=dict(size=9, symbol=[("x" if s == "incorrect" else "circle")
                                                                 for s in grp.status]),
                                     hovertext=[hover_row(r, with_time=False) for _, r in grp.iterrows()],
                                     hovertemplate="%{hovertext}<extra></extra>"))
        for _, t in checked.dropna(subset=["error_tolerance"]).drop_duplicates("dtype").iterrows():
            fig.add_trace(go.Scatter(x=[dtype_name(t['dtype'])], y=[t.error_tolerance], mode="markers",
                                     name=f"tolerance {dtype_name(t['dtype'])}: {t.error_tolerance:g}",
                                     legendgroup="tolerance",
                                     marker=dict(symbol="line-ew-open", size=26, color="#c62828",
                                                 line=dict(width=2, color="#c62828")),
                                     hovertemplate=f"tolerance for {esc(dtype_name(t['dtype']))}: "
                                                   f"{t.error_tolerance:g}<extra></extra>"))
        fig.update_xaxes(categoryorder="array", categoryarray=[dtype_name(d) for d in dtypes], title_text="dtype")
        fig.update_yaxes(type="log", range=log_range(list(checked.error_rel) + list(checked.error_tolerance.dropna()),
                                                     0.1),
                         title_text="relative error vs float64 reference (log scale)")
        blocks.append(finish(fig, "sweeps-precision-error", "What lower precision costs in accuracy", data, checked,
                             height=420, caption="Relative error against the float64 CPU reference; red bars are the "
                                                 "tolerance per dtype."))
    mem = use.apply(lambda r: peak_memory(r)[0], axis=1)
    if mem.notna().any():
        use = use.assign(_mem=mem)
        fig = figure(1, len(passes), horizontal_spacing=0.08, subplot_titles=[pass_name(p) for p in passes])
        shown = set()
        for col, p in enumerate(passes, start=1):
            for label, grp in use[(use.pass_name == p) & use._mem.notna()].groupby("_label", sort=False):
                grp = grp.assign(_r=grp.dtype.map(dtype_rank)).sort_values("_r")
                fig.add_trace(go.Bar(x=grp.dtype.map(dtype_name), y=grp._mem / GIB, name=label, legendgroup=label,
                                     showlegend=label not in shown,
                                     marker=dict(color=backend_color(grp.iloc[0].backend),
                                                 pattern=dict(shape=[DTYPE_PATTERNS.get(d, "") for d in grp.dtype])),
                                     hovertext=[hover_row(r, extra=[(peak_memory(r)[1], hover_bytes(r._mem))])
                                                for _, r in grp.iterrows()],
                                     hovertemplate="%{hovertext}<extra></extra>"), row=1, col=col)
                shown.add(label)
        fig.update_xaxes(categoryorder="array", categoryarray=[dtype_name(d) for d in dtypes], title_text="dtype")
        fig.update_yaxes(title_text="peak memory (GiB)", rangemode="tozero", col=1)
        fig.update_layout(barmode="group")
        blocks.append(finish(fig, "sweeps-precision-memory", "Peak memory by precision", data, use[use._mem.notna()],
                             height=420, caption="GPU: torch allocator peak; CPU: process peak RSS."))
    return blocks

