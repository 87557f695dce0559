"""Test-wide setup.

Without a GPU, Triton kernels run on CPU tensors through the interpreter. TRITON_INTERPRET must be set before any kernel
module is imported (triton.jit reads it at decoration time), so it is set here, before test modules import perfkit.
"""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture
def device() -> str:
    """Where kernel tests run: the GPU when there is one, else CPU tensors under the Triton interpreter."""
    return "cuda" if HAS_CUDA and not INTERPRETING else "cpu"
