"""linear: the tiled GEMM with fused bias and activation, against torch computed in float64."""
import pytest
import torch
import torch.nn.functional as F

import perfkit.kernels as K
from triton_kernel_helpers import ACTS, DTYPES, FP16, FP32, GEMM_TOL, needs_gpu, randn, ref, rel_err

pytestmark = pytest.mark.usefixtures("ieee_fp32")


# (batch, in, out): batch 1 and 3, sizes that are no multiple of any block, one K spanning several K-steps, and a
# batch over one M-tile.
SHAPES = [(1, 7, 5), (3, 100, 37), (3, 300, 129), (67, 45, 130)]


def _reference(x, w, b, activation):
    return ACTS[activation](F.linear(ref(x).flatten(1), ref(w), ref(b)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch(shape, dtype, device):
    n, k, out = shape
    x = randn(n, k, dtype=dtype, device=device)
    w = randn(out, k, dtype=dtype, device=device, scale=k**-0.5)
    b = randn(out, dtype=dtype, device=device)
    y = K.linear(x, w, b)
    assert y.shape == (n, out) and y.dtype == dtype and y.is_contiguous()
    assert rel_err(y, _reference(x, w, b, None)) < GEMM_TOL[dtype]


@pytest.mark.parametrize("dtype", [FP32, FP16])
@pytest.mark.parametrize("activation", list(ACTS))
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_fused_bias_and_activation(activation, with_bias, dtype, device):
    x = randn(3, 100, dtype=dtype, device=device)
    w = randn(37, 100, dtype=dtype, device=device, scale=0.1)
    b = randn(37, dtype=dtype, device=device) if with_bias else None
    y = K.linear(x, w, b, activation=activation)
    assert rel_err(y, _reference(x, w, b, activation)) < GEMM_TOL[dtype]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_4d_input_is_flattened_in_nchw_order(channels_last, device):
    # fc6 sees pool5's (N, 256, 6, 6) maps; a channels_last map must still flatten as (C, H, W).
    x = randn(3, 5, 3, 3, device=device, channels_last=channels_last)
    w = randn(11, 45, device=device)
    b = randn(11, device=device)
    y = K.linear(x, w, b, activation="relu")
    assert y.shape == (3, 11)
    assert rel_err(y, _reference(x, w, b, "relu")) < 1e-5


def test_strided_operands(device):
    x = randn(100, 3, device=device).t()  # (3, 100) with column-major storage
    w = randn(100, 37, device=device).t()
    y = K.linear(x, w)
    assert rel_err(y, _reference(x, w, None, None)) < 1e-5


@needs_gpu
def test_float32_uses_tf32_only_when_torch_allows_it():
    from triton_kernel_helpers import fp32_precision

    x = randn(256, 1024, device="cuda")
    w = randn(512, 1024, device="cuda")
    expected = _reference(x, w, None, None)
    with fp32_precision(matmul="ieee", conv="ieee"):
        ieee = rel_err(K.linear(x, w), expected)
    with fp32_precision(matmul="tf32", conv="ieee"):
        tf32 = rel_err(K.linear(x, w), expected)
    assert ieee < 1e-5
    assert 1e-5 < tf32 < 5e-3  # TF32 keeps 10 mantissa bits: visibly less exact, still close


@pytest.mark.parametrize("split_k", [2, 3])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_split_k_path(split_k, activation, device, monkeypatch):
    # The split-K path (two kernels, float32 workspace) runs on the GPU for short deep GEMMs; force it here.
    import importlib

    linear_module = importlib.import_module("perfkit.kernels.linear")
    monkeypatch.setattr(linear_module, "choose_split_k", lambda M, N, K, device: split_k)
    x = randn(3, 300, device=device)
    w = randn(129, 300, device=device, scale=0.06)
    b = randn(129, device=device)
    y = K.linear(x, w, b, activation=activation)
    assert rel_err(y, _reference(x, w, b, activation)) < GEMM_TOL[torch.float32]
    fused = K.linear(x, w, b, activation=activation, dropout_p=0.5, dropout_seed=77)
    assert torch.equal(fused, K.dropout(y, 0.5, seed=77))


def test_choose_split_k_heuristic(monkeypatch):
    import importlib

    linear_module = importlib.import_module("perfkit.kernels.linear")
    common = importlib.import_module("perfkit.kernels._common")
    monkeypatch.setattr(common, "_INTERPRETING", False)

    class Props:
        multi_processor_count = 132

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props)
    cuda = torch.device("cuda", 0)
    assert linear_module.choose_split_k(128, 4096, 9216, cuda) == 4  # fc6 at batch 128: 32 tiles for 132 SMs
    assert linear_module.choose_split_k(1024, 4096, 9216, cuda) == 1  # batch 1024: 256 tiles, enough already
    assert linear_module.choose_split_k(128, 1000, 2048, cuda) == 2  # limited by K // 1024
    assert linear_module.choose_split_k(128, 4096, 9216, torch.device("cpu")) == 1
