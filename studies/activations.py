"""activations: ReLU against tanh and sigmoid, as kernels and in training (the paper's Figure 1 at small scale).

1. Kernel cost. For each activation (relu, tanh, sigmoid) the network (alexnet2012 unless --variant says otherwise) is
   built with it, and three kinds of case are measured per activation layer i (act i follows conv i or fc i):
   - the activation alone (`relu1`, `tanh1`, `sigmoid1`);
   - the convolution or linear layer before it, alone (`conv1`: the same work whatever the activation; measured once,
     on the relu network);
   - the two as one case (`conv1+relu1`): the torch backend runs them as two operators (unfused, by construction);
     the triton backend fuses the activation into the GEMM's epilogue (one kernel, on the GPU).
   Forward and train_step, float32. The summary gives each activation's time over ReLU's per layer, and fused against
   unfused: the pair's time over the sum of its two parts measured alone (the torch pair shows what two calls cost,
   the triton pair what fusion saves), and triton's pair against torch's.
2. Convergence (Figure 1). A four-layer CNN (perfkit.specs.build_cifar4: three 5x5 convolutions of 32, 32 and 64
   kernels, each followed by the activation and a 3x3 stride-2 max pool, then a linear layer to the classes; see
   `cifar4_table`) trained with each activation by SGD (momentum 0.9, batch 128 as in the paper), no regularization
   (no dropout, no weight decay), the same initial weights for every activation and learning rate (perfkit.model's
   seeded init). The learning rate is tuned per activation over a grid, as the paper did ("chosen independently to
   make training as fast as possible"): the best is the one that reaches the paper's 25% training error in the fewest
   epochs. Each (activation, learning rate) is one training run: a row of the store (pass `training`, status ok,
   `time_median_s` null since nothing is repeated; `images_per_s` is the training throughput; its options carry the
   data set, epochs and learning rate) with its curve in the store's training_curves table (four points per epoch:
   training error over the evaluation images, loss, wall time; perfkit.workloads.training). The summary reports, from those
   measured curves only, epochs and training wall time to 25% error per activation and ReLU's speedup over tanh
   (tanh's epochs over ReLU's) next to the paper's six.
   Data: CIFAR-10 when pointed at its python batches (`perfkit study activations --cifar10 DIR`), otherwise
   scikit-learn's digits (1,797 real 8x8 images, one channel: the same network on 8x8 maps, 8 -> 4 -> 2 -> 1). Every
   row and curve names its data set. Training runs on the torch backend, and on a GPU on triton too (its kernels and
   TritonSGD); each run first checks one train_step of its backend against the float64 reference.

Grids:
- quick: kernel cases for act1 (after conv1, the largest maps) and act6 (after fc6); CPU batch 4, GPU batch 128.
  Training: learning rates 0.01, 0.03, 0.1; 4 epochs on digits (seconds per run on a laptop CPU), or on CIFAR-10's
  first batch (10,000 images).
- full: kernel cases for every activation layer; CPU batch 16, GPU batch 128. Training: learning rates 0.001 to 0.3
  (six, a factor of about 3 apart); 30 epochs on digits, 40 on the whole CIFAR-10 training set (the paper's Figure 1
  runs to about 35).
- Devices: the GPU when there is one (planned and skipped with the reason when there is none), the CPU when asked
  for or when there is no GPU. --batch sets the kernel cases' batch; training keeps the paper's 128.
- options.extra narrows it (the tests): "indices" (activation layers, e.g. [6]), "passes", "kernels" / "training"
  (False leaves that part out), "activations", "lrs", "epochs", "train_images" (the first N training images),
  "cifar10" (a directory).
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import torch

from perfkit.backends import SGD_MOMENTUM, float32_precision, get_backend
from perfkit.cases import NETWORK, Case, grid
from perfkit.workloads.datasets import (CIFAR10, DIGITS, Dataset, DatasetError, DatasetUnavailable, cifar10_files,
                                        load_cifar10, load_digits)
from perfkit.model import init_parameters, torch_dtype
from perfkit.app.published import figure
from perfkit.app.tables import fmt_ms, fmt_num, format_table, ratio
from perfkit.runner import CaseResult, cpu_threads, device_name
from perfkit.specs import ACTIVATIONS, build_cifar4, build_network
from perfkit.results.store import load_training_curves
from perfkit.study import Study, StudyOption, StudyOptionError, StudyOptions, Summary
from perfkit.studies._common import choose, device_title, first, fmt_x, get, not_measured, num, ok_rows, options_of, \
    plan_devices, this_run
from perfkit.workloads.training import TRAINING_PASS, first_reaching, train
from perfkit.workload import Workload, check, make_inputs, reference_results, tolerance_for

NAME = "activations"
DESCRIPTION = ("ReLU vs tanh vs sigmoid: kernel cost alone and fused into conv/linear (torch, triton), and the "
               "paper's Figure 1 at small scale (epochs and wall time to 25% training error)")

# -- kernel cost -------------------------------------------------------------------------------------------------------
KERNEL_PASSES = ("forward", "train_step")
KERNEL_BACKENDS = ("torch", "triton")
QUICK_INDICES = (1, 6)  # act1 follows conv1 (the largest maps), act6 follows fc6
CPU_BATCH = {"quick": 4, "full": 16}
GPU_BATCH = 128

# -- convergence -------------------------------------------------------------------------------------------------------
TRAIN_VARIANT = "cifar4"
TRAIN_BATCH = 128  # the paper's
EVALS_PER_EPOCH = 4
LRS = {"quick": (0.01, 0.03, 0.1), "full": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)}
EPOCHS = {("quick", DIGITS): 4, ("full", DIGITS): 30, ("quick", CIFAR10): 4, ("full", CIFAR10): 40}
QUICK_CIFAR10_BATCHES = 1  # the quick form trains on data_batch_1 only
CHECK_BATCH = 4  # images of the train_step check before a training run


def target_error() -> float:
    """Figure 1's threshold as a fraction (perfkit.app.published: 25%)."""
    return figure("paper_fig1_target_train_error").value / 100


