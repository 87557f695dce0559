"""multigpu: AlexNet's train step over several processes with torch.distributed, launched with torchrun.

1. The paper's two-column model parallelism: 2 ranks, each holding half the kernels of every layer (its group of the
   grouped conv2, conv4 and conv5, half of conv1, conv3 and the fully-connected layers), exchanging activations where
   a layer sees both columns' maps (conv3, fc6, fc7, fc8, the logits) and the edge maps of the LRNs; every rank sees
   the whole batch (perfkit.workloads.distributed has the split and its communication).
2. Data-parallel DDP scaling over 1..N devices: weak scaling (the paper's 128 images per device, the global batch
   growing with the devices) and, in the full form, strong scaling (a global batch of 128 split over the devices).
Both against the plain network in one process (`single`). NCCL on GPUs, gloo on CPUs. Every row's options name its
form, world size and distributed backend; each form is checked against the float64 single-process network (logits,
loss, every parameter's gradient) before it is timed.

Where it runs: the GPU form needs at least 2 GPUs (world sizes 1, 2, 4, ... up to the GPUs visible, and their count);
on a machine with fewer, its cases are stored as skipped with the reason and the CPU form runs instead: 2 gloo
processes sharing the machine's cores (each rank gets all threads / world size; --threads N sets "all"), at a small
batch (2 images per rank with --quick, 8 otherwise). `--device cpu` runs the CPU form only. On the CPU the ranks share
the cores and the memory bandwidth, so the CPU form shows the mechanics and the equivalence, not what a second device
gains.

`perfkit study multigpu` starts `python -m torch.distributed.run --standalone --nproc-per-node N -m perfkit.workloads.distributed
worker --job FILE` once per world size and backend; rank 0 appends the rows to the store. With a time budget
(run_study's deadline) no case starts after the deadline, in this process or in the workers; torchrun runs in its own
process group and is stopped, workers and all, a short grace after the deadline (perfkit.workloads.distributed.DEADLINE_GRACE_S).
"""
from __future__ import annotations

from perfkit.workloads import distributed
from perfkit.cases import NETWORK, Case
from perfkit.app.published import cite
from perfkit.app.tables import fmt_num, fmt_si, format_table
from perfkit.specs import build_network, dtype_bytes
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import choose, device_title, fmt_x, not_measured, num, ok_rows, options_of, plan_devices

NAME = "multigpu"
DESCRIPTION = ("the train step over several processes (torchrun): the paper's two-column model parallelism on 2 ranks "
               "and DDP over 1..N, NCCL on GPUs, gloo on CPUs")
GPU_BATCH = 128  # per device for DDP weak scaling; the whole batch for single and two_column
CPU_BATCH = {"quick": 2, "full": 8}
MIN_GPUS = 2


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_world_sizes(n: int) -> list[int]:
    """1, 2, 4, ... up to n GPUs, and n itself; [1, 2] where fewer than 2 are visible (planned, to be skipped)."""
    if n < MIN_GPUS:
        return [1, MIN_GPUS]
    sizes, w = [], 1
    while w <= n:
        sizes.append(w)
        w *= 2
    return sorted(set(sizes + [n]))


def _case(variant, parallel, world, device, batch, dtype="float32", threads=None) -> Case:
    backend = "nccl" if device.startswith("cuda") else "gloo"
    return Case(variant=variant, layer=NETWORK, backend="torch", device=device, dtype=dtype, batch=batch,
                pass_name="train_step", threads=threads,
                options=distributed.case_options(parallel, world, backend))


