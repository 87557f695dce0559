"""`perfkit bench`: run the pytest-benchmark regression suite (tests/benchmarks/), gate it, keep its history.

    perfkit bench run       [--device cpu|cuda] [-k EXPR] [--quick] [--json PATH] [--no-save] [-- PYTEST_ARGS...]
    perfkit bench check     [--device cpu|cuda] [--against REV] [--pairs N] [--confirm-runs N] [-k EXPR] [--quick] ...
    perfkit bench check     --baseline PATH [--from-json PATH] ...     (history gate: same machine model only)
    perfkit bench reference [--set REV]
    perfkit bench baseline  [--device cpu|cuda] [--runs N] [--out PATH] [-k EXPR] ...

`check` is the A/B gate: it measures the working tree (side A) and a reference commit (side B, checked out into a
temporary git worktree and run uninstalled from it) on this machine in one job, in interleaved rounds (one pytest run
of one side over the suite each; the pairs go A B, then B A, and so on), then gates each case's A/B ratio through
`perfkit.app.benchgate.ab_compare`. Suspects are rerun on both sides, interleaved again, up to `--confirm-runs` times, and
a case fails only if it stays over its limit every time. The reference is the commit recorded in
tests/benchmarks/reference-commit.txt unless `--against REV` names another; `perfkit bench reference --set REV`
records a new one (review, then commit it). With no change since the reference, `check` is an A/A run.

The test-only slowdown injection (PERFKIT_BENCH_INJECT_SLOWDOWN) reaches side A only. Side A's first round is saved to
the history (`.benchmarks/<machine>/NNNN_<name>.json` at the checkout's root, git-ignored), where the dashboard reads
it, together with the A/B verdict as `.benchmarks/ab-check.json`. `baseline` runs the suite several times and writes a
per-machine baseline (tests/benchmarks/baselines/cpu.json, or cuda-<gpu model>.json) for the history; the A/B gate
never reads it, and `check --baseline` gates against one only on the machine model that recorded it.

The suite is not part of the wheel: these commands need a source checkout (a git checkout for `check`).
Exit status: 0 passed, 1 regression, a failing benchmark or a problem that stopped the check, 2 bad arguments (a
baseline from another machine model included: it cannot gate here).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import perfkit
from perfkit.app import benchgate
from perfkit.support.progress import Progress

INJECT_ENV = "PERFKIT_BENCH_INJECT_SLOWDOWN"  # read by tests/benchmarks/conftest.py; test-only, side A only
CHECKED_ENV = "PERFKIT_BENCH_CHECKED"  # read by the suite: this side's cases passed the float64 check in this check
DEVICE_MARKERS = {"cpu": "not gpu", "cuda": "gpu"}
QUICK_ARGS = ("--benchmark-max-time=0.2", "--benchmark-min-rounds=3")
#: The A/B check's timing per case and round: pytest-benchmark's defaults (1 s, 5 rounds) would make each of the
#: check's rounds about as long as a whole run of the suite; several shorter rounds of both sides interleaved say more.
CHECK_ARGS = ("--benchmark-max-time=0.15", "--benchmark-min-rounds=3")
#: Defaults backed by the spread measured on a shared 2-core machine (see perfkit.app.benchgate).
BASELINE_RUNS = 5
CONFIRM_RUNS = 2
PAIRS = 4  # even, so that A B, B A pairs cancel a steady drift; four, so that one bad pair moves no median
REFERENCE_FILE = "reference-commit.txt"  # in tests/benchmarks/: the commit `perfkit bench check` compares against
AB_REPORT = "ab-check.json"  # in the history folder: the last A/B verdict


class BenchError(Exception):
    """A problem that stops the command (printed as one line, exit 1)."""


class UsageError(BenchError):
    """Arguments that cannot work here (printed as one line with a hint, exit 2)."""


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


# -- the reference commit -------------------------------------------------------------------------------------------------
#: Inherited from a git hook, these would point every git call (ours and the suite's git_commit) at one repository.
GIT_REPOSITORY_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")


def clean_environment(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in GIT_REPOSITORY_VARIABLES}


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=120,
                              check=False, env=clean_environment(os.environ))
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"git {' '.join(args)} failed: {exc}") from None


def recorded_reference(suite: Path) -> str:
    """The commit id in tests/benchmarks/reference-commit.txt (its first line that is not a comment)."""
    path = suite / REFERENCE_FILE
    if not path.is_file():
        raise BenchError(f"no reference commit recorded ({path} is missing): record one with `perfkit bench "
                         "reference --set REV`, or name one with `perfkit bench check --against REV`")
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            if not re.fullmatch(r"[0-9a-f]{7,40}", line):
                raise BenchError(f"{path}: {line!r} is not a commit id")
            return line
    raise BenchError(f"{path} holds no commit id")


def resolve_commit(root: Path, rev: str, *, given: bool = False) -> str:
    """The full id of commit `rev` in the repository at `root`; `given`: it came from the command line (a bad one is a
    usage error, exit 2)."""
    if _git(root, "rev-parse", "--git-dir").returncode != 0:
        raise BenchError(f"{root} is not a git checkout: the A/B check runs the reference commit from a git worktree")
    done = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if done.returncode != 0 or not done.stdout.strip():
        shallow = _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
        error = UsageError if given else BenchError
        raise error(f"{rev!r} is not a commit of {root}"
                    + ("; this clone is shallow: `git fetch --unshallow` brings the history" if shallow else ""))
    return done.stdout.strip()


def write_reference(suite: Path, sha: str, subject: str) -> Path:
    path = suite / REFERENCE_FILE
    path.write_text(
        "# The commit `perfkit bench check` measures the working tree against, side by side on the same machine.\n"
        "# Changed on purpose with `perfkit bench reference --set REV` (after a reviewed change of speed), then\n"
        "# committed. `perfkit bench check --against REV` takes any other revision for one check.\n"
        f"# {subject}\n{sha}\n")
    return path


def describe_commit(root: Path, sha: str, width: int = 72) -> str:
    """"<short id> <subject>", the subject cut to fit `width`."""
    text = _git(root, "log", "-1", "--format=%h %s", sha).stdout.strip() or sha[:12]
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def working_tree_state(root: Path) -> tuple[str | None, bool]:
    """(HEAD's id, whether tracked files differ from it)."""
    head = _git(root, "rev-parse", "HEAD").stdout.strip() or None
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no").stdout.strip())
    return head, dirty


def same_code(root: Path, sha: str, path: str = ".") -> bool:
    """Whether the working tree's tracked files under `path` are the reference's, the file recording the reference
    aside (untracked files are not compared): then the check is an A/A run."""
    record = f"tests/benchmarks/{REFERENCE_FILE}"
    return _git(root, "diff", "--quiet", sha, "--", path, f":(exclude){record}").returncode == 0


@contextmanager
def reference_worktree(root: Path, sha: str):
    """The reference commit checked out into a temporary git worktree (removed again on the way out)."""
    _git(root, "worktree", "prune")  # a worktree a killed check left behind
    tmp = Path(tempfile.mkdtemp(prefix="perfkit-bench-reference-"))
    path = tmp / "reference"
    try:
        done = _git(root, "worktree", "add", "--detach", "--quiet", str(path), sha)
        if done.returncode != 0:
            raise BenchError(f"could not check out the reference {sha[:12]} into a worktree: {done.stderr.strip()}")
        yield path
    finally:
        _git(root, "worktree", "remove", "--force", str(path))
        shutil.rmtree(tmp, ignore_errors=True)
        _git(root, "worktree", "prune")


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


# -- the A/B check ------------------------------------------------------------------------------------------------------
@dataclass
class Side:
    """One side of the A/B check: a checkout whose suite is run, uninstalled, from its own root."""

    name: str  # "A" (the working tree) or "B" (the reference)
    root: Path
    description: str
    commit: str | None  # what its JSON's machine_info.perfkit.git_commit must say (None: not checked)
    inject: bool  # whether PERFKIT_BENCH_INJECT_SLOWDOWN reaches it
    checked: bool = False  # a round of this side passed, float64 checks included: later rounds skip them
    failures: list[str] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)
    ran: str | None = None  # the commit its suite reported (machine_info.perfkit.git_commit)

    @property
    def suite(self) -> Path:
        return self.root / "tests" / "benchmarks"

    def environment(self) -> dict:
        env = clean_environment(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root)] + [p for p in [env.get("PYTHONPATH")] if p])
        if not self.inject:
            env.pop(INJECT_ENV, None)
        env.pop(CHECKED_ENV, None)
        if self.checked:
            env[CHECKED_ENV] = "1"
        return env


