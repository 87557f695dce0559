"""Which config each tiled kernel runs on a GPU, chosen without trying configs there; and launches recorded, not run,
so that their binaries can be compiled ahead of time (perfkit.kernels.aot, `perfkit kernels check`).

Policies (``PERFKIT_AUTOTUNE``, or `perfkit run|study|campaign --autotune`):

- ``default``: one config per kernel and problem. It comes from the committed table of the GPU's arch
  (``tables/sm_90.json``, ``tables/sm_80.json``), or, for a problem the table lacks, from `heuristic_choice`. A first
  GPU run then compiles one binary per kernel and problem and benchmarks nothing.
- ``full``: every launchable config of the list is compiled and timed (``triton.testing.do_bench``) on the first call
  of each problem, and the fastest kept. `sweep_winners` returns the winners in the table's format, so that a sweep on
  a GPU can be committed as that arch's table.

Either way the list a kernel chooses from holds only configs the compiler says can launch on the arch: the table's
``unlaunchable`` entries (written by `perfkit kernels check --write-tables` from the compiled binaries' shared memory
and registers) are pruned. `configs_used` tells which policy and config each kernel ran with; the runner records it
on every row.

A config is named by its label, ``BLOCK_M=128,BLOCK_N=64,BLOCK_K=32,GROUP_M=8/w4/s4`` (meta-parameters, warps,
stages); a problem by its key, ``float16|M=387200,KG=48,...``: the tensor dtype and the kernel's autotune key.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from triton.runtime.errors import OutOfResources
from triton.runtime.jit import KernelInterface

from . import _common

POLICIES = ("default", "full")
POLICY_ENV = "PERFKIT_AUTOTUNE"
TABLE_DIR = Path(__file__).resolve().parent / "tables"


def autotune_policy() -> str:
    """The policy in force: ``PERFKIT_AUTOTUNE`` ("default" when unset)."""
    policy = os.environ.get(POLICY_ENV, "default") or "default"
    if policy not in POLICIES:
        raise ValueError(f"{POLICY_ENV}={policy!r} is not a policy; expected one of {', '.join(POLICIES)}")
    return policy


def config_label(config: triton.Config) -> str:
    """A config's stable name: its meta-parameters in order, then warps and stages."""
    meta = ",".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{meta}/w{config.num_warps}/s{config.num_stages}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------------------------------
# The committed tables
# ----------------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_table(arch: str) -> dict:
    """The committed table of an arch ("sm_90"): {"unlaunchable": {kernel: {dtype: {label: reason}}},
    "defaults": {kernel: {problem key: label}}, ...}; empty sections when the arch has no table."""
    path = TABLE_DIR / f"{arch}.json"
    if not path.exists():
        return {"arch": arch, "unlaunchable": {}, "defaults": {}}
    table = json.loads(path.read_text())
    table.setdefault("unlaunchable", {})
    table.setdefault("defaults", {})
    return table


def current_arch(device: torch.device | None = None) -> str:
    """The arch launches are for: the recorded target's while recording, else the CUDA device's ("sm_90")."""
    target = _common.recording_target()
    if target is not None:
        return target[0]
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def heuristic_choice(candidates: list[triton.Config], programs, multiprocessors: int) -> triton.Config:
    """The config for a problem no table covers: the largest tile (product of the BLOCK_* meta-parameters) whose grid
    still gives every SM a program; if none fills the GPU, the one with the most programs. Ties keep the list's order.
    ``programs(config)`` is the grid size the config launches."""

    return heuristic_order(candidates, programs, multiprocessors)[0]


def heuristic_order(candidates: list, programs, multiprocessors: int) -> list:
    """``candidates`` from the heuristic's first choice to its last (see `heuristic_choice`)."""

    def score(indexed):
        index, config = indexed
        tile = math.prod(v for k, v in config.kwargs.items() if k.startswith("BLOCK"))
        count = programs(config)
        fills = count >= multiprocessors
        return (fills, tile if fills else count, -index)

    return [config for _, config in sorted(enumerate(candidates), key=score, reverse=True)]


def _parse_problem(problem: str) -> tuple[str, dict[str, str]]:
    dtype, _, rest = problem.partition("|")
    return dtype, dict(item.split("=", 1) for item in rest.split(",") if item)


