"""Standalone relu / tanh / sigmoid kernels against torch."""
import pytest
import torch

import perfkit.kernels as K
from triton_kernel_helpers import DTYPES, ELEMENTWISE_TOL, randn, ref, rel_err

OPS = [
    pytest.param(K.relu, torch.relu, id="relu"),
    pytest.param(K.tanh, torch.tanh, id="tanh"),
    pytest.param(K.sigmoid, torch.sigmoid, id="sigmoid"),
]
# 1 and 4097 elements: a single lane and one past a power of two; 3x5x13x13 and 1x96x27x27: AlexNet-like maps.
SHAPES = [(1,), (4097,), (3, 5, 13, 13), (1, 96, 27, 27), (2, 8193)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op, torch_op", OPS)
def test_matches_torch(op, torch_op, shape, dtype, device):
    x = randn(*shape, dtype=dtype, device=device, scale=3.0)  # scale 3: tanh/sigmoid saturate in part of the range
    y = op(x)
    assert y.dtype == dtype and y.shape == x.shape and y.device == x.device
    assert rel_err(y, torch_op(ref(x))) < ELEMENTWISE_TOL[dtype]


@pytest.mark.parametrize("op, torch_op", OPS)
def test_channels_last_keeps_format(op, torch_op, device):
    x = randn(3, 5, 13, 13, device=device, channels_last=True)
    y = op(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, torch_op(ref(x))) < 1e-5


@pytest.mark.parametrize("op, torch_op", OPS)
def test_non_contiguous_input(op, torch_op, device):
    x = randn(31, 27, device=device).t()  # a transposed view: neither NCHW- nor row-major-contiguous storage order
    y = op(x)
    assert rel_err(y, torch_op(ref(x))) < 1e-5


def test_tanh_pointwise_accuracy_small_and_large(device):
    # The kernel's tanh switches formula at |x| = 0.2; check both sides and the saturated tails pointwise.
    x = torch.cat([torch.logspace(-8, 1.5, 400), -torch.logspace(-8, 1.5, 400)]).to(device)
    y = K.tanh(x).cpu().double()
    expected = torch.tanh(x.cpu().double())
    assert ((y - expected).abs() / expected.abs()).max().item() < 2e-6


def test_relu_keeps_nan_and_zeroes_negatives(device):
    x = torch.tensor([float("nan"), -1.5, -0.0, 0.0, 2.5], device=device)
    y = K.relu(x).cpu()
    assert torch.isnan(y[0])
    assert torch.equal(y[1:], torch.tensor([0.0, 0.0, 0.0, 2.5]))


def test_empty_tensor(device):
    y = K.sigmoid(torch.empty(0, 3, device=device))
    assert y.shape == (0, 3)
