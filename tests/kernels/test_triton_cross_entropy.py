"""Fused softmax cross-entropy against torch.nn.functional.cross_entropy (float64 reference)."""
import math

import pytest
import torch
import torch.nn.functional as F

import perfkit.kernels as K
from triton_kernel_helpers import DTYPES, randn, ref, rel_err

TOL = {torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}  # inputs are exact; the math is float32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10), (3, 1000), (5, 3001)], ids=str)  # 3001: several chunks, ragged tail
def test_matches_torch(shape, dtype, device):
    n, c = shape
    logits = randn(n, c, dtype=dtype, device=device, scale=3.0)
    target = torch.randint(0, c, (n,), device=device)
    loss = K.cross_entropy(logits, target)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    expected = F.cross_entropy(ref(logits), target.cpu())
    assert rel_err(loss, expected) < TOL[dtype]


def test_large_logits_are_stable(device):
    logits = randn(4, 1000, device=device, scale=300.0)  # exp() of these overflows float32 without the max shift
    target = torch.randint(0, 1000, (4,), device=device)
    loss = K.cross_entropy(logits, target)
    assert math.isfinite(loss.item())
    assert rel_err(loss, F.cross_entropy(ref(logits), target.cpu())) < 1e-5


def test_each_row_counts(device):
    # A per-row check through the mean: changing one row's target changes the loss by that row's difference / N.
    logits = randn(3, 50, device=device)
    target = torch.tensor([1, 7, 49], device=device)
    other = target.clone()
    other[2] = 0
    delta = (K.cross_entropy(logits, other) - K.cross_entropy(logits, target)).item()
    expected = (logits[2, 49] - logits[2, 0]).item() / 3
    assert abs(delta - expected) < 1e-5


def test_strided_logits(device):
    logits = randn(1000, 3, device=device).t()  # (3, 1000), column-major storage
    target = torch.randint(0, 1000, (3,), device=device)
    assert rel_err(K.cross_entropy(logits, target), F.cross_entropy(ref(logits), target.cpu())) < 1e-5


def test_out_of_range_target_gives_nan(device):
    logits = randn(2, 10, device=device)
    assert math.isnan(K.cross_entropy(logits, torch.tensor([3, 10], device=device)).item())
    assert math.isnan(K.cross_entropy(logits, torch.tensor([-100, 1], device=device)).item())
