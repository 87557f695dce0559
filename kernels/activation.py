"""Standalone elementwise activations: relu, tanh, sigmoid, with their backward.

Memory-bound: one read and one write per element, so the kernel is a flat loop over the tensor's storage with large
blocks (several 16-byte vectors per thread). The storage of a dense tensor (NCHW or channels_last) is walked in memory
order and the output gets the same layout, so no layout is ever converted.

Backward: dx = dy * act'(z), where act' is computed from the saved **output** (relu' = [y > 0], tanh' = 1 - y**2,
sigmoid' = y (1 - y)); the input is not kept. One more flat pass: read dy and y, write dx, in y's layout (an incoming
gradient in another layout is copied to it first).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common
from ._common import activation_grad, apply_activation


def elementwise_launch() -> tuple[int, int]:
    """(BLOCK, num_warps) for the flat elementwise kernels. 4096 elements over 8 warps is 16 per thread: 2 (fp32) or 4
    (fp16) 16-byte accesses in flight per thread, enough to saturate HBM on an H100 without a tail of tiny programs."""
    return (4096, 8) if not _common.is_interpreting() else (8192, 1)


@triton.jit
def _activation_kernel(x_ptr, y_ptr, n_elements, ACTIVATION: tl.constexpr, BLOCK: tl.constexpr):
    # int64 start: activations of AlexNet at batch 1024 approach 2**31 elements once they are stacked with others.
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    y = apply_activation(x.to(tl.float32), ACTIVATION)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _activation_backward_kernel(dy_ptr, y_ptr, dx_ptr, n_elements, ACTIVATION: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offsets = start + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    dy = tl.load(dy_ptr + offsets, mask=mask).to(tl.float32)
    y = tl.load(y_ptr + offsets, mask=mask).to(tl.float32)
    dx = activation_grad(dy, y, ACTIVATION)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def flat_view(input: torch.Tensor) -> torch.Tensor:
    """The input itself when its storage is dense in a standard layout (so that ``empty_like`` mirrors it element for
    element), else a contiguous copy."""
    if input.is_contiguous():
        return input
    if input.dim() == 4 and input.is_contiguous(memory_format=torch.channels_last):
        return input
    return input.contiguous()


def activation_backward(grad_output: torch.Tensor, output: torch.Tensor, code: int) -> torch.Tensor:
    """dx = grad_output * act'(z) from the activation's dense ``output``; dx has ``output``'s layout."""
    dy = _common.same_layout(grad_output, output)
    dx = torch.empty_like(output)
    n = output.numel()
    if n == 0:
        return dx
    block, num_warps = elementwise_launch()
    _activation_backward_kernel[(triton.cdiv(n, block),)](dy, output, dx, n, ACTIVATION=code, BLOCK=block,
                                                           num_warps=num_warps)
    return dx


class ActivationFunction(torch.autograd.Function):
    """relu / tanh / sigmoid with a Triton backward that reads only the saved output."""

    @staticmethod
    def forward(ctx, input, code):
        x = flat_view(input)
        y = torch.empty_like(x)
        n = x.numel()
        if n:
            block, num_warps = elementwise_launch()
            _activation_kernel[(triton.cdiv(n, block),)](x, y, n, ACTIVATION=code, BLOCK=block, num_warps=num_warps)
        ctx.code = code
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return activation_backward(grad_output, y, ctx.code), None


def _activation(input: torch.Tensor, name: str) -> torch.Tensor:
    _common.check_tensor("input", input)
    code = _common.activation_code(name)
    return ActivationFunction.apply(input, code)


def relu(input: torch.Tensor) -> torch.Tensor:
    """max(x, 0) elementwise (NaN stays NaN). Any shape; float32, float16 or bfloat16; the output has the input's shape,
    dtype and memory format."""
    return _activation(input, "relu")


def tanh(input: torch.Tensor) -> torch.Tensor:
    """tanh(x) elementwise, computed in float32. Any shape; float32, float16 or bfloat16."""
    return _activation(input, "tanh")


def sigmoid(input: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-x)) elementwise, computed in float32. Any shape; float32, float16 or bfloat16."""
    return _activation(input, "sigmoid")
