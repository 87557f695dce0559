"""The float64 reference replays the backend's max-pool choices, as it replays dropout masks.

A near-tie in a pooling window can go the other way in float64; the gradient then flows to another position and a
correct float32 backward is reported wrong. Seed 2 below is such a case (found by trying seeds): torch against itself
in float64 fails the float32 tolerance without the replay and passes with it."""
import torch
import torch.nn.functional as F

from perfkit.backends import get_backend
from perfkit.model import AlexNetModule, TorchOps, gather_pooled, init_parameters, pool_indices
from perfkit.specs import MaxPool, build_network
from perfkit.workload import TOLERANCES, Workload, check, make_inputs, reference_results


def test_gathering_at_the_chosen_positions_is_max_pooling_forward_and_backward():
    spec = MaxPool("pool", in_shape=(4, 9, 9), kernel_size=3, stride=2, padding=1)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    want = F.max_pool2d(x, 3, 2, 1)
    got = gather_pooled(x, pool_indices(x, spec))
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    (gx,) = torch.autograd.grad(got, x, g)
    (wx,) = torch.autograd.grad(want, x, g)
    torch.testing.assert_close(gx, wx)


def test_modules_capture_pool_choices_beside_dropout_masks():
    network = build_network("alexnet2012")
    module = AlexNetModule(network.body, TorchOps, parameters=init_parameters(network))
    module.capture_dropout_masks = True
    module(torch.randn(1, 3, 224, 224))
    assert set(module.captured_dropout_masks) == {"drop6", "drop7"}
    assert set(module.captured_pool_indices) == {"pool1", "pool2", "pool5"}
    assert module.captured_pool_indices["pool5"].shape == (1, 256, 6, 6)


def test_a_near_tie_no_longer_fails_torch_against_itself():
    network = build_network("kernelbench")
    params = init_parameters(network)
    torch_backend = get_backend("torch")
    inputs = make_inputs(network.layers, 4, seed=2)
    module = torch_backend.build(network.layers, params, "cpu", torch.float32)
    module.capture_dropout_masks = True
    got = Workload(module, "backward", inputs, "cpu", torch.float32, torch_backend.make_optimizer).run_once()
    pools = module.captured_pool_indices
    replayed, _ = check(got, reference_results(network.layers, "backward", params, inputs, {}, None, pools))
    own, worst = check(got, reference_results(network.layers, "backward", params, inputs, {}, None))
    assert replayed < 1e-5
    assert own > TOLERANCES["float32"] and worst == "conv1.weight.grad"
