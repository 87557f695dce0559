"""Network specs and cost model: shapes, parameter counts and FLOPs checked against torch itself."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from perfkit.model import AlexNetModule, TorchOps, init_parameters
from perfkit.specs import VARIANTS, build_network, layer_table

BATCH = 2


@pytest.mark.parametrize("variant, params", [("alexnet2012", 60_965_224), ("owt", 61_100_840)])
def test_parameter_totals_match_the_published_counts(variant, params):
    assert build_network(variant).params == params


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_equal_the_built_modules(variant):
    network = build_network(variant)
    for spec in network.layers:
        module = AlexNetModule([spec], TorchOps)
        assert sum(p.numel() for p in module.parameters()) == spec.params, spec.name


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes_equal_what_torch_computes(variant):
    network = build_network(variant)
    params = init_parameters(network)
    module = AlexNetModule(network.body, TorchOps, parameters=params).eval()
    x = torch.randn(BATCH, *network.input_shape)
    with torch.no_grad():
        for stage in module.stages:
            x = module._run_stage(stage, x, None)
            assert tuple(x.shape[1:]) == stage.layers[-1].out_shape, stage.name
    assert network.layer("conv1").out_shape[1:] == (55, 55)
    assert network.layer("pool5").out_shape[1:] == (6, 6)


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _counter_multiplies_grouped_weight_grad_by_groups() -> bool:
    """FlopCounterMode in torch <= 2.13 counts a grouped convolution's weight gradient `groups` times (its formula
    transposes the shapes and loses the group division; pytorch/pytorch#183405 divides by groups). Probe which
    behaviour this torch has, on a weight-only backward of a tiny grouped conv, so the comparison below stays exact."""
    x = torch.randn(1, 4, 5, 5)
    w = torch.randn(4, 2, 3, 3, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, groups=2)
    true_weight_grad = 2 * 4 * 3 * 3 * 2 * 3 * 3  # 2 FLOPs x out elements x (in/groups) x k x k
    counted = _counted(lambda: y.backward(torch.ones_like(y)))
    assert counted in (true_weight_grad, 2 * true_weight_grad), counted
    return counted == 2 * true_weight_grad


def _as_flop_counter_counts(spec, pass_name: str, batch: int, grouped_bug: bool) -> int:
    """Our GEMM FLOPs for a pass, plus FlopCounterMode's known over-count where this torch has it."""
    flops = spec.cost(pass_name, batch).gemm_flops
    if pass_name == "backward" and grouped_bug and spec.kind == "conv" and spec.groups > 1:
        flops += (spec.groups - 1) * spec.cost("forward", batch).gemm_flops  # weight grad counted `groups` times
    return flops


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_flops_match_flop_counter_forward_and_backward(variant):
    """Every layer's GEMM FLOPs equal FlopCounterMode's count on the torch backend (which counts convolutions and
    matrix products, 2 per multiply-add), forward and backward; layers without a GEMM count zero on both sides."""
    network = build_network(variant)
    params = init_parameters(network)
    grouped_bug = _counter_multiplies_grouped_weight_grad_by_groups()
    for spec in network.layers:
        module = AlexNetModule([spec], TorchOps, parameters=params)
        x = torch.randn(BATCH, *spec.in_shape, requires_grad=not spec.first)
        target = torch.randint(0, 1000, (BATCH,)) if spec.kind == "cross_entropy" else None
        with torch.no_grad():
            assert _counted(lambda: module(x, target)) == spec.cost("forward", BATCH).gemm_flops, spec.name
        out = module(x, target)
        grad = None if out.dim() == 0 else torch.randn_like(out)
        assert _counted(lambda: out.backward(grad)) == _as_flop_counter_counts(spec, "backward", BATCH, grouped_bug), \
            spec.name


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_flops_match_flop_counter(variant):
    network = build_network(variant)
    module = AlexNetModule(network.layers, TorchOps, parameters=init_parameters(network))
    x = torch.randn(BATCH, *network.input_shape)
    target = torch.randint(0, 1000, (BATCH,))
    with torch.no_grad():
        forward = _counted(lambda: AlexNetModule(network.body, TorchOps, parameters=init_parameters(network))(x))
    assert forward == network.cost("forward", BATCH).gemm_flops
    loss = module(x, target)
    grouped_bug = _counter_multiplies_grouped_weight_grad_by_groups()
    assert _counted(loss.backward) == sum(_as_flop_counter_counts(spec, "backward", BATCH, grouped_bug)
                                          for spec in network.layers)
    # The paper's figure: 724.4M multiply-adds per image forward for alexnet2012.
    if variant == "alexnet2012":
        assert round(network.cost("forward", 1).gemm_flops / 2 / 1e5) == 7244


def test_bytes_follow_the_stated_convention():
    network = build_network("alexnet2012")
    relu1 = network.layer("relu1")
    assert relu1.cost("forward", 3, "float32").bytes_min == 2 * 3 * 96 * 55 * 55 * 4
    assert relu1.cost("backward", 3, "float32").bytes_min == 3 * 3 * 96 * 55 * 55 * 4
    fc8 = network.layer("fc8")
    weights = 4096 * 1000 + 1000
    assert fc8.cost("forward", 2, "float32").bytes_min == (2 * (4096 + 1000) + weights) * 4
    # half-precision moves half the bytes; FLOPs do not depend on the dtype
    for spec in network.layers:
        if spec.kind != "cross_entropy":  # labels stay int64
            assert spec.cost("train_step", 4, "bfloat16").bytes_min * 2 == spec.cost("train_step", 4).bytes_min
        assert spec.cost("forward", 4, "float16").flops == spec.cost("forward", 4).flops


def test_train_step_is_forward_plus_backward_plus_sgd():
    network = build_network("alexnet2012")
    conv2 = network.layer("conv2")
    fwd, bwd, step = (conv2.cost(p, 5) for p in ("forward", "backward", "train_step"))
    assert step.flops == fwd.flops + bwd.flops + 6 * conv2.params
    assert step.bytes_min == fwd.bytes_min + bwd.bytes_min + 5 * conv2.params * 4
    # the first layer's input is the image: no input gradient, half the GEMM work of a middle conv's backward
    conv1 = network.layer("conv1")
    assert conv1.cost("backward", 1).gemm_flops == conv1.cost("forward", 1).gemm_flops
    assert conv2.cost("backward", 1).gemm_flops == 2 * conv2.cost("forward", 1).gemm_flops


def test_network_forward_excludes_the_loss_and_training_includes_it():
    network = build_network("owt")
    assert "loss" not in [s.name for s in network.layers_for("forward")]
    assert network.layers_for("train_step")[-1].name == "loss"


def test_activation_is_a_parameter_of_the_network():
    network = build_network("alexnet2012", activation="tanh")
    acts = [s for s in network.layers if s.kind == "activation"]
    assert [s.name for s in acts][:2] == ["tanh1", "tanh2"]
    assert {s.function for s in acts} == {"tanh"}


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "vgg"}, "unknown variant"),
    ({"activation": "gelu"}, "unknown activation"),
    ({"input_size": 32}, "too small"),
])
def test_bad_network_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_network(**kwargs)


def test_layer_table_has_a_total_row():
    rows = layer_table(build_network("alexnet2012"), batch=128)
    assert rows[-1]["layer"] == "total"
    assert rows[-1]["params"] == 60_965_224
    assert rows[-1]["forward_flops"] == sum(r["forward_flops"] for r in rows[:-1] if r["kind"] != "cross_entropy")
