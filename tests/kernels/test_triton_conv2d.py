"""conv2d: the implicit GEMM against torch.nn.functional.conv2d computed in float64."""
import pytest
import torch
import torch.nn.functional as F

import perfkit.kernels as K
from triton_kernel_helpers import ACTS, CONV_CASES, DTYPES, GEMM_TOL, conv_inputs, needs_gpu, randn, ref, rel_err

pytestmark = pytest.mark.usefixtures("ieee_fp32")

CASES = CONV_CASES  # every case runs in NCHW and in channels_last


def _make(case, dtype=torch.float32, device="cpu", channels_last=False, bias=True):
    return conv_inputs(case, dtype, device, channels_last, bias)


def _reference(x, w, b, activation=None, **conv_args):
    return ACTS[activation](F.conv2d(ref(x), ref(w), ref(b), **conv_args))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, channels_last, device):
    x, w, b, args = _make(CASES[name], device=device, channels_last=channels_last)
    y = K.conv2d(x, w, b, **args)
    expected = _reference(x, w, b, **args)
    assert y.shape == expected.shape and y.dtype == x.dtype
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt), "the output keeps the input's memory format"
    assert rel_err(y, expected) < GEMM_TOL[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["3x3 s1 p1 C5", "conv2-like 5x5 p2 g2 Cg24"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_dtypes(name, channels_last, dtype, device):
    x, w, b, args = _make(CASES[name], dtype=dtype, device=device, channels_last=channels_last)
    y = K.conv2d(x, w, b, **args)
    assert y.dtype == dtype
    assert rel_err(y, _reference(x, w, b, **args)) < GEMM_TOL[dtype]


@pytest.mark.parametrize("activation", list(ACTS))
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", ["3x3 s2 p0 g4 Cg2", "3x3 s2 p1 g4 Cg16"])
def test_fused_bias_and_activation(name, activation, with_bias, device):
    x, w, b, args = _make(CASES[name], device=device, bias=with_bias)
    y = K.conv2d(x, w, b, activation=activation, **args)
    assert rel_err(y, _reference(x, w, b, activation, **args)) < GEMM_TOL[torch.float32]


def test_non_dense_input_and_weight(device):
    x = randn(3, 5, 15, 15, device=device)[:, :, 1:-1, 2:]  # a strided window of a larger map
    w = randn(7, 5, 3, 3, device=device).transpose(2, 3)  # neither NCHW- nor channels_last-contiguous
    y = K.conv2d(x, w, padding=1)
    assert rel_err(y, _reference(x, w, None, padding=1)) < 1e-5


# AlexNet's conv layers (the paper's channels and groups) at batch 1, full spatial size.
ALEXNET = {
    "conv1": ((1, 3, 224, 224), (96, 3, 11, 11), dict(stride=4, padding=2)),
    "conv2": ((1, 96, 27, 27), (256, 48, 5, 5), dict(padding=2, groups=2)),
    "conv3": ((1, 256, 13, 13), (384, 256, 3, 3), dict(padding=1)),
    "conv4": ((1, 384, 13, 13), (384, 192, 3, 3), dict(padding=1, groups=2)),
    "conv5": ((1, 384, 13, 13), (256, 192, 3, 3), dict(padding=1, groups=2)),
}


@pytest.mark.slow
@pytest.mark.parametrize("layer", list(ALEXNET))
def test_alexnet_layers(layer, device):
    x_shape, w_shape, args = ALEXNET[layer]
    x = randn(*x_shape, device=device, channels_last=layer != "conv1")
    w = randn(*w_shape, device=device, scale=(w_shape[1] * w_shape[2] * w_shape[3]) ** -0.5)
    b = randn(w_shape[0], device=device)
    y = K.conv2d(x, w, b, activation="relu", **args)
    assert rel_err(y, _reference(x, w, b, "relu", **args)) < GEMM_TOL[torch.float32]


@needs_gpu
def test_float32_uses_tf32_only_when_torch_allows_it():
    from triton_kernel_helpers import fp32_precision

    x, w, b, args = _make((8, 64, 27, 27, 128, 3, 3, 1, 1, 1), device="cuda", channels_last=True)
    expected = _reference(x, w, b, **args)
    with fp32_precision(matmul="ieee", conv="ieee"):
        ieee = rel_err(K.conv2d(x, w, b, **args), expected)
    with fp32_precision(matmul="ieee", conv="tf32"):
        tf32 = rel_err(K.conv2d(x, w, b, **args), expected)
    assert ieee < 1e-5
    assert 1e-5 < tf32 < 5e-3
