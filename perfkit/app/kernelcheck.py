"""`perfkit kernels check` and the precompile of a GPU run: every binary perfkit's Triton kernels need, compiled ahead
of time for a GPU arch on a machine without one, and judged by the compiler's own figures.

What is compiled is what a GPU run launches. The triton backend's cases run here on CPU tensors with their launches
recorded, not run (perfkit.kernels.tuning.recording_launches), as if on the arch's GPU (its SM count sizes the split
GEMMs); each recorded launch becomes the binaries its policy compiles, through Triton's own binder
(perfkit.kernels.aot): one per problem under the default policy, or every launchable config of the list (`--configs
all`, what ``PERFKIT_AUTOTUNE=full`` sweeps). They compile in parallel worker processes.

A binary fails the check when it does not compile, cannot launch on its arch (shared memory over the block's limit,
registers x threads over 64 K) without the arch's table pruning it, is a float16, bfloat16 or TF32 GEMM with no
tensor-core instruction, or spills while being a default. `--write-tables` (with `--configs all`) writes the arch's
table from the figures: the unlaunchable configs, and per problem the default, chosen from the configs that are clean
(launchable, no spills, tensor cores where due) by the same rule as the runtime heuristic.

Recording the launches and compiling the binaries (and the runner's precompile) are the harness's:
perfkit.backends.triton_binaries.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

from perfkit.backends.triton_binaries import Binary, collect_binaries
from perfkit.specs import DTYPES, GPU_PRECISIONS

PRECISIONS = GPU_PRECISIONS  # float32 is IEEE: TF32 off
TENSOR_CORE_PRECISIONS = tuple(name for name in PRECISIONS if DTYPES[name].tensor_cores)
CHECK_VARIANT = "alexnet2012"
ARCH_NAMES = ("sm_90", "sm_80")


# ----------------------------------------------------------------------------------------------------------------------
# The cases whose launches are compiled
# ----------------------------------------------------------------------------------------------------------------------

def check_cases(batch: int = 128, precisions=PRECISIONS):
    """The triton cases the check records, per precision: the alexnet2012 network's forward and train step; every
    layer alone, forward and backward (the unfused kernels: activation, LRN, max-pool, dropout, the loss); the tanh
    and sigmoid activations alone; and the augmentation kernel. Returns [(label, Case)]."""
    from perfkit.cases import AUGMENT, NETWORK, Case
    from perfkit.specs import build_network

    cases = []
    for precision in precisions:
        def case(**fields):
            return Case(variant=CHECK_VARIANT, backend="triton", device="cuda", dtype=precision, batch=batch, **fields)

        cases.append(("network forward", case(layer=NETWORK, pass_name="forward")))
        cases.append(("network train_step", case(layer=NETWORK, pass_name="train_step")))
        for spec in build_network(CHECK_VARIANT).layers:
            for pass_name in ("forward", "backward"):
                cases.append((f"{spec.name} {pass_name}", case(layer=spec.name, pass_name=pass_name)))
        for activation in ("tanh", "sigmoid"):
            for pass_name in ("forward", "backward"):
                cases.append((f"{activation}1 {pass_name}",
                              case(layer=f"{activation}1", activation=activation, pass_name=pass_name)))
        if precision != "tf32":  # the augmentation has no GEMM: tf32 is float32 there
            cases.append(("augment", case(layer=AUGMENT, pass_name="forward",
                                          options=(("layout", "channels_last"),))))
    return cases


# ----------------------------------------------------------------------------------------------------------------------
# From launches to binaries
# ----------------------------------------------------------------------------------------------------------------------

def judge(binary: Binary, arch: str) -> None:
    """Set a compiled binary's verdict: ok, pruned (unlaunchable and pruned by the table), or a failure."""
    from perfkit.kernels import aot

    f = binary.figures
    if f is None:
        binary.verdict = "not compiled"  # --configs search stopped before it
        return
    if f.error:
        binary.verdict, binary.failure = "FAIL", f"compile error: {f.error}"
        return
    problems = aot.launch_problems(f, arch)
    if problems:
        if binary.table_pruned is not None and not binary.default:
            binary.verdict = "pruned"
            return
        binary.verdict, binary.failure = "FAIL", "cannot launch: " + "; ".join(problems)
        return
    if _lacks_tensor_cores(binary):
        binary.verdict = "FAIL"
        binary.failure = f"a {'/'.join(sorted(binary.precisions))} GEMM with no tensor-core instruction"
        return
    if binary.default and f.spill_store_bytes:
        binary.verdict, binary.failure = "FAIL", f"a default config that spills ({f.spill_store_bytes} B of stores)"
        return
    binary.verdict = "ok"


