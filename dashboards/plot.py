"""Plotly helpers: one look for every figure, hover text with exact values and units, reference marks with their
sources, and the subtitle saying which machine and software produced the data."""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from perfkit.dashboards.common import (FLOPS_CONVENTION, FigureBlock, backend_color, backend_name, constant_context,
                                       device_label, dtype_name, esc, fmt_bytes, fmt_seconds, fmt_si, is_num,
                                       options_label, pass_name, provenance)
from perfkit.dashboards.published import Ref

FONT = "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
REFERENCE_COLOR = "#7a5c99"
GRID = "#e8ebf0"
AXIS_LINE = "#c5cbd3"

CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False,
          "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
          "toImageButtonOptions": {"format": "png", "scale": 2}}


_TEMPLATE = None


def template() -> go.layout.Template:
    """The report's look, built once (applying a stock template to every figure is slow)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        axis = dict(showline=True, linecolor=AXIS_LINE, gridcolor=GRID, zeroline=False, ticks="outside",
                    tickcolor=AXIS_LINE, automargin=True, title=dict(standoff=10))
        _TEMPLATE = go.layout.Template(layout=dict(
            font=dict(family=FONT, size=12, color="#2d3640"), paper_bgcolor="white", plot_bgcolor="white",
            colorway=["#3b6fb6", "#e08a2c", "#3a9a5b", "#8e6bbf", "#c24d4d", "#8c6d4f", "#d46a9f", "#6f7f8f"],
            xaxis=axis, yaxis=axis, hoverlabel=dict(font=dict(family=FONT, size=12), align="left", namelength=-1),
            bargap=0.18, bargroupgap=0.06, hovermode="closest"))
    return _TEMPLATE


def figure(rows: int = 1, cols: int = 1, **subplot_args) -> go.Figure:
    base = go.Figure(layout=dict(template=template()))
    if rows == 1 and cols == 1 and not subplot_args:
        return base
    return make_subplots(rows=rows, cols=cols, figure=base, **subplot_args)


def finish(fig: go.Figure, name: str, title: str, data, rows: pd.DataFrame | None, *, height: int = 460,
           caption: str = "", provenance_text: str | None = None, legend_title: str = "") -> FigureBlock:
    """Apply the report's look, put the data's provenance under the title, and wrap the figure as a block."""
    short, full = provenance(rows, data) if provenance_text is None else (provenance_text, esc(provenance_text))
    lines = [line for line in short.split("\n") if line]
    fig.update_layout(
        title=dict(text=f"<b>{esc(title)}</b>", x=0.01, xanchor="left", y=0.985, yanchor="top", yref="container",
                   font=dict(size=16, color="#1f2933"),
                   subtitle=dict(text="<br>".join(esc(line) for line in lines), font=dict(size=11, color="#66707c"))),
        height=height + _legend_height(fig),
        margin=dict(l=70, r=20, t=76 + 15 * len(lines), b=60),
        legend=dict(title=dict(text=legend_title), font=dict(size=11), bgcolor="rgba(255,255,255,0.85)",
                    groupclick="togglegroup", orientation="h", x=0, xanchor="left", y=0, yanchor="bottom",
                    yref="container"),
    )
    context = constant_context(rows) if rows is not None and "layer" in rows else ""
    context = f"Every point: {esc(context)}." if context else ""
    caption = " ".join(p for p in (caption, context, full) if p)
    return FigureBlock(name=name, fig=fig, caption=caption)


def _legend_height(fig: go.Figure) -> int:
    """Room for a legend under the plot: rows of entries, packed by the longest name."""
    if fig.layout.showlegend is False:
        return 0
    names = [t.name for t in fig.data if t.name and t.showlegend is not False]
    shapes = [s.name for s in fig.layout.shapes if s.name and s.showlegend]
    names += shapes
    if len(names) < 2 and not shapes:
        return 0
    longest = max((len(n) for n in names), default=10)
    per_row = 4 if longest <= 24 else 3 if longest <= 34 else 2 if longest <= 56 else 1
    return 22 * -(-len(names) // per_row) + 14


def log_axis_title(what: str, unit: str) -> str:
    return f"{what} ({unit}, log scale)"


FLOPS_AXIS = f"attained FLOP/s ({FLOPS_CONVENTION}; log scale)"


# -- hover text ---------------------------------------------------------------------------------------------------------
def _line(label: str, value: str) -> str:
    return f"{esc(label)}: <b>{esc(value)}</b>"


def hover_row(row, extra: Sequence[tuple[str, str]] = (), with_time: bool = True) -> str:
    """Everything that identifies a measurement and its exact values, with units."""
    lines = [f"<b>{esc(row['layer'])}</b> · {esc(pass_name(row['pass_name']))} · {esc(row['variant'])}",
             _line("backend", backend_name(row["backend"])),
             _line("device", f"{device_label(row)} ({row['device']})"),
             _line("dtype", dtype_name(row['dtype'])),
             _line("batch", f"{row['batch']} images")]
    if is_num(row.get("threads")):
        lines.append(_line("CPU threads", str(row["threads"])))
    if options_label(row.get("options")):
        lines.append(_line("options", options_label(row["options"])))
    if with_time and is_num(row.get("time_median_s")):
        spread = ""
        if is_num(row.get("time_p10_s")) and is_num(row.get("time_p90_s")):
            spread = f" (p10 {fmt_seconds(row['time_p10_s'])}, p90 {fmt_seconds(row['time_p90_s'])})"
        reps = f", {int(row['repetitions'])} reps" if is_num(row.get("repetitions")) else ""
        lines.append(_line("median time", f"{_exact_seconds(row['time_median_s'])}{spread}{reps}"))
        if is_num(row.get("images_per_s")):
            lines.append(_line("throughput", f"{row['images_per_s']:,.6g} images/s"))
        if is_num(row.get("achieved_flops_per_s")):
            lines.append(_line("attained", fmt_si(row["achieved_flops_per_s"], "FLOP/s", 6)))
    if is_num(row.get("error_rel")):
        tol = f" (tolerance {row['error_tolerance']:g})" if is_num(row.get("error_tolerance")) else ""
        lines.append(_line("rel. error vs float64", f"{row['error_rel']:.6g}{tol}"))
    for label, value in extra:
        lines.append(_line(label, value))
    lines.append(_line("machine", str(row.get("machine") or row.get("machine_id") or "?")))
    lines.append(_line("study", str(row["study"])))
    if row["status"] != "ok":
        lines.append(f"<b style='color:#c62828'>status {esc(row['status'])}</b>: {esc(row.get('note') or '')}")
    return "<br>".join(lines)


def _exact_seconds(value: float) -> str:
    """An exact-enough time: 6 significant digits in the most readable unit."""
    if value >= 1:
        return f"{value:.6g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.6g} ms"
    return f"{value * 1e6:.6g} µs"


def hover_bytes(value) -> str:
    return f"{fmt_bytes(value)} ({int(value):,} bytes)" if is_num(value) else "-"


# -- styling per configuration ------------------------------------------------------------------------------------------
def shade(hex_color: str, amount: float) -> str:
    """Mix a colour with white (amount 0: unchanged, 1: white)."""
    hex_color = hex_color.lstrip("#")
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (0, 2, 4))
    mix = lambda c: int(round(c + (255 - c) * amount))
    return f"#{mix(r):02x}{mix(g):02x}{mix(b):02x}"


def config_styles(configs: pd.DataFrame) -> dict:
    """Per configuration label: colour (from its backend; lighter for further configurations of the same backend
    and dtype), bar pattern and marker symbol (from its dtype)."""
    from perfkit.dashboards.common import DTYPE_PATTERNS, DTYPE_SYMBOLS

    seen: dict = {}
    styles = {}
    for _, row in configs.iterrows():
        key = (row["backend"], row['dtype'])
        n = seen.get(key, 0)
        seen[key] = n + 1
        styles[row["_label"]] = dict(color=shade(backend_color(row["backend"]), min(0.6, 0.28 * n)),
                                     pattern=DTYPE_PATTERNS.get(row['dtype'], ""),
                                     symbol=DTYPE_SYMBOLS.get(row['dtype'], "circle"))
    return styles


# -- reference marks ----------------------------------------------------------------------------------------------------
def reference_hline(fig: go.Figure, ref: Ref, *, value: float | None = None, row=None, col=None,
                    showlegend: bool = True, dash: str = "dash", color: str = REFERENCE_COLOR) -> None:
    """A published figure as a horizontal line (or band, for a range), named in the legend with its source."""
    _reference_shape(fig, ref, "h", value=value, row=row, col=col, showlegend=showlegend, dash=dash, color=color)


def reference_vline(fig: go.Figure, ref: Ref, *, value: float | None = None, row=None, col=None,
                    showlegend: bool = True, dash: str = "dash", color: str = REFERENCE_COLOR) -> None:
    _reference_shape(fig, ref, "v", value=value, row=row, col=col, showlegend=showlegend, dash=dash, color=color)


def _reference_shape(fig, ref, orient, *, value, row, col, showlegend, dash, color) -> None:
    name = ref.legend()
    group = f"ref-{ref.key}"
    # above the data: a published mark hidden behind a bar says nothing; bands are translucent
    common = dict(name=name, legendgroup=group, showlegend=showlegend, layer="above")
    if ref.is_range and value is None:
        kwargs = dict(fillcolor=color, opacity=0.22, line=dict(width=1, color=color), **common)
        if orient == "h":
            fig.add_hrect(y0=ref.low, y1=ref.high, row=row or "all", col=col or "all", **kwargs)
        else:
            fig.add_vrect(x0=ref.low, x1=ref.high, row=row or "all", col=col or "all", **kwargs)
        return
    v = ref.value if value is None else value
    kwargs = dict(line=dict(color=color, width=1.6, dash=dash), **common)
    if orient == "h":
        fig.add_hline(y=v, row=row or "all", col=col or "all", **kwargs)
    else:
        fig.add_vline(x=v, row=row or "all", col=col or "all", **kwargs)


def references_caption(refs: Sequence[Ref]) -> str:
    """The published figures a plot shows and their sources, for its caption."""
    if not refs:
        return ""
    return "Published figures (REFERENCE.md): " + "; ".join(
        f"{esc(r.label())} [{esc(r.short_source)}]" for r in refs)


# -- bars ---------------------------------------------------------------------------------------------------------------
def log_range(values: Sequence[float], pad: float = 0.15) -> list[float] | None:
    """A log10 axis range covering positive `values` with some padding (None when there are none)."""
    vals = [float(v) for v in values if is_num(v) and float(v) > 0]
    if not vals:
        return None
    lo, hi = math.log10(min(vals)), math.log10(max(vals))
    span = max(hi - lo, 0.3)
    return [lo - span * pad, hi + span * pad]


def time_error_bars(part: pd.DataFrame, scale: float = 1e3) -> dict | None:
    if not (part.time_p10_s.notna().all() and part.time_p90_s.notna().all()):
        return None
    return dict(type="data", symmetric=False, array=((part.time_p90_s - part.time_median_s) * scale).tolist(),
                arrayminus=((part.time_median_s - part.time_p10_s) * scale).tolist(), thickness=1.1, width=3,
                color="#4a5560")


def mark_incorrect(fig: go.Figure, incorrect: pd.DataFrame, x_of, *, row=None, col=None) -> None:
    """Rows that failed the correctness check, marked at their category with a red cross (never as a bar)."""
    if incorrect.empty:
        return
    for x, part in incorrect.groupby(incorrect.apply(x_of, axis=1), sort=False):
        text = "<br>".join(f"{esc(backend_name(r.backend))} {esc(dtype_name(r['dtype']))} {esc(device_label(r))}: "
                           f"error {r.error_rel:.3g} > {r.error_tolerance:g}" if is_num(r.error_rel) else
                           f"{esc(backend_name(r.backend))}: {esc(r.note or 'incorrect')}" for _, r in part.iterrows())
        ann = dict(x=x, y=0, yanchor="bottom", text="✗ incorrect", showarrow=False,
                   font=dict(color="#c62828", size=11), hovertext=f"not timed:<br>{text}",
                   bgcolor="rgba(255,255,255,0.8)")
        if row is None:
            fig.add_annotation(yref="y domain", **ann)
        else:
            fig.add_annotation(row=row, col=col, **ann)
            added = fig.layout.annotations[-1]
            added.yref = f"{added.yref} domain"
