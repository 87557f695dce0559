"""2-D convolution as an implicit GEMM, with bias and activation fused into the epilogue.

Per group g the convolution is a GEMM

    Y[m, o] = sum_k A[m, k] * B[k, o]      m = (n, oh, ow): output pixel        M = N * OH * OW
                                           o: output channel of the group      KG = C_out / groups
                                           k = (c, kh, kw): filter tap         K  = C / groups * KH * KW

where A[m, k] = x[n, g*CG + c, oh*sh - ph + kh, ow*sw - pw + kw] (zero outside the image) and B[k, o] is the filter.
A is never built: each program gathers the BLOCK_M x BLOCK_K slice of A it needs straight from the input, so the only
memory traffic is the input, the filter and the output.

Two ways to walk K, chosen on the host:

- channels-inner (C / groups >= 16): the loop runs over (kh, kw) and, inside, over BLOCK_K-channel chunks. With a
  channels_last input each A row is then BLOCK_K consecutive channels of one input pixel: the pointer arithmetic is
  affine in the channel and the compiler sees it (channel stride == 1 is specialised), so loads are 16-byte vectors.
  An NCHW input is converted to channels_last first (one read and one write of the input, like cuDNN's own
  transposes); pass channels_last tensors to avoid it.
- flat (C / groups < 16, e.g. conv1's 3 input channels): K is walked in BLOCK_K steps and each k is decomposed into
  (c, kh, kw) in the order of the input's memory layout, so that a chunk of K is as contiguous as the layout allows and
  few lanes are wasted (conv1's K = 363 uses 95% of 12 chunks of 32, where a per-tap loop would use 3 of 16 lanes).

The output is written in the input's memory format. For NCHW the stored block is transposed so that consecutive
lanes write consecutive pixels (the coalescing pass makes the last block dimension the fastest when it cannot prove
contiguity, which the pixel decomposition hides).

Backward of y = act(conv(x, w) + b), with dz = dy * act'(y) (act' from the saved output, ``_common.activation_grad``):

- Input gradient, an implicit GEMM per group over input pixels:
      dx[m, c] = sum_{(kh, kw, o)} dz[n, oh, ow, o] * w[o, c, kh, kw]    m = (n, ih, iw), oh = (ih + ph - kh) / sh
  where the tap counts only when (ih + ph - kh) and (iw + pw - kw) divide by the stride and land inside the output.
  K is walked tap by tap and, inside, in BLOCK_K chunks of output channels (contiguous in channels_last dy and
  weights). A strided convolution masks the taps that do not divide (1 - 1 / (sh sw) of them): AlexNet's only strided
  convolution is conv1, whose input is the image and needs no gradient, so no phase decomposition is done.
- Weight gradient, an implicit GEMM per group whose reduction runs over the output pixels:
      dw[o, k] = sum_m dz[m, o] * A[m, k]     (A: the forward's implicit im2col of x, gathered, never stored)
  Each program owns a BLOCK_N (output channels) x BLOCK_K (filter taps) tile of dw, with K tiled as in the forward
  (channels-inner or flat). The bias gradient db[o] = sum_m dz[m, o] rides along: the programs of the first K tile
  also sum their dz tiles. The reduction (N * OH * OW: 387,200 for conv1 at batch 128) is long and the output small,
  so on a GPU it is split over SPLIT programs writing float32 partial sums that a second kernel adds in a fixed
  order (deterministic, no atomics).
- The activation's derivative is fused into both GEMMs: they load dy and the saved y and form dz tile by tile as
  they gather it, so dz never reaches memory (the unfused chain writes and reads it back: one full-size write and
  two reads more).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common
from ._common import activation_grad, apply_activation, gemm_config, grouped_tile


def conv_configs() -> list[triton.Config]:
    """Autotune sweep for the implicit-GEMM convolution (H100-class GPUs), or the one interpreter config."""

    cfg = gemm_config
    gpu = [
        cfg(128, 128, 64, 8, 3),
        cfg(128, 128, 32, 4, 4),
        cfg(256, 128, 64, 8, 3),
        cfg(128, 256, 64, 8, 3),
        cfg(128, 64, 64, 4, 4),
        cfg(128, 64, 32, 4, 4),
        cfg(64, 128, 64, 4, 4),
        cfg(64, 64, 64, 4, 4),
        cfg(128, 32, 64, 4, 4),
        cfg(128, 128, 16, 4, 4),  # C / groups = 48 (AlexNet conv2) splits exactly into 16-channel chunks
        cfg(128, 64, 16, 4, 5),
        # Small tiles: IEEE float32 has no tensor-core path, so its operands and the gathered A indices live in
        # registers, and every larger tile spills on sm_90 for conv1's flat K (perfkit kernels check).
        cfg(64, 64, 32, 4, 3),
        cfg(64, 32, 32, 4, 3),
    ]
    return gpu  # the interpreter fits its blocks to each problem instead (see _common.tuned)


def _prune(configs, named_args, **kwargs):
    """Drop tiles much larger than the problem: a BLOCK_K over the channel count (channels-inner) or a BLOCK_N over
    the output channels of a group only multiply masked lanes."""
    kg = triton.next_power_of_2(named_args["KG"])
    cg = max(16, triton.next_power_of_2(named_args["CG"]))
    channels_inner = kwargs.get("CHANNELS_INNER", named_args.get("CHANNELS_INNER"))

    def keep(c):
        if c.kwargs["BLOCK_N"] > max(32, kg):
            return False
        return not (channels_inner and c.kwargs["BLOCK_K"] > cg)

    return _common.fit_pipeline_stages(_common.keep_configs(configs, keep), named_args["x_ptr"].element_size())


@_common.tuned(
    configs=conv_configs(),
    key=["M", "KG", "CG", "KH", "KW", "stride_h", "stride_w", "CHANNELS_INNER", "Y_CHANNELS_LAST", "DOT_PRECISION"],
    prune=_prune,
    interpreter_blocks={"BLOCK_M": lambda a: _common.fit_block(a["M"], high=1024),
                        "BLOCK_N": lambda a: _common.fit_block(a["KG"], high=128),
                        "BLOCK_K": lambda a: _common.fit_block(a["CG"] if a["CHANNELS_INNER"] else a["K_GEMM"],
                                                               high=128),
                        "GROUP_M": lambda a: 8},
)
@triton.jit
def _conv2d_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    H, W, OH, OW, M, CG, KG, KH, KW, K_GEMM,
    stride_h, stride_w, pad_h, pad_w,
    sxn, sxc, sxh, sxw,
    swo, swc, swh, sww,
    syn, syc, syh, syw,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, DOT_PRECISION: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, C_FASTEST: tl.constexpr, Y_CHANNELS_LAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    g = tl.program_id(1)
    # Grouped ordering of (pixel tile, channel tile) within the group, for L2 reuse of input rows and filters.
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, KG, BLOCK_M, BLOCK_N, GROUP_M)

    # Output pixels of this tile, and the top-left input pixel each one's receptive field starts at.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    n = offs_m // (OW * OH)
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    # Batch offsets are the only ones that can pass 2**31 (AlexNet at batch 1024); offsets inside an image are int32.
    x_rows = x_ptr + n.to(tl.int64) * sxn + (g * CG) * sxc

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    co = g * KG + (offs_n % KG)  # wrapped: filter loads need no mask along N; the extra columns are never stored
    w_cols = w_ptr + co.to(tl.int64) * swo

    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if CHANNELS_INNER:
        num_cb = tl.cdiv(CG, BLOCK_K)
        # One flat loop over (kh, kw, channel chunk) rather than three nested ones, so the pipeliner sees one loop.
        for step in range(0, KH * KW * num_cb):
            cb = step % num_cb
            tap = step // num_cb
            kw = tap % KW
            kh = tap // KW
            ih = ih0 + kh
            iw = iw0 + kw
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            offs_c = cb * BLOCK_K + offs_k
            c_ok = offs_c < CG
            a_ptrs = (x_rows + ih * sxh + iw * sxw)[:, None] + offs_c[None, :] * sxc
            a = tl.load(a_ptrs, mask=row_ok[:, None] & c_ok[None, :], other=0.0)
            b_ptrs = (w_cols + kh * swh + kw * sww)[None, :] + offs_c[:, None] * swc
            b = tl.load(b_ptrs, mask=c_ok[:, None], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    else:
        for k0 in range(0, K_GEMM, BLOCK_K):
            kk = k0 + offs_k
            k_ok = kk < K_GEMM
            if C_FASTEST:  # k = (kh, kw, c): channels_last memory order
                c = kk % CG
                kw = (kk // CG) % KW
                kh = kk // (CG * KW)
            else:  # k = (c, kh, kw): NCHW memory order
                kw = kk % KW
                kh = (kk // KW) % KH
                c = kk // (KW * KH)
            ih = ih0[:, None] + kh[None, :]
            iw = iw0[:, None] + kw[None, :]
            a_ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a_ptrs = x_rows[:, None] + (ih * sxh + iw * sxw + c[None, :] * sxc)
            a = tl.load(a_ptrs, mask=a_ok, other=0.0)
            b_ptrs = w_cols[None, :] + (c * swc + kh * swh + kw * sww)[:, None]
            b = tl.load(b_ptrs, mask=k_ok[:, None], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)

    n_ok = offs_n < KG
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    acc = apply_activation(acc, ACTIVATION)
    out = acc.to(y_ptr.dtype.element_ty)

    y_rows = n.to(tl.int64) * syn + oh * syh + ow * syw
    if Y_CHANNELS_LAST:
        y_ptrs = y_ptr + y_rows[:, None] + co[None, :] * syc
        tl.store(y_ptrs, out, mask=m_ok[:, None] & n_ok[None, :])
    else:
        # NCHW: pixels are the contiguous direction, so store the transposed block with pixels last.
        y_ptrs = y_ptr + y_rows[None, :] + co[:, None] * syc
        tl.store(y_ptrs, tl.trans(out), mask=n_ok[:, None] & m_ok[None, :])


def dgrad_configs() -> list[triton.Config]:
    """Autotune sweep for the input-gradient GEMM (input pixels x input channels, K over taps and output channels)."""

    cfg = gemm_config
    gpu = [
        cfg(128, 128, 64, 8, 3),
        cfg(128, 128, 32, 4, 4),
        cfg(128, 64, 64, 4, 4),
        cfg(64, 128, 64, 4, 4),
        cfg(64, 64, 64, 4, 4),
        cfg(128, 64, 32, 4, 4),
        cfg(128, 32, 64, 4, 4),
        cfg(128, 128, 16, 4, 4),
    ]
    return gpu  # the interpreter fits its blocks to each problem instead (see _common.tuned)


def _prune_dgrad(configs, named_args, **kwargs):
    """Drop tiles much wider than the group's input channels (BLOCK_N) or deeper than its output channels (BLOCK_K)."""
    cg = triton.next_power_of_2(named_args["CG"])
    kg = max(16, triton.next_power_of_2(named_args["KG"]))

    def keep(c):
        return c.kwargs["BLOCK_N"] <= max(32, cg) and c.kwargs["BLOCK_K"] <= kg

    # with a fused activation the saved output's tile is pipelined beside dy's: a second A operand per stage
    a_tiles = 2 if kwargs.get("ACTIVATION", named_args.get("ACTIVATION")) else 1
    return _common.fit_pipeline_stages(_common.keep_configs(configs, keep), named_args["w_ptr"].element_size(),
                                       stage_elements=lambda bm, bn, bk: a_tiles * bm * bk + bk * bn)