def _lacks_tensor_cores(binary: Binary) -> bool:
    """A compiled GEMM in float16, bfloat16 or TF32 without a single tensor-core instruction."""
    f = binary.figures
    return bool(f.has_dot and binary.precisions & set(TENSOR_CORE_PRECISIONS) and not (f.wgmma or f.mma_sync))


# (arch, kernel, problem, config label) found unfit to be a default by a check under another triton version
# (`--avoid-from`): the tables must hold defaults that are clean under every version a GPU machine may have.
_AVOID: set = set()


def avoid_from_reports(paths) -> int:
    """Mark as unfit the (kernel, problem, config) that spilled, could not launch or failed in the JSON reports of
    earlier checks (``--json``), typically run under another triton. Returns how many were marked."""
    before = len(_AVOID)
    for path in paths:
        report = json.loads(Path(path).read_text())
        for arch, entry in report["arches"].items():
            for row in entry["binaries"]:
                if not row.get("problem") or not row.get("config"):
                    continue
                bad = row.get("error") or row.get("spill_store_bytes") or row["verdict"] in ("FAIL", "pruned")
                if bad:
                    for problem in row["problem"].split(" ; "):
                        _AVOID.add((arch, row["kernel"], problem, row["config"]))
    return len(_AVOID) - before


def _clean(binary: Binary, arch: str) -> bool:
    """Launchable, compiled, tensor cores where due, and no spills (here, and in the reports of `avoid_from_reports`):
    fit to be a default."""
    from perfkit.kernels import aot

    f = binary.figures
    if f is None or f.error or aot.launch_problems(f, arch) or f.spill_store_bytes:
        return False
    if any((arch, binary.spec.kernel, problem, binary.spec.config) in _AVOID for problem in binary.problems):
        return False
    return not _lacks_tensor_cores(binary)


# ----------------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------------

def build_table(binaries: dict[str, Binary], arch: str, command: str) -> dict:
    """The arch's table from an ``--configs all`` check: unlaunchable configs per kernel and dtype (with the
    compiler's reason), and per problem the default: among the configs clean on every binary of that problem, the
    one `heuristic_choice` picks."""
    import triton

    from perfkit.kernels import aot, tuning

    limits = aot.arch_limits(arch)
    unlaunchable: dict = defaultdict(lambda: defaultdict(dict))
    per_problem: dict = defaultdict(lambda: defaultdict(list))  # (kernel, problem) -> label -> [Binary]
    for b in binaries.values():
        if b.problem is None:
            continue
        problems = aot.launch_problems(b.figures, arch) if b.figures and not b.figures.error else []
        if problems:
            dtype = b.problem.split("|")[0]
            unlaunchable[b.spec.kernel][dtype][b.spec.config] = "; ".join(problems)
        for problem in b.problems:
            per_problem[(b.spec.kernel, problem)][b.spec.config].append((b, b.problems[problem]))
    defaults: dict = defaultdict(dict)
    unresolved = []
    for (kernel, problem), by_label in sorted(per_problem.items()):
        labels = list(by_label)
        clean = [label for label in labels if all(_clean(b, arch) for b, _ in by_label[label])]
        if not clean:
            unresolved.append(f"{kernel} {problem}")
            continue
        programs = {label: by_label[label][0][1] or 0 for label in clean}
        configs = [_LabelConfig(label) for label in clean]
        chosen = tuning.heuristic_choice(configs, lambda c: programs[c.label], limits.multiprocessors)
        defaults[kernel][problem] = chosen.label
    return {
        "arch": arch,
        "gpus": limits.gpus,
        "source": ("compiler figures, not timed: the configs that cannot launch, and per problem the largest clean "
                   "tile that fills the SMs (no spills, tensor cores where due). A PERFKIT_AUTOTUNE=full sweep on a "
                   "GPU writes measured defaults in this format."),
        "written_by": command,
        "triton": triton.__version__,
        "unlaunchable": {k: {d: dict(sorted(v.items())) for d, v in sorted(by_dtype.items())}
                         for k, by_dtype in sorted(unlaunchable.items())},
        "defaults": {k: dict(sorted(v.items())) for k, v in sorted(defaults.items())},
        "no_clean_config": unresolved,
    }


