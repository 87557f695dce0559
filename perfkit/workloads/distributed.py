"""AlexNet over several processes with torch.distributed: the paper's two-column model parallelism and data-parallel
DDP, checked against the single-process network, timed in lockstep, launched with torchrun.

Forms (case option `parallel`, with `world_size` and `dist_backend`; NCCL on GPUs, gloo on CPUs):
- `single`: the plain network in one process (world size 1): the baseline.
- `ddp`: DistributedDataParallel over `world_size` processes, one device each. The case's batch is the global batch;
  each rank trains on batch / world_size images and DDP averages the gradients (an all-reduce of every gradient, in
  buckets, overlapped with the backward pass), so a step equals the single-process step on the whole batch.
- `two_column`: the paper's model parallelism over 2 processes ("columns"), every rank seeing the whole batch.
  Rank r holds column r: the r-th half of the kernels (output channels, or neurons) of every convolution and
  fully-connected layer, i.e. half of conv1's 96 kernels, its group of conv2, conv4 and conv5 (groups=2 splits exactly
  along the columns, so these need nothing from the other rank), half of conv3 and of fc6, fc7 and fc8.
  Communication, as in the paper where layers see both GPUs' maps:
  - conv3 sees all 256 maps of conv2 (pool2's output): all-gather of the two halves along the channels;
  - fc6, fc7 and fc8 see all of the previous layer: all-gather of pool5's maps, and of fc6's and fc7's outputs;
  - the logits (fc8's two halves of 1000) are all-gathered, and every rank computes the same loss;
  - perfkit's alexnet2012 normalises (LRN) across all 96 (and 256) maps, so the two maps on either side of the
    column boundary are exchanged before lrn1 and lrn2 (a halo of size // 2 channels). The paper normalised within
    each GPU's maps; exchanging the halo keeps the two-column network exactly the single-process one.
  Backward mirrors the forward: the gradient of a gathered tensor that each column used differently is summed over
  the columns and each rank keeps its slice (written as an all-reduce and a slice, which every backend and every torch
  version runs; a reduce-scatter would move half the bytes); the gathered logits feed the same loss on every rank, so
  each rank keeps its slice of its own gradient; the halo's gradients go back to the rank that owns those channels.
  `column_shard` says which part of each parameter a rank holds; `two_column_exchanges` lists what moves per step.

Correct before fast: before a case is timed, the form runs once on fresh inputs (at most `check_batch` images) with
the same parameters and the same dropout masks as the float64 single-process network on the CPU; logits, loss and
every parameter's gradient are compared (the two-column shards are gathered to rank 0; DDP's averaged gradients are
rank 0's own). Rank 0 computes the reference and decides; every rank follows (an incorrect case is not timed).

Timing: the ranks step in lockstep. After warm-up, all ranks agree on the number of repetitions (from the slowest
rank's first one); each repetition starts after a barrier and is timed on each rank (CUDA events on a GPU, perf_counter
on the CPU); a repetition's time is the slowest rank's. The GPU's L2 is not flushed between repetitions (a whole
train step's working set dwarfs it). Rates count the global batch. Energy is not measured for these cases.

Launching: `measure_cases` (the multigpu study's way to measure its cases) groups the cases by world size and backend
and starts one `python -m torch.distributed.run --standalone --nproc-per-node N -m perfkit.workloads.distributed worker --job
FILE` per group. The job file names the store, the run and the cases; rank 0 appends each row to the store as its case
finishes (a killed run loses at most the case in flight, and rerunning resumes). When a launch fails, the first case
without a row is recorded as an error (or out of memory) with the end of the workers' output, and the rest of the group
is launched again. GPU ranks use cuda:LOCAL_RANK; rows name rank 0's device. CPU ranks set `threads` torch threads each.

A time budget (the runner's deadline) is honoured as the runner honours it: no launch starts after the deadline, the
workers get it (as wall-clock time) and agree, through rank 0, to start no case after it, and the cases left are
counted in runner.cases_not_run, not stored, so the run stays unfinished and a rerun resumes them. torchrun's launch
times out DEADLINE_GRACE_S seconds after the deadline; the case then in flight is stored as an error that says it was
stopped at the deadline, never as a speed result. torchrun runs in its own process group (perfkit.support.procgroup), ended
with its workers on that timeout and when the parent fails or is interrupted; the workers die with torchrun.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from perfkit.cases import NETWORK, Case
from perfkit.support.procgroup import GroupResult, die_with_parent, run_in_group
from perfkit.results.records import Measurement
from perfkit.model import AlexNetModule, TorchOps, LayerParameters, init_parameters, torch_dtype
from perfkit.specs import (Activation, Conv, CrossEntropy, Dropout, LayerSpec, Linear, LocalResponseNorm, MaxPool,
                           Network, build_network)

FORMS = ("single", "ddp", "two_column")
COLUMNS = 2  # the paper's two GPUs
INIT_TIMEOUT = datetime.timedelta(minutes=10)  # a collective that waits longer than this fails instead of hanging
ENERGY_NOTE = ("not measured: distributed cases are timed in lockstep over several processes, without a sustained "
               "energy window")
ROOFLINE_NOTE = "not computed: a distributed case runs on several devices"
DEADLINE_GRACE_S = 30.0  # seconds a case in flight at the run's deadline may still take before torchrun is stopped
KILL_GRACE_S = 5.0  # seconds torchrun gets to stop its workers after SIGTERM before the group is SIGKILLed
TORCHRUN_MARKERS = ("torch.distributed.run", "torchrun")  # in the command line of a worker's parent, torchrun


def dist_options(case: Case) -> tuple[str, int, str]:
    """(parallel form, world size, distributed backend) of a case."""
    return (case.option("parallel", "single"), int(case.option("world_size", 1)),
            case.option("dist_backend", "nccl" if case.device.startswith("cuda") else "gloo"))


def case_options(parallel: str, world_size: int, dist_backend: str) -> tuple[tuple[str, object], ...]:
    """A distributed case's options, sorted by name (they are part of its key)."""
    return (("dist_backend", dist_backend), ("parallel", parallel), ("world_size", world_size))


