"""Where the time goes inside a case: `perfkit profile`'s breakdowns by kind of work and by layer, the top ops, launches
per step backend beside backend, and the trace file of each case.

Needs: rows of the store tables `profiles` and `profile_ops` (perfkit.app.profile), joined to their measurements by
(run_id, case_key) for the case's backend, device, dtype, batch and pass. A GPU case is drawn from its kernels (device
time), a CPU case from its host ops (self time); every figure says which. Profiled times carry the profiler's own
overhead, so the profiled-over-timed ratio is shown beside each case.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards.common import (NoteBlock, Section, TableBlock, backend_color, backend_name, dtype_name, esc,
                                       pass_name)
from perfkit.dashboards.plot import figure, finish

#: The kinds of work, in the order the stacked bars show them, with their colours.
KIND_COLORS = {
    "perfkit Triton kernel": "#3a9a5b", "Inductor Triton kernel": "#e08a2c", "cuDNN kernel": "#3b6fb6",
    "cuBLAS kernel": "#5b8fd6", "CUTLASS kernel": "#8e6bbf", "aten CUDA kernel": "#6f7f8f", "CUDA kernel": "#9aa7b5",
    "memcpy": "#c24d4d", "memset": "#d46a9f", "aten op": "#3b6fb6", "compiled graph": "#e08a2c",
    "autograd": "#8c6d4f", "CUDA runtime": "#b5a33a", "range": "#c8cdd3", "other": "#9aa7b5",
}
TOP_LAYERS = 12  # layers drawn by name in the per-layer bars; the rest are summed as "other layers"
TOP_OPS = 5


def build(data) -> Section | None:
    profiles, ops = data.profiles, data.profile_ops
    if profiles is None or profiles.empty:
        return None
    cases = _cases(data, profiles)
    section = Section("profiles", "Where the time goes inside a case",
                      "torch.profiler breakdowns of the cases `perfkit profile` ran: the time of one step by kind of "
                      "work and by layer, the ops that take the most of it, and how many launches a step makes. A "
                      "GPU case is shown by its kernels' device time, a CPU case by its host ops' self time. The "
                      "profiled step runs slower than the timed one by the profiler's overhead (the ratio is in the "
                      "table); shares within a case are unaffected by it, absolute times are. Each case's trace "
                      "opens in Perfetto (ui.perfetto.dev) or Holistic Trace Analysis.")
    profiled = cases[cases.steps.notna()]
    not_profiled = cases[cases.steps.isna()]
    parts = _parts(ops, profiled)
    if len(parts):
        section.blocks.append(_stacked(data, parts, profiled, "kind", "profile-kinds", "Time per step by kind of work"))
        section.blocks.append(_stacked(data, _top_layers(parts), profiled, "layer", "profile-layers",
                                       "Time per step by layer"))
        section.blocks.append(_top_ops_table(parts, profiled))
    if profiled.launches_per_step.notna().any():
        section.blocks.append(_launches(data, profiled))
    section.blocks.append(_cases_table(cases))
    if len(not_profiled):
        section.blocks.append(NoteBlock("Not profiled: " + "; ".join(
            f"{esc(r.label)}: {esc(r.note or 'no reason recorded')}" for r in not_profiled.itertuples()), kind="warn"))
    return section


def _cases(data, profiles: pd.DataFrame) -> pd.DataFrame:
    """Profiles with their case's configuration from the measurements, and a label per case."""
    m = data.measurements
    keep = ["run_id", "case_key", "layer", "backend", "device", "dtype", "batch", "pass_name", "threads", "machine",
            "machine_id", "status", "env_id", "git_commit", "perfkit_version", "study"]
    joined = profiles.merge(m[[c for c in keep if c in m]], on=["run_id", "case_key"], how="left")
    for col in ("profiled_step_s", "timed_median_s", "profiled_over_timed", "launches_per_step", "gpu_idle_share",
                "steps"):
        joined[col] = pd.to_numeric(joined[col], errors="coerce")

    def label(r):  # r is a row Series: r["dtype"], not r.dtype (the Series' own dtype)
        if pd.isna(r["backend"]):
            return str(r["case_key"])
        device = "GPU" if str(r["device"]).startswith("cuda") else "CPU"
        threads = f" {int(r['threads'])}t" if device == "CPU" and pd.notna(r["threads"]) else ""
        return (f"{r['layer']} {pass_name(r['pass_name'])} · {backend_name(r['backend'])} · {device}{threads} · "
                f"{dtype_name(r['dtype'])} · b{r['batch']}")

    joined["label"] = joined.apply(label, axis=1) if len(joined) else pd.Series(dtype=str)
    return joined.drop_duplicates(["run_id", "case_key"], keep="last")


