"""Backward of local_response_norm, max_pool2d and the fused lrn_max_pool2d, against torch autograd in float64."""
import pytest
import torch
import torch.nn.functional as F

import perfkit.kernels as K
from triton_kernel_helpers import DTYPES, ELEMENTWISE_TOL, assert_grads_close, leaves, randn, ref_leaves

FORMATS = [pytest.param(False, id="nchw"), pytest.param(True, id="channels_last")]


def _grads(op, torch_op, x, dy_format=None):
    """The input gradient of ``op`` (Triton) and of ``torch_op`` (float64 reference) for one random dy."""
    (xg,) = leaves(x)
    y = op(xg)
    dy = torch.randn(y.shape).to(y.device, y.dtype)
    if dy_format is not None:
        dy = dy.contiguous(memory_format=dy_format)
    y.backward(dy)
    (xr,) = ref_leaves(x)
    torch_op(xr).backward(dy.cpu().double())
    return xg, xr


# The forward tests' cases: (shape, size, alpha, beta, k); a large alpha makes the cross-channel term matter.
LRN_CASES = {
    "odd C, n=5": ((3, 5, 13, 13), 5, 1.0, 0.75, 2.0),
    "even n=4": ((3, 7, 13, 13), 4, 1.0, 0.75, 1.0),
    "even n=2, C=3": ((1, 3, 31, 31), 2, 2.0, 0.5, 1.0),
    "n=1": ((3, 5, 13, 13), 1, 1.0, 0.75, 1.0),
    "window wider than C": ((1, 5, 13, 13), 12, 1.0, 0.75, 1.0),
    "48 channels, beta=1": ((3, 48, 13, 13), 5, 0.5, 1.0, 2.0),
}


