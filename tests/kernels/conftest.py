"""Fixtures of the kernel tests (the `device` fixture comes from tests/conftest.py)."""
import pytest
import torch

from triton_kernel_helpers import fp32_precision


@pytest.fixture(autouse=True)
def _fresh_seed():
    """Every test draws fresh random inputs from a fixed seed, so a failure reproduces."""
    torch.manual_seed(1234)


@pytest.fixture
def ieee_fp32():
    """Float32 GEMMs in full precision (torch allows TF32 for cuDNN convolutions by default)."""
    with fp32_precision(matmul="ieee", conv="ieee"):
        yield
