"""One nn.Module for any run of consecutive layer specs, executed through a backend's ops.

Every backend runs the same module: the torch backend hands it stock `torch.nn.functional` operators, the triton backend
the kernels of `perfkit.kernels`. Parameters are registered under the layer's name (`conv1.weight`, `fc6.bias`), so a
state dict moves between backends unchanged and every backend of a spec can share one set of parameters.

A backend whose ops can fuse (`ops.fuses`) gets its layers grouped into stages: conv + activation, linear + activation
(+ dropout), LRN + max-pool. Otherwise each layer is its own stage.

Dropout and correctness: two backends draw different dropout masks, so their outputs cannot be compared directly. With
`capture_for_reference` set, each dropout stage records which elements it kept (`output != 0`: where the input is 0
the mask does not matter); the reference then replays those masks (`replay_dropout_masks`) instead of drawing its own.

Choices and correctness: two ops decide by comparing values, and where the values are within rounding of each other
the float64 reference can decide the other way, sending the gradient elsewhere with nothing wrong. Max pooling: where
two values of a window nearly tie, the reference can pick the other one (one such near-tie in a network's backward
moved conv1's weight gradient by about 1e-3 relative, over the float32 tolerance). ReLU: a pre-activation within
rounding of zero can be positive in one dtype and not in the other, so the gradient passes in one only (seen in
alexnet2012-pool2x2's backward at batch 4: 1.3e-3 in conv3's gradients). With `capture_for_reference` set, a module
also records its choices (`captured_choices`, by layer name): for each max-pool stage of its own (not fused), which
input position each output took (torch's argmax over the backend's own input, in its own dtype); for each ReLU, fused
or not, where its output is positive. The reference replays them (`replay_choices`): it gathers its float64 values at
the pool's positions and multiplies by the ReLU's mask. Values are still computed in float64 and compared: only the
decisions between near-equal values are the backend's.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from perfkit.specs import (DTYPES, Activation, Conv, CrossEntropy, Dropout, LayerSpec, Linear, LocalResponseNorm,
                           MaxPool, Network)

TORCH_DTYPES = {name: getattr(torch, d.torch_name) for name, d in DTYPES.items()}


def torch_dtype(dtype: str) -> torch.dtype:
    try:
        return TORCH_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(TORCH_DTYPES)}") from None


class TorchOps:
    """Stock PyTorch operators, unfused: the reference implementation of every layer."""

    name = "torch"
    fuses = False

    @staticmethod
    def conv2d(x, weight, bias, stride, padding, groups):
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)

    @staticmethod
    def linear(x, weight, bias):
        return F.linear(x.flatten(1), weight, bias)

    @staticmethod
    def activation(x, function):
        if function == "relu":
            return F.relu(x)
        if function == "tanh":
            return torch.tanh(x)
        if function == "sigmoid":
            return torch.sigmoid(x)
        raise ValueError(f"unknown activation {function!r}")

    @staticmethod
    def local_response_norm(x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)

    @staticmethod
    def max_pool2d(x, kernel_size, stride, padding):
        return F.max_pool2d(x, kernel_size, stride=stride, padding=padding)

    @staticmethod
    def dropout(x, p, training):
        return F.dropout(x, p=p, training=training)

    @staticmethod
    def cross_entropy(logits, target):
        return F.cross_entropy(logits, target)


#: Whether AlexNetModule.forward runs each stage inside a named range (set by `layer_ranges()`; off in timed runs).
_LAYER_RANGES = False


@contextlib.contextmanager
def layer_ranges() -> Iterator[None]:
    """Within the block, every AlexNetModule runs each stage inside a `torch.profiler.record_function` range, and on
    a GPU also an NVTX range, named after the stage's layers ("conv1", "lrn1+pool1" when fused), so that a profiler
    attributes every op and kernel to a layer and Nsight Systems shows the same names. Outside it, forward checks one
    flag per call and opens no range."""
    global _LAYER_RANGES
    saved, _LAYER_RANGES = _LAYER_RANGES, True
    try:
        yield
    finally:
        _LAYER_RANGES = saved


@contextlib.contextmanager
def layer_range(name: str, cuda: bool) -> Iterator[None]:
    """One layer's range: a profiler range, and an NVTX range when the layer runs on a GPU."""
    with torch.profiler.record_function(name):
        if not cuda:
            yield
            return
        torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            torch.cuda.nvtx.range_pop()