class _LabelConfig:
    """A config known by its label only (heuristic_choice reads its BLOCK_* meta-parameters)."""

    def __init__(self, label: str):
        self.label = label
        meta = label.split("/")[0]
        self.kwargs = {k: int(v) for k, v in (item.split("=") for item in meta.split(",") if item)}


# ----------------------------------------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------------------------------------

def run_check(arches, configs: str = "default", batch: int = 128, jobs: int | None = None, precisions=PRECISIONS,
              write_tables: bool = False, progress=True) -> dict:
    """Record, compile and judge, per arch. Returns the report (see `format_report`); ``report["failed"]`` says
    whether any binary failed."""
    from perfkit.kernels import aot
    from perfkit.support.progress import Progress

    jobs = jobs or os.cpu_count() or 1
    cases = check_cases(batch, precisions)
    report = {"configs": configs, "batch": batch, "precisions": list(precisions), "jobs": jobs, "arches": {}}
    for arch in arches:
        started = time.perf_counter()
        bar = Progress(len(cases), f"kernels check {arch}: recording", enabled=progress)
        binaries = collect_binaries(cases, arch, configs, bar)
        bar.close()
        recorded_s = time.perf_counter() - started
        compile_started = time.perf_counter()
        if configs == "search":
            _compile_search(binaries, arch, jobs, progress)
        else:
            _compile(binaries, list(binaries), arch, jobs, progress, f"kernels check {arch}")
        compile_wall_s = time.perf_counter() - compile_started
        entry = summarize(binaries, arch)
        entry["uncovered"] = sorted(launched_kernel_names() - {b.spec.kernel for b in binaries.values()})
        for name in entry["uncovered"]:  # a kernel no case launches is a kernel the check cannot vouch for
            entry["failures"].append({"kernel": name, "config": None, "problem": None, "precisions": [],
                                      "failure": "no case of the check launches it: add one to check_cases"})
        entry.update(target=aot.describe_target(arch), record_s=recorded_s, compile_wall_s=compile_wall_s,
                     counts=count_binaries(binaries))
        if write_tables:
            if configs not in ("all", "search"):
                raise ValueError("--write-tables needs --configs all or search: a default is chosen among the "
                                 "configs of a list")
            command = f"perfkit kernels check --arch {arch} --configs {configs} --write-tables" + \
                (f" (avoiding {len(_AVOID)} configs unfit in --avoid-from reports)" if _AVOID else "")
            table = build_table(binaries, arch, command)
            path = Path(__file__).resolve().parent.parent / "kernels" / "tables" / f"{arch}.json"
            if not path.parent.exists():
                from perfkit import kernels

                path = Path(kernels.__file__).parent / "tables" / f"{arch}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
            entry["table_written"] = str(path)
            entry["no_clean_config"] = table["no_clean_config"]
        report["arches"][arch] = entry
    report["failed"] = any(e["failures"] for e in report["arches"].values())
    return report


def _compile(binaries: dict[str, Binary], keys: list[str], arch: str, jobs: int, progress: bool, title: str):
    """Compile ``keys`` of ``binaries`` in parallel, with a progress bar, and judge each."""
    from perfkit.kernels import aot
    from perfkit.support.progress import Progress

    bar = Progress(len(keys), f"{title}: compiling on {jobs} processes", enabled=progress)

    def done(i, figures):  # the bar names each binary as it finishes, in any order
        b = binaries[keys[i]]
        bar.start(f"{b.spec.kernel} {b.spec.config or ''}")
        bar.done("error" if figures.error else "ok")

    figures = aot.compile_in_parallel(arch, [binaries[k].spec for k in keys], jobs, on_done=done)
    bar.close()
    for key, f in zip(keys, figures):
        binaries[key].figures = f
        judge(binaries[key], arch)


