"""train_time: the days it would take to train AlexNet as the paper did, projected from measured throughput, beside
the paper's five to six days on two GTX 580s, and the GTX 580's roofline lower bound.

1. Projection. From each measured whole-network train_step row (images/s), the time for the paper's schedule: 90 epochs
   over 1.2M images (figures from perfkit.app.published, with their source), i.e. 108M images / (images/s). This counts
   the training step only (forward, loss, backward, SGD with momentum and weight decay): no data loading, augmentation
   or evaluation, which the paper's wall time included.
2. The GTX 580 bound. From the card's published specs (1.581 TFLOP/s FP32, 192.4 GB/s) and perfkit's cost model of the
   paper's network (alexnet2012) at batch 128 in float32: each layer's train_step takes at least
   max(FLOPs / peak, minimum bytes / bandwidth); the sum over layers is the shortest a step could take on one card.
   Two cards: the paper split every layer's kernels between two GPUs, so at best each card does half of every layer at
   the same time and communication is free; the two-card bound is half the one-card time (ideal model parallelism;
   the real split also exchanged activations over PCIe at some layers, which only lengthens it). Setting the paper's
   implied 208-250 images/s against that bound shows how close cuda-convnet ran to its cards' limits.

Grids: whole network, train_step.
- GPU, batch 128 (the paper's): torch fp32 with TF32 off (as in 2012), tf32, bf16 under autocast and native bf16;
  full: also compile fp32 and bf16; triton fp32 (skipped until its backward kernels land).
- CPU: torch fp32 with all threads, batch 32 (quick: 4); full: also 1 thread.
"""
from __future__ import annotations

from perfkit.cases import NETWORK, Case
from perfkit.app.published import cite, figure
from perfkit.app.tables import fmt_num, fmt_si, format_table
from perfkit.specs import build_network
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (choose, config_label, device_title, is_autocast, not_measured, num, ok_rows,
                                     plan_devices)

NAME = "train_time"
DESCRIPTION = ("days to train 90 epochs of 1.2M images from measured train-step throughput, vs the paper's 5-6 days "
               "on two GTX 580s and the GTX 580 roofline bound")
SECONDS_PER_DAY = 86_400
GTX580_VARIANT = "alexnet2012"  # the bound is for the paper's network
GTX580_BATCH = 128
GTX580_DTYPE = "float32"
#: (backend, dtype, autocast)
GPU_CONFIGS = {"quick": (("torch", "float32", False), ("torch", "tf32", False), ("torch", "bfloat16", True),
                         ("triton", "float32", False)),
               "full": (("torch", "float32", False), ("torch", "tf32", False), ("torch", "bfloat16", True),
                        ("torch", "bfloat16", False), ("compile", "float32", False), ("compile", "bfloat16", False),
                        ("triton", "float32", False))}
GPU_BATCH = 128
CPU_BATCH = {"quick": 4, "full": 32}


def cases(options: StudyOptions):
    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="asked")
    out = []
    for gpu in gpus:
        for backend, dtype, autocast in choose(options, "gpu_configs", GPU_CONFIGS[form]):
            out.append(Case(variant=options.variant, layer=NETWORK, backend=backend, device=gpu, dtype=dtype,
                            batch=options.batch or GPU_BATCH, pass_name="train_step",
                            options=(("autocast", True),) if autocast else ()))
    for cpu in cpus:
        for threads in dict.fromkeys([options.threads] + ([1] if not options.quick else [])):
            out.append(Case(variant=options.variant, layer=NETWORK, backend="torch", device=cpu, dtype="float32",
                            batch=options.batch or CPU_BATCH[form], pass_name="train_step", threads=threads))
    return out


def schedule_images() -> float:
    """Images the paper's schedule trains on: epochs x training-set size."""
    return figure("paper_epochs").value * figure("paper_train_images").value


def days_for(images_per_s: float) -> float:
    return schedule_images() / images_per_s / SECONDS_PER_DAY


def gtx580_bound(variant: str = GTX580_VARIANT, batch: int = GTX580_BATCH) -> dict:
    """The GTX 580 roofline lower bound on the paper's train step (see the module docstring), per layer and total."""
    peak = figure("gtx580_fp32_flops_per_s").value
    bandwidth = figure("gtx580_bytes_per_s").value
    layers = []
    for spec in build_network(variant).layers:
        cost = spec.cost("train_step", batch, GTX580_DTYPE)
        t_compute, t_memory = cost.flops / peak, cost.bytes_min / bandwidth
        layers.append({"layer": spec.name, "flops": cost.flops, "bytes_min": cost.bytes_min,
                       "t_compute_s": t_compute, "t_memory_s": t_memory, "t_bound_s": max(t_compute, t_memory),
                       "limit": "compute" if t_compute >= t_memory else "memory"})
    one_card_s = sum(layer["t_bound_s"] for layer in layers)
    gpus = figure("paper_gpus").value
    two_card_s = one_card_s / gpus
    bound_ips = batch / two_card_s
    paper_ips = figure("paper_images_per_s")
    return {"variant": variant, "batch": batch, "dtype": GTX580_DTYPE, "peak_flops_per_s": peak,
            "bytes_per_s": bandwidth, "layers": layers, "one_card_step_s": one_card_s,
            "one_card_images_per_s": batch / one_card_s, "two_card_step_s": two_card_s,
            "two_card_images_per_s": bound_ips, "two_card_days": days_for(bound_ips),
            "paper_images_per_s": [paper_ips.low, paper_ips.high],
            "paper_fraction_of_bound": [paper_ips.low / bound_ips, paper_ips.high / bound_ips]}


