"""roofline: every layer's arithmetic intensity and attained rate against the device's measured ceilings.

Intensity is the cost model's FLOPs over its minimum bytes (perfkit.specs: a multiply-add is 2 FLOPs; every tensor read
once and written once). The ceilings are what the harness measured on this device in this run (perfkit.measure.peaks): its
matmul rate for the dtype and its device-to-device copy bandwidth, read + write bytes (columns peak_flops_per_s /
peak_bytes_per_s on each row, or the device_peaks table; on a CPU per thread count). The bound of a layer is
min(peak FLOP/s, intensity x bandwidth); the summary gives each layer's attained FLOP/s and bytes/s, its bound, the
fraction of the bound it reached, and whether memory or compute limits it. Where no ceilings were measured it says so
and gives the attained rates only.

Grids: every layer + the network.
- GPU, batch 128: torch float32 (TF32 off), tf32 and bfloat16, triton bfloat16 (forward only); forward, backward and
  train_step. quick: forward, torch float32 and bfloat16, triton bfloat16.
- CPU: torch float32; forward at batch 4 (quick), forward/backward/train_step at batch 16 (full).
"""
from __future__ import annotations

from perfkit.cases import grid
from perfkit.app.tables import fmt_si, format_table
from perfkit.results.store import load_device_peaks as _load_device_peaks
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (all_layers_and_network, choose, choose_layers, config_label, device_title, get,
                                     not_measured, num, ok_rows, plan_devices, this_run)

NAME = "roofline"
DESCRIPTION = "every layer's arithmetic intensity and attained FLOP/s and bytes/s against the measured device ceilings"
GPU_CONFIGS = {"quick": (("torch", "float32"), ("torch", "bfloat16"), ("triton", "bfloat16")),
               "full": (("torch", "float32"), ("torch", "tf32"), ("torch", "bfloat16"), ("triton", "bfloat16"))}
GPU_PASSES = {"quick": ("forward",), "full": ("forward", "backward", "train_step")}
CPU_PASSES = {"quick": ("forward",), "full": ("forward", "backward", "train_step")}
GPU_BATCH = 128
CPU_BATCH = {"quick": 4, "full": 16}


def cases(options: StudyOptions):
    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="alone")
    layers = choose_layers(options, all_layers_and_network(options.variant))
    out = []
    for gpu in gpus:
        for backend, dtype in GPU_CONFIGS[form]:
            out += grid(variant=options.variant, layer=layers, backend=backend, device=gpu, dtype=dtype,
                        batch=options.batch or GPU_BATCH, pass_name=list(choose(options, "passes", GPU_PASSES[form])))
    for cpu in cpus:
        out += grid(variant=options.variant, layer=layers, backend="torch", device=cpu, dtype="float32",
                    batch=options.batch or CPU_BATCH[form], pass_name=list(choose(options, "passes", CPU_PASSES[form])),
                    threads=options.threads)
    return out


def load_device_peaks(df):
    """This run's rows of the store's device_peaks table, or None where there are none."""
    return this_run(df, _load_device_peaks)


def ceilings(row, peaks) -> tuple[float | None, float | None, str | None]:
    """(peak FLOP/s, peak bytes/s, where they come from) for a row: its own columns (the runner copies the device's
    peaks onto every row), else the device_peaks table (same device, dtype and, on a CPU, thread count)."""
    flops, bw = num(get(row, "peak_flops_per_s")), num(get(row, "peak_bytes_per_s"))
    if flops and bw:
        return flops, bw, "row"
    if peaks is not None and len(peaks):
        hit = peaks[(peaks.device == row.device) & (peaks.dtype == row["dtype"])]
        if "threads" in hit and num(get(row, "threads")) is not None and not str(row.device).startswith("cuda"):
            hit = hit[hit.threads == num(get(row, "threads"))]
        if len(hit):
            return num(hit.matmul_flops_per_s.iloc[0]), num(hit.copy_bytes_per_s.iloc[0]), "device_peaks"
    return None, None, None