def _form(options: StudyOptions) -> str:
    return "quick" if options.quick else "full"


def dataset_name(options: StudyOptions) -> str:
    return CIFAR10 if options.extra.get("cifar10") else DIGITS


def activation_indices(variant: str) -> list[int]:
    """The numbers of a variant's activation layers (1..7 for AlexNet)."""
    return [int(spec.name[len("relu"):]) for spec in build_network(variant).layers if spec.kind == "activation"]


@lru_cache(maxsize=None)
def kernel_layers(variant: str, activation: str, index: int) -> tuple[str, str, str]:
    """(the GEMM layer before activation `index`, the activation layer, the two as a span) in the network built with
    `activation`: ("conv1", "tanh1", "conv1+tanh1")."""
    network = build_network(variant, activation)
    act = f"{activation}{index}"
    names = network.layer_names
    gemm = names[names.index(act) - 1]
    return gemm, act, f"{gemm}+{act}"


def kernel_cases(options: StudyOptions) -> list[Case]:
    form = _form(options)
    cpus, gpus = plan_devices(options, cpu="alone")
    indices = choose(options, "indices", QUICK_INDICES if options.quick else activation_indices(options.variant))
    passes = list(choose(options, "passes", KERNEL_PASSES))
    activations = list(choose(options, "activations", ACTIVATIONS))
    out = []
    for device in gpus + cpus:
        gpu = device.startswith("cuda")
        batch = options.batch or (GPU_BATCH if gpu else CPU_BATCH[form])
        threads = None if gpu else options.threads
        for backend in KERNEL_BACKENDS:
            for index in indices:
                gemm, _, _ = kernel_layers(options.variant, "relu", index)
                out += grid(variant=options.variant, layer=gemm, backend=backend, device=device, batch=batch,
                            pass_name=passes, activation="relu", threads=threads)
                for activation in activations:
                    _, act, span = kernel_layers(options.variant, activation, index)
                    out += grid(variant=options.variant, layer=[act, span], backend=backend, device=device,
                                batch=batch, pass_name=passes, activation=activation, threads=threads)
    return out


