"""speedup2012: the 2012 GPU-vs-CPU comparison, reproduced honestly.

Per layer and for the whole network (alexnet2012 unless --variant says otherwise), forward and train_step:
- the CPU: every CPU baseline of studies._common.CPU_BASELINES in float32, with 1 thread and with all threads
  (--threads N sets "all"): stock eager NCHW, eager channels_last, torch.compile (Inductor's C++ code) and, where it is
  installed, ONNX Runtime (forward only);
- the GPU: torch eager in float32 with TF32 off (IEEE float32, as GPUs computed in 2012), then TF32, bfloat16 (native:
  parameters and activations in bf16), and the triton backend in the same three dtypes (forward only until its
  backward kernels land; its train_step rows say so).

The summary is a table of GPU-over-CPU throughput ratios against stock eager (images/s over images/s; the CPU and GPU
batch sizes are stated), the CPU baselines side by side with their ratios to stock eager, and the ratio's range: each
GPU configuration against stock eager and against the best CPU configuration measured, which it names per layer and
for the network. Published ratios of perfkit.app.published stand beside them, and it says how much of a ratio is the
choice of CPU baseline.
Every number it derives comes from this run's measured rows; published figures are shown as published, with their
source.

Grids (the CPU always runs; the GPU half is skipped with the reason on a machine without one):
- full: every layer + the network; CPU batch 32 (one CPU thread at the paper's 128 would take tens of minutes per
  study), GPU batch 128 (the paper's).
- quick: the conv and linear layers (the work that matters for the ratio; the elementwise layers add minutes on a
  small CPU and little information) + the network; CPU batch 4, GPU batch 128.
- --batch N sets both batch sizes.
"""
from __future__ import annotations

from perfkit.cases import NETWORK, grid
from perfkit.app.published import cite, figure
from perfkit.app.tables import fmt_num, format_table, ratio
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (STOCK_CPU, all_layers_and_network, choose_layers, config_label, cpu_baseline_cases,
                                     cpu_baseline_rows, cpu_baseline_text, cpu_config_label, device_title, first, fmt_x,
                                     gemm_layers_and_network, not_measured, num, ok_rows, plan_devices)

NAME = "speedup2012"
DESCRIPTION = ("the 2012 GPU-vs-CPU speedup per layer and network: CPU fp32 (1 thread, all threads) vs GPU eager fp32 "
               "without TF32, TF32, bf16 and triton")
PASSES = ("forward", "train_step")
CPU_BATCH = {"quick": 4, "full": 32}
GPU_BATCH = {"quick": 128, "full": 128}
#: The GPU configurations, in the order the summary shows them. The first is the 2012-like one.
GPU_CONFIGS = (("torch", "float32"), ("torch", "tf32"), ("torch", "bfloat16"),
               ("triton", "float32"), ("triton", "tf32"), ("triton", "bfloat16"))
BASELINE_GPU = GPU_CONFIGS[0]


def batches(options: StudyOptions) -> tuple[int, int]:
    form = "quick" if options.quick else "full"
    return options.batch or CPU_BATCH[form], options.batch or GPU_BATCH[form]


def cases(options: StudyOptions):
    cpus, gpus = plan_devices(options, cpu="always")
    layers = choose_layers(options, gemm_layers_and_network(options.variant) if options.quick
                           else all_layers_and_network(options.variant))
    cpu_batch, gpu_batch = batches(options)
    out = []
    if cpus:
        # 1 thread and all (None: torch's default), every baseline, side by side under the same machine conditions
        out += cpu_baseline_cases(options, layers, cpu_batch, PASSES, (1, options.threads))
    for gpu in gpus:
        for backend, dtype in GPU_CONFIGS:
            out += grid(variant=options.variant, layer=layers, backend=backend, device=gpu, dtype=dtype,
                        batch=gpu_batch, pass_name=list(PASSES))
    return out


# -- summary -----------------------------------------------------------------------------------------------------------
def _rate(ok, **where):
    row = first(ok, **where)
    return (num(row.images_per_s), row) if row is not None else (None, None)


