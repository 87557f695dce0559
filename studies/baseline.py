"""baseline: every layer of a network and the whole network, forward and train_step, on the stock PyTorch backend, on
each device found. On a machine without a GPU this is the CPU baseline the other studies compare with; it is what
`perfkit run` runs by default.

On the CPU it also sets the other CPU baselines (studies._common.CPU_BASELINES: eager channels_last, torch.compile,
ONNX Runtime where installed) beside stock eager, with 1 thread and with all threads, measured side by side: on the
conv2 and fc6 layers and the whole network in the quick form (a convolution, a GEMM and everything), on every
convolution and linear layer and the network in the full form. The quick form leaves out compile's whole-network
train_step (compiling it takes minutes on a 2-core CPU, longer than the rest of the quick start), unless
`options.extra["baseline_layers"]` names the layers. The summary names the fastest CPU configuration per
layer and pass, since a GPU-vs-CPU ratio is only as honest as the CPU side it divides by."""
from __future__ import annotations

from perfkit.cases import NETWORK, grid
from perfkit.app.tables import fmt_ms, fmt_num, fmt_si, format_table
from perfkit.specs import build_network
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (STOCK_CPU, cpu_baseline_cases, cpu_baseline_rows, cpu_baseline_text, choose,
                                     gemm_layers_and_network)

NAME = "baseline"
DESCRIPTION = "every layer and the whole network, forward and train_step, stock PyTorch, on each device found"
PASSES = ("forward", "train_step")
QUICK_BATCH = 8  # a 2-core CPU finishes the quick grid in about a minute
FULL_BATCH = 128  # the paper's batch size


#: The layers the CPU baselines are compared on in the quick form: a convolution, the largest GEMM, the network.
QUICK_BASELINE_LAYERS = ("conv2", "fc6", NETWORK)


def baseline_layers(options: StudyOptions) -> list[str]:
    """The layers the CPU baselines run on (`options.extra["baseline_layers"]` overrides)."""
    default = list(QUICK_BASELINE_LAYERS) if options.quick else gemm_layers_and_network(options.variant)
    names = {spec.name for spec in build_network(options.variant).layers} | {NETWORK}
    return [name for name in choose(options, "baseline_layers", default) if name in names]


def cases(options: StudyOptions):
    batch = options.batch or (QUICK_BATCH if options.quick else FULL_BATCH)
    layers = [spec.name for spec in build_network(options.variant).layers] + [NETWORK]
    out = []
    if "cpu" in options.devices:  # first, so each layer's baselines run next to each other
        for case in cpu_baseline_cases(options, baseline_layers(options), batch, PASSES, (1, options.threads)):
            if options.quick and case.backend == "compile" and case.layer == NETWORK and \
                    case.pass_name == "train_step" and "baseline_layers" not in options.extra:
                continue  # compiling the whole training step takes minutes on a small CPU: not in the quick start
            out.append(case)
    out += grid(variant=options.variant, layer=layers, backend="torch", device=list(options.devices),
                dtype="float32", batch=batch, pass_name=list(PASSES), threads=options.threads)
    unique: dict = {}
    for case in out:  # each case once, where it first comes
        unique.setdefault(case.key, case)
    return list(unique.values())


def summarize(df, options: StudyOptions) -> Summary:
    """Per device: each layer's forward and train_step time, rate and share of the summed layer time, on stock eager
    at the study's thread count; then, on the CPU, the CPU baselines side by side."""
    texts, data = [], {"devices": {}}
    stock_threads = options.threads
    for device, full in df.groupby("device", sort=False):
        # The per-layer table is stock eager at the study's thread count (all threads unless --threads says).
        part = full[(full.backend == STOCK_CPU)]
        if device == "cpu" and stock_threads is None and part.threads.notna().any():
            part = part[part.threads == part.threads.max()]
        elif device == "cpu" and stock_threads is not None:
            part = part[part.threads == stock_threads]
        ok = part[part.status == "ok"]
        rows = []
        for layer, by_layer in part.groupby("layer", sort=False):
            row = {"layer": layer, "kind": by_layer.layer_kind.iloc[0]}
            for pass_name in PASSES:
                hit = ok[(ok.layer == layer) & (ok.pass_name == pass_name)]
                if len(hit):
                    r = hit.iloc[0]
                    row[f"{pass_name}_s"] = r.time_median_s
                    row[f"{pass_name}_images_per_s"] = r.images_per_s
                    row[f"{pass_name}_flops_per_s"] = r.achieved_flops_per_s
            errors = by_layer.error_rel.dropna()
            row["error_max"] = float(errors.max()) if len(errors) else None
            bad = by_layer[by_layer.status != "ok"]
            row["status"] = "ok" if bad.empty else ", ".join(sorted(set(bad.status)))
            rows.append(row)
        layer_rows = [r for r in rows if r["layer"] != NETWORK]
        summed = sum(r.get("train_step_s") or 0 for r in layer_rows)
        for r in layer_rows:
            r["train_share"] = (r["train_step_s"] / summed * 100) if r.get("train_step_s") and summed else None
        batch = int(part.batch.iloc[0])
        threads = part.threads.dropna()
        name = part.device_name.dropna()
        title = (f"{device} ({name.iloc[0] if len(name) else 'unknown'}), {options.variant}, float32, batch {batch}"
                 + (f", {int(threads.iloc[0])} threads" if len(threads) else ""))
        table = format_table(rows, [
            ("layer", "layer", None), ("kind", "kind", None),
            ("forward_s", "fwd ms", fmt_ms), ("forward_images_per_s", "fwd img/s", fmt_num),
            ("forward_flops_per_s", "fwd FLOP/s", lambda v: fmt_si(v)),
            ("train_step_s", "train ms", fmt_ms), ("train_step_images_per_s", "train img/s", fmt_num),
            ("train_step_flops_per_s", "train FLOP/s", lambda v: fmt_si(v)),
            ("train_share", "% of layers", lambda v: fmt_num(v, ".1f")),
            ("error_max", "rel. error", lambda v: "-" if v is None else f"{v:.1e}"),
            ("status", "status", None)])
        network = next((r for r in rows if r["layer"] == NETWORK), {})
        lines = [title, table]
        if network.get("train_step_s") and summed:
            lines.append(f"whole-network train step {network['train_step_s'] * 1e3:.1f} ms vs "
                         f"{summed * 1e3:.1f} ms summed over layers measured one by one.")
        lines.append("FLOP/s count a multiply-add as 2 FLOPs; errors are relative to float64 on the CPU.")
        entry = {"title": title, "rows": rows}
        if device == "cpu":
            baselines = cpu_baseline_rows(full)
            text = cpu_baseline_text(baselines, f"CPU baselines, float32, batch {batch}, measured side by side:")
            if text:
                lines += ["", text] + _best_lines(baselines)
            entry["cpu_baselines"] = baselines
        texts.append("\n".join(lines))
        data["devices"][device] = entry
    return Summary("\n\n".join(texts) if texts else "no measurements", data)


def _best_lines(baselines: list[dict]) -> list[str]:
    """A sentence per whole-network pass naming the fastest CPU configuration and its gain over stock eager."""
    from perfkit.studies._common import cpu_config_label, fmt_x

    lines = []
    for r in baselines:
        best = r["best"]
        if r["layer"] == NETWORK and best:
            lines.append(f"Whole network, {r['pass']}: the fastest CPU configuration is "
                         f"{cpu_config_label(best['backend'], best['threads'])}, {fmt_x(best['vs_stock_all'])} stock "
                         "eager NCHW on all threads.")
    return lines


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize)
