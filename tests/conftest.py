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


@pytest.fixture(autouse=True)
def ieee_float32():
    """float32 means IEEE float32 in every test, as in every perfkit row: cuBLAS matmuls and cuDNN convolutions
    (whose TF32 default is on in torch) and so the Triton kernels, which follow torch's switches. Without this a GPU
    test asserting a float32 error under 1e-4 would compare TF32 results. A test that wants TF32 sets it itself
    (triton_kernel_helpers.fp32_precision, or perfkit.backends.float32_precision("tf32"))."""
    from perfkit.backends import float32_precision

    with float32_precision("float32"):
        yield


@pytest.fixture
def device() -> str:
    """Where kernel tests run: the GPU when there is one, else CPU tensors under the Triton interpreter."""
    return "cuda" if HAS_CUDA and not INTERPRETING else "cpu"


@pytest.fixture
def open_runner(tmp_path):
    """open_runner(config, args=None) -> a Runner measuring into the store tmp_path/runner.db (closed afterwards):
    a new run, or the unfinished one with the same arguments, which it resumes."""
    from perfkit.measure.env import collect_environment, environment_id
    from perfkit.runner import Runner
    from perfkit.results.store import Store

    stores = []

    def open_(config, args=None):
        store = Store.open(tmp_path / "runner.db")
        stores.append(store)
        env = collect_environment()
        env_id = environment_id(env)
        store.add_environment(env, env_id, "test machine")
        run_id, _ = store.start_or_resume_run("test", args or {}, env_id, None, "0")
        return Runner(store, run_id, "test", env, env_id, config, show_progress=False)

    yield open_
    for store in stores:
        store.close()


@pytest.fixture
def broken_backend():
    """The name of a test-only backend whose activation is 1% off: wrong, and by enough for every check to see."""
    from perfkit.backends import BACKENDS, Backend
    from perfkit.model import AlexNetModule, TorchOps

    class OffByOnePercentOps(TorchOps):
        @staticmethod
        def activation(x, function):
            return TorchOps.activation(x, function) * 1.01

    class BrokenBackend(Backend):
        name = "broken"
        description = "test-only backend whose activation is 1% off"

        def build(self, layers, parameters, device, dtype):
            return AlexNetModule(layers, OffByOnePercentOps, device=device, dtype=dtype, parameters=parameters)

    BACKENDS["broken"] = BrokenBackend()
    yield "broken"
    del BACKENDS["broken"]
