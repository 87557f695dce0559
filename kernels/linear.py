"""Fully connected layer: a tiled GEMM ``y = x @ w.T + b`` with the activation and dropout fused into the epilogue.

The structure follows Triton's matmul tutorial: each program owns a BLOCK_M x BLOCK_N tile of y and walks K in BLOCK_K
steps, accumulating in float32 with tl.dot. Programs are ordered in groups of GROUP_M tile-rows so that concurrently
running programs share the same strips of x and w in L2. AlexNet's classifier at batch 128 is a skinny GEMM (M = 128,
K = 9216, N = 4096) bound by reading the 75 MB fc6 weight once, so the sweep also has narrow-N tiles that give the
132 SMs of an H100 enough programs to stream that weight.

When even that leaves most SMs idle (few output tiles, deep K: fc6/fc7 at batch <= 128), K is split: SPLIT_K programs
per output tile each reduce one slice of K into a float32 workspace, and a second kernel sums the slices in a fixed
order (deterministic) and applies the same epilogue. The split costs one write and one read of SPLIT_K * N * out
floats, small next to the weight it lets every SM stream.

Backward of y = dropout(act(x @ w.T + b)):

1. one pass over the (N, out) output computes dz = dy * mask / (1 - p) * act'(a) (the dropout mask regenerated from
   the seed, act' from the saved output: a = y / scale where kept, see ``_common.activation_grad``) and, in the same
   pass, the bias gradient db = sum over the batch of dz. dz is (batch, out): at AlexNet's batch 128 it is 1 or 2 MB,
   small next to the weight, so it is written once rather than recomputed inside both GEMMs (where every program of
   the input-gradient GEMM would redo the Philox draws of its dz tiles, once per tile of x: 72 times for fc6).
2. dx = dz @ w and dw = dz.T @ x are the same tiled GEMM kernels as the forward (they take any strides, so the
   transposes are views, never copies), split-K included where the reduction is deep and the output small (dx of fc6
   and fc7 at batch <= 128). dx of a 4-D input (fc6 after pool5) is returned in NCHW order, as torch.flatten would.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import _common
from ._common import activation_grad, apply_activation, dropout_keep, gemm_config, grouped_tile


def gemm_configs() -> list[triton.Config]:
    """Autotune sweep for the linear kernel (H100-class GPUs), or the one interpreter config."""

    cfg = gemm_config
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


@triton.jit
def _epilogue(acc, offs_m, offs_n, M, N, b_ptr, p, scale, seed, y_dtype: tl.constexpr,
              HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, DROPOUT: tl.constexpr):
    """bias, activation, dropout on a float32 tile of y; returns it in y's dtype."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    acc = apply_activation(acc, ACTIVATION)
    if DROPOUT:
        # Round to the output dtype first, then scale: exactly what dropout() does to the stored activation. The mask
        # offsets are row-major indices of y (contiguous), the offsets dropout() would use on it.
        kept = acc.to(y_dtype).to(tl.float32) * scale
        keep = dropout_keep(seed, offs_m.to(tl.int64)[:, None] * N + offs_n[None, :], p)
        acc = tl.where(keep, kept, 0.0)
    return acc.to(y_dtype)


def _prune_gemm(configs, named_args, **kwargs):
    return _common.fit_pipeline_stages(configs, named_args["x_ptr"].element_size())