def _parts(ops: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """The ops each case is drawn from: device kernels for a GPU case, host ops for a CPU case (ranges' own self time
    is the host overhead between ops; it is kept, as kind "range")."""
    if ops is None or ops.empty or cases.empty:
        return pd.DataFrame()
    ops = ops.merge(cases[["run_id", "case_key", "label", "device"]], on=["run_id", "case_key"])
    ops["self_s_per_step"] = pd.to_numeric(ops.self_s_per_step, errors="coerce")
    gpu = ops.device.astype(str).str.startswith("cuda")
    on_device = ops.on_device.astype(int) == 1
    return ops[(gpu & on_device) | (~gpu & ~on_device)]


def _top_layers(parts: pd.DataFrame) -> pd.DataFrame:
    by_layer = parts.groupby("layer").self_s_per_step.sum().sort_values(ascending=False)
    named = set(by_layer.index[:TOP_LAYERS])
    return parts.assign(layer=parts.layer.where(parts.layer.isin(named), "other layers"))


def _stacked(data, parts: pd.DataFrame, cases: pd.DataFrame, by: str, name: str, title: str):
    order = list(cases.label)
    totals = parts.groupby(["label", by]).self_s_per_step.sum().reset_index()
    series = totals.groupby(by).self_s_per_step.sum().sort_values(ascending=False).index
    fig = figure()
    palette = ["#3b6fb6", "#e08a2c", "#3a9a5b", "#8e6bbf", "#c24d4d", "#3fa7c4", "#8c6d4f", "#d46a9f", "#6f7f8f",
               "#b5a33a", "#5b8fd6", "#9aa7b5", "#c8cdd3"]
    for i, value in enumerate(series):
        part = totals[totals[by] == value].set_index("label").reindex(order)
        step = cases.set_index("label").profiled_step_s.reindex(order)
        share = part.self_s_per_step / step
        hover = [f"<b>{esc(label)}</b><br>{esc(by)}: <b>{esc(value)}</b><br>self time per step: "
                 f"{v * 1e3:.6g} ms ({s:.1%} of the profiled step)" if pd.notna(v) else ""
                 for label, v, s in zip(order, part.self_s_per_step, share)]
        color = KIND_COLORS.get(value, palette[i % len(palette)]) if by == "kind" else palette[i % len(palette)]
        fig.add_trace(go.Bar(y=order, x=part.self_s_per_step * 1e3, orientation="h", name=str(value),
                             marker=dict(color=color), hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="ms per profiled step (self time; GPU cases: kernel time)")
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], automargin=True)
    return finish(fig, name, title, data, cases, height=180 + 46 * len(order),
                  caption=f"Each case's profiled step split by {by}. "
                          + ("Kinds of GPU work come from the kernel names (cuDNN, cuBLAS, CUTLASS, perfkit's own "
                             "Triton kernels, Inductor's); on the CPU, aten ops, torch.compile's graphs and the host "
                             "overhead between ops (range)." if by == "kind" else
                             "Backward ops count in the layer whose forward made them; the optimizer, zero_grad, "
                             "gradient accumulation and torch.compile's graphs are named as such."))


def _top_ops_table(parts: pd.DataFrame, cases: pd.DataFrame) -> TableBlock:
    rows = []
    for case in cases.itertuples():
        mine = parts[(parts.run_id == case.run_id) & (parts.case_key == case.case_key) & (parts.kind != "range")]
        for op in mine.sort_values("self_s_per_step", ascending=False).head(TOP_OPS).itertuples():
            share = pd.to_numeric(op.share_of_step, errors="coerce")
            rows.append([esc(case.label), esc(op.name), esc(op.kind), esc(op.layer), esc(f"{op.calls_per_step:g}"),
                         esc(f"{op.self_s_per_step * 1e3:.4g}"), esc("-" if pd.isna(share) else f"{share:.1%}")])
    return TableBlock(["case", "op or kernel", "kind", "layer", "calls/step", "self ms/step", "share of step"], rows,
                      title=f"Top {TOP_OPS} ops per case by self time")


def _launches(data, cases: pd.DataFrame):
    cases = cases[cases.launches_per_step.notna()].copy()
    cases["what"] = cases.apply(lambda r: f"{r['layer']} {pass_name(r['pass_name'])} · {dtype_name(r['dtype'])} · "
                                f"b{r['batch']}" + (" · GPU" if str(r["device"]).startswith("cuda") else " · CPU"),
                                axis=1)
    fig = figure()
    for backend, grp in cases.groupby("backend", sort=False):
        hover = [f"<b>{esc(r.label)}</b><br>launches per step: {r.launches_per_step:,.1f}<br>{esc(r.launches_note)}"
                 for r in grp.itertuples()]
        fig.add_trace(go.Bar(x=grp.what, y=grp.launches_per_step, name=backend_name(backend),
                             marker=dict(color=backend_color(backend)), hovertext=hover,
                             hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="launches per step")
    return finish(fig, "profile-launches", "Launches per step, backend beside backend", data,
                  cases, height=440,
                  caption="On a GPU: CUDA kernels, memcpys and memsets per step. On a CPU: aten op calls that no "
                          "other aten op made (what Python and autograd dispatch). Fewer launches mean less launch "
                          "overhead: fusion and compiled graphs show up here first.")


def _cases_table(cases: pd.DataFrame) -> TableBlock:
    rows = []
    for r in cases.itertuples():
        ratio = "-" if pd.isna(r.profiled_over_timed) else f"{r.profiled_over_timed:.3f}"
        idle = "-" if pd.isna(r.gpu_idle_share) else f"{r.gpu_idle_share:.1%}"
        rows.append([esc(r.label), esc("-" if pd.isna(r.profiled_step_s) else f"{r.profiled_step_s * 1e3:.4g}"),
                     esc("-" if pd.isna(r.timed_median_s) else f"{r.timed_median_s * 1e3:.4g}"), esc(ratio),
                     esc("-" if pd.isna(r.launches_per_step) else f"{r.launches_per_step:,.1f}"), esc(idle),
                     f"<code>{esc(r.trace_path)}</code>" if isinstance(r.trace_path, str) else "-"])
    return TableBlock(["case", "profiled ms/step", "timed median ms", "profiled / timed", "launches/step", "GPU idle",
                       "trace (beside the store)"], rows, title="Profiled cases and their traces",
                      note="profiled / timed above 1 is the profiler's overhead; the timed median is the case's time.")
