"""batch: throughput and peak memory of the whole network over batch sizes, from 1 to the first that does not fit.

Batch sizes double: 1, 2, 4, ... Each sweep (one device, backend, dtype and pass) is measured in that order, one case
at a time (`run_cases`), and stops at its first out-of-memory case: that case is stored with status "oom", and the
larger sizes planned after it are neither run nor stored, since they could only run out of memory too (the summary
says where each sweep stopped, and which sizes it left out). A resumed run honours an oom it stored before.

How far each sweep may go at most, decided before running from the cost model (perfkit.specs), so that it is the same
on every rerun and resumes cleanly:
- On a GPU: to the first power of two whose *lower bound* on resident memory exceeds the larger of 80 GiB and the
  device's memory, so that it must run out of memory on an 80 GB card. The lower bound is the parameters (and for
  train_step their gradients and momentum) plus, for forward, the largest input + output pair of one layer, and for
  train_step every activation autograd must keep for backward (the image and every non-conv, non-linear layer's
  output). In practice the sweep stops earlier, at the first size that runs out of memory.
  The timed batch's inputs are drawn on the GPU itself (perfkit.runner.timed_inputs_device), so host
  memory stays bounded whatever the batch: the parameters, and the correctness check's few images with their float64
  CPU reference (RunnerConfig.check_batch), never the batch (2**16 float32 images are 39 GB).
- On the CPU, running out of memory is not a recoverable error (the kernel's OOM killer ends the process), so the
  sweep is bounded: up to 8 images (quick) or 64 (full), and below a lower bound of a quarter of host memory.

Grids: torch eager, whole network, forward and train_step. GPU: float32 (TF32 off) and bfloat16 (quick: float32).
CPU: float32, all threads (or --threads).
"""
from __future__ import annotations

import os
from dataclasses import replace

from perfkit.cases import NETWORK, Case, grid
from perfkit.support.progress import Progress
from perfkit.app.tables import fmt_num, format_table
from perfkit.specs import DTYPE_BYTES, build_network
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import choose, device_title, fmt_bytes, get, not_measured, num, plan_devices

NAME = "batch"
DESCRIPTION = "throughput and peak memory of the whole network over batch sizes 1, 2, 4, ... up to out of memory"
PASSES = ("forward", "train_step")
GPU_DTYPES = {"quick": ("float32",), "full": ("float32", "bfloat16")}
CPU_DTYPES = ("float32",)
CPU_MAX_BATCH = {"quick": 8, "full": 64}
GPU_MEMORY_FLOOR = 80 * 2 ** 30  # "must run out of memory on an 80 GB card"
MAX_DOUBLINGS = 24


def memory_lower_bound(network, pass_name: str, batch: int, dtype: str) -> int:
    """Bytes a pass must hold on its device at once (see the module docstring); a lower bound, not an estimate."""
    nbytes = DTYPE_BYTES[dtype]
    params = network.params * nbytes
    body = network.body
    if pass_name == "forward":
        pair = max(spec.in_numel + spec.out_numel for spec in body)
        return params + batch * pair * nbytes
    kept = body[0].in_numel + sum(spec.out_numel for spec in body[:-1] if spec.kind not in ("conv", "linear"))
    return 3 * params + batch * kept * nbytes


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gpu_memory_bytes(device: str) -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    except (RuntimeError, AssertionError):
        return None


def sweep(network, pass_name: str, dtype: str, device: str, quick: bool) -> tuple[list[int], str]:
    """The batch sizes (images) a sweep on `device` may try, at most, and why it ends where it does. A GPU sweep
    stops earlier, at its first out-of-memory case (`run_cases`)."""
    sizes = []
    if device.startswith("cuda"):
        # Host memory sets no limit here: the timed inputs are drawn on the device (the module docstring).
        limit = max(GPU_MEMORY_FLOOR, gpu_memory_bytes(device) or 0)
        for k in range(MAX_DOUBLINGS):
            batch = 2 ** k
            sizes.append(batch)
            bound = memory_lower_bound(network, pass_name, batch, dtype)
            if bound > limit:
                return sizes, (f"ends at {batch}, whose lower bound of {fmt_bytes(bound)} resident exceeds "
                               f"{fmt_bytes(limit)}: it must run out of memory")
        return sizes, f"ends at {sizes[-1]} (at most {MAX_DOUBLINGS} doublings)"
    host = host_memory_bytes()
    cap = CPU_MAX_BATCH["quick" if quick else "full"]
    for k in range(MAX_DOUBLINGS):
        batch = 2 ** k
        if batch > cap:
            return sizes, (f"ends at {sizes[-1]}: on the CPU running out of memory kills the process, so the sweep is "
                           f"bounded ({cap} images in the {'quick' if quick else 'full'} form)")
        if host and memory_lower_bound(network, pass_name, batch, dtype) > host / 4:
            return sizes, f"ends at {sizes[-1]}: the next size needs over a quarter of host memory"
        sizes.append(batch)
    return sizes, f"ends at {sizes[-1]}"


