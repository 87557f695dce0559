"""augmentation: can the CPU feed the GPU? AlexNet's training augmentation in images/s, against the train step.

The paper augmented on the CPU: "the transformed images are generated in Python code on the CPU while the GPU is
training on the previous batch of images. So these data augmentation schemes are, in effect, computationally free"
(Krizhevsky, Sutskever, Hinton 2012, section 4.1). Today's GPUs train far faster than two GTX 580s; this study measures
whether the same augmentation still keeps up.

What is measured (perfkit.workloads.augment has the transform, the images and the PCA):
- the augmentation of a batch of 128 distinct 256x256 uint8 images cut from scikit-learn's sample photographs
  (china.jpg, flower.jpg): random 224x224 crop, mirror with probability 1/2, PCA lighting noise computed from those
  photographs' pixels, per-channel normalisation, to float32 NCHW;
  - torch operators on the CPU, image by image, with 1 thread and with all threads (--threads N sets "all");
  - on the GPU, the fused Triton kernel (perfkit.kernels.augment) and the same torch operators;
  - full form: the kernel also writes channels_last and bfloat16, and reads float32 images;
- the whole alexnet2012 network's train_step at the paper's batch of 128 on the GPU: torch fp32 with TF32 off (as in
  2012) and bf16 under autocast (full: also TF32): the rate the augmentation has to keep up with;
- on a machine without a GPU (or with --device cpu), the CPU's own train step (all threads; batch 4, full 32), so the
  summary can say what share of a CPU step the augmentation would take; the GPU cases are stored as skipped with the
  reason, and the summary says the comparison needs a GPU.
Every augmentation row is checked against a float64 torch reference with the same random draws before it is timed.
Not included: decoding JPEG files and copying batches to the GPU, which a real input pipeline adds.
"""
from __future__ import annotations

import math

from perfkit.cases import AUGMENT, NETWORK, Case
from perfkit.app.published import figure
from perfkit.app.tables import fmt_num, format_table, ratio
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (choose, config_label, is_autocast, not_measured, num, ok_rows,
                                     options_of, plan_devices)

NAME = "augmentation"
DESCRIPTION = ("AlexNet's augmentation (crop, mirror, PCA lighting) in images/s: torch on the CPU (1 thread, all) and "
               "a fused Triton kernel on the GPU, against the GPU's train step: can the CPU feed the GPU?")
AUGMENT_BATCH = 128
GPU_TRAIN_BATCH = 128
CPU_TRAIN_BATCH = {"quick": 4, "full": 32}
#: The stored images and the output the network reads: uint8 HWC images in, float32 NCHW out.
PLAIN = {"input": "uint8", "layout": "nchw"}
#: Kernel variants the full form adds on the GPU: (input, layout, output dtype).
GPU_KERNEL_VARIANTS = {"quick": (("uint8", "nchw", "float32"),),
                       "full": (("uint8", "nchw", "float32"), ("uint8", "channels_last", "float32"),
                                ("uint8", "channels_last", "bfloat16"), ("float32", "nchw", "float32"))}
#: The GPU train steps the augmentation is set against: (dtype, autocast).
GPU_TRAIN_CONFIGS = {"quick": (("float32", False), ("bfloat16", True)),
                     "full": (("float32", False), ("tf32", False), ("bfloat16", True))}
PAPER_QUOTE = ("\"the transformed images are generated in Python code on the CPU while the GPU is training on the "
               "previous batch of images. So these data augmentation schemes are, in effect, computationally free\" "
               "(Krizhevsky, Sutskever, Hinton 2012, section 4.1)")


def augment_case(variant: str, backend: str, device: str, batch: int, threads=None, input="uint8", layout="nchw",
                 dtype="float32") -> Case:
    return Case(variant=variant, layer=AUGMENT, backend=backend, device=device, dtype=dtype, batch=batch,
                pass_name="forward", threads=threads, options=(("input", input), ("layout", layout)))


def cases(options: StudyOptions):
    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="always")
    cpu_alone, _ = plan_devices(options, cpu="alone")  # no GPU asked for: the CPU's own train step too
    batch = options.batch or AUGMENT_BATCH
    out = []
    for cpu in cpus:
        for threads in dict.fromkeys((1, options.threads)):
            out.append(augment_case(options.variant, "torch", cpu, batch, threads=threads))
    for cpu in cpu_alone:
        out.append(Case(variant=options.variant, layer=NETWORK, backend="torch", device=cpu, dtype="float32",
                        batch=options.batch or CPU_TRAIN_BATCH[form], pass_name="train_step",
                        threads=options.threads))
    for gpu in gpus:
        for input, layout, dtype in choose(options, "kernel_variants", GPU_KERNEL_VARIANTS[form]):
            out.append(augment_case(options.variant, "triton", gpu, batch, input=input, layout=layout, dtype=dtype))
        out.append(augment_case(options.variant, "torch", gpu, batch))
        for dtype, autocast in GPU_TRAIN_CONFIGS[form]:
            out.append(Case(variant=options.variant, layer=NETWORK, backend="torch", device=gpu, dtype=dtype,
                            batch=options.batch or GPU_TRAIN_BATCH, pass_name="train_step",
                            options=(("autocast", True),) if autocast else ()))
    return out


