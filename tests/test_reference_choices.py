"""The float64 reference replays the backend's choices (max-pool winners, ReLU's positive or not), as it replays
dropout masks.

A near-tie in a pooling window, or a pre-activation within rounding of zero, can go the other way in float64; the
gradient then flows elsewhere and a correct float32 backward is reported wrong. The constructed cases below make float32
decide otherwise than float64 on every CPU (a sum that rounds to a tie, a product that underflows to zero), so torch
against itself in float64 fails the float32 tolerance without the replay and passes with it. The seeded cases are the
ones first seen (found by trying seeds, and in a study run); whether a seed is such a case depends on the CPU's float32
kernels (they were found on an AVX-512 CPU), so where it is not they skip and the constructed cases cover the
behaviour."""
import zlib

import pytest
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
    module.capture_for_reference = True
    module(torch.randn(1, 3, 224, 224))
    assert set(module.captured_dropout_masks) == {"drop6", "drop7"}
    assert {"pool1", "pool2", "pool5"} <= set(module.captured_choices)
    assert module.captured_choices["pool5"].shape == (1, 256, 6, 6)


def _float32_backward_checked(layers, params, inputs):
    """Torch's float32 backward on the CPU, checked against the float64 reference with its choices replayed and
    without: ((error, worst tensor) replayed, (error, worst tensor) without the replay, the choices captured)."""
    torch_backend = get_backend("torch")
    module = torch_backend.build(layers, params, "cpu", torch.float32)
    module.capture_for_reference = True
    got = Workload(module, "backward", inputs, "cpu", torch.float32, torch_backend.make_optimizer).run_once()
    masks = dict(module.captured_dropout_masks)
    choices = dict(module.captured_choices)
    replayed = check(got, reference_results(layers, "backward", params, inputs, masks, None, choices))
    own = check(got, reference_results(layers, "backward", params, inputs, masks, None))
    return replayed, own, choices


def _conv1_only_channel0(network, taps: dict[tuple[int, int, int], float]):
    """conv1's parameters all zero but the given taps (input channel, row, column) of output channel 0, so each of that
    channel's outputs is a sum of a few chosen inputs and every other channel is zero."""
    weight = torch.zeros(network.layers[0].param_shapes["weight"])
    for (c, kh, kw), value in taps.items():
        weight[0, c, kh, kw] = value
    return {"conv1.weight": weight, "conv1.bias": torch.zeros(network.layers[0].param_shapes["bias"])}


def test_a_pool_tie_in_float32_that_float64_breaks_is_replayed():
    """conv1 -> relu1 -> pool1 where pool1's first window holds 1 and 1 + 1e-8: float32 rounds the second to 1.0, a
    tie the first position wins; float64 keeps it larger. The sum has two non-zero terms, and a two-term sum rounds the
    same in any order, so every CPU's float32 ties (unlike a seed's near-tie, which depends on the kernels' order)."""
    network = build_network("kernelbench")
    layers = network.layers[:3]
    assert [s.name for s in layers] == ["conv1", "relu1", "pool1"]
    assert (layers[0].kernel_size, layers[0].stride, layers[0].padding) == (11, 4, 2)
    assert (layers[2].kernel_size, layers[2].stride) == (3, 2)
    # With padding 2, tap (2, 2) reads input (4i, 4j): channel 0's output (i, j) is x[0, 4i, 4j] + x[1, 4i, 4j].
    params = _conv1_only_channel0(network, {(0, 2, 2): 1.0, (1, 2, 2): 1.0})
    x = torch.zeros(1, *layers[0].in_shape)
    x[0, 0, 0, 0] = 1.0  # output (0, 0) = 1
    x[0, 0, 0, 4], x[0, 1, 0, 4] = 1.0, 1e-8  # output (0, 1) = 1 + 1e-8: 1.0 in float32 (its ulp at 1 is 1.2e-7)
    inputs = {"x": x, "grad_output": torch.ones(1, *layers[-1].out_shape)}
    (replayed, _), (own, worst), choices = _float32_backward_checked(layers, params, inputs)
    assert choices["pool1"][0, 0, 0, 0] == 0  # float32 took the first of the tie
    # The winner's gradient reaches conv1's weight through the taps that read its inputs: float32 (output (0, 0))
    # puts it on taps (2, 2) and (2, 6), float64 alone (output (0, 1)) on tap (2, 2), a relative error of 1.
    assert own > TOLERANCES["float32"] and worst == "conv1.weight.grad"
    assert replayed < 1e-5