def cases(options: StudyOptions):
    import torch

    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="alone")
    n = gpu_count()
    if n < MIN_GPUS:
        cpus = ["cpu"]  # the GPU form cannot run here: the CPU form shows the mechanics instead
    v = options.variant
    forms = set(choose(options, "forms", distributed.FORMS))  # tests narrow the forms
    out = []
    for gpu in gpus:
        batch = options.batch or GPU_BATCH
        sizes = gpu_world_sizes(n)
        dtypes = ("float32",) if options.quick else ("float32", "tf32")
        for dtype in dtypes:
            out.append(_case(v, "single", 1, gpu, batch, dtype))
            out.append(_case(v, "two_column", distributed.COLUMNS, gpu, batch, dtype))
        for w in sizes:
            out.append(_case(v, "ddp", w, gpu, batch * w))  # weak scaling: `batch` images per device
        if not options.quick:
            out += [_case(v, "ddp", w, gpu, batch) for w in sizes if w > 1 and batch % w == 0]  # strong scaling
    all_threads = options.threads or torch.get_num_threads()
    for cpu in cpus:
        batch = options.batch or CPU_BATCH[form]
        w = distributed.COLUMNS
        per_rank = max(1, all_threads // w)
        out.append(_case(v, "single", 1, cpu, batch, threads=all_threads))
        if not options.quick:
            out.append(_case(v, "ddp", 1, cpu, batch, threads=all_threads))
        out.append(_case(v, "ddp", w, cpu, batch * w, threads=per_rank))
        out.append(_case(v, "two_column", w, cpu, batch, threads=per_rank))
    return [c for c in out if c.option("parallel") in forms]


def gpu_rule(case: Case) -> str | None:
    """The study's own rule: GPU cases need at least 2 GPUs (a lone GPU has nothing to scale over)."""
    if not case.device.startswith("cuda"):
        return None
    n = gpu_count()
    if n >= MIN_GPUS:
        return None
    why = "no CUDA device is available" if n == 0 else f"this machine has {n} GPU"
    return (f"the GPU form of multigpu needs at least {MIN_GPUS} GPUs: {why} (the CPU form runs with "
            f"{distributed.COLUMNS} gloo processes instead)")


def run_cases(runner, cases):
    """Measure through torchrun workers (perfkit.workloads.distributed), not in this process. The runner's deadline holds as in
    Runner.run: cases not started by then are left for a rerun (runner.cases_not_run), and a launch still running
    shortly after it is stopped, its case in flight recorded as stopped at the deadline."""
    return distributed.measure_cases(runner, cases, extra_reason=gpu_rule)


# -- summary -----------------------------------------------------------------------------------------------------------
def table(df) -> list[dict]:
    """One dict per measured (ok) row with its form, world size, batches, rate, and its speedup and efficiency over the
    one-process row of the same device kind and dtype: for DDP over several ranks, weak scaling (the one-process row
    at the per-rank batch) where that row exists, else strong scaling (at the same global batch); for the others, at
    the same batch."""
    ok = ok_rows(df)
    rows = []
    for _, r in ok.iterrows():
        opts = options_of(r)
        world = int(opts.get("world_size", 1))
        parallel = opts.get("parallel", "single")
        per_rank = int(r.batch) if parallel == "two_column" else int(r.batch) // world
        rows.append({"device": r.device, "device_name": r.device_name, "kind": r.device.split(":")[0],
                     "dtype": r["dtype"], "parallel": parallel, "world": world,
                     "backend": opts.get("dist_backend"), "threads": num(r.threads), "batch": int(r.batch),
                     "per_rank": per_rank, "time_s": num(r.time_median_s), "images_per_s": num(r.images_per_s),
                     "error_rel": num(r.error_rel)})
    for row in rows:
        base, row["scaling"] = _single(rows, row, row["batch"]), "-"
        if row["parallel"] == "ddp" and row["world"] > 1:
            weak = _single(rows, row, row["per_rank"])
            row["scaling"] = "weak" if weak is not None else "strong"
            base = weak if weak is not None else base
        speedup = row["images_per_s"] / base["images_per_s"] if base and base["images_per_s"] else None
        row["speedup"] = speedup
        row["efficiency"] = speedup / row["world"] if speedup is not None else None
    return rows


def _single(rows: list[dict], row: dict, batch: int) -> dict | None:
    """The one-process row on the same kind of device and dtype at `batch`."""
    return next((b for b in rows if b["parallel"] == "single" and b["kind"] == row["kind"]
                 and b["dtype"] == row["dtype"] and b["batch"] == batch), None)


def communication(variant: str, batch: int, dtype: str = "float32") -> dict:
    """Bytes a train step moves between ranks, from the plans: the two-column exchanges (forward gathers, backward
    all-reduces and halos, whole tensors at `batch`) and DDP's gradient all-reduce (every parameter once)."""
    network = build_network(variant)
    nbytes = dtype_bytes(dtype)
    exchanges = distributed.two_column_exchanges(network)
    per_image = sum(e["forward_elements"] + e["backward_elements"] for e in exchanges)
    return {"two_column": exchanges, "two_column_bytes_per_step": per_image * batch * nbytes,
            "ddp_gradient_bytes_per_step": network.params * nbytes, "batch": batch, "dtype": dtype}


def summarize(df, options: StudyOptions) -> Summary:
    rows = table(df)
    lines = [f"multigpu: {options.variant} train step over several processes (torch.distributed, launched with "
             "torchrun), from this run's measured rows"]
    if rows:
        for r in rows:
            r["form"] = f"{r['parallel']}" + (f" ({r['scaling']})" if r["scaling"] != "-" else "")
            r["where"] = device_title(df, r["device"]) if r["kind"] == "cuda" else "cpu"
            r["thr"] = None if r["threads"] is None else int(r["threads"])
        lines.append(format_table(rows, [
            ("where", "device", None), ("dtype", "dtype", None), ("form", "form", None), ("world", "ranks", None),
            ("backend", "backend", None), ("thr", "threads/rank", None), ("batch", "batch", None),
            ("per_rank", "per rank", None), ("time_s", "step ms", lambda x: fmt_num(None if x is None else x * 1e3,
                                                                                    ",.1f")),
            ("images_per_s", "img/s", lambda x: fmt_num(x, ",.1f")), ("speedup", "vs single", fmt_x),
            ("efficiency", "per rank", lambda x: "-" if x is None else f"{x * 100:.0f}%"),
            ("error_rel", "rel. error", lambda x: "-" if x is None else f"{x:.1e}")]))
        lines.append("vs single: throughput over the one-process network on the same kind of device and dtype, at "
                     "the per-rank batch for weak scaling and at the same batch otherwise; per rank: that ratio over "
                     "the ranks used. rel. error: the form against the float64 single-process network before timing.")
    else:
        lines.append("No distributed case was measured in this run (see below).")
    two = [r for r in rows if r["parallel"] == "two_column"]
    for r in two:
        lines.append(f"Two columns on {r['where']} ({r['dtype']}): {fmt_x(r['speedup'])} the one-process step at "
                     f"batch {r['batch']}; same outputs and gradients as the single-process network to "
                     f"{r['error_rel']:.1e} (relative).")
    comm_batch = two[0]["batch"] if two else (options.batch or GPU_BATCH)
    comm = communication(options.variant, comm_batch)
    lines += ["", f"What moves between the ranks per train step (batch {comm_batch}, float32):",
              format_table([dict(e, fwd=e["forward_elements"] * comm_batch * 4,
                                 bwd=e["backward_elements"] * comm_batch * 4) for e in comm["two_column"]],
                           [("before", "before layer", None), ("collective", "collective", None),
                            ("fwd", "forward", lambda v: fmt_si(v, "B")),
                            ("bwd", "backward", lambda v: fmt_si(v, "B"))]),
              f"Two columns: {fmt_si(comm['two_column_bytes_per_step'], 'B')} of activations and their gradients per "
              f"step (whole tensors); DDP: an all-reduce of all {fmt_si(comm['ddp_gradient_bytes_per_step'], 'B')} of "
              "gradients per step, whatever the batch.",
              f"The paper split its network over {cite('paper_gpus')} because one card's 3 GB could not hold it, and "
              "let the columns communicate only at certain layers; the two-column rows measure that split on today's "
              "hardware."]
    if any(r["kind"] == "cpu" for r in rows):
        lines.append("CPU rows: the ranks share this machine's cores and memory bandwidth (threads/rank above), so "
                     "they show the mechanics and the equivalence, not what a second device gains.")
        if any(r["kind"] == "cpu" and r["efficiency"] is not None and r["efficiency"] > 1.05 for r in rows):
            lines.append("Over 100% per rank on the CPU: the one-process baseline got less from its threads than the "
                         "ranks got from theirs (threads of one process wait for each other at every operator, which "
                         "costs most when other work holds the cores); an idle machine gives a fairer baseline.")
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"rows": rows, "communication": comm})


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize, run_cases=run_cases)
