"""local_response_norm, max_pool2d and the fused lrn_max_pool2d against torch (float64 references)."""
import pytest
import torch
import torch.nn.functional as F

import perfkit.kernels as K
from triton_kernel_helpers import DTYPES, ELEMENTWISE_TOL, randn, ref, rel_err

FORMATS = [pytest.param(False, id="nchw"), pytest.param(True, id="channels_last")]

# (shape, size, alpha, beta, k). A large alpha makes the normalisation matter: with AlexNet's alpha = 1e-4 the
# denominator is k to within 1e-3 and a wrong window would hide under the tolerance.
LRN_CASES = {
    "alexnet norm1 (96x55x55, k=2, n=5)": ((1, 96, 55, 55), 5, 1e-4, 0.75, 2.0),
    "odd C, n=5": ((3, 5, 13, 13), 5, 1.0, 0.75, 2.0),
    "even n=4": ((3, 7, 13, 13), 4, 1.0, 0.75, 1.0),
    "even n=2, C=3": ((1, 3, 31, 31), 2, 2.0, 0.5, 1.0),
    "n=1": ((3, 5, 13, 13), 1, 1.0, 0.75, 1.0),
    "window wider than C": ((1, 5, 13, 13), 12, 1.0, 0.75, 1.0),
    "48 channels, beta=1": ((3, 48, 13, 13), 5, 0.5, 1.0, 2.0),
}


@pytest.mark.parametrize("channels_last", FORMATS)
@pytest.mark.parametrize("name", list(LRN_CASES))
def test_lrn_matches_torch(name, channels_last, device):
    shape, size, alpha, beta, k = LRN_CASES[name]
    x = randn(*shape, device=device, scale=2.0, channels_last=channels_last)
    y = K.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    expected = F.local_response_norm(ref(x), size, alpha=alpha, beta=beta, k=k)
    assert rel_err(y, expected) < 1e-5
    # the normalisation is not a no-op here, so the check above is about the window, not about copying x
    if alpha >= 0.5:
        assert rel_err(ref(x), expected) > 1e-2


@pytest.mark.parametrize("dtype", DTYPES)
def test_lrn_dtypes(dtype, device):
    x = randn(3, 5, 13, 13, dtype=dtype, device=device, scale=2.0)
    y = K.local_response_norm(x, 3, alpha=1.0, beta=0.75, k=1.0)
    assert y.dtype == dtype
    assert rel_err(y, F.local_response_norm(ref(x), 3, alpha=1.0, beta=0.75, k=1.0)) < ELEMENTWISE_TOL[dtype]


@pytest.mark.parametrize("shape", [(3, 5, 31), (1, 7, 3, 4, 5)], ids=["3d", "5d"])
def test_lrn_other_ranks(shape, device):
    x = randn(*shape, device=device)
    y = K.local_response_norm(x, 3, alpha=1.0)
    assert rel_err(y, F.local_response_norm(ref(x), 3, alpha=1.0)) < 1e-5


# (shape, kernel_size, stride, padding)
POOL_CASES = {
    "alexnet pool2 3x3 s2 (256x27x27 -> 13x13)": ((1, 256, 27, 27), 3, 2, 0),
    "3x3 s2 C5 13x13": ((3, 5, 13, 13), 3, 2, 0),
    "3x3 s2 p1": ((3, 5, 13, 13), 3, 2, 1),
    "2x2 default stride": ((1, 3, 31, 31), 2, None, 0),
    "rect (3,2) s(2,1) p(1,0)": ((3, 5, 27, 13), (3, 2), (2, 1), (1, 0)),
    "1x1 s3": ((1, 5, 13, 13), 1, 3, 0),
    "5x5 s4 p2": ((3, 48, 31, 31), 5, 4, 2),
}


@pytest.mark.parametrize("channels_last", FORMATS)
@pytest.mark.parametrize("name", list(POOL_CASES))
def test_max_pool_matches_torch(name, channels_last, device):
    shape, kernel_size, stride, padding = POOL_CASES[name]
    x = randn(*shape, device=device, channels_last=channels_last)
    y = K.max_pool2d(x, kernel_size, stride, padding)
    expected = F.max_pool2d(ref(x), kernel_size, stride, padding)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    assert torch.equal(y.cpu().double(), expected)  # a max is exact


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_dtypes(dtype, device):
    x = randn(3, 5, 13, 13, dtype=dtype, device=device)
    y = K.max_pool2d(x, 3, 2)
    assert y.dtype == dtype
    assert torch.equal(y.cpu().double(), F.max_pool2d(ref(x), 3, 2))


def test_max_pool_propagates_nan(device):
    x = randn(1, 2, 5, 5, device=device)
    x[0, 1, 2, 2] = float("nan")
    y = K.max_pool2d(x, 3, 2).cpu()
    assert torch.isnan(y[0, 1]).all()  # every 3x3 stride-2 window of a 5x5 map covers the centre
    assert not torch.isnan(y[0, 0]).any()


# (shape, size, alpha, beta, k, kernel_size, stride, padding)
FUSED_CASES = {
    "alexnet norm1+pool1 (96x55x55 -> 27x27)": ((1, 96, 55, 55), 5, 1e-4, 0.75, 2.0, 3, 2, 0),
    "stride None = kernel_size": ((3, 5, 13, 13), 3, 1.0, 0.75, 2.0, 2, None, 0),
    "C5 13x13 strong norm": ((3, 5, 13, 13), 5, 1.0, 0.75, 2.0, 3, 2, 0),
    "even size, padding 1": ((3, 7, 13, 13), 4, 1.0, 0.75, 1.0, 3, 2, 1),
    "rect window, stride (1,2)": ((1, 5, 27, 13), 3, 2.0, 0.5, 1.0, (2, 3), (1, 2), (1, 1)),
}


@pytest.mark.parametrize("channels_last", FORMATS)
@pytest.mark.parametrize("name", list(FUSED_CASES))
def test_fused_lrn_max_pool_matches_chain(name, channels_last, device):
    shape, size, alpha, beta, k, kernel_size, stride, padding = FUSED_CASES[name]
    # A negative shift puts whole windows below zero: the padding must then act as -inf, not as the LRN of a zero.
    x = randn(*shape, device=device, scale=2.0, channels_last=channels_last) - 1.0
    y = K.lrn_max_pool2d(x, size, alpha=alpha, beta=beta, k=k, kernel_size=kernel_size, stride=stride, padding=padding)
    expected = F.max_pool2d(F.local_response_norm(ref(x), size, alpha=alpha, beta=beta, k=k), kernel_size, stride,
                            padding)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    assert rel_err(y, expected) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_lrn_max_pool_dtypes(dtype, device):
    x = randn(3, 5, 13, 13, dtype=dtype, device=device, scale=2.0)
    y = K.lrn_max_pool2d(x, 5, alpha=1.0, k=2.0)
    assert y.dtype == dtype
    expected = F.max_pool2d(F.local_response_norm(ref(x), 5, alpha=1.0, k=2.0), 3, 2)
    assert rel_err(y, expected) < ELEMENTWISE_TOL[dtype]
