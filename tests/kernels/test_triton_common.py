"""The shared policy helpers: TF32 decisions follow torch's switches, activation names, argument checks."""
import importlib
import warnings

import pytest
import torch

from triton_kernel_helpers import fp32_precision

_common = importlib.import_module("perfkit.kernels._common")


@pytest.mark.parametrize("matmul, conv", [("ieee", "ieee"), ("tf32", "ieee"), ("ieee", "tf32"), ("tf32", "tf32")])
def test_tf32_follows_torch_switches_without_warnings(matmul, conv):
    with fp32_precision(matmul=matmul, conv=conv), warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation warning from reading the switches would fail here
        assert _common.allow_tf32_matmul() is (matmul == "tf32")
        assert _common.allow_tf32_conv() is (conv == "tf32")


@pytest.mark.skipif(not hasattr(torch.backends, "fp32_precision"), reason="torch without fp32_precision settings")
def test_tf32_none_defers_to_the_global_setting():
    saved = (torch.backends.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    try:
        torch.backends.fp32_precision = "tf32"
        torch.backends.cuda.matmul.fp32_precision = "none"
        assert _common.allow_tf32_matmul() is True
    finally:
        torch.backends.fp32_precision = saved[0]
        torch.backends.cuda.matmul.fp32_precision = saved[1]


def test_dot_precision(monkeypatch):
    monkeypatch.setattr(_common, "_INTERPRETING", False)
    assert _common.dot_precision(torch.float32, allow_tf32=True) == "tf32"
    assert _common.dot_precision(torch.float32, allow_tf32=False) == "ieee"
    assert _common.dot_precision(torch.float16, allow_tf32=True) == "ieee"
    monkeypatch.setattr(_common, "_INTERPRETING", True)
    assert _common.dot_precision(torch.float32, allow_tf32=True) == "ieee"  # the interpreter computes in IEEE


def test_activation_codes():
    assert [_common.activation_code(a) for a in (None, "relu", "tanh", "sigmoid")] == [0, 1, 2, 3]
    for bad in ("ReLU", "gelu", "", torch.relu, 1):
        with pytest.raises(ValueError, match="activation"):
            _common.activation_code(bad)


def test_select_configs_gives_one_config_to_the_interpreter(monkeypatch):
    import triton

    gpu = [triton.Config({"B": 1}), triton.Config({"B": 2})]
    one = triton.Config({"B": 3})
    monkeypatch.setattr(_common, "_INTERPRETING", True)
    assert _common.select_configs(gpu, one) == [one]
    monkeypatch.setattr(_common, "_INTERPRETING", False)
    assert _common.select_configs(gpu, one) == gpu


def test_pairs_and_seeds():
    assert _common.check_pair("stride", 2, minimum=1) == (2, 2)
    assert _common.check_pair("stride", [2, 3], minimum=1) == (2, 3)
    with pytest.raises(TypeError):
        _common.check_pair("stride", True, minimum=1)
    torch.manual_seed(0)
    a = _common.check_seed(None)
    torch.manual_seed(0)
    assert _common.check_seed(None) == a
    assert _common.check_seed(2**62) == 2**62
    with pytest.raises(ValueError):
        _common.check_seed(2**63)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_sweeps_fit_shared_memory_after_pruning(dtype, monkeypatch):
    # The sweeps are written for 16-bit operands; in float32 the pruner lowers pipeline depth so that each config
    # still launches (an H100 block gets 227 KiB of shared memory).
    conv = importlib.import_module("perfkit.kernels.conv")
    linear = importlib.import_module("perfkit.kernels.linear")
    monkeypatch.setattr(_common, "_INTERPRETING", False)
    x = torch.empty(1, dtype=dtype)
    elem = x.element_size()
    sweeps = {
        "linear": (linear.gemm_configs(), lambda cs: linear._prune_gemm(cs, {"x_ptr": x})),
        "linear split-K": (linear.splitk_configs(), lambda cs: linear._prune_gemm(cs, {"x_ptr": x})),
        "conv": (conv.conv_configs(), lambda cs: conv._prune(cs, {"x_ptr": x, "KG": 256, "CG": 256},
                                                              CHANNELS_INNER=True)),
    }
    for name, (configs, prune) in sweeps.items():
        assert len(configs) > 1, name
        kept = prune(configs)
        for c in kept:
            bm, bn, bk = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
            assert c.num_stages * (bm * bk + bk * bn) * elem <= 227 * 1024, (name, c)
            assert c.num_stages >= 2
        if dtype == torch.float16:
            assert len(kept) == len(configs), name  # every 16-bit config fits as written
        else:
            assert len(kept) >= len(configs) // 2, name  # float32 keeps most tile shapes, shallower


def test_every_test_runs_float32_as_ieee_unless_it_asks_for_tf32():
    """torch's own default lets cuDNN convolutions use TF32, and the Triton conv follows that switch: the autouse
    fixture (tests/conftest.py) turns it off, so float32 tolerances are IEEE ones on a GPU too."""
    assert _common.allow_tf32_conv() is False
    assert _common.allow_tf32_matmul() is False
    with fp32_precision(matmul="tf32", conv="tf32"):
        assert _common.allow_tf32_conv() is True
