"""Cross-machine comparison, when the stores hold more than one machine.

Needs: ok rows from at least two machines (`machine_id`). Whole-network throughput per machine and configuration,
then per-layer time per image of the reference backend (torch) in float32, the configuration every machine runs.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards.common import (DTYPE_PATTERNS, PASS_ORDER, Section, TableBlock, backend_name, device_label,
                                       dtype_name, esc, fmt_num, fmt_rate, latest, layer_order, machine_color, pass_name,
                                       sort_configs)
from perfkit.dashboards.layers import plain
from perfkit.dashboards.plot import figure, finish, hover_row, log_range


def build(data) -> Section | None:
    ok = data.ok
    if ok.empty or ok.machine_id.nunique() < 2:
        return None
    ok = latest(ok)
    machines = list(dict.fromkeys(sort_configs(ok).machine))
    colors = {m: machine_color(i) for i, m in enumerate(machines)}
    section = Section("machines", "Across machines",
                      f"{len(machines)} machines in these stores. The same configurations side by side: whole-network "
                      "throughput, then the time per image of each layer on the reference backend (torch eager, "
                      "float32). Batch sizes and thread counts can differ between machines; they are in the labels "
                      "and the hover text.")
    network = ok[(ok.layer == "network") & ok.images_per_s.notna()]
    if len(network):
        section.blocks.append(_network_figure(data, network, machines, colors))
    ref_rows = ok[(ok.backend == "torch") & (ok.dtype == "float32") & (ok.layer != "network") & plain(ok)]
    for p in [p for p in PASS_ORDER if p in set(ref_rows.pass_name)]:
        part = ref_rows[ref_rows.pass_name == p]
        if part.machine_id.nunique() >= 2:
            section.blocks.append(_layer_figure(data, part, p, colors))
    section.blocks.append(_table(ok, machines))
    return section


def _network_figure(data, network: pd.DataFrame, machines, colors):
    network = network.assign(_cfg=network.apply(
        lambda r: f"{'CPU' if r.device == 'cpu' else 'GPU'} · {backend_name(r.backend)} · {dtype_name(r['dtype'])}",
        axis=1))
    # the best row per machine, configuration and pass; configurations measured on several machines when any are
    network = network.sort_values("images_per_s").drop_duplicates(["machine_id", "_cfg", "pass_name"], keep="last")
    shared = network.groupby("_cfg").machine_id.nunique()
    shared = set(shared[shared > 1].index)
    if shared:
        network = network[network._cfg.isin(shared)]
    network = sort_configs(network)
    passes = [p for p in PASS_ORDER if p in set(network.pass_name)]
    fig = figure(1, len(passes), shared_yaxes=True, horizontal_spacing=0.05,
                 subplot_titles=[pass_name(p) for p in passes])
    shown = set()
    for col, p in enumerate(passes, start=1):
        part = network[network.pass_name == p]
        for machine in machines:
            grp = part[part.machine == machine]
            if grp.empty:
                continue
            fig.add_trace(go.Bar(
                x=grp.images_per_s, y=grp._cfg, orientation="h", name=machine, legendgroup=machine,
                showlegend=machine not in shown, text=[f"{fmt_rate(v)} · batch {b}" for v, b in
                                                       zip(grp.images_per_s, grp.batch)],
                textposition="auto", insidetextanchor="end", cliponaxis=False,
                marker=dict(color=colors[machine], pattern=dict(shape=[DTYPE_PATTERNS.get(d, "") for d in grp.dtype])),
                hovertext=[hover_row(r) for _, r in grp.iterrows()], hovertemplate="%{hovertext}<extra></extra>"),
                row=1, col=col)
            shown.add(machine)
    fig.update_xaxes(type="log", range=log_range(network.images_per_s, 0.1), title_text="images/s (log scale)")
    fig.update_yaxes(categoryorder="array", categoryarray=list(dict.fromkeys(network._cfg))[::-1])
    fig.update_layout(barmode="group")
    n = network._cfg.nunique()
    return finish(fig, "machines-network", "Whole-network throughput per machine", data, network,
                  height=max(360, 160 + 26 * n * len(machines)), legend_title="machine",
                  caption="The best measured images/s of each machine per configuration and pass (its batch in the "
                          "bar), for the configurations "
                          + ("measured on more than one machine." if shared else "of each machine (none is shared)."))


def _layer_figure(data, part: pd.DataFrame, p: str, colors):
    part = sort_configs(part)
    part = part.assign(_label=part.apply(lambda r: f"{r.machine} · {device_label(r)} · batch {r.batch}", axis=1),
                       _per_image_ms=part.time_median_s / part.batch.astype(float) * 1e3)
    fig = figure()
    for label, grp in part.groupby("_label", sort=False):
        first = grp.iloc[0]
        fig.add_trace(go.Bar(
            x=grp.layer, y=grp._per_image_ms, name=label,
            marker=dict(color=colors.get(first.machine, "#6f7f8f"),
                        opacity=1.0 if first.device == "cpu" else 0.75,
                        pattern=dict(shape="" if first.device == "cpu" else "/")),
            hovertext=[hover_row(r, extra=[("time per image", f"{r._per_image_ms:.6g} ms/image")])
                       for _, r in grp.iterrows()],
            hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_xaxes(categoryorder="array", categoryarray=layer_order(part), title_text="layer")
    fig.update_yaxes(type="log", title_text="median time per image (ms/image, log scale)")
    fig.update_layout(barmode="group")
    return finish(fig, f"machines-layers-{p}", f"Per-layer time per image across machines, {pass_name(p)}", data,
                  part, height=480,
                  caption="torch eager, float32. Time per image = median time per call / batch size, so machines "
                          "measured at different batches can be set side by side (small batches cost more per "
                          "image). GPU devices hatched.")


def _table(ok: pd.DataFrame, machines) -> TableBlock:
    rows = []
    for machine in machines:
        part = ok[ok.machine == machine]
        best = part[(part.layer == "network") & (part.pass_name == "train_step")].sort_values("images_per_s")
        best_text = "-"
        if len(best):
            b = best.iloc[-1]
            best_text = (f"{fmt_num(b.images_per_s, ',.4g')} images/s ({device_label(b)}, {backend_name(b.backend)}, "
                         f"{dtype_name(b['dtype'])}, batch {b.batch})")
        rows.append([esc(machine), esc(", ".join(sorted({device_label(r) for _, r in
                                                         part.drop_duplicates('device').iterrows()}))),
                     esc(", ".join(dict.fromkeys(part.study))), f"{len(part):,}", esc(best_text)])
    return TableBlock(["machine", "devices", "studies", "speed rows", "best whole-network train step"], rows,
                      title="Machines compared")
