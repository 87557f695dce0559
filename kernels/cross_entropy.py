"""Softmax cross-entropy fused into one pass over the logits.

loss_i = logsumexp(logits_i) - logits_i[target_i]. One program per row streams the row in BLOCK_C chunks and keeps an
online log-sum-exp: a running maximum m and a running sum s of exp(x - m), rescaled by exp(m_old - m_new) whenever the
maximum grows. The softmax is never materialised and the logits are read once. The per-row losses (N floats) are
then averaged by a one-program kernel in a fixed order (deterministic; no torch reduction in the step).

Backward: d loss / d logits_ij = g / N * (softmax_ij - [j == target_i]) with g the incoming scalar gradient (read on
the device, no host sync). The forward keeps each row's log-sum-exp (N floats), so the backward is one more streaming
pass per row: softmax_ij = exp(x_ij - lse_i), no second maximum or sum.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common


def cross_entropy_launch(num_classes: int) -> tuple[int, int]:
    """(BLOCK_C, num_warps): ImageNet's 1000 classes fit one 1024-wide chunk."""
    if _common.is_interpreting():
        return 1024, 1
    block = min(4096, triton.next_power_of_2(num_classes))
    return block, 4 if block <= 1024 else 8


@triton.jit
def _cross_entropy_kernel(logits_ptr, target_ptr, loss_ptr, lse_ptr, C, stride_n, stride_c, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * stride_n
    offs = tl.arange(0, BLOCK_C).to(tl.int64)  # a transposed (N, C) view has stride_c = N: offsets up to N * C

    # The first chunk seeds the running maximum, so it is finite from the start (no -inf - -inf).
    x = tl.load(base + offs * stride_c, mask=offs < C, other=float("-inf")).to(tl.float32)
    m = tl.max(x, axis=0)
    s = tl.sum(tl.exp(x - m), axis=0)
    for c0 in range(BLOCK_C, C, BLOCK_C):
        cols = c0 + offs
        x = tl.load(base + cols * stride_c, mask=cols < C, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(s)

    target = tl.load(target_ptr + row)
    valid = (target >= 0) & (target < C)
    x_t = tl.load(base + target * stride_c, mask=valid, other=0.0).to(tl.float32)
    # An out-of-range class index poisons the mean with NaN instead of reading out of bounds.
    tl.store(loss_ptr + row, tl.where(valid, lse - x_t, float("nan")))
    tl.store(lse_ptr + row, lse)


@triton.jit
def _mean_kernel(x_ptr, out_ptr, N, BLOCK: tl.constexpr):
    """out = mean(x[:N]) in float32, one program, blocks summed in order."""
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        acc += tl.load(x_ptr + start + offs, mask=start + offs < N, other=0.0)
    tl.store(out_ptr, tl.sum(acc, axis=0) / N)


@triton.jit
def _cross_entropy_backward_kernel(logits_ptr, target_ptr, lse_ptr, grad_loss_ptr, dlogits_ptr, C, inv_n,
                                   stride_n, stride_c, stride_dn, stride_dc, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * stride_n
    dbase = dlogits_ptr + row.to(tl.int64) * stride_dn
    offs = tl.arange(0, BLOCK_C).to(tl.int64)
    lse = tl.load(lse_ptr + row)
    target = tl.load(target_ptr + row)
    valid = (target >= 0) & (target < C)
    scale = tl.load(grad_loss_ptr).to(tl.float32) * inv_n
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + offs
        x = tl.load(base + cols * stride_c, mask=cols < C, other=0.0).to(tl.float32)
        g = tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)
        g = tl.where(valid, g * scale, float("nan"))  # the forward's loss is NaN for this row: so is its gradient
        tl.store(dbase + cols * stride_dc, g.to(dlogits_ptr.dtype.element_ty), mask=cols < C)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy, ``torch.nn.functional.cross_entropy(logits, target)`` with its defaults.

    logits: (N, C), float32, float16 or bfloat16 (any strides). target: (N,) int64 class indices in [0, C), on the
    logits' device. Returns the mean loss as a 0-dim **float32** tensor whatever the logits dtype (torch returns the
    logits dtype): the log-sum-exp is computed in float32. A target outside [0, C) gives NaN (there is no
    ignore_index: -100 is out of range like any other negative index).
    """
    _common.check_tensor("logits", logits, ndim=2)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype != torch.int64:
        raise TypeError(f"target has dtype {target.dtype}; class indices must be int64")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target has shape {tuple(target.shape)}; expected ({logits.shape[0]},) for logits of shape "
                         f"{tuple(logits.shape)}")
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}; they must be on one device")
    n_rows, n_classes = logits.shape
    if n_classes == 0:
        raise ValueError("logits have no classes (C = 0)")
    return CrossEntropyFunction.apply(logits, target)


class CrossEntropyFunction(torch.autograd.Function):
    """Mean softmax cross-entropy; saves the logits, targets and per-row log-sum-exp for the backward."""

    @staticmethod
    def forward(ctx, logits, target):
        n_rows, n_classes = logits.shape
        losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        ctx.save_for_backward(logits, target, lse)
        ctx.mark_non_differentiable(target)
        if n_rows == 0:
            return losses.mean()  # NaN, as torch gives for an empty batch
        block, num_warps = cross_entropy_launch(n_classes)
        _cross_entropy_kernel[(n_rows,)](
            logits, target, losses, lse, n_classes, logits.stride(0), logits.stride(1), BLOCK_C=block,
            num_warps=num_warps,
        )
        loss = torch.empty((), dtype=torch.float32, device=logits.device)
        _mean_kernel[(1,)](losses, loss, n_rows, BLOCK=1024)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        logits, target, lse = ctx.saved_tensors
        n_rows, n_classes = logits.shape
        dlogits = torch.empty((n_rows, n_classes), dtype=logits.dtype, device=logits.device)
        if n_rows == 0:
            return dlogits, None
        block, num_warps = cross_entropy_launch(n_classes)
        _cross_entropy_backward_kernel[(n_rows,)](
            logits, target, lse, grad_loss.contiguous(), dlogits, n_classes, 1.0 / n_rows,
            logits.stride(0), logits.stride(1), dlogits.stride(0), dlogits.stride(1), BLOCK_C=block,
            num_warps=num_warps,
        )
        return dlogits, None
