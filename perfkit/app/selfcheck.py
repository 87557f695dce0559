"""`perfkit selfcheck timer`: perfkit's timer set against the utility a PyTorch user would trust, side by side.

On the CPU, perfkit.measure.timer.CpuTimer (the timer of every CPU row) against `torch.utils.benchmark.Timer.
blocked_autorange`; on a GPU, perfkit.measure.timer.CudaEventTimer against `triton.testing.do_bench`. Both time the same call
object the runner times (perfkit.runner.Runner.work): same module, same inputs, same batch and threads. Per case:

- warm-up: a few untimed calls, so lazy initialisation and allocator growth are behind both timers;
- `rounds` rounds, the order of the two timers alternating from round to round, so that drift (clocks, another
  process) falls on both alike; each timer measures for at least `min_time_s` per round;
- each timer's figure is its median per call (perfkit: the median of per-call times; torch: the median of its
  blocks' per-call means; do_bench: its median); the case's figure is the median over rounds, and the ratio is
  perfkit's over the other's, with the range of the per-round ratios beside it to show the noise.

A ratio inside 1 +- tolerance means the two agree. Passes with an untimed step before each call (backward) are not
among the cases: torch's Timer cannot leave that step out.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from perfkit.cases import NETWORK, Case
from perfkit.support.progress import Progress
from perfkit.measure.timer import TimingPolicy, timer_for

#: (layer, pass): a convolution, a linear layer, an LRN, the network's forward and its train step.
CASES = (("conv2", "forward"), ("fc6", "forward"), ("lrn1", "forward"), (NETWORK, "forward"),
         (NETWORK, "train_step"))
DEFAULT_BATCH = 8
DEFAULT_ROUNDS = 3
DEFAULT_MIN_TIME_S = 1.0
DEFAULT_TOLERANCE = 0.05
WARMUP_CALLS = 3


@dataclass
class TimerComparison:
    """One case timed by both timers. Times are seconds per call; ratio = perfkit / other."""

    layer: str
    pass_name: str
    batch: int
    device: str
    threads: int | None  # CPU threads both timers ran with (None on a GPU)
    perfkit_timer: str
    other_timer: str
    perfkit_median_s: float
    other_median_s: float
    ratio: float
    ratio_low: float  # the smallest and largest per-round ratio
    ratio_high: float
    rounds: int
    agrees: bool  # ratio within 1 +- tolerance


def _torch_benchmark_median(run: Callable[[], object], threads: int, min_time_s: float) -> float:
    from torch.utils.benchmark import Timer

    # num_threads defaults to 1 in torch.utils.benchmark: pass the case's count, or it would time another config.
    timer = Timer(stmt="run()", globals={"run": run}, num_threads=threads, label="perfkit selfcheck")
    return timer.blocked_autorange(min_run_time=min_time_s).median


def _do_bench_median(run: Callable[[], object], min_time_s: float) -> float:
    from triton.testing import do_bench

    return do_bench(run, warmup=25, rep=max(100, int(min_time_s * 1e3)), return_mode="median") / 1e3


def compare_timers(run: Callable[[], object], device: str = "cpu", threads: int | None = None,
                   rounds: int = DEFAULT_ROUNDS, min_time_s: float = DEFAULT_MIN_TIME_S,
                   tolerance: float = DEFAULT_TOLERANCE, layer: str = "", pass_name: str = "",
                   batch: int = 0) -> TimerComparison:
    """Time `run` (a call with no arguments; on a GPU it may return before the GPU is done) with perfkit's timer and
    with the reference utility, `rounds` times each, alternating which goes first."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    gpu = device.startswith("cuda")
    timer = timer_for(device)
    policy = TimingPolicy(warmup=1, min_reps=5, min_time_s=min_time_s)
    threads = None if gpu else (threads or torch.get_num_threads())
    ours, theirs = [], []
    saved = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        for _ in range(WARMUP_CALLS):
            run()
        if gpu:
            torch.cuda.synchronize(device)
        for i in range(rounds):
            order = ("perfkit", "other") if i % 2 == 0 else ("other", "perfkit")
            for which in order:
                if which == "perfkit":
                    ours.append(timer.measure(run, None, policy).median_s)
                elif gpu:
                    with torch.cuda.device(torch.device(device)):
                        theirs.append(_do_bench_median(run, min_time_s))
                else:
                    theirs.append(_torch_benchmark_median(run, threads, min_time_s))
    finally:
        torch.set_num_threads(saved)
    per_round = [a / b for a, b in zip(ours, theirs)]
    mine, other = statistics.median(ours), statistics.median(theirs)
    ratio = mine / other
    return TimerComparison(layer=layer, pass_name=pass_name, batch=batch, device=device, threads=threads,
                           perfkit_timer=timer.name,
                           other_timer="triton.testing.do_bench" if gpu else
                           "torch.utils.benchmark.Timer.blocked_autorange",
                           perfkit_median_s=mine, other_median_s=other, ratio=ratio, ratio_low=min(per_round),
                           ratio_high=max(per_round), rounds=rounds, agrees=abs(ratio - 1) <= tolerance)


