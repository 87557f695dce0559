"""The Triton binaries a run launches: recorded from the triton backend's cases on CPU tensors (their launches recorded,
not run, as if on a GPU of the arch: perfkit.kernels.tuning.recording_launches) and compiled ahead of time.

This is the harness half of the kernels check: the runner's precompile (`precompile_cases`) fills Triton's on-disk
cache with a study's binaries on every host core before its first triton case is timed, and `collect_binaries` lists
them. Judging them by the compiler's figures and writing the tables is perfkit.app.kernelcheck's.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace

PRECOMPILE_MAX_BATCH = 1024  # perfkit.kernels.aot.ARCHES, named here so that the CLI parses without triton


def _kernels_for_gpu():
    """perfkit.kernels imported for a GPU (not the interpreter), with its tuning and aot modules."""
    from perfkit import kernels
    from perfkit.kernels import aot, tuning

    if kernels.is_interpreting():
        raise RuntimeError("perfkit.kernels was imported with TRITON_INTERPRET=1; the check compiles for a GPU and must "
                           "run without it (the CLI starts a fresh process without it)")
    return kernels, aot, tuning


def record_case(case, arch: str, multiprocessors: int, batch: int | None = None):
    """The launches one triton case's timed pass makes (at ``batch``, default the case's), recorded on CPU tensors as
    if on a GPU of ``arch``. The case's float32 precision (IEEE or TF32) is set as the runner sets it."""
    import torch

    from perfkit.backends import float32_precision, get_backend
    from perfkit.cases import AUGMENT
    from perfkit.model import torch_dtype
    from perfkit.runner import case_layers
    from perfkit.specs import build_network
    from perfkit.workload import Workload, make_inputs

    _, _, tuning = _kernels_for_gpu()
    batch = batch or case.batch
    with float32_precision(case.dtype), tuning.recording_launches(arch, multiprocessors) as launches:
        if case.layer == AUGMENT:
            _record_augment(case, batch)
        else:
            backend = get_backend(case.backend)
            layers = case_layers(build_network(case.variant, case.activation), case)
            dtype = torch_dtype(case.dtype)
            module = backend.build(layers, None, "cpu", dtype)
            workload = Workload(module, case.pass_name, make_inputs(layers, batch, 0), "cpu", dtype,
                                backend.make_optimizer)
            with torch.random.fork_rng():
                if workload.prepare:
                    workload.prepare()
                workload.run()
    return launches


def _record_augment(case, batch: int) -> None:
    """One call of the augmentation kernel as an augment case makes it: stored 256 x 256 images (uint8, or float32
    with the `input` option) in channels_last, the crop's draws, and stand-in lighting statistics. The launch depends
    on shapes, dtypes and layouts only, so no photographs are needed (the GPU machine has no scikit-learn)."""
    import torch

    from perfkit.workloads import augment
    from perfkit.model import torch_dtype

    images = torch.empty((batch, 3, augment.SOURCE_SIZE, augment.SOURCE_SIZE), dtype=torch.uint8)
    if case.option("input", "uint8") == "float32":
        images = images.to(torch.float32)
    images = images.contiguous(memory_format=torch.channels_last)
    draws = augment.draw(batch, (augment.SOURCE_SIZE, augment.SOURCE_SIZE), augment.CROP,
                         torch.Generator().manual_seed(0), "cpu")
    lighting = augment.Lighting(torch.ones(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64),
                                torch.full((3,), 0.5, dtype=torch.float64), torch.full((3,), 0.25, dtype=torch.float64),
                                1, "stand-in for recording a launch")
    augment.augment_triton(images, draws, lighting, augment.CROP, torch_dtype(case.dtype),
                           channels_last=case.option("layout", "nchw") == "channels_last")


@dataclass
class Binary:
    """One binary of the check: what to compile, which launches need it, and (once compiled) its figures."""

    spec: object  # perfkit.kernels.aot.BinarySpec
    problem: str | None  # the tuned kernel's problem key; None for an untuned kernel
    default: bool = False  # the default policy compiles it
    table_pruned: str | None = None  # the arch's table marks the config unlaunchable (its reason)
    programs: int | None = None  # grid size of its launch
    uses: set = field(default_factory=set)  # {(label, precision)}
    # Every problem whose launch compiles to this binary, with its grid size: two problems can share one binary
    # (sizes differ, specialization does not), and each needs its own table default.
    problems: dict = field(default_factory=dict)
    figures: object = None  # perfkit.kernels.aot.BinaryFigures
    verdict: str = "not compiled"
    failure: str | None = None

    def __post_init__(self):
        if self.problem is not None:
            self.problems.setdefault(self.problem, self.programs)

    @property
    def precisions(self) -> set:
        return {precision for _, precision in self.uses}


