"""The runner's autocast option: a float32 module run under torch.autocast, checked with the autocast dtype's
tolerance; refused by backends that do not run torch operators."""
import json

import pytest
import torch

from perfkit.cases import Case
from perfkit.model import AlexNetModule, TorchOps
from perfkit.runner import RunnerConfig
from perfkit.specs import build_network
from perfkit.measure.timer import TimingPolicy
from perfkit.workload import Workload, autocast_dtype, make_inputs

FAST = RunnerConfig(timing=TimingPolicy(warmup=0, min_reps=1, min_time_s=0.0), check_batch=2)
AUTOCAST = (("autocast", True),)


@pytest.fixture
def runner(open_runner):
    return open_runner(FAST)


def test_autocast_dtype_comes_from_the_case():
    assert autocast_dtype(Case(dtype="bfloat16")) is None
    assert autocast_dtype(Case(dtype="bfloat16", options=AUTOCAST)) is torch.bfloat16
    assert autocast_dtype(Case(dtype="float16", options=AUTOCAST)) is torch.float16
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        autocast_dtype(Case(dtype="float32", options=AUTOCAST))


def test_workload_keeps_float32_parameters_and_runs_the_forward_in_the_autocast_dtype():
    layers = (build_network().layer("conv2"),)
    module = AlexNetModule(layers, TorchOps)
    sgd = lambda params: torch.optim.SGD(params, lr=0.01)  # noqa: E731
    work = Workload(module, "train_step", make_inputs(layers, 2, 0), "cpu", torch.float32, sgd, torch.bfloat16)
    work.run()
    assert work.x.dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in module.parameters())
    plain = Workload(module, "forward", make_inputs(layers, 2, 0), "cpu", torch.float32, None, torch.bfloat16)
    plain.run()
    assert plain.out.dtype == torch.bfloat16


def test_autocast_case_is_checked_with_its_dtype_tolerance_and_recorded(runner):
    rows = runner.run([Case(layer="conv2", dtype="bfloat16", batch=2, pass_name="train_step", options=AUTOCAST),
                       Case(layer="conv2", dtype="float32", batch=2, pass_name="forward")])
    auto, fp32 = rows
    assert auto.status == "ok", auto.note
    assert json.loads(auto.options) == {"autocast": True}
    assert auto.error_tolerance == 5e-2
    # bfloat16 arithmetic shows: far above float32's error, within bfloat16's tolerance
    assert 1e-4 < auto.error_rel < 5e-2 and fp32.error_rel < 1e-5


def test_autocast_on_float32_is_an_error_and_triton_refuses_it(runner):
    bad, triton = runner.run([Case(layer="relu1", dtype="float32", batch=1, options=AUTOCAST),
                              Case(layer="conv1", backend="triton", device="cuda:0", dtype="bfloat16",
                                   options=AUTOCAST)])
    assert bad.status == "error" and "autocast needs dtype" in bad.note
    assert triton.status == "skipped"
    if not torch.cuda.is_available():  # the CUDA reason comes first without a GPU
        assert "CUDA" in triton.note
    else:
        assert "torch.autocast" in triton.note
