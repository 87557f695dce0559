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
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common
from ._common import apply_activation


def conv_configs() -> list[triton.Config]:
    """Autotune sweep for the implicit-GEMM convolution (H100-class GPUs), or the one interpreter config."""

    def cfg(bm, bn, bk, warps, stages, group_m=8):
        return triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}, num_warps=warps, num_stages=stages
        )

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
    ]
    return _common.select_configs(gpu, cfg(128, 64, 64, 4, 1))


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


@triton.autotune(
    configs=conv_configs(),
    key=["M", "KG", "CG", "KH", "KW", "stride_h", "stride_w", "CHANNELS_INNER", "Y_CHANNELS_LAST", "DOT_PRECISION"],
    prune_configs_by={"early_config_prune": _prune},
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
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

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

    x, fmt = _common.dense_format(input)
    channels_last = fmt == torch.channels_last
    y = torch.empty((n_batch, c_out, oh, ow), dtype=input.dtype, device=input.device, memory_format=fmt)
    if y.numel() == 0:
        return y

    channels_inner = cg >= 16
    if channels_inner:
        # The gather wants channels contiguous, in the input and in the filter alike.
        x = x.contiguous(memory_format=torch.channels_last)
        wk = weight.contiguous(memory_format=torch.channels_last)
        c_fastest = True
    else:
        c_fastest = channels_last
        wk = weight.contiguous(memory_format=torch.channels_last if c_fastest else torch.contiguous_format)

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
