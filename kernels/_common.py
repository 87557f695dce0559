"""Helpers shared by every kernel family: the interpreter switch, argument checks, the TF32 policy, autotune-config
selection, the fused epilogues (activation, dropout mask) and their derivatives for the backward kernels.

Error convention for the whole package (checked on the host, before anything is allocated or launched):

- ``TypeError``: an argument of the wrong Python type (a list where a tensor goes, a float where an int goes) or a
  tensor of an unsupported or mismatched dtype.
- ``ValueError``: a well-typed argument with a bad value: wrong rank or shape, a device the kernels cannot use or two
  tensors on different devices, an unknown activation, a bad kernel size, stride, padding or probability.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl


@triton.jit
def _probe():
    pass


# triton.jit decides at decoration time whether a function is compiled for the GPU or wrapped for the interpreter, so
# the truth is what it did to a function defined alongside the kernels, not what the environment says now.
_INTERPRETING: bool = type(_probe).__name__ == "InterpretedFunction" or os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(tile row, tile column) of program ``pid``, walking GROUP_M tile-rows down a column of tiles before moving
    right, so that programs running together share strips of
    both operands in L2 (the GEMMs of linear and conv2d)."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


# Set while `perfkit.kernels.tuning.recording_launches` records launches instead of running them: (arch, SM count) of
# the GPU the launches are for, so that host logic that depends on the device (split counts, the config table) sees
# that GPU and not the CPU tensors standing in for its memory.
_RECORDING_TARGET: tuple[str, int] | None = None


def recording_target() -> tuple[str, int] | None:
    """(arch such as "sm_90", SM count) while launches are being recorded for ahead-of-time compilation, else None."""
    return _RECORDING_TARGET


def multiprocessor_count(device: torch.device) -> int:
    """SMs of the GPU a launch is for: the recorded target's while recording, else the CUDA device's."""
    if _RECORDING_TARGET is not None:
        return _RECORDING_TARGET[1]
    return torch.cuda.get_device_properties(device).multi_processor_count


def is_interpreting() -> bool:
    """True when the kernels of this package run under Triton's CPU interpreter (``TRITON_INTERPRET=1`` was set before
    ``perfkit.kernels`` was imported). Interpreter timings mean nothing; use it for correctness only."""
    return _INTERPRETING


def select_configs(gpu_configs: list[triton.Config], interpreter_config: triton.Config) -> list[triton.Config]:
    """The autotune list for one kernel family: the GPU sweep, or the single config the interpreter can run (autotuning
    over several configs benchmarks them, which needs a GPU driver)."""
    return [interpreter_config] if is_interpreting() else gpu_configs


def gemm_config(bm: int, bn: int, bk: int, warps: int, stages: int, group_m: int = 8) -> triton.Config:
    """One autotune config of the GEMM kernels (linear, conv2d and its input gradient): tile sizes, the grouped tile
    ordering's GROUP_M (see `grouped_tile`), warps and pipeline stages."""
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}, num_warps=warps,
                         num_stages=stages)


def tuned(configs: list[triton.Config], key: list[str], prune=None, interpreter_blocks: dict | None = None):
    """Decorator for a tiled kernel: a `TunedKernel` over ``configs`` on a GPU (one config per problem by default,
    the whole list under ``PERFKIT_AUTOTUNE=full``; see `perfkit.kernels.tuning`). Under the interpreter, which cannot
    benchmark, ``triton.heuristics`` with ``interpreter_blocks`` ({meta-parameter: fn(args)}) instead: block sizes
    fitted to each problem, because masked lanes cost the interpreter as much as real ones (a 64-wide tile over 16
    channels is four times the work), and the interpreter's cost is per element and per loop step. Without
    ``interpreter_blocks`` the interpreter runs the list's first config."""

    def decorator(fn):
        if is_interpreting():
            if interpreter_blocks:
                return triton.heuristics(interpreter_blocks)(fn)
            return triton.autotune(configs=configs[:1], key=key)(fn)
        from .tuning import TunedKernel

        return TunedKernel(fn, configs, key, prune)

    return decorator


def fit_block(extent: int, low: int = 16, high: int = 64) -> int:
    """The power of two covering ``extent``, clamped to [low, high]: a tile dimension fitted to the problem."""
    return max(low, min(high, triton.next_power_of_2(max(1, extent))))


def keep_configs(configs: list[triton.Config], keep) -> list[triton.Config]:
    """Prune an autotune list with the predicate ``keep(config)``, never down to nothing."""
    kept = [c for c in configs if keep(c)]
    return kept or configs[:1]