def speedup_table(df) -> dict:
    """The numbers of the summary, from measured (ok) rows only:

    {"cpu": {"device", "name", "batch", "threads_all"}, "gpu": {"device", "name", "batch"},
     "rows": [{"pass", "layer", "cpu_1t_images_per_s", "cpu_all_images_per_s", "thread_gain",
               "cpu_best_config", "cpu_best_images_per_s",
               "<config>_images_per_s", "<config>_vs_1t", "<config>_vs_all", "<config>_vs_best", ...}],
     "cpu_baselines": studies._common.cpu_baseline_rows(df)}

    `_vs_1t` and `_vs_all` are over stock eager NCHW (1 thread, all threads); `_vs_best` is over the fastest CPU
    configuration measured for that layer and pass (any baseline, any thread count), named in `cpu_best_config`."""
    ok = ok_rows(df)
    cpu_rows = ok[(ok.device == "cpu") & (ok.backend == STOCK_CPU)]
    gpu_rows = ok[ok.device.str.startswith("cuda")]
    one = cpu_rows[cpu_rows.threads == 1]
    many = cpu_rows[cpu_rows.threads != 1]
    if many.empty:  # a one-core machine (or --threads 1): "all threads" is one thread
        many = one
    gpu_device = gpu_rows.device.iloc[0] if len(gpu_rows) else None
    if gpu_device is not None:
        gpu_rows = gpu_rows[gpu_rows.device == gpu_device]
    cpu_name = cpu_rows.device_name.dropna()
    gpu_name = gpu_rows.device_name.dropna()
    info = {
        "cpu": {"device": "cpu", "name": cpu_name.iloc[0] if len(cpu_name) else None,
                "batch": int(cpu_rows.batch.iloc[0]) if len(cpu_rows) else None,
                "threads_all": int(many.threads.max()) if len(many) and many.threads.notna().any() else None},
        "gpu": {"device": gpu_device, "name": gpu_name.iloc[0] if len(gpu_name) else None,
                "batch": int(gpu_rows.batch.iloc[0]) if len(gpu_rows) else None},
        "rows": [],
        "cpu_baselines": cpu_baseline_rows(df),
    }
    best_cpu = {(r["layer"], r["pass"]): r["best"] for r in info["cpu_baselines"] if r["best"]}
    layers = list(dict.fromkeys(df.layer))
    for pass_name in PASSES:
        for layer in layers:
            c1, _ = _rate(one, layer=layer, pass_name=pass_name)
            cn, _ = _rate(many, layer=layer, pass_name=pass_name)
            best = best_cpu.get((layer, pass_name))
            cb = best["images_per_s"] if best else None
            row = {"pass": pass_name, "layer": layer, "cpu_1t_images_per_s": c1, "cpu_all_images_per_s": cn,
                   "thread_gain": ratio(cn, c1),
                   "cpu_best_config": cpu_config_label(best["backend"], best["threads"]) if best else None,
                   "cpu_best_images_per_s": cb}
            for backend, dtype in GPU_CONFIGS:
                key = config_label(backend, dtype)
                g, _ = _rate(gpu_rows, layer=layer, pass_name=pass_name, backend=backend, dtype=dtype)
                row[f"{key}_images_per_s"] = g
                row[f"{key}_vs_1t"] = ratio(g, c1)
                row[f"{key}_vs_all"] = ratio(g, cn)
                row[f"{key}_vs_best"] = ratio(g, cb)
            if any(v is not None for k, v in row.items() if k not in ("pass", "layer")):
                info["rows"].append(row)
    return info


def _pair(a, b) -> str:
    if a is None and b is None:
        return "-"
    return f"{fmt_x(a)} / {fmt_x(b)}"