def _plan(options: StudyOptions):
    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="alone")
    network = build_network(options.variant)
    for device in gpus + cpus:
        dtypes = choose(options, "dtypes", GPU_DTYPES[form] if device.startswith("cuda") else CPU_DTYPES)
        for dtype in dtypes:
            for pass_name in choose(options, "passes", PASSES):
                sizes, why = sweep(network, pass_name, dtype, device, options.quick)
                sizes = choose(options, "batches", sizes)
                yield device, dtype, pass_name, sizes, why


def cases(options: StudyOptions):
    out = []
    for device, dtype, pass_name, sizes, _ in _plan(options):
        out += grid(variant=options.variant, layer=NETWORK, backend="torch", device=device, dtype=dtype,
                    batch=list(sizes), pass_name=pass_name,
                    threads=None if device.startswith("cuda") else options.threads)
    return out


# -- measuring: each sweep in order, up to its first out-of-memory case ---------------------------------------------
def series(case: Case) -> Case:
    """The sweep a case belongs to: the case with its batch left out (same variant, layer, backend, device, dtype, pass,
    threads and options)."""
    return replace(case, batch=0)


def stored_statuses(runner) -> dict[str, str]:
    """Status by case key of the rows this run already stored (a resumed run has some)."""
    return runner.store.case_statuses(runner.run_id)


def run_cases(runner, cases):
    """Measure the cases sweep by sweep, in increasing batch order, one at a time (each through `runner.run`, which
    skips the cases this run has stored already), and stop a sweep after its first out-of-memory case: its larger
    batches are not measured and not stored. An oom stored by an earlier attempt of this run stops its sweep too.
    Returns the rows added."""
    order = {}
    for case in cases:
        order.setdefault(series(case), len(order))
    todo = sorted(dict.fromkeys(cases), key=lambda c: (order[series(c)], c.batch))
    stored = stored_statuses(runner)
    first_oom: dict[Case, int] = {}  # sweep -> the smallest batch that ran out of memory
    for case in todo:
        if stored.get(case.key) == "oom":
            first_oom[series(case)] = min(case.batch, first_oom.get(series(case), case.batch))

    def stopped(case: Case) -> bool:
        return series(case) in first_oom and case.batch > first_oom[series(case)]

    pending = [c for c in todo if c.key not in stored and not stopped(c)]
    progress = Progress(len(pending), title=runner.study, enabled=runner.show_progress)
    shown, runner.show_progress = runner.show_progress, False  # one progress line for the study, not one per case
    rows, not_run = [], 0
    try:
        for case in pending:
            if stopped(case):
                continue
            progress.start(case.label)
            added = runner.run([case])
            not_run += runner.cases_not_run  # run() counts afresh each call: the study's count is the sum
            if not added:  # left out at the deadline: a rerun measures it
                continue
            [row] = added
            rows.append(row)
            rate = f"{row.images_per_s:,.0f} img/s" if row.images_per_s else ""
            progress.done(row.status, rate if row.status == "ok" else row.note or "")
            if row.status == "oom":
                first_oom[series(case)] = case.batch
                # the sweep's larger sizes will not run: the count of cases left (and its time estimate) drops them
                progress.total -= sum(1 for c in pending if series(c) == series(case) and c.batch > case.batch)
    finally:
        runner.show_progress = shown
        progress.close()
    runner.cases_not_run = not_run
    return rows


