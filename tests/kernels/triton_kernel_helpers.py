"""Shared pieces of the kernel tests: the error metric, per-dtype tolerances and dtype parametrisation."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
ON_GPU = HAS_CUDA and not INTERPRETING

# bf16 runs only on a GPU: the interpreter computes bf16 dot products wrongly, silently.
BF16 = pytest.param(
    torch.bfloat16,
    marks=pytest.mark.skipif(not ON_GPU, reason="bfloat16 needs a GPU (the Triton interpreter gets bf16 wrong)"),
    id="bfloat16",
)
FP32 = pytest.param(torch.float32, id="float32")
FP16 = pytest.param(torch.float16, id="float16")
DTYPES = [FP32, FP16, BF16]

# Relative Frobenius error bounds. Elementwise ops round once to the output dtype; GEMMs accumulate in float32 (the
# IEEE float32 bound covers the summation order over K in the thousands) and round once at the end.
ELEMENTWISE_TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
GEMM_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}

# Gradients: the incoming gradient is rounded through the activation's derivative to the dtype before the GEMMs, as
# the unfused torch chain stores it, then accumulated in float32: one more rounding than a forward GEMM.
GRAD_TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}

needs_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU (Triton runs on the CPU interpreter here)")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, in float64 on the CPU."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    return ((a - e).norm() / e.norm()).item()


def ref(t: torch.Tensor | None) -> torch.Tensor | None:
    """The float64 CPU copy a reference is computed from (the inputs as the kernel sees them, after rounding)."""
    return None if t is None else t.detach().to("cpu", torch.float64)


def randn(*shape, dtype=torch.float32, device="cpu", scale=1.0, channels_last=False) -> torch.Tensor:
    t = (torch.randn(*shape, dtype=torch.float32) * scale).to(device=device, dtype=dtype)
    return t.to(memory_format=torch.channels_last) if channels_last else t


@contextlib.contextmanager
def fp32_precision(matmul: str, conv: str):
    """Set torch's TF32 switches for cuBLAS matmuls and cuDNN convolutions ("ieee" or "tf32"), then restore them."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
        torch.backends.cuda.matmul.fp32_precision = matmul
        torch.backends.cudnn.conv.fp32_precision = conv
        try:
            yield
        finally:
            torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved
    else:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = matmul == "tf32"
        torch.backends.cudnn.allow_tf32 = conv == "tf32"
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def leaves(*tensors):
    """Fresh leaves that require a gradient (None stays None)."""
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def ref_leaves(*tensors):
    """float64 CPU leaves that require a gradient: the reference side of a gradient check."""
    return [None if t is None else t.detach().to("cpu", torch.float64).requires_grad_() for t in tensors]


def assert_grads_close(got, want, tol, names=None):
    """Each gradient in ``got`` against the float64 one in ``want`` (relative Frobenius error), naming the worst."""
    names = names or [f"grad {i}" for i in range(len(got))]
    for name, g, w in zip(names, got, want):
        if w is None:
            continue
        assert g is not None, f"{name}: no gradient"
        assert g.shape == w.shape, (name, g.shape, w.shape)
        err = rel_err(g, w)
        assert err < tol, f"{name}: relative error {err:.3g} over {tol:g}"

#: The activations a fused epilogue applies, as torch functions (None: identity).
ACTS = {None: lambda t: t, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}

# conv2d's shapes, forward and backward: (N, C, H, W, C_out, KH, KW, stride, padding, groups). Batch 1 and 3, spatial
# sizes that are no multiple of a block, 3/5/48/96 channels, groups 1/2/4, strides 1-4 (strided input gradients mask
# the taps the stride skips), padding 0-2. C / groups < 16 takes the flat-K path, >= 16 the channels-inner path.
CONV_CASES = {
    "conv1-like 11x11 s4 p2": (1, 3, 31, 31, 8, 11, 11, 4, 2, 1),
    "3x3 s1 p1 C5": (3, 5, 13, 13, 7, 3, 3, 1, 1, 1),
    "3x3 s2 p0 g4 Cg2": (1, 8, 13, 13, 12, 3, 3, 2, 0, 4),
    "rect 3x5 s(2,1) p(1,2)": (3, 5, 27, 13, 6, 3, 5, (2, 1), (1, 2), 1),
    "conv2-like 5x5 p2 g2 Cg24": (3, 48, 13, 13, 32, 5, 5, 1, 2, 2),
    "5x5 s3 p2 g2 Cg48": (1, 96, 27, 27, 16, 5, 5, 3, 2, 2),
    "1x1 C96": (3, 96, 13, 13, 20, 1, 1, 1, 0, 1),
    "3x3 s2 p1 g4 Cg16": (1, 64, 13, 13, 24, 3, 3, 2, 1, 4),
    "rect 5x3 s(1,3) p(2,0) g2": (3, 32, 27, 13, 6, 5, 3, (1, 3), (2, 0), 2),
    "3x3 s4 p1 Cg48": (1, 48, 31, 31, 16, 3, 3, 4, 1, 1),
}


def conv_inputs(case, dtype=torch.float32, device="cpu", channels_last=False, bias=True, weight_channels_last=False):
    """(x, weight, bias, conv2d keyword arguments) for one of CONV_CASES, weights scaled to keep outputs near 1."""
    n, c, h, w, c_out, kh, kw, stride, padding, groups = case
    x = randn(n, c, h, w, dtype=dtype, device=device, channels_last=channels_last)
    wt = randn(c_out, c // groups, kh, kw, dtype=dtype, device=device, scale=(c // groups * kh * kw) ** -0.5,
               channels_last=weight_channels_last)
    b = randn(c_out, dtype=dtype, device=device) if bias else None
    return x, wt, b, dict(stride=stride, padding=padding, groups=groups)
