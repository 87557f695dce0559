"""Energy: joules per image per configuration, and power over time with throttling flagged.

Needs: ok rows with `energy_per_image_j` (the harness's NVML energy counter over a window of at least 5 s, or RAPL on
a CPU), with `energy_j`, `energy_window_s`, `energy_source`, `images_per_j`, `power_mean_w`, `power_max_w`,
clocks, temperatures, `power_limit_w`, `clock_event_reasons` and `power_or_thermal_throttled` shown when present.
Power timelines need the `power_samples` table (run_id, case_key, sample_index, t_s, power_w). Rows of the `energy`
study without energy values are listed with the reason the harness gave (`energy_note`).
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards.common import (CONFIG_FIELDS, DTYPE_PATTERNS, NoteBlock, Section, TableBlock, backend_color,
                                       backend_name, config_labels, dtype_name, esc, is_num, latest, sort_configs)
from perfkit.dashboards.plot import figure, finish, hover_row, shade

MAX_TIMELINES = 12
THROTTLE_COLOR = "#c62828"


def build(data) -> Section | None:
    m = data.measurements
    if m.empty:
        return None
    ok = latest(data.ok[data.ok.energy_per_image_j.notna()])
    study_rows = m[m.study == "energy"]
    if ok.empty and study_rows.empty:
        return None
    section = Section("energy", "Energy",
                      "Joules per image from the energy counter over a measurement window (NVML's total-energy "
                      "counter on a GPU, at least 5 s per case; RAPL on a CPU where readable), and the power drawn "
                      "over time. Cases where the power or thermal limit slowed the clocks are flagged: their speed "
                      "and energy reflect throttled clocks.")
    if len(ok):
        section.blocks.append(_per_image(data, ok))
        throttled = ok[flags(ok.power_or_thermal_throttled)]
        if len(throttled):
            section.blocks.append(NoteBlock(
                f"{len(throttled)} case(s) hit a power or thermal limit: "
                + esc("; ".join(f"{r.case_key} ({r.clock_event_reasons or 'reasons not recorded'})"
                                for _, r in throttled.iterrows())), kind="warn"))
        timelines = _timelines(data, ok)
        if timelines:
            section.blocks.extend(timelines)
        elif data.power_samples.empty:
            section.blocks.append(NoteBlock("No power samples in these stores (the power_samples table is absent or "
                                            "empty), so no power timeline is drawn."))
    missing = study_rows[study_rows.energy_per_image_j.isna()] if len(study_rows) else study_rows
    if len(missing):
        section.blocks.append(_missing_table(missing))
    return section


def _flag(value) -> bool:
    """A stored yes/no (bool, 0/1, or null meaning not recorded) as a bool."""
    return False if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) else bool(value)


def flags(series: pd.Series) -> pd.Series:
    return series.map(_flag).astype(bool)


def _per_image(data, ok: pd.DataFrame):
    ok = sort_configs(ok)
    ok = ok.assign(_label=config_labels(ok, CONFIG_FIELDS + ("layer", "pass_name"), always=("backend", "dtype",
                                                                                          "pass_name")))
    fig = figure()
    for (backend, dtype), grp in ok.groupby(["backend", "dtype"], sort=False):
        throttled = flags(grp.power_or_thermal_throttled)
        hover = [hover_row(r, extra=_energy_extra(r)) for _, r in grp.iterrows()]
        fig.add_trace(go.Bar(
            x=grp._label, y=grp.energy_per_image_j, name=f"{backend_name(backend)} · {dtype_name(dtype)}",
            marker=dict(color=backend_color(backend), pattern=dict(shape=DTYPE_PATTERNS.get(dtype, "")),
                        line=dict(color=[THROTTLE_COLOR if t else "rgba(0,0,0,0)" for t in throttled],
                                  width=[3 if t else 0 for t in throttled])),
            text=[("⚠ throttled · " if t else "") + f"{v:.4g} J" for v, t in zip(grp.energy_per_image_j, throttled)],
            textposition="outside", cliponaxis=False,
            hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_xaxes(categoryorder="array", categoryarray=list(dict.fromkeys(ok._label)), tickangle=-25)
    fig.update_yaxes(title_text="energy per image (J/image)", rangemode="tozero")
    fig.update_layout(barmode="relative", showlegend=False)
    return finish(fig, "energy-per-image", "Energy per image", data, ok, height=500,
                  caption="Lower is better. Bars outlined in red (⚠) hit a power or thermal limit during the window. "
                          "Hover for the energy, window, source, images per joule, power, clocks and temperatures.")


def _energy_extra(r) -> list[tuple[str, str]]:
    out = [("energy per image", f"{r.energy_per_image_j:.6g} J/image")]
    if is_num(r.get("images_per_j")):
        out.append(("images per joule", f"{r.images_per_j:.6g} images/J"))
    if is_num(r.get("energy_j")):
        window = f" over {r.energy_window_s:.4g} s" if is_num(r.get("energy_window_s")) else ""
        out.append(("energy", f"{r.energy_j:.6g} J{window} ({r.get('energy_source') or 'source not recorded'})"))
    if is_num(r.get("power_mean_w")):
        peak = f", max {r.power_max_w:.5g} W" if is_num(r.get("power_max_w")) else ""
        samples = f", {int(r.power_sample_count)} samples" if is_num(r.get("power_sample_count")) else ""
        out.append(("power", f"mean {r.power_mean_w:.5g} W{peak}{samples}"))
    if is_num(r.get("power_limit_w")):
        out.append(("power limit", f"{r.power_limit_w:.5g} W"))
    if is_num(r.get("sm_clock_mhz")):
        mem = f", memory {r.mem_clock_mhz:.5g} MHz" if is_num(r.get("mem_clock_mhz")) else ""
        out.append(("clocks", f"SM {r.sm_clock_mhz:.5g} MHz{mem}"))
    if is_num(r.get("temperature_c_start")):
        out.append(("temperature", f"{r.temperature_c_start:.4g} °C → {r.temperature_c_end:.4g} °C"))
    if isinstance(r.get("clock_event_reasons"), str):
        out.append(("clock event reasons", r.clock_event_reasons))
    if is_num(r.get("cpu_energy_j")):
        out.append(("CPU energy (RAPL)", f"{r.cpu_energy_j:.6g} J"))
    elif isinstance(r.get("cpu_energy_note"), str):
        out.append(("CPU energy", r.cpu_energy_note))
    return out


def _timelines(data, ok: pd.DataFrame) -> list:
    samples = data.power_samples
    if samples.empty:
        return []
    blocks = []
    ok = ok.assign(_label=config_labels(ok, ("backend", "dtype", "pass_name", "layer", "batch"),
                                        always=("backend", "dtype", "pass_name")))
    joined = samples.merge(ok[["run_id", "case_key", "_label", "machine_id", "machine", "device", "backend",
                               "power_or_thermal_throttled", "clock_event_reasons", "power_limit_w"]],
                           on=["run_id", "case_key"])
    if joined.empty:
        return []
    for (machine_id, device), part in joined.groupby(["machine_id", "device"], sort=False):
        fig = figure()
        cases = list(dict.fromkeys(part._label))[:MAX_TIMELINES]
        seen: dict = {}
        for label in cases:
            grp = part[part._label == label].sort_values(["sample_index"])
            first = grp.iloc[0]
            throttled = _flag(first.power_or_thermal_throttled)
            n = seen.get(first.backend, 0)
            seen[first.backend] = n + 1
            fig.add_trace(go.Scatter(
                x=grp.t_s, y=grp.power_w, mode="lines",
                name=("⚠ " if throttled else "") + label + (" (power/thermal limit)" if throttled else ""),
                line=dict(color=THROTTLE_COLOR if throttled else shade(backend_color(first.backend), min(0.6, 0.2 * n)),
                          width=2.2 if throttled else 1.6, dash="solid"),
                hovertemplate=(f"<b>{esc(label)}</b><br>t = %{{x:.4g}} s<br>power = %{{y:.5g}} W"
                               + (f"<br>clock event reasons: {esc(first.clock_event_reasons)}"
                                  if isinstance(first.clock_event_reasons, str) else "") + "<extra></extra>")))
        limits = part.power_limit_w.dropna().unique()
        for limit in limits:
            fig.add_hline(y=float(limit), line=dict(color="#8a8f98", width=1, dash="dash"),
                          name=f"power limit {float(limit):.4g} W", showlegend=True)
        fig.update_xaxes(title_text="time since the window opened (s)")
        fig.update_yaxes(title_text="board power (W)", rangemode="tozero")
        rows = ok[(ok.machine_id == machine_id) & (ok.device == device) & ok._label.isin(cases)]
        dropped = len(dict.fromkeys(part._label)) - len(cases)
        blocks.append(finish(fig, f"energy-power-{str(machine_id)[:8]}-{str(device).replace(':', '')}",
                             f"Power over time: {part.iloc[0].machine}", data, rows, height=460,
                             caption="Instant power samples during each case's energy window; throttled cases in red."
                                     + (f" {dropped} more case(s) not drawn." if dropped > 0 else "")))
    return blocks


def _missing_table(rows: pd.DataFrame) -> TableBlock:
    groups = rows.groupby(["device", "status", "energy_note"], dropna=False).size().reset_index(name="n")
    body = [[esc(r.device), esc(r.status), esc(r.energy_note if isinstance(r.energy_note, str) else
                                               "no energy recorded"), str(r.n)] for _, r in groups.iterrows()]
    return TableBlock(["device", "status", "why no energy", "rows"], body, title="Energy study rows without energy")
