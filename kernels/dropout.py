"""Dropout with a counter-based (Philox) mask.

The mask is a pure function of (seed, element offset): element ``i`` of the tensor's storage is kept when
``tl.rand(seed, i) >= p``. Nothing is stored for the backward pass; it can regenerate the mask from the seed. For a
contiguous tensor the offset is the row-major index, which is what the fused ``linear(..., dropout_p=...)`` epilogue
uses for its (N, out) output, so the fused and the standalone forms drop the same elements.

Backward regenerates the mask from the seed instead of storing it (no mask tensor in memory, one read of dy and one
write of dx): dx = dy * keep / (1 - p) is the forward applied to dy with the same seed, in the layout of the forward's
output so that each element's offset, hence its Philox draw, is the same.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common
from ._common import dropout_keep
from .activation import elementwise_launch, flat_view


@triton.jit(do_not_specialize=["seed"])  # a new seed every call must not compile a new binary
def _dropout_kernel(x_ptr, y_ptr, n_elements, p, scale, seed, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    keep = dropout_keep(seed, offsets, p)
    # x * (1 / (1 - p)) in float32, then rounded once to the output dtype: the same arithmetic as torch's dropout.
    y = tl.where(keep, x.to(tl.float32) * scale, 0.0)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, seed: int | None = None) -> torch.Tensor:
    """Zero each element with probability ``p`` and scale the survivors by ``1 / (1 - p)``.

    input: any shape; float32, float16 or bfloat16. ``training=False`` or ``p == 0`` returns ``input`` itself;
    ``p == 1`` returns zeros. ``seed`` (int in [0, 2**63)) fixes the mask: the same seed gives the same mask for the
    same element offsets; ``None`` draws a seed from torch's default generator (``torch.manual_seed`` reproduces it).
    Survivors equal ``float32(x) * float32(1 / (1 - p))`` rounded to the input dtype (exactly ``2 * x`` for p = 0.5).
    """
    _common.check_tensor("input", input)
    p = _common.check_probability("p", p)
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    if seed is not None:
        _common.check_seed(seed)
    if not training or p == 0.0:
        return input  # and no draw from the generator, as torch's dropout in eval mode
    seed = _common.check_seed(seed)
    return DropoutFunction.apply(input, p, seed)


def _apply_mask(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """``x`` (dense) with the mask of (seed, storage offset) applied and survivors scaled; zeros when p == 1."""
    if p == 1.0:
        return torch.zeros_like(x)
    y = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    block, num_warps = elementwise_launch()
    _dropout_kernel[(triton.cdiv(n, block),)](x, y, n, p, 1.0 / (1.0 - p), seed, BLOCK=block, num_warps=num_warps)
    return y


class DropoutFunction(torch.autograd.Function):
    """Dropout whose backward replays the forward's mask from the seed (nothing saved but the seed and the layout)."""

    @staticmethod
    def forward(ctx, input, p, seed):
        y = _apply_mask(flat_view(input), p, seed)
        ctx.p, ctx.seed = p, seed
        ctx.strides = y.stride()
        return y

    @staticmethod
    def backward(ctx, grad_output):
        dy = grad_output
        if dy.stride() != ctx.strides:
            dy = torch.empty_strided(dy.shape, ctx.strides, dtype=dy.dtype, device=dy.device).copy_(dy)
        return _apply_mask(dy, ctx.p, ctx.seed), None, None