# Dynamic shared memory per block on Hopper (H100/H200): 227 KiB. The estimate below only proposes pipeline depths;
# what a GPU may launch is decided by the compiler's own figure (perfkit.kernels.tuning, `perfkit kernels check`).
SHARED_MEMORY_BYTES = 227 * 1024


def fit_pipeline_stages(configs: list[triton.Config], elem_bytes: int, stage_elements=None) -> list[triton.Config]:
    """Lower num_stages of GEMM configs (BLOCK_M, BLOCK_N, BLOCK_K) until their operand ring buffers fit in shared
    memory for this element size: the 16-bit sweep would not launch in float32 otherwise. Duplicates are dropped.
    This is an estimate (operand buffers only, no epilogue scratch); the configs the compiler then finds over the
    limit are pruned by `perfkit.kernels.tuning` from the committed per-arch tables.
    ``stage_elements(bm, bn, bk)``: operand elements per stage, (M x K) + (K x N) by default; a GEMM whose reduction
    runs along BLOCK_M (the convolution's weight gradient) passes its own."""
    out, seen = [], set()
    for c in configs:
        bm, bn, bk = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
        per_stage = (stage_elements(bm, bn, bk) if stage_elements else bm * bk + bk * bn) * elem_bytes
        stages = c.num_stages
        while stages > 2 and stages * per_stage > SHARED_MEMORY_BYTES:
            stages -= 1
        if stages * per_stage > SHARED_MEMORY_BYTES:
            continue
        key = (tuple(sorted(c.kwargs.items())), c.num_warps, stages)
        if key in seen:
            continue
        seen.add(key)
        out.append(c if stages == c.num_stages else triton.Config(dict(c.kwargs), num_warps=c.num_warps,
                                                                  num_stages=stages))
    return out or configs[:1]


# ----------------------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------------------

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_CPU_MESSAGE = (
    "{name} is on the CPU; Triton kernels need a CUDA tensor (set TRITON_INTERPRET=1 before importing perfkit.kernels "
    "to run them on the CPU for testing)"
)


def check_tensor(name: str, t, ndim: int | Sequence[int] | None = None) -> None:
    """A floating-point tensor of a supported dtype, of the given rank(s), on a device the kernels can use."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; the Triton kernels support float32, float16 and bfloat16")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in ranks:
            want = " or ".join(f"{r}-D" for r in ranks)
            raise ValueError(f"{name} must be {want}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}")
    check_device(name, t)


def check_device(name: str, t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu":
        if is_interpreting() or recording_target() is not None:
            return
        raise ValueError(_CPU_MESSAGE.format(name=name))
    raise ValueError(f"{name} is on device {t.device}; Triton kernels need a CUDA tensor")


def check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``t`` has the dtype and device of ``ref``."""
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; they must match")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; they must be on one device")


def check_int(name: str, value, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_pair(name: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (height, width), each >= minimum."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = (value[0], value[1])
    else:
        pair = (value, value)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def check_probability(name: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(p).__name__}")
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return p


def check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    return float(value)


def check_seed(seed) -> int:
    """A seed for the Philox generator; None draws one from torch's default generator so that ``torch.manual_seed``
    makes the mask reproducible."""
    if seed is None:
        return int(torch.randint(0, 2**31 - 1, (), dtype=torch.int64).item())
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return seed


INT32_MAX = 2**31 - 1


def check_int32_extent(name: str, extent: int) -> None:
    """Offsets inside one image (or one row) are computed in int32 in the kernels; whole-tensor offsets are int64."""
    if extent > INT32_MAX:
        raise ValueError(f"{name} spans {extent} elements, over the int32 limit of the kernels' offsets")


# ----------------------------------------------------------------------------------------------------------------------
# Activation epilogue
# ----------------------------------------------------------------------------------------------------------------------

ACTIVATIONS = {None: 0, "relu": 1, "tanh": 2, "sigmoid": 3}


def activation_code(activation) -> int:
    """The constexpr code the kernels use for an activation name (None, "relu", "tanh" or "sigmoid")."""
    if activation is not None and not isinstance(activation, str):
        raise ValueError(f"activation must be None, 'relu', 'tanh' or 'sigmoid', got {activation!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected None, 'relu', 'tanh' or 'sigmoid'")
    return ACTIVATIONS[activation]


@triton.jit
def tanh_f32(x):
    """tanh from exp only (libdevice is unavailable to the interpreter), relative error under 1e-6 in float32 even
    with the GPU's approximate exp. Below |x| = 0.2 the odd Taylor series to x**7 (truncation < 1e-7) replaces
    (1 - e) / (1 + e), e = exp(-2|x|), whose subtraction cancels there."""
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    big = (1.0 - e) / (1.0 + e)
    x2 = x * x
    small = ax * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))))
    t = tl.where(ax < 0.2, small, big)
    return tl.where(x < 0, -t, t)