# -- summary -----------------------------------------------------------------------------------------------------------
def _is_plain(row) -> bool:
    opts = options_of(row)
    return opts.get("input") == PLAIN["input"] and opts.get("layout") == PLAIN["layout"] and row["dtype"] == "float32"


def augment_rows(df) -> list[dict]:
    """One dict per measured (ok) augmentation row."""
    out = []
    for _, r in ok_rows(df).iterrows():
        if r.layer != AUGMENT:
            continue
        opts = options_of(r)
        out.append({"device": r.device, "device_name": r.device_name, "backend": r.backend,
                    "threads": None if r.device.startswith("cuda") else num(r.threads), "batch": int(r.batch),
                    "input": opts.get("input"), "layout": opts.get("layout"), "dtype": r["dtype"],
                    "plain": _is_plain(r), "images_per_s": num(r.images_per_s), "time_s": num(r.time_median_s),
                    "error_rel": num(r.error_rel)})
    return out


def train_rows(df) -> list[dict]:
    """One dict per measured (ok) whole-network train_step row."""
    out = []
    for _, r in ok_rows(df).iterrows():
        if r.layer != NETWORK or r.pass_name != "train_step":
            continue
        out.append({"device": r.device, "device_name": r.device_name,
                    "config": config_label(r.backend, r["dtype"], is_autocast(r)),
                    "threads": None if r.device.startswith("cuda") else num(r.threads), "batch": int(r.batch),
                    "images_per_s": num(r.images_per_s)})
    return out


def verdict(aug: list[dict], train: list[dict]) -> dict:
    """The numbers behind "can the CPU feed the GPU?", from measured rows only (None where a side is missing).

    cpu_1t / cpu_all: the CPU's plain augmentation rate with 1 thread and with the most threads measured;
    gpu_fp32 / gpu_fastest: the GPU's train-step rate in fp32 without TF32 and the fastest configuration measured;
    cores_needed_*: that train-step rate over the 1-thread rate (augmentation alone, perfect scaling);
    cpu_all_over_*: the all-threads rate over the train-step rate (>= 1: this CPU keeps up);
    kernel / kernel_share_*: the fused kernel's rate, and the share of a train step that augmenting on the GPU adds;
    cpu_train / cpu_share: the CPU's own train-step rate and the share of it the augmentation would take."""
    cpu = [a for a in aug if a["device"] == "cpu" and a["plain"] and a["backend"] == "torch"]
    one = [a for a in cpu if a["threads"] == 1]
    many = sorted(cpu, key=lambda a: a["threads"] or 0)
    gpu_train = [t for t in train if t["device"].startswith("cuda")]
    fp32 = next((t for t in gpu_train if t["config"] == "torch fp32"), None)
    fastest = max(gpu_train, key=lambda t: t["images_per_s"], default=None)
    kernel = next((a for a in aug if a["device"].startswith("cuda") and a["backend"] == "triton" and a["plain"]), None)
    gpu_torch = next((a for a in aug if a["device"].startswith("cuda") and a["backend"] == "torch" and a["plain"]),
                     None)
    cpu_train = next((t for t in train if t["device"] == "cpu"), None)

    def rate(x):
        return x["images_per_s"] if x else None

    c1, cn = rate(one[0] if one else None), rate(many[-1] if many else None)
    out = {"cpu_1t": c1, "cpu_all": cn, "cpu_all_threads": many[-1]["threads"] if many else None,
           "gpu_fp32": rate(fp32), "gpu_fastest": rate(fastest), "gpu_fastest_config": fastest["config"] if fastest
           else None, "gpu_batch": fastest["batch"] if fastest else None,
           "kernel": rate(kernel), "gpu_torch": rate(gpu_torch), "cpu_train": rate(cpu_train),
           "cpu_train_batch": cpu_train["batch"] if cpu_train else None}
    for key in ("gpu_fp32", "gpu_fastest"):
        out[f"cores_needed_{key}"] = ratio(out[key], c1)
        out[f"cpu_all_over_{key}"] = ratio(cn, out[key])
        out[f"kernel_share_{key}"] = ratio(out[key], out["kernel"])
    out["kernel_over_gpu_torch"] = ratio(out["kernel"], out["gpu_torch"])
    out["cpu_share"] = ratio(out["cpu_train"], cn)
    return out


def _where(r) -> str:
    if r["device"].startswith("cuda"):
        return r["device"]
    threads = r["threads"]
    return f"cpu, {int(threads)} thread{'s' if threads != 1 else ''}" if threads else "cpu"


def _feed_line(v: dict, key: str, label: str) -> str:
    need, over = v[f"cores_needed_{key}"], v[f"cpu_all_over_{key}"]
    n = v["cpu_all_threads"]
    keeps = "keeps up" if over >= 1 else "falls short"
    return (f"- against the GPU's {label} train step ({fmt_num(v[key], ',.0f')} images/s): this CPU's {int(n or 1)} "
            f"thread(s) augment {over:.2g}x what it consumes, so the CPU {keeps}; at the 1-thread rate it would take "
            f"{math.ceil(need)} such cores ({need:.3g}), for the augmentation alone.")