def step_part(name: str, cuda: bool = False):
    """A range named `name` around a part of a step that is no layer (the backward call), while layer ranges are on;
    otherwise nothing."""
    return layer_range(name, cuda) if _LAYER_RANGES else contextlib.nullcontext()


@dataclass(frozen=True)
class Stage:
    """Consecutive layers that one backend call computes."""

    layers: tuple[LayerSpec, ...]

    @property
    def name(self) -> str:
        return "+".join(spec.name for spec in self.layers)


def plan_stages(layers: Sequence[LayerSpec], fuse: bool) -> list[Stage]:
    """Group layers into the calls a backend makes: one per layer, or with `fuse` the fusions the kernels offer."""
    if not fuse:
        return [Stage((spec,)) for spec in layers]
    stages, i = [], 0
    while i < len(layers):
        group = [layers[i]]
        nxt = lambda: layers[i + len(group)] if i + len(group) < len(layers) else None  # noqa: E731
        if isinstance(group[0], (Conv, Linear)) and isinstance(nxt(), Activation):
            group.append(nxt())
            if isinstance(group[0], Linear) and isinstance(nxt(), Dropout):
                group.append(nxt())
        elif isinstance(group[0], LocalResponseNorm) and isinstance(nxt(), MaxPool):
            group.append(nxt())
        stages.append(Stage(tuple(group)))
        i += len(group)
    return stages


class LayerParameters(nn.Module):
    def __init__(self, shapes: dict[str, tuple[int, ...]], device, dtype):
        super().__init__()
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))


class AlexNetModule(nn.Module):
    """Consecutive layers of a network (one layer, or all of them), run through `ops`.

    forward(x, target=None): x is (N, *layers[0].in_shape) in the module's dtype; target (N,) int64 class indices is
    needed only when the layers end with the loss, which then returns a 0-dim loss. With `channels_last`, 4-D
    parameters and the input are kept in channels_last memory format (activations follow it).
    """

    def __init__(self, layers: Sequence[LayerSpec], ops=TorchOps, device="cpu", dtype=torch.float32,
                 parameters: dict[str, torch.Tensor] | None = None, channels_last: bool = False):
        super().__init__()
        self.specs = tuple(layers)
        self.ops = ops
        self.channels_last = channels_last
        for spec in self.specs:
            if spec.param_shapes:
                self.add_module(spec.name, LayerParameters(spec.param_shapes, device, dtype))
        if parameters is not None:
            self.load_shared_parameters(parameters)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.stages = plan_stages(self.specs, getattr(ops, "fuses", False))
        self.capture_for_reference = False  # dropout masks and max-pool and ReLU choices (module docstring)
        self.captured_dropout_masks: dict[str, torch.Tensor] = {}
        self.replay_dropout_masks: dict[str, torch.Tensor] | None = None
        self.captured_choices: dict[str, torch.Tensor] = {}
        self.replay_choices: dict[str, torch.Tensor] | None = None

    def load_shared_parameters(self, parameters: dict[str, torch.Tensor]) -> None:
        """Copy this module's parameters out of a shared set (a superset is fine: a single layer takes its own)."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name not in parameters:
                    raise KeyError(f"shared parameters have no {name!r}")
                param.copy_(parameters[name])

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)  # once here, so no layer converts on every call
        if _LAYER_RANGES:  # profiling (perfkit.app.profile): each stage inside a range named after its layers
            for stage in self.stages:
                with layer_range(stage.name, x.is_cuda):
                    x = self._run_stage(stage, x, target)
            return x
        for stage in self.stages:
            x = self._run_stage(stage, x, target)
        return x

    # -- stages ---------------------------------------------------------------------------------------------------
    def _run_stage(self, stage: Stage, x, target):
        head, rest = stage.layers[0], stage.layers[1:]
        activation = rest[0].function if rest and isinstance(rest[0], Activation) else None
        dropout = rest[-1] if rest and isinstance(rest[-1], Dropout) else None
        ops = self.ops
        if isinstance(head, Conv):
            p = getattr(self, head.name)
            kwargs = {"activation": activation} if activation else {}
            y = ops.conv2d(x, p.weight, p.bias, head.stride, head.padding, head.groups, **kwargs)
            return self._relu_chosen(rest[0], y) if activation else y
        if isinstance(head, Linear):
            p = getattr(self, head.name)
            fuse_dropout = dropout is not None and self._dropout_active(dropout) and not self._replaying(dropout)
            kwargs = {"activation": activation} if activation else {}
            if fuse_dropout:
                kwargs["dropout_p"] = dropout.p
            y = ops.linear(x, p.weight, p.bias, **kwargs)
            if activation:  # with dropout fused, y > 0 also drops the dropped elements: the reference drops them too
                y = self._relu_chosen(rest[0], y)
            if fuse_dropout:
                return self._captured(dropout, y)
            return self._dropout(dropout, y) if dropout is not None else y
        if isinstance(head, Activation):
            if head.function == "relu" and self._replaying_choice(head):
                return x * self.replay_choices[head.name].to(device=x.device, dtype=x.dtype)
            return self._relu_chosen(head, ops.activation(x, head.function))
        if isinstance(head, LocalResponseNorm):
            if rest:
                pool = rest[0]
                return ops.lrn_max_pool2d(x, head.size, head.torch_alpha, head.beta, head.k,
                                          pool.kernel_size, pool.stride, pool.padding)
            return ops.local_response_norm(x, head.size, head.torch_alpha, head.beta, head.k)
        if isinstance(head, MaxPool):
            if self._replaying_choice(head):
                return gather_pooled(x, self.replay_choices[head.name].to(x.device))
            y = ops.max_pool2d(x, head.kernel_size, head.stride, head.padding)
            if self.capture_for_reference:
                self.captured_choices[head.name] = pool_indices(x, head).cpu()
            return y
        if isinstance(head, Dropout):
            return self._dropout(head, x)
        if isinstance(head, CrossEntropy):
            if target is None:
                raise ValueError(f"layer {head.name!r} is the loss and needs the class targets")
            return ops.cross_entropy(x, target)
        raise TypeError(f"no stage for layer kind {head.kind!r}")

    def _replaying_choice(self, spec: LayerSpec) -> bool:
        return self.replay_choices is not None and spec.name in self.replay_choices

    def _relu_chosen(self, spec: Activation, y):
        """Record where a ReLU's output is positive (see the module docstring); other activations decide nothing."""
        if self.capture_for_reference and spec.function == "relu":
            self.captured_choices[spec.name] = (y > 0).detach().cpu()
        return y

    def _dropout_active(self, spec: Dropout) -> bool:
        return self.training and spec.p > 0

    def _replaying(self, spec: Dropout) -> bool:
        return self.replay_dropout_masks is not None and spec.name in self.replay_dropout_masks

    def _dropout(self, spec: Dropout, x):
        if not self._dropout_active(spec):
            return x
        if self._replaying(spec):
            keep = self.replay_dropout_masks[spec.name].to(device=x.device)
            return x * keep.to(x.dtype) / (1.0 - spec.p)
        return self._captured(spec, self.ops.dropout(x, spec.p, True))

    def _captured(self, spec: Dropout, y):
        if self.capture_for_reference:
            self.captured_dropout_masks[spec.name] = (y != 0).detach().cpu()
        return y


