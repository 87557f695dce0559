"""`perfkit bench`: run the pytest-benchmark regression suite (tests/benchmarks/), gate it, refresh its baseline.

    perfkit bench run      [--device cpu|cuda] [-k EXPR] [--quick] [--json PATH] [--no-save] [-- PYTEST_ARGS...]
    perfkit bench check    [--device cpu|cuda] [--baseline PATH] [--from-json PATH] [--confirm-runs N] [-k EXPR] ...
    perfkit bench baseline [--device cpu|cuda] [--runs N] [--out PATH] [-k EXPR] ...

Each runs pytest on the suite in a subprocess (from the checkout the suite lives in) and saves the run where
pytest-benchmark keeps its history and the dashboard reads it: `.benchmarks/<machine>/NNNN_<name>.json` at the
checkout's root (git-ignored). `check` then compares the run with the committed baseline
(tests/benchmarks/baselines/cpu.json, or cuda-<gpu model>.json) through `perfkit.benchgate`, reruns suspects up to twice,
and exits 1 naming each benchmark that stayed over its limit every time. `baseline` runs the suite several times and writes the baseline file,
to be reviewed and committed.

The suite is not part of the wheel: these commands need a source checkout.
Exit status: 0 passed, 1 regression or a failing benchmark, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import perfkit
from perfkit import benchgate

INJECT_ENV = "PERFKIT_BENCH_INJECT_SLOWDOWN"  # read by tests/benchmarks/conftest.py; test-only
DEVICE_MARKERS = {"cpu": "not gpu", "cuda": "gpu"}
QUICK_ARGS = ("--benchmark-max-time=0.2", "--benchmark-min-rounds=3")
#: Defaults backed by the spread measured on a shared 2-core machine (see perfkit.benchgate).
BASELINE_RUNS = 5
CONFIRM_RUNS = 2


class BenchError(Exception):
    """A problem that stops the command (printed as one line, exit 1)."""


# -- where things are ---------------------------------------------------------------------------------------------------
def find_suite() -> Path:
    """tests/benchmarks/ of the checkout perfkit runs from, else of the current directory."""
    candidates = [Path(perfkit.__file__).resolve().parent.parent / "tests" / "benchmarks",
                  Path.cwd() / "tests" / "benchmarks"]
    for suite in candidates:
        if (suite / "conftest.py").is_file():
            return suite
    raise BenchError("the benchmark suite (tests/benchmarks/) comes with perfkit's source checkout, not the wheel: "
                     "run this from a checkout (pip install -e .)")


def checkout_root(suite: Path) -> Path:
    return suite.parent.parent


def default_storage(suite: Path) -> Path:
    return checkout_root(suite) / ".benchmarks"


def default_baseline(suite: Path, device_name: str) -> Path:
    return suite / "baselines" / f"{device_name}.json"


# -- running the suite --------------------------------------------------------------------------------------------------
def pytest_command(suite: Path, *, device: str, json_path: Path, save: str | None, storage: Path,
                   keyword: str | None = None, quick: bool = False, targets=None, extra=()) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", *(targets or [str(suite)]), "-m", DEVICE_MARKERS[device],
           "-q", "-p", "no:cacheprovider", f"--benchmark-json={json_path}", f"--benchmark-storage=file://{storage}"]
    if save == "auto":
        cmd.append("--benchmark-autosave")
    elif save:
        cmd.append(f"--benchmark-save={save}")
    if keyword:
        cmd += ["-k", keyword]
    if quick:
        cmd += list(QUICK_ARGS)
    return cmd + list(extra)


def run_suite(args, suite: Path, *, save: str | None, targets=None, extra=(), label="run") -> tuple[int, dict | None]:
    """One pytest run of the suite; its exit status and its JSON (None when no benchmark ran)."""
    storage = Path(args.storage) if args.storage else default_storage(suite)
    if save and os.environ.get(INJECT_ENV) and not args.storage:
        print(f"perfkit bench: {INJECT_ENV} is set: this run is not saved to the history in {storage}",
              file=sys.stderr)
        save = None
    with tempfile.TemporaryDirectory(prefix="perfkit-bench-") as tmp:
        json_path = Path(tmp) / "run.json"
        cmd = pytest_command(suite, device=args.device, json_path=json_path, save=save, storage=storage,
                             keyword=None if targets else args.keyword, quick=args.quick, targets=targets,
                             extra=extra)
        print(f"perfkit bench {label}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        code = subprocess.call(cmd, cwd=checkout_root(suite))
        if not json_path.is_file():
            return code, None
        doc = json.loads(json_path.read_text())
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(doc, indent=1))
    if not doc.get("benchmarks"):
        return code, None
    return code, doc


# -- commands -----------------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    suite = find_suite()
    code, doc = run_suite(args, suite, save=None if args.no_save else "auto", extra=args.pytest_args, label="run")
    if doc is None:
        print(f"perfkit bench run: no benchmark ran (pytest exit status {code})", file=sys.stderr)
        return 1
    return 0 if code == 0 else 1


def cmd_check(args) -> int:
    suite = find_suite() if not args.from_json or not args.baseline else None
    if args.from_json:
        doc, code = benchgate.load(args.from_json), 0
    else:
        code, doc = run_suite(args, suite, save=None if args.no_save else "auto", label="check")
    if doc is None:
        print(f"perfkit bench check: no benchmark ran (pytest exit status {code}); nothing to gate", file=sys.stderr)
        return 1
    device_name = benchgate.baseline_device_name(doc)
    baseline_path = Path(args.baseline) if args.baseline else default_baseline(suite, device_name)
    if not baseline_path.is_file():
        raise BenchError(f"no baseline at {baseline_path} for {device_name}: record one with `perfkit bench baseline "
                         f"--device {args.device}`, review it and commit it")
    baseline = benchgate.load(baseline_path)
    result = benchgate.compare(doc, baseline)
    for attempt in range(args.confirm_runs if not args.from_json else 0):
        suspects = [case.name for case in result.regressed]
        if not suspects:
            break
        print(f"perfkit bench check: {len(suspects)} suspect(s) over their limit; confirmation rerun {attempt + 1} of "
              f"at most {args.confirm_runs}", file=sys.stderr, flush=True)
        _, rerun = run_suite(args, suite, save=None, targets=suspects,
                             label=f"check (confirmation rerun {attempt + 1})")
        if rerun is None:
            result.notes.append("a confirmation rerun produced no results; its suspects are kept as regressed")
            break
        benchgate.confirm(result, rerun, baseline)
    print(f"\nperfkit bench check against {baseline_path}:")
    print(benchgate.format_report(result))
    if code != 0:
        print(f"perfkit bench check: the suite itself failed (pytest exit status {code}); see above", file=sys.stderr)
        return 1
    return 0 if result.passed else 1


def cmd_baseline(args) -> int:
    if os.environ.get(INJECT_ENV):
        raise BenchError(f"{INJECT_ENV} is set: a baseline must come from clean runs; unset it")
    suite = find_suite()
    runs = []
    for i in range(args.runs):
        code, doc = run_suite(args, suite, save=None if args.no_save else "baseline",
                              label=f"baseline (run {i + 1} of {args.runs})")
        if code != 0 or doc is None:
            raise BenchError(f"run {i + 1} of the suite failed (pytest exit status {code}); no baseline written")
        runs.append(doc)
    baseline = benchgate.make_baseline(runs)
    path = Path(args.out) if args.out else default_baseline(suite, benchgate.baseline_device_name(runs[-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(baseline, indent=1, sort_keys=True) + "\n")
    cases = baseline["perfkit_baseline"]["cases"]
    spreads = sorted((c["spread"], name.split("::")[-1]) for name, c in cases.items())
    print(f"wrote {path}: {len(cases)} benchmarks over {args.runs} runs")
    if spreads:
        median = spreads[len(spreads) // 2][0]
        print(f"run-to-run spread of the normalized times: median {median:.1%}, largest {spreads[-1][0]:.1%} "
              f"({spreads[-1][1]})")
        wide = [(s, n) for s, n in spreads if benchgate.case_limit(s) > benchgate.FLOOR]
        print(f"limits: {len(spreads) - len(wide)} benchmark(s) at the {benchgate.FLOOR:.0%} floor"
              + (", wider for: " + ", ".join(f"{n} ({benchgate.case_limit(s):.0%})" for s, n in reversed(wide))
                 if wide else ""))
    print("review it (git diff) and commit it; `perfkit bench check` gates against it")
    return 0


# -- arguments ----------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, parser_class=argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="ACTION", parser_class=parser_class)
    sub.required = True

    def common(p):
        p.add_argument("--device", choices=tuple(DEVICE_MARKERS), default="cpu",
                       help="which half of the suite: cpu (default) or cuda (the GPU half; needs a GPU)")
        p.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                       help="only the benchmarks matching this pytest -k expression")
        p.add_argument("--quick", action="store_true",
                       help="shorter timing per benchmark (" + " ".join(QUICK_ARGS) + "): for tests of the gate")
        p.add_argument("--storage", default=None, metavar="DIR",
                       help="history folder (default: .benchmarks/ at the checkout's root, where the dashboard reads)")
        p.add_argument("--no-save", action="store_true", help="do not save this run to the history")
        p.add_argument("--json", default=None, metavar="PATH", help="also write the run's JSON here")

    p = sub.add_parser("run", help="run the suite and save it to the history")
    common(p)
    p.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARGS",
                   help="after --: more pytest arguments (e.g. -- --benchmark-compare)")

    p = sub.add_parser("check", help="run the suite and gate it against the committed baseline")
    common(p)
    p.add_argument("--baseline", default=None, metavar="PATH",
                   help="baseline file (default: tests/benchmarks/baselines/cpu.json or cuda-<gpu model>.json)")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="gate this pytest-benchmark JSON instead of running the suite (no confirmation rerun)")
    p.add_argument("--confirm-runs", type=int, default=CONFIRM_RUNS, metavar="N",
                   help=f"rerun suspects up to N times; each must stay over its limit every time to fail "
                        f"(default {CONFIRM_RUNS}; 0: fail on the first run)")

    p = sub.add_parser("baseline", help="run the suite several times and write the baseline file")
    common(p)
    p.add_argument("--runs", type=int, default=BASELINE_RUNS,
                   help=f"runs to take the median and spread over (default {BASELINE_RUNS})")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="where to write it (default: tests/benchmarks/baselines/cpu.json or cuda-<gpu model>.json)")


COMMANDS = {"run": cmd_run, "check": cmd_check, "baseline": cmd_baseline}


def main(args) -> int:
    if getattr(args, "runs", 1) < 1:
        print("perfkit bench baseline: error: --runs must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "confirm_runs", 0) < 0:
        print("perfkit bench check: error: --confirm-runs must be 0 or more", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.bench_command](args)
    except BenchError as exc:
        print(f"perfkit bench {args.bench_command}: {exc}", file=sys.stderr)
        return 1
