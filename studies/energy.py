"""energy: joules per image and images per joule for each backend and dtype, with power timelines.

The measuring follows DESIGN.md's energy rules, which the harness implements: energy from NVML's total-energy counter
(CPU: RAPL where readable) over windows of at least 5 s (the case is repeated to fill the window; this study also asks
its timer for 5 s), a power timeline from instant-power samples (table power_samples), clocks, temperatures at start and
end, and throttle reasons, with rows flagged where power or thermal limits bit. This study chooses the grid and
summarizes. Where energy cannot be read (no NVML, RAPL absent or unreadable) the rows carry null energy with the
reason, and the summary says that energy was not measurable here; throughput is still reported.

Grids: the whole network, forward and train_step.
- GPU, batch 128: torch fp32 (TF32 off), tf32, bf16 (native) and bf16 under autocast; compile fp32 and bf16; triton
  fp32 and bf16 (forward only). quick: torch fp32 and bf16, compile bf16, triton bf16.
- CPU: torch fp32 (full: also compile fp32); batch 32 (quick: 4).
"""
from __future__ import annotations

import glob
import os
import sqlite3

from perfkit.cases import NETWORK, Case
from perfkit.report import fmt_num, format_table
from perfkit.study import FULL_TIMING, QUICK_TIMING, StudyOptions, Summary
from perfkit.studies._common import (choose, config_label, device_title, get, is_autocast, not_measured, num,
                                     plan_devices)
from perfkit.timer import TimingPolicy

NAME = "energy"
DESCRIPTION = "J/image and images/J per backend and dtype (NVML energy counter, RAPL on the CPU), with power timelines"
PASSES = ("forward", "train_step")
ENERGY_WINDOW_S = 5.0
#: (backend, dtype, autocast)
GPU_CONFIGS = {"quick": (("torch", "float32", False), ("torch", "bfloat16", False), ("compile", "bfloat16", False),
                         ("triton", "bfloat16", False)),
               "full": (("torch", "float32", False), ("torch", "tf32", False), ("torch", "bfloat16", False),
                        ("torch", "bfloat16", True), ("compile", "float32", False), ("compile", "bfloat16", False),
                        ("triton", "float32", False), ("triton", "bfloat16", False))}
CPU_CONFIGS = {"quick": (("torch", "float32", False),),
               "full": (("torch", "float32", False), ("compile", "float32", False))}
GPU_BATCH = 128
CPU_BATCH = {"quick": 4, "full": 32}
TIMELINE_POINTS = 60


def rapl_readable() -> str | None:
    """The first readable RAPL energy counter under /sys/class/powercap, or None."""
    for path in sorted(glob.glob("/sys/class/powercap/*/energy_uj")):
        if os.access(path, os.R_OK):
            try:
                with open(path) as f:
                    f.read()
                return path
            except OSError:
                continue
    return None


def cases(options: StudyOptions):
    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="alone")
    out = []
    plans = [(g, GPU_CONFIGS[form], GPU_BATCH) for g in gpus] + [(c, CPU_CONFIGS[form], CPU_BATCH[form]) for c in cpus]
    for device, configs, batch in plans:
        for pass_name in choose(options, "passes", PASSES):
            for backend, dtype, autocast in configs:
                out.append(Case(variant=options.variant, layer=NETWORK, backend=backend, device=device, dtype=dtype,
                                batch=options.batch or batch, pass_name=pass_name,
                                threads=None if device.startswith("cuda") else options.threads,
                                options=(("autocast", True),) if autocast else ()))
    return out


def timing(options: StudyOptions) -> TimingPolicy:
    """Windows of at least 5 s wherever energy can be read (a GPU was asked for, or RAPL is readable)."""
    base = QUICK_TIMING if options.quick else FULL_TIMING
    if any(d.startswith("cuda") for d in options.devices) or rapl_readable():
        return base.with_min_time(ENERGY_WINDOW_S)
    return base


def load_power_samples(df):
    """This run's power samples (table power_samples), or None when the store has none or no such table."""
    if df.empty or "store" not in df:
        return None
    import pandas as pd

    path, run_id = df.store.iloc[0], df.run_id.iloc[0]
    try:
        con = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "power_samples" not in tables:
            return None
        return pd.read_sql_query("SELECT case_key, sample_index, t_s, power_w FROM power_samples WHERE run_id=? "
                                 "ORDER BY case_key, sample_index", con, params=(run_id,))
    except (sqlite3.Error, pd.errors.DatabaseError):
        return None
    finally:
        con.close()