def _compile_search(binaries: dict[str, Binary], arch: str, jobs: int, progress: bool) -> None:
    """``--configs search``: per problem, compile its configs in the heuristic's order of preference, a round at a
    time across all problems in parallel, until one is clean on every binary of the problem (launchable, no spills,
    tensor cores where due). What a table needs at a fraction of ``all``'s compiles; configs never reached stay
    uncompiled."""
    from perfkit.kernels import aot, tuning

    sms = aot.arch_limits(arch).multiprocessors
    by_problem: dict = defaultdict(lambda: defaultdict(list))
    untuned = []
    for key, b in binaries.items():
        if b.problem is None:
            untuned.append(key)
        else:
            for problem in b.problems:
                by_problem[(b.spec.kernel, problem)][b.spec.config].append(key)
    queues = {}
    for problem, by_label in by_problem.items():
        configs = [_LabelConfig(label) for label in by_label]
        programs = {label: binaries[keys[0]].problems[problem[1]] or 0 for label, keys in by_label.items()}
        queues[problem] = [c.label for c in tuning.heuristic_order(configs, lambda c: programs[c.label], sms)]
    current = {problem: queue.pop(0) for problem, queue in queues.items()}
    wanted = untuned + [k for problem, label in current.items() for k in by_problem[problem][label]]
    round_number = 1
    while wanted:
        todo = [k for k in dict.fromkeys(wanted) if binaries[k].figures is None]  # some serve several problems
        if todo:
            _compile(binaries, todo, arch, jobs, progress, f"kernels check {arch} (search round {round_number})")
        wanted = []
        for problem, label in list(current.items()):
            if all(_clean(binaries[k], arch) for k in by_problem[problem][label]):
                del current[problem]
            elif queues[problem]:
                current[problem] = queues[problem].pop(0)
                wanted += by_problem[problem][current[problem]]
            else:
                del current[problem]  # nothing clean: build_table lists it under no_clean_config
        round_number += 1


KERNEL_MODULES = ("activation", "augment", "conv", "cross_entropy", "dropout", "linear", "lrn", "pool", "sgd")


def launched_kernel_names() -> set[str]:
    """Every kernel of perfkit.kernels that a host wrapper launches: the @triton.jit functions named ``*_kernel``
    (helpers such as ``lrn_window`` are inlined into them), bare or behind their TunedKernel."""
    import importlib

    names = set()
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(f"perfkit.kernels.{module_name}")
        for attr, value in vars(module).items():
            fn = getattr(value, "fn", None) if type(value).__name__ == "TunedKernel" else value
            if type(fn).__name__ == "JITFunction" and attr.endswith("_kernel"):
                names.add(attr)
    return names


def count_binaries(binaries: dict[str, Binary]) -> dict:
    """Binaries the network's forward and train step need, per precision: under the default policy (``default``)
    and with every config of the lists (``all``, what the full sweep compiles; only known from ``--configs all``)."""
    counts: dict = {}
    for workload in ("network forward", "network train_step"):
        for precision in PRECISIONS:
            mine = [b for b in binaries.values() if (workload, precision) in b.uses]
            if not mine:
                continue
            counts.setdefault(workload, {})[precision] = {
                "default": sum(1 for b in mine if b.default),
                "all": len(mine),
            }
    return counts


def summarize(binaries: dict[str, Binary], arch: str) -> dict:
    """Per kernel: binaries, failures, pruned, largest registers and shared memory, spills (defaults and all), tensor
    cores, compile seconds; plus the failures in full and every binary's row."""
    per_kernel: dict = {}
    rows, failures = [], []
    for b in binaries.values():
        f = b.figures
        k = per_kernel.setdefault(b.spec.kernel, {
            "binaries": 0, "defaults": 0, "failures": 0, "pruned": 0, "max_registers": 0, "max_shared_bytes": 0,
            "max_stack_bytes": 0, "spilling_defaults": 0, "spilling": 0, "max_spill_store_bytes": 0,
            "tensor_core": set(), "compile_s": 0.0})
        if f is None:  # --configs search never reached it: listed nowhere, counted nowhere
            continue
        k["binaries"] += 1
        k["defaults"] += int(b.default)
        k["failures"] += int(b.verdict == "FAIL")
        k["pruned"] += int(b.verdict == "pruned")
        if not f.error:
            k["max_registers"] = max(k["max_registers"], f.registers or 0)
            k["max_shared_bytes"] = max(k["max_shared_bytes"], f.shared_bytes or 0)
            k["max_stack_bytes"] = max(k["max_stack_bytes"], f.stack_bytes or 0)
            if f.spill_store_bytes:
                k["spilling"] += 1
                k["spilling_defaults"] += int(b.default)
                k["max_spill_store_bytes"] = max(k["max_spill_store_bytes"], f.spill_store_bytes)
            if f.wgmma:
                k["tensor_core"].add("wgmma")
            if f.mma_sync:
                k["tensor_core"].add("mma.sync")
            k["compile_s"] += f.compile_s or 0.0
        row = {"kernel": b.spec.kernel, "config": b.spec.config, "problem": " ; ".join(b.problems) or None,
               "default": b.default,
               "precisions": sorted(b.precisions), "programs": b.programs, "verdict": b.verdict,
               "failure": b.failure, **f.to_dict()}
        rows.append(row)
        if b.verdict == "FAIL":
            failures.append(row)
    for k in per_kernel.values():
        k["tensor_core"] = ", ".join(sorted(k["tensor_core"])) or "-"
    return {"kernels": dict(sorted(per_kernel.items())), "failures": failures, "binaries": rows,
            "compiled": len(rows), "compile_cpu_s": sum(r.get("compile_s") or 0 for r in rows)}


