"""headline: the table a first minute on a GPU should produce, in the order that gives the most per minute.

The alexnet2012 whole network at the paper's batch of 128, forward and train_step, on the GPU, for torch eager,
Triton and torch.compile, each in float32 with TF32 off (IEEE), in TF32 and in bfloat16; the machine's own CPU (stock
torch eager float32, all threads) for the GPU-vs-CPU ratio; and the kernelbench variant's forward at KernelBench's
batch of 1024, torch eager against torch.compile, with KernelBench's published H100 times beside it.

Cases run in value order, so a budget that ends early keeps the most telling ones: eager and Triton in bfloat16, TF32
and float32 (they compile nothing, or only Triton binaries the runner precompiles in parallel), then the CPU, then
torch.compile (each graph compiles on the host, tens of seconds per shape), then kernelbench.

With `extra["energy"]` set (the campaign's energy phase) the same GPU cases, train steps first, and the CPU's, are
measured again in a run of their own with the sustained energy window, for J/image.

The summary: per pass and dtype, eager's time and the speedups of Triton and compile over it (eager time / backend
time, measured side by side in this run); the GPU-vs-CPU throughput ratio of every GPU configuration; J/image where
this run measured energy; kernelbench's times beside the published ones.
"""
from __future__ import annotations

from perfkit.cases import NETWORK, Case
from perfkit.app.published import cite, figure
from perfkit.app.tables import fmt_ms, fmt_num, fmt_speedup, fmt_times, format_table
from perfkit.study import QUICK_TIMING, Study, StudyOptions, Summary
from perfkit.studies._common import config_label, device_title, first, fmt_x, not_measured, num, ok_rows, plan_devices
from perfkit.measure.timer import TimingPolicy

NAME = "headline"
DESCRIPTION = ("the first GPU minute: the network at batch 128, eager/triton/compile x fp32 (IEEE)/tf32/bf16, "
               "forward and train_step, the CPU ratio, and kernelbench against its published H100 times")
VARIANT = "alexnet2012"
BATCH = 128
DTYPES = ("bfloat16", "tf32", "float32")  # value order: what today's hardware is for, then TF32, then the 2012 one
PASSES = ("train_step", "forward")
BACKENDS = ("torch", "triton", "compile")
CPU_BATCH = {"quick": 4, "full": 32}
KERNELBENCH = "kernelbench"
KERNELBENCH_DTYPES = ("float32", "tf32")
#: Enough repetitions for a median of a millisecond-scale step, short enough for a five-minute budget.
TIMING = TimingPolicy(warmup=1, min_reps=5, min_time_s=0.5)


def timing(options: StudyOptions) -> TimingPolicy:
    return QUICK_TIMING if options.quick else TIMING


def cases(options: StudyOptions) -> list[Case]:
    """The headline cases in value order (see the module docstring)."""
    cpus, gpus = plan_devices(options, cpu="always")
    form = "quick" if options.quick else "full"
    energy = bool(options.extra.get("energy"))
    gpu_first, compiled, bench = [], [], []
    for gpu in gpus:
        for dtype in DTYPES:
            for pass_name in PASSES:
                for backend in BACKENDS:
                    case = Case(variant=VARIANT, layer=NETWORK, backend=backend, device=gpu, dtype=dtype, batch=BATCH,
                                pass_name=pass_name)
                    (compiled if backend == "compile" else gpu_first).append(case)
        for dtype in KERNELBENCH_DTYPES:
            for backend in ("torch", "compile"):
                bench.append(Case(variant=KERNELBENCH, layer=NETWORK, backend=backend, device=gpu, dtype=dtype,
                                  batch=int(figure("kernelbench_batch").value), pass_name="forward"))
    cpu = [Case(variant=VARIANT, layer=NETWORK, backend="torch", device=c, dtype="float32",
                batch=options.batch or CPU_BATCH[form], pass_name=pass_name, threads=options.threads)
           for c in cpus for pass_name in PASSES]
    if energy:  # J/image: the train steps first, kernelbench is left out (a comparison of times)
        ordered = sorted(gpu_first + compiled, key=lambda c: (PASSES.index(c.pass_name), DTYPES.index(c.dtype),
                                                               BACKENDS.index(c.backend)))
        return ordered + cpu
    return gpu_first + cpu + compiled + bench


