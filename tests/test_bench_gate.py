"""`perfkit bench` end to end on a small subset of the suite, in subprocesses: a baseline, a clean check that passes,
and an injected ~30% slowdown of conv2 that fails the gate and names the benchmark. About a minute on 2 cores."""
import json
import os
import subprocess
import sys

import pytest

# Five forward cases: enough for the gate's suite factor (a median needs a few cases), short enough for the unit tests.
SUBSET = "forward and (conv2 or conv3 or conv4 or pool2 or fc8)"
CONV2 = "tests/benchmarks/test_alexnet.py::test_alexnet[cpu-torch-conv2-forward]"


def bench(*args, inject=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "PERFKIT_BENCH_INJECT_SLOWDOWN"}
    if inject:
        env["PERFKIT_BENCH_INJECT_SLOWDOWN"] = inject
    return subprocess.run([sys.executable, "-m", "perfkit", "bench", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    baseline, history = tmp / "baseline.json", tmp / "history"
    done = bench("baseline", "--quick", "--runs", "2", "-k", SUBSET, "--out", str(baseline), "--storage", str(history))
    assert done.returncode == 0, done.stdout + done.stderr
    return baseline, history


def test_baseline_holds_the_subset_and_the_history_is_saved(recorded):
    baseline, history = recorded
    doc = json.loads(baseline.read_text())
    cases = doc["perfkit_baseline"]["cases"]
    assert len(cases) == 5 and CONV2 in cases
    info = next(b for b in doc["benchmarks"] if b["fullname"] == CONV2)["extra_info"]
    assert info["layer"] == "conv2" and info["pass"] == "forward" and info["backend"] == "torch"
    assert info["error_rel"] <= info["error_tolerance"] and info["flops"] > 0 and info["bytes_min"] > 0
    saved = sorted(history.glob("*/0*_baseline.json"))
    assert len(saved) == 2, list(history.rglob("*"))
    assert "perfkit" in json.loads(saved[0].read_text())["machine_info"]


def test_clean_check_passes(recorded):
    baseline, history = recorded
    done = bench("check", "--quick", "-k", SUBSET, "--baseline", str(baseline), "--storage", str(history))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout


def test_injected_slowdown_fails_the_gate_and_names_the_benchmark(recorded):
    baseline, _ = recorded
    done = bench("check", "--quick", "-k", SUBSET, "--baseline", str(baseline), "--no-save", inject="conv2")
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and CONV2 in failed[0], done.stdout
    assert "injected slowdown" in done.stdout