def comparison_rows(info: dict) -> list[dict]:
    """This run's whole-network train_step ratios (from `info`, the result of speedup_table), then the published
    ratios, each with what it compares and its source."""
    cpu, gpu = info["cpu"], info["gpu"]
    n = cpu["threads_all"]
    train = next((r for r in info["rows"] if r["layer"] == NETWORK and r["pass"] == "train_step"), None)
    rows = []
    if train:
        where = (f"{gpu['name'] or gpu['device']} b{gpu['batch']} vs {cpu['name'] or 'CPU'} b{cpu['batch']}, "
                 "whole network, train_step")
        for backend, dtype in GPU_CONFIGS:
            label = config_label(backend, dtype)
            a, b = train.get(f"{label}_vs_1t"), train.get(f"{label}_vs_all")
            if a is None and b is None:
                continue
            rows.append({"what": f"this run: GPU {label} vs CPU 1 / {n} threads", "ratio": _pair(a, b),
                         "compares": where, "source": "measured in this run"})
    claim, cb = figure("claim_gpu_vs_cpu_speedup"), figure("convnet_benchmarks_cpu_vs_cudnn")
    mc, mcd = figure("matconvnet_gpu_vs_cpu"), figure("matconvnet_cudnn_vs_cpu")
    jj = figure("cnn_benchmarks_gpu_vs_cpu")
    rows += [
        {"what": "\"up to one hundred times faster\"", "ratio": fmt_x(claim.value),
         "compares": "GPU vs CPU training; CPU baseline not stated", "source": claim.source},
        {"what": "Caffe CPU vs cuDNN R4 fp32", "ratio": fmt_x(cb.value),
         "compares": "4920 ms (i7-5930K) vs 81 ms (Titan X), owt, b128, fwd+bwd (derived)", "source": cb.source},
        {"what": "MatConvNet CPU vs GPU / cuDNN", "ratio": f"{fmt_x(mc.value)} / {fmt_x(mcd.value)}",
         "compares": "22 vs 192 / 264 images/s, AlexNet b256, Titan Black (derived)", "source": mc.source},
        {"what": "cnn-benchmarks", "ratio": f"{jj.low:g}-{jj.high:g}x",
         "compares": "Pascal Titan X cuDNN vs dual Xeon E5-2630 v3, VGG/ResNet", "source": jj.source},
    ]
    return rows


def _range_lines(info: dict, labels: list[str]) -> list[str]:
    """The ratio's range: per layer and pass, each measured GPU configuration over stock eager (all threads) and over
    the best CPU configuration, which is named; and the whole network's in a sentence."""
    n = info["cpu"]["threads_all"]
    shown = [label for label in labels if any(r.get(f"{label}_vs_best") is not None for r in info["rows"])]
    rows = [r for r in info["rows"] if r.get("cpu_best_config")]
    if not rows:
        return []
    table = [{"layer": r["layer"], "pass": r["pass"], "best": r["cpu_best_config"],
              "best_rate": r["cpu_best_images_per_s"], "stock_rate": r["cpu_all_images_per_s"],
              **{label: _pair(r.get(f"{label}_vs_all"), r.get(f"{label}_vs_best")) for label in shown}}
             for r in rows]
    columns = [("layer", "layer", None), ("pass", "pass", None), ("best", "best CPU configuration", None),
               ("best_rate", "best img/s", lambda v: fmt_num(v, ",.1f")),
               ("stock_rate", f"stock {n or 'all'}t img/s", lambda v: fmt_num(v, ",.1f"))]
    columns += [(label, label, None) for label in shown]
    head = ("The ratio's range: GPU over stock eager on all threads / over the best CPU configuration" if shown else
            "The best CPU configuration per layer and pass (no GPU row in this run, so no GPU ratio against it):")
    lines = ["", head, format_table(table, columns)]
    fp32 = config_label(*BASELINE_GPU)
    for r in rows:
        if r["layer"] == NETWORK and r.get(f"{fp32}_vs_best") is not None:
            lines.append(f"Whole network, {r['pass']}: the GPU in IEEE float32 is {fmt_x(r[f'{fp32}_vs_all'])} stock "
                         f"eager on all {n} threads and {fmt_x(r[f'{fp32}_vs_best'])} the best CPU configuration "
                         f"({r['cpu_best_config']}).")
    return lines


