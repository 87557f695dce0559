"""conv2d backward: input, weight and bias gradients (and the fused activation's) against torch autograd in float64."""
import importlib

import pytest
import torch
import torch.nn.functional as F

import perfkit.kernels as K
from triton_kernel_helpers import (ACTS, CONV_CASES, DTYPES, GRAD_TOL, assert_grads_close, conv_inputs, leaves,
                                   ref_leaves)

pytestmark = pytest.mark.usefixtures("ieee_fp32")
conv_module = importlib.import_module("perfkit.kernels.conv")

CASES = CONV_CASES


def _make(case, dtype=torch.float32, device="cpu", channels_last=False, bias=True):
    return conv_inputs(case, dtype, device, channels_last, bias, weight_channels_last=channels_last)


def _check(x, w, b, args, activation=None, tol=GRAD_TOL[torch.float32], grad_format=None):
    xg, wg, bg = leaves(x, w, b)
    y = K.conv2d(xg, wg, bg, activation=activation, **args)
    dy = torch.randn(y.shape).to(y.device, y.dtype)
    if grad_format is not None:
        dy = dy.contiguous(memory_format=grad_format)
    y.backward(dy)
    xr, wr, br = ref_leaves(x, w, b)
    ACTS[activation](F.conv2d(xr, wr, br, **args)).backward(dy.cpu().double())
    assert_grads_close([xg.grad, wg.grad, None if b is None else bg.grad], [xr.grad, wr.grad, br.grad if b is not None
                                                                           else None], tol, ["input", "weight", "bias"])
    # gradients come back in their tensors' layouts: channels_last stays channels_last
    assert xg.grad.stride() == xg.stride() and wg.grad.stride() == wg.stride()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_torch(name, channels_last, device):
    x, w, b, args = _make(CASES[name], device=device, channels_last=channels_last)
    _check(x, w, b, args)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("name", ["3x3 s2 p0 g4 Cg2", "3x3 s2 p1 g4 Cg16"])
def test_fused_activation_backward_matches_unfused_chain(name, activation, device):
    # act'(z) from the saved output is applied to dy inside both gradient GEMMs; the reference is act(conv(x)) in torch.
    x, w, b, args = _make(CASES[name], device=device, channels_last=True)
    _check(x, w, b, args, activation=activation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["3x3 s1 p1 C5", "1x1 C96"])
def test_dtypes(name, dtype, device):
    x, w, b, args = _make(CASES[name], dtype=dtype, device=device, channels_last=True)
    _check(x, w, b, args, activation="relu", tol=GRAD_TOL[dtype])


def test_gradient_in_another_layout_than_the_output(device):
    # autograd may hand an NCHW gradient to a channels_last output (a user's y.backward(torch.randn(y.shape))).
    x, w, b, args = _make(CASES["3x3 s2 p1 g4 Cg16"], device=device, channels_last=True)
    _check(x, w, b, args, activation="relu", grad_format=torch.contiguous_format)


@pytest.mark.parametrize("name, split", [("conv1-like 11x11 s4 p2", 2), ("3x3 s2 p1 g4 Cg16", 3)])
def test_split_weight_gradient(name, split, device, monkeypatch):
    # On a GPU the weight gradient's long reduction is split over programs with float32 partial sums, added by a
    # second kernel; the interpreter never splits on its own, so force it.
    monkeypatch.setattr(conv_module, "choose_wgrad_split", lambda m, tiles, device: split)
    x, w, b, args = _make(CASES[name], device=device, channels_last=True)
    _check(x, w, b, args, activation="relu")


def test_only_the_needed_gradients(device):
    """The image (conv1's input) needs no gradient: no input gradient is computed; a bias alone still gets one."""
    x, w, b, args = _make(CASES["3x3 s1 p1 C5"], device=device)
    wg, bg = leaves(w, b)
    K.conv2d(x, wg, bg, activation="relu", **args).sum().backward()
    assert x.grad is None and wg.grad is not None and bg.grad is not None
    xr, wr, br = ref_leaves(x, w, b)
    torch.relu(F.conv2d(xr.detach(), wr, br, **args)).sum().backward()
    assert_grads_close([wg.grad, bg.grad], [wr.grad, br.grad], 1e-5, ["weight", "bias"])

    bias_only = b.detach().clone().requires_grad_()
    K.conv2d(x, w, bias_only, activation="relu", **args).sum().backward()
    assert_grads_close([bias_only.grad], [br.grad], 1e-5, ["bias"])


def test_choose_wgrad_split_heuristic(monkeypatch):
    common = importlib.import_module("perfkit.kernels._common")
    monkeypatch.setattr(common, "_INTERPRETING", False)

    class Props:
        multi_processor_count = 132

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props)
    cuda = torch.device("cuda", 0)
    # conv1 at batch 128: 1 x 3 tiles of 128 x 128 over a 387,200-pixel reduction: split 44 ways
    assert conv_module.choose_wgrad_split(128 * 55 * 55, 3, cuda) == 44
    assert conv_module.choose_wgrad_split(128 * 13 * 13, 100, cuda) == 1  # enough tiles already
    assert conv_module.choose_wgrad_split(4096, 3, cuda) == 2  # each slice at least 2048 pixels deep
    assert conv_module.choose_wgrad_split(128 * 55 * 55, 3, torch.device("cpu")) == 1