def test_a_relu_pre_activation_that_underflows_in_float32_is_replayed():
    """conv1 -> relu1 where one pre-activation is 1e-30 * 1e-30: 0 in float32 (below its smallest subnormal, on every
    CPU, flushing denormals or not), so ReLU passes no gradient there; 1e-60 > 0 in float64, so without the replay the
    reference passes it. A sign flipped by rounding a sum would depend on the kernels' order; an underflow does not."""
    network = build_network("kernelbench")
    layers = network.layers[:2]
    assert [s.name for s in layers] == ["conv1", "relu1"]
    params = _conv1_only_channel0(network, {(0, 2, 2): 1e-30})  # channel 0's output (i, j) is 1e-30 * x[0, 4i, 4j]
    x = torch.zeros(1, *layers[0].in_shape)
    x[0, 0, 0, 0] = 1e-30  # output (0, 0) = 1e-60: 0 in float32, positive in float64
    x[0, 0, 0, 4] = 1.0  # output (0, 1) = 1e-30: positive in both, so the gradients are not all zero
    inputs = {"x": x, "grad_output": torch.ones(1, *layers[-1].out_shape)}
    (replayed, _), (own, worst), choices = _float32_backward_checked(layers, params, inputs)
    assert choices["relu1"][0, 0, 0, :2].tolist() == [False, True]  # float32's mask, which float64's sign is not
    # Passing output (0, 0)'s gradient adds x[0, 0, 4] to conv1's weight tap (2, 6), and a second 1 to its bias: 0.71
    # relative on the weight, 0.5 on the bias.
    assert own > TOLERANCES["float32"] and worst == "conv1.weight.grad"
    assert replayed < 1e-5


def _skip_unless_float32_decides_otherwise(own: float, case: str):
    """A seeded case tests the replay only where this CPU's float32 kernels round it to the other decision."""
    if own <= TOLERANCES["float32"]:
        pytest.skip(f"this CPU rounds {case} differently, so it is no near-decision here (torch against itself in "
                    f"float64 without the replay: {own:.1e}); the constructed cases cover the behaviour")


def test_a_near_tie_no_longer_fails_torch_against_itself():
    """kernelbench's backward at batch 4 with seed 2 has a max-pool near-tie on an AVX-512 CPU (where it was found)."""
    network = build_network("kernelbench")
    params = init_parameters(network)
    inputs = make_inputs(network.layers, 4, seed=2)
    (replayed, _), (own, worst), _ = _float32_backward_checked(network.layers, params, inputs)
    _skip_unless_float32_decides_otherwise(own, "kernelbench's seed-2 max-pool near-tie")
    assert worst == "conv1.weight.grad"
    assert replayed < 1e-5


def test_relu_choices_are_captured_fused_or_not():
    network = build_network("alexnet2012")
    params = init_parameters(network)
    plain = AlexNetModule(network.body, TorchOps, parameters=params)
    plain.capture_for_reference = True
    x = torch.randn(1, 3, 224, 224)
    y = plain(x)
    relus = {s.name for s in network.layers if s.kind == "activation"}
    assert relus <= set(plain.captured_choices)
    # The mask is where the ReLU's output is positive: replaying it reproduces the forward exactly.
    replayed = AlexNetModule(network.body, TorchOps, dtype=torch.float64, parameters=params)
    replayed.replay_choices = dict(plain.captured_choices)
    replayed.replay_dropout_masks = dict(plain.captured_dropout_masks)
    torch.testing.assert_close(replayed(x.double()).float(), y, rtol=1e-4, atol=1e-5)


def test_a_relu_near_zero_no_longer_fails_torch_against_itself():
    """alexnet2012-pool2x2's backward at batch 4 with this seed (the ingredients study's check input) has a conv3
    pre-activation within rounding of zero on an AVX-512 CPU (where it was found): positive in float32, not in
    float64."""
    network = build_network("alexnet2012-pool2x2")
    params = init_parameters(build_network("alexnet2012"))
    seed = zlib.crc32(  # RunnerConfig's seed 0
        b"check/alexnet2012-pool2x2/relu/network/train_step/4")
    inputs = make_inputs(network.layers, 4, seed)
    (replayed, _), (own, _), _ = _float32_backward_checked(network.layers, params, inputs)
    _skip_unless_float32_decides_otherwise(own, "alexnet2012-pool2x2's seeded conv3 pre-activation near zero")
    assert replayed < 1e-5
