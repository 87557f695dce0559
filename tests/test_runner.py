"""The runner: check before timing, record skips and failures without stopping, rates from the cost model."""
import pytest
import torch

from perfkit.backends import BACKENDS, Backend
from perfkit.cases import Case, grid
from perfkit.model import AlexNetModule, TorchOps
from perfkit.runner import RunnerConfig
from perfkit.specs import build_network
from perfkit.results.store import load_measurements
from perfkit.measure.timer import TimingPolicy

FAST = RunnerConfig(timing=TimingPolicy(warmup=1, min_reps=2, min_time_s=0.0), check_batch=2)


@pytest.fixture
def make_runner(open_runner):
    """make_runner(config=FAST, args=None): a Runner on the test's store (tests/conftest.py)."""
    return lambda config=FAST, args=None: open_runner(config, args)


def test_ok_row_has_timing_and_rates_from_the_cost_model(make_runner):
    [row] = make_runner().run([Case(layer="conv2", batch=3, pass_name="forward")])
    assert row.status == "ok", row.note
    assert row.repetitions >= 2 and row.warmup_repetitions == 1
    assert row.time_p10_s <= row.time_median_s <= row.time_p90_s
    assert row.images_per_s == pytest.approx(3 / row.time_median_s)
    conv2 = build_network("alexnet2012").layer("conv2")
    assert row.flops == conv2.cost("forward", 3).flops
    assert row.achieved_flops_per_s == pytest.approx(row.flops / row.time_median_s)
    assert row.error_rel < 1e-5 and row.error_tolerance == 1e-4 and row.error_batch == 2
    assert row.cpu_peak_rss_bytes > 0
    assert row.device_name and row.threads == torch.get_num_threads()


def test_incorrect_backend_is_marked_and_never_timed(make_runner, broken_backend):
    rows = make_runner().run(grid(layer="relu1", backend=["torch", broken_backend], batch=2))
    ok, bad = rows
    assert ok.status == "ok"
    assert bad.status == "incorrect"
    assert bad.error_rel == pytest.approx(0.01, rel=1e-3)
    assert "exceeds the float32 tolerance" in bad.note
    assert bad.time_median_s is None and bad.images_per_s is None and bad.repetitions is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_gpu_case_without_gpu_is_skipped_with_the_reason(make_runner):
    [row] = make_runner().run([Case(layer="conv1", device="cuda:0")])
    assert row.status == "skipped"
    assert "no CUDA device" in row.note
    assert row.time_median_s is None


def test_tf32_on_cpu_is_skipped_with_the_reason(make_runner):
    [row] = make_runner().run([Case(layer="fc8", dtype="tf32")])
    assert row.status == "skipped" and "TF32" in row.note


def test_failures_are_recorded_and_the_run_goes_on(make_runner):
    rows = make_runner().run([Case(layer="conv9"), Case(layer="relu1", batch=1)])
    assert rows[0].status == "error" and "conv9" in rows[0].note
    assert rows[1].status == "ok"


def test_thread_count_is_applied_recorded_and_restored(make_runner):
    before = torch.get_num_threads()
    [row] = make_runner().run([Case(layer="conv3", threads=1)])
    assert row.threads == 1
    assert torch.get_num_threads() == before


def test_rerun_skips_cases_already_stored(make_runner):
    cases = grid(layer=["relu1", "pool1", "lrn1"], batch=1)
    runner = make_runner()
    runner.run(cases[:2])
    resumed = make_runner()  # same study and arguments: the unfinished run is resumed
    assert resumed.run_id == runner.run_id
    new = resumed.run(cases)
    assert [r.layer for r in new] == ["lrn1"]
    df = load_measurements(runner.store.path)
    assert sorted(df.case_key) == sorted(c.key for c in cases)


def test_network_train_step_checks_gradients_and_updated_parameters(make_runner):
    [row] = make_runner().run([Case(layer="network", pass_name="train_step", batch=2)])
    assert row.status == "ok", row.note
    assert row.error_note.startswith("worst tensor:")
    assert row.error_rel < 1e-4


