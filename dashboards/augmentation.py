"""Augmentation: can the CPU feed the GPU? AlexNet's training augmentation in images/s against the train step.

Needs the summary of study "augmentation" (studies/augmentation.py `summarize`): its data JSON's `augment` (one dict
per measured augmentation row: device, device_name, backend, threads, batch, input, layout, dtype, plain,
images_per_s, time_s, error_rel), `train` (one per measured whole-network train step: device, device_name, config,
threads, batch, images_per_s) and `verdict` (the ratios behind the answer, None where a side was not measured). Cases
the run did not measure (the GPU's, on a machine without one) are taken from its rows with their reason.
"""
from __future__ import annotations

import json

import plotly.graph_objects as go

from perfkit.dashboards.common import (CPU_COLOR, NoteBlock, Section, TableBlock, backend_color, esc, fmt_rate,
                                       is_num, latest, rows_not_plotted, run_provenance)
from perfkit.dashboards.plot import figure, finish, log_range
from perfkit.dashboards.summaries import has_summary, run_rows, runs_of, summary_items, where_label

STUDY = "augmentation"
AUGMENT_LAYER = "augment"  # perfkit.cases.AUGMENT: the layer name of augmentation rows
TRAIN_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
PAPER_QUOTE = ("The paper (section 4.1): the transformed images are generated on the CPU while the GPU trains on the "
               "previous batch, so augmentation is \"in effect, computationally free\"")


def build(data) -> Section | None:
    if not has_summary(data, STUDY):
        return None
    aug = summary_items(data, STUDY, "augment")
    train = summary_items(data, STUDY, "train")
    verdicts = summary_items(data, STUDY, "verdict")
    runs = list(dict.fromkeys(data.summaries[data.summaries.study == STUDY].run_id))
    several = data.runs[data.runs.run_id.isin(runs)].machine_id.nunique() > 1 if len(data.runs) else False
    section = Section("augmentation", "Augmentation: can the CPU feed the GPU?",
                      "AlexNet's training augmentation (random 224x224 crop of a 256x256 image, mirror, PCA lighting "
                      "noise, normalisation to float32) in images/s: torch operators on the CPU with one thread and "
                      "with all threads, and a fused Triton kernel on the GPU, against the whole network's train step "
                      f"it has to feed (vertical lines). Decoding JPEGs and copying to the GPU are not included. "
                      f"{esc(PAPER_QUOTE)}.")
    not_measured = run_rows(data, runs)
    not_measured = not_measured[not_measured.status != "ok"] if len(not_measured) else not_measured
    if len(aug) or len(train):
        section.blocks.append(_rates_figure(data, aug, train, not_measured, several))
    else:
        section.blocks.append(NoteBlock("No augmentation or train step was measured in these runs.", kind="warn"))
    gpu_train = train[train.device.astype(str).str.startswith("cuda")] if len(train) else train
    if gpu_train.empty:
        section.blocks.append(NoteBlock(
            "The comparison with a GPU's train step needs a GPU: these runs measured none, so the figure's lines are "
            "the CPU's own train step and no CPU-feeds-GPU ratio is given." + _gpu_reason(not_measured)))
    if len(verdicts):
        section.blocks.append(_verdict_table(latest(verdicts, ("machine_id",)), several))
    table = rows_not_plotted(not_measured) if len(not_measured) else None
    if table is not None:
        section.blocks.append(table)
    return section


def _impl_label(where: str, backend: str, threads, input_, layout, dtype) -> str:
    impl = "Triton kernel" if backend == "triton" else "torch operators"
    if is_num(threads):
        impl += f" · {int(threads)} thread{'s' if int(threads) != 1 else ''}"
    if (input_, layout, dtype) not in (("uint8", "nchw", "float32"), (None, None, "float32")):
        impl += f" · {input_} → {dtype} {layout}"
    return f"{where} · {impl}"


