"""The CPU baselines beside stock eager: channels_last, torch.compile with fresh compiled state per case, and ONNX
Runtime (optional, skipped with the reason where it is not installed), each checked against the float64 reference by
the runner like every backend."""
import sys

import pytest
import torch

from perfkit.backends import get_backend
from perfkit.backends.onnx_runtime import missing_modules
from perfkit.cases import Case
from perfkit.runner import RunnerConfig
from perfkit.measure.timer import TimingPolicy

FAST = RunnerConfig(timing=TimingPolicy(warmup=1, min_reps=1, min_time_s=0.0), check_batch=2, device_peaks=False,
                    energy=False)
HAS_ORT = not missing_modules()


@pytest.mark.parametrize("layer,pass_name", [("conv2", "forward"), ("conv2", "train_step"), ("pool1", "train_step"),
                                             ("fc6", "train_step")])
def test_channels_last_is_checked_against_the_reference_and_keeps_its_layout(open_runner, layer, pass_name):
    [row] = open_runner(FAST).run([Case(layer=layer, backend="channels_last", batch=3, pass_name=pass_name)])
    assert row.status == "ok", row.note
    assert row.error_rel < 1e-5 and row.backend == "channels_last"


def test_channels_last_module_gets_a_channels_last_input_so_no_conversion_is_timed():
    from perfkit.model import init_parameters
    from perfkit.specs import build_network
    from perfkit.workload import Workload, make_inputs

    network = build_network("alexnet2012")
    layers = network.span("conv2")
    module = get_backend("channels_last").build(layers, init_parameters(network), "cpu", torch.float32)
    assert module.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    work = Workload(module, "forward", make_inputs(layers, 2, 0), "cpu", torch.float32)
    assert work.x.is_contiguous(memory_format=torch.channels_last) and not work.x.is_contiguous()
    work.run()
    assert work.out.is_contiguous(memory_format=torch.channels_last)
    nchw = Workload(get_backend("torch").build(layers, init_parameters(network), "cpu", torch.float32), "forward",
                    make_inputs(layers, 2, 0), "cpu", torch.float32)
    assert nchw.x.is_contiguous()


def test_compile_cases_in_one_process_all_run_compiled_code(open_runner):
    """Dynamo keeps graphs per code object, and every AlexNetModule shares `forward`: 12 cases of distinct shapes
    used to pass its recompile limit (8) and run eagerly from the 9th on, labelled compile. Each case now starts from
    fresh compiled state, so each of the 12 compiles its own graphs."""
    from torch._dynamo.utils import counters

    cases = [Case(layer="relu7", backend="compile", batch=batch, pass_name="forward") for batch in range(1, 13)]
    runner = open_runner(RunnerConfig(timing=TimingPolicy(warmup=1, min_reps=1, min_time_s=0.0), check_batch=16,
                                      device_peaks=False, energy=False))
    graphs, rows = [], []
    for case in cases:
        before = counters["stats"]["unique_graphs"]
        [row] = runner.run([case])
        assert row.status == "ok", row.note
        graphs.append(counters["stats"]["unique_graphs"] - before)
        rows.append(row)
    # at least one graph per case (the check, which captures the ReLU choices, traces a second one)
    assert min(graphs) >= 1, f"graphs compiled per case: {graphs} (0: dynamo ran the case eagerly)"
    # and each row records them: the count the runner saw is the count dynamo made
    assert [r.graphs_compiled for r in rows] == graphs
    assert all(r.compiles_in_window == 0 for r in rows)


def test_a_compile_case_that_ran_eagerly_is_an_error_not_a_speed_result(open_runner, monkeypatch):
    """What dynamo does past its recompile limit, simulated: the compiled forward is replaced by the eager one, so no
    graph is captured. The row must say so instead of timing eager code under the compile label."""
    backend = get_backend("compile")
    real_build = type(backend).build

    def eager_build(self, layers, parameters, device, dtype):
        module = real_build(self, layers, parameters, device, dtype)
        del module.forward  # the instance attribute torch.compile set: the class's eager forward is back
        return module

    monkeypatch.setattr(type(backend), "build", eager_build)
    [row] = open_runner(FAST).run([Case(layer="relu7", backend="compile", batch=3)])
    assert row.status == "error" and row.graphs_compiled == 0
    assert "captured no graph" in row.note and row.time_median_s is not None  # timed, but not shown as a speed result


def test_onnxruntime_without_the_package_is_skipped_with_the_reason(open_runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it now fails, as when it is not installed
    backend = get_backend("onnxruntime")
    assert "onnxruntime" in missing_modules()
    reason = backend.unavailable_reason("cpu", "float32", "forward")
    assert reason.startswith("onnxruntime") and "not installed" in reason and "perfkit[onnx]" in reason
    [row] = open_runner(FAST).run([Case(layer="conv2", backend="onnxruntime", batch=2)])
    assert row.status == "skipped" and row.note == reason and row.time_median_s is None


def test_onnxruntime_refuses_what_it_cannot_run_before_building():
    backend = get_backend("onnxruntime")
    assert "inference only" in backend.unavailable_reason("cpu", "float32", "train_step")
    assert "float32 only" in backend.unavailable_reason("cpu", "bfloat16", "forward")
    assert "does not run on cuda" in backend.unavailable_reason("cuda:0", "float32", "forward")
    with pytest.raises(ValueError, match="float32 on the CPU"):
        backend.build([], {}, "cpu", torch.float16)


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime or onnx not installed (pip install 'perfkit[onnx]')")
@pytest.mark.parametrize("layer", ["conv2", "lrn1", "fc6", "drop6", "loss", "network"])
def test_onnxruntime_forward_is_checked_against_the_reference(open_runner, layer):
    """Exported from the run's shared parameters; the dropout layers replay the masks ONNX Runtime drew."""
    [row] = open_runner(FAST).run([Case(layer=layer, backend="onnxruntime", batch=3, threads=1)])
    assert row.status == "ok", row.note
    assert row.error_rel < 1e-5 and row.threads == 1


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime or onnx not installed (pip install 'perfkit[onnx]')")
def test_onnxruntime_session_uses_the_cases_threads_and_reports_its_dropout_masks():
    from perfkit.model import init_parameters
    from perfkit.specs import build_network

    network = build_network("alexnet2012")
    layers = network.span("drop6")
    with_threads = torch.get_num_threads()
    module = get_backend("onnxruntime").build(layers, init_parameters(network), "cpu", torch.float32)
    assert module.threads == with_threads
    assert module.session.get_session_options().intra_op_num_threads == with_threads
    x = torch.ones(4, 4096)
    module.capture_for_reference = True
    y = module(x)
    keep = module.captured_dropout_masks["drop6"]
    assert keep.dtype == torch.bool and keep.shape == y.shape
    assert 0.4 < keep.float().mean() < 0.6
    torch.testing.assert_close(y, keep.float() * 2.0)  # kept elements scaled by 1 / (1 - p)
    module.capture_for_reference = False
    module.captured_dropout_masks.clear()
    module(x)
    assert not module.captured_dropout_masks  # the timed call asks for the output only
