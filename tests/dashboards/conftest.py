"""Stores and benchmark files the dashboard tests build reports from.

- `cpu_store`: a REAL store measured on this machine: the baseline study (what `perfkit run --quick --device cpu`
  runs) through perfkit's runner, with a short timing policy so the suite stays fast. Point
  PERFKIT_DASHBOARD_CPU_STORE at a store made by `perfkit run --quick --device cpu` to use that one instead.
- `gpu_store`: a FABRICATED GPU machine's store (tests/dashboards/dash_fixtures.py), for layout only.
- `merged_store`: both merged with `perfkit merge` (two machines in one file).
- `benchmarks_dir`: two REAL pytest-benchmark runs of a tiny benchmark, saved as pytest-benchmark saves them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="the dashboards need plotly: pip install 'perfkit[dashboards]'")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # dash_fixtures, dash_cdp

from dash_fixtures import fabricated_gpu_store  # noqa: E402

ARTIFACTS_ENV = "PERFKIT_TEST_ARTIFACTS"
CPU_STORE_ENV = "PERFKIT_DASHBOARD_CPU_STORE"


@pytest.fixture(scope="session")
def cpu_store(tmp_path_factory) -> Path:
    given = os.environ.get(CPU_STORE_ENV)
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"{CPU_STORE_ENV}={given}: no such file")
        return path
    from perfkit.runner import RunnerConfig
    from perfkit.studies import get_study
    from perfkit.study import StudyOptions, run_study
    from perfkit.measure.timer import TimingPolicy

    path = tmp_path_factory.mktemp("cpu") / "cpu.db"
    run_study(get_study("baseline"), StudyOptions(devices=("cpu",), quick=True, batch=1), path, show_progress=False,
              config=RunnerConfig(timing=TimingPolicy(warmup=0, min_reps=2, min_time_s=0.0), check_batch=1))
    return path


@pytest.fixture(scope="session")
def gpu_store(tmp_path_factory) -> Path:
    return fabricated_gpu_store(tmp_path_factory.mktemp("fixture") / "fabricated-gpu.db")


@pytest.fixture(scope="session")
def merged_store(tmp_path_factory, cpu_store, gpu_store) -> Path:
    from perfkit.results.store import merge

    out = tmp_path_factory.mktemp("merged") / "merged.db"
    merge(out, [cpu_store, gpu_store])
    return out


TINY_BENCHMARK = textwrap.dedent('''
    import pytest

    @pytest.mark.parametrize("n", [2000, 40000])
    def test_sum(benchmark, n):
        benchmark.extra_info.update(backend="torch", n=n)
        benchmark(lambda: sum(range(n)))

    def test_sorted(benchmark):
        benchmark(lambda: sorted(range(5000, 0, -1)))
''')


@pytest.fixture(scope="session")
def benchmarks_dir(tmp_path_factory) -> Path:
    pytest.importorskip("pytest_benchmark")
    work = tmp_path_factory.mktemp("bench")
    (work / "test_tiny_benchmark.py").write_text(TINY_BENCHMARK)
    (work / "pytest.ini").write_text("[pytest]\n")
    storage = work / ".benchmarks"
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(work / "pytest.ini"),
             "--rootdir", str(work), str(work / "test_tiny_benchmark.py"), "--benchmark-autosave",
             f"--benchmark-storage=file://{storage}", "--benchmark-min-time=0.0005", "--benchmark-max-time=0.02",
             "--benchmark-warmup=off"], cwd=work, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    assert len(list(storage.rglob("*.json"))) == 2
    return storage


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where browser screenshots go: $PERFKIT_TEST_ARTIFACTS, default tests/artifacts/ (git-ignored)."""
    path = Path(os.environ.get(ARTIFACTS_ENV) or HERE.parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    from perfkit.dashboards.export import find_browser

    path = find_browser()
    if not path:
        pytest.skip("no Chromium/Chrome found (Debian: apt-get install chromium; or set PERFKIT_BROWSER): "
                    "browser tests and PNG export need one")
    return path


@pytest.fixture(scope="session")
def cpu_report(cpu_store):
    from perfkit.dashboards import build

    return build([cpu_store])


@pytest.fixture(scope="session")
def full_report(cpu_store, gpu_store, benchmarks_dir):
    """Every section: the real CPU store, the fabricated GPU store and real benchmark history."""
    from perfkit.dashboards import build

    return build([cpu_store, gpu_store], benchmarks_dir)