def training_backends(device: str) -> list[str]:
    """torch everywhere; triton on a GPU (its train_step pass: its kernels and TritonSGD)."""
    triton = get_backend("triton")
    return ["torch"] + (["triton"] if device.startswith("cuda") and "train_step" in triton.passes else [])


def training_cases(options: StudyOptions) -> list[Case]:
    form = _form(options)
    cpus, gpus = plan_devices(options, cpu="alone")
    data = dataset_name(options)
    epochs = int(choose(options, "epochs", EPOCHS[(form, data)]))
    lrs = [float(lr) for lr in choose(options, "lrs", LRS[form])]
    activations = list(choose(options, "activations", ACTIVATIONS))
    train_batch = int(choose(options, "train_batch", TRAIN_BATCH))
    out = []
    for device in gpus + cpus:
        for backend in training_backends(device):
            for activation in activations:
                for lr in lrs:
                    out.append(Case(variant=TRAIN_VARIANT, layer=NETWORK, backend=backend, device=device,
                                    dtype="float32", batch=train_batch, pass_name=TRAINING_PASS,
                                    activation=activation,
                                    threads=None if device.startswith("cuda") else options.threads,
                                    options=(("dataset", data), ("epochs", epochs), ("lr", lr))))
    return out


def cases(options: StudyOptions) -> list[Case]:
    out = []
    if choose(options, "training", True):
        out += training_cases(options)
    if choose(options, "kernels", True):
        out += kernel_cases(options)
    return out


# -- training runs (the runner hands them here: the Study's `measure_case` hook) --------------------------------------
_DATASETS: dict = {}


def load_dataset(options: StudyOptions) -> Dataset:
    """The run's training set (loaded once per process): CIFAR-10 from options.extra["cifar10"] (the first batch in
    the quick form), else scikit-learn's digits; the first options.extra["train_images"] images when given."""
    directory = options.extra.get("cifar10")
    limit = options.extra.get("train_images")
    key = (str(directory) if directory else None, options.quick, limit)
    if key not in _DATASETS:
        if directory:
            data = load_cifar10(directory, batches=QUICK_CIFAR10_BATCHES if options.quick else None)
        else:
            data = load_digits()
        _DATASETS[key] = data.head(int(limit)) if limit else data
    return _DATASETS[key]


def check_train_step(backend, network, params, device: str, dtype: torch.dtype, seed: int) -> tuple[float, str]:
    """One train_step of `backend` on the training network against the float64 CPU reference (relative error, worst
    tensor), as the runner checks every case."""
    layers = network.layers
    inputs = make_inputs(layers, CHECK_BATCH, seed)
    module = backend.build(layers, params, device, dtype)
    module.capture_for_reference = True  # and the max-pool and ReLU choices the reference replays
    got = Workload(module, "train_step", inputs, device, dtype, backend.make_optimizer).run_once()
    want = reference_results(layers, "train_step", params, inputs, {}, get_backend("torch").make_optimizer,
                             dict(module.captured_choices))
    return check(got, want)