# -- collectives with autograd --------------------------------------------------------------------------------------
def _all_gather(x: torch.Tensor) -> list[torch.Tensor]:
    x = x.contiguous()
    pieces = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, x)
    return pieces


class _GatherColumns(torch.autograd.Function):
    """All-gather the columns' halves along dim 1 (channels or features), in rank order.

    Backward, `summed`: each column used the gathered tensor for its own kernels, so its gradient is the sum of the
    columns' gradients (all-reduce), of which this rank keeps its slice. Not summed: every rank computed the same thing
    from it (the loss from the logits), so its own gradient is already the whole one, and it keeps its slice."""

    @staticmethod
    def forward(ctx, x, summed: bool):
        ctx.summed, ctx.width = summed, x.shape[1]
        return torch.cat(_all_gather(x), 1)

    @staticmethod
    def backward(ctx, grad):
        if ctx.summed:
            grad = grad.contiguous().clone()
            dist.all_reduce(grad)
        return grad.narrow(1, dist.get_rank() * ctx.width, ctx.width).contiguous(), None


class _EnterColumns(torch.autograd.Function):
    """A tensor every rank holds whole, entering each column's own computation: identity forward, and backward the
    sum of the columns' gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class _ChannelHalo(torch.autograd.Function):
    """This column's channels with `before` channels of the previous column in front and `after` channels of the next
    one behind (none at the ends), for a window across channels (LRN). Backward returns the halo's gradients to the
    ranks that own those channels and adds them to theirs."""

    @staticmethod
    def forward(ctx, x, before: int, after: int):
        rank, world = dist.get_rank(), dist.get_world_size()
        c = x.shape[1]
        # every rank sends its first `after` channels (for the previous column) and its last `before` (for the next)
        edges = _all_gather(torch.cat([x[:, :after], x[:, c - before:]], 1))
        prev = edges[rank - 1][:, after:] if rank > 0 else x[:, :0]
        nxt = edges[rank + 1][:, :after] if rank < world - 1 else x[:, :0]
        ctx.geometry = (c, before, after, prev.shape[1], nxt.shape[1])
        return torch.cat([prev, x, nxt], 1)

    @staticmethod
    def backward(ctx, grad):
        rank, world = dist.get_rank(), dist.get_world_size()
        c, before, after, n_prev, n_next = ctx.geometry
        grad_x = grad[:, n_prev:n_prev + c].clone()
        shape = list(grad.shape)
        to_prev = grad[:, :n_prev] if n_prev else grad.new_zeros(shape[:1] + [before] + shape[2:])
        to_next = grad[:, n_prev + c:] if n_next else grad.new_zeros(shape[:1] + [after] + shape[2:])
        back = _all_gather(torch.cat([to_prev, to_next], 1))
        if rank < world - 1:  # the next column used my last `before` channels
            grad_x[:, c - before:] += back[rank + 1][:, :before]
        if rank > 0:  # the previous column used my first `after` channels
            grad_x[:, :after] += back[rank - 1][:, before:]
        return grad_x, None, None


# -- the two-column network -----------------------------------------------------------------------------------------
def column_shard(tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The part of a convolution's or linear layer's weight or bias that column `rank` of `world` holds: its share of
    the output channels (or neurons), the rows along dim 0. For a grouped convolution with groups == world this is
    exactly group `rank`."""
    return tensor.chunk(world, 0)[rank]


