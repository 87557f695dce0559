"""The triton backend: whole-network forward of every variant against the float64 reference, fused as it runs."""
import os

import pytest
import torch

from perfkit.backends import get_backend
from perfkit.model import init_parameters
from perfkit.specs import VARIANTS, build_network
from perfkit.workload import TOLERANCES, Workload, check, make_inputs, reference_results

HAS_CUDA = torch.cuda.is_available()
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"  # set by tests/conftest.py when there is no GPU
pytestmark = pytest.mark.skipif(not (HAS_CUDA or INTERPRETING), reason="needs a GPU or TRITON_INTERPRET=1")


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_network_forward_matches_torch_in_float32(variant, device):
    network = build_network(variant)
    params = init_parameters(network, seed=1)
    module = get_backend("triton").build(network.body, params, device, torch.float32)
    module.capture_dropout_masks = True  # dropout stays active; the reference replays the kernels' masks
    inputs = make_inputs(network.body, 1, seed=2)
    got = Workload(module, "forward", inputs, device, torch.float32).run_once()
    want = reference_results(network.body, "forward", params, inputs, module.captured_dropout_masks, None)
    error, _ = check(got, want)
    assert error < TOLERANCES["float32"] == 1e-4
    stages = [stage.name for stage in module.stages]
    assert "conv1+relu1" in stages and any(name.startswith("fc6+relu6") for name in stages)
    if variant == "alexnet2012":
        assert "lrn1+pool1" in stages and "fc7+relu7+drop7" in stages
        assert set(module.captured_dropout_masks) == {"drop6", "drop7"}


def test_runner_never_times_the_interpreter():
    reason = get_backend("triton").unavailable_reason("cpu", "float32", "forward")
    assert "interpreter" in reason and "not performance" in reason


def test_training_passes_are_declared_missing_until_they_exist():
    backend = get_backend("triton")
    for pass_name in ("backward", "train_step"):
        if pass_name not in backend.passes:
            assert f"no {pass_name} pass" in backend.unavailable_reason("cuda:0", "float32", pass_name)
