"""Overview: the machines and software, the runs, the headline throughput, and every row that is not a speed result.

Needs: any measurement. The headline figure needs `layer == "network"` rows with status ok.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards.common import (CONFIG_FIELDS, DTYPE_PATTERNS, PASS_ORDER, CardsBlock, NoteBlock, Section,
                                       TableBlock, backend_color, backend_name, config_labels, dtype_name, esc,
                                       fmt_bytes, fmt_rate, latest, pass_name, rows_not_plotted, short_commit,
                                       sort_configs, status_badge)
from perfkit.dashboards.plot import figure, finish, hover_row, log_range


def build(data) -> Section | None:
    m = data.measurements
    if m.empty and not data.benchmarks:
        return None
    section = Section("overview", "Overview",
                      "The machines and software these results come from, the runs in the stores, the headline "
                      "whole-network throughput, and every row that is not a speed result (with its reason). "
                      "Only rows with status <b>ok</b> are ever plotted as speed; FLOP/s count a multiply-add as "
                      "2 FLOPs.")
    section.blocks.append(_cards(data))
    headline = _headline(data)
    if headline:
        section.blocks.append(headline)
    section.blocks.append(_machines_table(data))
    if not data.runs.empty:
        section.blocks.append(_runs_table(data))
    if len(m):
        table = rows_not_plotted(m)
        if table:
            section.blocks.append(table)
    for note in data.notes:
        section.blocks.append(NoteBlock(esc(note), kind="warn"))
    return section


def _cards(data) -> CardsBlock:
    m = data.measurements
    counts = m.status.value_counts() if len(m) else pd.Series(dtype=int)
    cards = [(str(len(data.machines())), "machines", esc(", ".join(sorted({e.label for e in
                                                                            data.environments.values()})))),
             (str(data.runs.run_id.nunique() if len(data.runs) else 0), "runs",
              esc(", ".join(dict.fromkeys(data.runs.study)) if len(data.runs) else "")),
             (f"{int(counts.get('ok', 0)):,}", "speed results (ok rows)", f"of {len(m):,} rows"),
             ]
    flagged = {s: int(counts.get(s, 0)) for s in ("incorrect", "oom", "error", "skipped") if counts.get(s, 0)}
    if flagged:
        cards.append((f"{sum(flagged.values()):,}", "rows not plotted as speed",
                      ", ".join(f"{n} {esc(s)}" for s, n in flagged.items())))
    cards.append((str(len(data.stores)), "store files", esc(", ".join(p.name for p in data.stores))))
    if data.benchmarks:
        cards.append((str(len(data.benchmarks)), "saved benchmark runs", "pytest-benchmark JSON"))
    return CardsBlock(cards)


def _headline(data):
    ok = latest(data.ok[data.ok.layer == "network"])
    ok = ok[ok.images_per_s.notna()]
    if ok.empty:
        return None
    # the best measured row of each machine, device, backend, dtype and pass (its batch and threads in the label)
    ok = ok.sort_values("images_per_s").drop_duplicates(["machine_id", "device", "backend", "dtype", "pass_name"],
                                                        keep="last")
    passes = [p for p in PASS_ORDER if p in set(ok.pass_name)] + sorted(set(ok.pass_name) - set(PASS_ORDER))
    ok = sort_configs(ok)
    fields = tuple(f for f in CONFIG_FIELDS if f not in ("batch", "threads"))
    ok = ok.assign(_label=config_labels(ok, fields, always=("device", "backend", "dtype")))
    labels = list(dict.fromkeys(ok._label))
    fig = figure(1, len(passes), shared_yaxes=True, horizontal_spacing=0.04,
                 subplot_titles=[pass_name(p) for p in passes])
    shown = set()
    for col, p in enumerate(passes, start=1):
        part = ok[ok.pass_name == p]
        for (backend, dtype), grp in part.groupby(["backend", "dtype"], sort=False):
            key = (backend, dtype)
            fig.add_trace(go.Bar(
                x=grp.images_per_s, y=grp._label, orientation="h", name=_legend_name(backend, dtype),
                legendgroup=f"{backend}/{dtype}",
                showlegend=key not in shown,
                marker=dict(color=backend_color(backend), pattern=dict(shape=DTYPE_PATTERNS.get(dtype, ""))),
                text=[f"{fmt_rate(v)} · batch {b}{f' · {t} thr.' if pd.notna(t) else ''}"
                      for v, b, t in zip(grp.images_per_s, grp.batch, grp.threads)],
                textposition="auto", insidetextanchor="end", cliponaxis=False,
                hovertext=[hover_row(r) for _, r in grp.iterrows()], hovertemplate="%{hovertext}<extra></extra>"),
                row=1, col=col)
            shown.add(key)
    rng = log_range(ok.images_per_s, pad=0.25)
    fig.update_xaxes(type="log", range=rng, title_text="images/s (log scale)")
    fig.update_yaxes(categoryorder="array", categoryarray=labels[::-1])
    height = max(300, 120 + 34 * len(labels))
    return finish(fig, "overview-network-throughput", "Whole-network throughput", data, ok, height=height,
                  caption="The best median images/s of the whole network per machine, device, backend, dtype and "
                          "pass (the batch and thread count that gave it are in the label); bars are coloured by "
                          "backend and patterned by dtype.")


def _legend_name(backend, dtype) -> str:
    return f"{backend_name(backend)} · {dtype_name(dtype)}"


def _machines_table(data) -> TableBlock:
    by_machine: dict = {}
    for env in data.environments.values():
        by_machine.setdefault(env.machine_id, []).append(env)
    m = data.measurements
    rows = []
    for machine_id, envs in by_machine.items():
        env = envs[-1]
        gpus = env.get("gpus") or []
        gpu_text = ", ".join(f"{g.get('name')} ({fmt_bytes(g.get('memory_bytes'))})" for g in gpus) if gpus else \
            esc(env.get("gpu_note") or "none")
        softwares = "<br>".join(esc(e.software) + (f" · Python {esc(e.get('python'))}" if e.get("python") else "")
                                for e in envs)
        n_rows = int((m.machine_id == machine_id).sum()) if len(m) else 0
        commits = sorted({short_commit(c) for c in m[m.machine_id == machine_id].git_commit.dropna()}) if len(m) \
            else []
        rows.append([f"<b>{esc(env.label)}</b><br><span class='muted'>{esc(machine_id)}</span>",
                     esc(env.get("cpu_model") or "?") + f" · {esc(env.get('cpu_count_logical') or '?')} logical CPUs",
                     esc(fmt_bytes(env.get("memory_total_bytes"))), gpu_text, softwares,
                     esc(", ".join(commits) or "-"), esc(env.get("os") or "?"), f"{n_rows:,}"])
    return TableBlock(["machine", "CPU", "memory", "GPUs", "software", "perfkit commit", "OS", "rows"], rows,
                      title="Machines and software")


def _runs_table(data) -> TableBlock:
    m = data.measurements
    counts = m.groupby(["run_id", "status"]).size().unstack(fill_value=0) if len(m) else pd.DataFrame()
    rows = []
    runs = data.runs.sort_values("started_at", kind="stable")
    for _, run in runs.iterrows():
        statuses = counts.loc[run.run_id] if run.run_id in counts.index else pd.Series(dtype=int)
        status_text = " ".join(f"{status_badge(s)} {int(n)}" for s, n in statuses.items() if n) or "no rows"
        finished = run.finished_at if isinstance(run.finished_at, str) else None
        duration = "-"
        if finished:
            seconds = (pd.Timestamp(finished) - pd.Timestamp(run.started_at)).total_seconds()
            duration = f"{seconds:,.0f} s" if seconds < 600 else f"{seconds / 60:,.1f} min"
        args = run.args if isinstance(run.args, dict) else {}
        rows.append([esc(run.study), esc(run.machine or run.machine_id), esc(str(run.started_at)[:19]),
                     esc(duration) if finished else "<span class='warn-text'>unfinished</span>",
                     esc(", ".join(args.get("devices") or []) or "-") + (" (quick)" if args.get("quick") else ""),
                     status_text, esc(short_commit(run.git_commit)), f"<span class='muted'>{esc(run.run_id[:8])}"
                                                                    "</span>"])
    return TableBlock(["study", "machine", "started (UTC)", "duration", "devices", "rows by status", "commit", "run"],
                      rows, title="Runs")