def column_plan(layers: Sequence[LayerSpec], world: int) -> list[tuple[LayerSpec | None, str | None]]:
    """What happens before each layer on a column: None (nothing), "gather" (all-gather the columns' halves, gradients
    summed), "enter" (a whole tensor enters the columns), "slice" (take this column's channels of a whole tensor),
    "halo" (exchange edge channels) or "gather_logits" (all-gather for a computation every rank repeats). A final
    (None, "gather_logits") entry gathers split outputs at the end. Raises ValueError when a layer cannot be split."""
    plan, split = [], False
    for spec in layers:
        step = None
        if isinstance(spec, Conv):
            if spec.out_channels % world:
                raise ValueError(f"{spec.name}: {spec.out_channels} kernels do not split over {world} columns")
            if spec.groups == world:
                step = None if split else "slice"
            elif spec.groups == 1:
                step = "gather" if split else "enter"
            else:
                raise ValueError(f"{spec.name}: groups={spec.groups} cannot be split over {world} columns")
            split = True
        elif isinstance(spec, Linear):
            if spec.out_features % world:
                raise ValueError(f"{spec.name}: {spec.out_features} neurons do not split over {world} columns")
            step = "gather" if split else "enter"
            split = True
        elif isinstance(spec, LocalResponseNorm):
            step = "halo" if split else None
        elif isinstance(spec, CrossEntropy):
            step = "gather_logits" if split else None
            split = False
        elif not isinstance(spec, (Activation, MaxPool, Dropout)):
            raise ValueError(f"{spec.name}: no column-parallel form for {spec.kind}")
        plan.append((spec, step))
    if split:
        plan.append((None, "gather_logits"))
    return plan


def two_column_reason(network: Network, world: int) -> str | None:
    if world != COLUMNS:
        return f"the two-column model runs on exactly {COLUMNS} ranks, not {world}"
    try:
        column_plan(network.layers, world)
    except ValueError as exc:
        return f"{network.variant} cannot be split into columns: {exc}"
    return None


class ColumnParallelAlexNet(nn.Module):
    """Column `rank` of `world` of consecutive layers (see the module docstring), with the same forward signature as
    perfkit.model.AlexNetModule: forward(x, target=None) returns the logits, or the loss when the layers end with it.
    `parameters` is the whole network's set; this rank registers its shard of each under the same names
    (conv1.weight, ...). `replay_dropout_masks` (whole masks, as AlexNetModule takes them) replays the given masks,
    this column's slice of each, instead of drawing new ones. `halo=False` normalises each column's maps on their own,
    as the paper's GPUs did (then it is not perfkit's single-process network: the tests use it as a control). Needs an
    initialised default process group."""

    def __init__(self, layers: Sequence[LayerSpec], parameters: dict[str, torch.Tensor], rank: int, world: int,
                 device="cpu", dtype=torch.float32, ops=TorchOps, halo: bool = True):
        super().__init__()
        self.specs = tuple(layers)
        self.rank, self.world, self.ops, self.halo = rank, world, ops, halo
        self.plan = column_plan(self.specs, world)
        for spec in self.specs:
            if spec.param_shapes:
                shards = {name: column_shard(parameters[f"{spec.name}.{name}"], rank, world)
                          for name in spec.param_shapes}
                module = LayerParameters({n: tuple(t.shape) for n, t in shards.items()}, device, dtype)
                with torch.no_grad():
                    for name, tensor in shards.items():
                        getattr(module, name).copy_(tensor)
                self.add_module(spec.name, module)
        self.replay_dropout_masks: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        ops = self.ops
        for spec, step in self.plan:
            if step == "gather":
                x = _GatherColumns.apply(x, True)
            elif step == "gather_logits":
                x = _GatherColumns.apply(x, False)
            elif step in ("enter", "slice") and x.requires_grad:
                x = _EnterColumns.apply(x)
            if step == "slice":
                x = x.chunk(self.world, 1)[self.rank]
            if spec is None:
                continue
            if isinstance(spec, Conv):
                p = getattr(self, spec.name)
                x = ops.conv2d(x, p.weight, p.bias, spec.stride, spec.padding, 1)  # one group per column
            elif isinstance(spec, Linear):
                p = getattr(self, spec.name)
                x = ops.linear(x, p.weight, p.bias)
            elif isinstance(spec, Activation):
                x = ops.activation(x, spec.function)
            elif isinstance(spec, LocalResponseNorm):
                lrn = (spec.size, spec.torch_alpha, spec.beta, spec.k)
                if step == "halo" and self.halo:
                    before, after = spec.size // 2, (spec.size - 1) // 2
                    c = x.shape[1]
                    wide = _ChannelHalo.apply(x, before, after)
                    start = before if self.rank > 0 else 0
                    x = ops.local_response_norm(wide, *lrn).narrow(1, start, c)
                else:
                    x = ops.local_response_norm(x, *lrn)
            elif isinstance(spec, MaxPool):
                x = ops.max_pool2d(x, spec.kernel_size, spec.stride, spec.padding)
            elif isinstance(spec, Dropout):
                x = self._dropout(spec, x)
            elif isinstance(spec, CrossEntropy):
                if target is None:
                    raise ValueError(f"layer {spec.name!r} is the loss and needs the class targets")
                x = ops.cross_entropy(x, target)
        return x

    def _dropout(self, spec: Dropout, x):
        if not (self.training and spec.p > 0):
            return x
        masks = self.replay_dropout_masks
        if masks is not None and spec.name in masks:
            keep = masks[spec.name]
            if keep.shape[1] != x.shape[1]:  # a whole mask, and x is this column's slice
                keep = keep.chunk(self.world, 1)[self.rank]
            return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - spec.p)
        return self.ops.dropout(x, spec.p, True)