def measure_case(case: Case, runner, options: StudyOptions) -> CaseResult | None:
    """A training run (pass `training`); every other case goes to the runner's check-and-time path."""
    if case.pass_name != TRAINING_PASS:
        return None
    row = runner.blank_row(case)
    backend = get_backend(case.backend)
    reason = backend.unavailable_reason(case.device, case.dtype, "train_step")
    if reason:
        return CaseResult(replace(row, status="skipped", note=reason))
    try:
        data = load_dataset(options)
    except DatasetUnavailable as exc:
        return CaseResult(replace(row, status="skipped", note=str(exc)))
    if data.name != case.option("dataset"):
        raise DatasetError(f"case trains on {case.option('dataset')} but the study loaded {data.name}")
    lr, epochs = float(case.option("lr")), int(case.option("epochs"))
    network = build_cifar4(case.activation, data.input_size, data.channels, data.num_classes)
    params = init_parameters(network, seed=runner.config.seed)  # the same start for every activation and rate
    dtype = torch_dtype(case.dtype)
    with cpu_threads(case.threads), float32_precision(case.dtype):
        row.threads = torch.get_num_threads()
        row.device_name = device_name(case.device, runner.env)
        error, worst = check_train_step(backend, network, params, case.device, dtype, runner.config.seed)
        tolerance = tolerance_for(case.dtype, None)  # float32: the strict bound
        row = replace(row, error_rel=error, error_tolerance=tolerance, error_batch=CHECK_BATCH,
                      error_note=f"one train_step of the training network; worst tensor: {worst}")
        if not error <= tolerance:
            return CaseResult(replace(row, status="incorrect", note=(
                f"not trained: the train_step check's error {error:.3g} in {worst} exceeds the {case.dtype} "
                f"tolerance {tolerance:g}")))
        module = backend.build(network.body, params, case.device, dtype)
        optimizer = backend.make_optimizer(module.parameters(), lr=lr, weight_decay=0.0)  # momentum 0.9
        images = data.images.to(device=case.device, dtype=dtype)
        labels = data.labels.to(case.device)
        result = train(module, module.ops.cross_entropy, optimizer, images, labels, epochs=epochs, batch=case.batch,
                       evals_per_epoch=EVALS_PER_EPOCH, seed=runner.config.seed)
    return CaseResult(replace(
        row, status="ok", note=run_note(data, lr, epochs, result),
        timer="perf_counter" + (" (device synchronised at each point)" if case.device.startswith("cuda") else ""),
        timing_note=(f"a training run, not a repeated timing: time_median_s is null; {len(result.points)} points "
                     f"with the training time to each are in the training_curves table; training took "
                     f"{result.wall_s:.4g} s, evaluating the points {result.eval_s:.3g} s more"),
        images_per_s=result.images_per_s), training_curve=result.points)


def run_note(data: Dataset, lr: float, epochs: int, result) -> str:
    target = target_error()
    head = (f"{data.description}; lr {lr:g}, {epochs} epochs of {result.steps_per_epoch} steps of {result.batch}")
    if result.diverged:
        return f"{head}: diverged ({result.diverged})"
    hit = first_reaching(result.points, target)
    low = min(result.points, key=lambda p: p.train_error) if result.points else None
    lowest = f"lowest {low.train_error * 100:.3g}% at epoch {low.epoch:g}" if low else "no points"
    if hit:
        return (f"{head}: {target * 100:g}% training error after {hit.epoch:g} epochs ({hit.wall_s:.3g} s of "
                f"training); {lowest}")
    return f"{head}: {target * 100:g}% training error not reached; {lowest}"


# -- summary: kernels --------------------------------------------------------------------------------------------------
def _time(ok, **where) -> float | None:
    row = first(ok, **where)
    return num(row.time_median_s) if row is not None else None


