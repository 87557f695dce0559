"""The 2012 comparison: GPU against CPU, with the published figures as reference marks.

Needs: ok rows (the `speedup2012` study's when there are any, else all rows). The speedup figure needs, on one
machine, a CPU row (backend torch, float32) and a GPU row for the same variant, layer, pass, batch and activation;
each CPU thread count measured is a separate baseline, since the ratio depends on the baseline chosen. The throughput
figure needs whole-network rows. Published figures come from perfkit.dashboards.reference.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards import reference as ref
from perfkit.dashboards.common import (CONFIG_FIELDS, CPU_COLOR, DTYPE_PATTERNS, PASS_ORDER, NoteBlock, Section,
                                       TableBlock, backend_color, backend_name, config_labels, dtype_name, esc,
                                       fmt_rate, latest, layer_order, pass_name, sort_configs)
from perfkit.dashboards.plot import (figure, finish, hover_row, log_range, reference_hline, reference_vline,
                                     references_caption)

PAIR_KEYS = ["machine_id", "variant", "layer", "pass_name", "batch", "activation"]


def build(data) -> Section | None:
    m = data.measurements
    if m.empty:
        return None
    rows = m[m.study == "speedup2012"] if (m.study == "speedup2012").any() else m
    ok = latest(data.ok.loc[data.ok.index.intersection(rows.index)])
    network = ok[(ok.layer == "network") & ok.images_per_s.notna()]
    pairs = _pairs(ok)
    if network.empty and pairs.empty:
        return None
    section = Section("speedup", "GPU vs CPU: the 2012 speedup",
                      "The claim that made AlexNet: GPUs train convolutional networks far faster than CPUs. Speedup "
                      "is the CPU's median time over the GPU's for the same layer, pass and batch on one machine; "
                      "each CPU thread count is its own baseline, and the ratio depends heavily on which one is "
                      "chosen. Published ratios and throughputs are drawn as reference marks: they were measured on "
                      "other hardware, networks and batch sizes, so they frame our numbers rather than predict them.")
    if len(pairs):
        for p in [p for p in PASS_ORDER if p in set(pairs.pass_name)]:
            section.blocks.append(_speedup_figure(data, pairs[pairs.pass_name == p], p))
    else:
        gpu = rows[rows.device.astype(str).str.startswith("cuda")]
        reasons = "; ".join(f"{n} {esc(s)}: {esc(note)}" for (s, note), n in
                            gpu.groupby(["status", "note"], dropna=False).size().items()) if len(gpu) else ""
        section.blocks.append(NoteBlock(
            "No GPU measurement pairs with a CPU measurement in these stores, so no speedup can be computed here. "
            + (f"GPU rows: {reasons}." if reasons else "Run the speedup2012 study on a machine with a GPU.")))
    threads = _thread_scaling(data, ok)
    if threads:
        section.blocks.append(threads)
    if len(network):
        section.blocks.append(_throughput_figure(data, network))
    section.blocks.append(_published_table())
    return section


def _pairs(ok: pd.DataFrame) -> pd.DataFrame:
    cpu = ok[(ok.device == "cpu") & (ok.backend == "torch") & (ok.dtype == "float32")]
    gpu = ok[ok.device.astype(str).str.startswith("cuda")]
    if cpu.empty or gpu.empty:
        return pd.DataFrame()
    merged = gpu.merge(cpu, on=PAIR_KEYS, suffixes=("", "_cpu"))
    if merged.empty:
        return merged
    merged["speedup"] = merged.time_median_s_cpu / merged.time_median_s
    return merged


def _speedup_figure(data, pairs: pd.DataFrame, p: str):
    baselines = sorted(pairs.threads_cpu.dropna().unique()) or [None]
    titles = [f"against the CPU with {int(t)} thread{'s' if t != 1 else ''}" if t is not None else "against the CPU"
              for t in baselines]
    fig = figure(len(baselines), 1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=titles)
    pairs = sort_configs(pairs)
    pairs = pairs.assign(_label=config_labels(pairs, ("machine", "device", "backend", "dtype", "batch"),
                                              always=("backend", "dtype")))
    order = layer_order(pairs)
    shown = set()
    for i, t in enumerate(baselines, start=1):
        part = pairs[pairs.threads_cpu == t] if t is not None else pairs
        for label, grp in part.groupby("_label", sort=False):
            first = grp.iloc[0]
            hover = [hover_row(r, extra=[("CPU median", f"{r.time_median_s_cpu * 1e3:.6g} ms "
                                                        f"({int(r.threads_cpu) if pd.notna(r.threads_cpu) else '?'} "
                                                        f"threads, study {r.study_cpu})"),
                                         ("speedup", f"{r.speedup:.6g}x")]) for _, r in grp.iterrows()]
            fig.add_trace(go.Bar(x=grp.layer, y=grp.speedup, name=label, legendgroup=label,
                                 showlegend=label not in shown,
                                 marker=dict(color=backend_color(first.backend),
                                             pattern=dict(shape=DTYPE_PATTERNS.get(first['dtype'], ""))),
                                 hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"), row=i, col=1)
            shown.add(label)
        for j, r in enumerate(ref.GPU_CPU_SPEEDUPS):
            reference_hline(fig, r, row=i, col=1, showlegend=i == 1, dash=("dash", "dot", "solid")[j % 3])
    values = list(pairs.speedup) + [r.low for r in ref.GPU_CPU_SPEEDUPS] + [r.high or r.low
                                                                            for r in ref.GPU_CPU_SPEEDUPS]
    fig.update_yaxes(type="log", range=log_range(values, pad=0.1), title_text="speedup (CPU time / GPU time, log)")
    fig.update_xaxes(categoryorder="array", categoryarray=order)
    fig.update_xaxes(title_text="layer", row=len(baselines), col=1)
    fig.update_layout(barmode="group")
    return finish(fig, f"speedup-{p}", f"GPU speedup over the CPU, {pass_name(p)}", data,
                  pairs, height=300 + 260 * len(baselines),
                  caption=references_caption(ref.GPU_CPU_SPEEDUPS) + ".")


def _thread_scaling(data, ok: pd.DataFrame):
    """CPU only: the speedup of each thread count over one thread (the CPU half of the 2012 comparison)."""
    cpu = ok[(ok.device == "cpu") & ok.threads.notna()]
    if cpu.threads.nunique() < 2 or not (cpu.threads == 1).any():
        return None
    one = cpu[cpu.threads == 1]
    many = cpu[cpu.threads > 1]
    keys = ["machine_id", "variant", "layer", "pass_name", "batch", "backend", "dtype", "activation"]
    merged = many.merge(one, on=keys, suffixes=("", "_one"))
    if merged.empty:
        return None
    merged["speedup"] = merged.time_median_s_one / merged.time_median_s
    merged = merged.assign(_label=merged.pass_name.map(pass_name) + " · " + merged.threads.astype(str) + " threads")
    fig = figure()
    for label, grp in merged.groupby("_label", sort=False):
        hover = [hover_row(r, extra=[("1-thread median", f"{r.time_median_s_one * 1e3:.6g} ms"),
                                     ("speedup over 1 thread", f"{r.speedup:.6g}x")]) for _, r in grp.iterrows()]
        fig.add_trace(go.Bar(x=grp.layer, y=grp.speedup, name=label, hovertext=hover,
                             marker=dict(color=CPU_COLOR if "train" in label else "#9aa7b5"),
                             hovertemplate="%{hovertext}<extra></extra>"))
    fig.add_hline(y=1, line=dict(color="#444", width=1, dash="dot"))
    fig.update_xaxes(categoryorder="array", categoryarray=layer_order(merged), title_text="layer")
    fig.update_yaxes(title_text="speedup over 1 CPU thread (x)")
    fig.update_layout(barmode="group")
    return finish(fig, "speedup-cpu-threads", "CPU baselines: all threads against one", data, merged, height=420,
                  caption="The same layer and pass on one CPU thread and on all threads: how much the choice of CPU "
                          "baseline moves any GPU-vs-CPU ratio.")


def _throughput_figure(data, network: pd.DataFrame):
    network = sort_configs(network)
    network = network.assign(_label=config_labels(network, CONFIG_FIELDS, always=("device", "backend", "dtype",
                                                                                   "batch")))
    passes = [p for p in PASS_ORDER if p in set(network.pass_name)]
    fig = figure(len(passes), 1, shared_xaxes=True, vertical_spacing=0.1,
                 subplot_titles=[pass_name(p) for p in passes])
    shown = set()
    for i, p in enumerate(passes, start=1):
        part = network[network.pass_name == p]
        for (backend, dtype, device), grp in part.groupby(["backend", "dtype", "device"], sort=False):
            name = f"{backend_name(backend)} · {dtype_name(dtype)} · {'CPU' if device == 'cpu' else 'GPU'}"
            fig.add_trace(go.Bar(x=grp.images_per_s, y=grp._label, orientation="h", name=name, legendgroup=name,
                                 showlegend=name not in shown,
                                 marker=dict(color=CPU_COLOR if device == "cpu" else backend_color(backend),
                                             pattern=dict(shape=DTYPE_PATTERNS.get(dtype, ""))),
                                 text=[fmt_rate(v) for v in grp.images_per_s], textposition="outside",
                                 cliponaxis=False,
                                 hovertext=[hover_row(r) for _, r in grp.iterrows()],
                                 hovertemplate="%{hovertext}<extra></extra>"), row=i, col=1)
            shown.add(name)
        fig.update_yaxes(categoryorder="array", categoryarray=list(dict.fromkeys(part._label))[::-1], row=i, col=1)
        marks = list(ref.PUBLISHED_THROUGHPUT) + ([ref.TRAIN_IMAGES_PER_S] if p == "train_step" else [])
        for j, r in enumerate(marks):
            reference_vline(fig, r, row=i, col=1, showlegend=i == len(passes) or r is ref.TRAIN_IMAGES_PER_S,
                            dash=("dot", "dash", "solid", "dash")[j % 4])
    refs = list(ref.PUBLISHED_THROUGHPUT) + [ref.TRAIN_IMAGES_PER_S]
    values = list(network.images_per_s) + [r.low for r in refs] + [r.high or r.low for r in refs]
    fig.update_xaxes(type="log", range=log_range(values, pad=0.12))
    fig.update_xaxes(title_text="images/s (log scale)", row=len(passes), col=1)
    n = network.groupby("pass_name")._label.nunique().max()
    return finish(fig, "speedup-network-throughput", "Whole-network throughput beside published figures", data,
                  network, height=200 + len(passes) * (90 + 30 * n),
                  caption="Our measured images/s (bars) against published throughputs (lines; the paper's training "
                          "throughput as a band in the train-step panel). Batch sizes differ: ours are in the labels, "
                          "MatConvNet's was 256 and the paper's 128. " + references_caption(refs) + ".")


def _published_table() -> TableBlock:
    rows = [[esc(r.label()), esc(r.source) + (" (derived in REFERENCE.md)" if r.derived else "")]
            for r in (*ref.GPU_CPU_SPEEDUPS, *ref.PUBLISHED_THROUGHPUT, ref.TRAIN_IMAGES_PER_S,
                      *ref.CONVNET_BENCHMARK_TIMES)]
    return TableBlock(["published figure", "source"], rows, title="Published figures used in this section",
                      note="Copied from the project's REFERENCE.md; convnet-benchmarks times are per batch of 128, "
                           "forward+backward.")