def _interpreter_gemm_blocks() -> dict:
    """Tiles for the interpreter, fitted to the GEMM: its tl.dot costs every padded multiply-add (numpy's untyped
    matmul loop, ~1e8 per second) and its loops cost per step, so a batch-1 fc6 gets a 1-row tile and deep K steps
    (a 64-row tile would do 64 times the work), and a K = batch weight gradient gets wide tiles (few programs)."""

    def block_m(a):
        return _common.fit_block(a["M"], low=1, high=256 if a["K"] <= 64 else 128)

    def block_k(a):
        return _common.fit_block(a["K"], low=1, high=max(64, 4096 // block_m(a)))

    return {"BLOCK_M": block_m, "BLOCK_N": lambda a: _common.fit_block(a["N"], low=16, high=256),
            "BLOCK_K": block_k, "GROUP_M": lambda a: 8}


# The strides are in the key: the backward runs the same kernel on transposed views (dx = dz @ w, dw = dz.T @ x),
# whose (M, N, K) can equal a forward's (fc7's dx and forward are both 128 x 4096 x 4096) but not its best tile.
@_common.tuned(configs=gemm_configs(),
               key=["M", "N", "K", "stride_xm", "stride_xk", "stride_wn", "stride_wk", "DOT_PRECISION"],
               prune=_prune_gemm, interpreter_blocks=_interpreter_gemm_blocks())
@triton.jit(do_not_specialize=["seed"])  # a new seed every call must not compile a new binary
def _linear_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    p, scale, seed,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

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

    y = _epilogue(acc, offs_m, offs_n, M, N, b_ptr, p, scale, seed, y_ptr.dtype.element_ty,
                  HAS_BIAS, ACTIVATION, DROPOUT)
    out_offsets = offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptr + out_offsets, y, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def splitk_configs() -> list[triton.Config]:
    """Autotune sweep for the split-K partial GEMM: full-size tiles, since the split already provides the programs."""

    cfg = gemm_config
    gpu = [
        cfg(128, 128, 64, 8, 4),
        cfg(128, 128, 64, 4, 4),
        cfg(128, 128, 128, 8, 3),
        cfg(128, 64, 64, 4, 5),
        cfg(64, 128, 64, 4, 5),
        cfg(128, 256, 64, 8, 3),
    ]
    return _common.select_configs(gpu, cfg(64, 128, 128, 4, 1))


@_common.tuned(configs=splitk_configs(),
               key=["M", "N", "K", "K_PER_SPLIT", "stride_xm", "stride_xk", "stride_wn", "stride_wk",
                    "DOT_PRECISION"],
               prune=_prune_gemm)
@triton.jit
def _linear_splitk_kernel(
    x_ptr, w_ptr, ws_ptr,
    M, N, K, K_PER_SPLIT,
    stride_xm, stride_xk, stride_wn, stride_wk,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    split = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    k_start = split * K_PER_SPLIT
    k_stop = min(k_start + K_PER_SPLIT, K)
    rows = (offs_m % M).to(tl.int64)
    cols = (offs_n % N).to(tl.int64)
    x_ptrs = x_ptr + rows[:, None] * stride_xm + (k_start + offs_k)[None, :] * stride_xk
    w_ptrs = w_ptr + cols[None, :] * stride_wn + (k_start + offs_k)[:, None] * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(k_stop - k_start, BLOCK_K)):
        k_left = k_stop - k_start - k * BLOCK_K
        a = tl.load(x_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    ws_offsets = (split * M + offs_m).to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(ws_ptr + ws_offsets, acc, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit(do_not_specialize=["seed"])  # a new seed every call must not compile a new binary
def _linear_splitk_epilogue_kernel(
    ws_ptr, b_ptr, y_ptr, M, N, MN, p, scale, seed,
    SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    offsets = offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for split in tl.static_range(SPLIT_K):  # a fixed order: the result does not depend on scheduling
        acc += tl.load(ws_ptr + split * MN + offsets, mask=mask, other=0.0)
    y = _epilogue(acc, offs_m, offs_n, M, N, b_ptr, p, scale, seed, y_ptr.dtype.element_ty,
                  HAS_BIAS, ACTIVATION, DROPOUT)
    tl.store(y_ptr + offsets, y, mask=mask)


def choose_split_k(M: int, N: int, K: int, device: torch.device) -> int:
    """How many slices to cut K into: enough for 128 x 128 output tiles to cover the SMs, each slice >= 1024 deep,
    at most 8; 1 (no split) when the tiles alone cover half the SMs. Always 1 under the interpreter."""
    if _common.is_interpreting() or (device.type != "cuda" and _common.recording_target() is None):
        return 1
    sms = _common.multiprocessor_count(device)
    tiles = triton.cdiv(M, 128) * triton.cdiv(N, 128)
    if 2 * tiles >= sms:
        return 1
    return max(1, min(sms // tiles, K // 1024, 8))


def linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    dropout_p: float = 0.0,
    dropout_seed: int | None = None,
) -> torch.Tensor:
    """``dropout(activation(input @ weight.T + bias), dropout_p, seed=dropout_seed)``, fused into the GEMM's epilogue
    (one kernel; two when a short, deep GEMM is split along K, see the module docstring).

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

    return LinearFunction.apply(input, weight, bias, code, dropout_p, seed)


def _dropout_scale(p: float) -> float:
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def matmul_nt(x: torch.Tensor, weight: torch.Tensor, bias=None, code: int = 0, dropout_p: float = 0.0,
              seed: int = 0) -> torch.Tensor:
    """``epilogue(x @ weight.T)`` for 2-D x (M, K) and weight (N, K) of any strides (transposed views are fine):
    the tiled GEMM, or the split-K pair for short deep GEMMs. Returns a contiguous (M, N) tensor of x's dtype."""
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    if K == 0:  # an empty reduction: dw of an empty batch
        return y.zero_()
    use_dropout = dropout_p > 0.0
    precision = _common.dot_precision(x.dtype, _common.allow_tf32_matmul())
    scale = _dropout_scale(dropout_p)
    b = bias if bias is not None else x  # a placeholder pointer when HAS_BIAS is False
    split_k = choose_split_k(M, N, K, x.device)
    k_per_split = triton.cdiv(triton.cdiv(K, split_k), 128) * 128 if split_k > 1 else K
    split_k = triton.cdiv(K, k_per_split)  # slices are whole multiples of 128 (aligned loads), so maybe fewer
    if split_k == 1:

        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

        _linear_kernel[grid](
            x, weight, b, y,
            M, N, K,
            x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
            dropout_p, scale, seed,
            HAS_BIAS=bias is not None, ACTIVATION=code, DROPOUT=use_dropout, DOT_PRECISION=precision,
        )
        return y

    workspace = torch.empty((split_k, M, N), dtype=torch.float32, device=x.device)

    def split_grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), split_k)

    _linear_splitk_kernel[split_grid](
        x, weight, workspace, M, N, K, k_per_split,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1),
        DOT_PRECISION=precision,
    )
    block_m, block_n = 32, 128
    _linear_splitk_epilogue_kernel[(triton.cdiv(M, block_m), triton.cdiv(N, block_n))](
        workspace, b, y, M, N, M * N, dropout_p, scale, seed,
        SPLIT_K=split_k, HAS_BIAS=bias is not None, ACTIVATION=code, DROPOUT=use_dropout,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4,
    )
    return y


@triton.jit(do_not_specialize=["seed"])  # a new seed every call must not compile a new binary
def _linear_dz_kernel(
    dy_ptr, y_ptr, dz_ptr, db_ptr,
    M, N, stride_dym, stride_dyn, p, scale, seed,
    ACTIVATION: tl.constexpr, DROPOUT: tl.constexpr, HAS_DB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dz = dy through the dropout mask and the activation, for a column strip of the (M, N) output, and the strip's
    bias gradient (the column sums of dz, in row order: deterministic). y and dz are contiguous (M, N)."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask = (offs_m[:, None] < M) & n_ok[None, :]
        offsets = offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
        dy = tl.load(dy_ptr + offs_m.to(tl.int64)[:, None] * stride_dym + offs_n[None, :] * stride_dyn,
                     mask=mask, other=0.0).to(tl.float32)
        if DROPOUT:
            keep = dropout_keep(seed, offsets, p)
            dy = tl.where(keep, dy * scale, 0.0)
        if ACTIVATION != 0:
            y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            if DROPOUT:
                y = tl.where(keep, y / scale, 0.0)  # the activation's output where kept (exact for p = 0.5)
            dy = activation_grad(dy, y, ACTIVATION)
        dz = dy.to(dz_ptr.dtype.element_ty)
        tl.store(dz_ptr + offsets, dz, mask=mask)
        if HAS_DB:
            db += tl.sum(dz.to(tl.float32), axis=0)
    if HAS_DB:
        tl.store(db_ptr + offs_n, db.to(db_ptr.dtype.element_ty), mask=n_ok)


def dz_launch() -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of the dz pass: column strips 128 wide, 32 rows at a time."""
    return (32, 128, 4) if not _common.is_interpreting() else (64, 256, 1)


class LinearFunction(torch.autograd.Function):
    """dropout(act(x @ w.T + b)) with its backward on the same GEMM kernels (see the module docstring)."""

    @staticmethod
    def forward(ctx, input, weight, bias, code, dropout_p, seed):
        n_batch = input.shape[0]
        x = input.reshape(n_batch, -1)
        y = matmul_nt(x, weight, bias, code, dropout_p, seed)
        ctx.code, ctx.dropout_p, ctx.seed = code, dropout_p, seed
        ctx.input_shape = input.shape
        ctx.has_bias = bias is not None
        # x is needed for the weight gradient, the weight for the input gradient, y for act' (not for identity).
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None,
                              weight if ctx.needs_input_grad[0] else None,
                              y if code != 0 else None)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, y = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        code, p, seed = ctx.code, ctx.dropout_p, ctx.seed
        M, N = grad_output.shape
        dz = grad_output
        db = None
        if code != 0 or p > 0.0 or (need_db and ctx.has_bias):
            dz = torch.empty((M, N), dtype=grad_output.dtype, device=grad_output.device)
            db = torch.empty((N,), dtype=grad_output.dtype, device=grad_output.device) if need_db else None
            if dz.numel():
                block_m, block_n, num_warps = dz_launch()
                _linear_dz_kernel[(triton.cdiv(N, block_n),)](
                    grad_output, y if y is not None else dz, dz, db if db is not None else dz,
                    M, N, grad_output.stride(0), grad_output.stride(1), p, _dropout_scale(p), seed,
                    # p == 1 drops everything: act' is never needed (and y / scale would divide by 0)
                    ACTIVATION=code if p < 1.0 else 0, DROPOUT=p > 0.0, HAS_DB=db is not None,
                    BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
                )
            elif db is not None:
                db.zero_()
        dx = dw = None
        if need_dx:
            dx = matmul_nt(dz, weight.t()).view(ctx.input_shape)  # (M, N) @ (N, K)
        if need_dw:
            dw = matmul_nt(dz.t(), x.t())  # (N, M) @ (M, K)
        return dx, dw, db, None, None, None