def _time(df, **where):
    row = first(df, **where)
    return None if row is None else num(row.time_median_s)


def headline_rows(df) -> list[dict]:
    """Per GPU, pass and dtype: eager's time and images/s, Triton's and compile's speedups over it."""
    ok = ok_rows(df)
    net = ok[(ok.layer == NETWORK) & (ok.variant == VARIANT)] if len(ok) else ok
    out = []
    gpus = sorted({d for d in net.device if str(d).startswith("cuda")}) if len(net) else []
    for device in gpus:
        for pass_name in PASSES:
            for dtype in DTYPES:
                eager = _time(net, device=device, pass_name=pass_name, dtype=dtype, backend="torch")
                triton = _time(net, device=device, pass_name=pass_name, dtype=dtype, backend="triton")
                compiled = _time(net, device=device, pass_name=pass_name, dtype=dtype, backend="compile")
                if eager is None and triton is None and compiled is None:
                    continue
                out.append({"device": device, "pass": pass_name, "dtype": dtype, "eager_s": eager,
                            "eager_img_s": BATCH / eager if eager else None, "triton_s": triton, "compile_s": compiled,
                            "triton_x": eager / triton if eager and triton else None,
                            "compile_x": eager / compiled if eager and compiled else None})
    return out


def cpu_rows(df) -> list[dict]:
    """The CPU's whole-network throughput per pass, the denominator of the GPU-vs-CPU ratio."""
    out = []
    ok = ok_rows(df)
    for pass_name in PASSES:
        row = first(ok, device="cpu", pass_name=pass_name, backend="torch", dtype="float32", layer=NETWORK,
                    variant=VARIANT) if len(ok) else None
        if row is not None and num(row.images_per_s):
            out.append({"pass": pass_name, "img_s": row.images_per_s, "batch": int(row.batch),
                        "threads": int(row.threads) if num(row.threads) else "?"})
    return out


def cpu_ratio_rows(df) -> list[dict]:
    """Every measured GPU configuration's images/s over the CPU's (stock eager float32, all threads), per pass."""
    ok = ok_rows(df)
    net = ok[(ok.layer == NETWORK) & (ok.variant == VARIANT)] if len(ok) else ok
    out = []
    for pass_name in PASSES:
        cpu = first(net, device="cpu", pass_name=pass_name, backend="torch", dtype="float32")
        if cpu is None or not num(cpu.images_per_s):
            continue
        gpu = net[net.device.astype(str).str.startswith("cuda") & (net.pass_name == pass_name)]
        for r in gpu.itertuples():
            out.append({"pass": pass_name, "config": config_label(r.backend, r.dtype), "gpu_img_s": r.images_per_s,
                        "cpu_img_s": cpu.images_per_s, "x": r.images_per_s / cpu.images_per_s,
                        "cpu": f"{int(cpu.threads)} threads, batch {int(cpu.batch)}"})
    return out


def energy_rows(df) -> list[dict]:
    ok = ok_rows(df)
    e = ok[ok.energy_per_image_j.notna()] if len(ok) and "energy_per_image_j" in ok else ok.iloc[0:0]
    return [{"device": r.device, "pass": r.pass_name, "config": config_label(r.backend, r.dtype),
             "j_img": r.energy_per_image_j, "w": r.power_mean_w} for r in e.itertuples()]


