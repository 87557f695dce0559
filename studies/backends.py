"""backends: triton vs torch eager vs torch.compile, per layer, whole network and pass, for each dtype and batch size.

Every row carries its correctness error against the float64 CPU reference; the summary shows each backend's speedup
over eager (only for rows that passed the check) and its error, and says which cases gave no speed result and why
(triton on the CPU: the interpreter's timings are not performance; TF32 off CUDA; triton's backward not there yet).

Grids:
- GPU full: every layer + the network; forward, backward, train_step; float32 (TF32 off), tf32, float16, bfloat16;
  batch 32 and 128 for torch and triton, 128 for compile (each compiled shape costs seconds to a minute of compile
  time; the batch study sweeps batch sizes).
- GPU quick: conv2, lrn1, fc6 and the network (a grouped conv, the LRN, a large GEMM, the whole), forward and
  train_step, float32 and bfloat16, batch 128: 16 shapes to compile rather than hundreds.
- CPU (on a machine without a GPU, or --device cpu): torch and compile (triton is skipped with the reason);
  float32 only: TF32 is CUDA only, float16 convolutions on a CPU are slow fallbacks, and native bfloat16 fails in
  LRN on the CPU (torch 2.13 has no bfloat16 CPU kernel for the avg_pool3d inside local_response_norm; the
  precision study runs bfloat16 on the CPU under autocast instead).
  quick: conv2, lrn1, fc6 and the network; forward and train_step; float32; batch 4 (compile's whole-network
  train_step is left out: compiling it takes minutes on a small CPU).
  full: every layer + the network, forward/backward/train_step, batch 16.
- --batch N sets every batch size.
"""
from __future__ import annotations

from perfkit.cases import NETWORK, grid
from perfkit.app.tables import fmt_ms, format_table, geomean
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (all_layers_and_network, choose, choose_layers, device_title, fmt_x, not_measured,
                                     num, ok_rows, plan_devices)

NAME = "backends"
DESCRIPTION = "triton vs torch eager vs torch.compile per layer, network, pass, dtype and batch: speedup and error"
BACKENDS = ("torch", "compile", "triton")
GPU_DTYPES = {"quick": ("float32", "bfloat16"), "full": ("float32", "tf32", "float16", "bfloat16")}
CPU_DTYPES = {"quick": ("float32",), "full": ("float32",)}
GPU_PASSES = {"quick": ("forward", "train_step"), "full": ("forward", "backward", "train_step")}
CPU_PASSES = GPU_PASSES
GPU_BATCHES = {"quick": (128,), "full": (32, 128)}
GPU_COMPILE_BATCHES = {"quick": (128,), "full": (128,)}
CPU_BATCHES = {"quick": (4,), "full": (16,)}
#: The quick form's layers: a grouped conv, the LRN (where fusion matters most), a large GEMM, and the network.
QUICK_LAYERS = ("conv2", "lrn1", "fc6", NETWORK)


def cases(options: StudyOptions):
    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="alone")
    out = []
    for gpu in gpus:
        layers = choose_layers(options, list(QUICK_LAYERS) if options.quick
                               else all_layers_and_network(options.variant))
        batches = [options.batch] if options.batch else list(GPU_BATCHES[form])
        compile_batches = [options.batch] if options.batch else list(GPU_COMPILE_BATCHES[form])
        for batch in dict.fromkeys(batches + compile_batches):
            backends = [b for b in BACKENDS if batch in (compile_batches if b == "compile" else batches)]
            out += grid(variant=options.variant, layer=layers, backend=backends, device=gpu,
                        dtype=list(choose(options, "dtypes", GPU_DTYPES[form])), batch=batch,
                        pass_name=list(choose(options, "passes", GPU_PASSES[form])))
    for cpu in cpus:
        layers = choose_layers(options, list(QUICK_LAYERS) if options.quick
                               else all_layers_and_network(options.variant))
        for batch in [options.batch] if options.batch else CPU_BATCHES[form]:
            for case in grid(variant=options.variant, layer=layers, backend=list(BACKENDS), device=cpu,
                             dtype=list(choose(options, "dtypes", CPU_DTYPES[form])), batch=batch,
                             pass_name=list(choose(options, "passes", CPU_PASSES[form])), threads=options.threads):
                if options.quick and case.backend == "compile" and case.layer == NETWORK and \
                        case.pass_name != "forward" and "layers" not in options.extra:
                    continue  # compiling the whole training step takes minutes on a small CPU
                out.append(case)
    return out