def two_column_exchanges(network: Network, world: int = COLUMNS) -> list[dict]:
    """What the two-column train step moves between the ranks, per image, from its plan: one dict per exchange with
    the layer it feeds, the collective and the elements of the whole tensor (forward) and of its gradient (backward)."""
    out = []
    for spec, step in column_plan(network.layers, world):
        if step in ("gather", "gather_logits"):
            numel = spec.in_numel if spec is not None else network.body[-1].out_numel
            out.append({"before": spec.name if spec is not None else "output", "collective":
                        "all-gather" + (", backward all-reduce" if step == "gather" else ", backward none"),
                        "forward_elements": numel, "backward_elements": numel if step == "gather" else 0})
        elif step == "halo":
            c, h, w = spec.in_shape
            halo = (spec.size // 2 + (spec.size - 1) // 2) * h * w
            out.append({"before": spec.name, "collective": "halo (edge channels), both ways",
                        "forward_elements": halo, "backward_elements": halo})
    return out


# -- checking against the single-process network --------------------------------------------------------------------
def dropout_masks(layers: Sequence[LayerSpec], batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Keep-masks (bool, whole tensors) for every active dropout layer, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return {spec.name: torch.rand((batch, *spec.in_shape), generator=gen) >= spec.p
            for spec in layers if isinstance(spec, Dropout) and spec.p > 0}


def check_inputs(network: Network, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Images, class targets and dropout masks for a check, float32 on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *network.input_shape), generator=gen)
    target = torch.randint(0, network.body[-1].out_numel, (batch,), generator=gen)
    return x, target, dropout_masks(network.body, batch, seed + 1)


def reference_step(network: Network, parameters, x, target, masks) -> dict[str, torch.Tensor]:
    """The single-process network in float64 on the CPU: logits, loss and every parameter's gradient."""
    module = AlexNetModule(network.body, TorchOps, device="cpu", dtype=torch.float64, parameters=parameters)
    module.train()
    module.replay_dropout_masks = masks
    logits = module(x.to(torch.float64))
    loss = F.cross_entropy(logits, target)
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.detach()}
    out.update({f"{name}.grad": p.grad for name, p in module.named_parameters()})
    return out


