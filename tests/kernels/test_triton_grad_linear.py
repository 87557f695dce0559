"""linear backward (with the fused bias, activation and dropout) against torch autograd in float64."""
import importlib

import pytest
import torch
import torch.nn.functional as F

import perfkit.kernels as K
from triton_kernel_helpers import ACTS, DTYPES, FP16, FP32, GRAD_TOL, assert_grads_close, leaves, randn, ref_leaves

pytestmark = pytest.mark.usefixtures("ieee_fp32")
linear_module = importlib.import_module("perfkit.kernels.linear")

# The forward tests' shapes (batch, in, out): batch 1 and 3, sizes no multiple of a block, a K over several K-steps,
# a batch over one M-tile.
SHAPES = [(1, 7, 5), (3, 100, 37), (3, 300, 129), (67, 45, 130)]


def _mask(shape, p, seed, device):
    """The kept elements of a (batch, out) output for (p, seed): dropout of ones (the fused epilogue's mask, as the
    forward tests establish)."""
    return K.dropout(torch.ones(shape, device=device), p, seed=seed) != 0


def _check(x, w, b, activation=None, dropout_p=0.0, seed=0, tol=GRAD_TOL[torch.float32]):
    xg, wg, bg = leaves(x, w, b)
    y = K.linear(xg, wg, bg, activation=activation, dropout_p=dropout_p, dropout_seed=seed)
    dy = torch.randn(y.shape).to(y.device, y.dtype)
    y.backward(dy)
    xr, wr, br = ref_leaves(x, w, b)
    yr = ACTS[activation](F.linear(xr.flatten(1), wr, br))
    if dropout_p > 0:
        yr = yr * _mask(y.shape, dropout_p, seed, y.device).cpu() / (1 - dropout_p)
    yr.backward(dy.cpu().double())
    assert_grads_close([xg.grad, wg.grad, bg.grad if b is not None else None],
                       [xr.grad, wr.grad, br.grad if b is not None else None], tol, ["input", "weight", "bias"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gradients_match_torch(shape, dtype, device):
    n, k, out = shape
    x = randn(n, k, dtype=dtype, device=device)
    w = randn(out, k, dtype=dtype, device=device, scale=k**-0.5)
    b = randn(out, dtype=dtype, device=device)
    _check(x, w, b, tol=GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", [FP32, FP16])
@pytest.mark.parametrize("dropout_p", [0.0, 0.5, 0.3], ids=["no-dropout", "p0.5", "p0.3"])
@pytest.mark.parametrize("activation", list(ACTS))
def test_fused_activation_and_dropout_backward(activation, dropout_p, dtype, device):
    # The mask is regenerated from the seed and act' comes from the saved output (divided by the dropout scale where
    # kept); the reference is the unfused torch chain with the same mask.
    x = randn(67, 45, dtype=dtype, device=device)
    w = randn(130, 45, dtype=dtype, device=device, scale=0.2)
    b = randn(130, dtype=dtype, device=device)
    _check(x, w, b, activation, dropout_p, seed=2024, tol=GRAD_TOL[dtype])


def test_dropout_p1_gives_zero_gradients(device):
    x, w = leaves(randn(3, 10, device=device), randn(5, 10, device=device))
    K.linear(x, w, activation="tanh", dropout_p=1.0, dropout_seed=3).sum().backward()
    assert not x.grad.any() and not w.grad.any()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_4d_input_gradient_has_the_input_shape(channels_last, device):
    # fc6 after pool5: the (N, C, H, W) input is flattened in NCHW order; its gradient comes back (N, C, H, W).
    x = randn(3, 5, 3, 3, device=device, channels_last=channels_last)
    w = randn(11, 45, device=device)
    b = randn(11, device=device)
    _check(x, w, b, "relu")


def test_no_bias_and_frozen_weight(device):
    x, w = randn(3, 100, device=device), randn(37, 100, device=device, scale=0.1)
    (xg,) = leaves(x)
    K.linear(xg, w, activation="relu").sum().backward()  # the weight needs no gradient: only dx is computed
    (xr,) = ref_leaves(x)
    torch.relu(F.linear(xr, w.cpu().double())).sum().backward()
    assert_grads_close([xg.grad], [xr.grad], 1e-5, ["input"])
    _check(x, w, None, "tanh")


@pytest.mark.parametrize("split_k", [2, 3])
def test_split_k_in_the_backward(split_k, device, monkeypatch):
    # dx of fc6/fc7 at batch <= 128 is a short deep GEMM: on a GPU it takes the split-K path; force it here.
    monkeypatch.setattr(linear_module, "choose_split_k", lambda M, N, K, device: split_k)
    x = randn(3, 300, device=device)
    w = randn(129, 300, device=device, scale=0.06)
    b = randn(129, device=device)
    _check(x, w, b, "relu", dropout_p=0.5, seed=9)
