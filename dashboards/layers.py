"""Per-layer time breakdown per backend and pass.

Needs: ok rows with `layer != "network"` (any study; repeats of one configuration keep the latest). One figure per
pass: each layer's median time (p10-p90 whiskers) per configuration; then where the time goes, by layer kind.
"""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards.common import (CONFIG_FIELDS, PASS_ORDER, NoteBlock, Section, config_labels, esc, latest,
                                       layer_order, pass_name, rows_not_plotted, sort_configs)
from perfkit.dashboards.plot import (config_styles, figure, finish, hover_row, log_range, mark_incorrect,
                                     time_error_bars)

MAX_BAR_CONFIGS = 4  # grouped bars up to this many configurations per pass; a heatmap beyond
MAX_CONFIGS = 24  # heatmap rows
KIND_COLORS = {"conv": "#3b6fb6", "linear": "#8e6bbf", "lrn": "#e08a2c", "maxpool": "#3a9a5b",
               "activation": "#c24d4d", "dropout": "#b5a33a", "cross_entropy": "#6f7f8f"}


def build(data) -> Section | None:
    m = data.measurements
    layer_rows = m[(m.layer != "network") & plain(m)] if len(m) else m
    ok = latest(data.ok[(data.ok.layer != "network") & plain(data.ok)]) if len(m) else m
    if ok.empty:
        return None
    section = Section("layers", "Per-layer time",
                      "Each layer timed on its own, per backend and pass: the median time of one call at the row's "
                      "batch size, with p10-p90 whiskers (log scale: the layers span orders of magnitude). Then the "
                      "share of the summed layer time by layer kind. A layer measured alone can take longer than "
                      "inside the network, where caches are warm and the allocator has settled.")
    ok = sort_configs(ok)
    ok = ok.assign(_label=config_labels(ok, CONFIG_FIELDS))
    incorrect = layer_rows[layer_rows.status == "incorrect"]
    for p in [p for p in PASS_ORDER if p in set(ok.pass_name)] + sorted(set(ok.pass_name) - set(PASS_ORDER)):
        part = ok[ok.pass_name == p]
        block, dropped = _pass_figure(data, part, incorrect[incorrect.pass_name == p], p)
        section.blocks.append(block)
        if dropped:
            section.blocks.append(NoteBlock(f"{len(dropped)} more configuration(s) for the {esc(pass_name(p))} pass "
                                            f"not drawn (at most {MAX_CONFIGS} per figure), e.g. "
                                            + esc("; ".join(dropped[:3])), kind="warn"))
    share = _share_figure(data, ok)
    if share:
        section.blocks.append(share)
    table = rows_not_plotted(layer_rows)
    if table:
        section.blocks.append(table)
    return section


def plain(df: pd.DataFrame) -> pd.Series:
    """Rows of the network as specified (ReLU, no study-specific options): the per-layer breakdown's scope. Cases
    with other activations or options belong to their own studies' sections."""
    return (df.activation.fillna("relu") == "relu") & df.options.fillna("{}").isin(["{}", ""])


def _pass_figure(data, part: pd.DataFrame, incorrect: pd.DataFrame, p: str):
    labels = list(dict.fromkeys(part._label))
    counts = part.groupby("_label").size()
    keep = set(sorted(labels, key=lambda lab: -counts[lab])[:MAX_CONFIGS])
    dropped = [lab for lab in labels if lab not in keep]
    keep = [lab for lab in labels if lab in keep]
    part = part[part._label.isin(keep)]
    order = layer_order(part)
    if len(keep) > MAX_BAR_CONFIGS:
        return _heatmap(data, part, incorrect, p, keep, order), dropped
    configs = part.drop_duplicates("_label")
    styles = config_styles(configs)
    fig = figure()
    for label in keep:
        grp = part[part._label == label]
        grp = grp.set_index("layer").reindex([x for x in order if x in set(grp.layer)]).reset_index()
        style = styles[label]
        fig.add_trace(go.Bar(
            x=grp.layer, y=grp.time_median_s * 1e3, name=label,
            error_y=time_error_bars(grp),
            marker=dict(color=style["color"], pattern=dict(shape=style["pattern"])),
            hovertext=[hover_row(r) for _, r in grp.iterrows()], hovertemplate="%{hovertext}<extra></extra>"))
    mark_incorrect(fig, incorrect, lambda r: r["layer"])
    fig.update_xaxes(categoryorder="array", categoryarray=order, title_text="layer (network order)")
    fig.update_yaxes(type="log", range=log_range(pd.concat([part.time_p10_s, part.time_p90_s]) * 1e3, pad=0.08),
                     title_text="median time per call (ms, log scale)")
    fig.update_layout(barmode="group")
    block = finish(fig, f"layers-{p}", f"Per-layer time, {pass_name(p)}", data, part,
                   height=480 if len(keep) <= 3 else 540,
                   caption="One bar per configuration; hover for the exact median, p10, p90 and repetitions. "
                           + ("Layers marked ✗ failed the correctness check and were not timed. " if len(incorrect)
                              else ""))
    return block, dropped


