"""The speedup section's CPU side: every CPU baseline against stock eager (from the real CPU store), and GPU ratios
against stock eager and against the best CPU configuration, which the hover names."""
from __future__ import annotations

import pandas as pd
import pytest

from perfkit.dashboards import speedup
from perfkit.results.store import load_measurements


def figure_named(report, name):
    return next(f for f in report.figures if f.name == name)


def test_cpu_baselines_figure_is_each_configuration_over_stock_eager_at_the_same_threads(cpu_report, cpu_store):
    fig = figure_named(cpu_report, "speedup-cpu-baselines").fig
    df = load_measurements(cpu_store)
    ok = df[(df.status == "ok") & (df.device == "cpu")]
    names = {t.name for t in fig.data if t.type == "bar"}
    assert {"ONNX Runtime, 1 thread", "torch.compile, 1 thread", "torch eager channels_last, 1 thread"} <= names
    trace = next(t for t in fig.data if t.name == "ONNX Runtime, 1 thread" and t.xaxis == "x")  # forward panel
    layer = list(trace.x).index("network")

    def time(backend):
        row = ok[(ok.backend == backend) & (ok.layer == "network") & (ok.pass_name == "forward") & (ok.threads == 1)]
        return float(row.time_median_s.iloc[-1])

    assert trace.base == 1 and 1 + trace.y[layer] == pytest.approx(time("torch") / time("onnxruntime"))  # from 1
    html = cpu_report.to_html()
    assert "The best CPU configuration per layer and pass" in html and "best over stock" in html


def _row(**fields):
    base = dict(machine_id="m", variant="alexnet2012", layer="network", pass_name="train_step", batch=8,
                activation="relu", dtype="float32", options="{}", study="speedup2012", status="ok")
    return {**base, **fields}


def test_gpu_ratios_are_taken_against_stock_eager_and_against_the_best_cpu_configuration():
    ok = pd.DataFrame([
        _row(device="cpu", backend="torch", threads=1, time_median_s=4.0),
        _row(device="cpu", backend="torch", threads=2, time_median_s=2.0),
        _row(device="cpu", backend="compile", threads=2, time_median_s=1.0),
        _row(device="cpu", backend="onnxruntime", threads=2, time_median_s=0.5, pass_name="forward"),
        _row(device="cuda:0", backend="torch", threads=None, time_median_s=0.1),
    ])
    pairs = speedup._pairs(ok)
    by_baseline = dict(zip(pairs.baseline, pairs.speedup))
    assert by_baseline == {"against stock eager with 1 thread": pytest.approx(40),
                           "against stock eager with 2 threads": pytest.approx(20),
                           speedup.BEST_CPU: pytest.approx(10)}  # compile, not the forward-only ORT row
    best = pairs[pairs.baseline == speedup.BEST_CPU].iloc[0]
    assert (best.backend_cpu, best.threads_cpu) == ("compile", 2)