def kernel_table(df) -> list[dict]:
    """Per (device, backend, pass, batch, activation layer index), from ok rows only: the GEMM alone, each activation
    alone and its time over ReLU's, each GEMM+activation pair, and the pair over the sum of its parts."""
    kern = df[df.pass_name != TRAINING_PASS]
    ok = ok_rows(kern)
    out = []
    if kern.empty:
        return out
    for (device, backend, pass_name, batch, variant), part in kern.groupby(
            ["device", "backend", "pass_name", "batch", "variant"], sort=False):
        good = ok[(ok.device == device) & (ok.backend == backend) & (ok.pass_name == pass_name)
                  & (ok.batch == batch) & (ok.variant == variant)]
        for index in _indices_in(part):
            gemm, _, _ = kernel_layers(variant, "relu", index)
            row = {"device": device, "backend": backend, "pass": pass_name, "batch": int(batch), "index": index,
                   "gemm": gemm, "gemm_s": _time(good, layer=gemm)}
            for activation in ACTIVATIONS:
                _, act, span = kernel_layers(variant, activation, index)
                alone = row[f"{activation}_s"] = _time(good, layer=act, activation=activation)
                pair = row[f"pair_{activation}_s"] = _time(good, layer=span, activation=activation)
                parts = row["gemm_s"] + alone if row["gemm_s"] is not None and alone is not None else None
                row[f"parts_{activation}_s"] = parts
                row[f"pair_over_parts_{activation}"] = ratio(pair, parts)
            for activation in ACTIVATIONS[1:]:
                row[f"{activation}_vs_relu"] = ratio(row[f"{activation}_s"], row["relu_s"])
                row[f"pair_{activation}_vs_relu"] = ratio(row[f"pair_{activation}_s"], row["pair_relu_s"])
            if any(v is not None for k, v in row.items() if k.endswith("_s")):
                out.append(row)
    # fused (triton) against unfused (torch), same device, pass, batch and layer
    for row in out:
        if row["backend"] != "triton":
            continue
        torch_row = next((r for r in out if r["backend"] == "torch" and r["device"] == row["device"]
                          and r["pass"] == row["pass"] and r["batch"] == row["batch"] and r["index"] == row["index"]),
                         None)
        for activation in ACTIVATIONS:
            row[f"pair_{activation}_speedup_over_torch"] = ratio(torch_row and torch_row[f"pair_{activation}_s"],
                                                                  row[f"pair_{activation}_s"])
    return out


def _indices_in(part) -> list[int]:
    indices = set()
    for layer, activation in zip(part.layer, part.activation):
        name = layer.split("+")[-1]
        if name.startswith(activation) and name[len(activation):].isdigit():
            indices.add(int(name[len(activation):]))
    return sorted(indices)


def _kernel_lines(df, rows: list[dict]) -> list[str]:
    lines = []
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["device"], r["backend"], r["pass"], r["batch"]), []).append(r)
    for (device, backend, pass_name, batch), part in groups.items():
        fused = "fused into the GEMM's epilogue" if backend == "triton" else "two operators, unfused"
        table = [{"layer": f"{r['gemm']} / act{r['index']}", "gemm": fmt_ms(r["gemm_s"]),
                  **{a: _cell(r[f"{a}_s"], r.get(f"{a}_vs_relu")) for a in ACTIVATIONS},
                  **{f"pair_{a}": _pair_cell(r, a) for a in ACTIVATIONS}} for r in part]
        columns = [("layer", "layer", None), ("gemm", "GEMM alone ms", None)]
        columns += [(a, f"{a} ms", None) for a in ACTIVATIONS]
        columns += [(f"pair_{a}", f"GEMM+{a} ms (/ parts)", None) for a in ACTIVATIONS]
        lines += ["", f"{device_title(df, device)}, {backend} ({fused}), {pass_name}, float32, batch {batch}",
                  format_table(table, columns)]
    return lines


def _cell(seconds, vs_relu) -> str:
    if seconds is None:
        return "-"
    return f"{fmt_ms(seconds)}" + (f" ({fmt_x(vs_relu)})" if vs_relu is not None else "")


def _pair_cell(row, activation) -> str:
    seconds = row[f"pair_{activation}_s"]
    if seconds is None:
        return "-"
    ratio = row[f"pair_over_parts_{activation}"]
    return fmt_ms(seconds) + (f" ({fmt_x(ratio)})" if ratio is not None else "")


# -- summary: convergence ----------------------------------------------------------------------------------------------
def load_curves(df):
    """This run's training curves (the store's training_curves table), or None."""
    return this_run(df, load_training_curves)


