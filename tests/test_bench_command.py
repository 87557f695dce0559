"""`perfkit bench` end to end on a small subset of the suite, in subprocesses, in a throwaway git repository made from
this checkout: the A/B check of unchanged code passes (and ignores a baseline recorded on another machine model), a
~30% slowdown injected into conv2 on side A fails it naming conv2, the reference commit is recorded and read back, bad
arguments exit 2, and the per-machine baseline (history) is written and gates only its own machine model. About two
minutes on 2 cores."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perfkit.app import benchgate
ROOT = Path(__file__).resolve().parents[1]
# Three forward cases, the planted regression's among them; short enough for the unit tests.
SUBSET = "forward and (conv2 or conv3 or pool2)"
CONV2 = "tests/benchmarks/test_alexnet.py::test_alexnet[cpu-torch-conv2-forward]"
QUICK_AB = ("--quick", "--pairs", "2", "--confirm-runs", "1", "-k", SUBSET)
# What a baseline recorded on another machine model says about its machine (see tests/test_benchgate.py).
OTHER_MACHINE = {"cpu_model": "Intel Xeon Processor (recorded elsewhere)", "cpu_family_model": "6/207",
                 "cpu_isa": ["avx", "avx2", "fma", "avx512f", "amx_tile", "amx_bf16"], "cpu_count_logical": 2,
                 "gpus": []}


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def bench(repo, *args, inject=None, timeout=900):
    env = {k: v for k, v in os.environ.items() if k != "PERFKIT_BENCH_INJECT_SLOWDOWN"}
    if inject:
        env["PERFKIT_BENCH_INJECT_SLOWDOWN"] = inject
    return subprocess.run([sys.executable, "-m", "perfkit", "bench", *args], cwd=repo, capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def foreign_baseline() -> dict:
    """A baseline file as `perfkit bench baseline` writes it, recorded on another machine model."""
    run = {"machine_info": {"perfkit": OTHER_MACHINE}, "benchmarks": [
        {"fullname": CONV2, "name": CONV2.split("::")[1], "stats": {"min": 0.02},
         "extra_info": {"device": "cpu", "calib_gemm_s": 4e-4}}]}
    return benchgate.make_baseline([benchgate.annotate(run)])


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """This checkout's code in a new git repository of one commit, with a foreign per-machine baseline committed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the A/B check runs the reference from a git worktree")
    repo = tmp_path_factory.mktemp("bench") / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", ".benchmarks", "*.egg-info")
    for folder in ("perfkit", "kernels", "studies", "dashboards", "tests/benchmarks"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", repo)
    (repo / "tests/benchmarks/baselines/cpu.json").write_text(json.dumps(foreign_baseline()))
    git(repo.parent, "init", "-q", str(repo))
    git(repo, "add", "-A")
    commit = ("-c", "user.name=perfkit tests", "-c", "user.email=tests@perfkit.invalid", "commit", "-q")
    git(repo, *commit, "-m", "base")
    # A second commit that side B must not see: its code says which commit it is.
    (repo / "perfkit" / "_tree_marker.py").write_text("MARK = 'second'\n")
    git(repo, "add", "-A")
    git(repo, *commit, "-m", "second")
    return repo


def test_reference_is_recorded_and_read_back(repo):
    done = bench(repo, "reference", "--set", "HEAD")
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = (repo / "tests/benchmarks/reference-commit.txt").read_text()
    head = git(repo, "rev-parse", "HEAD")
    assert recorded.splitlines()[-1] == head and "second" in recorded
    shown = bench(repo, "reference")
    assert shown.returncode == 0 and shown.stdout.startswith(head) and "second" in shown.stdout


def test_ab_check_of_unchanged_code_passes_without_the_foreign_baseline(repo):
    bench(repo, "reference", "--set", "HEAD")
    history = repo.parent / "history"
    done = bench(repo, "check", *QUICK_AB, "--storage", str(history))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "this is an A/A run" in out and "PASSED: 3 benchmark(s)" in done.stdout
    assert "recorded on another machine model" in done.stdout and "not compared" in done.stdout
    summary = json.loads((history / "ab-check.json").read_text())
    assert summary["passed"] and summary["aa"] and summary["pairs"] == 2
    assert {c["name"] for c in summary["cases"] if c["verdict"] == "ok"} >= {CONV2}
    assert len(list(history.glob("*/0001_*.json"))) == 1  # side A's first round, for the dashboard's history
    # the reference's worktree is gone again
    assert git(repo, "worktree", "list").count("\n") == 0


def test_ab_check_catches_conv2_slowed_on_side_a_only_and_side_b_runs_the_reference(repo):
    summary = repo.parent / "injected.json"
    done = bench(repo, "check", *QUICK_AB, "--against", "HEAD~1", "--no-save", "--json", str(summary), inject="conv2")
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and CONV2 in failed[0], done.stdout
    assert "side A ran with an injected slowdown" in done.stdout
    assert "reaches side A only" in done.stderr and "A/A" not in done.stderr
    ran = json.loads(summary.read_text())["ran"]
    # Each side's own perfkit said which checkout it was imported from.
    assert ran["A"].removesuffix("-dirty") == git(repo, "rev-parse", "HEAD") and ran["B"] == git(repo, "rev-parse", "HEAD~1")


@pytest.mark.parametrize("args, code, message", [
    (("check", "--pairs", "1"), 2, "--pairs must be at least 2"),
    (("check", "--against", "no-such-revision"), 2, "'no-such-revision' is not a commit"),
    (("check", "--against", "HEAD", "--baseline", "x.json"), 2, "do not mix"),
    (("reference", "--set", "no-such-revision"), 2, "is not a commit"),
])
def test_bad_arguments_name_the_problem(repo, args, code, message):
    done = bench(repo, *args)
    assert done.returncode == code and message in done.stderr, done.stdout + done.stderr


def test_history_baseline_gates_its_own_machine_model_only(repo):
    baseline, history = repo.parent / "baseline.json", repo.parent / "history-baseline"
    done = bench(repo, "baseline", "--quick", "--runs", "2", "-k", SUBSET, "--out", str(baseline),
                 "--storage", str(history))
    assert done.returncode == 0, done.stdout + done.stderr
    cases = json.loads(baseline.read_text())["perfkit_baseline"]["cases"]
    assert len(cases) == 3 and CONV2 in cases
    assert len(sorted(history.glob("*/0*_baseline.json"))) == 2
    own = bench(repo, "check", "--baseline", str(baseline), "--from-json", str(sorted(history.glob("*/*.json"))[-1]))
    assert own.returncode == 0 and "PASSED" in own.stdout, own.stdout + own.stderr
    foreign = bench(repo, "check", "--baseline", str(repo / "tests/benchmarks/baselines/cpu.json"),
                    "--from-json", str(sorted(history.glob("*/*.json"))[-1]))
    assert foreign.returncode == 2 and "NOT GATED" in foreign.stdout, foreign.stdout + foreign.stderr
    assert "another machine model" in foreign.stderr


def test_a_a_means_the_same_tracked_code_whatever_the_reference_record_says(tmp_path):
    from perfkit.app.bench import REFERENCE_FILE, same_code

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "tests/benchmarks").mkdir(parents=True)
    (tmp_path / "kernel.py").write_text("x = 1\n")
    (tmp_path / "tests/benchmarks" / REFERENCE_FILE).write_text("0" * 40 + "\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@perfkit.invalid", "commit", "-q", "-m", "reference")
    head = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "tests/benchmarks" / REFERENCE_FILE).write_text(head + "\n")
    assert same_code(tmp_path, head)
    (tmp_path / "kernel.py").write_text("x = 2\n")
    assert not same_code(tmp_path, head)
