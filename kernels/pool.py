"""2-D max pooling (AlexNet's overlapping 3x3 stride-2 windows, and any other kernel/stride/padding).

Each program owns a BLOCK_C x BLOCK_Q block of (channel, pooled pixel) outputs, its pixels running across the images
of the batch (``tile_of_program``), and takes the maximum over the KH x KW window with one masked load per tap. The
window is unrolled (KH and KW are compile-time constants).
Neighbouring windows overlap (3x3 stride 2 reads most pixels 2.25 times), but the re-reads hit L1/L2, so DRAM
traffic stays near one read of the input and one write of the output. Padding acts as -inf, as in torch.

Backward, with saved indices (not recomputation): when the input needs a gradient, the forward also writes, per pooled
output, which tap of its window won, as an int8 (KH * KW <= 127; int32 beyond): a quarter of an fp32 output's bytes.
Recomputing the argmax instead would cost a second read of the whole input, and for the fused LRN + max-pool a second
evaluation of the LRN at every tap (9 taps x 5 channel loads each); the one-byte index makes the backward read only dy
and the indices. Ties go to the first tap in row-major window order and a NaN wins its window, as in torch.

The backward is a gather, not a scatter: each program owns a block of *input* pixels and, for each pooling window
that can contain a pixel (ceil(KH / sh) x ceil(KW / sw) of them: 2 x 2 for AlexNet's 3x3 stride 2), adds that
window's dy when its saved tap is this pixel. Every input gradient is written exactly once, without atomics or a
zero fill, and the sum has a fixed order (deterministic).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common


def pool_configs() -> list[triton.Config]:
    """Tiles for the pooling and LRN kernels (memory-bound; the sweep picks the shape that coalesces best for the
    layout: wide in pixels for NCHW, wide in channels for channels_last), or the one interpreter config."""

    def cfg(bc, bq, warps):
        return triton.Config({"BLOCK_C": bc, "BLOCK_Q": bq}, num_warps=warps)

    gpu = [cfg(8, 256, 4), cfg(16, 128, 4), cfg(32, 64, 4), cfg(64, 32, 4), cfg(128, 16, 4), cfg(32, 128, 8)]
    return gpu  # the interpreter fits its tiles to each problem (interpreter_tile)


def interpreter_tile(pixels) -> dict:
    """(channel, pixel) tiles for the interpreter, given ``pixels(args)``, the lanes of the pixel axis: fitted to the
    channels, wide in pixels (the interpreter's cost is per program and per operation more than per element). On a GPU
    the kernels autotune over ``pool_configs``."""
    return {"BLOCK_C": lambda a: _common.fit_block(a["C"], low=1, high=128),
            "BLOCK_Q": lambda a: _common.fit_block(pixels(a), low=16, high=1024)}


@triton.jit
def tile_of_program(Q, C, N, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    """(image, pixel) of each of this program's BLOCK_Q lanes, its BLOCK_C channel offsets, and the lane mask. The
    pixels of all N images form one axis of N * Q lanes (pixel blocks fastest, then channel blocks), so a block may
    span images: small maps (13x13, or a test's 7x7) fill whole tiles instead of one program per image, and the grid
    has no 65535 limit on any axis. The image offsets are per lane, in int64."""
    pid = tl.program_id(0)
    num_q = tl.cdiv(N * Q, BLOCK_Q)
    pid_q = pid % num_q
    pid_c = pid // num_q
    lanes = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    lane_ok = lanes < N * Q
    n = (lanes // Q).to(tl.int64)
    offs_q = lanes % Q
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, offs_c, offs_q, lane_ok


def tile_grid(n_batch: int, q: int, c: int):
    """The launch grid of the kernels tiled by ``tile_of_program``."""

    def grid(meta):
        return (triton.cdiv(n_batch * q, meta["BLOCK_Q"]) * triton.cdiv(c, meta["BLOCK_C"]),)

    return grid


@triton.jit
def argmax_update(acc, arg, found, v, ok, tap):
    """One tap of a max with its argmax: the first valid tap is always taken, then a strictly larger value or a NaN
    (torch's rule: ties keep the earlier tap, a NaN wins). Returns the new (max, argmax, found)."""
    take = ok & ((found == 0) | (v > acc) | (v != v))
    return tl.where(take, v, acc), tl.where(take, tap, arg), found | ok.to(tl.int32)


@_common.tuned(configs=pool_configs(), key=["N", "C", "OH", "OW", "sxc", "KH", "KW", "STORE_INDEX"],
               interpreter_blocks=interpreter_tile(lambda a: a["N"] * a["OH"] * a["OW"]))
@triton.jit
def _max_pool2d_kernel(
    x_ptr, y_ptr, idx_ptr,
    N, C, H, W, OH, OW,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    stride_h, stride_w, pad_h, pad_w,
    KH: tl.constexpr, KW: tl.constexpr, STORE_INDEX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    n, offs_c, offs_q, q_ok = tile_of_program(OH * OW, C, N, BLOCK_Q, BLOCK_C)
    c_ok = offs_c < C
    oh = offs_q // OW
    ow = offs_q % OW
    x_base = x_ptr + offs_c[:, None] * sxc + (n * sxn)[None, :]
    acc = tl.full((BLOCK_C, BLOCK_Q), float("-inf"), tl.float32)
    arg = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.int32)
    found = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.int32)
    for kh in tl.static_range(KH):
        ih = oh * stride_h - pad_h + kh
        for kw in tl.static_range(KW):
            iw = ow * stride_w - pad_w + kw
            ok = q_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            v = tl.load(x_base + (ih * sxh + iw * sxw)[None, :], mask=c_ok[:, None] & ok[None, :], other=float("-inf"))
            if STORE_INDEX:
                ok2 = c_ok[:, None] & ok[None, :]
                acc, arg, found = argmax_update(acc, arg, found, v.to(tl.float32), ok2, kh * KW + kw)
            else:
                acc = tl.maximum(acc, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
    out_offsets = offs_c[:, None] * syc + (n * syn + oh * syh + ow * syw)[None, :]
    tl.store(y_ptr + out_offsets, acc.to(y_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])
    if STORE_INDEX:  # the index tensor has the output's strides
        tl.store(idx_ptr + out_offsets, arg.to(idx_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])


@triton.jit
def pool_gather(dy_ptr, idx_ptr, image, sdc, sdh, sdw, offs_c, c_ok, ih, iw, q_ok, OH, OW,
                stride_h, stride_w, pad_h, pad_w,
                KH: tl.constexpr, KW: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr):
    """The max-pool's input gradient at input pixels (ih, iw) of channels ``offs_c``, float32: the sum of dy over the
    windows whose saved winning tap is that pixel. dy and the indices share the strides (sdc, sdh, sdw); ``image`` is
    each lane's image offset in them."""
    acc = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
    hp = ih + pad_h
    wp = iw + pad_w
    for th in tl.static_range(KH):
        if th * stride_h < KH:  # at most ceil(KH / sh) windows along h contain a pixel
            oh = hp // stride_h - th
            kh = hp - oh * stride_h
            ok_h = (oh >= 0) & (oh < OH) & (kh < KH)
            for tw in tl.static_range(KW):
                if tw * stride_w < KW:
                    ow = wp // stride_w - tw
                    kw = wp - ow * stride_w
                    ok = q_ok & ok_h & (ow >= 0) & (ow < OW) & (kw < KW)
                    m = c_ok[:, None] & ok[None, :]
                    offs = offs_c[:, None] * sdc + (image + oh * sdh + ow * sdw)[None, :]
                    won = tl.load(idx_ptr + offs, mask=m, other=-1).to(tl.int32) == (kh * KW + kw)[None, :]
                    g = tl.load(dy_ptr + offs, mask=m & won, other=0.0)
                    acc += g.to(tl.float32)
    return acc


@_common.tuned(configs=pool_configs(), key=["N", "C", "H", "W", "sdxc", "KH", "KW"],
               interpreter_blocks=interpreter_tile(lambda a: a["N"] * a["H"] * a["W"]))
@triton.jit
def _max_pool2d_backward_kernel(
    dy_ptr, idx_ptr, dx_ptr,
    N, C, H, W, OH, OW,
    sdn, sdc, sdh, sdw, sdxn, sdxc, sdxh, sdxw,
    stride_h, stride_w, pad_h, pad_w,
    KH: tl.constexpr, KW: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    n, offs_c, offs_q, q_ok = tile_of_program(H * W, C, N, BLOCK_Q, BLOCK_C)
    c_ok = offs_c < C
    ih = offs_q // W
    iw = offs_q % W
    g = pool_gather(dy_ptr, idx_ptr, n * sdn, sdc, sdh, sdw, offs_c, c_ok, ih, iw, q_ok, OH, OW,
                    stride_h, stride_w, pad_h, pad_w, KH, KW, BLOCK_C, BLOCK_Q)
    dx_ptrs = dx_ptr + offs_c[:, None] * sdxc + (n * sdxn + ih * sdxh + iw * sdxw)[None, :]
    tl.store(dx_ptrs, g.to(dx_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])


def pool_geometry(input_shape, kernel_size, stride, padding):
    """Checked (kh, kw), (sh, sw), (ph, pw), (oh, ow) of a max-pool, with torch's rules: stride defaults to the kernel
    size, padding is at most half the kernel, the output is at least 1x1 (floor mode)."""
    kh, kw = _common.check_pair("kernel_size", kernel_size, minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = _common.check_pair("stride", stride, minimum=1)
    ph, pw = _common.check_pair("padding", padding, minimum=0)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"padding ({ph}, {pw}) must be at most half of kernel_size ({kh}, {kw}), as torch's max_pool2d requires"
        )
    h, w = input_shape[-2:]
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(
            f"input of spatial size {h}x{w} with padding ({ph}, {pw}) is smaller than the {kh}x{kw} window"
        )
    return (kh, kw), (sh, sw), (ph, pw), (oh, ow)


def index_dtype(kh: int, kw: int) -> torch.dtype:
    """The dtype of the saved winning-tap indices: int8 for windows of up to 127 taps."""
    return torch.int8 if kh * kw <= 127 else torch.int32


def max_pool2d_backward(grad_output: torch.Tensor, index: torch.Tensor, input_shape, input_format, geometry):
    """The input gradient of a max-pool from its saved winning-tap ``index`` (which has the output's strides)."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = geometry
    n_batch, c, h, w = input_shape
    dy = _common.same_layout(grad_output, index)
    dx = torch.empty(input_shape, dtype=grad_output.dtype, device=grad_output.device, memory_format=input_format)
    if dx.numel() == 0:
        return dx

    _max_pool2d_backward_kernel[tile_grid(n_batch, h * w, c)](
        dy, index, dx, n_batch, c, h, w, oh, ow, *dy.stride(), *dx.stride(), sh, sw, ph, pw, KH=kh, KW=kw,
    )
    return dx


class MaxPool2dFunction(torch.autograd.Function):
    """Max-pool that saves its winning taps (int8) when the input needs a gradient, and gathers dy back through them."""

    @staticmethod
    def forward(ctx, input, geometry):
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = geometry
        n_batch, c, h, w = input.shape
        x, fmt = _common.dense_format(input)
        y = torch.empty((n_batch, c, oh, ow), dtype=input.dtype, device=input.device, memory_format=fmt)
        store_index = ctx.needs_input_grad[0]
        index = torch.empty_like(y, dtype=index_dtype(kh, kw)) if store_index else y
        if y.numel():
            _max_pool2d_kernel[tile_grid(n_batch, oh * ow, c)](
                x, y, index, n_batch, c, h, w, oh, ow, *x.stride(), *y.stride(), sh, sw, ph, pw, KH=kh, KW=kw,
                STORE_INDEX=store_index,
            )
        if store_index:
            ctx.save_for_backward(index)
            ctx.geometry, ctx.input_shape, ctx.input_format = geometry, tuple(input.shape), fmt
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (index,) = ctx.saved_tensors
        return max_pool2d_backward(grad_output, index, ctx.input_shape, ctx.input_format, ctx.geometry), None


def max_pool2d(input: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """``torch.nn.functional.max_pool2d(input, kernel_size, stride, padding)`` (floor mode, no dilation).

    input: (N, C, H, W), float32, float16 or bfloat16, NCHW or channels_last. kernel_size, stride, padding: int or
    pair; stride defaults to kernel_size; padding <= kernel_size // 2 and pads with -inf; NaN propagates. Returns
    (N, C, OH, OW), OH = (H + 2 ph - KH) // sh + 1, in the input's dtype and memory format. Differentiable: when the
    input requires a gradient the winning taps are saved (one byte per output, see the module docstring).
    """
    _common.check_tensor("input", input, ndim=4)
    geometry = pool_geometry(input.shape, kernel_size, stride, padding)
    n_batch, c, h, w = input.shape
    _common.check_int32_extent("one input image", c * h * w)
    _common.check_int32_extent("the pixels of the batch (N * H * W)", n_batch * h * w)
    return MaxPool2dFunction.apply(input, geometry)
