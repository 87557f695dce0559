"""The 2012 comparison: GPU against CPU, with the published figures as reference marks.

Needs: ok rows (the `speedup2012` study's when there are any, else all rows). The speedup figure needs, on one
machine, a CPU row (float32) and a GPU row for the same variant, layer, pass, batch and activation. Its panels are the
baselines a ratio can be taken against: stock eager (backend torch) at each CPU thread count measured, and the best CPU
configuration measured (any CPU backend, any thread count: channels_last, torch.compile, ONNX Runtime...), which its
hover names; the ratio's range lies between them. The CPU-baselines figure needs CPU float32 rows of another backend
beside stock eager at the same thread count. The throughput figure needs whole-network rows. Published figures come
from perfkit.dashboards.published.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from perfkit.dashboards import published as ref
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
    cpu_vs_stock = _cpu_baseline_ratios(ok)
    if network.empty and pairs.empty and cpu_vs_stock.empty:
        return None
    section = Section("speedup", "GPU vs CPU: the 2012 speedup",
                      "The claim that made AlexNet: GPUs train convolutional networks far faster than CPUs. Speedup "
                      "is the CPU's median time over the GPU's for the same layer, pass and batch on one machine; "
                      "each CPU thread count is its own baseline, and the ratio depends heavily on which one is "
                      "chosen: stock eager on one thread flatters the GPU most, the best CPU configuration measured "
                      "(channels_last, torch.compile, ONNX Runtime, on all threads) least. Published ratios and "
                      "throughputs are drawn as reference marks: they were measured on other hardware, networks and "
                      "batch sizes, so they frame our numbers rather than predict them.")
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
    if len(cpu_vs_stock):
        section.blocks.append(_cpu_baselines_figure(data, cpu_vs_stock))
        section.blocks.append(_best_cpu_table(ok))
    threads = _thread_scaling(data, ok)
    if threads:
        section.blocks.append(threads)
    if len(network):
        section.blocks.append(_throughput_figure(data, network))
    section.blocks.append(_published_table())
    return section


BEST_CPU = "against the best CPU configuration measured"


def _cpu_configs(ok: pd.DataFrame) -> pd.DataFrame:
    """CPU float32 rows without case options: each one a CPU configuration a ratio can be taken against."""
    cpu = ok[(ok.device == "cpu") & (ok.dtype == "float32") & ok.time_median_s.notna()]
    if "options" in cpu:
        cpu = cpu[cpu.options.fillna("{}").isin(["{}", ""])]
    return cpu


def _pairs(ok: pd.DataFrame) -> pd.DataFrame:
    """GPU rows paired with a CPU baseline: stock eager at each thread count, and the fastest CPU configuration of
    the same layer, pass and batch. Column `baseline` names the panel; `speedup` is CPU time over GPU time."""
    configs = _cpu_configs(ok)
    gpu = ok[ok.device.astype(str).str.startswith("cuda")]
    if configs.empty or gpu.empty:
        return pd.DataFrame()
    stock = configs[configs.backend == "torch"]
    merged = gpu.merge(stock, on=PAIR_KEYS, suffixes=("", "_cpu"))
    merged["baseline"] = merged.threads_cpu.map(
        lambda t: f"against stock eager with {int(t)} thread{'s' if t != 1 else ''}" if pd.notna(t)
        else "against stock eager")
    best = configs.loc[configs.groupby(PAIR_KEYS, dropna=False).time_median_s.idxmin()]
    merged_best = gpu.merge(best, on=PAIR_KEYS, suffixes=("", "_cpu")).assign(baseline=BEST_CPU)
    merged = pd.concat([merged, merged_best], ignore_index=True)
    if merged.empty:
        return merged
    merged["speedup"] = merged.time_median_s_cpu / merged.time_median_s
    return merged


def _cpu_label(backend, threads) -> str:
    return f"{backend_name(backend)}, {int(threads)} thread{'s' if threads != 1 else ''}" if pd.notna(threads) \
        else backend_name(backend)


def _speedup_figure(data, pairs: pd.DataFrame, p: str):
    stock = sorted(b for b in pairs.baseline.unique() if b != BEST_CPU)
    baselines = stock + ([BEST_CPU] if (pairs.baseline == BEST_CPU).any() else [])
    titles = baselines
    fig = figure(len(baselines), 1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=titles)
    pairs = sort_configs(pairs)
    pairs = pairs.assign(_label=config_labels(pairs, ("machine", "device", "backend", "dtype", "batch"),
                                              always=("backend", "dtype")))
    order = layer_order(pairs)
    shown = set()
    for i, t in enumerate(baselines, start=1):
        part = pairs[pairs.baseline == t]
        for label, grp in part.groupby("_label", sort=False):
            first = grp.iloc[0]
            hover = [hover_row(r, extra=[("CPU median", f"{r.time_median_s_cpu * 1e3:.6g} ms "
                                                        f"({_cpu_label(r.backend_cpu, r.threads_cpu)}, "
                                                        f"study {r.study_cpu})"),
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


def _cpu_baseline_ratios(ok: pd.DataFrame) -> pd.DataFrame:
    """Each non-stock CPU configuration against stock eager at the same thread count, layer, pass and batch:
    `vs_stock` is stock's median time over the configuration's (above 1: faster than stock)."""
    configs = _cpu_configs(ok)
    stock = configs[configs.backend == "torch"]
    other = configs[configs.backend != "torch"]
    if stock.empty or other.empty:
        return pd.DataFrame()
    keys = PAIR_KEYS + ["threads"]
    merged = other.merge(stock, on=keys, suffixes=("", "_stock"))
    if merged.empty:
        return merged
    merged["vs_stock"] = merged.time_median_s_stock / merged.time_median_s
    return merged


def _pass_panels(rows: pd.DataFrame, vertical_spacing: float):
    """The passes present in `rows`, in pass order, and a figure with one panel per pass (shared x axis)."""
    passes = [p for p in PASS_ORDER if p in set(rows.pass_name)]
    return passes, figure(len(passes), 1, shared_xaxes=True, vertical_spacing=vertical_spacing,
                          subplot_titles=[pass_name(p) for p in passes])


def _cpu_baselines_figure(data, ratios: pd.DataFrame):
    ratios = sort_configs(ratios)
    passes, fig = _pass_panels(ratios, vertical_spacing=0.14)
    shown = set()
    for i, p in enumerate(passes, start=1):
        part = ratios[ratios.pass_name == p]
        for (backend, threads), grp in part.groupby(["backend", "threads"], sort=False):
            label = _cpu_label(backend, threads)
            hover = [hover_row(r, extra=[("stock eager median", f"{r.time_median_s_stock * 1e3:.6g} ms"),
                                         ("over stock eager", f"{r.vs_stock:.4g}x")]) for _, r in grp.iterrows()]
            # bars grow from 1 (stock eager), up when faster and down when slower
            fig.add_trace(go.Bar(x=grp.layer, y=grp.vs_stock - 1, base=1, name=label, legendgroup=label,
                                 showlegend=label not in shown,
                                 marker=dict(color=backend_color(backend),
                                             pattern=dict(shape="" if threads != 1 else "/")),
                                 hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"), row=i, col=1)
            shown.add(label)
        fig.add_hline(y=1, line=dict(color="#444", width=1, dash="dot"), row=i, col=1)
    fig.update_yaxes(type="log", range=log_range(list(ratios.vs_stock) + [1.0], pad=0.12),
                     title_text="throughput over stock eager (x, log)")
    fig.update_xaxes(categoryorder="array", categoryarray=layer_order(ratios))
    fig.update_xaxes(title_text="layer", row=len(passes), col=1)
    fig.update_layout(barmode="group")
    return finish(fig, "speedup-cpu-baselines", "CPU baselines against stock eager", data, ratios,
                  height=260 + 260 * len(passes),
                  caption="Each CPU configuration's throughput over stock PyTorch eager (NCHW) on the same layer, "
                          "pass, batch and thread count, measured in the same run (hatched: 1 thread). Above 1, a GPU "
                          "ratio against stock eager overstates the GPU's lead over what this CPU can do.")


def _best_cpu_table(ok: pd.DataFrame) -> TableBlock:
    """Per machine, layer and pass: the fastest CPU configuration and its gain over stock eager on all threads."""
    configs = _cpu_configs(ok)
    rows = []
    keys = ["machine_id", "variant", "layer", "pass_name", "batch", "activation"]
    order = {layer: i for i, layer in enumerate(layer_order(configs))}
    for key, grp in sorted(configs.groupby(keys, dropna=False),
                           key=lambda kv: (str(kv[0][0]), order.get(kv[0][2], 99), PASS_ORDER.index(kv[0][3])
                                           if kv[0][3] in PASS_ORDER else 9)):
        stock = grp[grp.backend == "torch"]
        if stock.empty or grp.backend.nunique() < 2:
            continue
        best = grp.loc[grp.time_median_s.idxmin()]
        stock_all = stock.loc[stock.threads.fillna(0).idxmax()]
        gain = stock_all.time_median_s / best.time_median_s
        machine = best.get("machine_short") or best.get("machine") or best.machine_id
        rows.append([esc(machine), esc(best.layer), esc(pass_name(best.pass_name)), esc(str(best.batch)),
                     esc(_cpu_label(best.backend, best.threads)), esc(fmt_rate(best.images_per_s)),
                     esc(_cpu_label("torch", stock_all.threads)), esc(fmt_rate(stock_all.images_per_s)),
                     esc(f"{gain:.3g}x")])
    return TableBlock(["machine", "layer", "pass", "batch", "best CPU configuration", "its images/s",
                       "stock eager", "stock images/s", "best over stock"], rows,
                      title="The best CPU configuration per layer and pass",
                      note="A GPU's ratio against the best configuration is the low end of its honest range; against "
                           "stock eager on one thread, the high end.")


def _thread_scaling(data, ok: pd.DataFrame):
    """CPU only: the speedup of each thread count over one thread (the CPU half of the 2012 comparison)."""
    cpu = ok[(ok.device == "cpu") & ok.threads.notna() & (ok.backend == "torch")]  # stock eager's scaling
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
    passes, fig = _pass_panels(network, vertical_spacing=0.1)
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