def _heatmap(data, part: pd.DataFrame, incorrect: pd.DataFrame, p: str, labels: list, order: list):
    """Many configurations: one row each, one column per layer, coloured by log time, the time written in."""
    table = part.pivot_table(index="_label", columns="layer", values="time_median_s", aggfunc="last")
    table = table.reindex(index=labels, columns=order)
    rows = {(r._label, r.layer): r for _, r in part.iterrows()}
    z, text, hover = [], [], []
    for label in labels:
        zr, tr, hr = [], [], []
        for layer in order:
            seconds = table.loc[label, layer]
            row = rows.get((label, layer))
            if row is None or pd.isna(seconds):
                zr.append(None)
                tr.append("")
                hr.append(f"{esc(label)}<br>{esc(layer)}: not measured")
            else:
                zr.append(math.log10(seconds * 1e3))
                tr.append(_short_ms(seconds * 1e3))
                hr.append(hover_row(row))
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    finite = [v for r in z for v in r if v is not None]
    lo, hi = math.floor(min(finite)), math.ceil(max(finite))
    ticks = list(range(lo, hi + 1))
    fig = figure()
    fig.add_trace(go.Heatmap(
        z=z, x=order, y=labels, text=text, texttemplate="%{text}", textfont=dict(size=10 if len(order) <= 12 else 8),
        hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", colorscale="Viridis", zmin=lo, zmax=hi,
        xgap=1, ygap=1,
        colorbar=dict(title=dict(text="ms (log)", side="right"), tickvals=ticks,
                      ticktext=[_short_ms(10 ** t) for t in ticks], thickness=14)))
    if len(incorrect):
        bad = incorrect.assign(_label=config_labels(incorrect, CONFIG_FIELDS))
        bad = bad[bad._label.isin(labels)]
        if len(bad):
            fig.add_trace(go.Scatter(x=bad.layer, y=bad._label, mode="markers+text", text=["✗"] * len(bad),
                                     textfont=dict(color="white", size=14), name="incorrect (not timed)",
                                     marker=dict(color="#c62828", size=18, symbol="square"),
                                     hovertext=[hover_row(r, with_time=False) for _, r in bad.iterrows()],
                                     hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_xaxes(categoryorder="array", categoryarray=order, title_text="layer (network order)", side="bottom",
                     showgrid=False)
    fig.update_yaxes(categoryorder="array", categoryarray=labels[::-1], showgrid=False)
    return finish(fig, f"layers-{p}", f"Per-layer time, {pass_name(p)}", data, part,
                  height=max(340, 170 + 30 * len(labels)),
                  caption="Median time per call of each layer (ms) per configuration; colour on a log scale, the "
                          "exact median, p10, p90 and repetitions on hover. Empty cells were not measured"
                          + ("; red cells failed the correctness check and were not timed." if len(incorrect)
                             else "."))


def _short_ms(ms: float) -> str:
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 1:
        return f"{ms:.3g}"
    return f"{ms:.2g}"


def _share_figure(data, ok: pd.DataFrame):
    """Stacked 100% bars: the share of summed layer time by layer kind, per configuration and pass."""
    ok = ok.assign(_row=ok._label + " · " + ok.pass_name.map(pass_name))
    # only configurations that measured every layer their variant and pass have (else the shares mislead)
    coverage = ok.groupby("_row").layer.nunique()
    full = ok.groupby(["variant", "pass_name"]).layer.nunique()
    complete = {row for row, grp in ok.groupby("_row") if coverage[row] == full[(grp.variant.iloc[0],
                                                                                  grp.pass_name.iloc[0])]}
    partial = [r for r in dict.fromkeys(ok._row) if r not in complete]
    ok = ok[ok._row.isin(complete)]
    if ok.empty:
        return None
    totals = ok.groupby("_row").time_median_s.sum()
    rows = list(dict.fromkeys(ok._row))
    if len(rows) > 16:
        rows = rows[:16]
    kinds = [k for k in KIND_COLORS if k in set(ok.layer_kind)] + sorted(set(ok.layer_kind) - set(KIND_COLORS))
    by = ok[ok._row.isin(rows)].groupby(["_row", "layer_kind"])
    summed = by.time_median_s.sum()
    layers = by.layer.apply(lambda s: ", ".join(s))
    fig = figure()
    for kind in kinds:
        ys, xs, hover = [], [], []
        for row in rows:
            if (row, kind) not in summed.index:
                continue
            seconds = summed[(row, kind)]
            share = seconds / totals[row] * 100
            ys.append(row)
            xs.append(share)
            hover.append(f"<b>{esc(kind)}</b> in {esc(row)}<br>{share:.4g}% of the summed layer time<br>"
                         f"{seconds * 1e3:.6g} ms of {totals[row] * 1e3:.6g} ms<br>layers: {esc(layers[(row, kind)])}")
        if xs:
            fig.add_trace(go.Bar(x=xs, y=ys, orientation="h", name=kind,
                                 marker=dict(color=KIND_COLORS.get(kind, "#9aa5b1")),
                                 hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(range=[0, 100], title_text="share of the summed per-layer median time (%)")
    fig.update_yaxes(categoryorder="array", categoryarray=rows[::-1])
    return finish(fig, "layers-share", "Where the time goes, by layer kind", data, ok[ok._row.isin(rows)],
                  height=max(300, 150 + 40 * len(rows)), legend_title="layer kind",
                  caption="Each bar sums the per-layer medians of one configuration and pass; segments are layer "
                          "kinds. "
                          + (f"{len(partial)} configuration(s) that measured only some layers are left out. "
                             if partial else ""))
