"""Roofline: each layer's arithmetic intensity against its attained FLOP/s, under the device's measured ceilings.

Needs: ok rows with `arithmetic_intensity_flops_per_byte` and `achieved_flops_per_s` (the `roofline` study's when
there are any). Ceilings come from the `device_peaks` table (matmul FLOP/s and copy bytes/s per device and dtype,
measured on the machine) or else from the rows' `peak_flops_per_s` / `peak_bytes_per_s`; without either the points
are drawn without a roof. The GTX 580's published roof (vendor figures, REFERENCE.md) is drawn for scale.
One figure per machine and device; one point per layer, backend, dtype and pass.
"""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards import published as ref
from perfkit.dashboards.common import (DTYPE_DASHES, FLOPS_CONVENTION, PASS_SYMBOLS, Section,
                                       backend_color, backend_name, device_label, dtype_name, esc, fmt_si, latest,
                                       pass_name)
from perfkit.dashboards.plot import FLOPS_AXIS, figure, finish, hover_row, references_caption


def build(data) -> Section | None:
    ok = data.ok
    if ok.empty:
        return None
    ok = ok[ok.arithmetic_intensity_flops_per_byte.notna() & ok.achieved_flops_per_s.notna()
            & (ok.arithmetic_intensity_flops_per_byte > 0) & (ok.achieved_flops_per_s > 0)]
    study = ok[ok.study == "roofline"]
    peaks = _ceilings(data)
    if len(study):
        rows = study
    elif len(peaks):
        keys = set(zip(peaks.machine_id, peaks.device))
        rows = ok[[k in keys for k in zip(ok.machine_id, ok.device)]]
    else:
        rows = ok.iloc[0:0]
    rows = latest(rows[rows.layer != "network"])
    if rows.empty:
        return None
    section = Section("roofline", "Roofline",
                      "Where each layer sits against the device's limits: arithmetic intensity (FLOPs per byte of "
                      "the minimum traffic the layer must move) against attained FLOP/s, both on log scales. The "
                      "roof is the lower of the compute ceiling and intensity times the memory ceiling, measured on "
                      f"the machine itself. FLOPs count {FLOPS_CONVENTION}.")
    for (machine_id, device), part in rows.groupby(["machine_id", "device"], sort=False):
        ceil = peaks[(peaks.machine_id == machine_id) & (peaks.device == device)] if len(peaks) else peaks
        section.blocks.append(_figure(data, part, ceil, machine_id, device))
    return section


def _ceilings(data) -> pd.DataFrame:
    """Compute and memory ceilings per (machine, device, dtype): device_peaks first, else the rows' peak columns."""
    out = []
    peaks = data.device_peaks
    if len(peaks) and len(data.runs):
        runs = data.runs[["run_id", "machine_id"]].drop_duplicates("run_id")
        joined = peaks.merge(runs, on="run_id", how="left")
        for _, p in joined.dropna(subset=["machine_id"]).iterrows():
            out.append(dict(machine_id=p.machine_id, device=p.device, dtype=p['dtype'], threads=_cpu_threads(p),
                            flops=float(p.matmul_flops_per_s) if pd.notna(p.matmul_flops_per_s) else None,
                            bytes=float(p.copy_bytes_per_s) if pd.notna(p.copy_bytes_per_s) else None,
                            source=f"device_peaks ({p.method or 'method not recorded'}, {p.measured_at or '?'})"))
    have = {(o["machine_id"], o["device"], o['dtype'], o["threads"]) for o in out}
    m = data.measurements
    cols = m.dropna(subset=["peak_flops_per_s"]) if len(m) else m
    if len(cols):
        cols = cols.assign(peak_threads=[_cpu_threads(r) for _, r in cols.iterrows()])
    groups = cols.groupby(["machine_id", "device", "dtype", "peak_threads"], dropna=False) if len(cols) else []
    for (machine_id, device, dtype, threads), grp in groups:
        threads = None if pd.isna(threads) else int(threads)
        if (machine_id, device, dtype, threads) in have:
            continue
        out.append(dict(machine_id=machine_id, device=device, dtype=dtype, threads=threads,
                        flops=float(grp.peak_flops_per_s.iloc[-1]),
                        bytes=float(grp.peak_bytes_per_s.iloc[-1]) if grp.peak_bytes_per_s.notna().any() else None,
                        source="the rows' peak_flops_per_s / peak_bytes_per_s"))
    df = pd.DataFrame(out, columns=["machine_id", "device", "dtype", "threads", "flops", "bytes", "source"])
    return df.drop_duplicates(["machine_id", "device", "dtype", "threads"], keep="last")


def _cpu_threads(row) -> int | None:
    """A CPU's peaks depend on its thread count, a GPU's do not: the count for CPU peaks and rows, else None."""
    if str(row.device).startswith("cuda") or pd.isna(row.get("threads")):
        return None
    return int(row.threads)


def _roof(flops: float | None, bw: float | None, x0: float, x1: float):
    if flops and bw:
        ridge = flops / bw
        xs = [x0, min(max(ridge, x0), x1), x1]
        return xs, [min(flops, x * bw) for x in xs]
    if flops:
        return [x0, x1], [flops, flops]
    return [x0, x1], [x0 * bw, x1 * bw]