def training_runs(df, curves) -> list[dict]:
    """One dict per ok training row: its configuration and, from its measured curve, when it first reached the
    target error (epochs and training seconds) and its lowest error."""
    target = target_error()
    runs = []
    rows = ok_rows(df[df.pass_name == TRAINING_PASS]) if len(df) else df
    for _, r in rows.iterrows():
        opts = options_of(r)
        points = []
        if curves is not None and len(curves):
            mine = curves[(curves.run_id == r.run_id) & (curves.case_key == r.case_key)]
            points = sorted(mine.itertuples(index=False), key=lambda p: p.epoch)
        hit = first_reaching(points, target)
        low = min(points, key=lambda p: p.train_error) if points else None
        runs.append({
            "case_key": r.case_key, "run_id": r.run_id, "dataset": opts.get("dataset"), "device": r.device,
            "backend": r.backend, "activation": r.activation, "lr": num(opts.get("lr")),
            "epochs": num(opts.get("epochs")), "batch": int(r.batch),
            "epochs_to_target": float(hit.epoch) if hit else None,
            "wall_s_to_target": float(hit.wall_s) if hit else None,
            "lowest_error": float(low.train_error) if low else None,
            "last_epoch": float(points[-1].epoch) if points else None,
            "images_per_s": num(get(r, "images_per_s")), "note": get(r, "note"),
            "points": [{"epoch": float(p.epoch), "train_error": float(p.train_error), "wall_s": float(p.wall_s),
                        "loss": num(p.loss), "running_error": num(p.running_error)} for p in points],
        })
    return runs


def best_run(runs: list[dict]) -> dict | None:
    """The fastest run to the target (fewest epochs, then least training time); if none reached it, the one with
    the lowest error."""
    reached = [r for r in runs if r["epochs_to_target"] is not None]
    if reached:
        return min(reached, key=lambda r: (r["epochs_to_target"], r["wall_s_to_target"]))
    with_points = [r for r in runs if r["lowest_error"] is not None]
    return min(with_points, key=lambda r: r["lowest_error"]) if with_points else None


def convergence(df, curves) -> list[dict]:
    """Per (dataset, device, backend): each activation's runs over the learning-rate grid, its best, and the ratios
    to ReLU, all from measured curves:
    {"dataset", "device", "backend", "activations": {act: {"runs", "best_lr", "epochs_to_target",
     "wall_s_to_target", "lowest_error", "max_epochs"}}, "relu_speedup_over_tanh_epochs" (tanh's epochs / ReLU's),
     "relu_speedup_over_tanh_wall", "..._lower_bound" (tanh never reached it: its last epoch / ReLU's),
     and the same for sigmoid}."""
    runs = training_runs(df, curves)
    groups: dict = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["device"], run["backend"]), []).append(run)
    out = []
    for (dataset, device, backend), part in groups.items():
        entry = {"dataset": dataset, "device": device, "backend": backend, "activations": {}}
        for activation in ACTIVATIONS:
            mine = sorted((r for r in part if r["activation"] == activation), key=lambda r: r["lr"] or 0)
            if not mine:
                continue
            best = best_run(mine)
            entry["activations"][activation] = {
                "runs": [{k: r[k] for k in ("lr", "epochs_to_target", "wall_s_to_target", "lowest_error",
                                            "last_epoch", "note")} for r in mine],
                "best_lr": best["lr"] if best else None,
                "best_case_key": best["case_key"] if best else None,
                "epochs_to_target": best["epochs_to_target"] if best else None,
                "wall_s_to_target": best["wall_s_to_target"] if best else None,
                "lowest_error": best["lowest_error"] if best else None,
                "max_epochs": max((r["last_epoch"] or 0) for r in mine),
                "points": best["points"] if best else [],
            }
        acts = entry["activations"]
        relu = acts.get("relu")
        for other in ("tanh", "sigmoid"):
            o = acts.get(other)
            if not relu or not o or relu["epochs_to_target"] is None:
                continue
            if o["epochs_to_target"] is not None:
                entry[f"relu_speedup_over_{other}_epochs"] = o["epochs_to_target"] / relu["epochs_to_target"]
                entry[f"relu_speedup_over_{other}_wall"] = ratio(o["wall_s_to_target"], relu["wall_s_to_target"])
            elif o["max_epochs"]:
                entry[f"relu_speedup_over_{other}_epochs_lower_bound"] = o["max_epochs"] / relu["epochs_to_target"]
        out.append(entry)
    return out


