"""Activations: the paper's Figure 1 at small scale (training error over epochs and wall time per activation), and
what each activation costs as a kernel.

Needs, for the convergence curves, the summary of study "activations" with a `curves` list in its data JSON (the
contract is in `perfkit.dashboards.data`: activation, epoch, train_error as a fraction, wall_s, dataset). For the
kernel cost, ok rows of the `activations` study. The 25% threshold and the paper's "six times faster" come from
REFERENCE.md.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards import published as ref
from perfkit.dashboards.common import (NoteBlock, Section, TableBlock, backend_color, config_labels, esc, latest,
                                       run_provenance, sort_configs)
from perfkit.dashboards.data import CURVE_FIELDS, CURVES_KEY, CURVES_STUDY
from perfkit.dashboards.plot import figure, finish, hover_row, references_caption, reference_hline, time_error_bars

ACTIVATION_COLORS = {"relu": "#3b6fb6", "tanh": "#e08a2c", "sigmoid": "#8e6bbf"}
DATASET_DASHES = ("solid", "dash", "dot", "dashdot")


def curves(data) -> tuple[pd.DataFrame, list[str]]:
    """The convergence points of every activations summary, validated against the contract."""
    points, problems = [], []
    summaries = data.summaries
    if summaries.empty:
        return pd.DataFrame(columns=[*CURVE_FIELDS, "run_id"]), problems
    for _, s in summaries[summaries.study == CURVES_STUDY].iterrows():
        items = s.data.get(CURVES_KEY) if isinstance(s.data, dict) else None
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(f"run {s.run_id[:8]}: '{CURVES_KEY}' is not a list")
            continue
        for i, item in enumerate(items):
            missing = [k for k in CURVE_FIELDS if not isinstance(item, dict) or k not in item]
            if missing:
                problems.append(f"run {s.run_id[:8]}, point {i}: missing {', '.join(missing)}")
                continue
            points.append({**item, "run_id": s.run_id})
    df = pd.DataFrame(points)
    if len(df):
        for col in ("epoch", "train_error", "wall_s"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
        df = df.dropna(subset=["epoch", "train_error"])
    return df, problems


def build(data) -> Section | None:
    pts, problems = curves(data)
    ok = data.ok
    kernels = latest(ok[ok.study == "activations"]) if len(ok) else ok
    if pts.empty and kernels.empty and not problems:
        return None
    section = Section("activations", "Activations: ReLU against tanh and sigmoid",
                      "The paper's Figure 1 at small scale: the same small CNN trained with each activation, its "
                      "training error over epochs and over wall-clock time, and how many epochs each needs to reach "
                      "25% training error (the paper: ReLU six times faster than tanh). Then what each activation "
                      "costs as a kernel.")
    if len(pts):
        section.blocks.extend(_curve_figures(data, pts))
        section.blocks.append(_threshold_table(pts))
    for problem in problems:
        section.blocks.append(NoteBlock(f"Convergence data not used: {esc(problem)}.", kind="warn"))
    if len(kernels):
        section.blocks.append(_kernel_figure(data, kernels))
    return section


def _curve_figures(data, pts: pd.DataFrame) -> list:
    blocks = []
    datasets = list(dict.fromkeys(pts.dataset))
    prov = run_provenance(data, pts.run_id.unique())
    for x, title, axis in (("epoch", "Training error over epochs", "epoch"),
                           ("wall_s", "Training error over wall-clock time", "wall-clock training time (s)")):
        fig = figure()
        for (dataset, activation), grp in pts.groupby(["dataset", "activation"], sort=False):
            grp = grp.sort_values("epoch")
            extra_keys = [k for k in grp.columns if k not in (*CURVE_FIELDS, "run_id")]
            hover = [f"<b>{esc(activation)}</b> on {esc(dataset)}<br>epoch {r.epoch:g}<br>training error "
                     f"<b>{r.train_error * 100:.4g}%</b><br>wall time {r.wall_s:.5g} s"
                     + "".join(f"<br>{esc(k)}: {esc(r[k])}" for k in extra_keys if pd.notna(r[k]))
                     for _, r in grp.iterrows()]
            fig.add_trace(go.Scatter(
                x=grp[x], y=grp.train_error * 100, mode="lines+markers",
                name=f"{activation}" + (f" · {dataset}" if len(datasets) > 1 else ""),
                line=dict(color=ACTIVATION_COLORS.get(activation, "#6f7f8f"), width=2.2,
                          dash=DATASET_DASHES[datasets.index(dataset) % len(DATASET_DASHES)]),
                marker=dict(size=5), hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
        reference_hline(fig, ref.FIG1_TARGET_ERROR)
        fig.update_xaxes(title_text=axis)
        fig.update_yaxes(title_text="training error (%)", rangemode="tozero")
        blocks.append(finish(fig, f"activations-{x}", title, data, None, height=440, provenance_text=prov,
                             caption=f"Datasets: {esc(', '.join(datasets))}. "
                                     + references_caption([ref.FIG1_TARGET_ERROR]) + "."))
    return blocks


def _threshold_table(pts: pd.DataFrame) -> TableBlock:
    target = ref.FIG1_TARGET_ERROR.value / 100  # the curves' train_error is a fraction
    rows, reached = [], {}
    for (dataset, activation), grp in pts.groupby(["dataset", "activation"], sort=False):
        grp = grp.sort_values("epoch")
        hit = grp[grp.train_error <= target]
        if len(hit):
            first = hit.iloc[0]
            reached[(dataset, activation)] = first.epoch
            rows.append([esc(dataset), esc(activation), f"{first.epoch:g}", f"{first.wall_s:.4g} s", ""])
        else:
            rows.append([esc(dataset), esc(activation), "not reached", "-",
                         f"lowest {grp.train_error.min() * 100:.3g}% after {grp.epoch.max():g} epochs"])
    for dataset in dict.fromkeys(pts.dataset):
        relu, tanh = reached.get((dataset, "relu")), reached.get((dataset, "tanh"))
        if relu and tanh:
            rows.append([esc(dataset), "<b>tanh / ReLU epochs</b>", f"<b>{tanh / relu:.3g}x</b>", "",
                         esc(f"the paper: {ref.FIG1_RELU_SPEEDUP.value:g}x ({ref.FIG1_RELU_SPEEDUP.source})")])
    return TableBlock(["dataset", "activation", f"epochs to {target * 100:g}% error", "wall time", "note"], rows,
                      title=f"Reaching {target * 100:g}% training error",
                      note=ref.FIG1_RELU_SPEEDUP.citation())


def _kernel_figure(data, kernels: pd.DataFrame):
    kernels = sort_configs(kernels)
    kernels = kernels.assign(_label=config_labels(kernels, ("machine", "device", "backend", "dtype", "batch",
                                                            "pass_name", "options"), always=("backend",)))
    fig = figure()
    for label, grp in kernels.groupby("_label", sort=False):
        fig.add_trace(go.Bar(x=grp.activation, y=grp.time_median_s * 1e3, name=label,
                             marker=dict(color=backend_color(grp.iloc[0].backend)),
                             error_y=time_error_bars(grp),
                             hovertext=[hover_row(r) for _, r in grp.iterrows()],
                             hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_xaxes(title_text="activation")
    fig.update_yaxes(type="log", title_text="median time per call (ms, log scale)")
    fig.update_layout(barmode="group")
    return finish(fig, "activations-kernels", "Activation kernel cost", data, kernels, height=420,
                  caption="Rows of the activations study (standalone and fused cases are told apart by their "
                          "options).")
