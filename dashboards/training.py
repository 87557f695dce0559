"""Days to train AlexNet, from measured train-step throughput, beside the paper's five to six days.

Needs: ok rows with `layer == "network"`, `pass_name == "train_step"` and `images_per_s` (the `train_time` study's
when there are any, else any such rows, e.g. the baseline's). The projection is plain arithmetic on a stored
throughput and the paper's schedule (REFERENCE.md): days = 90 epochs x 1.2M images / (images/s) / 86,400. A second
mark per bar is the time two GTX 580s would need at their FP32 peak for the same per-image train-step FLOPs (the
store's cost model): a roofline lower bound for the 2012 hardware.
"""
from __future__ import annotations

import plotly.graph_objects as go

from perfkit.dashboards import published as ref
from perfkit.dashboards.common import (CONFIG_FIELDS, CPU_COLOR, DTYPE_PATTERNS, FLOPS_CONVENTION, Section,
                                       backend_color, config_labels, latest, sort_configs)
from perfkit.dashboards.plot import figure, finish, hover_row, log_range, reference_vline, references_caption

SECONDS_PER_DAY = 86_400


def total_images() -> float:
    return ref.TRAIN_EPOCHS.value * ref.TRAIN_IMAGES.value


def projected_days(images_per_s: float) -> float:
    return total_images() / images_per_s / SECONDS_PER_DAY


def gtx580_bound_days(flops_per_image: float) -> float:
    """Two GTX 580s at their FP32 peak, for the whole schedule: a lower bound on the paper's time."""
    return total_images() * flops_per_image / (ref.TRAIN_GPUS.value * ref.GTX580_FP32_FLOPS.value) / SECONDS_PER_DAY


def build(data) -> Section | None:
    ok = data.ok
    if ok.empty:
        return None
    rows = ok[(ok.layer == "network") & (ok.pass_name == "train_step") & ok.images_per_s.notna()]
    if rows.empty:
        return None
    own = rows[rows.study == "train_time"]
    rows = latest(own if len(own) else rows)
    rows = sort_configs(rows)
    rows = rows.assign(_label=config_labels(rows, CONFIG_FIELDS, always=("device", "backend", "dtype", "batch")),
                       _days=rows.images_per_s.map(projected_days))
    section = Section("train-time", "Days to train AlexNet",
                      "How long 90 epochs over 1.2M images would take at each measured train-step throughput, "
                      "beside the paper's five to six days on two GTX 580 3GB GPUs. Only the compute of the train "
                      "step is projected: data loading, augmentation and evaluation are left out, so these are lower "
                      "bounds for a real run at that throughput." + ("" if len(own) else
                                                                      " (Projected from the rows of "
                                                                      + ", ".join(dict.fromkeys(rows.study))
                                                                      + "; the train_time study's rows take "
                                                                        "precedence when present.)"))
    fig = figure()
    for (device, backend, dtype), grp in rows.groupby(["device", "backend", "dtype"], sort=False):
        hover = [hover_row(r, extra=[
            ("projected", f"{r._days:,.6g} days ({r._days * 24:,.5g} hours)"),
            ("schedule", f"{ref.TRAIN_EPOCHS.value:g} epochs x {ref.TRAIN_IMAGES.value:,.0f} images"),
            ("train-step FLOPs per image", f"{r.flops / r.batch:.6g} ({FLOPS_CONVENTION})")])
            for _, r in grp.iterrows()]
        fig.add_trace(go.Bar(
            x=grp._days, y=grp._label, orientation="h", name=grp.iloc[0]._label, showlegend=False,
            marker=dict(color=CPU_COLOR if device == "cpu" else backend_color(backend),
                        pattern=dict(shape=DTYPE_PATTERNS.get(dtype, ""))),
            text=[f"{d:,.3g} days" if d >= 1 else f"{d * 24:.3g} hours" for d in grp._days],
            textposition="outside", cliponaxis=False,
            hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    bounds = rows.drop_duplicates(["variant", "activation", "_label"])
    bound_days = [gtx580_bound_days(r.flops / r.batch) for _, r in bounds.iterrows()]
    fig.add_trace(go.Scatter(
        x=bound_days, y=bounds._label, mode="markers", name="two GTX 580 at FP32 peak (derived lower bound)",
        marker=dict(symbol="line-ns-open", size=22, color="#7a5c99", line=dict(width=3, color="#7a5c99")),
        hovertext=[f"two GTX 580 at {ref.GTX580_FP32_FLOPS.value / 1e12:.4g} TFLOP/s each: {d:,.4g} days for this "
                   f"network's {r.flops / r.batch:.4g} train-step FLOPs per image ({r.variant})"
                   for d, (_, r) in zip(bound_days, bounds.iterrows())],
        hovertemplate="%{hovertext}<extra></extra>"))
    reference_vline(fig, ref.TRAIN_DAYS)
    values = list(rows._days) + bound_days + [ref.TRAIN_DAYS.low, ref.TRAIN_DAYS.high]
    fig.update_xaxes(type="log", range=log_range(values, pad=0.18),
                     title_text="projected days for 90 epochs over 1.2M images (log scale)")
    fig.update_yaxes(categoryorder="array", categoryarray=list(dict.fromkeys(rows._label))[::-1])
    section.blocks.append(finish(
        fig, "train-time-days", "Projected days to train AlexNet", data, rows,
        height=max(340, 190 + 36 * rows._label.nunique()),
        caption="Bars: 90 x 1.2M images divided by the measured train-step images/s. Shaded band: the paper's five "
                "to six days. Purple ticks: two GTX 580s running this network's train-step FLOPs at their FP32 peak, "
                "a bound the 2012 code could only approach. "
                + references_caption([ref.TRAIN_DAYS, ref.TRAIN_EPOCHS, ref.TRAIN_IMAGES, ref.GTX580_FP32_FLOPS])
                + "."))
    return section
