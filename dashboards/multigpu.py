"""Multi-GPU: the train step over several processes (torch.distributed), throughput and speedup against world size
per form: one process (`single`), data-parallel DDP (weak or strong scaling) and the paper's two-column split.

Needs the summary of study "multigpu" (studies/multigpu.py `table`): its data JSON's `rows` (device, device_name,
dtype, parallel, world, backend, threads, batch, per_rank, time_s, images_per_s, speedup, efficiency, scaling,
error_rel) and `communication` (bytes per step from the plans). Speedup is over the one-process row of the same
device kind and dtype (at the per-rank batch for weak scaling); where there is none it is listed as not computed.
Cases the run did not measure (the GPU form on a machine with fewer than 2 GPUs) are listed with their reason.
"""
from __future__ import annotations

import plotly.graph_objects as go

from perfkit.dashboards.common import (NoteBlock, Section, TableBlock, esc, fmt_seconds, fmt_si, is_num, latest,
                                       rows_not_plotted, run_provenance)
from perfkit.dashboards.plot import figure, finish
from perfkit.dashboards.summaries import has_summary, run_rows, runs_of, summary_items, where_label

STUDY = "multigpu"
FORM_NAMES = {"single": "one process", "ddp": "DDP", "two_column": "two columns (model parallel)"}
FORM_COLORS = {"single": "#3b6fb6", "ddp": "#e08a2c", "two_column": "#3a9a5b"}
SCALING_DASHES = {"weak": "solid", "strong": "dash", "-": "dot"}
CPU_NOTE = ("CPU rows: the ranks share one machine's cores and memory bandwidth, so they show the mechanics and the "
            "equivalence of the forms, not what a second device gains.")


def build(data) -> Section | None:
    if not has_summary(data, STUDY):
        return None
    rows = summary_items(data, STUDY, "rows")
    runs = list(dict.fromkeys(data.summaries[data.summaries.study == STUDY].run_id))
    section = Section("multigpu", "Several GPUs: data parallel and the paper's two columns",
                      "The whole network's train step over several processes launched with torchrun (NCCL on GPUs, "
                      "gloo on CPUs): images/s and the speedup over one process against the number of ranks, for "
                      "DDP (weak scaling: a fixed batch per rank; strong: a fixed global batch) and the paper's "
                      "two-column model parallelism (2 ranks, each half of every layer, the whole batch). Each form "
                      "matched the float64 one-process network before it was timed.")
    if len(rows):
        rows = latest(rows, ("machine_id", "device", "dtype", "parallel", "world", "batch"))
        several = rows.machine_id.nunique() > 1
        rows = rows.assign(_place=[where_label(r, several) for _, r in rows.iterrows()])
        rows = rows.assign(_scaling=_series_scaling(rows))
        section.blocks.append(_scaling_figure(data, rows))
        uncompared = rows[rows.speedup.isna()]
        if len(uncompared):
            section.blocks.append(TableBlock(
                ["device", "dtype", "form", "ranks", "batch", "why no speedup"],
                [[esc(r._place), esc(r['dtype']), esc(FORM_NAMES.get(r.parallel, r.parallel)), str(r.world),
                  str(r.batch), f"no one-process row at batch {r.per_rank if r._scaling == 'weak' else r.batch} "
                                "was measured to compare with"] for _, r in uncompared.iterrows()],
                title="Speedups not computed"))
        if (rows.device == "cpu").any():
            section.blocks.append(NoteBlock(esc(CPU_NOTE)))
    else:
        section.blocks.append(NoteBlock("No distributed case was measured in these runs.", kind="warn"))
    comm = summary_items(data, STUDY, "communication")
    if len(comm):
        c = comm.iloc[-1]
        section.blocks.append(NoteBlock(
            f"What moves between ranks per train step, computed from the plans (not measured), {esc(c['dtype'])} at "
            f"batch {c.batch}: two columns exchange {esc(fmt_si(c.two_column_bytes_per_step, 'B'))} of activations "
            f"and their gradients; DDP all-reduces {esc(fmt_si(c.ddp_gradient_bytes_per_step, 'B'))} of gradients, "
            "whatever the batch."))
    not_measured = run_rows(data, runs)
    table = rows_not_plotted(not_measured) if len(not_measured) else None
    if table is not None:
        section.blocks.append(table)
    return section