def format_report(report: dict) -> str:
    """The check as text: per arch, a table per kernel, the binary counts of the network passes, the failures."""
    out = []
    for arch, entry in report["arches"].items():
        t = entry["target"]
        out.append(f"== {arch} ({t['gpus']}): triton {t['triton']}, ptxas {t['ptxas']}; configs {report['configs']}, "
                   f"batch {report['batch']}; {entry['compiled']} binaries compiled in {entry['compile_wall_s']:.0f} s "
                   f"on {report['jobs']} processes ({entry['compile_cpu_s']:.0f} s of compiles), recording "
                   f"{entry['record_s']:.0f} s")
        head = (f"{'kernel':32} {'bins':>5} {'dflt':>5} {'fail':>5} {'prun':>5} {'regs':>5} {'smem KiB':>9} "
                f"{'stack':>6} {'spill d/all':>11} {'max spill':>9} {'tensor core':>16} {'compile s':>9}")
        out += [head, "-" * len(head)]
        for name, k in entry["kernels"].items():
            out.append(f"{name:32} {k['binaries']:5d} {k['defaults']:5d} {k['failures']:5d} {k['pruned']:5d} "
                       f"{k['max_registers']:5d} {k['max_shared_bytes'] / 1024:9.1f} {k['max_stack_bytes']:6d} "
                       f"{k['spilling_defaults']:5d}/{k['spilling']:<5d} {k['max_spill_store_bytes']:9d} "
                       f"{k['tensor_core']:>16} {k['compile_s']:9.1f}")
        out.append("")
        out.append("binaries per precision (default policy / every config of the lists):")
        for workload, per in entry["counts"].items():
            cells = ", ".join(f"{p} {c['default']}" + (f"/{c['all']}" if report["configs"] == "all" else "")
                              for p, c in per.items())
            out.append(f"  {workload}: {cells}")
        if entry.get("table_written"):
            out.append(f"table written: {entry['table_written']}")
            for item in entry.get("no_clean_config", []):
                out.append(f"  no clean config (every one spills or cannot launch): {item}")
        if entry["failures"]:
            out.append(f"FAILED: {len(entry['failures'])} binaries")
            for row in entry["failures"]:
                out.append(f"  {row['kernel']} {row['config'] or '(untuned)'} {row['problem'] or ''} "
                           f"[{', '.join(row['precisions'])}]: {row['failure']}")
        else:
            out.append(f"ok: every binary compiles and can launch on {arch}; no default spills")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------------------
# The precompile of a GPU run
# ----------------------------------------------------------------------------------------------------------------------

def write_sweep_winners(out_dir) -> list[Path]:
    """Write the winners of this process's PERFKIT_AUTOTUNE=full sweeps, one file per arch
    (``autotune-sm_90.json``) in ``out_dir``, in the committed tables' format. Nothing when no sweep ran (the
    kernels are not even imported then)."""
    tuning = sys.modules.get("perfkit.kernels.tuning")
    if tuning is None or not tuning._SWEEPS:
        return []
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    paths = []
    for arch in sorted({a for a, _, _ in tuning._SWEEPS}):
        path = Path(out_dir) / f"autotune-{arch}.json"
        path.write_text(json.dumps(tuning.sweep_winners(arch, name), indent=1, sort_keys=True) + "\n")
        paths.append(path)
    return paths