def summarize(df, options: StudyOptions) -> Summary:
    from perfkit.workloads import augment as A
    aug, train = augment_rows(df), train_rows(df)
    v = verdict(aug, train)
    lines = ["augmentation: AlexNet's training augmentation (random 224x224 crop of a 256x256 image, mirror, PCA "
             "lighting noise, normalisation) in images/s, against the train step it has to feed"]
    lines.append(f"Images: {A.BATCH_FORMATION}, from {A.SOURCE}.")
    lighting = None
    if A.missing_packages() is None:
        lighting = A.photo_lighting().as_dict()
        vals = ", ".join(f"{x:.4g}" for x in lighting["eigenvalues"])
        lines.append(f"PCA lighting computed from those photographs ({lighting['pixels']:,} pixels, RGB in [0, 1]): "
                     f"eigenvalues {vals}; alpha ~ N(0, {A.ALPHA_STD:g}) per image.")
    if aug:
        lines += ["", _aug_table(aug)]
    if train:
        lines += ["", "Whole-network train_step (alexnet2012):", format_table(
            [dict(t, where=_where(t)) for t in train],
            [("where", "where", None), ("config", "config", None), ("batch", "batch", None),
             ("images_per_s", "img/s", lambda x: fmt_num(x, ",.1f"))])]
    lines += ["", "Can the CPU feed the GPU?"]
    if v["gpu_fp32"] is not None or v["gpu_fastest"] is not None:
        if v["cpu_1t"] is not None:
            if v["gpu_fp32"] is not None:
                lines.append(_feed_line(v, "gpu_fp32", "fp32 (TF32 off, as in 2012)"))
            if v["gpu_fastest"] is not None and v["gpu_fastest_config"] != "torch fp32":
                lines.append(_feed_line(v, "gpu_fastest", f"fastest ({v['gpu_fastest_config']})"))
        else:
            lines.append("- no CPU augmentation row was measured, so there is no CPU-side answer.")
        if v["kernel"] is not None:
            share = v["kernel_share_gpu_fastest"]
            lines.append(f"- on the GPU, the fused Triton kernel augments {fmt_num(v['kernel'], ',.0f')} images/s"
                         + (f", {v['kernel_over_gpu_torch']:.3g}x the same torch operators there" if
                            v["kernel_over_gpu_torch"] else "")
                         + (f"; augmenting there would add {share * 100:.2g}% to the fastest train step" if share
                            else "") + ".")
    else:
        lines.append("- the comparison with the GPU's train step needs a GPU: no GPU train step was measured in this "
                     "run (see the skipped cases below).")
        if v["cpu_1t"] is not None:
            lines.append(f"- this CPU augments {fmt_num(v['cpu_1t'], ',.0f')} images/s with 1 thread and "
                         f"{fmt_num(v['cpu_all'], ',.0f')} with {int(v['cpu_all_threads'] or 1)}.")
        if v["cpu_share"] is not None:
            lines.append(f"- the CPU's own train step (batch {v['cpu_train_batch']}) runs at "
                         f"{fmt_num(v['cpu_train'], ',.1f')} images/s: augmenting its images would take "
                         f"{v['cpu_share'] * 100:.2g}% of its time.")
    if v["cpu_1t"] is not None and v["cpu_all"] is not None and v["cpu_all"] < v["cpu_1t"]:
        lines.append(f"- {int(v['cpu_all_threads'] or 1)} threads augmented slower than 1: the threads of one process "
                     "wait for each other at every operator, and other work held the cores during the run; an idle "
                     "machine gives a fairer figure (and a data loader would use one process per core instead).")
    paper = figure("paper_images_per_s")
    if v["cpu_1t"] is not None:
        lines.append(f"- for scale, the paper's two GTX 580s trained {paper.text()} ({paper.note}; derived): one "
                     f"thread of this CPU augments {v['cpu_1t'] / paper.high:.3g}x the upper figure.")
    lines += ["", f"The paper: {PAPER_QUOTE}.",
              "Not included: decoding JPEG files (the larger part of a real pipeline's CPU work) and copying batches "
              "to the GPU."]
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"augment": aug, "train": train, "verdict": v, "lighting": lighting,
                                               "images": A.BATCH_FORMATION, "source": A.SOURCE})


def _aug_table(aug: list[dict]) -> str:
    rows = [dict(a, where=_where(a), io=f"{a['input']} -> {a['dtype']} {a['layout']}") for a in aug]
    return format_table(rows, [
        ("where", "where", None), ("backend", "implementation", None), ("io", "images -> output", None),
        ("batch", "batch", None), ("images_per_s", "img/s", lambda x: fmt_num(x, ",.0f")),
        ("time_s", "ms/batch", lambda x: fmt_num(None if x is None else x * 1e3, ",.2f")),
        ("error_rel", "rel. error", lambda x: "-" if x is None else f"{x:.1e}")])


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize)