@pytest.mark.parametrize("channels_last", FORMATS)
@pytest.mark.parametrize("name", list(LRN_CASES))
def test_lrn_gradient(name, channels_last, device):
    shape, size, alpha, beta, k = LRN_CASES[name]
    x = randn(*shape, device=device, scale=2.0, channels_last=channels_last)
    xg, xr = _grads(lambda t: K.local_response_norm(t, size, alpha=alpha, beta=beta, k=k),
                    lambda t: F.local_response_norm(t, size, alpha=alpha, beta=beta, k=k), x)
    assert xg.grad.stride() == xg.stride()
    assert_grads_close([xg.grad], [xr.grad], 1e-5, ["input"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_lrn_gradient_dtypes(dtype, device):
    x = randn(3, 5, 13, 13, dtype=dtype, device=device, scale=2.0, channels_last=True)
    xg, xr = _grads(lambda t: K.local_response_norm(t, 3, alpha=1.0), lambda t: F.local_response_norm(t, 3, alpha=1.0),
                    x, dy_format=torch.contiguous_format)
    assert_grads_close([xg.grad], [xr.grad], 2 * ELEMENTWISE_TOL[dtype], ["input"])


@pytest.mark.parametrize("shape", [(3, 5, 31), (1, 7, 3, 4, 5)], ids=["3d", "5d"])
def test_lrn_gradient_other_ranks(shape, device):
    x = randn(*shape, device=device)
    xg, xr = _grads(lambda t: K.local_response_norm(t, 3, alpha=1.0), lambda t: F.local_response_norm(t, 3, alpha=1.0),
                    x)
    assert_grads_close([xg.grad], [xr.grad], 1e-5, ["input"])


# (shape, kernel_size, stride, padding)
POOL_CASES = {
    "3x3 s2 C5 13x13": ((3, 5, 13, 13), 3, 2, 0),
    "3x3 s2 p1": ((3, 5, 13, 13), 3, 2, 1),
    "2x2 default stride": ((1, 3, 31, 31), 2, None, 0),
    "rect (3,2) s(2,1) p(1,0)": ((3, 5, 27, 13), (3, 2), (2, 1), (1, 0)),
    "1x1 s3 (pixels in no window)": ((1, 5, 13, 13), 1, 3, 0),
    "5x5 s4 p2": ((3, 48, 31, 31), 5, 4, 2),
    "3x3 s1 (9 windows per pixel)": ((1, 96, 13, 13), 3, 1, 1),
}


@pytest.mark.parametrize("channels_last", FORMATS)
@pytest.mark.parametrize("name", list(POOL_CASES))
def test_max_pool_gradient(name, channels_last, device):
    shape, kernel_size, stride, padding = POOL_CASES[name]
    x = randn(*shape, device=device, channels_last=channels_last)
    xg, xr = _grads(lambda t: K.max_pool2d(t, kernel_size, stride, padding),
                    lambda t: F.max_pool2d(t, kernel_size, stride, padding), x)
    assert xg.grad.stride() == xg.stride()
    assert_grads_close([xg.grad], [xr.grad], 1e-6, ["input"])  # sums of at most a few dy: nearly exact


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_gradient_dtypes(dtype, device):
    x = randn(3, 5, 13, 13, dtype=dtype, device=device, channels_last=True)
    xg, xr = _grads(lambda t: K.max_pool2d(t, 3, 2), lambda t: F.max_pool2d(t, 3, 2), x)
    assert_grads_close([xg.grad], [xr.grad], 2 * ELEMENTWISE_TOL[dtype], ["input"])


def test_max_pool_ties_go_to_the_first_tap_as_in_torch(device):
    # After a ReLU whole windows are 0: torch sends the gradient to the window's first (row-major) element.
    x = torch.relu(randn(2, 4, 9, 9, device=device) - 1.0)
    assert (x == 0).float().mean() > 0.7
    xg, xr = _grads(lambda t: K.max_pool2d(t, 3, 2), lambda t: F.max_pool2d(t, 3, 2), x)
    # a wrong tap would move a whole dy; the float32 sums of overlapping windows differ from float64 by an ulp
    assert_grads_close([xg.grad], [xr.grad], 1e-6, ["input"])


def test_max_pool_saves_indices_only_for_a_gradient(device):
    # Inference (no_grad, or an input that needs no gradient) writes no index tensor: nothing is kept by autograd.
    x = randn(1, 3, 13, 13, device=device)
    y = K.max_pool2d(x, 3, 2)
    assert y.grad_fn is None
    (xg,) = leaves(x)
    y = K.max_pool2d(xg, 3, 2)
    (index,) = y.grad_fn.saved_tensors
    assert index.dtype == torch.int8 and index.shape == y.shape


# (shape, size, alpha, beta, k, kernel_size, stride, padding)
FUSED_CASES = {
    "stride None = kernel_size": ((3, 5, 13, 13), 3, 1.0, 0.75, 2.0, 2, None, 0),
    "C5 13x13 strong norm": ((3, 5, 13, 13), 5, 1.0, 0.75, 2.0, 3, 2, 0),
    "even size, padding 1": ((3, 7, 13, 13), 4, 1.0, 0.75, 1.0, 3, 2, 1),
    "rect window, stride (1,2)": ((1, 5, 27, 13), 3, 2.0, 0.5, 1.0, (2, 3), (1, 2), (1, 1)),
    "48 channels, paper's LRN": ((1, 48, 27, 27), 5, 1e-4 * 5, 0.75, 2.0, 3, 2, 0),
}


@pytest.mark.parametrize("channels_last", FORMATS)
@pytest.mark.parametrize("name", list(FUSED_CASES))
def test_fused_lrn_max_pool_gradient_matches_chain(name, channels_last, device):
    shape, size, alpha, beta, k, kernel_size, stride, padding = FUSED_CASES[name]
    x = randn(*shape, device=device, scale=2.0, channels_last=channels_last) - 1.0
    xg, xr = _grads(
        lambda t: K.lrn_max_pool2d(t, size, alpha=alpha, beta=beta, k=k, kernel_size=kernel_size, stride=stride,
                                   padding=padding),
        lambda t: F.max_pool2d(F.local_response_norm(t, size, alpha=alpha, beta=beta, k=k), kernel_size, stride,
                               padding), x)
    assert xg.grad.stride() == xg.stride()
    assert_grads_close([xg.grad], [xr.grad], 1e-5, ["input"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_lrn_max_pool_gradient_dtypes(dtype, device):
    x = randn(3, 5, 13, 13, dtype=dtype, device=device, scale=2.0)
    xg, xr = _grads(lambda t: K.lrn_max_pool2d(t, 5, alpha=1.0, k=2.0),
                    lambda t: F.max_pool2d(F.local_response_norm(t, 5, alpha=1.0, k=2.0), 3, 2), x)
    assert_grads_close([xg.grad], [xr.grad], 2 * ELEMENTWISE_TOL[dtype], ["input"])


def test_fused_lrn_max_pool_after_relu(device):
    # AlexNet's order: conv -> ReLU -> LRN -> pool. Zeros tie in the pooling windows and the LRN of 0 is 0.
    x = torch.relu(randn(2, 8, 13, 13, device=device, scale=2.0, channels_last=True) - 0.5)
    xg, xr = _grads(lambda t: K.lrn_max_pool2d(t, 5, alpha=1.0, k=2.0),
                    lambda t: F.max_pool2d(F.local_response_norm(t, 5, alpha=1.0, k=2.0), 3, 2), x)
    assert_grads_close([xg.grad], [xr.grad], 1e-5, ["input"])