def run_round(args, side: Side, *, targets, save: bool, log_dir: Path, label: str) -> dict | None:
    """One pytest run of `side`'s suite, its output to a log (shown when it fails); its JSON, or None."""
    storage = history_folder(args)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
    json_path, log_path = log_dir / f"{slug}.json", log_dir / f"{slug}.log"
    cmd = pytest_command(side.suite, device=args.device, json_path=json_path, save="auto" if save else None,
                         storage=storage, keyword=None if targets else args.keyword, targets=targets,
                         extra=QUICK_ARGS if args.quick else CHECK_ARGS)
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        code = subprocess.call(cmd, cwd=side.root, env=side.environment(), stdout=log, stderr=subprocess.STDOUT)
    doc = json.loads(json_path.read_text()) if json_path.is_file() else None
    if code == 0 and doc and not targets:
        side.checked = True
    if code != 0:
        tail = log_path.read_text().splitlines()[-25:]
        side.failures.append(f"{label}: pytest exit status {code}")
        print(f"perfkit bench check: {label} failed (pytest exit status {code}); the end of its output:\n  "
              + "\n  ".join(tail), file=sys.stderr, flush=True)
    if doc is not None and side.commit:
        ran = ((doc.get("machine_info") or {}).get("perfkit") or {}).get("git_commit")
        side.ran = ran
        if ran is None:
            side.notes.add(f"side {side.name}'s suite does not say which perfkit commit it imported")
        elif ran.removesuffix("-dirty") != side.commit.removesuffix("-dirty"):
            raise BenchError(f"side {side.name} ({side.description}) was to run {side.commit[:12]} but its suite "
                             f"reports perfkit from {ran[:12]}: another checkout's code was imported")
    return doc if doc and doc.get("benchmarks") else None