def nearest_problem(problem: str, known) -> str | None:
    """The problem among ``known`` of the same dtype whose key differs from ``problem``'s only in integer sizes,
    nearest in log size (a batch of 256 takes the table's batch-128 config); None when there is none."""
    dtype, values = _parse_problem(problem)
    best, best_distance = None, math.inf
    for other in known:
        other_dtype, other_values = _parse_problem(other)
        if other_dtype != dtype or other_values.keys() != values.keys():
            continue
        distance = 0.0
        for name, value in values.items():
            theirs = other_values[name]
            if value == theirs:
                continue
            if not (value.isdigit() and theirs.isdigit()) or int(value) == 0 or int(theirs) == 0:
                distance = math.inf
                break
            distance += abs(math.log(int(value) / int(theirs)))
        if distance < best_distance:
            best, best_distance = other, distance
    return best


# ----------------------------------------------------------------------------------------------------------------------
# The dispatcher
# ----------------------------------------------------------------------------------------------------------------------

# (kernel, problem key) -> {"config", "from"} of every tuned launch since the last `reset_configs_used`.
_USED: dict[tuple[str, str], dict[str, str]] = {}
# (arch, kernel, problem key) -> {"config": label, "ms": its time, "tried_ms": {label: ms or why not}} of full sweeps.
_SWEEPS: dict[tuple[str, str, str], dict] = {}


def configs_used() -> dict[str, dict[str, dict[str, str]]]:
    """{kernel: {problem key: {"config": label, "from": "table" | "table (nearest problem)" | "heuristic" | "full
    sweep"}}} of the tuned launches since the last `reset_configs_used`."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for (kernel, problem), used in sorted(_USED.items()):
        out.setdefault(kernel, {})[problem] = dict(used)
    return out


def reset_configs_used() -> None:
    _USED.clear()


def sweep_winners(arch: str | None = None, device_name: str | None = None) -> dict:
    """The full sweeps' winners in the committed table's format (``defaults``), with every config's time."""
    rows: dict[str, dict[str, str]] = {}
    times: dict[str, dict[str, dict]] = {}
    arches = set()
    for (sweep_arch, kernel, problem), result in sorted(_SWEEPS.items()):
        if arch is not None and sweep_arch != arch:
            continue
        arches.add(sweep_arch)
        rows.setdefault(kernel, {})[problem] = result["config"]
        times.setdefault(kernel, {})[problem] = result["tried_ms"]
    return {
        "arch": arch or ",".join(sorted(arches)),
        "source": f"measured: PERFKIT_AUTOTUNE=full sweep (triton.testing.do_bench) on {device_name or 'a GPU'}",
        "triton": triton.__version__,
        "defaults": rows,
        "sweep_ms": times,
    }


