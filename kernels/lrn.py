"""Local response normalisation across channels, standalone and fused with the max-pool that follows it in AlexNet.

torch.nn.functional.local_response_norm computes, for channel c,

    b_c = x_c / (k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x_j^2) ** beta

with channels outside [0, C) counting as zeros (the window is zero-padded, and the mean divides by size regardless).
A program owns a BLOCK_C x BLOCK_Q block of (channel, pixel) values of one image and sums the window with ``size``
shifted loads of the same block; the shifted loads re-read the neighbours' lines from L1/L2, so DRAM sees about one
read of the input. ``pow`` is exp2(-beta * log2(.)), which stays within the interpreter's core ops.

The fused ``lrn_max_pool2d`` evaluates the LRN at every tap of each pooling window and keeps the maximum, so the LRN
output never reaches memory: one read of the input and one write of the pooled output, instead of a write and a read
of the full-size LRN output in between (3.25 to 1.25 input-sizes of traffic for 3x3 stride-2 pooling).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common
from .pool import pool_configs, pool_geometry, tile_of_program


@triton.jit
def lrn_at(base, offs_c, C, sxc, pix, pix_ok, alpha_over_n, beta, k,
           SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr):
    """LRN of the BLOCK_C x BLOCK_Q block at channels ``offs_c`` and pixel offsets ``pix`` (elements from ``base``),
    in float32. Lanes with ``pix_ok`` false or a channel >= C come out as 0."""
    sq_sum = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
    x = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
    for d in tl.static_range(SIZE):
        cc = offs_c + (d - BEFORE)
        ok = (cc >= 0) & (cc < C)
        v = tl.load(base + cc[:, None] * sxc + pix[None, :], mask=ok[:, None] & pix_ok[None, :], other=0.0)
        v = v.to(tl.float32)
        sq_sum += v * v
        if d == BEFORE:  # the window always holds its own channel: reuse that load
            x = v
    return x * tl.exp2(-beta * tl.log2(k + alpha_over_n * sq_sum))


@triton.autotune(configs=pool_configs(), key=["C", "Q", "sxc", "SIZE"])
@triton.jit
def _lrn_kernel(
    x_ptr, y_ptr, C, Q,
    sxn, sxc, sxq, syn, syc, syq,
    alpha_over_n, beta, k,
    SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    # Q: pixels per channel, laid out densely (stride sxq) in both NCHW and channels_last.
    n, offs_c, offs_q = tile_of_program(Q, C, BLOCK_Q, BLOCK_C)
    q_ok = offs_q < Q
    base = x_ptr + n.to(tl.int64) * sxn
    y = lrn_at(base, offs_c, C, sxc, offs_q * sxq, q_ok, alpha_over_n, beta, k, SIZE, BEFORE, BLOCK_C, BLOCK_Q)
    y_ptrs = y_ptr + n.to(tl.int64) * syn + offs_c[:, None] * syc + (offs_q * syq)[None, :]
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=(offs_c < C)[:, None] & q_ok[None, :])


@triton.autotune(configs=pool_configs(), key=["C", "OH", "OW", "sxc", "SIZE", "KH", "KW"])
@triton.jit
def _lrn_max_pool2d_kernel(
    x_ptr, y_ptr,
    C, H, W, OH, OW,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    stride_h, stride_w, pad_h, pad_w,
    alpha_over_n, beta, k,
    SIZE: tl.constexpr, BEFORE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    n, offs_c, offs_q = tile_of_program(OH * OW, C, BLOCK_Q, BLOCK_C)
    c_ok = offs_c < C
    q_ok = offs_q < OH * OW
    oh = offs_q // OW
    ow = offs_q % OW
    base = x_ptr + n.to(tl.int64) * sxn
    acc = tl.full((BLOCK_C, BLOCK_Q), float("-inf"), tl.float32)
    for kh in tl.static_range(KH):
        ih = oh * stride_h - pad_h + kh
        for kw in tl.static_range(KW):
            iw = ow * stride_w - pad_w + kw
            ok = q_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            v = lrn_at(base, offs_c, C, sxc, ih * sxh + iw * sxw, ok, alpha_over_n, beta, k,
                       SIZE, BEFORE, BLOCK_C, BLOCK_Q)
            # Taps in the padding are -inf for the max, not the LRN of a zero.
            v = tl.where(ok[None, :], v, float("-inf"))
            acc = tl.maximum(acc, v, propagate_nan=tl.PropagateNan.ALL)
    y_ptrs = y_ptr + n.to(tl.int64) * syn + offs_c[:, None] * syc + (oh * syh + ow * syw)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])


def _check_lrn_args(size, alpha, beta, k):
    size = _common.check_int("size", size, minimum=1)
    return size, _common.check_float("alpha", alpha), _common.check_float("beta", beta), _common.check_float("k", k)


def local_response_norm(input: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """``torch.nn.functional.local_response_norm(input, size, alpha, beta, k)``: normalisation across channels.

    input: (N, C, *) with 1 to 3 trailing dims (4-D NCHW or channels_last keeps its format; other layouts are made
    contiguous); float32, float16 or bfloat16, computed in float32. size: window in channels (int >= 1), centred as
    torch centres it (size // 2 before, (size - 1) // 2 after, zeros beyond the edges); alpha is divided by size.
    Returns a tensor of the input's shape, dtype and memory format.
    """
    _common.check_tensor("input", input, ndim=(3, 4, 5))
    size, alpha, beta, k = _check_lrn_args(size, alpha, beta, k)
    if input.dim() == 4:
        x, fmt = _common.dense_format(input)
    else:
        x, fmt = input.contiguous(), torch.contiguous_format
    n_batch, c = x.shape[:2]
    q = x[0, 0].numel() if x.numel() else 0
    _common.check_int32_extent("one input image", c * q)
    y = torch.empty_like(x, memory_format=fmt)
    if y.numel() == 0:
        return y
    # Pixels of one channel are equally spaced in a dense NCHW or channels_last tensor: the last dim's stride.
    sxq, syq = x.stride(-1), y.stride(-1)

    def grid(meta):
        return (triton.cdiv(q, meta["BLOCK_Q"]) * triton.cdiv(c, meta["BLOCK_C"]) * n_batch,)

    _lrn_kernel[grid](
        x, y, c, q, x.stride(0), x.stride(1), sxq, y.stride(0), y.stride(1), syq,
        alpha / size, beta, k, SIZE=size, BEFORE=size // 2,
    )
    return y


def lrn_max_pool2d(
    input: torch.Tensor,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    kernel_size=3,
    stride=2,
    padding=0,
) -> torch.Tensor:
    """``max_pool2d(local_response_norm(input, size, alpha, beta, k), kernel_size, stride, padding)`` in one kernel
    that never writes the LRN output (AlexNet's norm1/pool1 and norm2/pool2: size 5, 3x3 windows, stride 2).

    input: (N, C, H, W), float32, float16 or bfloat16, NCHW or channels_last. Arguments as in
    ``local_response_norm`` and ``max_pool2d`` (stride None means kernel_size). The LRN is kept in float32 up to the
    max, then rounded once to the input dtype. Returns (N, C, OH, OW) in the input's dtype and memory format.
    """
    _common.check_tensor("input", input, ndim=4)
    size, alpha, beta, k = _check_lrn_args(size, alpha, beta, k)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = pool_geometry(input.shape, kernel_size, stride, padding)
    n_batch, c, h, w = input.shape
    _common.check_int32_extent("one input image", c * h * w)
    x, fmt = _common.dense_format(input)
    y = torch.empty((n_batch, c, oh, ow), dtype=input.dtype, device=input.device, memory_format=fmt)
    if y.numel() == 0:
        return y

    def grid(meta):
        return (triton.cdiv(oh * ow, meta["BLOCK_Q"]) * triton.cdiv(c, meta["BLOCK_C"]) * n_batch,)

    _lrn_max_pool2d_kernel[grid](
        x, y, c, h, w, oh, ow, *x.stride(), *y.stride(), sh, sw, ph, pw,
        alpha / size, beta, k, SIZE=size, BEFORE=size // 2, KH=kh, KW=kw,
    )
    return y