def collect_binaries(cases, arch: str, configs: str = "default", progress=None,
                     multiprocessors: int | None = None) -> dict[str, Binary]:
    """{key: Binary} for ``cases`` ([(label, Case)]) on ``arch``: under ``configs="default"`` the one config per
    problem that a default GPU run launches, under ``"all"`` every config of each problem's list (the table's
    unlaunchable ones included, so that the table itself is checked)."""
    _, aot, tuning = _kernels_for_gpu()
    sms = multiprocessors or aot.arch_limits(arch).multiprocessors
    binaries: dict[str, Binary] = {}
    for label, case in cases:
        if progress:
            progress.start(f"recording {label} {case.dtype}")
        launches = record_case(case, arch, sms)
        with aot.target_driver(arch):
            for launch in launches:
                kernel = launch.kernel
                if isinstance(kernel, tuning.TunedKernel):
                    default, _ = kernel.choose(launch.args, launch.kwargs, launch.grid, arch, sms)
                    problem = kernel.problem_key(launch.args, launch.kwargs)
                    if configs in ("all", "search"):
                        options = kernel.candidates(launch.args, launch.kwargs, arch, prune_unlaunchable=False)
                    else:
                        options = [default]
                    refused = tuning.load_table(arch)["unlaunchable"].get(kernel.name, {}).get(problem.split("|")[0],
                                                                                               {})
                    jit = kernel.fn
                else:
                    default, problem, options, refused, jit = None, None, [None], {}, kernel
                for config in options:
                    kwargs = {**launch.kwargs, **(config.all_kwargs() if config is not None else {})}
                    key, data = aot.specialize(jit, launch.args, kwargs)
                    label_of = tuning.config_label(config) if config is not None else None
                    programs = kernel.programs(launch.args, launch.kwargs, launch.grid, config) \
                        if config is not None else None
                    binary = binaries.get(key)
                    if binary is None:
                        spec = aot.BinarySpec(jit.fn.__name__, jit.fn.__module__, label_of, key, data)
                        binary = binaries[key] = Binary(spec, problem, table_pruned=refused.get(label_of),
                                                        programs=programs)
                    elif problem is not None:
                        binary.problems.setdefault(problem, programs)
                    binary.default = binary.default or (config is not None and label_of == tuning.config_label(default)) \
                        or config is None
                    binary.uses.add((label, case.dtype))
        del launches
        if progress:
            progress.done("ok")
    return binaries


def precompile_cases(cases, check_batch: int, jobs: int | None = None, stream=None) -> dict:
    """Compile, on every host core, the binaries the triton cases among ``cases`` will launch on this machine's GPU
    (their timed batch and their check batch), into Triton's on-disk cache, so that the first timed case finds them
    there. Returns {"binaries", "seconds", "errors"}; a binary that fails here fails again, with its message, when its
    case runs."""
    import torch

    from perfkit.kernels import aot

    from perfkit.workloads import augment
    from perfkit.cases import AUGMENT

    triton_cases = [c for c in cases if c.backend == "triton" and c.device.startswith("cuda")
                    and not (c.layer == AUGMENT and augment.unavailable_reason(c))]  # skipped cases compile nothing
    if not triton_cases or not torch.cuda.is_available():
        return {"binaries": 0, "seconds": 0.0, "errors": 0}
    started = time.perf_counter()
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    if arch not in aot.ARCHES:
        return {"binaries": 0, "seconds": 0.0, "errors": 0, "note": f"no precompile for {arch}"}
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    specs: dict[str, object] = {}
    seen = set()
    for case in triton_cases:
        # Options (hot cache, CUDA graphs...) do not change the launches; batches past PRECOMPILE_MAX_BATCH would
        # need their inputs in host memory to be recorded, and compile on first use instead.
        for batch in sorted({case.batch, min(case.batch, check_batch)}):
            if batch > PRECOMPILE_MAX_BATCH:
                continue
            work = replace(case, batch=batch, options=tuple(o for o in case.options if o[0] == "layout"),
                           threads=None)
            if work in seen:
                continue
            seen.add(work)
            binaries = collect_binaries([(case.key, work)], arch, multiprocessors=sms)
            for key, b in binaries.items():
                specs.setdefault(key, b.spec)
    results = aot.compile_in_parallel(arch, list(specs.values()), jobs or os.cpu_count() or 1)
    seconds = time.perf_counter() - started
    errors = sum(1 for r in results if r.error)
    print(f"precompiled {len(specs)} Triton binaries for {arch} in {seconds:.1f} s"
          + (f" ({errors} failed to compile)" if errors else ""), file=stream or sys.stderr)
    return {"binaries": len(specs), "seconds": seconds, "errors": errors}