def check_form(parallel: str, network: Network, parameters, batch: int, seed: int, device: str,
               dtype: torch.dtype, halo: bool = True) -> dict[str, float] | None:
    """Run one forward and backward of the form on `batch` images (the global batch; DDP splits it over the ranks)
    and compare logits, loss and every parameter's gradient with `reference_step`. On rank 0: the relative error of
    each compared tensor; None on the other ranks. Collective: every rank calls it."""
    from perfkit.workload import relative_error

    rank, world = dist.get_rank(), dist.get_world_size()
    x, target, masks = check_inputs(network, batch, seed)
    if parallel == "two_column":
        model = ColumnParallelAlexNet(network.body, parameters, rank, world, device, dtype, halo=halo)
        model.replay_dropout_masks = masks
        logits = model(x.to(device, dtype))
        loss = F.cross_entropy(logits, target.to(device))
    else:
        rows = slice(rank * batch // world, (rank + 1) * batch // world)
        inner = AlexNetModule(network.body, TorchOps, device=device, dtype=dtype, parameters=parameters)
        inner.replay_dropout_masks = {name: m[rows] for name, m in masks.items()}
        model = _ddp(inner, device) if parallel == "ddp" else inner
        model.train()
        local = model(x[rows].to(device, dtype))
        loss = F.cross_entropy(local, target[rows].to(device))
        logits = torch.cat(_all_gather(local.detach()), 0) if world > 1 else local
    loss.backward()
    loss = loss.detach().clone()
    if parallel != "two_column" and world > 1:  # each rank's loss is the mean over its rows: average them
        dist.all_reduce(loss)
        loss /= world
    want = reference_step(network, parameters, x, target, masks) if rank == 0 else None
    errors = {}
    if rank == 0:
        errors["logits"] = relative_error(logits, want["logits"])
        errors["loss"] = relative_error(loss, want["loss"])
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    for name, p in inner.named_parameters():
        grad = torch.cat(_all_gather(p.grad), 0) if parallel == "two_column" else p.grad
        if rank == 0:
            errors[f"{name}.grad"] = relative_error(grad, want[f"{name}.grad"])
    return errors if rank == 0 else None


def _ddp(module: nn.Module, device: str) -> nn.Module:
    if device.startswith("cuda"):
        index = torch.device(device).index
        return nn.parallel.DistributedDataParallel(module, device_ids=[index], output_device=index)
    return nn.parallel.DistributedDataParallel(module)


# -- timing in lockstep ---------------------------------------------------------------------------------------------
def _comm_device(device: str) -> str:
    return device if dist.get_backend() == "nccl" else "cpu"


def _time_one(step: Callable[[], object], device: str) -> float:
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


def lockstep_timing(step: Callable[[], object], device: str, policy):
    """A perfkit.measure.timer.Timing of `step` run by every rank together (see the module docstring)."""
    from perfkit.measure.timer import Timing

    for _ in range(policy.warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    dist.barrier()
    first = torch.tensor([_time_one(step, device)], dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(first, op=dist.ReduceOp.MAX)
    estimate = float(first.item())
    reps = max(policy.min_reps, math.ceil(policy.min_time_s / max(estimate, 1e-7)))
    reps = max(1, min(reps, policy.max_reps))
    times = []
    for _ in range(reps):
        dist.barrier()
        times.append(_time_one(step, device))
    slowest = torch.tensor(times, dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    note = (f"lockstep over {dist.get_world_size()} rank(s): each repetition after a barrier, its time the slowest "
            "rank's; no L2 flush")
    return Timing("cuda_event" if device.startswith("cuda") else "perf_counter", tuple(slowest.tolist()),
                  policy.warmup + 1, l2_flushed=False, note=note)


# -- the worker torchrun starts -------------------------------------------------------------------------------------
def _rank_device(case: Case) -> str:
    if case.device.startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def build_step(case: Case, network: Network, parameters, device: str, seed: int):
    """The timed train step of a case on this rank: zero the gradients, forward, loss, backward, SGD step."""
    from perfkit.backends import get_backend
    from perfkit.workload import make_inputs

    parallel, world, _ = dist_options(case)
    rank = dist.get_rank()
    dtype = torch_dtype(case.dtype)
    if parallel == "two_column":
        model = ColumnParallelAlexNet(network.layers, parameters, rank, world, device, dtype)
        per_rank = case.batch  # every column sees the whole batch
        inputs = make_inputs(network.layers, per_rank, seed)
    else:
        model = AlexNetModule(network.layers, TorchOps, device=device, dtype=dtype, parameters=parameters)
        if parallel == "ddp":
            model = _ddp(model, device)
        per_rank = case.batch // world
        inputs = make_inputs(network.layers, per_rank, seed + 7919 * rank)
    model.train()
    optimizer = get_backend("torch").make_optimizer(list(model.parameters()))
    x = inputs["x"].to(device=device, dtype=dtype)
    target = inputs["target"].to(device)
    torch.manual_seed(seed + rank)  # each rank draws its own dropout masks

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(x, target).backward()
        optimizer.step()

    return step


def measure_case(case: Case, job: dict, network: Network, parameters) -> Measurement | None:
    """Check, then time one case on every rank; the row on rank 0 (None elsewhere). Collective."""
    from perfkit.backends import float32_precision
    from perfkit.measure.monitors import monitors_for
    from perfkit.runner import case_row, device_name, run_in_window
    from perfkit.results.store import utc_now
    from perfkit.measure.timer import TimingPolicy
    from perfkit.workload import TOLERANCES

    rank = dist.get_rank()
    parallel, world, _ = dist_options(case)
    device = _rank_device(case)
    row = case_row(case, job["run_id"], job["study"], job["env_id"], NETWORK)
    row.started_at = utc_now()
    row.device_name = device_name(device, job["env"])
    if device == "cpu" and case.threads:
        torch.set_num_threads(case.threads)
    row.threads = torch.get_num_threads()
    dtype = torch_dtype(case.dtype)
    with float32_precision(case.dtype):
        # 1. correctness against the float64 single-process network
        check_batch = max(world, min(case.batch, job["check_batch"]) // world * world)
        errors = check_form(parallel, network, parameters, check_batch, job["seed"] + 17, device, dtype)
        verdict = [None, None]
        if rank == 0:
            worst = max(errors, key=errors.get)
            verdict = [errors[worst], worst]
        dist.broadcast_object_list(verdict, src=0)
        error, worst = verdict
        tolerance = TOLERANCES[case.dtype]
        row = replace(row, error_rel=error, error_tolerance=tolerance, error_batch=check_batch,
                      error_note=f"worst tensor: {worst} (logits, loss and every parameter's gradient compared)")
        if not error <= tolerance:
            row = replace(row, status="incorrect", note=f"not timed: error {error:.3g} in {worst} exceeds the "
                                                        f"{case.dtype} tolerance {tolerance:g}")
            row.finished_at = utc_now()
            return row if rank == 0 else None
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

        # 2. timing, in lockstep, under rank 0's memory monitors
        step = build_step(case, network, parameters, device, job["seed"])
        policy = TimingPolicy(**job["timing"])
        if rank == 0:
            monitors = monitors_for(device)
            quick = [m for m in monitors if m.min_window_s == 0]
            timing, windows = run_in_window(quick, lambda: lockstep_timing(step, device, policy))
            windows += [m.unmeasured(ENERGY_NOTE) for m in monitors if m.min_window_s > 0]
        else:
            timing, windows = lockstep_timing(step, device, policy), []
    if rank != 0:
        return None
    for window in windows:
        row = replace(row, **asdict(window))
    row = replace(row, **timing.record_fields())
    cost = network.cost("train_step", case.batch, case.dtype)
    seconds = timing.median_s
    row = replace(row, status="ok", flops=cost.flops, gemm_flops=cost.gemm_flops, bytes_min=cost.bytes_min,
                  arithmetic_intensity_flops_per_byte=cost.arithmetic_intensity,
                  images_per_s=case.batch / seconds if seconds > 0 else None,
                  achieved_flops_per_s=cost.flops / seconds if seconds > 0 else None,
                  achieved_bytes_per_s=cost.bytes_min / seconds if seconds > 0 else None,
                  roofline_note=ROOFLINE_NOTE, finished_at=utc_now())
    if device.startswith("cuda") and world > 1:
        row.gpu_note = "; ".join(n for n in (row.gpu_note, f"ranks on cuda:0 to cuda:{world - 1}; "
                                                           "memory, clocks and power are rank 0's") if n)
    return row


def _deadline_passed(deadline_wall: float) -> bool:
    """Whether the run's deadline (time.time(), seconds) has passed by rank 0's clock, the same answer on every rank
    (a broadcast): ranks reading their own clocks a moment apart could disagree, and a rank that stopped alone would
    leave the others waiting in a collective. Collective."""
    verdict = [time.time() >= deadline_wall if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(verdict, src=0)
    return bool(verdict[0])


def write_report(path: str | None, **state) -> None:
    """Rank 0's account of a launch for the parent, replaced whole (so the parent never reads half a file): the case
    in flight (`in_flight`, its key, or None between cases) and whether the workers stopped at the deadline
    (`stopped_at_deadline`, with `not_started` cases left)."""
    if not path:
        return
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(state))
    os.replace(tmp, path)


def read_report(path: str | Path) -> dict:
    """The last report rank 0 wrote ({} when none was: the workers never reached their first case)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def run_worker(job_path: str) -> int:
    """The torchrun worker: measure the job's cases in order; rank 0 stores each row as it finishes. With the job's
    `deadline_wall` (time.time(), seconds), no case starts after it: the workers stop there and rank 0 reports it
    (`report`, see write_report), leaving the rest to a rerun."""
    from perfkit.support.progress import Progress
    from perfkit.results.store import Store

    job = json.loads(Path(job_path).read_text())
    cases = [case_from_dict(d) for d in job["cases"]]
    deadline = job.get("deadline_wall")
    _, _, backend = dist_options(cases[0])
    device = _rank_device(cases[0])
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=INIT_TIMEOUT)
    rank = dist.get_rank()
    report = job.get("report") if rank == 0 else None
    store = Store.open(job["store"]) if rank == 0 else None
    progress = Progress(len(cases), title=job["study"], enabled=job.get("show_progress", True) and rank == 0)
    try:
        cache: dict = {}
        for i, case in enumerate(cases):
            if deadline is not None and _deadline_passed(deadline):
                write_report(report, in_flight=None, stopped_at_deadline=True, not_started=len(cases) - i)
                break
            write_report(report, in_flight=case.key, stopped_at_deadline=False)
            progress.start(case.key)
            key = (case.variant, case.activation)
            if key not in cache:
                network = build_network(case.variant, case.activation)
                cache = {key: (network, init_parameters(network, seed=job["seed"]))}
            row = measure_case(case, job, *cache[key])
            if rank == 0:
                store.add_measurement(row)
                detail = (f"{row.time_median_s * 1e3:.1f} ms, {row.images_per_s:,.1f} img/s"
                          if row.status == "ok" else row.note or "")
                progress.done(row.status, detail)
        else:
            write_report(report, in_flight=None, stopped_at_deadline=False)
    finally:
        progress.close()
        if store is not None:
            store.close()
        dist.destroy_process_group()
    return 0


def run_check(args) -> int:
    """`check`: compare forms with the single-process network on one batch; rank 0 writes the errors as JSON. With
    `--control`, also the two-column model without the LRN halo exchange (the paper's per-GPU normalisation), which
    must differ."""
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=INIT_TIMEOUT)
    try:
        if device == "cpu" and args.threads:
            torch.set_num_threads(args.threads)
        network = build_network(args.variant)
        parameters = init_parameters(network, seed=args.seed)
        runs = [(form, form, True) for form in args.forms.split(",")]
        if args.control:
            runs.append(("two_column_without_halo", "two_column", False))
        errors = {label: check_form(form, network, parameters, args.batch, args.seed + 1, device,
                                    torch_dtype(args.dtype), halo=halo) for label, form, halo in runs}
        if dist.get_rank() == 0:
            Path(args.out).write_text(json.dumps({"world_size": dist.get_world_size(), "backend": dist.get_backend(),
                                                  "dtype": args.dtype, "batch": args.batch, "errors": errors},
                                                 indent=1))
    finally:
        dist.destroy_process_group()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perfkit.workloads.distributed",
                                     description="perfkit's torch.distributed worker (started by torchrun)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("worker", help="measure the cases of a job file; rank 0 writes the rows to the store")
    p.add_argument("--job", required=True)
    p = sub.add_parser("check", help="compare a distributed form with the single-process network")
    p.add_argument("--forms", default="two_column", help="comma-separated: single, ddp, two_column")
    p.add_argument("--control", action="store_true", help="also the two-column model without the LRN halo")
    p.add_argument("--variant", default="alexnet2012")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    # torchrun starts each worker in a session of its own, out of reach of the process group the parent kills
    # (perfkit.support.procgroup): a worker must die with torchrun itself, or a killed launch would leave it holding the device.
    # A torchrun killed while this worker was still importing is caught by its command line missing from the parent.
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    die_with_parent(signal.SIGKILL, TORCHRUN_MARKERS if under_torchrun else ())
    if args.command == "worker":
        return run_worker(args.job)
    return run_check(args)


# -- the parent: launching torchrun ---------------------------------------------------------------------------------
def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The command that starts `nproc` workers of this module on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "perfkit.workloads.distributed", *args]


def launch(nproc: int, args: Sequence[str], threads: int = 1, echo: bool = True,
           timeout_s: float | None = None) -> GroupResult:
    """Run torchrun with `nproc` workers and wait at most `timeout_s` seconds (None: no limit). Returns the
    perfkit.support.procgroup.GroupResult: exit status, whether the timeout stopped it, seconds, and the last lines of the
    workers' output (stdout and stderr together), which is also passed on to stderr as it comes when `echo`.

    torchrun runs in its own process group: on timeout, or on an exception or KeyboardInterrupt here, it gets SIGTERM
    (on which it stops its workers), KILL_GRACE_S seconds, then the group gets SIGKILL. If this process dies, torchrun
    gets SIGTERM from the kernel (Linux); the workers, which torchrun starts in sessions of their own, die with
    torchrun (see main), so none outlives a SIGKILLed torchrun either."""
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads)))

    def echo_line(line: str) -> None:
        sys.stderr.write(line)
        sys.stderr.flush()

    return run_in_group(torchrun_command(nproc, args), timeout_s=timeout_s, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, on_line=echo_line if echo else None, grace_s=KILL_GRACE_S,
                        death_signal=signal.SIGTERM)


def case_from_dict(d: dict) -> Case:
    return Case(**dict(d, options=tuple(tuple(pair) for pair in d["options"])))


def unavailable_reason(case: Case) -> str | None:
    """Why a distributed case cannot run here, or None."""
    from perfkit.backends import get_backend

    parallel, world, backend = dist_options(case)
    if not dist.is_available():
        return "this torch build has no torch.distributed"
    if parallel not in FORMS:
        return f"unknown parallel form {parallel!r} (expected {', '.join(FORMS)})"
    if case.layer != NETWORK or case.pass_name != "train_step":
        return "the distributed forms measure the whole network's train_step only"
    if case.backend != "torch":
        return "the distributed forms run the torch backend's operators"
    if parallel == "single" and world != 1:
        return "the single-process form has world size 1"
    if parallel == "two_column":
        reason = two_column_reason(build_network(case.variant, case.activation), world)
        if reason:
            return reason
    if parallel == "ddp" and case.batch % world:
        return f"a global batch of {case.batch} does not split evenly over {world} ranks"
    if backend == "nccl" and not case.device.startswith("cuda"):
        return "NCCL runs on CUDA devices only; CPU ranks use gloo"
    if backend not in ("nccl", "gloo"):
        return f"unknown distributed backend {backend!r} (nccl on GPUs, gloo on CPUs)"
    reason = get_backend("torch").unavailable_reason(case.device, case.dtype, case.pass_name)
    if reason:
        return reason
    if backend == "nccl" and not dist.is_nccl_available():
        return "this torch build has no NCCL"
    if backend == "gloo" and not dist.is_gloo_available():
        return "this torch build has no gloo"
    if case.device.startswith("cuda") and torch.cuda.device_count() < world:
        return f"needs {world} GPUs, one per rank; this machine has {torch.cuda.device_count()}"
    return None


def _failure_row(runner, case: Case, rc: int | None, tail: str):
    from perfkit.runner import case_row
    from perfkit.results.store import utc_now

    row = case_row(case, runner.run_id, runner.study, runner.env_id, NETWORK)
    lines = [line for line in tail.strip().splitlines() if line.strip()]
    oom = "OutOfMemoryError" in tail or "out of memory" in tail
    row.status = "oom" if oom else "error"
    row.note = (f"torchrun exited with status {rc} during this case; the workers' last output: "
                + " | ".join(lines[-12:]))[:2000]
    row.started_at = row.finished_at = utc_now()
    return row


def _deadline_row(runner, case: Case, late_s: float | None, tail: str):
    """The row of the case in flight when a launch was stopped at the end of the run's time budget (`late_s` seconds
    after its deadline): an error, without any time or rate (a step cut short is no measurement)."""
    from perfkit.runner import case_row
    from perfkit.results.store import utc_now

    row = case_row(case, runner.run_id, runner.study, runner.env_id, NETWORK)
    lines = [line for line in tail.strip().splitlines() if line.strip()]
    when = f" {late_s:.0f} s after the deadline" if late_s is not None and late_s >= 0 else ""
    row.status = "error"
    row.note = (f"stopped at the deadline: the run's time budget ended during this case and torchrun was stopped"
                f"{when}; not a speed result (the case has no time); the workers' last output: "
                + " | ".join(lines[-8:]))[:2000]
    row.started_at = row.finished_at = utc_now()
    return row


def measure_cases(runner, cases: Sequence[Case], extra_reason: Callable[[Case], str | None] | None = None,
                  echo: bool | None = None):
    """Measure distributed cases into the runner's store and run: the ones that cannot run here are stored as skipped
    with the reason, the rest run in torchrun workers, one launch per (world size, backend, device kind) group, rank
    0 storing the rows. Returns this call's rows (read back from the store).

    The runner's deadline (RunnerConfig.deadline, time.monotonic()) is honoured as Runner.run does: no launch starts
    after it, the workers get it (as time.time()) and start no case after it, and cases not started are left out,
    counted in runner.cases_not_run (a rerun resumes them). A launch may outlive the deadline by DEADLINE_GRACE_S
    seconds (for the case in flight; less where the runner's `stop_at`, a hard stop in time.monotonic(), comes
    sooner) plus KILL_GRACE_S (to stop); a case cut there is stored as an error that says so."""
    store, run_id = runner.store, runner.run_id
    deadline = runner.config.deadline
    stop_at = getattr(runner.config, "stop_at", None)  # time.monotonic() at which a case in flight is stopped
    runner.cases_not_run = 0
    done = store.finished_case_keys(run_id)
    todo = list({c.key: c for c in cases if c.key not in done}.values())
    echo = runner.show_progress if echo is None else echo
    keys, groups = [], {}
    for case in todo:
        reason = (extra_reason(case) if extra_reason else None) or unavailable_reason(case)
        if reason:  # recorded whatever the deadline: it costs nothing
            row = runner.blank_row(case)
            row.status, row.note = "skipped", reason
            store.add_measurement(row)
            keys.append(case.key)
            continue
        _, world, backend = dist_options(case)
        groups.setdefault((world, backend, case.device.split(":")[0]), []).append(case)
    for (world, _, _), group in groups.items():
        remaining = list(group)
        while remaining:
            now = time.monotonic()
            left = None if deadline is None else deadline - now  # seconds
            if (left is not None and left <= 0) or (stop_at is not None and stop_at <= now):
                runner.cases_not_run += len(remaining)  # not stored: a rerun of the run measures them
                break
            # the launch ends DEADLINE_GRACE_S after the deadline, or at the runner's hard stop if that is sooner
            ends = [t for t in (None if deadline is None else deadline + DEADLINE_GRACE_S, stop_at) if t is not None]
            with tempfile.TemporaryDirectory(prefix="perfkit-dist-") as tmp:
                job, report = Path(tmp) / "job.json", Path(tmp) / "report.json"
                job.write_text(json.dumps({
                    "store": str(Path(store.path).resolve()), "run_id": run_id, "study": runner.study,
                    "env_id": runner.env_id, "env": runner.env, "seed": runner.config.seed,
                    "check_batch": runner.config.check_batch, "timing": asdict(runner.config.timing),
                    "show_progress": echo, "cases": [asdict(c) for c in remaining],
                    # wall time: the workers are other processes, and time.time() is the clock every process shares
                    "deadline_wall": None if left is None else time.time() + left,
                    "report": str(report)}, default=str))
                threads = remaining[0].threads or 1
                result = launch(world, ["worker", "--job", str(job)], threads=threads, echo=echo,
                                timeout_s=min(ends) - now if ends else None)
                state = read_report(report)
            stored = store.finished_case_keys(run_id)
            keys += [c.key for c in remaining if c.key in stored]
            remaining = [c for c in remaining if c.key not in stored]
            if not remaining:
                break
            if result.timed_out:  # at the end of the budget: the case in flight (if one had started) was cut short
                cut = next((c for c in remaining if c.key == state.get("in_flight")), None)
                if cut is not None:
                    late = None if deadline is None else time.monotonic() - deadline
                    store.add_measurement(_deadline_row(runner, cut, late, result.output))
                    keys.append(cut.key)
                    remaining.remove(cut)
                runner.cases_not_run += len(remaining)
                break
            if state.get("stopped_at_deadline"):  # the workers stopped before a case past the deadline
                runner.cases_not_run += len(remaining)
                break
            # the launch ended before the first of these was stored: it failed there
            store.add_measurement(_failure_row(runner, remaining[0], result.returncode, result.output))
            keys.append(remaining[0].key)
            remaining = remaining[1:]
    rows = store.stored_rows(run_id, keys)
    if rows and getattr(runner, "after_case", None) is not None:  # the workers stored them: one refresh for all
        runner.after_case(rows[-1])
    return rows


if __name__ == "__main__":
    sys.exit(main())
