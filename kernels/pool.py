"""2-D max pooling (AlexNet's overlapping 3x3 stride-2 windows, and any other kernel/stride/padding).

Each program owns a BLOCK_C x BLOCK_Q block of (channel, pooled pixel) outputs of one image and takes the maximum over
the KH x KW window with one masked load per tap. The window is unrolled (KH and KW are compile-time constants).
Neighbouring windows overlap (3x3 stride 2 reads most pixels 2.25 times), but the re-reads hit L1/L2, so DRAM
traffic stays near one read of the input and one write of the output. Padding acts as -inf, as in torch.
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
    return _common.select_configs(gpu, cfg(64, 128, 4))


@triton.jit
def tile_of_program(Q, C, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    """(image, channel offsets, pixel offsets) of this program: one flat grid over (pixel block, channel block, image),
    pixel blocks fastest, so the grid has no 65535 limit on any axis."""
    pid = tl.program_id(0)
    num_q = tl.cdiv(Q, BLOCK_Q)
    num_c = tl.cdiv(C, BLOCK_C)
    pid_q = pid % num_q
    pid_c = (pid // num_q) % num_c
    n = pid // (num_q * num_c)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    return n, offs_c, offs_q


@triton.autotune(configs=pool_configs(), key=["C", "OH", "OW", "sxc", "KH", "KW"])
@triton.jit
def _max_pool2d_kernel(
    x_ptr, y_ptr,
    C, H, W, OH, OW,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    stride_h, stride_w, pad_h, pad_w,
    KH: tl.constexpr, KW: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    n, offs_c, offs_q = tile_of_program(OH * OW, C, BLOCK_Q, BLOCK_C)
    c_ok = offs_c < C
    q_ok = offs_q < OH * OW
    oh = offs_q // OW
    ow = offs_q % OW
    x_base = x_ptr + n.to(tl.int64) * sxn + offs_c[:, None] * sxc
    acc = tl.full((BLOCK_C, BLOCK_Q), float("-inf"), tl.float32)
    for kh in tl.static_range(KH):
        ih = oh * stride_h - pad_h + kh
        for kw in tl.static_range(KW):
            iw = ow * stride_w - pad_w + kw
            ok = q_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            v = tl.load(x_base + (ih * sxh + iw * sxw)[None, :], mask=c_ok[:, None] & ok[None, :], other=float("-inf"))
            acc = tl.maximum(acc, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
    y_ptrs = y_ptr + n.to(tl.int64) * syn + offs_c[:, None] * syc + (oh * syh + ow * syw)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])


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


def max_pool2d(input: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """``torch.nn.functional.max_pool2d(input, kernel_size, stride, padding)`` (floor mode, no dilation).

    input: (N, C, H, W), float32, float16 or bfloat16, NCHW or channels_last. kernel_size, stride, padding: int or
    pair; stride defaults to kernel_size; padding <= kernel_size // 2 and pads with -inf; NaN propagates. Returns
    (N, C, OH, OW), OH = (H + 2 ph - KH) // sh + 1, in the input's dtype and memory format.
    """
    _common.check_tensor("input", input, ndim=4)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = pool_geometry(input.shape, kernel_size, stride, padding)
    n_batch, c, h, w = input.shape
    _common.check_int32_extent("one input image", c * h * w)
    x, fmt = _common.dense_format(input)
    y = torch.empty((n_batch, c, oh, ow), dtype=input.dtype, device=input.device, memory_format=fmt)
    if y.numel() == 0:
        return y

    def grid(meta):
        return (triton.cdiv(oh * ow, meta["BLOCK_Q"]) * triton.cdiv(c, meta["BLOCK_C"]) * n_batch,)

    _max_pool2d_kernel[grid](
        x, y, c, h, w, oh, ow, *x.stride(), *y.stride(), sh, sw, ph, pw, KH=kh, KW=kw,
    )
    return y
