"""Dropout: determinism per seed, the kept fraction, the scaling, and agreement with the fused linear epilogue."""
import math

import pytest
import torch

import perfkit.kernels as K
from triton_kernel_helpers import DTYPES, randn

N_ELEMENTS = 200_003  # several programs of the largest block, with a ragged tail


def _kept(y):
    return y != 0  # randn inputs are never exactly 0, so a zero is a dropped element


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_fraction_within_binomial_bounds(p, dtype, device):
    x = randn(N_ELEMENTS, dtype=dtype, device=device)
    kept = _kept(K.dropout(x, p, seed=7)).sum().item()
    mean = N_ELEMENTS * (1 - p)
    sd = math.sqrt(N_ELEMENTS * p * (1 - p))
    # 5 standard deviations: about 0.5% of n at p = 0.5, so keeping with probability p +- 0.01 would already fail.
    assert abs(kept - mean) < 5 * sd, (kept, mean, sd)


@pytest.mark.parametrize("p", [0.5, 0.75])
def test_kept_values_are_x_over_one_minus_p_exactly(p, device):
    x = randn(N_ELEMENTS, device=device)
    y = K.dropout(x, p, seed=11)
    keep = _kept(y)
    assert 0 < keep.sum() < N_ELEMENTS
    assert torch.equal(y[keep], x[keep] / (1 - p))  # exact: 1 - p is a power of two
    assert torch.equal(y[~keep], torch.zeros_like(y[~keep]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kept_values_use_float32_scale(dtype, device):
    p = 0.3
    x = randn(4099, dtype=dtype, device=device)
    y = K.dropout(x, p, seed=3)
    keep = _kept(y)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)
    expected = (x.float() * scale.to(x.device)).to(dtype)
    assert torch.equal(y[keep], expected[keep])


def test_same_seed_same_mask_different_seed_different_mask(device):
    x = randn(3, 5, 13, 13, device=device)
    a = K.dropout(x, 0.5, seed=123)
    b = K.dropout(x, 0.5, seed=123)
    c = K.dropout(x, 0.5, seed=124)
    d = K.dropout(x, 0.5, seed=2**40 + 123)  # a 64-bit seed (its low 32 bits equal the first one's)
    assert torch.equal(a, b)
    for other in (c, d):
        agree = (_kept(a) == _kept(other)).float().mean().item()
        assert 0.4 < agree < 0.6  # independent masks agree on about half the elements


def test_mask_depends_only_on_the_element_offset(device):
    x = randn(N_ELEMENTS, device=device)
    full = K.dropout(x, 0.5, seed=5)
    prefix = K.dropout(x[:10_001].clone(), 0.5, seed=5)
    assert torch.equal(full[:10_001], prefix)


def test_seed_none_follows_torch_manual_seed(device):
    x = randn(10_000, device=device)
    torch.manual_seed(42)
    a = K.dropout(x, 0.5)
    b = K.dropout(x, 0.5)
    torch.manual_seed(42)
    c = K.dropout(x, 0.5)
    assert torch.equal(a, c)
    assert not torch.equal(a, b)


def test_eval_mode_and_p0_return_input_and_p1_gives_zeros(device):
    x = randn(3, 7, device=device)
    assert K.dropout(x, 0.5, training=False) is x
    assert K.dropout(x, 0.0) is x
    y = K.dropout(x, 1.0, seed=1)
    assert y.shape == x.shape and not y.any()


def test_channels_last_keeps_format(device):
    x = randn(3, 5, 13, 13, device=device, channels_last=True)
    y = K.dropout(x, 0.5, seed=9)
    assert y.is_contiguous(memory_format=torch.channels_last)
    keep = _kept(y)
    assert 0.4 < keep.float().mean().item() < 0.6
    assert torch.equal(y[keep], 2 * x[keep])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_fused_linear_dropout_equals_linear_then_dropout(activation, dtype, device, ieee_fp32):
    x = randn(67, 45, dtype=dtype, device=device)
    w = randn(130, 45, dtype=dtype, device=device, scale=0.2)
    b = randn(130, dtype=dtype, device=device)
    fused = K.linear(x, w, b, activation=activation, dropout_p=0.4, dropout_seed=2024)
    plain = K.linear(x, w, b, activation=activation)
    chained = K.dropout(plain, 0.4, seed=2024)
    assert torch.equal(fused, chained)
    # and the mask really dropped something that the activation left non-zero
    assert ((fused == 0) & (plain != 0)).any()


def test_fused_linear_dropout_seed_none_follows_torch_manual_seed(device):
    x, w = randn(5, 20, device=device), randn(9, 20, device=device)
    torch.manual_seed(3)
    a = K.linear(x, w, dropout_p=0.5)
    torch.manual_seed(3)
    b = K.linear(x, w, dropout_p=0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, K.linear(x, w))