@triton.jit
def apply_activation(x, ACTIVATION: tl.constexpr):
    """The activation epilogue on a float32 block: 0 none, 1 relu, 2 tanh, 3 sigmoid (see ``activation_code``)."""
    if ACTIVATION == 1:
        # `x <= 0` rather than maximum(x, 0): NaN stays NaN and -0.0 becomes 0.0, as in torch.relu.
        x = tl.where(x <= 0.0, 0.0, x)
    elif ACTIVATION == 2:
        x = tanh_f32(x)
    elif ACTIVATION == 3:
        x = tl.sigmoid(x)
    return x


@triton.jit
def activation_grad(dy, y, ACTIVATION: tl.constexpr):
    """The gradient through the activation epilogue, from its **output** y = act(z) (float32 blocks): dy * act'(z).

    Every activation here has a derivative that is a function of its output, so the backward kernels need only the
    saved output, never the pre-activation: relu' = [y > 0], tanh' = 1 - y**2, sigmoid' = y * (1 - y). The forms and
    their order of operations are torch's (threshold_backward, tanh_backward, sigmoid_backward)."""
    if ACTIVATION == 1:
        dy = tl.where(y <= 0.0, 0.0, dy)
    elif ACTIVATION == 2:
        dy = dy * (1.0 - y * y)
    elif ACTIVATION == 3:
        dy = dy * (1.0 - y) * y
    return dy


@triton.jit
def dropout_keep(seed, offsets, p):
    """Which elements survive dropout with drop probability ``p``: one Philox draw per element offset, so the mask is a
    pure function of (seed, offset) and any kernel that knows an element's offset reproduces it."""
    return tl.rand(seed, offsets) >= p


# ----------------------------------------------------------------------------------------------------------------------
# TF32 policy
# ----------------------------------------------------------------------------------------------------------------------

def _resolve_fp32_precision(chain) -> bool | None:
    """Walk torch's fp32_precision settings from the most specific to the most general; "none" defers to the parent.
    Returns None when this torch has no such settings."""
    for owner, attr in chain:
        value = getattr(owner, attr, None) if owner is not None else None
        if value is None:
            return None
        if value == "tf32":
            return True
        if value == "ieee":
            return False
    return False  # every level says "none": torch's default, full float32


def allow_tf32_matmul() -> bool:
    """Whether float32 GEMMs may use TF32, as torch decides for cuBLAS (torch.backends.cuda.matmul)."""
    resolved = _resolve_fp32_precision(
        [(torch.backends.cuda.matmul, "fp32_precision"), (torch.backends, "fp32_precision")]
    )
    if resolved is not None:
        return resolved
    return bool(torch.backends.cuda.matmul.allow_tf32)  # torch before the fp32_precision settings


def allow_tf32_conv() -> bool:
    """Whether float32 convolutions may use TF32, as torch decides for cuDNN (torch.backends.cudnn)."""
    cudnn = torch.backends.cudnn
    resolved = _resolve_fp32_precision(
        [
            (getattr(cudnn, "conv", None), "fp32_precision"),
            (cudnn, "fp32_precision"),
            (torch.backends, "fp32_precision"),
        ]
    )
    if resolved is not None:
        return resolved
    return bool(cudnn.allow_tf32)


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``input_precision`` for tl.dot: "tf32" only for float32 operands, on a GPU, when the caller allows it. 16-bit
    operands ignore it."""
    if dtype == torch.float32 and allow_tf32 and not is_interpreting():
        return "tf32"
    return "ieee"


def dense_format(t: torch.Tensor) -> tuple[torch.Tensor, torch.memory_format]:
    """A 4-D tensor that is contiguous in NCHW or channels_last, with that format; anything else is made NCHW."""
    if t.is_contiguous():
        return t, torch.contiguous_format
    if t.is_contiguous(memory_format=torch.channels_last):
        return t, torch.channels_last
    return t.contiguous(), torch.contiguous_format


def same_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of the dense tensor ``like`` (same shape): ``t`` itself when they already match, else a
    copy. Backward kernels that walk storage in memory order (elementwise, dropout) need the incoming gradient laid out
    like the tensor whose offsets they reproduce."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor stored that way (and not also NCHW-contiguous), else contiguous_format."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
