"""precision: float32, TF32, float16 and bfloat16, as torch users run them and as perfkit's kernels run them.

- torch: float32 (IEEE, TF32 off), tf32 (float32 storage, TF32 tensor-core matmuls), and float16 / bfloat16 under
  torch.autocast (parameters and inputs stay float32, the forward's ops run in the autocast dtype; the runner's case
  option `autocast`).
- triton: native float32, tf32, float16, bfloat16 (parameters and activations in that dtype), forward only for now.

For each layer and pass the summary gives every configuration's speedup over torch float32 and its relative error
against the float64 CPU reference (the check's tolerance depends on the dtype).

Grids: the conv and linear layers (where precision changes the arithmetic; elementwise layers under autocast stay
float32) and the whole network; forward and train_step.
- GPU: batch 128 (quick: 128, and only conv2, fc6 and the network).
- CPU: torch float32 and bfloat16 autocast, and in the full form float16 autocast (CPU float16 convolutions are slow
  fallbacks: minutes in a quick run); TF32 is CUDA only and triton is not timed on the CPU. Batch 16 (quick: 4, conv2,
  fc6 and the network).
"""
from __future__ import annotations

from perfkit.cases import NETWORK, Case
from perfkit.app.tables import fmt_ms, format_table
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (DTYPE_SHORT, choose, choose_layers, config_label, device_title, fmt_x,
                                     gemm_layers_and_network, is_autocast, not_measured, num, ok_rows, plan_devices)

NAME = "precision"
DESCRIPTION = "fp32, tf32, fp16, bf16: torch with autocast, triton native; speedup over fp32 and error per layer"
PASSES = ("forward", "train_step")
#: (backend, dtype, autocast), in the order the summary shows them; the first is the reference configuration.
CONFIGS = (("torch", "float32", False), ("torch", "tf32", False), ("torch", "float16", True),
           ("torch", "bfloat16", True), ("triton", "float32", False), ("triton", "tf32", False),
           ("triton", "float16", False), ("triton", "bfloat16", False))
CPU_CONFIGS = {"quick": (("torch", "float32", False), ("torch", "bfloat16", True)),
               "full": (("torch", "float32", False), ("torch", "bfloat16", True), ("torch", "float16", True))}
GPU_BATCH = {"quick": 128, "full": 128}
CPU_BATCH = {"quick": 4, "full": 16}
QUICK_LAYERS = ("conv2", "fc6", NETWORK)


def _case(options, layer, device, backend, dtype, autocast, batch, pass_name):
    return Case(variant=options.variant, layer=layer, backend=backend, device=device, dtype=dtype, batch=batch,
                pass_name=pass_name, threads=None if device.startswith("cuda") else options.threads,
                options=(("autocast", True),) if autocast else ())


def cases(options: StudyOptions):
    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="alone")
    layers = choose_layers(options, list(QUICK_LAYERS) if options.quick else gemm_layers_and_network(options.variant))
    passes = choose(options, "passes", PASSES)
    out = []
    for device, configs, batch in [(g, CONFIGS, GPU_BATCH[form]) for g in gpus] + \
                                  [(c, CPU_CONFIGS[form], CPU_BATCH[form]) for c in cpus]:
        batch = options.batch or batch
        for pass_name in passes:
            for layer in layers:
                out += [_case(options, layer, device, b, d, a, batch, pass_name) for b, d, a in configs]
    return out


def comparison(df) -> list[dict]:
    """One dict per (device, pass, batch, layer): per configuration its time, speedup over torch float32 and error."""
    ok = ok_rows(df)
    out = []
    for (device, pass_name, batch, layer), part in df.groupby(["device", "pass_name", "batch", "layer"], sort=False):
        row = {"device": device, "pass": pass_name, "batch": int(batch), "layer": layer, "configs": {}}
        ref = ok[(ok.device == device) & (ok.pass_name == pass_name) & (ok.batch == batch) & (ok.layer == layer)
                 & (ok.backend == "torch") & (ok.dtype == "float32")]
        ref_s = num(ref.time_median_s.iloc[0]) if len(ref) else None
        for _, r in part.iterrows():
            label = config_label(r.backend, r["dtype"], is_autocast(r))
            t = num(r.time_median_s) if r.status == "ok" else None
            row["configs"][label] = {"status": r.status, "time_s": t, "error": num(r.error_rel),
                                     "tolerance": num(r.error_tolerance),
                                     "speedup_vs_fp32": ref_s / t if t and ref_s else None}
        out.append(row)
    return out


def _cell(c) -> str:
    if c is None:
        return "-"
    err = f" err {c['error']:.0e}" if c["error"] is not None else ""
    if c["status"] != "ok":
        return c["status"] + err
    return f"{fmt_x(c['speedup_vs_fp32'])}{err}"


def summarize(df, options: StudyOptions) -> Summary:
    rows = comparison(df)
    labels = [config_label(b, d, a) for b, d, a in CONFIGS]
    lines = ["precision: speedup over torch float32 (TF32 off) and relative error against the float64 CPU reference; "
             "torch fp16/bf16 run under torch.autocast (float32 parameters), triton in the dtype natively"]
    groups = {}
    for r in rows:
        groups.setdefault((r["device"], r["pass"], r["batch"]), []).append(r)
    for (device, pass_name, batch), part in groups.items():
        if not any(c["status"] in ("ok", "incorrect") for r in part for c in r["configs"].values()):
            continue  # nothing ran here: the list of cases without a result says why
        present = [label for label in labels if any(label in r["configs"] for r in part)]
        table = []
        for r in part:
            ref = r["configs"].get(labels[0])
            t = {"layer": r["layer"], "ref": f"{fmt_ms(ref['time_s'])} ms" if ref and ref["time_s"] else "-"}
            t.update({label: _cell(r["configs"].get(label)) for label in present[1:] if label != labels[0]})
            table.append(t)
        columns = [("layer", "layer", None), ("ref", "torch fp32 time", None)]
        columns += [(label, label, None) for label in present if label != labels[0]]
        lines += ["", f"{device_title(df, device)}, {pass_name}, batch {batch}", format_table(table, columns)]
    tol = sorted({(d, num(t)) for d, t in zip(df.dtype, df.error_tolerance) if num(t) is not None})
    if tol:
        lines += ["", "tolerances: " + ", ".join(f"{DTYPE_SHORT.get(d, d)} {t:g}" for d, t in tol)]
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"rows": rows})


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize)
