"""ingredients: what dropout, LRN and overlapping pooling each cost in time and memory per pass.

The paper's network (alexnet2012 unless --variant says otherwise) against the same network without each ingredient,
built by perfkit.specs' ablations (the parameters are the same in all of them, so every network runs on one set):
- `<variant>-nodropout`: dropout layers removed (drop6, drop7);
- `<variant>-nolrn`: local response normalization removed (lrn1, lrn2);
- `<variant>-pool2x2`: every 3x3 stride-2 max pool replaced by a non-overlapping 2x2 stride-2 one (the paper's
  comparison; the map sizes stay 55 -> 27 -> 13 -> 6).
Whole network, forward, backward and train_step. An ingredient's cost is the full network's time (or peak memory) less
the ablated network's, and its share is that over the full network's. Beside them, per-layer rows of the ingredient
layers themselves (lrn1, lrn2, drop6, drop7, the overlapping pools, and the 2x2 pools of the ablated network), whose
sum is a second estimate of the same cost (without what removing a layer changes around it).

Memory: on a GPU, the torch allocator's peak during the timed repetitions (activations, gradients and parameters of
this case alone). Not compared on the CPU: the process's peak resident set size in a case's window also holds what
earlier cases left behind (the interpreter, the parameters, the float64 reference results, memory freed to an allocator
that keeps it), so its differences between networks are not the networks'.

Grids: the GPU when there is one (torch and triton, every pass), the CPU when asked for or when there is no GPU
(torch; triton's rows skipped with the reason).
- quick: CPU batch 4, GPU batch 128. full: CPU batch 16, GPU batch 128. --batch sets both.
- options.extra narrows it (the tests): "layers" (layer names, "network" for the whole networks), "passes",
  "ablations" (any of dropout, lrn, pooling).
"""
from __future__ import annotations

from perfkit.cases import NETWORK, grid
from perfkit.app.tables import fmt_ms, format_table, ratio
from perfkit.specs import build_network, variant_name
from perfkit.study import Study, StudyOptions, Summary
from perfkit.studies._common import (choose, device_title, first, fmt_bytes, get, not_measured, num, ok_rows,
                                     plan_devices)

NAME = "ingredients"
DESCRIPTION = ("what dropout, LRN and overlapping pooling each cost in time and peak memory per pass: the network "
               "against ablated versions, and the ingredient layers alone")
PASSES = ("forward", "backward", "train_step")
BACKENDS = ("torch", "triton")
CPU_BATCH = {"quick": 4, "full": 16}
GPU_BATCH = 128
#: ingredient -> how the ablated network is named from the full one, and the layer kinds that are the ingredient
INGREDIENTS = {
    "dropout": {"ablation": {"without": ("dropout",)}, "kinds": ("dropout",),
                "what": "dropout (removed)"},
    "lrn": {"ablation": {"without": ("lrn",)}, "kinds": ("lrn",), "what": "local response normalization (removed)"},
    "pooling": {"ablation": {"pooling": "nonoverlapping"}, "kinds": ("maxpool",),
                "what": "overlapping 3x3 stride-2 pooling (against 2x2 stride 2)"},
}


def ablated(variant: str, ingredient: str) -> str:
    return variant_name(variant, **INGREDIENTS[ingredient]["ablation"])


def ingredient_layers(variant: str, ingredient: str) -> list[str]:
    """The layers of `variant` that are the ingredient (empty when the variant does not have it)."""
    kinds = INGREDIENTS[ingredient]["kinds"]
    return [s.name for s in build_network(variant).layers if s.kind in kinds and not _inert(s)]


def _inert(spec) -> bool:
    return spec.kind == "dropout" and spec.p == 0  # kernelbench's p=0 dropout does nothing


def present(variant: str, ingredients) -> list[str]:
    """The ingredients the variant has (owt and kernelbench have no LRN; kernelbench's dropout is p=0)."""
    return [i for i in ingredients if ingredient_layers(variant, i)]


def cases(options: StudyOptions):
    form = "quick" if options.quick else "full"
    cpus, gpus = plan_devices(options, cpu="alone")
    variant = options.variant
    ingredients = present(variant, choose(options, "ablations", tuple(INGREDIENTS)))
    passes = list(choose(options, "passes", PASSES))
    wanted = choose(options, "layers", None)
    out = []
    for device in gpus + cpus:
        gpu = device.startswith("cuda")
        batch = options.batch or (GPU_BATCH if gpu else CPU_BATCH[form])
        common = dict(backend=list(BACKENDS), device=device, batch=batch, pass_name=passes,
                      threads=None if gpu else options.threads)
        if wanted is None or NETWORK in wanted:
            out += grid(variant=[variant] + [ablated(variant, i) for i in ingredients], layer=NETWORK, **common)
        for ingredient in ingredients:
            layers = [name for name in ingredient_layers(variant, ingredient) if wanted is None or name in wanted]
            if layers:
                out += grid(variant=variant, layer=layers, **common)
            if ingredient == "pooling":  # the 2x2 pools that replace them
                replacement = ablated(variant, "pooling")
                pools = [name for name in ingredient_layers(replacement, "pooling")
                         if wanted is None or name in wanted]
                if pools:
                    out += grid(variant=replacement, layer=pools, **common)
    return out


# -- summary -----------------------------------------------------------------------------------------------------------
def memory_of(row) -> tuple[float | None, str | None]:
    """A row's peak memory and what it is: the torch allocator's peak for the case on a GPU. None on the CPU: the
    process's peak RSS in a case's window also holds what earlier cases left behind (memory freed to an allocator that
    keeps it), so its differences between two cases are not the networks'."""
    if str(row.device).startswith("cuda"):
        return num(get(row, "torch_peak_allocated_bytes")), "torch allocator peak"
    return None, None


