"""Bad input raises a clear error, of the documented type, before any kernel is launched."""
import importlib
import re

import pytest
import torch

import perfkit.kernels as K
from triton_kernel_helpers import needs_gpu

# importlib, not `from perfkit.kernels import dropout`: the package's functions shadow the modules of the same name.
_common, activation, conv, cross_entropy, dropout, linear, lrn, pool = (
    importlib.import_module(f"perfkit.kernels.{name}")
    for name in ("_common", "activation", "conv", "cross_entropy", "dropout", "linear", "lrn", "pool")
)

KERNELS = [
    (activation, "_activation_kernel"),
    (dropout, "_dropout_kernel"),
    (linear, "_linear_kernel"),
    (conv, "_conv2d_kernel"),
    (pool, "_max_pool2d_kernel"),
    (lrn, "_lrn_kernel"),
    (lrn, "_lrn_max_pool2d_kernel"),
    (cross_entropy, "_cross_entropy_kernel"),
    (cross_entropy, "_mean_kernel"),
    # backward kernels: never reached by these calls, blocked all the same
    (activation, "_activation_backward_kernel"),
    (linear, "_linear_dz_kernel"),
    (conv, "_conv2d_dgrad_kernel"),
    (conv, "_conv2d_wgrad_kernel"),
    (pool, "_max_pool2d_backward_kernel"),
    (lrn, "_lrn_backward_kernel"),
    (cross_entropy, "_cross_entropy_backward_kernel"),
]


class _Launched(Exception):
    pass


class _NoLaunch:
    def __getitem__(self, grid):
        raise _Launched("a kernel was launched")


@pytest.fixture
def no_launch(monkeypatch):
    for module, name in KERNELS:
        monkeypatch.setattr(module, name, _NoLaunch())


class Make:
    """Tensor factory on the test device, so that the checks under test, not the device check, are what fails."""

    def __init__(self, device):
        self.device = device

    def __call__(self, *shape, dtype=torch.float32):
        return torch.randn(*shape).to(device=self.device, dtype=dtype)

    def x4(self, c=6, hw=13, dtype=torch.float32):
        return self(2, c, hw, hw, dtype=dtype)

    def idx(self, values, dtype=torch.int64):
        return torch.tensor(values, dtype=dtype, device=self.device)


