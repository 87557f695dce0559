"""energy: joules per image and images per joule for each backend and dtype, with power timelines.

The measuring follows DESIGN.md's energy rules, which the harness implements: after a case's timed repetitions, the
case runs back to back over a sustained window (at least 5 s on a GPU, 1 s on a CPU with RAPL) in which energy comes
from NVML's total-energy counter (CPU rows: RAPL where readable), a power timeline from instant-power samples (table
power_samples), clocks, temperatures at start and end, and throttle reasons, with rows flagged where power or thermal
limits bit. This study chooses the grid and summarizes; unlike the other studies it keeps the energy window in its
--quick form (QUICK_ENERGY). Where energy cannot be read (no NVML, RAPL absent or unreadable) the rows carry null
energy with the reason, and the summary says that energy was not measurable here; throughput is still reported.

Grids: the whole network, forward and train_step.
- GPU, batch 128: torch fp32 (TF32 off), tf32, bf16 (native) and bf16 under autocast; compile fp32 and bf16; triton
  fp32 and bf16 (forward only). quick: torch fp32 and bf16, compile bf16, triton bf16.
- CPU: torch fp32 (full: also compile fp32); batch 32 (quick: 4).
"""
from __future__ import annotations

from perfkit.cases import NETWORK, Case
from perfkit.app.tables import fmt_num, format_table
from perfkit.results.store import load_power_samples as _load_power_samples
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (choose, config_label, device_title, get, is_autocast, not_measured, num,
                                     plan_devices, this_run)

NAME = "energy"
DESCRIPTION = "J/image and images/J per backend and dtype (NVML energy counter, RAPL on the CPU), with power timelines"
PASSES = ("forward", "train_step")
QUICK_ENERGY = True  # --quick keeps the sustained energy window: energy is what this study is for
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


def rapl_reason() -> str | None:
    """Why RAPL cannot be read on this machine (the harness's check), or None when it can."""
    from perfkit.measure.monitors import rapl_domains

    return rapl_domains()[1]


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


def load_power_samples(df):
    """This run's power samples (the store's power_samples table), or None when there are none."""
    return this_run(df, _load_power_samples)


def timeline(samples, case_key: str, points: int = TIMELINE_POINTS) -> list[tuple[float, float]]:
    """A case's power timeline, (t_s, power_w), evenly thinned to at most `points` samples."""
    part = samples[samples.case_key == case_key]
    if part.empty:
        return []
    step = max(1, -(-len(part) // points))
    thin = part.iloc[::step]
    return [(float(t), float(p)) for t, p in zip(thin.t_s, thin.power_w)]


def energy_fields(r) -> dict:
    """A row's energy as the harness recorded it: the device's energy over the window (GPU: NVML; CPU: RAPL), J/image
    and images/J (null where energy was not measured, with the reasons), and the host CPU's energy in the same window
    on GPU rows."""
    gpu = str(r.device).startswith("cuda")
    notes = [get(r, "energy_note")] + ([get(r, "power_note")] if gpu else [])
    return {"energy_j": num(get(r, "energy_j")), "window_s": num(get(r, "energy_window_s")),
            "j_per_image": num(get(r, "energy_per_image_j")), "images_per_j": num(get(r, "images_per_j")),
            "source": get(r, "energy_source"),
            "host_cpu_energy_j": num(get(r, "cpu_energy_j")) if gpu else None,
            "note": "; ".join(dict.fromkeys(n for n in notes if n)) or None}


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
            ("host_cpu_energy_j", "host CPU J", lambda v: fmt_num(v, ",.1f")),
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
    lines += ["", "Energy windows last at least 5 s on a GPU (the case runs back to back to fill them): NVML's "
              "counter updates about every 100 ms and its power sensor samples part of the runtime (Yang et al., "
              "SC'24). Power timelines are in the store's power_samples table; the summary data holds them thinned "
              f"to {TIMELINE_POINTS} points."]
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"rows": rows})


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize, quick_energy=QUICK_ENERGY)