def dashboard_curves(groups: list[dict]) -> list[dict]:
    """The dashboard's convergence points (perfkit.dashboards.data): the best learning rate's curve per activation,
    for the first device and backend trained on each data set."""
    out, seen = [], set()
    for g in groups:
        if g["dataset"] in seen:
            continue
        seen.add(g["dataset"])
        for activation, a in g["activations"].items():
            for p in a["points"]:
                out.append({"activation": activation, "epoch": p["epoch"], "train_error": p["train_error"],
                            "wall_s": p["wall_s"], "dataset": g["dataset"], "lr": a["best_lr"],
                            "device": g["device"], "backend": g["backend"]})
    return out


def _convergence_lines(df, groups: list[dict], options: StudyOptions) -> list[str]:
    target = target_error()
    paper = figure("paper_relu_vs_tanh_speedup")
    lines = ["", f"Convergence (the paper's Figure 1 at small scale): the four-layer CNN trained with each activation "
                 f"to {target * 100:g}% training error (Figure 1's threshold, "
                 f"{figure('paper_fig1_target_train_error').source}); SGD, momentum "
                 f"{SGD_MOMENTUM:g}, no dropout or weight decay, the same initial weights for every run, learning rate "
                 "tuned per activation (fewest epochs to the target wins). Training error: the fraction of the "
                 "training images misclassified, measured four times per epoch; wall time is training time only."]
    if not groups:
        lines.append("No training run finished in this run (see the cases without a result below), so there is no "
                     "convergence result.")
        return lines
    descriptions = {}
    for _, r in ok_rows(df[df.pass_name == TRAINING_PASS]).iterrows():
        opts = options_of(r)
        note = get(r, "note") or ""
        descriptions.setdefault(opts.get("dataset"), note.split(";")[0])
    for g in groups:
        title = (f"{g['dataset']} ({descriptions.get(g['dataset'], '')}), {device_title(df, g['device'])}, "
                 f"{g['backend']}")
        table = []
        for activation, a in g["activations"].items():
            grid_text = ", ".join(
                f"{r['lr']:g}: " + (f"{r['epochs_to_target']:.3g}" if r["epochs_to_target"] is not None else
                                    f"- ({r['lowest_error'] * 100:.3g}%)" if r["lowest_error"] is not None else "-")
                for r in a["runs"])
            table.append({"activation": activation, "grid": grid_text, "lr": a["best_lr"],
                          "epochs": a["epochs_to_target"], "wall": a["wall_s_to_target"],
                          "lowest": a["lowest_error"]})
        lines += ["", title, format_table(table, [
            ("activation", "activation", None),
            ("grid", f"lr: epochs to {target * 100:g}% (or lowest error)", None),
            ("lr", "best lr", lambda v: "-" if v is None else f"{v:g}"),
            ("epochs", f"epochs to {target * 100:g}%", lambda v: "not reached" if v is None else f"{v:g}"),
            ("wall", "training s", lambda v: fmt_num(v, ",.3g")),
            ("lowest", "lowest error", lambda v: "-" if v is None else f"{v * 100:.3g}%")])]
        epochs = g.get("relu_speedup_over_tanh_epochs")
        if epochs is not None:
            acts = g["activations"]
            wall = g.get("relu_speedup_over_tanh_wall")
            lines.append(f"ReLU reached {target * 100:g}% training error {fmt_x(epochs)} faster than tanh in epochs "
                         f"({acts['tanh']['epochs_to_target']:g} / {acts['relu']['epochs_to_target']:g})"
                         + (f" and {fmt_x(wall)} in training time" if wall is not None else "")
                         + f"; the paper: {paper.value:g}x ({paper.source}, Figure 1: CIFAR-10).")
        elif g.get("relu_speedup_over_tanh_epochs_lower_bound") is not None:
            bound = g["relu_speedup_over_tanh_epochs_lower_bound"]
            lines.append(f"tanh did not reach {target * 100:g}% within {g['activations']['tanh']['max_epochs']:g} "
                         f"epochs at any learning rate tried, so ReLU was at least {fmt_x(bound)} faster in epochs; "
                         f"the paper: {paper.value:g}x ({paper.source}, Figure 1: CIFAR-10).")
        else:
            lines.append(f"No ReLU/tanh ratio: ReLU or tanh has no run reaching {target * 100:g}% here (the paper: "
                         f"{paper.value:g}x, {paper.source}).")
        sig = g.get("relu_speedup_over_sigmoid_epochs")
        if sig is not None:
            lines.append(f"Sigmoid needed {fmt_x(sig)} ReLU's epochs.")
        elif g.get("relu_speedup_over_sigmoid_epochs_lower_bound") is not None:
            lines.append(f"Sigmoid did not reach {target * 100:g}% within "
                         f"{g['activations']['sigmoid']['max_epochs']:g} epochs at any learning rate tried.")
    if any(g["dataset"] != CIFAR10 for g in groups):
        lines.append("On digits, not CIFAR-10: a smaller, easier set (1,797 8x8 images), so epochs are short and the "
                     "ratio need not match the paper's; point the study at CIFAR-10 (--cifar10 DIR) for the paper's "
                     "data.")
    return lines


