"""The torch backend and the shared module: same parameters everywhere, the paper's formulas, the three passes."""
import pytest
import torch
import torch.nn.functional as F

from perfkit.backends import BACKENDS, SGD_LR, SGD_WEIGHT_DECAY, baseline_backend, get_backend
from perfkit.model import AlexNetModule, TorchOps, init_parameters, plan_stages
from perfkit.specs import LocalResponseNorm, build_network
from perfkit.workload import Workload, make_inputs


def test_registry_marks_torch_as_the_single_baseline():
    assert baseline_backend().name == "torch"
    assert [b.name for b in BACKENDS.values() if b.is_baseline] == ["torch"]
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        get_backend("nope")


def _manual_alexnet2012(x, p, training=False):
    """The paper's network written out with torch.nn.functional, independently of the spec walker."""
    lrn = dict(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)
    x = F.max_pool2d(F.local_response_norm(F.relu(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], 4, 2)), **lrn), 3, 2)
    x = F.max_pool2d(F.local_response_norm(F.relu(F.conv2d(x, p["conv2.weight"], p["conv2.bias"], 1, 2, groups=2)),
                                           **lrn), 3, 2)
    x = F.relu(F.conv2d(x, p["conv3.weight"], p["conv3.bias"], 1, 1))
    x = F.relu(F.conv2d(x, p["conv4.weight"], p["conv4.bias"], 1, 1, groups=2))
    x = F.max_pool2d(F.relu(F.conv2d(x, p["conv5.weight"], p["conv5.bias"], 1, 1, groups=2)), 3, 2)
    x = F.relu(F.linear(x.flatten(1), p["fc6.weight"], p["fc6.bias"]))
    x = F.relu(F.linear(x, p["fc7.weight"], p["fc7.bias"]))
    return F.linear(x, p["fc8.weight"], p["fc8.bias"])


def test_network_equals_the_paper_written_out_by_hand():
    network = build_network("alexnet2012")
    params = init_parameters(network, seed=3)
    module = get_backend("torch").build(network.body, params, "cpu", torch.float64).eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    p64 = {k: v.double() for k, v in params.items()}
    torch.testing.assert_close(module(x), _manual_alexnet2012(x, p64), rtol=1e-10, atol=1e-10)


def test_lrn_follows_the_papers_formula():
    """b = a / (k + alpha * sum over 5 neighbouring channels of a^2)^beta, with the paper's alpha = 1e-4 (torch's
    local_response_norm divides alpha by the size, so the spec passes alpha * size)."""
    spec = LocalResponseNorm("lrn", in_shape=(7, 3, 3), size=5, alpha=1e-4, beta=0.75, k=2.0)
    a = torch.randn(1, 7, 3, 3, dtype=torch.float64) * 30  # large enough for the alpha term to matter
    got = AlexNetModule([spec], TorchOps, dtype=torch.float64)(a)
    sq = F.pad(a * a, (0, 0, 0, 0, 2, 2))
    window = sum(sq[:, i:i + 7] for i in range(5))
    torch.testing.assert_close(got, a / (2.0 + 1e-4 * window) ** 0.75)


def test_all_backends_share_parameters_by_layer_name():
    network = build_network("owt")
    params = init_parameters(network)
    modules = [b.build(network.body, params, "cpu", torch.float32) for b in BACKENDS.values()]
    names = [sorted(m.state_dict()) for m in modules]
    assert all(n == names[0] for n in names)
    assert "fc6.weight" in names[0]
    for module in modules:
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, params[name])


def test_activation_parameter_changes_the_network():
    network = build_network("alexnet2012", activation="tanh")
    module = AlexNetModule(network.body[:2], TorchOps, parameters=init_parameters(network))
    x = torch.randn(1, 3, 224, 224)
    conv = network.body[0]
    p = init_parameters(network)
    want = torch.tanh(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], conv.stride, conv.padding))
    torch.testing.assert_close(module(x), want)


def test_train_step_is_sgd_with_the_papers_momentum_and_weight_decay():
    network = build_network("alexnet2012")
    fc8 = network.layer("fc8")
    params = init_parameters(network)
    backend = get_backend("torch")
    module = backend.build([fc8], params, "cpu", torch.float64)
    inputs = make_inputs([fc8], 4, seed=1)
    workload = Workload(module, "train_step", inputs, "cpu", torch.float64, backend.make_optimizer)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    workload.run_once()
    x = inputs["x"].double()
    g_out = inputs["grad_output"].double()
    grads = {"fc8.weight": g_out.T @ x, "fc8.bias": g_out.sum(0)}
    for name, p in before.items():  # first step: momentum buffer = gradient + weight decay term
        want = p - SGD_LR * (grads[name] + SGD_WEIGHT_DECAY * p)
        torch.testing.assert_close(module.state_dict()[name], want)
    # the second step uses the momentum buffer
    optimizer = workload.optimizer
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4


def test_backward_pass_times_only_the_backward():
    network = build_network("alexnet2012")
    conv3 = network.layer("conv3")
    module = get_backend("torch").build([conv3], init_parameters(network), "cpu", torch.float32)
    workload = Workload(module, "backward", make_inputs([conv3], 2, seed=0), "cpu", torch.float32)
    assert workload.prepare is not None  # the forward with autograd runs untimed before each call
    workload.prepare()
    assert module.conv3.weight.grad is None
    workload.run()
    assert module.conv3.weight.grad is not None and workload.x.grad is not None


def test_first_layer_input_needs_no_gradient():
    network = build_network("alexnet2012")
    module = get_backend("torch").build(network.layers, init_parameters(network), "cpu", torch.float32)
    workload = Workload(module, "backward", make_inputs(network.layers, 1, seed=0), "cpu", torch.float32)
    results = workload.run_once()
    assert "input.grad" not in results and "conv1.weight.grad" in results


def test_dropout_masks_captured_then_replayed_give_identical_outputs():
    network = build_network("alexnet2012")
    layers = tuple(s for s in network.body if s.name in ("fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"))
    params = init_parameters(network)
    module = AlexNetModule(layers, TorchOps, parameters=params)
    module.capture_for_reference = True
    x = torch.randn(3, 256, 6, 6)
    out = module(x)
    masks = dict(module.captured_dropout_masks)
    assert set(masks) == {"drop6", "drop7"}
    # non-zero outputs: kept by dropout (p = 0.5) and positive after ReLU (about half): ~25% of 12288 elements
    kept = masks["drop6"].float().mean().item()
    assert 0.2 < kept < 0.3
    replay = AlexNetModule(layers, TorchOps, parameters=params)
    replay.replay_dropout_masks = masks
    torch.testing.assert_close(replay(x), out)
    # and without the masks the outputs differ (dropout really is active in training mode)
    assert not torch.allclose(AlexNetModule(layers, TorchOps, parameters=params)(x), out)


def test_fusion_plan_groups_what_the_kernels_fuse():
    network = build_network("alexnet2012")
    names = [stage.name for stage in plan_stages(network.layers, fuse=True)]
    assert names[:3] == ["conv1+relu1", "lrn1+pool1", "conv2+relu2"]
    assert "fc6+relu6+drop6" in names and names[-2:] == ["fc8", "loss"]
    assert [s.name for s in plan_stages(network.layers, fuse=False)] == list(network.layer_names)
