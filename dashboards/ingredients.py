"""Ingredients: what dropout, LRN and overlapping pooling each cost, as a share of the whole network's time per pass
and, on a GPU, of its peak memory.

Needs the summary of study "ingredients": the list `rows` in its data JSON (`ingredient_table` in
studies/ingredients.py: device, backend, pass, batch, ingredient, what, ablated, full_s, ablated_s, cost_s, share,
layers_s, layers_share, memory_bytes, memory_share, memory_kind) and its `variant`. A share is (full network - network
without the ingredient) / full network, from one run's measured rows. A share the run could not compute (either network
not measured) is not drawn and is listed with the reason from the run's rows; memory is compared on GPUs only (the
study's reason is said in the section).
"""
from __future__ import annotations

import plotly.graph_objects as go

from perfkit.dashboards.common import (NoteBlock, Section, TableBlock, backend_name, esc, fmt_bytes, fmt_seconds,
                                       is_num, latest, pass_name, run_provenance)
from perfkit.dashboards.plot import figure, finish
from perfkit.dashboards.summaries import (has_summary, missing_note, runs_of, summary_items, where_label,
                                          why_not_measured)

STUDY = "ingredients"
INGREDIENT_COLORS = {"dropout": "#8e6bbf", "lrn": "#c24d4d", "pooling": "#b5a33a"}
PASSES = ("forward", "backward", "train_step")
#: What each drawn share is: (column, figure name, axis title, what it is a share of)
SHARES = (("share", "time", "share of the full network's time (%)", "median time"),
          ("memory_share", "memory", "share of the full network's peak memory (%)", "torch allocator peak"))
CPU_MEMORY_REASON = ("memory is not compared on the CPU: a case's peak resident set also holds what earlier cases left "
                     "behind, so its differences between networks are not the networks' (the study's rule)")


def build(data) -> Section | None:
    if not has_summary(data, STUDY):
        return None
    items = summary_items(data, STUDY, "rows", summary_keys=("variant",))
    if items.empty:
        return Section("ingredients", "Ingredients: what dropout, LRN and overlapping pooling cost", "",
                       [NoteBlock("The ingredients summary lists no configuration: nothing was measured in its runs.",
                                  kind="warn")])
    items = latest(items, ("machine_id", "device", "backend", "pass", "batch", "ingredient"))
    several = items.machine_id.nunique() > 1
    items = items.assign(_config=[f"{where_label(r, several)} · {backend_name(r.backend)} · batch {r.batch}"
                                  for _, r in items.iterrows()],
                         _pass=items["pass"].map(lambda p: PASSES.index(p) if p in PASSES else len(PASSES)))
    items = items.sort_values(["_config", "_pass"], kind="stable")
    section = Section("ingredients", "Ingredients: what dropout, LRN and overlapping pooling cost",
                      "Each ingredient's cost is the whole network's time less the time of the same network without it "
                      "(for pooling: with non-overlapping 2x2 stride-2 pools instead of 3x3 stride 2), shown as a "
                      "share of the whole network, per pass. On a GPU the same for the torch allocator's peak "
                      "memory. A negative share: the network without the ingredient was slower, within noise or "
                      "because removing a layer changed the kernels around it.")
    missing = []
    for column, name, axis, of in SHARES:
        rows = items if column == "share" else items[items.memory_kind.notna()]
        if rows[column].notna().any():
            section.blocks.append(_share_figure(data, rows, column, name, axis, of))
        missing += [(r, name) for _, r in rows[rows[column].isna()].iterrows()]
    if (items.device == "cpu").any():
        section.blocks.append(NoteBlock(esc(CPU_MEMORY_REASON[0].upper() + CPU_MEMORY_REASON[1:]) + "."))
    if missing:
        section.blocks.append(_missing_table(data, missing))
    return section


def _share_figure(data, rows, column: str, name: str, axis: str, of: str):
    n_missing = int(rows[column].isna().sum())
    measured = rows.groupby("_config", sort=False)[column].transform(lambda s: s.notna().any())
    rows = rows[measured.astype(bool)]  # a configuration with nothing measured is only in the table below
    fig = figure()
    for ingredient, grp in rows.groupby("ingredient", sort=False):
        shares = [v * 100 if is_num(v) else None for v in grp[column]]
        fig.add_trace(go.Bar(
            x=[list(grp._config), [pass_name(p) for p in grp["pass"]]], y=shares, name=grp.iloc[0].what,
            marker=dict(color=INGREDIENT_COLORS.get(ingredient, "#6f7f8f")),
            text=[f"{v:.3g}%" if v is not None else "" for v in shares], textposition="outside", cliponaxis=False,
            hovertext=[_hover(r) for _, r in grp.iterrows()], hovertemplate="%{hovertext}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="#8a8f98", width=1))
    fig.update_yaxes(title_text=axis)
    fig.update_xaxes(title_text="configuration and pass")
    fig.update_layout(barmode="group")
    return finish(fig, f"ingredients-{name}", f"Ingredient cost as a share of the network ({name})", data, None,
                  height=460, provenance_text=run_provenance(data, runs_of(rows)),
                  caption=f"Share = (full network - network without the ingredient) / full network, {esc(of)}, from "
                          f"the summary of study {STUDY} (variant {esc(', '.join(map(str, rows.variant.unique())))}). "
                          "Hover for both networks' values and the ingredient layers timed alone. "
                          + missing_note(n_missing, "share(s)"))


def _hover(r) -> str:
    def value(v, fmt):
        return fmt(v) if is_num(v) else "not measured"

    def share(v):
        return f"{v * 100:.4g}%" if is_num(v) else "not measured"

    lines = [f"<b>{esc(r.what)}</b> · {esc(pass_name(r['pass']))}", f"configuration: <b>{esc(r._config)}</b>",
             f"full network ({esc(r.variant)}): <b>{value(r.full_s, fmt_seconds)}</b>",
             f"without it ({esc(r.ablated)}): <b>{value(r.ablated_s, fmt_seconds)}</b>",
             f"cost: <b>{value(r.cost_s, fmt_seconds)}</b> ({share(r.share)})",
             f"its layers timed alone: <b>{value(r.layers_s, fmt_seconds)}</b> ({share(r.layers_share)})"]
    if isinstance(r.memory_kind, str):
        lines.append(f"{esc(r.memory_kind)} saved: <b>{value(r.memory_bytes, fmt_bytes)}</b> "
                     f"({share(r.memory_share)})")
    lines.append(f"machine: <b>{esc(r.machine)}</b>")
    return "<br>".join(lines)


def _missing_table(data, missing) -> TableBlock:
    groups: dict = {}
    for r, name in missing:
        reason = why_not_measured(data, r.run_id, device=r.device, backend=r.backend, pass_name=r["pass"],
                                  batch=r.batch, layer="network", variant=[r.variant, r.ablated])
        entry = groups.setdefault((r._config, name, reason), ({}, {}))
        entry[0][pass_name(r["pass"])] = None
        entry[1][r.ingredient] = None
    rows = [[esc(config), esc(name), esc(", ".join(passes)), esc(", ".join(ingredients)), esc(reason)]
            for (config, name, reason), (passes, ingredients) in groups.items()]
    return TableBlock(["configuration", "share of", "passes", "ingredients", "why not measured"], rows,
                      title="Ingredient shares not measured")