def test_dropout_layers_are_checked_with_replayed_masks(make_runner):
    rows = make_runner().run(grid(layer=["drop6", "network"], batch=2, pass_name=["forward", "backward"]))
    for row in rows:
        assert row.status == "ok", row.note
        assert row.error_rel < 1e-5


def test_tolerance_is_fixed_in_float32_and_follows_stock_pytorch_in_reduced_precision():
    from perfkit.workload import tolerance_for

    assert tolerance_for("float32", 0.3) == 1e-4  # float32 stays strict whatever torch does
    assert tolerance_for("bfloat16", 0.001) == 5e-2  # the fixed bound when stock PyTorch is well within it
    assert tolerance_for("bfloat16", 0.25) == 0.5  # twice stock PyTorch's own error in that dtype
    assert tolerance_for("float16", float("inf")) == 1e-2


class _TwentyPercentOffOps(TorchOps):
    @staticmethod
    def activation(x, function):
        return TorchOps.activation(x, function) * 1.2


class _NanOps(TorchOps):
    @staticmethod
    def activation(x, function):
        return TorchOps.activation(x, function) * float("nan")


class _OpsBackend(Backend):
    description = "test-only backend with the ops given"

    def __init__(self, name, ops):
        self.name, self.ops = name, ops

    def build(self, layers, parameters, device, dtype):
        return AlexNetModule(layers, self.ops, device=device, dtype=dtype, parameters=parameters)


@pytest.fixture
def bad_backends():
    for name, ops in (("off20", _TwentyPercentOffOps), ("nan", _NanOps)):
        BACKENDS[name] = _OpsBackend(name, ops)
    yield
    del BACKENDS["off20"], BACKENDS["nan"]


def test_reduced_precision_training_is_judged_against_stock_pytorch(make_runner, bad_backends):
    autocast = (("autocast", True),)
    rows = make_runner().run(grid(layer="network", pass_name="train_step", batch=2, dtype="bfloat16",
                                  options=autocast, backend=["torch", "off20"]) +
                             grid(layer="relu3", batch=2, dtype="bfloat16", options=autocast,
                                  backend=["torch", "off20", "nan"]))
    by = {(r.layer, r.backend): r for r in rows}
    stock = by[("network", "torch")]
    assert stock.status == "ok", stock.note
    assert "x stock PyTorch's error" in stock.error_note
    assert stock.error_tolerance == pytest.approx(max(5e-2, 2 * stock.error_rel))
    # a kernel 20% off is caught where stock PyTorch is accurate (a single layer's forward)...
    assert by[("relu3", "off20")].status == "incorrect"
    assert by[("relu3", "off20")].error_rel == pytest.approx(0.2, rel=0.05)
    # ...and judged against twice the stock error on the deep training pass
    off = by[("network", "off20")]
    assert off.error_tolerance == pytest.approx(max(5e-2, 2 * stock.error_rel), rel=0.2)
    assert off.status == ("ok" if off.error_rel <= off.error_tolerance else "incorrect")
    # a non-finite result never passes
    assert by[("relu3", "nan")].status == "incorrect"


def test_past_its_deadline_a_run_only_records_skips_and_leaves_the_rest(make_runner):
    import time
    from dataclasses import replace

    from perfkit.runner import CaseResult

    calls = []

    def hook(case, runner):  # a study's own measurement of its training runs; the rest go to the runner
        if case.pass_name != "training":
            return None
        calls.append(case.key)
        return CaseResult(replace(runner.blank_row(case), status="ok"))

    runner = make_runner(replace(FAST, deadline=time.monotonic() - 1))
    runner.measure_hook = hook
    gpu = Case(layer="relu1", device="cuda:0", batch=1)
    cases = [Case(layer="relu1", batch=1), gpu, Case(layer="network", pass_name="training", batch=1)]
    rows = runner.run(cases)
    if torch.cuda.is_available():
        assert rows == []
    else:  # the GPU case is only a skip: recorded with its reason even after the deadline
        assert [(r.case_key, r.status) for r in rows] == [(gpu.key, "skipped")]
    assert calls == []  # the study's own case (a pass the backend does not declare) was not started either
    assert runner.cases_not_run == len(cases) - len(rows)
