"""Local response normalisation across channels, standalone and fused with the max-pool that follows it in AlexNet.

torch.nn.functional.local_response_norm computes, for channel c,

    b_c = x_c / (k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x_j^2) ** beta

with channels outside [0, C) counting as zeros (the window is zero-padded, and the mean divides by size regardless).
A program owns a BLOCK_C x BLOCK_Q block of (channel, pixel) values (its pixels run across the batch's images) and sums
the window with ``size`` shifted loads of the same block; the shifted loads re-read the neighbours' lines from L1/L2,
so DRAM sees about one read of the input. ``pow`` is exp2(-beta * log2(.)), which stays within the interpreter's core
ops.

The fused ``lrn_max_pool2d`` evaluates the LRN at every tap of each pooling window and keeps the maximum, so the LRN
output never reaches memory: one read of the input and one write of the pooled output, instead of a write and a read
of the full-size LRN output in between (3.25 to 1.25 input-sizes of traffic for 3x3 stride-2 pooling).

Backward. With d_c = k + alpha / size * sum_{j in W(c)} x_j**2 and b_c = x_c * d_c**-beta,

    dx_i = g_i * d_i**-beta - 2 * beta * alpha / size * x_i * sum_{c : i in W(c)} g_c * x_c * d_c**(-beta - 1)

where g is the gradient of the LRN output and c runs over the ``size`` channels [i - (size-1)//2, i + size//2] whose
windows hold i. Nothing is saved but the input: each program recomputes the denominators d_c of those channels from x
with shifted loads (size x size loads of x per element, served by L1/L2; DRAM sees about one read of x and of g and
one write of dx). The fused ``lrn_max_pool2d`` backward does the same with g itself gathered, on the fly, from the
pooled gradient through the winning taps the forward saved (see ``pool``): neither the LRN output nor its gradient
ever reaches memory, so one kernel reads x, the pooled dy and the one-byte indices and writes dx.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import _common
from .pool import argmax_update, index_dtype, interpreter_tile, pool_gather, pool_geometry, tile_grid, tile_of_program


def lrn_configs() -> list[triton.Config]:
    """Tiles for the LRN kernels: at most 8 (channel, pixel) elements per thread. Each element carries its LRN window
    (SIZE loads), and in the fused kernels the running max and argmax or the backward's five channel terms, so the
    pooling kernels' 16 per thread ran out of registers (255, with 300 to 1,350 B of spills in every config of the
    fused forward and backward on sm_90). 4 per thread compiles without spills for every AlexNet LRN."""

    def cfg(bc, bq, warps):
        return triton.Config({"BLOCK_C": bc, "BLOCK_Q": bq}, num_warps=warps)

    return [cfg(8, 64, 4), cfg(16, 32, 4), cfg(32, 16, 4), cfg(8, 128, 4), cfg(16, 64, 4), cfg(8, 256, 8),
            cfg(32, 64, 8)]


@triton.jit
def lrn_window(base, offs_c, C, sxc, pix, pix_ok, alpha_over_n, k,
               SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr):
    """(x, d) of the BLOCK_C x BLOCK_Q block at channels ``offs_c`` and pixel offsets ``pix`` (elements from
    ``base``), float32: the values themselves and their LRN denominators d = k + alpha / size * (window sum of x**2).
    Lanes with ``pix_ok`` false or a channel outside [0, C) have x = 0."""
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
    return x, k + alpha_over_n * sq_sum


@triton.jit
def lrn_at(base, offs_c, C, sxc, pix, pix_ok, alpha_over_n, beta, k,
           SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr):
    """LRN of the BLOCK_C x BLOCK_Q block at channels ``offs_c`` and pixel offsets ``pix`` (elements from ``base``),
    in float32. Lanes with ``pix_ok`` false or a channel >= C come out as 0."""
    x, d = lrn_window(base, offs_c, C, sxc, pix, pix_ok, alpha_over_n, k, SIZE, BEFORE, BLOCK_C, BLOCK_Q)
    return x * tl.exp2(-beta * tl.log2(d))


@_common.tuned(configs=lrn_configs(), key=["N", "C", "Q", "sxc", "SIZE"],
               interpreter_blocks=interpreter_tile(lambda a: a["N"] * a["Q"]))
@triton.jit
def _lrn_kernel(
    x_ptr, y_ptr, N, C, Q,
    sxn, sxc, sxq, syn, syc, syq,
    alpha_over_n, beta, k,
    SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    # Q: pixels per channel, laid out densely (stride sxq) in both NCHW and channels_last.
    n, offs_c, offs_q, q_ok = tile_of_program(Q, C, N, BLOCK_Q, BLOCK_C)
    y = lrn_at(x_ptr, offs_c, C, sxc, n * sxn + offs_q * sxq, q_ok, alpha_over_n, beta, k, SIZE, BEFORE,
               BLOCK_C, BLOCK_Q)
    y_ptrs = y_ptr + offs_c[:, None] * syc + (n * syn + offs_q * syq)[None, :]
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=(offs_c < C)[:, None] & q_ok[None, :])


@_common.tuned(configs=lrn_configs(), key=["N", "C", "OH", "OW", "sxc", "SIZE", "KH", "KW", "STORE_INDEX"],
               interpreter_blocks=interpreter_tile(lambda a: a["N"] * a["OH"] * a["OW"]))
@triton.jit
def _lrn_max_pool2d_kernel(
    x_ptr, y_ptr, idx_ptr,
    N, C, H, W, OH, OW,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    stride_h, stride_w, pad_h, pad_w,
    alpha_over_n, beta, k,
    SIZE: tl.constexpr, BEFORE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, STORE_INDEX: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    n, offs_c, offs_q, q_ok = tile_of_program(OH * OW, C, N, BLOCK_Q, BLOCK_C)
    c_ok = offs_c < C
    oh = offs_q // OW
    ow = offs_q % OW
    image = n * sxn
    acc = tl.full((BLOCK_C, BLOCK_Q), float("-inf"), tl.float32)
    arg = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.int32)
    found = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.int32)
    for kh in tl.static_range(KH):
        ih = oh * stride_h - pad_h + kh
        for kw in tl.static_range(KW):
            iw = ow * stride_w - pad_w + kw
            ok = q_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            v = lrn_at(x_ptr, offs_c, C, sxc, image + ih * sxh + iw * sxw, ok, alpha_over_n, beta, k,
                       SIZE, BEFORE, BLOCK_C, BLOCK_Q)
            if STORE_INDEX:
                acc, arg, found = argmax_update(acc, arg, found, v, c_ok[:, None] & ok[None, :], kh * KW + kw)
            else:
                # Taps in the padding are -inf for the max, not the LRN of a zero.
                v = tl.where(ok[None, :], v, float("-inf"))
                acc = tl.maximum(acc, v, propagate_nan=tl.PropagateNan.ALL)
    out_offsets = offs_c[:, None] * syc + (n * syn + oh * syh + ow * syw)[None, :]
    tl.store(y_ptr + out_offsets, acc.to(y_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])
    if STORE_INDEX:  # the winning tap of each window, in the output's layout
        tl.store(idx_ptr + out_offsets, arg.to(idx_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])


@_common.tuned(configs=lrn_configs(), key=["N", "C", "H", "W", "sxc", "SIZE", "FROM_POOL", "KH", "KW"],
               interpreter_blocks=interpreter_tile(lambda a: a["N"] * a["H"] * a["W"]))
@triton.jit
def _lrn_backward_kernel(
    x_ptr, dy_ptr, idx_ptr, dx_ptr,
    N, C, H, W, OH, OW,
    sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw, sgn, sgc, sgh, sgw,
    stride_h, stride_w, pad_h, pad_w,
    alpha_over_n, beta, k,
    SIZE: tl.constexpr, BEFORE: tl.constexpr, FROM_POOL: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    """dx of the LRN at a block of (channel, input pixel); g, the gradient of the LRN output, is dy itself, or with
    FROM_POOL the max-pool's gradient gathered from the pooled dy through the saved winning taps."""
    AFTER: tl.constexpr = SIZE - 1 - BEFORE
    n, offs_c, offs_q, q_ok = tile_of_program(H * W, C, N, BLOCK_Q, BLOCK_C)
    c_ok = offs_c < C
    ih = offs_q // W
    iw = offs_q % W
    pix = n * sxn + ih * sxh + iw * sxw
    acc = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
    g_own = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
    scale_own = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
    x_own = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
    for s in tl.static_range(SIZE):
        # the channels whose windows contain offs_c: offs_c - AFTER ... offs_c + BEFORE
        cc = offs_c + (s - AFTER)
        cc_ok = (cc >= 0) & (cc < C)
        x_c, d_c = lrn_window(x_ptr, cc, C, sxc, pix, q_ok, alpha_over_n, k, SIZE, BEFORE, BLOCK_C, BLOCK_Q)
        if FROM_POOL:
            g_c = pool_gather(dy_ptr, idx_ptr, n * sdn, sdc, sdh, sdw, cc, cc_ok, ih, iw, q_ok,
                              OH, OW, stride_h, stride_w, pad_h, pad_w, KH, KW, BLOCK_C, BLOCK_Q)
        else:
            g_ptrs = dy_ptr + cc[:, None] * sdc + (n * sdn + ih * sdh + iw * sdw)[None, :]
            g_c = tl.load(g_ptrs, mask=cc_ok[:, None] & q_ok[None, :], other=0.0).to(tl.float32)
        scale_c = tl.exp2(-beta * tl.log2(d_c))  # d_c ** -beta
        acc += tl.where(cc_ok[:, None], g_c * x_c * (scale_c / d_c), 0.0)
        if s == AFTER:  # cc == offs_c: this element's own terms
            g_own, scale_own, x_own = g_c, scale_c, x_c
    dx = g_own * scale_own - (2.0 * beta * alpha_over_n) * x_own * acc
    dx_ptrs = dx_ptr + offs_c[:, None] * sgc + (n * sgn + ih * sgh + iw * sgw)[None, :]
    tl.store(dx_ptrs, dx.to(dx_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])


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
    n_batch, c = input.shape[:2]
    _common.check_int32_extent("one input image", c * math.prod(input.shape[2:]))
    _common.check_int32_extent("the pixels of the batch", n_batch * math.prod(input.shape[2:]))
    return LocalResponseNormFunction.apply(input, size, alpha, beta, k)


