"""One correctness check: the regression suite (tests/benchmarks/conftest.py) and the runner judge a case alike.

The suite checks each benchmark with the runner's own check (`Runner.work(case, backend).check()`) and the runner's
verdict (finite and within the tolerance). Here both are run on cases where replaying the backend's max-pool and ReLU
choices in the float64 reference decides the verdict (the constructed ties of tests/test_reference_choices.py): float32
decides otherwise than float64 on every CPU, so a check that did not replay the choices would see an error of order 1
where the runner sees ~0, and would fail a correct backend. Both a correct backend (torch) and a wrong one (1% off in
its activation) must get the same error and the same verdict from both.
"""
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import perfkit.runner
from perfkit.backends import get_backend
from perfkit.measure.timer import TimingPolicy
from perfkit.model import init_parameters
from perfkit.runner import RunnerConfig
from perfkit.specs import build_network
from perfkit.workload import TOLERANCES, Workload, check, reference_results

BENCH_CONFTEST = Path(__file__).resolve().parent / "benchmarks" / "conftest.py"
VARIANT = "kernelbench"  # conv1 11x11 stride 4 padding 2, then relu1 and pool1 with no LRN between (the constructed ties)


def _load_bench_conftest():
    spec = importlib.util.spec_from_file_location("perfkit_bench_conftest", BENCH_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


bench = _load_bench_conftest()


def _conv1_only_channel0(network, taps):
    weight = torch.zeros(network.layers[0].param_shapes["weight"])
    for (c, kh, kw), value in taps.items():
        weight[0, c, kh, kw] = value
    return {"conv1.weight": weight, "conv1.bias": torch.zeros(network.layers[0].param_shapes["bias"])}


def _pool_tie(network):
    """pool1's first window holds 1 and 1 + 1e-8: a tie in float32 (the first position wins), not in float64."""
    params = _conv1_only_channel0(network, {(0, 2, 2): 1.0, (1, 2, 2): 1.0})
    x = torch.zeros(1, *network.layers[0].in_shape)
    x[0, 0, 0, 0] = 1.0
    x[0, 0, 0, 4], x[0, 1, 0, 4] = 1.0, 1e-8
    return "conv1+relu1+pool1", params, x


def _relu_underflow(network):
    """One pre-activation is 1e-30 * 1e-30: 0 in float32 (ReLU passes no gradient), positive in float64."""
    params = _conv1_only_channel0(network, {(0, 2, 2): 1e-30})
    x = torch.zeros(1, *network.layers[0].in_shape)
    x[0, 0, 0, 0] = 1e-30
    x[0, 0, 0, 4] = 1.0
    return "conv1+relu1", params, x


@pytest.fixture(params=[_pool_tie, _relu_underflow], ids=["pool-tie", "relu-underflow"])
def constructed(request, monkeypatch):
    """(layer, the constructed inputs): the runner's parameters and every input it draws are the constructed ones,
    for the runner that the suite's `make_runner` builds and for the study's runner alike."""
    network = build_network(VARIANT)
    layer, conv1, x = request.param(network)
    params = {**init_parameters(network), **conv1}
    layers = network.span(layer)

    def constructed_inputs(layers_, batch, seed, device=None):
        assert batch == 1 and tuple(layers_) == tuple(layers)
        return {"x": x.clone(), "grad_output": torch.ones(1, *layers[-1].out_shape)}

    monkeypatch.setattr(perfkit.runner, "init_parameters", lambda network_, seed=0: {k: v.clone()
                                                                                      for k, v in params.items()})
    monkeypatch.setattr(perfkit.runner, "make_inputs", constructed_inputs)
    return layer, layers, params, constructed_inputs(layers, 1, 0)


PASS = "train_step"  # one of the suite's passes; its gradients carry the choice's effect


def _unreplayed_error(layers, params, inputs) -> float:
    """Torch's float32 train step against a float64 reference that makes its own choices: how far off a check that
    did not replay them would find a correct backend."""
    torch_backend = get_backend("torch")
    module = torch_backend.build(layers, params, "cpu", torch.float32)
    module.capture_for_reference = True
    got = Workload(module, PASS, inputs, "cpu", torch.float32, torch_backend.make_optimizer).run_once()
    want = reference_results(layers, PASS, params, inputs, dict(module.captured_dropout_masks),
                             torch_backend.make_optimizer)
    return check(got, want)[0]


@pytest.mark.parametrize("backend_name", ["torch", "off"])
def test_the_suite_and_the_runner_judge_a_choice_sensitive_case_alike(constructed, backend_name, broken_backend,
                                                                     open_runner):
    layer, layers, params, inputs = constructed
    backend_name = broken_backend if backend_name == "off" else backend_name
    backend = get_backend(backend_name)
    # The case is one where the replay matters: without it, torch itself would be far over float32's tolerance.
    assert _unreplayed_error(layers, params, inputs) > 100 * TOLERANCES["float32"]

    # The suite's path: its settings, its runner, its case, its check and verdict, under its context.
    settings = replace(bench.CPU_SETTINGS, batch=1)
    case = bench.bench_case(settings, backend_name, layer, PASS, variant=VARIANT)
    with bench.case_context(settings):
        _, checked = bench.check_case(bench.make_runner(settings), case, backend)
    suite_passes = bench.passes(checked)

    # The runner's path: a study's runner measuring the same case into a store.
    config = RunnerConfig(timing=TimingPolicy(warmup=1, min_reps=2, min_time_s=0.0), check_batch=2,
                          seed=bench.SEED, energy=False, device_peaks=False)
    row = open_runner(config).measure(case)
    assert row.status in ("ok", "incorrect"), row.note

    assert checked.images == row.error_batch == 1
    assert checked.error == row.error_rel
    assert checked.tolerance == row.error_tolerance == TOLERANCES["float32"]
    assert suite_passes == (row.status == "ok")
    if backend_name == "torch":
        assert suite_passes and checked.error < 1e-5  # replayed: a correct backend passes
    else:
        assert not suite_passes and checked.error > TOLERANCES["float32"]  # a wrong one still fails
