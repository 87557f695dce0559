"""baseline: every layer of a network and the whole network, forward and train_step, on the stock PyTorch backend, on
each device found. On a machine without a GPU this is the CPU baseline the other studies compare with; it is what
`perfkit run` runs by default."""
from __future__ import annotations

from perfkit.cases import NETWORK, grid
from perfkit.report import fmt_ms, fmt_num, fmt_si, format_table
from perfkit.specs import build_network
from perfkit.study import StudyOptions, Summary

NAME = "baseline"
DESCRIPTION = "every layer and the whole network, forward and train_step, stock PyTorch, on each device found"
PASSES = ("forward", "train_step")
QUICK_BATCH = 8  # a 2-core CPU finishes the quick grid in about a minute
FULL_BATCH = 128  # the paper's batch size


def cases(options: StudyOptions):
    batch = options.batch or (QUICK_BATCH if options.quick else FULL_BATCH)
    layers = [spec.name for spec in build_network(options.variant).layers] + [NETWORK]
    return grid(variant=options.variant, layer=layers, backend="torch", device=list(options.devices),
                dtype="float32", batch=batch, pass_name=list(PASSES), threads=options.threads)


def summarize(df, options: StudyOptions) -> Summary:
    """Per device: each layer's forward and train_step time, rate and share of the summed layer time."""
    texts, data = [], {"devices": {}}
    for device, part in df.groupby("device", sort=False):
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
        texts.append("\n".join(lines))
        data["devices"][device] = {"title": title, "rows": rows}
    return Summary("\n\n".join(texts) if texts else "no measurements", data)
