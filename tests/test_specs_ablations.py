"""Ablated variants, layer spans and the Figure 1 network: names, shapes and shared parameters."""
import pytest
import torch

from perfkit.model import AlexNetModule, TorchOps, init_parameters
from perfkit.specs import ABLATIONS, VARIANTS, build_cifar4, build_network, parse_variant, variant_name


def test_ablations_are_named_by_suffix_in_a_canonical_order():
    assert variant_name("alexnet2012", without=("lrn",)) == "alexnet2012-nolrn"
    assert variant_name("alexnet2012", without=("dropout", "lrn"), pooling="nonoverlapping") == \
        "alexnet2012-nolrn-nodropout-pool2x2"
    assert parse_variant("alexnet2012-pool2x2-nolrn") == ("alexnet2012", ("nolrn", "pool2x2"))
    assert build_network("alexnet2012-pool2x2-nolrn").variant == "alexnet2012-nolrn-pool2x2"
    assert build_network("alexnet2012", without=("dropout",)).variant == "alexnet2012-nodropout"
    assert build_network("alexnet2012").variant == "alexnet2012"  # the variants themselves are untouched
    assert set(ABLATIONS) == {"nolrn", "nodropout", "pool2x2"}


@pytest.mark.parametrize("name, message", [("alexnet2012-nobias", "unknown ablation"), ("vgg-nolrn", "unknown variant")])
def test_bad_ablations_are_named(name, message):
    with pytest.raises(ValueError, match=message):
        build_network(name)
    with pytest.raises(ValueError, match="cannot remove"):
        build_network("alexnet2012", without=("relu",))
    with pytest.raises(ValueError, match="unknown pooling"):
        build_network("alexnet2012", pooling="average")


def test_ablations_remove_or_replace_only_their_layers():
    full = build_network("alexnet2012")
    assert [s.name for s in build_network("alexnet2012-nolrn").layers] == \
        [n for n in full.layer_names if not n.startswith("lrn")]
    assert [s.name for s in build_network("alexnet2012-nodropout").layers] == \
        [n for n in full.layer_names if not n.startswith("drop")]
    pools = [s for s in build_network("alexnet2012-pool2x2").layers if s.kind == "maxpool"]
    assert [(s.kernel_size, s.stride) for s in pools] == [(2, 2)] * 3
    # non-overlapping 2x2 stride 2 keeps the paper's 55 -> 27 -> 13 -> 6
    assert [s.out_shape[1] for s in pools] == [27, 13, 6]
    assert [s.out_shape for s in pools] == [full.layer(s.name).out_shape for s in pools]


@pytest.mark.parametrize("name", ["alexnet2012-nolrn", "alexnet2012-nodropout", "alexnet2012-pool2x2",
                                  "alexnet2012-nolrn-nodropout-pool2x2"])
def test_ablated_networks_share_the_full_networks_parameters(name):
    full, ablated = build_network("alexnet2012"), build_network(name)
    assert ablated.params == full.params
    a, b = init_parameters(full), init_parameters(ablated)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    module = AlexNetModule(ablated.body, TorchOps, parameters=a).eval()  # the full set loads into the ablation
    with torch.no_grad():
        assert module(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_spans_are_consecutive_layers():
    net = build_network("alexnet2012", "tanh")
    assert [s.name for s in net.span("conv1+tanh1")] == ["conv1", "tanh1"]
    assert [s.name for s in net.span("fc7+tanh7+drop7")] == ["fc7", "tanh7", "drop7"]
    assert net.span("conv1") == (net.layer("conv1"),)
    with pytest.raises(KeyError, match="consecutive"):
        net.span("conv1+pool1")
    with pytest.raises(KeyError):
        net.span("conv1+relu1")  # the tanh network has no relu1


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_table_total_names_the_classes(variant):
    from perfkit.specs import layer_table

    assert layer_table(build_network(variant), 1)[-1]["out_shape"] == [1000]


def test_the_figure1_network_on_cifar10_and_on_digits():
    cifar = build_cifar4("relu")
    assert cifar.variant == "cifar4" and cifar.input_shape == (3, 32, 32) and cifar.num_classes == 10
    convs = [s for s in cifar.layers if s.kind == "conv"]
    assert [(s.out_channels, s.kernel_size, s.padding) for s in convs] == [(32, 5, 2), (32, 5, 2), (64, 5, 2)]
    assert [s.out_shape[1] for s in cifar.layers if s.kind == "maxpool"] == [16, 8, 4]  # cuda-convnet's sizes
    assert [s.kind for s in cifar.layers if s.params] == ["conv", "conv", "conv", "linear"]  # four layers
    assert cifar.layer("fc4").in_features == 64 * 4 * 4
    digits = build_cifar4("tanh", input_size=8, in_channels=1)
    assert [s.out_shape[1] for s in digits.layers if s.kind == "maxpool"] == [4, 2, 1]
    assert [s.name for s in digits.layers if s.kind == "activation"] == ["tanh1", "tanh2", "tanh3"]
    # the parameters of one activation fit every other: the convergence runs all start from the same weights
    a, b = init_parameters(digits), init_parameters(build_cifar4("relu", 8, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    module = AlexNetModule(digits.body, TorchOps, parameters=a)
    assert module(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert sum(p.numel() for p in module.parameters()) == digits.params
