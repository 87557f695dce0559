"""A case made runnable: a module, fresh random inputs, and one call of a pass; and its check against the reference.

Passes:
- `forward`: the layers in training mode (dropout active) without autograd, output kept.
- `backward`: the backward pass alone; each repetition's forward (with autograd) runs untimed in `prepare`.
- `train_step`: zero the gradients, forward, loss, backward, and one SGD step (momentum 0.9, weight decay 5e-4).

A single layer's backward is driven by a fixed random output gradient; the network's (and the loss layer's) by the
cross-entropy loss against random class targets. The input needs a gradient unless it is the image (the first layer).

Correctness: the same work on fresh random inputs, compared with the torch backend in float64 on the CPU with the same
parameters, inputs, dropout masks, max-pool and ReLU choices (perfkit.model). The error is the relative Frobenius
error ||got - want|| / ||want||, worst over the compared tensors: the output (forward); the input and parameter gradients (backward); the gradients and the
updated parameters (train_step).

Autocast (mixed precision as torch users run it): a case with the option `autocast` set runs a float32 module on float32
inputs with its forward (and loss) under `torch.autocast(device_type, dtype)`, where dtype is the case's dtype (float16
or bfloat16); backward and the optimizer step run outside it, as torch recommends. Its check uses that dtype's
tolerance, and the cost model counts its traffic in that dtype (the activations'; its float32 parameters are a small
part of the bytes). `autocast_dtype(case)` says which dtype, if any.
"""
from __future__ import annotations

import math

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from perfkit.model import TORCH_DTYPES, AlexNetModule, TorchOps, step_part
from perfkit.specs import DTYPES, NUM_CLASSES, Cost, CrossEntropy, LayerSpec

#: The profiler range around the backward call (perfkit.app.profile): the ops autograd runs outside every layer's node.
BACKWARD_RANGE = "backward (outside layers)"

#: Largest relative error a backend may show against the float64 reference, per dtype.
TOLERANCES = {"float64": 1e-10, "float32": 1e-4, "tf32": 1e-2, "float16": 1e-2, "bfloat16": 5e-2}

#: Dtypes held to their fixed tolerance alone.
STRICT_DTYPES = tuple(name for name, d in DTYPES.items() if d.strict)

#: In reduced precision (tf32, float16, bfloat16) a backend may also stray this many times as far from the float64
#: reference as stock PyTorch does on the same case, in the same dtype, with the same inputs and dropout masks. A fixed
#: bound tight enough to catch a bad kernel's forward is too tight for deep training passes in 16-bit formats, where
#: rounding flips ReLU and max-pool decisions and large gradient sums cancel (bf16 autocast: ~0.25 on conv1's weight
#: gradient after the whole network, with stock operators); there the stock operators define what the dtype achieves.
STOCK_ERROR_FACTOR = 2.0


def tolerance_for(dtype: str, stock_error: float | None) -> float:
    """The error a row in `dtype` may show: its fixed tolerance, widened in reduced precision to STOCK_ERROR_FACTOR
    times stock PyTorch's own error on the same case (when known and finite)."""
    base = TOLERANCES[dtype]
    if dtype in STRICT_DTYPES or stock_error is None or not math.isfinite(stock_error):
        return base
    return max(base, STOCK_ERROR_FACTOR * stock_error)

#: The dtypes torch.autocast can run a case in.
AUTOCAST_DTYPES = {name: TORCH_DTYPES[name] for name, d in DTYPES.items() if d.autocast}


@dataclass
class Checked:
    """One correctness check: the relative error against the reference, the tensor it was worst in, the images
    checked, the tolerance it must meet (`tolerance_for`) and, when widened past the dtype's bound, why."""

    error: float
    worst: str
    images: int
    tolerance: float
    tolerance_note: str | None = None


@dataclass
class Work:
    """What the runner checks and times for one case, whatever the case measures (AlexNet layers here; the
    augmentation pipeline in perfkit.workloads.augment).

    `check()` runs the work once on fresh inputs and compares it with its reference (a `Checked`). `timed()` sets it
    up on fresh inputs at the case's batch: (run, prepare), the timed call and the untimed call before each repetition
    (or None). `cost` is the work of one call (FLOPs, minimum bytes)."""

    check: Callable[[], Checked]
    timed: Callable[[], tuple[Callable[[], object], Callable[[], object] | None]]
    cost: Cost


def autocast_dtype(case) -> torch.dtype | None:
    """The dtype a case's forward runs in under torch.autocast (case option `autocast` true), or None without it."""
    if not case.option("autocast", False):
        return None
    if case.dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast needs dtype float16 or bfloat16 (the dtype autocast runs in), not {case.dtype!r}")
    return AUTOCAST_DTYPES[case.dtype]


