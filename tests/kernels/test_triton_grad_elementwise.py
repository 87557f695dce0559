"""Backward of the standalone activations, dropout and the fused softmax cross-entropy, against torch autograd."""
import pytest
import torch
import torch.nn.functional as F

import perfkit.kernels as K
from triton_kernel_helpers import DTYPES, ELEMENTWISE_TOL, assert_grads_close, leaves, randn, ref_leaves

OPS = [
    pytest.param(K.relu, torch.relu, id="relu"),
    pytest.param(K.tanh, torch.tanh, id="tanh"),
    pytest.param(K.sigmoid, torch.sigmoid, id="sigmoid"),
]
SHAPES = [(1,), (4097,), (3, 5, 13, 13), (1, 96, 27, 27)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op, torch_op", OPS)
def test_activation_gradients(op, torch_op, shape, dtype, device):
    # The derivative comes from the saved output (rounded to the dtype), as torch's own backward computes it.
    x = randn(*shape, dtype=dtype, device=device, scale=3.0)
    (xg,) = leaves(x)
    y = op(xg)
    dy = randn(*shape, dtype=dtype, device=device)
    y.backward(dy)
    (xr,) = ref_leaves(x)
    torch_op(xr).backward(dy.cpu().double())
    assert xg.grad.dtype == dtype
    assert_grads_close([xg.grad], [xr.grad], 2 * ELEMENTWISE_TOL[dtype], ["input"])


@pytest.mark.parametrize("op, torch_op", OPS)
def test_activation_gradient_in_another_layout(op, torch_op, device):
    x = randn(3, 5, 13, 13, device=device, channels_last=True)
    (xg,) = leaves(x)
    y = op(xg)
    dy = randn(3, 5, 13, 13, device=device)  # NCHW gradient for a channels_last output
    y.backward(dy)
    (xr,) = ref_leaves(x)
    torch_op(xr).backward(dy.cpu().double())
    assert xg.grad.is_contiguous(memory_format=torch.channels_last)
    assert_grads_close([xg.grad], [xr.grad], 1e-5, ["input"])


def test_relu_gradient_is_zero_where_the_output_is_zero(device):
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], device=device, requires_grad=True)
    K.relu(x).backward(torch.ones(5, device=device))
    assert torch.equal(x.grad.cpu(), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_dropout_backward_replays_the_mask(p, channels_last, device):
    x = randn(3, 5, 13, 13, device=device, channels_last=channels_last)
    (xg,) = leaves(x)
    y = K.dropout(xg, p, seed=77)
    dy = randn(3, 5, 13, 13, device=device)  # NCHW, whatever the output's layout
    y.backward(dy)
    kept = y.detach() != 0  # randn inputs are never 0: a zero is a dropped element
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)
    expected = torch.where(kept, dy * scale.to(device), torch.zeros_like(dy))
    assert torch.equal(xg.grad, expected)
    assert 0.3 < kept.float().mean().item() < 0.8


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_backward_dtypes(dtype, device):
    x = randn(4099, dtype=dtype, device=device)
    (xg,) = leaves(x)
    y = K.dropout(xg, 0.5, seed=5)
    dy = randn(4099, dtype=dtype, device=device)
    y.backward(dy)
    assert torch.equal(xg.grad, torch.where(y.detach() != 0, 2 * dy, torch.zeros_like(dy)))


def test_dropout_p1_and_eval_gradients(device):
    x = randn(3, 7, device=device).requires_grad_()
    K.dropout(x, 1.0, seed=1).sum().backward()
    assert x.grad is not None and not x.grad.any()
    x.grad = None
    K.dropout(x, 0.5, training=False).sum().backward()  # the identity: the gradient passes unchanged
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10), (3, 1000), (5, 3001)], ids=str)
def test_cross_entropy_gradient(shape, dtype, device):
    n, c = shape
    logits = randn(n, c, dtype=dtype, device=device, scale=3.0)
    target = torch.randint(0, c, (n,), device=device)
    (lg,) = leaves(logits)
    loss = K.cross_entropy(lg, target)
    (3.0 * loss).backward()  # an incoming gradient other than 1
    (lr,) = ref_leaves(logits)
    (3.0 * F.cross_entropy(lr, target.cpu())).backward()
    assert lg.grad.dtype == dtype
    assert_grads_close([lg.grad], [lr.grad], 2 * ELEMENTWISE_TOL[dtype], ["logits"])


def test_cross_entropy_gradient_of_strided_logits(device):
    logits = randn(1000, 3, device=device).t()  # (3, 1000), column-major storage
    target = torch.randint(0, 1000, (3,), device=device)
    (lg,) = leaves(logits)
    K.cross_entropy(lg, target).backward()
    (lr,) = ref_leaves(logits)
    F.cross_entropy(lr, target.cpu()).backward()
    assert_grads_close([lg.grad], [lr.grad], 1e-5, ["logits"])


def test_cross_entropy_gradient_of_large_logits_is_finite(device):
    logits = randn(4, 1000, device=device, scale=300.0)
    target = torch.randint(0, 1000, (4,), device=device)
    (lg,) = leaves(logits)
    K.cross_entropy(lg, target).backward()
    (lr,) = ref_leaves(logits)
    F.cross_entropy(lr, target.cpu()).backward()
    assert torch.isfinite(lg.grad).all()
    # softmax = exp(x - lse) with |x| ~ 1000: the float32 rounding of lse (ulp 6e-5) is a 6e-5 relative error in the
    # softmax whoever computes it in float32; the bound is that, not the float32 epsilon.
    assert_grads_close([lg.grad], [lr.grad], 1e-4, ["logits"])