def interleaved_rounds(args, a: Side, b: Side, *, pairs: int, targets=None, save_first=False, log_dir: Path,
                       title: str) -> tuple[list[dict], list[dict]]:
    """`pairs` rounds of each side, A B then B A and so on; the pairs in which both sides produced results."""
    progress = Progress(2 * pairs, title=f"perfkit bench check: {title}")
    a_rounds, b_rounds = [], []
    for i in range(pairs):
        got = {}
        for side in ((a, b) if i % 2 == 0 else (b, a)):
            label = f"{title} pair {i + 1} of {pairs} side {side.name}"
            progress.start(f"pair {i + 1} of {pairs}: side {side.name} ({side.description})")
            began = time.monotonic()
            got[side.name] = run_round(args, side, targets=targets, save=save_first and i == 0 and side is a,
                                       log_dir=log_dir, label=label)
            progress.done("ok" if got[side.name] else "no result",
                          f"{len(got[side.name]['benchmarks']) if got[side.name] else 0} benchmarks in "
                          f"{time.monotonic() - began:.0f} s")
        if got["A"] and got["B"]:
            a_rounds.append(got["A"])
            b_rounds.append(got["B"])
    progress.close()
    return a_rounds, b_rounds


def _side_a(root: Path) -> Side:
    head, dirty = working_tree_state(root)
    what = "working tree" + (f" at {head[:12]}" if head else "") + (" with uncommitted changes" if dirty else "")
    return Side("A", root, what, (head + ("-dirty" if dirty else "")) if head else None,
                inject=bool(os.environ.get(INJECT_ENV)))


def history_folder(args) -> Path:
    """Where saved runs and the A/B verdict go: --storage (made absolute: the rounds run in other folders), else
    .benchmarks/ at the checkout's root."""
    return Path(args.storage).resolve() if args.storage else default_storage(find_suite())


def _stop_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # through the finally blocks: the reference's worktree is removed