def _rates_figure(data, aug, train, not_measured, several: bool):
    fig = figure()
    if len(aug):
        aug = aug.assign(_label=[_impl_label(where_label(r, several), r.backend, r.threads, r.input, r.layout,
                                             r["dtype"]) for _, r in aug.iterrows()])
        aug = latest(aug, ("machine_id", "_label"))
        colors = [CPU_COLOR if r.device == "cpu" else backend_color(r.backend) for _, r in aug.iterrows()]
        fig.add_trace(go.Bar(
            x=aug.images_per_s, y=aug._label, orientation="h", showlegend=False, marker=dict(color=colors),
            text=[f"{fmt_rate(v)} images/s" for v in aug.images_per_s], textposition="outside", cliponaxis=False,
            hovertext=[f"<b>{esc(r._label)}</b><br>augmentation: <b>{r.images_per_s:,.6g} images/s</b><br>"
                       f"{r.time_s * 1e3:.6g} ms per batch of {r.batch}<br>rel. error vs float64 reference: "
                       f"{r.error_rel:.3g}<br>machine: {esc(r.machine)}" for _, r in aug.iterrows()],
            hovertemplate="%{hovertext}<extra></extra>"))
    missing = not_measured[not_measured.layer == AUGMENT_LAYER] if len(not_measured) else not_measured
    for _, r in missing.iterrows():  # planned but not measured: a labelled row with no bar, never a bar at 0
        opts = json.loads(r.options) if isinstance(r.options, str) and r.options.startswith("{") else {}
        label = _impl_label(where_label({**r, "machine": r.machine_short}, several), r.backend, r.threads,
                            opts.get("input"), opts.get("layout"), r["dtype"])
        fig.add_trace(go.Scatter(x=[None], y=[label], mode="markers", showlegend=False, hoverinfo="skip"))
        fig.add_annotation(x=0, xref="x domain", xanchor="left", y=label, text=f"not measured ({esc(r.status)})",
                           showarrow=False, font=dict(color="#8a8f98", size=11),
                           hovertext=esc(r.note or r.status))
    rates = list(aug.images_per_s) if len(aug) else []
    for i, (_, t) in enumerate(train.iterrows()):
        rates.append(t.images_per_s)
        gpu = str(t.device).startswith("cuda")
        fig.add_vline(x=t.images_per_s, line=dict(color="#1f2933" if gpu else CPU_COLOR, width=1.8,
                                                  dash=TRAIN_DASHES[i % len(TRAIN_DASHES)]),
                      name=f"train step: {where_label(t, several)} · {t.config} · batch {t.batch} "
                           f"({fmt_rate(t.images_per_s)} images/s)", showlegend=True, layer="above")
    span = log_range(rates, pad=0.25)
    if span:
        span[1] += 0.3 * (span[1] - span[0])  # room for the bars' labels on the right
    fig.update_xaxes(type="log", range=span, title_text="images per second (log scale)")
    labels = list(dict.fromkeys(fig.data[i].y[j] for i in range(len(fig.data)) for j in range(len(fig.data[i].y))))
    fig.update_yaxes(categoryorder="array", categoryarray=labels[::-1])
    return finish(fig, "augmentation-rates", "Augmentation against the train step", data, None,
                  height=max(340, 200 + 40 * len(labels)), provenance_text=run_provenance(data, runs_of(
                      aug if len(aug) else train)),
                  caption="Bars: augmentation of a batch of 256x256 uint8 images to 224x224 float32 NCHW (other "
                          "inputs and outputs named in the label), checked against a float64 reference before timing. "
                          "Lines: the whole network's train step in images/s; a bar right of a line keeps up with that "
                          "step. Rows marked \"not measured\" were planned but not measured (hover, and the table "
                          "below, for why).")


def _gpu_reason(not_measured) -> str:
    if not_measured.empty:
        return ""
    gpu = not_measured[not_measured.device.astype(str) != "cpu"]
    notes = list(dict.fromkeys(n for n in gpu.note.dropna()))
    return f" The run's GPU cases: {esc(notes[0])}" + ("" if notes[0].endswith(".") else ".") if notes else ""


def _verdict_table(verdicts, several: bool) -> TableBlock:
    def rate(v):
        return f"{fmt_rate(v)} images/s" if is_num(v) else "not measured"

    rows = []
    for _, v in verdicts.iterrows():
        over = v.get("cpu_all_over_gpu_fastest")
        answer = ("needs a GPU train step: none measured" if not is_num(over) else
                  f"{over:.3g}x: {'keeps up' if over >= 1 else 'falls short'}")
        cores = v.get("cores_needed_gpu_fastest")
        share = v.get("kernel_share_gpu_fastest")
        threads = v.get("cpu_all_threads")
        rows.append([esc(v.machine) if several else "this machine", rate(v.get("cpu_1t")),
                     rate(v.get("cpu_all")) + (f" ({int(threads)} threads)" if is_num(threads) else ""),
                     rate(v.get("gpu_fastest")) + (f" ({esc(v.gpu_fastest_config)})"
                                                   if isinstance(v.get("gpu_fastest_config"), str) else ""),
                     esc(answer), f"{cores:.3g}" if is_num(cores) else "not measured", rate(v.get("kernel")),
                     f"{share * 100:.2g}%" if is_num(share) else "not measured"])
    return TableBlock(["machine", "CPU, 1 thread", "CPU, all threads", "fastest GPU train step",
                       "CPU (all threads) / GPU step", "1-thread cores needed", "Triton kernel on the GPU",
                       "kernel adds to the step"], rows, title="Can the CPU feed the GPU?",
                      note="From each run's measured rows (the study's verdict); a side that was not measured is "
                           "said so, not counted as zero.")