def stop_note(planned: list[int], measured: list[int], first_oom: int | None) -> tuple[str, list[int]]:
    """Where a sweep stopped and why, and the planned batch sizes it left out because a smaller one ran out of
    memory (`run_cases`)."""
    left = [b for b in planned if first_oom is not None and b > first_oom and b not in measured]
    missing = [b for b in planned if b not in measured and b not in left]
    if first_oom is not None and not left:
        return f"The sweep stopped at batch {first_oom}, its first out of memory and the largest size planned.", left
    if first_oom is not None:
        sizes = ", ".join(map(str, left)) if len(left) <= 3 else f"{left[0]} to {left[-1]}"
        many = len(left) > 1
        text = (f"The sweep stopped at batch {first_oom}, its first out of memory: the larger planned size"
                f"{'s' if many else ''} ({sizes}) {'were' if many else 'was'} not run, needing more memory still.")
        return text, left
    if missing:
        return (f"No out-of-memory case so far; planned but not measured yet: {', '.join(map(str, missing))} "
                "(rerunning the study resumes the run)."), left
    return "No out-of-memory case: the sweep ran every size planned.", left


MEMORY_COLUMNS = (("torch_peak_allocated_bytes", "torch peak allocated"),
                  ("torch_peak_reserved_bytes", "torch peak reserved"),
                  ("nvml_used_bytes", "NVML used"),
                  ("cpu_peak_rss_bytes", "process peak RSS"))


def summarize(df, options: StudyOptions) -> Summary:
    network = build_network(options.variant)
    plans = {(d, t, p): (sizes, why) for d, t, p, sizes, why in _plan(options)}
    lines = [f"batch: throughput and peak memory over batch sizes, {options.variant} whole network, torch eager"]
    data = {"sweeps": []}
    for (device, dtype, pass_name), part in df.groupby(["device", "dtype", "pass_name"], sort=False):
        part = part.sort_values("batch")
        mem_cols = [(c, label) for c, label in MEMORY_COLUMNS if c in part and part[c].notna().any()]
        rows = []
        for _, r in part.iterrows():
            row = {"batch": int(r.batch), "status": r.status, "images_per_s": num(get(r, "images_per_s")),
                   "bound": memory_lower_bound(network, pass_name, int(r.batch), dtype)}
            for c, _ in mem_cols:
                row[c] = num(get(r, c))
            rows.append(row)
        fit = [r["batch"] for r in rows if r["status"] == "ok"]
        oom = [r["batch"] for r in rows if r["status"] == "oom"]
        best = max((r for r in rows if r["images_per_s"]), key=lambda r: r["images_per_s"], default=None)
        planned, sweep_note = plans.get((device, dtype, pass_name), ([], ""))
        lines += ["", f"{device_title(df, device)}, {pass_name}, {dtype}: planned sweep {sweep_note}"]
        if (part.status == "skipped").all():
            lines.append(f"all {len(part)} sizes skipped: {part.note.iloc[0]}")
            data["sweeps"].append({"device": device, "dtype": dtype, "pass": pass_name, "rows": rows,
                                   "largest_fit": None, "first_oom": None, "sweep": sweep_note, "not_run": [],
                                   "stop": None})
            continue
        columns = [("batch", "batch", None), ("status", "status", None),
                   ("images_per_s", "img/s", lambda v: fmt_num(v, ",.1f"))]
        columns += [(c, label, fmt_bytes) for c, label in mem_cols]
        columns += [("bound", "lower bound", fmt_bytes)]
        lines.append(format_table(rows, columns))
        verdict = (f"largest batch that fit: {max(fit)}" if fit else "no batch size fit") + \
                  (f"; first out of memory: {min(oom)}" if oom else "; no out-of-memory case in this sweep")
        if best:
            verdict += f"; best throughput {fmt_num(best['images_per_s'], ',.1f')} img/s at batch {best['batch']}"
        lines.append(verdict + ".")
        stop, left = stop_note(planned, [r["batch"] for r in rows], min(oom) if oom else None)
        lines.append(stop)
        data["sweeps"].append({"device": device, "dtype": dtype, "pass": pass_name, "rows": rows,
                               "largest_fit": max(fit) if fit else None, "first_oom": min(oom) if oom else None,
                               "sweep": sweep_note, "not_run": left, "stop": stop})
    if not any(c in df and df[c].notna().any() for c, _ in MEMORY_COLUMNS[:3]):
        lines += ["", "Peak memory: the process's peak resident set during each case on the CPU (it includes the "
                  "float64 reference of the check and torch's caches, so it bounds the batch's need from above); "
                  "GPU rows show torch's peak allocated/reserved and NVML's used memory when the harness records them."]
    lines += ["", "lower bound: the memory the pass must hold at once by the cost model (parameters, and the "
              "activations autograd keeps), not an estimate of use."]
    lines += [""] + not_measured(df[~df.status.isin(["oom", "skipped"])])
    return Summary("\n".join(lines).strip(), data)


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize, run_cases=run_cases)