def comparison(df) -> list[dict]:
    """One dict per (device, pass, dtype, batch, layer): each backend's median time, its speedup over eager (ok rows
    only) and its error (every row that was checked), and its status."""
    out = []
    ok = ok_rows(df)
    keys = ["device", "pass_name", "dtype", "batch", "layer"]
    for (device, pass_name, dtype, batch, layer), part in df.groupby(keys, sort=False):
        row = {"device": device, "pass": pass_name, "dtype": dtype, "batch": int(batch), "layer": layer}
        eager = ok[(ok.device == device) & (ok.pass_name == pass_name) & (ok.dtype == dtype) & (ok.batch == batch)
                   & (ok.layer == layer) & (ok.backend == "torch")]
        eager_s = num(eager.time_median_s.iloc[0]) if len(eager) else None
        for backend in BACKENDS:
            hit = part[part.backend == backend]
            if hit.empty:
                continue
            r = hit.iloc[0]
            t = num(r.time_median_s) if r.status == "ok" else None
            row[f"{backend}_s"] = t
            row[f"{backend}_speedup"] = eager_s / t if t and eager_s else None
            row[f"{backend}_error"] = num(r.error_rel)
            row[f"{backend}_status"] = r.status
        out.append(row)
    return out


def _cell(row, backend) -> str:
    status = row.get(f"{backend}_status")
    if status is None:
        return "-"
    error = row.get(f"{backend}_error")
    err = f" err {error:.0e}" if error is not None else ""
    if status != "ok":
        return status + err
    if backend == "torch":
        return f"{fmt_ms(row['torch_s'])} ms{err}"
    return f"{fmt_x(row[f'{backend}_speedup'])}{err}"


def summarize(df, options: StudyOptions) -> Summary:
    rows = comparison(df)
    lines = ["backends: speedup over torch eager (ok rows only) and relative error against the float64 CPU "
             "reference on every checked row"]
    groups = {}
    for r in rows:
        groups.setdefault((r["device"], r["pass"], r["dtype"], r["batch"]), []).append(r)
    headline = []
    for (device, pass_name, dtype, batch), part in groups.items():
        if not any(r.get(f"{b}_status") in ("ok", "incorrect") for r in part for b in BACKENDS):
            continue  # nothing ran here: the list of cases without a result says why
        table = [{"layer": r["layer"], **{b: _cell(r, b) for b in BACKENDS}} for r in part]
        columns = [("layer", "layer", None), ("torch", "eager time, error", None),
                   ("compile", "compile speedup, error", None), ("triton", "triton speedup, error", None)]
        lines += ["", f"{device_title(df, device)}, {pass_name}, {dtype}, batch {batch}", format_table(table, columns)]
        for backend in ("compile", "triton"):
            layer_speedups = [r.get(f"{backend}_speedup") for r in part if r["layer"] != NETWORK]
            g = geomean(layer_speedups, positive_only=False)
            net = next((r.get(f"{backend}_speedup") for r in part if r["layer"] == NETWORK), None)
            if g is not None or net is not None:
                headline.append({"device": device, "pass": pass_name, "dtype": dtype, "batch": batch,
                                 "backend": backend, "layers_geomean_speedup": g,
                                 "layers_measured": sum(1 for v in layer_speedups if v), "network_speedup": net})
    if headline:
        lines += ["", "Over eager: geometric mean over the layers measured, and the whole network",
                  format_table(headline, [("device", "device", None), ("pass", "pass", None),
                                          ("dtype", "dtype", None), ("batch", "batch", None),
                                          ("backend", "backend", None),
                                          ("layers_geomean_speedup", "layers (geomean)", fmt_x),
                                          ("layers_measured", "layers", None),
                                          ("network_speedup", "network", fmt_x)])]
    else:
        lines += ["", "No backend other than eager has a speed result in this run."]
    lines += ["", "A speedup is eager's median time over the backend's, same device, dtype, batch and pass. An "
              "'incorrect' backend failed the check and is not timed. compile's time excludes compilation."]
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"rows": rows, "headline": headline})


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize)