def summarize(df, options: StudyOptions, curves=None) -> Summary:
    """The kernel-cost tables and the convergence result. `curves`: the training_curves rows of this run (read from
    the store the rows came from when not given)."""
    if curves is None:
        curves = load_curves(df)
    kernels = kernel_table(df)
    groups = convergence(df, curves)
    lines = [f"activations: ReLU against tanh and sigmoid ({options.variant} kernels; four-layer CNN training), "
             "from this run's measured rows"]
    if kernels:
        lines += ["", "Kernel cost: median ms per call; an activation's '(Nx)' is its time over ReLU's on the same "
                      "layer; a GEMM+activation pair's '(Nx)' is its time over the sum of its two parts measured "
                      "alone (below 1x: running them as one case, or fused into one kernel, saves time)"]
        lines += _kernel_lines(df, kernels)
        fused = [r for r in kernels if r["backend"] == "triton"
                 and any(r.get(f"pair_{a}_speedup_over_torch") for a in ACTIVATIONS)]
        if fused:
            lines += ["", "Fused (triton) against unfused (torch) GEMM+activation, speedup: " + "; ".join(
                f"{r['device']} {r['pass']} act{r['index']}: " + ", ".join(
                    f"{a} {fmt_x(r[f'pair_{a}_speedup_over_torch'])}" for a in ACTIVATIONS
                    if r.get(f"pair_{a}_speedup_over_torch")) for r in fused)]
    else:
        lines += ["", "No kernel case was measured in this run."]
    lines += _convergence_lines(df, groups, options)
    lines += [""] + not_measured(df)
    paper = figure("paper_relu_vs_tanh_speedup")
    data = {"kernels": kernels,
            "convergence": [{k: v for k, v in g.items()} for g in groups],
            "target_train_error": target_error(),
            "paper": {"relu_vs_tanh_speedup": paper.value, "source": paper.source, "what": paper.what,
                      "target_train_error_pct": figure("paper_fig1_target_train_error").value},
            "curves": dashboard_curves(groups)}
    return Summary("\n".join(lines).strip(), data)


# -- the study's declaration -------------------------------------------------------------------------------------------
def cifar10_dir(directory: str) -> str:
    """`--cifar10 DIR`: the folder, resolved, once it holds CIFAR-10's python training batches (StudyOptionError
    saying what is missing otherwise)."""
    try:
        cifar10_files(directory)
    except DatasetError as exc:
        raise StudyOptionError(str(exc)) from None
    return str(Path(directory).resolve())


CIFAR10_OPTION = StudyOption(
    "--cifar10", metavar="DIR", to_extra=cifar10_dir,
    help="train on CIFAR-10's python batches (data_batch_1..5) in DIR instead of scikit-learn's digits")

STUDY = Study(name=NAME, description=DESCRIPTION, cases=cases, summarize=summarize, measure_case=measure_case,
              cli_options=(CIFAR10_OPTION,))