def roofline_rows(df, peaks=None) -> list[dict]:
    """One dict per ok row: intensity, attained rates, the bound from the ceilings, the fraction and the limiter.
    The bound and fraction are the runner's (roofline_bound_flops_per_s, roofline_fraction) where it recorded them,
    else computed here the same way: bound = min(peak FLOP/s, intensity x peak bytes/s)."""
    out = []
    for _, r in ok_rows(df).iterrows():
        flops, nbytes = num(r.flops), num(r.bytes_min)
        intensity = num(get(r, "arithmetic_intensity_flops_per_byte")) or (flops / nbytes if flops and nbytes
                                                                             else None)
        attained = num(r.achieved_flops_per_s)
        peak, bw, source = ceilings(r, peaks)
        bound = num(get(r, "roofline_bound_flops_per_s"))
        if bound is None and peak and bw and intensity is not None:
            bound = min(peak, intensity * bw)
        fraction = num(get(r, "roofline_fraction"))
        if fraction is None and bound and attained is not None:
            fraction = attained / bound
        out.append({"device": r.device, "pass": r.pass_name, "config": config_label(r.backend, r["dtype"]),
                    "threads": num(get(r, "threads")), "batch": int(r.batch), "layer": r.layer, "kind": r.layer_kind,
                    "intensity": intensity, "attained_flops_per_s": attained,
                    "attained_bytes_per_s": num(r.achieved_bytes_per_s), "peak_flops_per_s": peak,
                    "peak_bytes_per_s": bw, "ceiling_source": source, "bound_flops_per_s": bound,
                    "fraction": fraction,
                    "limit": (None if not (peak and bw) or intensity is None else
                              "memory" if intensity * bw < peak else "compute"),
                    "ridge_flops_per_byte": peak / bw if peak and bw else None,
                    "note": get(r, "roofline_note")})
    return out


def summarize(df, options: StudyOptions) -> Summary:
    rows = roofline_rows(df, load_device_peaks(df))
    lines = [f"roofline: {options.variant} layers, arithmetic intensity (cost-model FLOPs / minimum bytes) and "
             "attained rate against the measured ceilings"]
    groups = {}
    for r in rows:
        groups.setdefault((r["device"], r["pass"], r["config"], r["batch"]), []).append(r)
    for (device, pass_name, config, batch), part in groups.items():
        head = part[0]
        ceiling = (f"ceilings {fmt_si(head['peak_flops_per_s'], 'FLOP/s')}, {fmt_si(head['peak_bytes_per_s'], 'B/s')}"
                   f" (ridge {head['ridge_flops_per_byte']:.1f} FLOP/B)" if head["peak_flops_per_s"] else
                   "no measured ceilings")
        lines += ["", f"{device_title(df, device)}, {pass_name}, {config}, batch {batch}: {ceiling}"]
        lines.append(format_table(part, [
            ("layer", "layer", None), ("kind", "kind", None),
            ("intensity", "FLOP/B", lambda v: "-" if v is None else f"{v:.3g}"),
            ("attained_flops_per_s", "FLOP/s", fmt_si), ("attained_bytes_per_s", "B/s", fmt_si),
            ("bound_flops_per_s", "bound FLOP/s", fmt_si),
            ("fraction", "of bound", lambda v: "-" if v is None else f"{v * 100:.1f}%"),
            ("limit", "limited by", None)]))
    if rows and not any(r["peak_flops_per_s"] for r in rows):
        reasons = sorted({r["note"] for r in rows if r["note"]})
        lines += ["", "The device's ceilings were not measured in this run (no peak_flops_per_s / peak_bytes_per_s on "
                  "the rows, no device_peaks rows" + (f": {'; '.join(reasons)}" if reasons else "") + "), so no bound "
                  "or fraction is given; intensities and attained rates are."]
    lines += ["", "A multiply-add is 2 FLOPs. Bytes are the minimum each layer must move, so attained B/s can "
              "understate real traffic; the ceilings are measured rates (a matmul, a large copy), not the hardware's "
              "limits, so a layer whose data stays in cache, or a library kernel beating a plain matmul, can exceed "
              "100% of its bound."]
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"rows": rows})


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize)
