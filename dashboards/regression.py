"""The regression suite's history, from pytest-benchmark JSON files.

Needs: the files pytest-benchmark saves (`--benchmark-autosave` / `--benchmark-save`, default folder `.benchmarks`,
laid out as `<machine>/NNNN_<name>.json`), passed as `benchmarks_dir`. Per storage folder (pytest-benchmark names it
after the machine's platform), each benchmark's median relative to its first saved run, and the latest run's
medians with their interquartile ranges. The benchmark's `extra_info` (backend, dtype, FLOPs...) is shown on hover.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards.common import (Section, TableBlock, backend_color, esc, machine_color, short_commit)
from perfkit.dashboards.plot import figure, finish, log_range

MAX_LINES = 40


def frame(runs) -> pd.DataFrame:
    """One row per benchmark per saved run."""
    rows = []
    for run in runs:
        for b in run.benchmarks:
            stats = b["stats"]
            rows.append(dict(machine=run.machine, file=run.path.name, datetime=run.datetime, commit=run.commit,
                             dirty=run.commit_dirty, branch=run.branch, node=run.node, name=b.get("name"),
                             fullname=b.get("fullname") or b.get("name"), group=b.get("group"),
                             median_s=stats.get("median"), iqr_s=stats.get("iqr"), mean_s=stats.get("mean"),
                             min_s=stats.get("min"), stddev_s=stats.get("stddev"), rounds=stats.get("rounds"),
                             q1_s=stats.get("q1"), q3_s=stats.get("q3"), extra=b.get("extra_info") or {},
                             cpu=(run.machine_info.get("cpu") or {}).get("brand_raw"),
                             python=run.machine_info.get("python_version")))
    df = pd.DataFrame(rows)
    if len(df):
        df = df.dropna(subset=["median_s"])
        df["run"] = df.file.str.split("_").str[0]
    return df


def build(data) -> Section | None:
    df = frame(data.benchmarks)
    if df.empty and not data.ab_check and not data.baselines:
        return None
    section = Section("regression", "Regression suite",
                      "The gate's last verdict, when the history folder has one: each benchmark's time on the working "
                      "tree over the reference commit's, both measured side by side on one machine (`perfkit bench "
                      "check`). Then the saved history: "
                      f"{len(data.benchmarks)} saved pytest-benchmark run(s), each benchmark's median time relative "
                      "to its first saved run on the same machine (1.0 = unchanged; above 1 slower), and the latest "
                      "run's medians. Raw seconds from different days on a shared machine are noisy, so the history "
                      "decides nothing; the side-by-side check does.")
    if data.ab_check:
        section.blocks.append(_ab_check(data, data.ab_check))
    if data.baselines:
        section.blocks.append(_baselines_table(data.baselines))
    if df.empty:
        return section
    for i, (machine, part) in enumerate(df.groupby("machine", sort=False)):
        section.blocks.append(_history(data, machine, part, i))
        section.blocks.append(_latest(data, machine, part))
    section.blocks.append(_runs_table(data.benchmarks))
    return section


def _provenance(part: pd.DataFrame) -> str:
    nodes = ", ".join(dict.fromkeys(part.node.dropna())) or "?"
    cpus = ", ".join(dict.fromkeys(part.cpu.dropna())) or "?"
    pythons = ", ".join(dict.fromkeys(part.python.dropna()))
    commits = list(dict.fromkeys(short_commit(c) for c in part.commit))
    span = commits[0] if len(commits) == 1 else f"{commits[0]} .. {commits[-1]} ({len(commits)} commits)"
    return f"{part.iloc[0].machine} on {nodes} ({cpus}; Python {pythons}) | commits {span}"


def _extra_text(extra: dict) -> str:
    return "".join(f"<br>{esc(k)}: {esc(v)}" for k, v in list(extra.items())[:12])


def _history(data, machine: str, part: pd.DataFrame, index: int):
    part = part.sort_values(["datetime", "file"])
    first = part.groupby("fullname").median_s.transform("first")
    part = part.assign(_rel=part.median_s / first)
    names = list(dict.fromkeys(part.fullname))
    fig = figure()
    for j, name in enumerate(names[:MAX_LINES]):
        grp = part[part.fullname == name]
        backend = grp.iloc[-1].extra.get("backend") if isinstance(grp.iloc[-1].extra, dict) else None
        color = backend_color(backend) if backend else machine_color(j)
        hover = [f"<b>{esc(r['name'])}</b><br>run {esc(r.run)} ({esc(r.file)})<br>{esc(str(r.datetime)[:19])} UTC"
                 f"<br>commit {esc(short_commit(r.commit))}{' (dirty)' if r.dirty else ''}"
                 f"<br>median <b>{r.median_s * 1e3:.6g} ms</b> ({r._rel:.4g}x the first run)"
                 f"<br>IQR {r.iqr_s * 1e3:.4g} ms, min {r.min_s * 1e3:.6g} ms, {int(r.rounds)} rounds"
                 + _extra_text(r.extra) for _, r in grp.iterrows()]
        fig.add_trace(go.Scatter(x=grp.datetime, y=grp._rel, mode="lines+markers", name=name.split("::")[-1],
                                 line=dict(color=color, width=1.5), marker=dict(size=7),
                                 hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color="#444", width=1, dash="dot"))
    fig.update_xaxes(title_text="saved run (date, UTC)")
    fig.update_yaxes(type="log", range=log_range(list(part._rel) + [0.8, 1.25], 0.05),
                     title_text="median / first run's median (log scale)")
    dropped = len(names) - MAX_LINES
    return finish(fig, f"regression-history-{index}", f"Benchmark history: {machine}", data, None, height=480,
                  provenance_text=_provenance(part),
                  caption=f"{part.run.nunique()} saved run(s) from {esc(machine)}."
                          + (f" {dropped} more benchmark(s) not drawn." if dropped > 0 else ""))


def _latest(data, machine: str, part: pd.DataFrame):
    last_file = part.sort_values(["datetime", "file"]).iloc[-1].file
    last = part[part.file == last_file].sort_values("fullname")
    fig = figure()
    colors = [backend_color(e.get("backend")) if isinstance(e, dict) and e.get("backend") else "#6f7f8f"
              for e in last.extra]
    err = None
    if last.q1_s.notna().all() and last.q3_s.notna().all():
        err = dict(type="data", symmetric=False, array=((last.q3_s - last.median_s) * 1e3).tolist(),
                   arrayminus=((last.median_s - last.q1_s) * 1e3).tolist(), thickness=1.1, width=3, color="#4a5560")
    hover = [f"<b>{esc(r['name'])}</b><br>median <b>{r.median_s * 1e3:.6g} ms</b><br>IQR {r.iqr_s * 1e3:.6g} ms "
             f"(q1 {r.q1_s * 1e3:.6g}, q3 {r.q3_s * 1e3:.6g})<br>mean {r.mean_s * 1e3:.6g} ms ± "
             f"{r.stddev_s * 1e3:.4g}<br>{int(r.rounds)} rounds" + _extra_text(r.extra) for _, r in last.iterrows()]
    fig.add_trace(go.Bar(x=last.median_s * 1e3, y=last["name"], orientation="h", marker=dict(color=colors),
                         error_x=err, hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", showlegend=False))
    fig.update_xaxes(type="log", title_text="median time (ms, log scale), whiskers q1-q3")
    fig.update_yaxes(categoryorder="array", categoryarray=list(last["name"])[::-1])
    return finish(fig, f"regression-latest-{machine}", f"Latest saved run: {last_file}", data, None,
                  height=max(300, 140 + 22 * len(last)), provenance_text=_provenance(last),
                  caption="Bars coloured by the benchmark's backend (extra_info) when it says one.")


AB_COLORS = {"ok": "#4c78a8", "regressed": "#d62728", "faster": "#2ca02c"}


def _ab_check(data, ab: dict):
    """The A/B verdict: per gated benchmark its ratio (median over the pairs), the range over the pairs as whiskers,
    and its limit as a tick; coloured by verdict."""
    cases = sorted((c for c in ab["cases"] if c.get("ratio") is not None), key=lambda c: c["ratio"])
    fig = figure()
    for verdict, color in AB_COLORS.items():
        part = [c for c in cases if c["verdict"] == verdict]
        if not part:
            continue
        names = [c["name"].split("::")[-1] for c in part]
        hover = [f"<b>{esc(n)}</b><br>A / B <b>{c['ratio']:.3f}</b> (pairs {c['ratio_low']:.3f} to "
                 f"{c['ratio_high']:.3f})<br>A {c['a_s'] * 1e3:.4g} ms, B {c['b_s'] * 1e3:.4g} ms per call"
                 f"<br>noise {c['noise']:.1%}, limit {1 + c['limit']:.2f}x<br>attempts "
                 + ", ".join(f"{x:.2f}x" for x in c["attempts"]) + f"<br>{esc(verdict)}" for n, c in zip(names, part)]
        fig.add_trace(go.Scatter(
            x=[c["ratio"] for c in part], y=names, mode="markers", name=verdict, marker=dict(color=color, size=8),
            error_x=dict(type="data", symmetric=False, array=[c["ratio_high"] - c["ratio"] for c in part],
                         arrayminus=[c["ratio"] - c["ratio_low"] for c in part], thickness=1.1, width=3),
            hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[1 + c["limit"] for c in cases], y=[c["name"].split("::")[-1] for c in cases],
                             mode="markers", name="limit", marker=dict(symbol="line-ns-open", size=12, color="#444"),
                             hoverinfo="skip"))
    fig.add_vline(x=1.0, line=dict(color="#444", width=1, dash="dot"))
    fig.update_xaxes(type="log", title_text="working tree / reference, per call (log scale); whiskers: range over "
                                            "the pairs; ticks: each benchmark's limit")
    fig.update_yaxes(categoryorder="array", categoryarray=[c["name"].split("::")[-1] for c in cases])
    verdict = "PASSED" if ab.get("passed") else "FAILED"
    untimed = [c for c in ab["cases"] if c.get("ratio") is None]
    caption = (f"{verdict}. A = {esc(ab.get('side_a', '?'))}; B = {esc(ab.get('side_b', '?'))}. "
               f"{ab.get('pairs')} interleaved pairs of rounds; geometric mean ratio "
               + (f"{ab['geomean_ratio']:.3f}" if ab.get("geomean_ratio") else "-") + "."
               + (" Not gated: " + "; ".join(f"{esc(c['name'].split('::')[-1])} ({esc(c['verdict'])}: "
                                              f"{esc(c.get('reason') or '')})" for c in untimed) if untimed else ""))
    return finish(fig, "regression-ab-check", "The last A/B check: working tree against the reference", data, None,
                  height=max(300, 140 + 20 * len(cases)), provenance_text=f"perfkit bench check, reference "
                  f"{short_commit(ab.get('reference'))}", caption=caption)


def _baselines_table(baselines) -> TableBlock:
    """The committed per-machine baselines: which machine model each describes and how noisy it was."""
    rows = []
    for path, doc in baselines:
        base = doc["perfkit_baseline"]
        machine = base.get("machine") or {}
        spreads = sorted(c.get("spread", 0.0) for c in (base.get("cases") or {}).values())
        median = f"{spreads[len(spreads) // 2]:.1%}" if spreads else "-"
        rows.append([esc(path.name), esc(machine.get("cpu_model") or "?"), esc(machine.get("cpu_family_model") or "?"),
                     esc(" ".join(machine.get("cpu_isa") or []) or "?"), esc(machine.get("cpu_count_logical") or "?"),
                     esc(machine.get("gpu") or "-"), esc(base.get("runs")), str(len(spreads)), median,
                     esc(str(doc.get("datetime") or "?")[:19])])
    return TableBlock(["file", "CPU", "family/model", "ISA", "cores", "GPU", "runs", "benchmarks", "median spread",
                       "recorded (UTC)"], rows,
                      title="Per-machine baselines (history: the gate measures against the reference commit instead)")


def _runs_table(runs) -> TableBlock:
    rows = [[esc(r.machine), esc(r.path.name), esc(str(r.datetime)[:19]), esc(short_commit(r.commit))
             + (" (dirty)" if r.commit_dirty else ""), esc(r.branch or "-"), str(len(r.benchmarks))] for r in runs]
    return TableBlock(["machine folder", "file", "saved (UTC)", "commit", "branch", "benchmarks"], rows,
                      title="Saved benchmark runs")
