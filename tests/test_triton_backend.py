"""The triton backend: whole-network forward of every variant, and its backward and train_step passes, against the
float64 reference, fused as it runs."""
import os

import pytest
import torch

from perfkit.backends import SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY, get_backend
from perfkit.model import init_parameters
from perfkit.specs import VARIANTS, build_network
from perfkit.workload import TOLERANCES, Workload, check, make_inputs, reference_results, relative_error

HAS_CUDA = torch.cuda.is_available()
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"  # set by tests/conftest.py when there is no GPU
pytestmark = pytest.mark.skipif(not (HAS_CUDA or INTERPRETING), reason="needs a GPU or TRITON_INTERPRET=1")


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_network_forward_matches_torch_in_float32(variant, device):
    network = build_network(variant)
    params = init_parameters(network, seed=1)
    module = get_backend("triton").build(network.body, params, device, torch.float32)
    module.capture_for_reference = True  # dropout stays active; the reference replays the kernels' masks
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


def test_training_passes_exist_and_train_with_the_triton_optimizer():
    from perfkit.kernels.sgd import TritonSGD

    backend = get_backend("triton")
    assert backend.passes == ("forward", "backward", "train_step")
    for pass_name in backend.passes:
        reason = backend.unavailable_reason("cuda:0", "float32", pass_name)
        assert reason == (None if HAS_CUDA else "no CUDA device is available")
    optimizer = backend.make_optimizer([torch.zeros(3, requires_grad=True)])
    assert isinstance(optimizer, TritonSGD)
    assert optimizer.defaults["lr"] == SGD_LR and optimizer.defaults["momentum"] == SGD_MOMENTUM
    assert optimizer.defaults["weight_decay"] == SGD_WEIGHT_DECAY
    assert optimizer.defaults["dampening"] == 0 and optimizer.defaults["nesterov"] is False


def _against_reference(layers, pass_name, device, batch, params):
    """One prepare + run of `pass_name` on the triton backend, and the float64 reference with its dropout masks."""
    backend = get_backend("triton")
    module = backend.build(layers, params, device, torch.float32)
    module.capture_for_reference = True
    inputs = make_inputs(layers, batch, seed=2)
    workload = Workload(module, pass_name, inputs, device, torch.float32, backend.make_optimizer)
    got = workload.run_once()
    want = reference_results(layers, pass_name, params, inputs, module.captured_dropout_masks,
                             get_backend("torch").make_optimizer)
    return got, want, workload


def test_alexnet2012_train_step_matches_torch_in_float32(device):
    """One full train step of the paper's network at 224 x 224, batch 2: zero grads, forward, loss, backward and the
    TritonSGD update, all on Triton kernels. Every gradient and every updated parameter agrees with torch's step
    computed in float64 to a relative error under 1e-4."""
    network = build_network("alexnet2012")
    params = init_parameters(network, seed=1)
    got, want, workload = _against_reference(network.layers, "train_step", device, 2, params)
    error, worst = check(got, want)
    assert error < TOLERANCES["float32"] == 1e-4, worst
    updated = {name: relative_error(got[name], want[name]) for name in want if name.endswith("(updated)")}
    assert len(updated) == 16 and max(updated.values()) < 1e-4
    # the step moved every parameter (so the check above is about the update, not about copies of the inputs)
    for name, param in workload.module.named_parameters():
        assert not torch.equal(param.detach().cpu(), params[name]), name
    assert workload.optimizer.launches == 1  # all 16 tensors in one SGD launch


# A smaller image keeps the interpreter's time down: 67 x 67 gives conv1 16 x 16 maps and pool5 1 x 1, so fc6 is
# 256 -> 4096; every layer kind of each variant is still there.
SMALL_INPUT = 67


@pytest.mark.parametrize("variant, pass_name", [("owt", "train_step"), ("kernelbench", "backward")])
def test_whole_network_training_passes_of_the_other_variants(variant, pass_name, device):
    network = build_network(variant, input_size=SMALL_INPUT)
    got, want, _ = _against_reference(network.layers, pass_name, device, 2, init_parameters(network, seed=3))
    error, worst = check(got, want)
    assert error < 1e-4, worst
    if pass_name == "backward":
        assert not any(name.endswith("(updated)") for name in got)


def test_every_layer_backward_alone(device):
    """Each layer of alexnet2012 as its own module (the runner's per-layer cases: unfused, one Function each, with
    a fixed random output gradient, or the loss's own)."""
    network = build_network("alexnet2012", input_size=SMALL_INPUT)
    params = init_parameters(network, seed=4)
    errors = {}
    for spec in network.layers:
        got, want, _ = _against_reference((spec,), "backward", device, 2, params)
        errors[spec.name] = check(got, want)
    assert set(errors) == set(network.layer_names)
    bad = {name: e for name, e in errors.items() if not e[0] < 1e-4}
    assert not bad, bad