def _diff(a, b):
    return a - b if a is not None and b is not None else None


def ingredient_table(df, variant: str) -> list[dict]:
    """Per (device, backend, pass, batch) and ingredient, from ok rows only: the full and ablated networks' times and
    peak memory, the ingredient's cost (full - ablated) and share of the full network, and the ingredient layers'
    own times (for pooling: the overlapping pools less the 2x2 pools) and their share."""
    ok = ok_rows(df)
    out = []
    if df.empty:
        return out
    for (device, backend, pass_name, batch), part in df.groupby(["device", "backend", "pass_name", "batch"],
                                                                sort=False):
        good = ok[(ok.device == device) & (ok.backend == backend) & (ok.pass_name == pass_name) & (ok.batch == batch)]
        full = first(good, variant=variant, layer=NETWORK)
        full_s = num(full.time_median_s) if full is not None else None
        full_mem, mem_kind = memory_of(full) if full is not None else (None, None)
        for ingredient in present(variant, INGREDIENTS):
            name = ablated(variant, ingredient)
            planned = part[(part.variant == name) | part.layer.isin(ingredient_layers(variant, ingredient))]
            if planned.empty:
                continue
            abl = first(good, variant=name, layer=NETWORK)
            abl_s = num(abl.time_median_s) if abl is not None else None
            abl_mem = memory_of(abl)[0] if abl is not None else None
            layer_times = [num(r.time_median_s) for _, r in good[(good.variant == variant) & good.layer.isin(
                ingredient_layers(variant, ingredient))].iterrows()]
            expected = len(ingredient_layers(variant, ingredient))
            layers_s = sum(layer_times) if len(layer_times) == expected and None not in layer_times else None
            if ingredient == "pooling" and layers_s is not None:
                pools = ingredient_layers(name, ingredient)
                replaced = [num(r.time_median_s) for _, r in good[(good.variant == name)
                                                                   & good.layer.isin(pools)].iterrows()]
                layers_s = layers_s - sum(replaced) if len(replaced) == len(pools) and None not in replaced else None
            saved = _diff(full_s, abl_s)
            mem_saved = _diff(full_mem, abl_mem)
            out.append({"device": device, "backend": backend, "pass": pass_name, "batch": int(batch),
                        "ingredient": ingredient, "what": INGREDIENTS[ingredient]["what"], "ablated": name,
                        "full_s": full_s, "ablated_s": abl_s, "cost_s": saved, "share": ratio(saved, full_s),
                        "layers_s": layers_s, "layers_share": ratio(layers_s, full_s),
                        "full_memory_bytes": full_mem, "ablated_memory_bytes": abl_mem, "memory_bytes": mem_saved,
                        "memory_share": ratio(mem_saved, full_mem), "memory_kind": mem_kind})
    return out


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def summarize(df, options: StudyOptions) -> Summary:
    variant = options.variant
    rows = ingredient_table(df, variant)
    lines = [f"ingredients: what dropout, LRN and overlapping pooling cost in {variant}, from this run's measured rows",
             "cost = the full network less the network without the ingredient (for pooling: with 2x2 stride-2 "
             "pools instead); share = that over the full network. 'layers' = the ingredient's own layers timed "
             "alone (pooling: overlapping pools less 2x2 pools)."]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["device"], r["backend"], r["pass"], r["batch"]), []).append(r)
    shown = False
    for (device, backend, pass_name, batch), part in groups.items():
        if not any(r[k] is not None for r in part for k in ("full_s", "ablated_s", "layers_s")):
            continue  # nothing measured here: the list of cases without a result says why
        shown = True
        full_s = next((r["full_s"] for r in part if r["full_s"] is not None), None)
        mem_kind = next((r["memory_kind"] for r in part if r["memory_kind"]), None)
        full_mem = next((r["full_memory_bytes"] for r in part if r["full_memory_bytes"] is not None), None)
        columns = [("ingredient", "ingredient", None),
                   ("ablated_s", "without ms", fmt_ms), ("cost_s", "cost ms", fmt_ms), ("share", "share", _pct),
                   ("layers_s", "layers ms", fmt_ms), ("layers_share", "layers share", _pct)]
        head = f"{device_title(df, device)}, {backend}, {pass_name}, float32, batch {batch}: full network " \
               f"{fmt_ms(full_s)} ms"
        if mem_kind:
            head += f", {mem_kind} {fmt_bytes(full_mem)}"
            columns += [("memory_bytes", f"{mem_kind} saved", fmt_bytes), ("memory_share", "memory share", _pct)]
        lines += ["", head, format_table(part, columns)]
    if not shown:
        lines += ["", "No network or ingredient layer was measured in this run."]
    if any(not str(r["device"]).startswith("cuda") for r in rows if r["full_s"] is not None):
        lines += ["", "Memory is not compared on the CPU: a case's peak RSS also holds what earlier cases left behind, "
                      "so differences between cases are not the networks'. On a GPU it is the torch allocator's peak "
                      "for the case alone."]
    lines += ["", "A negative cost means the network without the ingredient ran slower (or used more): the "
                  "difference is within this machine's noise, or removing a layer changed the kernels around it."]
    lines += [""] + not_measured(df)
    return Summary("\n".join(lines).strip(), {"variant": variant, "rows": rows,
                                             "ablations": {i: ablated(variant, i) for i in present(variant,
                                                                                                  INGREDIENTS)}})


STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize)