def _series_scaling(rows):
    """The scaling series a row belongs to: its own, or for a 1-rank DDP row the weak (else strong) series of its
    device and dtype, which starts there."""
    out = []
    for _, r in rows.iterrows():
        scaling = r.scaling if isinstance(r.scaling, str) else "-"
        if r.parallel == "ddp" and scaling == "-":
            peers = rows[(rows._place == r._place) & (rows["dtype"] == r["dtype"]) & (rows.parallel == "ddp")]
            kinds = set(peers.scaling.dropna())
            scaling = "weak" if "weak" in kinds else "strong" if "strong" in kinds else "-"
        out.append(scaling)
    return out


def _scaling_figure(data, rows):
    fig = figure(1, 2, subplot_titles=("throughput", "speedup over one process"), horizontal_spacing=0.1)
    several_dtypes = rows["dtype"].nunique() > 1
    for (where, dtype, parallel, scaling), grp in rows.groupby(["_place", "dtype", "parallel", "_scaling"],
                                                               sort=False):
        grp = grp.sort_values("world")
        name = f"{where} · {FORM_NAMES.get(parallel, parallel)}" + (f" ({scaling})" if scaling != "-" else "") \
            + (f" · {dtype}" if several_dtypes else "")
        style = dict(mode="lines+markers", legendgroup=name, hovertext=[_hover(r) for _, r in grp.iterrows()],
                     hovertemplate="%{hovertext}<extra></extra>",
                     line=dict(color=FORM_COLORS.get(parallel, "#6f7f8f"), dash=SCALING_DASHES.get(scaling, "dot")),
                     marker=dict(size=9, symbol="diamond" if parallel == "two_column" else "circle"))
        fig.add_trace(go.Scatter(x=grp.world, y=grp.images_per_s, name=name, **style), row=1, col=1)
        fig.add_trace(go.Scatter(x=grp.world, y=[v if is_num(v) else None for v in grp.speedup], name=name,
                                 showlegend=False, **style), row=1, col=2)
    worlds = sorted(set(rows.world))
    fig.add_trace(go.Scatter(x=worlds, y=worlds, mode="lines", name="linear speedup (ideal)",
                             line=dict(color="#8a8f98", width=1, dash="dot"), hoverinfo="skip"), row=1, col=2)
    fig.update_xaxes(title_text="ranks (processes, one device each on GPUs)", tickvals=worlds)
    fig.update_yaxes(title_text="images per second (global)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="speedup over one process (x)", rangemode="tozero", row=1, col=2)
    return finish(fig, "multigpu-scaling", "Train step over several processes", data, None, height=460,
                  provenance_text=run_provenance(data, runs_of(rows)),
                  caption="Speedup: images/s over the one-process network on the same kind of device and dtype, at "
                          "the per-rank batch for weak scaling and the same batch otherwise; the dotted line is "
                          "linear scaling. Hover for step time, batches, threads per rank and the error against "
                          "float64.")


def _hover(r) -> str:
    threads = f"<br>threads per rank: {int(r.threads)}" if is_num(r.threads) else ""
    speedup = (f"<b>{r.speedup:.4g}x</b> ({r.efficiency * 100:.3g}% per rank)" if is_num(r.speedup)
               else "not computed (no one-process row to compare with)")
    error = f"{r.error_rel:.3g}" if is_num(r.error_rel) else "not recorded"
    return (f"<b>{esc(FORM_NAMES.get(r.parallel, r.parallel))}</b> · {r.world} rank(s) · {esc(r.backend)}<br>"
            f"device: {esc(r._place)} ({esc(r.device)}) · {esc(r['dtype'])}{threads}<br>"
            f"batch: {r.batch} images ({r.per_rank} per rank)<br>step: <b>{fmt_seconds(r.time_s)}</b><br>"
            f"throughput: <b>{r.images_per_s:,.6g} images/s</b><br>speedup: {speedup}<br>"
            f"rel. error vs float64: {error}")