def projections(df) -> list[dict]:
    """One dict per measured (ok) whole-network train_step row: throughput, days for the paper's schedule, and how
    that compares with the paper's 5-6 days."""
    paper_days = figure("paper_training_days")
    out = []
    for _, r in ok_rows(df).iterrows():
        if r.layer != NETWORK or r.pass_name != "train_step":
            continue
        ips = num(r.images_per_s)
        if not ips:
            continue
        days = days_for(ips)
        out.append({"device": r.device, "device_name": r.device_name,
                    "config": config_label(r.backend, r["dtype"], is_autocast(r)),
                    "threads": None if r.device.startswith("cuda") else num(r.threads), "batch": int(r.batch),
                    "images_per_s": ips, "epoch_hours": figure("paper_train_images").value / ips / 3600,
                    "days": days, "vs_paper": [paper_days.low / days, paper_days.high / days]})
    return out


def summarize(df, options: StudyOptions) -> Summary:
    rows = projections(df)
    bound = gtx580_bound()
    images = schedule_images()
    lines = [f"train_time: the paper's schedule, {figure('paper_epochs').value:g} epochs x "
             f"{figure('paper_train_images').value / 1e6:g}M images = {images / 1e6:g}M images "
             f"({figure('paper_epochs').source}), from this run's measured train-step throughput"]
    if rows:
        for r in rows:
            r["where"] = (f"{device_title(df, r['device'])}" +
                          (f", {int(r['threads'])} thread{'s' if r['threads'] != 1 else ''}" if r["threads"] else ""))
        lines.append(format_table(rows, [
            ("where", "device", None), ("config", "config", None), ("batch", "batch", None),
            ("images_per_s", "img/s", lambda v: fmt_num(v, ",.1f")),
            ("epoch_hours", "h/epoch", lambda v: fmt_num(v, ",.2f")),
            ("days", "days for 90 epochs", lambda v: fmt_num(v, ",.2f")),
            ("vs_paper", "vs paper's 5-6 days", lambda v: f"{v[0]:.3g}-{v[1]:.3g}x faster" if v[0] >= 1 else
             f"{1 / v[1]:.3g}-{1 / v[0]:.3g}x slower")]))
        lines.append("Training step only (no data loading, augmentation or evaluation, which the paper's days "
                     "included); dropout on, SGD with momentum and weight decay as in the paper.")
    else:
        lines.append("No whole-network train_step row was measured in this run, so there is no projection.")
    lines += ["", f"The paper: {cite('paper_training_days')} on {figure('paper_gpus').value:g} GTX 580 3GB GPUs, "
                  f"i.e. {figure('paper_images_per_s').text()} ({figure('paper_images_per_s').note}; derived)."]
    lo, hi = bound["paper_fraction_of_bound"]
    lines += ["", f"GTX 580 roofline bound for the paper's network ({bound['variant']}, batch {bound['batch']}, "
                  f"float32), from {cite('gtx580_fp32_flops_per_s')} and {cite('gtx580_bytes_per_s')}, and "
                  "perfkit's cost model: per layer max(FLOPs / peak, minimum bytes / bandwidth), summed:",
              format_table(bound["layers"], [
                  ("layer", "layer", None), ("flops", "train FLOPs", fmt_si),
                  ("bytes_min", "min bytes", lambda v: fmt_si(v, "B")),
                  ("t_compute_s", "compute ms", lambda v: f"{v * 1e3:.2f}"),
                  ("t_memory_s", "memory ms", lambda v: f"{v * 1e3:.2f}"),
                  ("limit", "limited by", None)]),
              f"One card: at least {bound['one_card_step_s'] * 1e3:.0f} ms per step of {bound['batch']}, at most "
              f"{bound['one_card_images_per_s']:.0f} images/s. Two cards, splitting every layer's kernels evenly with "
              f"free communication (the ideal of the paper's model parallelism): at least "
              f"{bound['two_card_step_s'] * 1e3:.0f} ms, at most {bound['two_card_images_per_s']:.0f} images/s, "
              f"{bound['two_card_days']:.2f} days for the schedule.",
              f"cuda-convnet's implied {figure('paper_images_per_s').text()} is {lo * 100:.0f}-{hi * 100:.0f}% of "
              "that two-card bound (and the paper's days include data loading and evaluation, so the kernels ran "
              "somewhat closer to it)."]
    fp32 = [r for r in rows if r["config"] == "torch fp32" and r["device"].startswith("cuda")]
    if fp32:
        r = fp32[0]
        times = r["images_per_s"] / bound["two_card_images_per_s"]
        lines.append(f"This run's GPU in float32 without TF32 trains {times:.3g}x as fast as the two-GTX-580 bound.")
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"projections": rows, "gtx580_bound": bound,
                                               "schedule_images": images})


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize)