# One valid call per entry point: with launches blocked, each must get as far as the launch.
VALID = {
    "conv2d": lambda t: K.conv2d(t.x4(), t(4, 3, 3, 3), t(4), stride=2, padding=1, groups=2, activation="relu"),
    "linear": lambda t: K.linear(t(3, 10), t(5, 10), t(5), activation="tanh", dropout_p=0.5, dropout_seed=1),
    "relu": lambda t: K.relu(t(3, 4)),
    "tanh": lambda t: K.tanh(t(3, 4)),
    "sigmoid": lambda t: K.sigmoid(t(3, 4)),
    "dropout": lambda t: K.dropout(t(3, 4), 0.5, seed=1),
    "local_response_norm": lambda t: K.local_response_norm(t.x4(), 5),
    "max_pool2d": lambda t: K.max_pool2d(t.x4(), 3, 2),
    "lrn_max_pool2d": lambda t: K.lrn_max_pool2d(t.x4(), 5),
    "cross_entropy": lambda t: K.cross_entropy(t(3, 10), t.idx([1, 2, 3])),
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_call_reaches_the_launch(name, no_launch, device):
    # The control for every test below: blocking launches is what stops a valid call, so the errors there come from
    # the checks, before the launch.
    with pytest.raises(_Launched):
        VALID[name](Make(device))


BAD = {
    # conv2d
    "conv: input not a tensor": (lambda t: K.conv2d([[1.0]], t(4, 3, 3, 3)), TypeError, "input must be a torch.Tensor"),
    "conv: input rank 3": (lambda t: K.conv2d(t(6, 13, 13), t(4, 6, 3, 3)), ValueError, "input must be 4-D"),
    "conv: weight rank 2": (lambda t: K.conv2d(t.x4(), t(4, 6)), ValueError, "weight must be 4-D"),
    "conv: C not divisible by groups": (
        lambda t: K.conv2d(t.x4(c=5), t(4, 2, 3, 3), groups=2), ValueError, "5 channels, not divisible by groups=2"),
    "conv: C_out not divisible by groups": (
        lambda t: K.conv2d(t.x4(), t(5, 3, 3, 3), groups=2), ValueError,
        "5 output channels, not divisible by groups=2"),
    "conv: weight channels vs input/groups": (
        lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), groups=2), ValueError, "expects 6 input channels per group"),
    "conv: bias shape": (lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), t(5)), ValueError, r"bias has shape \(5,\)"),
    "conv: bias rank": (lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), t(4, 1)), ValueError, "bias must be 1-D"),
    "conv: float64": (
        lambda t: K.conv2d(t.x4(dtype=torch.float64), t(4, 6, 3, 3, dtype=torch.float64)), TypeError, "torch.float64"),
    "conv: int input": (
        lambda t: K.conv2d(t(2, 6, 5, 5).to(torch.int32), t(4, 6, 3, 3)), TypeError, "torch.int32"),
    "conv: dtype mismatch": (
        lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3, dtype=torch.float16)), TypeError, "dtype torch.float16 but input"),
    "conv: unknown activation": (
        lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), activation="gelu"), ValueError, "unknown activation 'gelu'"),
    "conv: stride 0": (lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), stride=0), ValueError, "stride must be >= 1"),
    "conv: stride triple": (lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), stride=(1, 2, 3)), ValueError, "pair of ints"),
    "conv: stride float": (lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), stride=1.5), TypeError, "stride must be an int"),
    "conv: negative padding": (
        lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), padding=-1), ValueError, "padding must be >= 0"),
    "conv: groups 0": (lambda t: K.conv2d(t.x4(), t(4, 6, 3, 3), groups=0), ValueError, "groups must be >= 1"),
    "conv: kernel larger than input": (
        lambda t: K.conv2d(t.x4(hw=5), t(4, 6, 7, 7)), ValueError, "smaller than the 7x7 kernel"),
    "conv: image over int32": (
        lambda t: K.conv2d(t(1).expand(1, 2**16, 2**8, 2**8), t(1, 2**16, 1, 1)),
        ValueError, "int32"),
    # linear
    "linear: input rank 3": (lambda t: K.linear(t(2, 3, 10), t(5, 10)), ValueError, "input must be 2-D or 4-D"),
    "linear: weight in_features": (lambda t: K.linear(t(3, 10), t(5, 11)), ValueError, "10 features per row"),
    "linear: 4-D input features": (lambda t: K.linear(t(3, 2, 2, 2), t(5, 4)), ValueError, "8 features per row"),
    "linear: bias shape": (lambda t: K.linear(t(3, 10), t(5, 10), t(4)), ValueError, r"expected \(5,\)"),
    "linear: float64": (
        lambda t: K.linear(t(3, 10, dtype=torch.float64), t(5, 10, dtype=torch.float64)), TypeError, "float64"),
    "linear: bias dtype": (
        lambda t: K.linear(t(3, 10), t(5, 10), t(5, dtype=torch.float16)), TypeError, "bias has dtype torch.float16"),
    "linear: unknown activation": (lambda t: K.linear(t(3, 10), t(5, 10), activation="swish"), ValueError,
                                   "unknown activation"),
    "linear: dropout_p > 1": (lambda t: K.linear(t(3, 10), t(5, 10), dropout_p=1.5), ValueError,
                              r"dropout_p must be in \[0, 1\]"),
    "linear: dropout_p < 0": (lambda t: K.linear(t(3, 10), t(5, 10), dropout_p=-0.1), ValueError,
                              r"dropout_p must be in \[0, 1\]"),
    "linear: seed type": (lambda t: K.linear(t(3, 10), t(5, 10), dropout_p=0.5, dropout_seed="x"), TypeError,
                          "seed must be an int"),
    "linear: negative seed": (lambda t: K.linear(t(3, 10), t(5, 10), dropout_p=0.5, dropout_seed=-1), ValueError,
                              "seed must be in"),
    # elementwise and dropout
    "relu: float64": (lambda t: K.relu(t(3, dtype=torch.float64)), TypeError, "torch.float64"),
    "tanh: not a tensor": (lambda t: K.tanh(3.0), TypeError, "must be a torch.Tensor"),
    "sigmoid: int": (lambda t: K.sigmoid(t.idx([0, 1, 2])), TypeError, "torch.int64"),
    "dropout: p > 1": (lambda t: K.dropout(t(3), 1.5), ValueError, r"p must be in \[0, 1\]"),
    "dropout: p < 0": (lambda t: K.dropout(t(3), -0.5), ValueError, r"p must be in \[0, 1\]"),
    "dropout: p NaN": (lambda t: K.dropout(t(3), float("nan")), ValueError, r"p must be in \[0, 1\]"),
    "dropout: seed float": (lambda t: K.dropout(t(3), 0.5, seed=1.0), TypeError, "seed must be an int"),
    "dropout: training not bool": (
        lambda t: K.dropout(t(3), 0.5, training="yes"), TypeError, "training must be a bool"),
    # pooling and LRN
    "pool: padding over half the kernel": (lambda t: K.max_pool2d(t.x4(), 3, 2, padding=2), ValueError,
                                           "at most half of kernel_size"),
    "pool: kernel 0": (lambda t: K.max_pool2d(t.x4(), 0), ValueError, "kernel_size must be >= 1"),
    "pool: input rank 3": (lambda t: K.max_pool2d(t(6, 13, 13), 3), ValueError, "input must be 4-D"),
    "pool: window larger than input": (
        lambda t: K.max_pool2d(t.x4(hw=2), 3), ValueError, "smaller than the 3x3 window"),
    "pool: float64": (lambda t: K.max_pool2d(t.x4(dtype=torch.float64), 3), TypeError, "float64"),
    "lrn: size 0": (lambda t: K.local_response_norm(t.x4(), 0), ValueError, "size must be >= 1"),
    "lrn: size float": (lambda t: K.local_response_norm(t.x4(), 2.5), TypeError, "size must be an int"),
    "lrn: input rank 2": (lambda t: K.local_response_norm(t(3, 4), 3), ValueError, "3-D or 4-D or 5-D"),
    "lrn: alpha str": (lambda t: K.local_response_norm(t.x4(), 5, alpha="1"), TypeError, "alpha must be a float"),
    "lrn+pool: padding": (lambda t: K.lrn_max_pool2d(t.x4(), 5, padding=2), ValueError, "at most half"),
    "lrn+pool: rank": (lambda t: K.lrn_max_pool2d(t(6, 13, 13), 5), ValueError, "input must be 4-D"),
    # cross-entropy
    "ce: target int32": (lambda t: K.cross_entropy(t(3, 10), t.idx([1, 2, 3], dtype=torch.int32)), TypeError,
                         "int64"),
    "ce: target shape": (lambda t: K.cross_entropy(t(3, 10), t.idx([1, 2])), ValueError, r"expected \(3,\)"),
    "ce: logits rank": (lambda t: K.cross_entropy(t(3, 10, 2), t.idx([1, 2, 3])), ValueError, "must be 2-D"),
    "ce: logits float64": (lambda t: K.cross_entropy(t(3, 10, dtype=torch.float64), t.idx([1, 2, 3])),
                           TypeError, "float64"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_raises_before_launch(name, no_launch, device):
    call, error, message = BAD[name]
    with pytest.raises(error, match=message):
        call(Make(device))


class MakeTrainable(Make):
    """The same tensors, requiring gradients: the differentiable path checks its arguments just as early."""

    def __call__(self, *shape, dtype=torch.float32):
        t = super().__call__(*shape, dtype=dtype)
        return t.requires_grad_() if t.is_floating_point() else t


@pytest.mark.parametrize("name", [n for n in BAD if not n.endswith(("int input", "int", "not a tensor"))])
def test_bad_input_raises_before_launch_when_differentiable(name, no_launch, device):
    call, error, message = BAD[name]
    with pytest.raises(error, match=message):
        call(MakeTrainable(device))


CPU_MESSAGE = re.escape(
    "is on the CPU; Triton kernels need a CUDA tensor (set TRITON_INTERPRET=1 before importing perfkit.kernels to run "
    "them on the CPU for testing)"
)


@pytest.mark.parametrize("name", list(VALID))
def test_cpu_tensor_without_the_interpreter(name, no_launch, monkeypatch):
    monkeypatch.setattr(_common, "_INTERPRETING", False)
    first = "logits" if name == "cross_entropy" else "input"
    with pytest.raises(ValueError, match=first + " " + CPU_MESSAGE):
        VALID[name](Make("cpu"))


def test_other_devices_are_refused(no_launch):
    x = torch.empty(2, 6, 13, 13, device="meta")
    with pytest.raises(ValueError, match="is on device meta; Triton kernels need a CUDA tensor"):
        K.max_pool2d(x, 3)


def test_is_interpreting_is_exported():
    import os

    assert K.is_interpreting() == (os.environ.get("TRITON_INTERPRET") == "1")


@needs_gpu
def test_mismatched_devices(no_launch):
    x = torch.randn(2, 6, 13, 13, device="cuda")
    with pytest.raises(ValueError, match="weight is on the CPU"):
        K.conv2d(x, torch.randn(4, 6, 3, 3))
    with pytest.raises(ValueError, match="target is on cpu"):
        K.cross_entropy(torch.randn(3, 10, device="cuda"), torch.tensor([1, 2, 3]))