def _figure(data, part: pd.DataFrame, ceilings: pd.DataFrame, machine_id: str, device: str):
    ai = part.arithmetic_intensity_flops_per_byte
    x0 = 10 ** math.floor(math.log10(ai.min()) - 0.3)
    x1 = 10 ** math.ceil(math.log10(ai.max()) + 0.3)
    fig = figure()
    # ceilings per dtype plotted (dtypes without points are left out to keep the figure readable)
    used = ceilings[ceilings.dtype.isin(set(part.dtype))] if len(ceilings) else ceilings
    if len(used) and used.threads.notna().any():  # a CPU: the roofs of the thread counts its points ran with
        used = used[used.threads.isin(set(part.threads.dropna().astype(int)))]
    ys = list(part.achieved_flops_per_s)
    for _, c in used.iterrows():
        xs, yr = _roof(c.flops, c.bytes, x0, x1)
        ys += yr
        fig.add_trace(go.Scatter(
            x=xs, y=yr, mode="lines", name=f"roof {dtype_name(c['dtype'])}"
                                           f"{'' if pd.isna(c.threads) else f', {int(c.threads)} threads'}: "
                                           f"{fmt_si(c.flops, 'FLOP/s')}, {fmt_si(c.bytes, 'B/s')}",
            line=dict(color="#2d3640", width=2, dash=DTYPE_DASHES.get(c['dtype'], "solid")), legendgroup="roof",
            hovertemplate=(f"<b>measured roof, {esc(dtype_name(c['dtype']))}</b>"
                           f"<br>compute {esc(fmt_si(c.flops, 'FLOP/s', 6))}"
                           f"<br>memory {esc(fmt_si(c.bytes, 'B/s', 6))}<br>source: {esc(c.source)}"
                           "<br>intensity %{x:.4g} FLOP/B, roof %{y:.4g} FLOP/s<extra></extra>")))
    gx, gy = _roof(ref.GTX580_FP32_FLOPS.value, ref.GTX580_BYTES.value, x0, x1)
    fig.add_trace(go.Scatter(
        x=gx, y=gy, mode="lines", name="published: GTX 580 FP32 roof (vendor figures)",
        line=dict(color="#7a5c99", width=1.5, dash="dot"),
        hovertemplate=f"{esc(ref.GTX580_FP32_FLOPS.citation())}<br>{esc(ref.GTX580_BYTES.citation())}<extra></extra>"))
    ys += gy
    labelled: set = set()
    for (backend, dtype, p), grp in part.groupby(["backend", "dtype", "pass_name"], sort=False):
        texts = []
        for layer in grp.layer:  # name each layer once, at its first point, to keep the plot legible
            texts.append("" if (layer, p) in labelled else layer)
            labelled.add((layer, p))
        hover = []
        for _, r in grp.iterrows():
            extra = [("arithmetic intensity", f"{r.arithmetic_intensity_flops_per_byte:.6g} FLOP/byte"),
                     ("minimum bytes", fmt_si(r.bytes_min, "B", 6)), ("FLOPs", fmt_si(r.flops, "FLOP", 6))]
            if pd.notna(r.get("roofline_fraction")):
                extra.append(("fraction of roof", f"{r.roofline_fraction * 100:.4g}%"))
            hover.append(hover_row(r, extra=extra))
        fig.add_trace(go.Scatter(
            x=grp.arithmetic_intensity_flops_per_byte, y=grp.achieved_flops_per_s, mode="markers+text",
            name=f"{backend_name(backend)} · {dtype_name(dtype)} · {pass_name(p)}",
            text=texts, textposition="top center", textfont=dict(size=9, color="#5b6470"),
            marker=dict(color=backend_color(backend), symbol=PASS_SYMBOLS.get(p, "circle"), size=10,
                        opacity=0.9 if dtype == "float32" else 0.65, line=dict(width=1, color="white")),
            hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    lo = min(v for v in ys if v and v > 0)
    hi = max(ys)
    fig.update_xaxes(type="log", range=[math.log10(x0), math.log10(x1)],
                     title_text="arithmetic intensity (FLOP per byte of minimum traffic, log scale)")
    fig.update_yaxes(type="log", range=[math.log10(lo) - 0.2, math.log10(hi) + 0.25], title_text=FLOPS_AXIS)
    label = device_label(part.iloc[0])
    machine = part.iloc[0].get("machine_short") or part.iloc[0].get("machine") or machine_id
    caption = ("Markers: circle forward, square backward, diamond train step; fainter markers are lower precisions. "
               + ("" if len(used) else "No measured ceilings for this device in the store, so no roof is drawn. ")
               + references_caption([ref.GTX580_FP32_FLOPS, ref.GTX580_BYTES]) + ".")
    block = finish(fig, f"roofline-{machine_id[:8]}-{device.replace(':', '')}", f"Roofline: {label} ({machine})",
                   data, part, height=560, caption=caption)
    return block