@_common.tuned(
    configs=dgrad_configs(),
    key=["M", "CG", "KG", "KH", "KW", "stride_h", "stride_w", "ACTIVATION", "DX_CHANNELS_LAST", "DOT_PRECISION"],
    prune=_prune_dgrad,
    interpreter_blocks={"BLOCK_M": lambda a: _common.fit_block(a["M"], high=1024),
                        "BLOCK_N": lambda a: _common.fit_block(a["CG"], high=128),
                        "BLOCK_K": lambda a: _common.fit_block(a["KG"], high=128), "GROUP_M": lambda a: 8},
)
@triton.jit
def _conv2d_dgrad_kernel(
    dy_ptr, y_ptr, w_ptr, dx_ptr,
    H, W, OH, OW, M, CG, KG, KH, KW,
    stride_h, stride_w, pad_h, pad_w,
    sdyn, sdyc, sdyh, sdyw,
    syn, syc, syh, syw,
    swo, swc, swh, sww,
    sdxn, sdxc, sdxh, sdxw,
    ACTIVATION: tl.constexpr, DOT_PRECISION: tl.constexpr, DX_CHANNELS_LAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    g = tl.program_id(1)
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, CG, BLOCK_M, BLOCK_N, GROUP_M)

    # Input pixels of this tile (rows of dx), and the input channels of the group (columns).
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    iw = offs_m % W
    ih = (offs_m // W) % H
    n = offs_m // (W * H)
    hp = ih + pad_h
    wp = iw + pad_w
    dy_rows = dy_ptr + n.to(tl.int64) * sdyn + (g * KG) * sdyc
    y_rows = y_ptr + n.to(tl.int64) * syn + (g * KG) * syc

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_g = offs_n % CG  # wrapped: no mask on the filter loads; the extra columns are never stored
    ci = g * CG + c_g  # the input channel (the filter's dimension 1 is the channel within the group)
    w_cols = w_ptr + c_g * swc + (g * KG).to(tl.int64) * swo

    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    num_ob = tl.cdiv(KG, BLOCK_K)
    for step in range(0, KH * KW * num_ob):
        ob = step % num_ob
        tap = step // num_ob
        kw = tap % KW
        kh = tap // KW
        # the output pixel whose window puts tap (kh, kw) on this input pixel, if the stride lands on it
        th = hp - kh
        tw = wp - kw
        oh = th // stride_h
        ow = tw // stride_w
        row_ok = m_ok & (th >= 0) & (tw >= 0) & (oh * stride_h == th) & (ow * stride_w == tw) & (oh < OH) & (ow < OW)
        offs_o = ob * BLOCK_K + offs_k
        o_ok = offs_o < KG
        a_mask = row_ok[:, None] & o_ok[None, :]
        a = tl.load((dy_rows + oh * sdyh + ow * sdyw)[:, None] + offs_o[None, :] * sdyc, mask=a_mask, other=0.0)
        if ACTIVATION != 0:
            yv = tl.load((y_rows + oh * syh + ow * syw)[:, None] + offs_o[None, :] * syc, mask=a_mask, other=0.0)
            a = activation_grad(a.to(tl.float32), yv.to(tl.float32), ACTIVATION)
        a = a.to(w_ptr.dtype.element_ty)  # dz rounded to the operands' dtype, as the unfused chain stores it
        b = tl.load((w_cols + kh * swh + kw * sww)[None, :] + offs_o[:, None] * swo, mask=o_ok[:, None], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)

    out = acc.to(dx_ptr.dtype.element_ty)
    n_ok = offs_n < CG
    dx_rows = n.to(tl.int64) * sdxn + ih * sdxh + iw * sdxw
    if DX_CHANNELS_LAST:
        tl.store(dx_ptr + dx_rows[:, None] + ci[None, :] * sdxc, out, mask=m_ok[:, None] & n_ok[None, :])
    else:
        tl.store(dx_ptr + dx_rows[None, :] + ci[:, None] * sdxc, tl.trans(out), mask=n_ok[:, None] & m_ok[None, :])


def wgrad_configs() -> list[triton.Config]:
    """Autotune sweep for the weight-gradient GEMM: BLOCK_N output channels x BLOCK_K filter taps per program,
    reducing over BLOCK_M output pixels at a time."""

    def cfg(bm, bn, bk, warps, stages):
        return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)

    gpu = [
        cfg(64, 128, 128, 8, 3),
        cfg(64, 128, 64, 4, 4),
        cfg(64, 64, 128, 4, 4),
        cfg(128, 64, 64, 4, 4),
        cfg(64, 64, 64, 4, 4),
        cfg(32, 128, 128, 8, 4),
        cfg(64, 128, 32, 4, 4),
        cfg(64, 64, 16, 4, 5),
        # Small tiles for float32, whose larger ones spill on sm_90 (conv1's flat taps, conv2 with a fused ReLU).
        cfg(32, 64, 64, 4, 3),
        cfg(32, 32, 64, 4, 3),
        cfg(64, 32, 32, 4, 3),
    ]
    return gpu


