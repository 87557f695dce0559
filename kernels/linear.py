"""Fully connected layer: a tiled GEMM ``y = x @ w.T + b`` with the activation and dropout fused into the epilogue.

The structure follows Triton's matmul tutorial: each program owns a BLOCK_M x BLOCK_N tile of y and walks K in BLOCK_K
steps, accumulating in float32 with tl.dot. Programs are ordered in groups of GROUP_M tile-rows so that concurrently
running programs share the same strips of x and w in L2. AlexNet's classifier at batch 128 is a skinny GEMM (M = 128,
K = 9216, N = 4096) bound by reading the 75 MB fc6 weight once, so the sweep also has narrow-N tiles that give the
132 SMs of an H100 enough programs to stream that weight.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import _common
from ._common import apply_activation, dropout_keep


def gemm_configs() -> list[triton.Config]:
    """Autotune sweep for the linear kernel (H100-class GPUs), or the one interpreter config."""

    def cfg(bm, bn, bk, warps, stages, group_m=8):
        return triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}, num_warps=warps, num_stages=stages
        )

    gpu = [
        # large-batch tiles (KernelBench's batch 1024): wgmma-sized, deep pipelines
        cfg(128, 256, 64, 8, 3),
        cfg(256, 128, 64, 8, 3),
        cfg(128, 128, 64, 8, 4),
        cfg(128, 128, 32, 4, 4),
        cfg(128, 64, 64, 4, 4),
        cfg(64, 128, 64, 4, 4),
        # skinny GEMMs (batch <= 128): many narrow programs, each streaming its slice of the weight
        cfg(128, 32, 128, 4, 4),
        cfg(64, 64, 128, 4, 4),
        cfg(64, 32, 128, 4, 5),
        cfg(32, 64, 128, 4, 5),
        cfg(16, 64, 256, 4, 4),
    ]
    # Big blocks keep the interpreter fast: its cost is per program and per loop iteration, not per element.
    return _common.select_configs(gpu, cfg(64, 128, 128, 4, 1))


@triton.autotune(configs=gemm_configs(), key=["M", "N", "K", "DOT_PRECISION"])
@triton.jit
def _linear_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    p, scale, seed,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped ordering: walk GROUP_M tile-rows down a column of tiles before moving right, for L2 reuse.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows and columns past the edge wrap around instead of being masked: the loads stay unpredicated along M and N
    # and the extra results are never stored.
    rows = (offs_m % M).to(tl.int64)
    cols = (offs_n % N).to(tl.int64)
    x_ptrs = x_ptr + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + cols[None, :] * stride_wn + offs_k[:, None] * stride_wk  # a BLOCK_K x BLOCK_N tile of w.T

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(x_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    acc = apply_activation(acc, ACTIVATION)

    y_dtype = y_ptr.dtype.element_ty
    out_offsets = offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    if DROPOUT:
        # Round to the output dtype first, then scale: exactly what dropout() does to the stored activation. The mask
        # offsets are row-major indices of y (contiguous), the offsets dropout() would use on it.
        kept = acc.to(y_dtype).to(tl.float32) * scale
        keep = dropout_keep(seed, offs_m.to(tl.int64)[:, None] * N + offs_n[None, :], p)
        acc = tl.where(keep, kept, 0.0)
    out_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(y_ptr + out_offsets, acc.to(y_dtype), mask=out_mask)


def linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    dropout_p: float = 0.0,
    dropout_seed: int | None = None,
) -> torch.Tensor:
    """``dropout(activation(input @ weight.T + bias), dropout_p, seed=dropout_seed)`` in one kernel.

    input: (N, in), or (N, C, H, W) which is flattened to (N, C*H*W) as AlexNet's fc6 needs (any memory format: the
    flattening follows NCHW order, as torch.flatten does). weight: (out, in) as in torch. bias: (out,) or None.
    All three share one dtype (float32, float16 or bfloat16) and one device; products accumulate in float32; float32
    inputs use TF32 only where torch.backends.cuda.matmul allows it. activation: None, "relu", "tanh" or "sigmoid".
    dropout_p in [0, 1]: the dropout mask equals ``dropout(y, dropout_p, seed=dropout_seed)``'s on the (N, out) output,
    so the fused call matches linear, then the activation, then dropout with the same seed; ``dropout_seed=None`` draws
    one from torch's default generator. Returns a contiguous (N, out) tensor of the input dtype.
    """
    _common.check_tensor("input", input, ndim=(2, 4))
    _common.check_tensor("weight", weight, ndim=2)
    _common.check_same("weight", weight, "input", input)
    n_batch = input.shape[0]
    in_features = math.prod(input.shape[1:])
    if in_features == 0:
        raise ValueError(f"input of shape {tuple(input.shape)} has no features")
    out_features = weight.shape[0]
    if weight.shape[1] != in_features:
        raise ValueError(
            f"weight has shape {tuple(weight.shape)} but the input has {in_features} features per row "
            f"(input shape {tuple(input.shape)}); weight must be (out_features, {in_features})"
        )
    if bias is not None:
        _common.check_tensor("bias", bias, ndim=1)
        _common.check_same("bias", bias, "input", input)
        if bias.shape[0] != out_features:
            raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({out_features},)")
    code = _common.activation_code(activation)
    dropout_p = _common.check_probability("dropout_p", dropout_p)
    if dropout_seed is not None:
        _common.check_seed(dropout_seed)
    use_dropout = dropout_p > 0.0
    seed = _common.check_seed(dropout_seed) if use_dropout else 0

    x = input.reshape(n_batch, in_features)
    y = torch.empty((n_batch, out_features), dtype=input.dtype, device=input.device)
    if y.numel() == 0:
        return y
    precision = _common.dot_precision(input.dtype, _common.allow_tf32_matmul())
    scale = 0.0 if dropout_p == 1.0 else 1.0 / (1.0 - dropout_p)
    M, N, K = n_batch, out_features, in_features

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _linear_kernel[grid](
        x, weight, bias if bias is not None else x, y,
        M, N, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
        dropout_p, scale, seed,
        HAS_BIAS=bias is not None, ACTIVATION=code, DROPOUT=use_dropout, DOT_PRECISION=precision,
    )
    return y