def _lrn_backward(x, dy, index, size, alpha, beta, k, pool=None):
    """dx for the LRN at x (dense), from dy: the LRN output's gradient, or with ``pool`` = (geometry) the pooled
    gradient of lrn_max_pool2d, gathered through ``index`` (which has dy's strides)."""
    n_batch, c = x.shape[:2]
    dx = torch.empty_like(x, dtype=dy.dtype)
    if dx.numel() == 0:
        return dx
    if pool is None:
        # Every pixel of a channel is equally spaced (the last dim's stride) in x, dy (given x's layout) and dx:
        # walk them as one row of Q pixels.
        dy = _common.same_layout(dy, x)
        q = x[0, 0].numel()
        h, w, oh, ow, sh, sw, ph, pw, kh, kw = 1, q, 1, 1, 1, 1, 0, 0, 1, 1
        strides = [(t.stride(0), t.stride(1), 0, t.stride(-1)) for t in (x, dy, dx)]
        index = x  # unused
    else:
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = pool
        h, w = x.shape[2:]
        dy = _common.same_layout(dy, index)
        strides = [t.stride() for t in (x, dy, dx)]

    _lrn_backward_kernel[tile_grid(n_batch, h * w, c)](
        x, dy, index, dx, n_batch, c, h, w, oh, ow, *strides[0], *strides[1], *strides[2], sh, sw, ph, pw,
        alpha / size, beta, k, SIZE=size, BEFORE=size // 2, FROM_POOL=pool is not None, KH=kh, KW=kw,
    )
    return dx