def _prune_wgrad(configs, named_args, **kwargs):
    kg = triton.next_power_of_2(named_args["KG"])
    cg = max(16, triton.next_power_of_2(named_args["CG"]))
    channels_inner = kwargs.get("CHANNELS_INNER", named_args.get("CHANNELS_INNER"))

    def keep(c):
        if c.kwargs["BLOCK_N"] > max(32, kg):
            return False
        return not (channels_inner and c.kwargs["BLOCK_K"] > cg)

    dz_tiles = 2 if kwargs.get("ACTIVATION", named_args.get("ACTIVATION")) else 1  # dy and the saved y
    return _common.fit_pipeline_stages(_common.keep_configs(configs, keep), named_args["x_ptr"].element_size(),
                                       stage_elements=lambda bm, bn, bk: dz_tiles * bm * bn + bm * bk)


@_common.tuned(
    configs=wgrad_configs(),
    key=["M_PER_SPLIT", "KG", "CG", "KH", "KW", "stride_h", "stride_w", "CHANNELS_INNER", "ACTIVATION", "HAS_DB",
         "DOT_PRECISION"],
    prune=_prune_wgrad,
    interpreter_blocks={"BLOCK_M": lambda a: _common.fit_block(a["M_PER_SPLIT"], high=1024),
                        "BLOCK_N": lambda a: _common.fit_block(a["KG"], high=128),
                        "BLOCK_K": lambda a: _common.fit_block(a["CG"], high=128) if a["CHANNELS_INNER"] else 64},
)
@triton.jit
def _conv2d_wgrad_kernel(
    x_ptr, dy_ptr, y_ptr, dw_ptr, db_ptr,
    H, W, OH, OW, M, M_PER_SPLIT, CG, KG, KH, KW, K_GEMM,
    stride_h, stride_w, pad_h, pad_w,
    sxn, sxc, sxh, sxw,
    sdyn, sdyc, sdyh, sdyw,
    syn, syc, syh, syw,
    sdwo, sdwc, sdwh, sdww, dw_split_stride, db_split_stride,
    HAS_DB: tl.constexpr, ACTIVATION: tl.constexpr, DOT_PRECISION: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, C_FASTEST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    g = tl.program_id(1)
    split = tl.program_id(2)
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    pid_n = tl.program_id(0) % num_pid_n  # consecutive programs share a K tile: the same x columns, from L2
    pid_k = tl.program_id(0) // num_pid_n

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < KG
    co = g * KG + (offs_n % KG)  # wrapped, like the forward's

    # This program's K tile: filter taps (c, kh, kw) of the group. Channels-inner: one tap (kh, kw scalars) and a
    # chunk of channels, contiguous in channels_last x and dw; flat: BLOCK_K taps decomposed in memory order.
    if CHANNELS_INNER:
        num_cb = tl.cdiv(CG, BLOCK_K)
        cb = pid_k % num_cb
        tap = pid_k // num_cb
        kw = tap % KW
        kh = tap // KW
        c = cb * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = c < CG
    else:
        kk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = kk < K_GEMM
        if C_FASTEST:
            c = kk % CG
            kw = (kk // CG) % KW
            kh = kk // (CG * KW)
        else:
            kw = kk % KW
            kh = (kk // KW) % KH
            c = kk // (KW * KH)
        kh = tl.where(k_ok, kh, 0)
        kw = tl.where(k_ok, kw, 0)
    c = tl.where(k_ok, c, 0)
    x_cols = (g * CG + c) * sxc

    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    m_start = split * M_PER_SPLIT
    m_stop = min(m_start + M_PER_SPLIT, M)
    for m0 in range(m_start, m_stop, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < m_stop
        ow = offs_m % OW
        oh = (offs_m // OW) % OH
        n = (offs_m // (OW * OH)).to(tl.int64)
        # dz tile (BLOCK_M pixels x BLOCK_N output channels), formed from dy and the saved y
        dz = tl.load((dy_ptr + n * sdyn + oh * sdyh + ow * sdyw)[:, None] + co[None, :] * sdyc,
                     mask=m_ok[:, None], other=0.0)
        if ACTIVATION != 0:
            yv = tl.load((y_ptr + n * syn + oh * syh + ow * syw)[:, None] + co[None, :] * syc,
                         mask=m_ok[:, None], other=0.0)
            dz = activation_grad(dz.to(tl.float32), yv.to(tl.float32), ACTIVATION)
        dz = dz.to(x_ptr.dtype.element_ty)
        if HAS_DB:
            if pid_k == 0:
                db += tl.sum(dz.to(tl.float32), axis=0)
        # A tile (BLOCK_M pixels x BLOCK_K taps): the input under each tap, zero in the padding
        if CHANNELS_INNER:  # one tap: the bounds are per row, the channels contiguous
            ih = oh * stride_h - pad_h + kh
            iw = ow * stride_w - pad_w + kw
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a_ptrs = (x_ptr + n * sxn + ih * sxh + iw * sxw)[:, None] + x_cols[None, :]
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        else:
            ih = (oh * stride_h - pad_h)[:, None] + kh[None, :]
            iw = (ow * stride_w - pad_w)[:, None] + kw[None, :]
            a_ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load((x_ptr + n * sxn)[:, None] + (ih * sxh + iw * sxw + x_cols[None, :]), mask=a_ok, other=0.0)
        acc = tl.dot(tl.trans(dz), a, acc, input_precision=DOT_PRECISION)

    dw_offsets = co[:, None] * sdwo + (c * sdwc + kh * sdwh + kw * sdww)[None, :]
    tl.store(dw_ptr + split * dw_split_stride + dw_offsets, acc.to(dw_ptr.dtype.element_ty),
             mask=n_ok[:, None] & k_ok[None, :])
    if HAS_DB:
        if pid_k == 0:
            tl.store(db_ptr + split * db_split_stride + co, db.to(db_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _split_sum_kernel(ws_ptr, out_ptr, numel, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = sum over s of ws[s * numel + i], in order of s (the split partial sums of a gradient)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT):
        acc += tl.load(ws_ptr + s * numel + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def choose_wgrad_split(m: int, tiles: int, device: torch.device) -> int:
    """How many slices to cut the weight gradient's reduction (N * OH * OW pixels) into: enough programs to cover
    the SMs with 128 x 128 tiles, each slice at least 2048 pixels deep, at most 64. Always 1 under the interpreter."""
    if _common.is_interpreting() or (device.type != "cuda" and _common.recording_target() is None):
        return 1
    sms = _common.multiprocessor_count(device)
    if 2 * tiles >= sms:
        return 1
    return max(1, min(triton.cdiv(sms, tiles), m // 2048, 64))



class Conv2dFunction(torch.autograd.Function):
    """act(conv2d(x, w) + b) with the backward of the module docstring. Saves the input (as the kernels read it),
    the weight, and the output when an activation was fused."""

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, groups, code):
        (sh, sw), (ph, pw) = stride, padding
        n_batch, c_in, h, w = input.shape
        c_out, cg, kh, kw = weight.shape
        oh = (h + 2 * ph - kh) // sh + 1
        ow = (w + 2 * pw - kw) // sw + 1
        x, fmt = _common.dense_format(input)
        channels_last = fmt == torch.channels_last
        y = torch.empty((n_batch, c_out, oh, ow), dtype=input.dtype, device=input.device, memory_format=fmt)
        channels_inner = cg >= 16
        if channels_inner:
            # The gather wants channels contiguous, in the input and in the filter alike.
            x = x.contiguous(memory_format=torch.channels_last)
            wk = weight.contiguous(memory_format=torch.channels_last)
            c_fastest = True
        else:
            c_fastest = channels_last
            wk = weight.contiguous(memory_format=torch.channels_last if c_fastest else torch.contiguous_format)
        ctx.geometry = (stride, padding, groups, code, channels_inner, c_fastest, fmt)
        ctx.has_bias = bias is not None
        ctx.input_shape, ctx.weight_shape, ctx.weight_strides = tuple(input.shape), tuple(weight.shape), weight.stride()
        # x for the weight (and bias: same pass) gradient, the filter for the input gradient, y for act'.
        ctx.save_for_backward(x if ctx.needs_input_grad[1] or ctx.needs_input_grad[2] else None,
                              wk if ctx.needs_input_grad[0] else None,
                              y if code != 0 else None)
        if y.numel() == 0:
            return y
        precision = _common.dot_precision(input.dtype, _common.allow_tf32_conv())
        m = n_batch * oh * ow
        kg = c_out // groups

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(kg, meta["BLOCK_N"]), groups)

        _conv2d_kernel[grid](
            x, wk, bias if bias is not None else wk, y,
            h, w, oh, ow, m, cg, kg, kh, kw, cg * kh * kw,
            sh, sw, ph, pw,
            *x.stride(), *wk.stride(), *y.stride(),
            HAS_BIAS=bias is not None, ACTIVATION=code, DOT_PRECISION=precision,
            CHANNELS_INNER=channels_inner, C_FASTEST=c_fastest, Y_CHANNELS_LAST=channels_last,
        )
        return y

    @staticmethod
    def backward(ctx, grad_output):
        x, wk, y = ctx.saved_tensors
        (sh, sw), (ph, pw), groups, code, channels_inner, c_fastest, fmt = ctx.geometry
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        need_db = need_db and ctx.has_bias
        n_batch, c_in, h, w = ctx.input_shape
        c_out, cg, kh, kw = ctx.weight_shape
        _, _, oh, ow = grad_output.shape
        kg = c_out // groups
        dtype, device = grad_output.dtype, grad_output.device
        dy = grad_output
        if channels_inner or fmt == torch.channels_last:
            dy = dy.contiguous(memory_format=torch.channels_last)  # the GEMMs read output channels contiguously
        y_arg = y if y is not None else dy
        precision = _common.dot_precision(dtype, _common.allow_tf32_conv())
        dx = dw = db = None

        if need_dx:
            dx = torch.empty(ctx.input_shape, dtype=dtype, device=device, memory_format=fmt)
            m = n_batch * h * w
            if dx.numel():

                def grid(meta):
                    return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(cg, meta["BLOCK_N"]), groups)

                _conv2d_dgrad_kernel[grid](
                    dy, y_arg, wk, dx,
                    h, w, oh, ow, m, cg, kg, kh, kw,
                    sh, sw, ph, pw,
                    *dy.stride(), *y_arg.stride(), *wk.stride(), *dx.stride(),
                    ACTIVATION=code, DOT_PRECISION=precision, DX_CHANNELS_LAST=fmt == torch.channels_last,
                )

        if need_dw or need_db:
            dw = torch.empty_strided(ctx.weight_shape, ctx.weight_strides, dtype=dtype, device=device)
            db = torch.empty((c_out,), dtype=dtype, device=device) if need_db else None
            m = n_batch * oh * ow
            k_gemm = cg * kh * kw
            k_tiles = kh * kw * triton.cdiv(cg, 128) if channels_inner else triton.cdiv(k_gemm, 128)
            split = choose_wgrad_split(m, triton.cdiv(kg, 128) * k_tiles * groups, device)
            m_per_split = triton.cdiv(triton.cdiv(m, split), 128) * 128 if split > 1 else max(m, 1)
            split = max(1, triton.cdiv(m, m_per_split))
            if split > 1:
                dw_out = torch.empty(split * dw.numel(), dtype=torch.float32, device=device)
                db_out = torch.empty(split * c_out, dtype=torch.float32, device=device) if need_db else dw_out
            else:
                dw_out, db_out = dw, db if need_db else dw
            def wgrad_grid(meta):
                k_tiles = kh * kw * triton.cdiv(cg, meta["BLOCK_K"]) if channels_inner else \
                    triton.cdiv(k_gemm, meta["BLOCK_K"])
                return (triton.cdiv(kg, meta["BLOCK_N"]) * k_tiles, groups, split)

            _conv2d_wgrad_kernel[wgrad_grid](
                x, dy, y_arg, dw_out, db_out,
                h, w, oh, ow, m, m_per_split, cg, kg, kh, kw, k_gemm,
                sh, sw, ph, pw,
                *x.stride(), *dy.stride(), *y_arg.stride(),
                *dw.stride(), dw.numel(), c_out,
                HAS_DB=need_db, ACTIVATION=code, DOT_PRECISION=precision,
                CHANNELS_INNER=channels_inner, C_FASTEST=c_fastest,
            )
            if split > 1:
                block = 1024
                _split_sum_kernel[(triton.cdiv(dw.numel(), block),)](dw_out, dw, dw.numel(), SPLIT=split, BLOCK=block)
                if need_db:
                    _split_sum_kernel[(triton.cdiv(c_out, block),)](db_out, db, c_out, SPLIT=split, BLOCK=block)
            if not need_dw:  # the bias alone needed a gradient: it came out of the same pass
                dw = None
        return dx, dw, db, None, None, None, None


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    groups: int = 1,
    activation: str | None = None,
) -> torch.Tensor:
    """``activation(torch.nn.functional.conv2d(input, weight, bias, stride, padding, groups=groups))`` in one kernel.

    input: (N, C, H, W), contiguous NCHW or channels_last (anything else is made contiguous first). weight:
    (C_out, C / groups, KH, KW), any kernel size. bias: (C_out,) or None. All share one dtype (float32, float16 or
    bfloat16) and one device; products accumulate in float32; float32 inputs use TF32 only where
    torch.backends.cudnn allows it (as cuDNN would). stride: int or (sh, sw), >= 1. padding: int or (ph, pw), >= 0,
    zeros. groups: divides C and C_out. activation: None, "relu", "tanh" or "sigmoid".

    Returns (N, C_out, OH, OW) with OH = (H + 2 ph - KH) // sh + 1 (likewise OW), in the input's dtype and memory
    format. channels_last input and weight are the fast path (see the module docstring).
    """
    _common.check_tensor("input", input, ndim=4)
    _common.check_tensor("weight", weight, ndim=4)
    _common.check_same("weight", weight, "input", input)
    groups = _common.check_int("groups", groups, minimum=1)
    sh, sw = _common.check_pair("stride", stride, minimum=1)
    ph, pw = _common.check_pair("padding", padding, minimum=0)
    n_batch, c_in, h, w = input.shape
    c_out, cg, kh, kw = weight.shape
    if c_in == 0:
        raise ValueError("input has no channels")
    if c_in % groups:
        raise ValueError(f"input has {c_in} channels, not divisible by groups={groups}")
    if c_out % groups:
        raise ValueError(f"weight has {c_out} output channels, not divisible by groups={groups}")
    if cg != c_in // groups:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} expects {cg} input channels per group, but the input has "
            f"{c_in} channels in {groups} group(s), i.e. {c_in // groups} per group"
        )
    if kh == 0 or kw == 0 or c_out == 0:
        raise ValueError(f"weight of shape {tuple(weight.shape)} is empty")
    if bias is not None:
        _common.check_tensor("bias", bias, ndim=1)
        _common.check_same("bias", bias, "input", input)
        if bias.shape[0] != c_out:
            raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({c_out},)")
    code = _common.activation_code(activation)
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(
            f"input of spatial size {h}x{w} with padding ({ph}, {pw}) is smaller than the {kh}x{kw} kernel"
        )
    _common.check_int32_extent("one input image", c_in * h * w)
    _common.check_int32_extent("one output image", c_out * oh * ow)
    _common.check_int32_extent("the output pixels (N * OH * OW)", n_batch * oh * ow)

    return Conv2dFunction.apply(input, weight, bias, (sh, sw), (ph, pw), groups, code)
