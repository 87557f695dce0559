"""Backends and correctness: speedup of each backend over torch eager, and every row's error against the float64
CPU reference.

Needs: for the speedup figures, ok rows of a non-reference backend (triton, compile, ...) and of `torch` for the same
machine, variant, layer, device, dtype, batch, pass, activation, threads and options (the `backends` study's rows
when there are any). For the correctness figure, any row with `error_rel` (incorrect rows included: they are drawn
as red crosses, with their tolerance).
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards.common import (DTYPE_DASHES, DTYPE_PATTERNS, DTYPE_SYMBOLS, PASS_ORDER, NoteBlock, Section,
                                       backend_color, backend_name, config_labels, dtype_name, esc, latest,
                                       layer_order, pass_name, rows_not_plotted, sort_configs)
from perfkit.dashboards.plot import figure, finish, hover_row, log_range

MATCH = ["machine_id", "variant", "layer", "device", "dtype", "batch", "pass_name", "activation", "threads", "options"]


def build(data) -> Section | None:
    m = data.measurements
    if m.empty:
        return None
    rows = m[m.study == "backends"] if (m.study == "backends").any() else m
    ok = latest(data.ok.loc[data.ok.index.intersection(rows.index)])
    pairs = _pairs(ok)
    checked = latest(rows[rows.error_rel.notna() | (rows.status == "incorrect")])
    if pairs.empty and checked.empty:
        return None
    section = Section("backends", "Backends and correctness",
                      "Speedup of each backend over torch eager (the reference) for the same layer, pass, dtype and "
                      "batch, then every checked row's relative Frobenius error against the float64 CPU reference. "
                      "A row over its tolerance is marked <b>incorrect</b>: it was not timed and never appears as a "
                      "speed result.")
    if len(pairs):
        for p in [p for p in PASS_ORDER if p in set(pairs.pass_name)] + sorted(set(pairs.pass_name) - set(PASS_ORDER)):
            section.blocks.append(_speedup_figure(data, pairs[pairs.pass_name == p], p))
    else:
        backends = ", ".join(sorted({backend_name(b) for b in rows.backend}))
        section.blocks.append(NoteBlock(f"Only {esc(backends)} measured here: speedups over eager need another "
                                        "backend's rows (run the backends study)."))
    if len(checked):
        section.blocks.append(_error_figure(data, checked))
    table = rows_not_plotted(rows[rows.backend != "torch"] if len(pairs) else rows, statuses=("incorrect", "error"))
    if table:
        section.blocks.append(table)
    return section


def _pairs(ok: pd.DataFrame) -> pd.DataFrame:
    eager = ok[ok.backend == "torch"]
    other = ok[ok.backend != "torch"]
    if eager.empty or other.empty:
        return pd.DataFrame()
    # pandas cannot join on all-null keys reliably: fill them with a marker first.
    fill = {"threads": -1, "options": "{}"}
    merged = other.fillna(fill).merge(eager.fillna(fill), on=MATCH, suffixes=("", "_eager"))
    if merged.empty:
        return merged
    merged["threads"] = merged.threads.where(merged.threads != -1)
    merged["speedup"] = merged.time_median_s_eager / merged.time_median_s
    return merged


def _speedup_figure(data, pairs: pd.DataFrame, p: str):
    pairs = sort_configs(pairs)
    pairs = pairs.assign(_label=config_labels(pairs, ("machine", "device", "backend", "dtype", "batch", "threads",
                                                      "options"), always=("backend", "dtype")))
    fig = figure()
    for label, grp in pairs.groupby("_label", sort=False):
        first = grp.iloc[0]
        hover = [hover_row(r, extra=[("torch eager median", f"{r.time_median_s_eager * 1e3:.6g} ms"),
                                     ("speedup over eager", f"{r.speedup:.6g}x")]) for _, r in grp.iterrows()]
        fig.add_trace(go.Bar(x=grp.layer, y=grp.speedup, name=label,
                             marker=dict(color=backend_color(first.backend),
                                         pattern=dict(shape=DTYPE_PATTERNS.get(first['dtype'], ""))),
                             hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    fig.add_hline(y=1, line=dict(color="#3b6fb6", width=1.4, dash="dash"), name="torch eager (1x)",
                  showlegend=True)
    fig.update_xaxes(categoryorder="array", categoryarray=layer_order(pairs), title_text="layer")
    fig.update_yaxes(type="log", range=log_range(list(pairs.speedup) + [1.0], pad=0.12),
                     title_text="speedup over torch eager (x, log scale)")
    fig.update_layout(barmode="group")
    return finish(fig, f"backends-speedup-{p}", f"Speedup over torch eager, {pass_name(p)}", data, pairs,
                  height=480, caption="Above 1: faster than torch eager on the same layer, pass, dtype and batch. "
                                      "Incorrect rows have no bar (see the correctness figure).")


def _error_figure(data, checked: pd.DataFrame):
    checked = sort_configs(checked)
    positive = checked[checked.error_rel.fillna(0) > 0]
    exact = checked[checked.error_rel == 0]
    checked_labels = config_labels(positive, ("machine", "device", "backend", "dtype"), always=("backend", "dtype"))
    positive = positive.assign(_label=checked_labels)
    order = layer_order(checked)
    fig = figure()
    good = positive[positive.status != "incorrect"]
    for label, grp in good.groupby("_label", sort=False):
        first = grp.iloc[0]
        fig.add_trace(go.Scatter(
            x=grp.layer, y=grp.error_rel, mode="markers", name=label, offsetgroup=label,
            marker=dict(color=backend_color(first.backend), symbol=DTYPE_SYMBOLS.get(first['dtype'], "circle"), size=9,
                        line=dict(width=0.6, color="white")),
            hovertext=[hover_row(r, with_time=False) for _, r in grp.iterrows()],
            hovertemplate="%{hovertext}<extra></extra>"))
    bad = checked[checked.status == "incorrect"]
    bad_plotted = bad[bad.error_rel.fillna(0) > 0]
    if len(bad_plotted):
        fig.add_trace(go.Scatter(
            x=bad_plotted.layer, y=bad_plotted.error_rel, mode="markers", name="incorrect (over tolerance, not timed)",
            marker=dict(color="#c62828", symbol="x-thin-open", size=15, line=dict(width=3, color="#c62828")),
            hovertext=[hover_row(r, with_time=False) for _, r in bad_plotted.iterrows()],
            hovertemplate="%{hovertext}<extra></extra>"))
    tolerances = checked.dropna(subset=["error_tolerance"]).drop_duplicates(["dtype", "error_tolerance"])
    for _, t in tolerances.iterrows():
        dash = DTYPE_DASHES.get(t["dtype"], "dash")
        fig.add_hline(y=t.error_tolerance, line=dict(color="#c62828", width=1, dash=dash),
                      name=f"tolerance {dtype_name(t['dtype'])}: {t.error_tolerance:g}", showlegend=True,
                      legendgroup="tolerance")
    fig.update_layout(scattermode="group", scattergap=0.45)
    fig.update_xaxes(categoryorder="array", categoryarray=order, title_text="layer")
    fig.update_yaxes(type="log", range=log_range(list(positive.error_rel) + list(tolerances.error_tolerance), 0.1),
                     title_text="relative error vs float64 CPU reference (log scale)")
    exact_note = ""
    if len(exact):
        layers = ", ".join(dict.fromkeys(exact.layer))
        exact_note = (f" {len(exact)} row(s) match the reference exactly (error 0, which a log axis cannot show), "
                      f"in layers: {esc(layers)}.")
    no_error = bad[~(bad.error_rel.fillna(0) > 0)]
    if len(no_error):
        exact_note += f" {len(no_error)} incorrect row(s) have no error value; see the table."
    return finish(fig, "backends-correctness", "Correctness: error against the float64 reference", data, checked,
                  height=480, caption="Worst tensor's relative Frobenius error per row (output, or gradients for "
                                      "training passes; each pass is a point, named on hover); red lines are the "
                                      "tolerances per dtype; red crosses are rows over tolerance." + exact_note)