def pool_indices(x: torch.Tensor, spec: MaxPool) -> torch.Tensor:
    """Which input position (flat within its H x W plane) each max-pool output takes, as torch picks it on `x`."""
    with torch.no_grad():
        return F.max_pool2d(x.detach(), spec.kernel_size, stride=spec.stride, padding=spec.padding,
                            return_indices=True)[1]


def gather_pooled(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Max pooling with its choices given: x (N, C, H, W) gathered at `indices` (N, C, Ho, Wo); differentiable."""
    n, c = x.shape[:2]
    return x.reshape(n, c, -1).gather(2, indices.reshape(n, c, -1)).reshape(indices.shape)


def init_parameters(network: Network, seed: int = 0) -> dict[str, torch.Tensor]:
    """Parameters for every layer of `network`, float32 on the CPU, shared by all backends of a run.

    Kaiming-normal weights (std sqrt(2 / fan_in)) rather than the paper's N(0, 0.01), so activations stay of order one
    through the network and float16/bfloat16 comparisons are not dominated by underflow; biases uniform in
    +-1/sqrt(fan_in) (never zero, so the bias path is exercised)."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for spec in network.layers:
        shapes = spec.param_shapes
        if not shapes:
            continue
        weight_shape = shapes["weight"]
        fan_in = math.prod(weight_shape[1:])
        params[f"{spec.name}.weight"] = torch.randn(weight_shape, generator=gen) * math.sqrt(2.0 / fan_in)
        bound = 1.0 / math.sqrt(fan_in)
        params[f"{spec.name}.bias"] = (torch.rand(shapes["bias"], generator=gen) * 2 - 1) * bound
    return params