def timer_selfcheck(device: str = "cpu", batch: int = DEFAULT_BATCH, threads: int | None = None,
                    variant: str = "alexnet2012", backend: str = "torch", rounds: int = DEFAULT_ROUNDS,
                    min_time_s: float = DEFAULT_MIN_TIME_S, tolerance: float = DEFAULT_TOLERANCE,
                    cases=CASES, show_progress: bool = True) -> list[TimerComparison]:
    """Every case of `cases` ((layer, pass) pairs) timed by both timers, one after the other in this process."""
    from perfkit.backends import float32_precision, get_backend
    from perfkit.runner import calls_only_runner

    runner = calls_only_runner()
    chosen = get_backend(backend)
    progress = Progress(len(cases), title="selfcheck timer", enabled=show_progress)
    out = []
    try:
        for layer, pass_name in cases:
            case = Case(variant=variant, layer=layer, backend=backend, device=device, dtype="float32", batch=batch,
                        pass_name=pass_name, threads=threads)
            reason = chosen.unavailable_reason(device, case.dtype, pass_name)
            if reason:
                raise ValueError(f"{case.label}: {reason}")
            progress.start(case.label)
            saved = torch.get_num_threads()
            try:
                if threads:
                    torch.set_num_threads(threads)  # the module is built (compile: specialised) at the case's count
                with float32_precision(case.dtype):
                    run, prepare = runner.work(case, chosen).timed()
                    if prepare is not None:
                        raise ValueError(f"{case.label}: a pass with an untimed step before each call cannot be "
                                         "timed by torch.utils.benchmark")
                    result = compare_timers(run, device, threads or torch.get_num_threads(), rounds, min_time_s,
                                            tolerance, layer, pass_name, batch)
            finally:
                torch.set_num_threads(saved)
            out.append(result)
            progress.done("ok" if result.agrees else "differs", f"ratio {result.ratio:.3f}")
            del run
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    finally:
        progress.close()
    return out


def format_comparisons(results: list[TimerComparison], tolerance: float, command: str) -> str:
    from perfkit.app.tables import format_table

    if not results:
        return "no cases"
    first = results[0]
    rows = [dict(asdict(r), case=f"{r.layer} {r.pass_name}", ours_ms=r.perfkit_median_s * 1e3,
                 theirs_ms=r.other_median_s * 1e3, spread=f"{r.ratio_low:.3f}-{r.ratio_high:.3f}",
                 verdict="agrees" if r.agrees else "differs") for r in results]
    where = (f"{first.device}, {first.threads} threads" if first.threads else first.device)
    table = format_table(rows, [
        ("case", "case", None), ("batch", "batch", None),
        ("ours_ms", f"{first.perfkit_timer} ms", lambda v: f"{v:.4g}"),
        ("theirs_ms", f"{first.other_timer.split('.')[-1]} ms", lambda v: f"{v:.4g}"),
        ("ratio", "ratio", lambda v: f"{v:.3f}"), ("spread", "per-round ratios", None), ("verdict", "verdict", None)])
    agreeing = sum(r.agrees for r in results)
    return "\n".join([
        f"Timer self-check on {where}: perfkit's {first.perfkit_timer} timer against {first.other_timer}, medians "
        f"per call over {first.rounds} alternating rounds.", table,
        f"{agreeing} of {len(results)} cases agree within {tolerance:.0%} (ratio = perfkit / {first.other_timer}).",
        f"Reproduce: {command}"])


def run_timer_selfcheck_cli(args) -> int:
    """`perfkit selfcheck timer`: print the comparison; exit 1 when a case's timers disagree beyond the tolerance."""
    import json
    import sys

    device = "cpu" if args.device == "cpu" else ("cuda:0" if args.device == "cuda" else args.device)
    started = time.monotonic()
    results = timer_selfcheck(device=device, batch=args.batch, threads=args.threads, rounds=args.rounds,
                              min_time_s=args.min_time, tolerance=args.tolerance,
                              show_progress=not args.no_progress)
    command = " ".join(["perfkit selfcheck timer", f"--device {args.device}", f"--batch {args.batch}",
                        *([f"--threads {args.threads}"] if args.threads else []), f"--rounds {args.rounds}",
                        f"--min-time {args.min_time:g}", f"--tolerance {args.tolerance:g}"])
    if args.format == "json":
        print(json.dumps({"command": command, "tolerance": args.tolerance,
                          "elapsed_s": time.monotonic() - started, "cases": [asdict(r) for r in results]}, indent=2))
    else:
        print(format_comparisons(results, args.tolerance, command))
    bad = [r for r in results if not r.agrees]
    if bad:
        print(f"perfkit selfcheck: {len(bad)} case(s) outside 1 +- {args.tolerance:g}: "
              + ", ".join(f"{r.layer} {r.pass_name} {r.ratio:.3f}" for r in bad)
              + " (on a busy machine rerun it idle; see the module docstring of perfkit.app.selfcheck)", file=sys.stderr)
        return 1
    return 0
