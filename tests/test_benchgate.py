"""The benchmark gate's arithmetic, on synthetic pytest-benchmark JSON (no benchmark runs here)."""
import pytest

from perfkit import benchgate

CASES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def _name(layer):
    return f"tests/benchmarks/test_alexnet.py::test_alexnet[cpu-torch-{layer}-forward]"


def run_doc(times, calib=1e-3, cpu="AMD EPYC", inject=None, calib_samples=None):
    """A run as the suite writes it: per case its min time and its calibration sample."""
    benchmarks = []
    for i, (layer, t) in enumerate(times.items()):
        sample = calib_samples[i] if calib_samples else calib
        benchmarks.append({"fullname": _name(layer), "name": f"test_alexnet[cpu-torch-{layer}-forward]",
                           "stats": {"min": t, "median": t * 1.05},
                           "extra_info": {"device": "cpu", "device_name": cpu, "calib_gemm_s": sample}})
    doc = {"machine_info": {"perfkit": {"cpu_model": cpu, "cpu_count_logical": 2, "gpus": []}},
           "benchmarks": benchmarks}
    return benchgate.annotate(doc, inject=inject)


BASE_TIMES = {layer: 0.01 * (i + 1) for i, layer in enumerate(CASES)}


@pytest.fixture
def baseline():
    return benchgate.make_baseline([run_doc(BASE_TIMES), run_doc({k: v * 1.02 for k, v in BASE_TIMES.items()})])


def test_run_calibration_is_the_fastest_sample_of_the_run():
    doc = run_doc(BASE_TIMES, calib_samples=[1.2e-3, 1.0e-3, 1.5e-3, 1.0e-3, 1.1e-3, 1.0e-3, 1.3e-3])
    assert doc["perfkit"]["calibration_s"] == {"cpu": 1.0e-3}
    assert doc["benchmarks"][0]["perfkit"]["normalized"] == pytest.approx(0.01 / 1.0e-3)


def test_baseline_keeps_median_and_spread(baseline):
    cases = baseline["perfkit_baseline"]["cases"]
    assert set(cases) == {_name(layer) for layer in CASES}
    conv1 = cases[_name("conv1")]
    assert conv1["normalized"] == pytest.approx(10.1)
    assert conv1["spread"] == pytest.approx(0.02 / 1.01)


def test_same_times_pass(baseline):
    result = benchgate.compare(run_doc(BASE_TIMES), baseline)
    assert result.passed and not result.foreign


def test_one_layer_30_percent_slower_fails_and_is_named(baseline):
    times = dict(BASE_TIMES, conv2=BASE_TIMES["conv2"] * 1.3)
    result = benchgate.compare(run_doc(times), baseline)
    assert not result.passed
    assert [c.name for c in result.regressed] == [_name("conv2")]
    assert "FAILED: " + _name("conv2") + " regressed" in benchgate.format_report(result)


def test_a_slower_machine_is_absorbed_by_the_calibration(baseline):
    # Everything, the calibration GEMM included, 1.8x slower: nothing regressed.
    result = benchgate.compare(run_doc({k: v * 1.8 for k, v in BASE_TIMES.items()}, calib=1.8e-3), baseline)
    assert result.passed
    assert result.suite_factor == pytest.approx(1 / 1.01, rel=1e-3)


def test_uniform_shift_the_calibration_misses_is_absorbed_by_the_suite_factor(baseline):
    result = benchgate.compare(run_doc({k: v * 1.2 for k, v in BASE_TIMES.items()}), baseline)
    assert not result.regressed and result.passed  # 1.2 < the suite limit


def test_everything_much_slower_fails_as_a_suite(baseline):
    result = benchgate.compare(run_doc({k: v * 1.5 for k, v in BASE_TIMES.items()}), baseline)
    assert not result.regressed and result.suite_regressed and not result.passed
    assert "whole suite" in benchgate.format_report(result)


def test_noisy_case_gets_a_wider_limit():
    base = benchgate.make_baseline([run_doc(BASE_TIMES), run_doc(dict(BASE_TIMES, conv2=BASE_TIMES["conv2"] * 1.25))])
    result = benchgate.compare(run_doc(dict(BASE_TIMES, conv2=BASE_TIMES["conv2"] * 1.3)), base)
    conv2 = next(c for c in result.cases if c.name == _name("conv2"))
    assert conv2.limit > benchgate.FLOOR and conv2.verdict == "ok"


def test_confirmation_rerun_clears_a_transient(baseline):
    result = benchgate.compare(run_doc(dict(BASE_TIMES, conv2=BASE_TIMES["conv2"] * 1.5)), baseline)
    assert result.regressed
    benchgate.confirm(result, run_doc({"conv2": BASE_TIMES["conv2"]}), baseline)
    assert result.passed and "noise, not a regression" in benchgate.format_report(result)


def test_confirmation_rerun_keeps_a_real_regression(baseline):
    result = benchgate.compare(run_doc(dict(BASE_TIMES, conv2=BASE_TIMES["conv2"] * 1.4)), baseline)
    benchgate.confirm(result, run_doc({"conv2": BASE_TIMES["conv2"] * 1.35}), baseline)
    assert [c.name for c in result.regressed] == [_name("conv2")]
    # The suite factor (1 / 1.01: every other case is 1% faster than the baseline median) cancels out.
    assert result.regressed[0].attempts == [pytest.approx(1.4), pytest.approx(1.35)]


def test_other_machine_widens_the_floor(baseline):
    result = benchgate.compare(run_doc(dict(BASE_TIMES, conv2=BASE_TIMES["conv2"] * 1.2), cpu="Intel Xeon"), baseline)
    assert result.foreign and result.passed
    assert all(c.limit >= benchgate.FOREIGN_FLOOR for c in result.cases if c.limit is not None)
    assert "different machine" in benchgate.format_report(result)


def test_new_and_missing_benchmarks_are_reported_not_failed(baseline):
    times = {k: v for k, v in BASE_TIMES.items() if k != "fc7"}
    times["pool1"] = 0.003
    result = benchgate.compare(run_doc(times), baseline)
    verdicts = {c.short: c.verdict for c in result.cases}
    assert verdicts["test_alexnet[cpu-torch-pool1-forward]"] == "new"
    assert verdicts["test_alexnet[cpu-torch-fc7-forward]"] == "missing"
    assert result.passed


def test_baseline_refuses_injected_runs():
    with pytest.raises(ValueError, match="injected"):
        benchgate.make_baseline([run_doc(BASE_TIMES, inject={"conv2": 0.3})])


def test_baseline_file_names():
    assert benchgate.baseline_device_name(run_doc(BASE_TIMES)) == "cpu"
    doc = run_doc(BASE_TIMES)
    for bench in doc["benchmarks"]:
        bench["extra_info"].update(device="cuda", device_name="NVIDIA H100 80GB HBM3")
    assert benchgate.baseline_device_name(doc) == "cuda-nvidia-h100-80gb-hbm3"
