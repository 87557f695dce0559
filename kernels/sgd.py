"""SGD with momentum and weight decay as one Triton launch over every parameter: ``TritonSGD``.

The update is torch.optim.SGD's, operation for operation (dampening 0 and no Nesterov by default, as in the paper):

    d   = grad + weight_decay * param                       (-grad first when maximizing)
    buf = d                               on the first step (the buffer starts as a copy of d)
    buf = momentum * buf + (1 - dampening) * d              afterwards
    d   = d + momentum * buf   with Nesterov, else   d = buf
    param = param - lr * d

Each line is one rounding, as in torch: the multiply-adds that torch writes as ``a.add(b, alpha=s)`` are fused
multiply-adds (``tl.fma``), which is what ATen's vectorised CPU kernels and nvcc's contraction make of them, and
``momentum * buf`` is rounded before d is added, as ``buf.mul_(momentum).add_(d)`` does. In float32 the parameters
therefore follow torch's step for step; float16 and bfloat16 parameters are updated in float32 and rounded once, where
torch rounds after every operation. The momentum buffer has the parameter's dtype and layout (torch's state, under
the same ``momentum_buffer`` key, so state dicts move between the two).

One launch per parameter group, device and dtype (one for AlexNet's 16 tensors, 61 M parameters): the kernel gets a
table of the tensors' addresses (parameter, gradient, buffer), sizes and first-step flags, and a list of
(tensor, chunk) work items, one per program; each program turns its addresses into typed pointers and streams its
chunk: 5 accesses per parameter (read param, grad, buffer; write param, buffer), the minimum. The tables are built on
the host and cached by the tensors' addresses: a training loop whose gradients come back at the same addresses (the
caching allocator's steady state) uploads them once per distinct set. Parameters must be dense (contiguous or
channels_last); a gradient in another layout is copied to the parameter's first.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import triton
import triton.language as tl

from . import _common

# Per tensor row of the table: parameter, gradient and buffer addresses, element count, first-step flag.
_ROW = 5


def sgd_launch() -> tuple[int, int, int]:
    """(CHUNK, BLOCK, num_warps): each program streams CHUNK elements in BLOCK steps. 64 Ki elements per program gives
    AlexNet's 61 M parameters about 940 programs, several waves over an H100's 132 SMs."""
    return (65536, 2048, 8) if not _common.is_interpreting() else (65536, 65536, 1)


@triton.jit
def _sgd_kernel(
    table_ptr, work_ptr, ref_ptr,
    lr, momentum, dampening, weight_decay,
    USE_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    # This program's work item: which tensor, and where its chunk starts.
    pid = tl.program_id(0)
    t = tl.load(work_ptr + 2 * pid)
    start = tl.load(work_ptr + 2 * pid + 1)
    row = table_ptr + t * 5
    # Addresses become pointers of the parameters' element type (ref_ptr is any tensor of the group).
    p_ptr = tl.load(row).to(ref_ptr.dtype)
    g_ptr = tl.load(row + 1).to(ref_ptr.dtype)
    b_ptr = tl.load(row + 2).to(ref_ptr.dtype)
    numel = tl.load(row + 3)
    first = tl.load(row + 4) != 0
    for off in range(0, CHUNK, BLOCK):
        offs = start + off + tl.arange(0, BLOCK)
        mask = offs < numel
        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if MAXIMIZE:
            d = -d
        if HAS_WEIGHT_DECAY:
            d = tl.fma(p, weight_decay, d)  # grad.add(param, alpha=weight_decay)
        if USE_MOMENTUM:
            if first:
                buf = d  # torch.clone(d): the first step starts the buffer at d, undamped
            else:
                buf = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                buf = tl.fma(d, 1.0 - dampening, buf * momentum)  # buf.mul_(momentum).add_(d, alpha=1 - dampening)
            tl.store(b_ptr + offs, buf.to(b_ptr.dtype.element_ty), mask=mask)
            if NESTEROV:
                d = tl.fma(buf, momentum, d)  # d.add(buf, alpha=momentum)
            else:
                d = buf
        p = tl.fma(d, -lr, p)  # param.add_(d, alpha=-lr)
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)


def _is_dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


class TritonSGD(torch.optim.Optimizer):
    """torch.optim.SGD's update (see the module docstring) as one Triton kernel launch per parameter group, device and
    dtype. Arguments as torch.optim.SGD's; the defaults are the paper's (lr 0.01, momentum 0.9, weight decay 5e-4).
    Parameters must be float32, float16 or bfloat16, dense, and on a CUDA device (or the CPU under
    TRITON_INTERPRET=1); sparse gradients are refused."""

    _CACHE_SIZE = 8

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 5e-4, nesterov: bool = False, *, maximize: bool = False):
        for name, value in (("lr", lr), ("momentum", momentum), ("dampening", dampening),
                            ("weight_decay", weight_decay)):
            _common.check_float(name, value)
            if value < 0.0:
                raise ValueError(f"invalid {name} {value}: must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                _common.check_tensor("parameter", p)
                if not _is_dense(p):
                    raise ValueError(f"TritonSGD needs dense parameters (contiguous or channels_last); got one of "
                                     f"shape {tuple(p.shape)} and strides {p.stride()}")
        self._tables: OrderedDict = OrderedDict()
        self.launches = 0  # kernel launches so far (the tests check there is one per group, device and dtype)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            use_momentum = group["momentum"] != 0
            buckets: dict[tuple, list] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("TritonSGD does not support sparse gradients")
                if grad.dtype != p.dtype or grad.device != p.device:
                    raise TypeError(f"gradient of dtype {grad.dtype} on {grad.device} for a parameter of dtype "
                                    f"{p.dtype} on {p.device}")
                grad = _common.same_layout(grad, p)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                first = False
                if use_momentum:
                    if buf is None:
                        buf = torch.empty_like(p, memory_format=torch.preserve_format)
                        first = True
                    elif buf.stride() != p.stride() or buf.dtype != p.dtype:
                        buf = _common.same_layout(buf.to(p.dtype), p)
                    state["momentum_buffer"] = buf
                buckets.setdefault((p.device, p.dtype), []).append((p, grad, buf if use_momentum else p, first))
            for items in buckets.values():
                self._launch(items, group)
        return loss

    def _launch(self, items, group) -> None:
        chunk, block, num_warps = sgd_launch()
        table = self._table(items, chunk)
        n_tensors = len(items)
        work = table[_ROW * n_tensors:]
        n_programs = work.numel() // 2
        if n_programs == 0:
            return
        _sgd_kernel[(n_programs,)](
            table, work, items[0][0],
            float(group["lr"]), float(group["momentum"]), float(group["dampening"]), float(group["weight_decay"]),
            USE_MOMENTUM=group["momentum"] != 0, NESTEROV=bool(group["nesterov"]), MAXIMIZE=bool(group["maximize"]),
            HAS_WEIGHT_DECAY=group["weight_decay"] != 0, CHUNK=chunk, BLOCK=block, num_warps=num_warps,
        )
        self.launches += 1

    def _table(self, items, chunk: int) -> torch.Tensor:
        """The int64 table [rows of (param, grad, buffer, numel, first)] + [(tensor, start) per program], on the
        parameters' device, cached by its contents."""
        rows, work = [], []
        for i, (p, g, b, first) in enumerate(items):
            n = p.numel()
            rows += [p.data_ptr(), g.data_ptr(), b.data_ptr(), n, int(first)]
            for start in range(0, n, chunk):
                work += [i, start]
        key = tuple(rows)
        cached = self._tables.get(key)
        if cached is not None:
            self._tables.move_to_end(key)
            return cached[1]
        device = items[0][0].device
        host = torch.tensor(rows + work, dtype=torch.int64)
        if device.type == "cuda":
            # Pinned and asynchronous: capturable in a CUDA graph; the pinned copy stays alive with the cache entry.
            host = host.pin_memory()
            table = host.to(device, non_blocking=True)
        else:
            table = host
        self._tables[key] = (host, table)
        if len(self._tables) > self._CACHE_SIZE:
            self._tables.popitem(last=False)
        return table