class LocalResponseNormFunction(torch.autograd.Function):
    """LRN across channels; saves its input and recomputes the denominators in the backward."""

    @staticmethod
    def forward(ctx, input, size, alpha, beta, k):
        if input.dim() == 4:
            x, fmt = _common.dense_format(input)
        else:
            x, fmt = input.contiguous(), torch.contiguous_format
        n_batch, c = x.shape[:2]
        q = x[0, 0].numel() if x.numel() else 0
        y = torch.empty_like(x, memory_format=fmt)
        ctx.args = (size, alpha, beta, k)
        ctx.save_for_backward(x)
        if y.numel() == 0:
            return y
        # Pixels of one channel are equally spaced in a dense NCHW or channels_last tensor: the last dim's stride.
        sxq, syq = x.stride(-1), y.stride(-1)

        _lrn_kernel[tile_grid(n_batch, q, c)](
            x, y, n_batch, c, q, x.stride(0), x.stride(1), sxq, y.stride(0), y.stride(1), syq,
            alpha / size, beta, k, SIZE=size, BEFORE=size // 2,
        )
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return _lrn_backward(x, grad_output, None, *ctx.args), None, None, None, None


class LrnMaxPool2dFunction(torch.autograd.Function):
    """max_pool2d(local_response_norm(x)) in one kernel each way: the forward saves the input and (when a gradient
    is needed) the one-byte winning taps; the backward never materialises the LRN output or its gradient."""

    @staticmethod
    def forward(ctx, input, size, alpha, beta, k, geometry):
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = geometry
        n_batch, c, h, w = input.shape
        x, fmt = _common.dense_format(input)
        y = torch.empty((n_batch, c, oh, ow), dtype=input.dtype, device=input.device, memory_format=fmt)
        store_index = ctx.needs_input_grad[0]
        index = torch.empty_like(y, dtype=index_dtype(kh, kw)) if store_index else y
        if y.numel():
            _lrn_max_pool2d_kernel[tile_grid(n_batch, oh * ow, c)](
                x, y, index, n_batch, c, h, w, oh, ow, *x.stride(), *y.stride(), sh, sw, ph, pw,
                alpha / size, beta, k, SIZE=size, BEFORE=size // 2, KH=kh, KW=kw, STORE_INDEX=store_index,
            )
        if store_index:
            ctx.save_for_backward(x, index)
            ctx.args = (size, alpha, beta, k, geometry)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        x, index = ctx.saved_tensors
        size, alpha, beta, k, geometry = ctx.args
        dx = _lrn_backward(x, grad_output, index, size, alpha, beta, k, pool=geometry)
        return dx, None, None, None, None, None


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
    geometry = pool_geometry(input.shape, kernel_size, stride, padding)
    n_batch, c, h, w = input.shape
    _common.check_int32_extent("one input image", c * h * w)
    _common.check_int32_extent("the pixels of the batch (N * H * W)", n_batch * h * w)
    return LrnMaxPool2dFunction.apply(input, size, alpha, beta, k, geometry)