def kernelbench_rows(df) -> list[dict]:
    ok = ok_rows(df)
    kb = ok[(ok.variant == KERNELBENCH) & (ok.layer == NETWORK)] if len(ok) else ok
    published = {"torch": figure("kernelbench_h100_eager_ms").value, "compile": figure("kernelbench_h100_compile_ms").value}
    return [{"device": r.device, "config": config_label(r.backend, r.dtype), "ms": r.time_median_s * 1e3,
             "published_ms": published.get(r.backend), "ratio": published[r.backend] / (r.time_median_s * 1e3)}
            for r in kb.itertuples() if r.backend in published]


def summarize(df, options: StudyOptions) -> Summary:
    energy = bool(options.extra.get("energy"))
    lines = [f"headline{' energy' if energy else ''}: {VARIANT} whole network, batch {BATCH} on the GPU, from this "
             "run's measured rows"]
    rows = headline_rows(df)
    if rows:
        lines += [f"GPU: {device_title(df, rows[0]['device'])}. Speedup over eager = eager time / backend time "
                  "(above 1 is faster); float32 is IEEE (TF32 off), tf32 has TF32 tensor cores on.",
                  format_table(rows, [("pass", "pass", None), ("dtype", "dtype", None),
                                      ("eager_s", "eager ms", fmt_ms),
                                      ("eager_img_s", "eager img/s", fmt_num),
                                      ("triton_x", "triton/eager", fmt_speedup),
                                      ("compile_x", "compile/eager", fmt_speedup)])]
    else:
        lines.append("No GPU whole-network speed result in this run.")
    cpu = cpu_rows(df)
    if cpu:
        lines += ["", "This machine's CPU (stock torch eager float32, all threads): " + "; ".join(
            f"{r['pass']} {fmt_num(r['img_s'], ',.1f')} img/s at batch {r['batch']} on {r['threads']} threads"
            for r in cpu) + "."]
    ratios = cpu_ratio_rows(df)
    if ratios:
        lines += ["", "GPU over this machine's CPU (stock torch eager float32, all threads): images/s over images/s. "
                  f"Published: {cite('claim_gpu_vs_cpu_speedup')}.",
                  format_table(ratios, [("pass", "pass", None), ("config", "GPU configuration", None),
                                        ("gpu_img_s", "GPU img/s", fmt_num), ("cpu_img_s", "CPU img/s",
                                                                              lambda v: fmt_num(v, ",.1f")),
                                        ("x", "GPU/CPU", fmt_times), ("cpu", "CPU", None)])]
    joules = energy_rows(df)
    if joules:
        lines += ["", "Energy over sustained windows (NVML on the GPU, RAPL on the CPU):",
                  format_table(joules, [("device", "device", None), ("pass", "pass", None),
                                        ("config", "configuration", None), ("j_img", "J/image", lambda v: f"{v:.4g}"),
                                        ("w", "mean W", lambda v: "-" if num(v) is None else f"{v:.0f}")])]
    elif energy:
        notes = df.energy_note.dropna() if "energy_note" in df else []
        lines.append("No energy measured" + (f": {notes.iloc[0]}" if len(notes) else "."))
    bench = kernelbench_rows(df)
    if bench:
        lines += ["", f"kernelbench forward, batch {int(figure('kernelbench_batch').value)}, against the published "
                  "H100 SXM times (torch 2.5 defaults: TF32 convolutions, IEEE matmuls, so between this run's float32 "
                  "and tf32 rows); ratio = published ms / measured ms (above 1: this machine is faster).",
                  format_table(bench, [("device", "device", None), ("config", "configuration", None),
                                       ("ms", "measured ms", lambda v: f"{v:.2f}"),
                                       ("published_ms", "published H100 ms", lambda v: f"{v:.1f}"),
                                       ("ratio", "published/measured", fmt_x)])]
    missing = not_measured(df)
    if missing:
        lines += [""] + missing
    return Summary("\n".join(lines), {"headline": rows, "cpu": cpu, "gpu_vs_cpu": ratios, "energy": joules,
                                      "kernelbench": bench})


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize, timing=timing)