class TunedKernel(KernelInterface):
    """A @triton.jit kernel with a config list, launched as ``kernel[grid](*args, **kwargs)`` like triton.autotune's,
    with the config chosen by the policy in force (module docstring). ``prune(configs, named_args, **kwargs)`` narrows
    the list to the problem, as triton.autotune's ``early_config_prune``."""

    def __init__(self, fn, configs: list[triton.Config], key: list[str], prune=None):
        self.fn = fn
        self.configs = list(configs)
        self.key = list(key)
        self.prune = prune
        self.arg_names = fn.arg_names
        self.name = fn.fn.__name__
        self.__name__ = self.name
        self.__doc__ = fn.fn.__doc__
        self._chosen: dict[tuple, tuple] = {}
        self._positions = {name: i for i, name in enumerate(self.arg_names)}

    def __repr__(self) -> str:
        return f"<TunedKernel {self.name}: {len(self.configs)} configs>"

    def _named(self, args, kwargs) -> dict:
        return {**dict(zip(self.arg_names, args)), **kwargs}

    def problem_key(self, args, kwargs) -> str:
        named = self._named(args, kwargs)
        tensor = next(v for v in named.values() if isinstance(v, torch.Tensor))
        return _dtype_name(tensor.dtype) + "|" + ",".join(f"{k}={named[k]}" for k in self.key)

    def candidates(self, args, kwargs, arch: str, prune_unlaunchable: bool = True) -> list[triton.Config]:
        """The configs this problem may run: the list pruned to the problem, less those the arch's table marks
        unlaunchable for the tensors' dtype (unless ``prune_unlaunchable`` is false: the check compiles them all)."""
        named = self._named(args, kwargs)
        configs = self.prune(self.configs, named, **kwargs) if self.prune else list(self.configs)
        if not prune_unlaunchable:
            return configs
        dtype = self.problem_key(args, kwargs).split("|")[0]
        refused = load_table(arch)["unlaunchable"].get(self.name, {}).get(dtype, {})
        kept = [c for c in configs if config_label(c) not in refused]
        if not kept:
            raise RuntimeError(f"{self.name}: every config for {self.problem_key(args, kwargs)} is unlaunchable on "
                               f"{arch} (kernels/tables/{arch}.json)")
        return kept

    def programs(self, args, kwargs, grid, config: triton.Config) -> int:
        if not callable(grid):
            return math.prod(grid)
        meta = {**self._named(args, kwargs), **config.all_kwargs()}
        return math.prod(grid(meta))

    def choose(self, args, kwargs, grid, arch: str, multiprocessors: int) -> tuple[triton.Config, str]:
        """The default policy's config for this problem, and where it came from ("table" or "heuristic")."""
        candidates = self.candidates(args, kwargs, arch)
        problem = self.problem_key(args, kwargs)
        defaults = load_table(arch)["defaults"].get(self.name, {})
        label = defaults.get(problem)
        for config in candidates:
            if config_label(config) == label:
                return config, "table"
        nearest = nearest_problem(problem, defaults)
        for config in candidates:
            if nearest is not None and config_label(config) == defaults[nearest]:
                return config, "table (nearest problem)"
        return heuristic_choice(candidates, lambda c: self.programs(args, kwargs, grid, c), multiprocessors), \
            "heuristic"

    def run(self, *args, grid, warmup, **kwargs):
        # The cache key is built from the raw values (a launch costs microseconds); names and strings only on a miss.
        tensor = next(v for v in args if isinstance(v, torch.Tensor))
        positions = self._positions
        values = tuple(kwargs[k] if k in kwargs else args[positions[k]] for k in self.key)
        policy = autotune_policy()
        cache_key = (policy, _common.recording_target() or tensor.device, tensor.dtype, values)
        cached = self._chosen.get(cache_key)
        if cached is None:
            arch = current_arch(tensor.device if tensor.device.type == "cuda" else None)
            problem = self.problem_key(args, kwargs)
            if policy == "full":
                config = self._sweep(args, kwargs, grid, arch, problem)
                source = "full sweep"
            else:
                config, source = self.choose(args, kwargs, grid, arch, _common.multiprocessor_count(tensor.device))
            cached = self._chosen[cache_key] = (config, config.all_kwargs(), problem,
                                                {"config": config_label(config), "from": source})
        config, meta, problem, used = cached
        _USED[(self.name, problem)] = used
        return self.fn.run(*args, grid=grid, warmup=warmup, **kwargs, **meta)

    def _sweep(self, args, kwargs, grid, arch: str, problem: str) -> triton.Config:
        from triton.testing import do_bench

        tried, best, best_ms = {}, None, math.inf
        for config in self.candidates(args, kwargs, arch):
            def launch(config=config):
                self.fn.run(*args, grid=grid, warmup=False, **kwargs, **config.all_kwargs())
            try:
                ms = do_bench(launch, warmup=10, rep=40)
            except OutOfResources as exc:
                tried[config_label(config)] = f"out of resources: {exc}"
                continue
            tried[config_label(config)] = ms
            if ms < best_ms:
                best, best_ms = config, ms
        if best is None:
            raise RuntimeError(f"{self.name}: no config of {problem} could run on {arch}: {tried}")
        _SWEEPS[(arch, self.name, problem)] = {"config": config_label(best), "ms": best_ms, "tried_ms": tried}
        return best


# ----------------------------------------------------------------------------------------------------------------------
# Recording launches
# ----------------------------------------------------------------------------------------------------------------------

@dataclass
class Launch:
    """One ``kernel[grid](*args, **kwargs)`` recorded instead of run. ``kernel`` is what was subscripted: a
    TunedKernel or a plain JITFunction."""

    kernel: object
    grid: object
    args: tuple
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kernel.name if isinstance(self.kernel, TunedKernel) else self.kernel.fn.__name__


@contextlib.contextmanager
def recording_launches(arch: str, multiprocessors: int):
    """Record every kernel launch of perfkit.kernels instead of running it, as if on a GPU of ``arch`` with that many
    SMs; yields the list of `Launch`es. The host wrappers run as usual on CPU tensors standing in for GPU memory
    (their contents are never read: outputs stay uninitialised), so the arguments, constexprs and specializations are
    the ones a GPU run passes."""
    if _common.is_interpreting():
        raise RuntimeError("launches can only be recorded for a GPU when TRITON_INTERPRET is not set (the kernels were "
                           "imported for the interpreter)")
    launches: list[Launch] = []
    original = KernelInterface.__getitem__

    def record(self, grid):
        def launch(*args, **kwargs):
            launches.append(Launch(self, grid, args, kwargs))
        return launch

    previous = _common._RECORDING_TARGET
    _common._RECORDING_TARGET = (arch, multiprocessors)
    KernelInterface.__getitem__ = record
    try:
        yield launches
    finally:
        KernelInterface.__getitem__ = original
        _common._RECORDING_TARGET = previous