def summarize(df, options: StudyOptions) -> Summary:
    info = speedup_table(df)
    cpu, gpu = info["cpu"], info["gpu"]
    n = cpu["threads_all"]
    lines = [f"speedup2012: GPU over CPU throughput (images/s over images/s), {options.variant}, from this run's "
             "measured rows"]
    lines.append(f"CPU: {cpu['name'] or 'not measured'}, stock torch eager float32, batch {cpu['batch']}, 1 thread "
                 f"and {n or '?'} threads (all). GPU: "
                 + (f"{device_title(df, gpu['device'])}, batch {gpu['batch']}" if gpu["device"] else "not measured"))
    labels = [config_label(b, d) for b, d in GPU_CONFIGS]
    for pass_name in PASSES:
        rows = [r for r in info["rows"] if r["pass"] == pass_name]
        if not rows:
            continue
        table_rows = []
        for r in rows:
            t = {"layer": r["layer"], "c1": r["cpu_1t_images_per_s"], "cn": r["cpu_all_images_per_s"],
                 "gain": r["thread_gain"]}
            for label in labels:
                t[label] = _pair(r[f"{label}_vs_1t"], r[f"{label}_vs_all"])
            table_rows.append(t)
        columns = [("layer", "layer", None), ("c1", "CPU 1t img/s", lambda v: fmt_num(v, ",.1f")),
                   ("cn", f"CPU {n or 'all'}t img/s", lambda v: fmt_num(v, ",.1f")),
                   ("gain", f"{n or 'all'}t/1t", fmt_x)]
        columns += [(label, label, None) for label in labels if any(t[label] != "-" for t in table_rows)]
        lines += ["", f"{pass_name}: GPU speedup over 1 CPU thread / over {n or 'all'} CPU threads", format_table(
            table_rows, columns)]
    baselines = cpu_baseline_text(info["cpu_baselines"], f"CPU baselines, float32, batch {cpu['batch']}, measured "
                                                          "side by side:")
    if baselines:
        lines += ["", baselines]
    lines += _range_lines(info, labels)
    net = {r["pass"]: r for r in info["rows"] if r["layer"] == NETWORK}
    train = net.get("train_step")
    fp32 = config_label(*BASELINE_GPU)
    lines.append("")
    if train and train.get(f"{fp32}_vs_all") is not None:
        a, b = train[f"{fp32}_vs_1t"], train[f"{fp32}_vs_all"]
        lines.append(f"Whole network, train_step: the GPU in float32 without TF32 (as in 2012) trains "
                     f"{fmt_num(train[f'{fp32}_images_per_s'], ',.0f')} images/s, {fmt_x(a)} one CPU thread and "
                     f"{fmt_x(b)} all {n} threads of this CPU.")
        extras = [f"{label} {fmt_x(train[f'{label}_vs_all'])}" for label in labels[1:]
                  if train.get(f"{label}_vs_all") is not None]
        if extras:
            lines.append(f"Against all {n} CPU threads, other GPU configurations: " + ", ".join(extras) + ".")
    else:
        lines.append("No whole-network train_step GPU measurement in this run, so no GPU-vs-CPU ratio (see the "
                     "cases without a speed result below).")
    if train and train.get("thread_gain") is not None:
        g = train["thread_gain"]
        lines.append(f"The CPU baseline alone moves the ratio: on this CPU ({cpu['name']}) {n} threads train at "
                     f"{fmt_x(g)} the throughput of 1 thread, so any GPU's ratio against one thread is {fmt_x(g)} its "
                     f"ratio against all {n}. A published speedup is only as meaningful as its CPU baseline (cores, "
                     "threads, BLAS library, era): against a many-core server's full CPU the same GPU's ratio shrinks "
                     "by that server's thread scaling.")
        if g < 1:
            lines.append(f"{n} threads ran slower than 1: the cores were busy with other work during the run, or the "
                         "batch is too small to share between threads; an idle machine gives a fairer baseline.")
    comparisons = comparison_rows(info)
    lines += ["", "This run beside the published GPU-vs-CPU ratios (theirs: other hardware, software and networks; "
                  "cited, not measured here):",
              format_table(comparisons, [("what", "ratio of", None), ("ratio", "ratio", None),
                                         ("compares", "what it compares", None), ("source", "source", None)])]
    lines.append(f"For scale, the paper's training time: {cite('paper_training_days')}.")
    lines += [""] + not_measured(df)
    data = dict(info, comparisons=comparisons)
    return Summary("\n".join(line for line in lines).strip(), data)


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize)