def timeline(samples, case_key: str, points: int = TIMELINE_POINTS) -> list[tuple[float, float]]:
    """A case's power timeline, (t_s, power_w), evenly thinned to at most `points` samples."""
    part = samples[samples.case_key == case_key]
    if part.empty:
        return []
    step = max(1, -(-len(part) // points))
    thin = part.iloc[::step]
    return [(float(t), float(p)) for t, p in zip(thin.t_s, thin.power_w)]


def energy_fields(r) -> dict:
    """J/image, images/J and where they come from, for one row; None values where energy was not measured."""
    batch = int(r.batch)
    per_image = num(get(r, "energy_per_image_j"))
    images_per_j = num(get(r, "images_per_j"))
    energy = num(get(r, "energy_j"))
    source = get(r, "energy_source")
    if energy is None and num(get(r, "cpu_energy_j")) is not None:
        energy, source = num(get(r, "cpu_energy_j")), "rapl"
    window = num(get(r, "energy_window_s"))
    if per_image is None and energy is not None and window:
        t = num(get(r, "time_median_s"))
        per_image = energy / window * t / batch if t else None  # mean power over the window x time per image
        source = (source or "") + " (mean power x median time)"
    if images_per_j is None and per_image:
        images_per_j = 1.0 / per_image
    notes = [get(r, n) for n in ("energy_note", "cpu_energy_note", "power_note")]
    return {"energy_j": energy, "window_s": window, "j_per_image": per_image, "images_per_j": images_per_j,
            "source": source, "note": "; ".join(dict.fromkeys(n for n in notes if n)) or None}


def summarize(df, options: StudyOptions) -> Summary:
    samples = load_power_samples(df)
    lines = [f"energy: joules per image and images per joule, {options.variant} whole network"]
    rows = []
    for _, r in df.iterrows():
        if r.status != "ok":
            continue
        e = energy_fields(r)
        key = r.case_key
        line = {"device": r.device, "pass": r.pass_name, "config": config_label(r.backend, r["dtype"], is_autocast(r)),
                "batch": int(r.batch), "images_per_s": num(r.images_per_s), **e,
                "power_mean_w": num(get(r, "power_mean_w")), "power_max_w": num(get(r, "power_max_w")),
                "samples": num(get(r, "power_sample_count")),
                "temperature_c": (num(get(r, "temperature_c_start")), num(get(r, "temperature_c_end"))),
                "sm_clock_mhz": num(get(r, "sm_clock_mhz")),
                "throttled": get(r, "power_or_thermal_throttled"), "case_key": key,
                "timeline": timeline(samples, key) if samples is not None else []}
        rows.append(line)
    measured = [x for x in rows if x["j_per_image"] is not None]
    for device in dict.fromkeys(x["device"] for x in rows):
        part = [x for x in rows if x["device"] == device]
        lines += ["", device_title(df, device)]
        lines.append(format_table(part, [
            ("pass", "pass", None), ("config", "config", None), ("batch", "batch", None),
            ("images_per_s", "img/s", lambda v: fmt_num(v, ",.1f")),
            ("j_per_image", "J/image", lambda v: "-" if v is None else f"{v:.4g}"),
            ("images_per_j", "images/J", lambda v: "-" if v is None else f"{v:.4g}"),
            ("window_s", "window s", lambda v: fmt_num(v, ".1f")),
            ("power_mean_w", "mean W", lambda v: fmt_num(v, ".0f")),
            ("power_max_w", "max W", lambda v: fmt_num(v, ".0f")),
            ("samples", "samples", lambda v: fmt_num(v, ".0f")),
            ("temperature_c", "temp C", lambda v: "-" if v is None or v[0] is None else f"{v[0]:.0f}->{v[1]:.0f}"),
            ("throttled", "throttled", lambda v: "-" if v is None else ("yes" if v else "no"))]))
    if not measured:
        reasons = sorted({x["note"] for x in rows if x["note"]})
        lines += ["", "Energy was not measurable here: " + ("; ".join(reasons) if reasons else
                  "no energy fields were recorded (this perfkit's harness does not read energy counters yet)")
                  + ". Throughput is reported; J/image needs NVML (GPU) or a readable RAPL counter (CPU)."]
    else:
        best = min(measured, key=lambda x: x["j_per_image"])
        lines += ["", f"Most efficient: {best['config']} {best['pass']} on {best['device']}, "
                      f"{best['j_per_image']:.4g} J/image ({best['images_per_j']:.4g} images/J)."]
        if any(x["throttled"] for x in measured):
            lines.append("Rows marked throttled had a power or thermal clock-event reason active during the window.")
    lines += ["", "Energy windows last at least 5 s (the case is repeated to fill them): NVML's counter updates about "
              "every 100 ms and its power sensor samples part of the runtime (Yang et al., SC'24). Power timelines "
              "are in the store's power_samples table; the summary data holds them thinned to "
              f"{TIMELINE_POINTS} points."]
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"rows": rows})
