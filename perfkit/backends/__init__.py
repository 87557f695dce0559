"""Backends: the implementations a case can run on, registered in one place.

A backend builds an `AlexNetModule` for a run of layer specs on a device and dtype, from the parameters shared by every
backend of a run, and gives the optimizer its train step uses. The torch backend (stock operators) is the reference and
the baseline. Adding a backend is one module with a `Backend` subclass, and one line in `_register_builtin` below.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from perfkit.specs import LayerSpec

#: SGD as in the paper: momentum 0.9, weight decay 5e-4 (learning rate 0.01, the paper's starting rate).
SGD_LR = 0.01
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 5e-4


class Backend:
    """Base class: one way of running AlexNet layers."""

    name = "backend"
    description = ""
    is_baseline = False
    passes = ("forward", "backward", "train_step")
    devices = ("cpu", "cuda")
    supports_autocast = True  # runs torch operators, which torch.autocast can cast (case option "autocast")

    def unavailable_reason(self, device: str, dtype: str, pass_name: str) -> str | None:
        """Why this backend cannot run a case here (a sentence), or None when it can."""
        kind = device.split(":")[0]
        if kind not in self.devices:
            return f"the {self.name} backend does not run on {kind}"
        if pass_name not in self.passes:
            return f"the {self.name} backend has no {pass_name} pass yet"
        if kind == "cuda" and not torch.cuda.is_available():
            return "no CUDA device is available"
        if dtype == "tf32" and kind != "cuda":
            return "TF32 exists only on CUDA tensor cores"
        if dtype == "bfloat16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bfloat16 support"
        return None

    def build(self, layers: Sequence[LayerSpec], parameters: dict[str, torch.Tensor], device: str,
              dtype: torch.dtype) -> torch.nn.Module:
        raise NotImplementedError

    def make_optimizer(self, params, lr: float = SGD_LR, weight_decay: float = SGD_WEIGHT_DECAY) -> torch.optim.Optimizer:
        """The paper's SGD (momentum 0.9) over `params`; a study may change the rate and weight decay."""
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay)

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


@contextlib.contextmanager
def float32_precision(dtype: str) -> Iterator[None]:
    """TF32 on for the "tf32" dtype, off for everything else ("float32" means IEEE float32, as GPUs did in 2012).

    Sets torch's matmul and cuDNN flags, which the triton kernels follow too, and restores them afterwards."""
    allow = dtype == "tf32"
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in BACKENDS:
        raise ValueError(f"backend {backend.name!r} is already registered")
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}") from None


def baseline_backend() -> Backend:
    return next(b for b in BACKENDS.values() if b.is_baseline)


def _register_builtin() -> None:
    from perfkit.backends.onnx_runtime import OnnxRuntimeBackend
    from perfkit.backends.torch_compile import CompileBackend
    from perfkit.backends.torch_eager import ChannelsLastBackend, TorchBackend
    from perfkit.backends.triton_kernels import TritonBackend

    register(TorchBackend())
    register(TritonBackend())
    register(CompileBackend())
    register(ChannelsLastBackend())
    register(OnnxRuntimeBackend())


_register_builtin()