def make_inputs(layers: Sequence[LayerSpec], batch: int, seed: int, device=None) -> dict[str, torch.Tensor]:
    """Random float32 inputs for `layers` at `batch`: `x` ~ N(0, 1) of the first layer's input shape (batch, C, H, W),
    `target` class indices (batch,) when the layers end with the loss, else `grad_output` ~ N(0, 1) of the last layer's
    output shape.

    Drawn on the CPU (`device` None or a CPU), or on `device` itself by a generator of its own there, so that a large
    batch meant for a GPU never exists in host memory (tens of GB at 2**16 images). The same seed gives the same
    values on the same device; a GPU's values differ from the CPU's (another generator), and may differ between GPU
    models (torch's launch shape for random kernels follows the device)."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    gen = torch.Generator() if on_cpu else torch.Generator(device=device)
    gen.manual_seed(seed)
    where = {} if on_cpu else {"device": device}  # the CPU draw is exactly what it was before `device` existed
    first, last = layers[0], layers[-1]
    inputs = {"x": torch.randn((batch, *first.in_shape), generator=gen, **where)}
    if isinstance(last, CrossEntropy):
        inputs["target"] = torch.randint(0, last.in_numel or NUM_CLASSES, (batch,), generator=gen, **where)
    else:
        inputs["grad_output"] = torch.randn((batch, *last.out_shape), generator=gen, **where)
    return inputs


class Workload:
    """One pass of `module` over fixed inputs. `run()` is the timed call; `prepare()` (or None) runs before each."""

    def __init__(self, module: AlexNetModule, pass_name: str, inputs: dict[str, torch.Tensor], device, dtype,
                 make_optimizer=None, autocast: torch.dtype | None = None):
        self.module = module
        self.autocast = autocast  # run the forward under torch.autocast in this dtype (module and inputs float32)
        self.pass_name = pass_name
        # A leaf of its own, in the memory format the module keeps its activations in (a channels_last module gets
        # a channels_last input, as its users would feed it, so that no conversion is timed).
        fmt = torch.channels_last if getattr(module, "channels_last", False) and inputs["x"].dim() == 4 \
            else torch.contiguous_format
        self.x = inputs["x"].detach().to(device=device, dtype=dtype, memory_format=fmt, copy=True)
        self.target = inputs["target"].to(device) if "target" in inputs else None
        self.grad_output = inputs["grad_output"].to(device=device, dtype=dtype) if "grad_output" in inputs else None
        self.x.requires_grad_(pass_name != "forward" and not module.specs[0].first)
        self.params = [p for p in module.parameters()]
        self.optimizer = make_optimizer(self.params) if pass_name == "train_step" and self.params else None
        self.out = None
        module.train()
        if pass_name not in ("forward", "backward", "train_step"):
            raise ValueError(f"unknown pass {pass_name!r}")
        self.prepare = self._forward_with_graph if pass_name == "backward" else None
        self.run = {"forward": self._forward, "backward": self._backward, "train_step": self._train_step}[pass_name]

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.x.device.type, dtype=self.autocast)

    def _forward(self):
        with torch.no_grad(), self._autocast():
            self.out = self.module(self.x, self.target)

    def _zero_grads(self):
        for p in self.params:
            p.grad = None
        self.x.grad = None

    def _forward_with_graph(self):
        self._zero_grads()
        with self._autocast():
            self.out = self.module(self.x, self.target)

    def _backward(self):
        with step_part(BACKWARD_RANGE, self.x.is_cuda):  # a profile names the autograd seed and engine as such
            if self.out.dim() == 0:
                self.out.backward()
            else:
                self.out.backward(self.grad_output)

    def _train_step(self):
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        self.x.grad = None
        self._forward_with_graph()
        self._backward()
        if self.optimizer is not None:
            self.optimizer.step()

    def results(self) -> dict[str, torch.Tensor]:
        """What the correctness check compares, after one prepare + run."""
        if self.pass_name == "forward":
            return {"output": self.out}
        got = {}
        if self.x.requires_grad:
            got["input.grad"] = self.x.grad
        for name, p in self.module.named_parameters():
            got[f"{name}.grad"] = p.grad
            if self.pass_name == "train_step":
                got[f"{name} (updated)"] = p
        return got

    def run_once(self) -> dict[str, torch.Tensor]:
        if self.prepare:
            self.prepare()
        self.run()
        return {k: v.detach() for k, v in self.results().items()}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want||_F / ||want||_F in float64 (the absolute norm of the difference when want is all zeros)."""
    if got is None or want is None:
        raise ValueError("a compared tensor is missing (None)")
    if got.shape != want.shape:
        raise ValueError(f"shape {tuple(got.shape)} differs from the reference's {tuple(want.shape)}")
    got64, want64 = got.detach().to("cpu", torch.float64), want.detach().to("cpu", torch.float64)
    if not torch.isfinite(got64).all():
        return float("inf")
    denom = torch.linalg.vector_norm(want64)
    diff = torch.linalg.vector_norm(got64 - want64)
    return float(diff / denom) if denom > 0 else float(diff)


def reference_results(layers: Sequence[LayerSpec], pass_name: str, parameters: dict[str, torch.Tensor],
                      inputs: dict[str, torch.Tensor], dropout_masks: dict[str, torch.Tensor],
                      make_optimizer, choices: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The same work done by stock PyTorch operators in float64 on the CPU, replaying the given dropout masks and
    max-pool and ReLU choices (perfkit.model: the backend's choices among near-equal values)."""
    module = AlexNetModule(layers, TorchOps, device="cpu", dtype=torch.float64, parameters=parameters)
    module.replay_dropout_masks = dropout_masks
    module.replay_choices = choices or None
    return Workload(module, pass_name, inputs, "cpu", torch.float64, make_optimizer).run_once()


def check(workload_results: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> tuple[float, str]:
    """Worst relative error over the compared tensors, and the name of the worst one."""
    missing = set(reference) - set(workload_results)
    if missing:
        raise ValueError(f"backend produced no {', '.join(sorted(missing))}")
    errors = {name: relative_error(workload_results[name], want) for name, want in reference.items()}
    worst = max(errors, key=errors.get)
    return errors[worst], worst