def ab_check(args) -> int:
    suite = find_suite()
    root = checkout_root(suite)
    if args.against:
        sha, how = resolve_commit(root, args.against, given=True), f"--against {args.against}"
    else:
        sha, how = resolve_commit(root, recorded_reference(suite)), f"recorded in tests/benchmarks/{REFERENCE_FILE}"
    a = _side_a(root)
    inject = os.environ.get(INJECT_ENV)
    if inject:
        print(f"perfkit bench check: {INJECT_ENV}={inject} reaches side A only; its rounds are not saved to the "
              "history", file=sys.stderr)
    save = not args.no_save and not inject
    aa = same_code(root, sha)
    began = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with reference_worktree(root, sha) as ref_root, tempfile.TemporaryDirectory(prefix="perfkit-bench-") as tmp:
            b = Side("B", ref_root, f"reference {describe_commit(root, sha)}, {how}", sha, inject=False)
            if not (b.suite / "conftest.py").is_file():
                raise BenchError(f"the reference {sha[:12]} has no benchmark suite (tests/benchmarks/conftest.py)")
            print(f"perfkit bench check: A = {a.description}\nperfkit bench check: B = {b.description}"
                  + ("\nperfkit bench check: the code is the reference's: this is an A/A run" if aa else ""),
                  file=sys.stderr, flush=True)
            result = _gate(args, a, b, Path(tmp), save)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if inject:
        result.notes.append(f"side A ran with an injected slowdown: {INJECT_ENV}={inject}")
    if not same_code(root, sha, "tests/benchmarks"):
        result.notes.append("the suite itself (tests/benchmarks/) differs between the sides: each side is timed by "
                            "its own suite, so a change there is measured with the change")
    failures = a.failures + b.failures
    result.notes.extend(sorted(a.notes | b.notes))
    result.notes.extend(f"suite failure: {f}" for f in failures)
    result.notes.append(f"the check took {time.monotonic() - began:.0f} s")
    passed = result.passed and not a.failures
    print(f"\nperfkit bench check: the working tree (A) against {sha[:12]} (B), side by side on this machine:")
    print(benchgate.format_ab_report(result, side_a=a.description, side_b=b.description))
    if a.failures:
        print("FAILED: the working tree's suite itself failed (see above): " + "; ".join(a.failures))
    summary = benchgate.ab_summary(result) | {"passed": passed, "side_a": a.description, "side_b": b.description,
                                               "reference": sha, "ran": {"A": a.ran, "B": b.ran}, "aa": aa,
                                               "failures": failures, "inject": inject}
    if save:
        storage = history_folder(args)
        storage.mkdir(parents=True, exist_ok=True)
        (storage / AB_REPORT).write_text(json.dumps(summary, indent=1) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(_history_note(suite, result.first_a_round))
    return 0 if passed else 1


def _gate(args, a: Side, b: Side, log_dir: Path, save: bool) -> benchgate.ABResult:
    """The interleaved rounds, the gate, and the confirmation reruns of its suspects."""
    a_rounds, b_rounds = interleaved_rounds(args, a, b, pairs=args.pairs, save_first=save, log_dir=log_dir,
                                            title="check")
    if len(a_rounds) < 2:
        raise BenchError(f"only {len(a_rounds)} of {args.pairs} pairs of rounds produced results on both sides, and "
                         "a ratio's noise needs two: " + "; ".join(a.failures + b.failures))
    result = benchgate.ab_compare(a_rounds, b_rounds)
    result.first_a_round = a_rounds[0]
    if len(a_rounds) < args.pairs:
        result.notes.append(f"{args.pairs - len(a_rounds)} pair(s) of rounds gave no result on one side and were "
                            "left out")
    for attempt in range(args.confirm_runs):
        suspects = [case.name for case in result.regressed]
        if not suspects:
            break
        print(f"perfkit bench check: {len(suspects)} suspect(s) over their limit; confirmation rerun "
              f"{attempt + 1} of at most {args.confirm_runs}", file=sys.stderr, flush=True)
        again_a, again_b = interleaved_rounds(args, a, b, pairs=args.pairs, targets=suspects, log_dir=log_dir,
                                              title=f"rerun {attempt + 1}")
        if not again_a:
            result.notes.append("a confirmation rerun produced no results; its suspects are kept as regressed")
            break
        benchgate.ab_confirm(result, again_a, again_b)
    return result


def _history_note(suite: Path, run: dict) -> str:
    """One line on the committed per-machine baseline: compared when it is this machine model's, else said why not.
    Information only: the A/B verdict above decides, and an unreadable baseline only makes the line say so."""
    path = default_baseline(suite, benchgate.baseline_device_name(run))
    where = path.relative_to(checkout_root(suite))
    if not path.is_file():
        return f"history: no per-machine baseline at {where}; not compared"
    try:
        old = benchgate.compare(run, benchgate.load(path))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        return f"history: {where} could not be compared ({type(exc).__name__}: {exc})"
    if not old.comparable:
        return (f"history: {where} was recorded on another machine model ({'; '.join(old.foreign)}); not compared "
                "(the A/B verdict does not depend on it)")
    worst = max((c for c in old.cases if c.ratio is not None), key=lambda c: c.ratio, default=None)
    return (f"history (information only): against {where}, recorded on this machine model, the suite factor is "
            f"{old.suite_factor:.3f}" + (f" and the worst case {worst.short} at {worst.ratio:.2f}x" if worst else ""))


# -- commands -----------------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    suite = find_suite()
    code, doc = run_suite(args, suite, save=None if args.no_save else "auto", extra=args.pytest_args, label="run")
    if doc is None:
        print(f"perfkit bench run: no benchmark ran (pytest exit status {code})", file=sys.stderr)
        return 1
    return 0 if code == 0 else 1


def cmd_check(args) -> int:
    if args.baseline or args.from_json:
        return history_check(args)
    return ab_check(args)


def history_check(args) -> int:
    """The run (or --from-json) against a per-machine baseline: gated only on the machine model that recorded it."""
    if args.against:
        raise UsageError("--against (the A/B check) and --baseline/--from-json (the history gate) do not mix")
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
    if not result.comparable:
        print(benchgate.format_report(result))
        raise UsageError(f"{baseline_path} was recorded on another machine model, so it cannot gate this one; "
                         "run `perfkit bench check` without --baseline for the A/B check")
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


def cmd_reference(args) -> int:
    suite = find_suite()
    root = checkout_root(suite)
    if args.set:
        sha = resolve_commit(root, args.set, given=True)
        path = write_reference(suite, sha, describe_commit(root, sha))
        print(f"wrote {path.relative_to(root)}: {describe_commit(root, sha)}\n"
              "review it (git diff) and commit it; `perfkit bench check` measures against it")
        return 0
    sha = recorded_reference(suite)
    print(f"{sha}  {describe_commit(root, resolve_commit(root, sha))}")
    return 0


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
        p.add_argument("--json", default=None, metavar="PATH",
                       help="also write the run's JSON here (check: the A/B verdict with every round's times)")

    p = sub.add_parser("run", help="run the suite and save it to the history")
    common(p)
    p.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARGS",
                   help="after --: more pytest arguments (e.g. -- --benchmark-compare)")

    p = sub.add_parser("check", help="gate the working tree against the reference commit, side by side (A/B)")
    common(p)
    p.add_argument("--against", default=None, metavar="REV",
                   help=f"the reference revision (default: the commit in tests/benchmarks/{REFERENCE_FILE})")
    p.add_argument("--pairs", type=int, default=PAIRS, metavar="N",
                   help=f"interleaved pairs of rounds, A B then B A... (default {PAIRS}; at least 2, so that each "
                        "side's own rounds give its A/A noise)")
    p.add_argument("--confirm-runs", type=int, default=CONFIRM_RUNS, metavar="N",
                   help=f"rerun suspects up to N times; each must stay over its limit every time to fail "
                        f"(default {CONFIRM_RUNS}; 0: fail on the first attempt)")
    p.add_argument("--baseline", default=None, metavar="PATH",
                   help="instead of the A/B check: gate one run against this per-machine baseline (history), which "
                        "must come from this machine model")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="with --baseline: gate this pytest-benchmark JSON instead of running the suite")

    p = sub.add_parser("reference", help="print the reference commit the A/B check measures against, or --set it")
    p.add_argument("--set", default=None, metavar="REV",
                   help="record REV (e.g. HEAD) in tests/benchmarks/" + REFERENCE_FILE + ", to be reviewed and committed")

    p = sub.add_parser("baseline", help="run the suite several times and write the baseline file")
    common(p)
    p.add_argument("--runs", type=int, default=BASELINE_RUNS,
                   help=f"runs to take the median and spread over (default {BASELINE_RUNS})")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="where to write it (default: tests/benchmarks/baselines/cpu.json or cuda-<gpu model>.json)")


COMMANDS = {"run": cmd_run, "check": cmd_check, "baseline": cmd_baseline, "reference": cmd_reference}


def main(args) -> int:
    if getattr(args, "runs", 1) < 1:
        print("perfkit bench baseline: error: --runs must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "confirm_runs", 0) < 0:
        print("perfkit bench check: error: --confirm-runs must be 0 or more", file=sys.stderr)
        return 2
    if getattr(args, "pairs", 2) < 2:
        print("perfkit bench check: error: --pairs must be at least 2 (each side's own rounds measure its noise)",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.bench_command](args)
    except UsageError as exc:
        print(f"perfkit bench {args.bench_command}: error: {exc}\n(see `perfkit bench {args.bench_command} --help`)",
              file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"perfkit bench {args.bench_command}: {exc}", file=sys.stderr)
        return 1
