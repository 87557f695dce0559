"""The torch backend: stock PyTorch operators in eager mode (cuDNN/cuBLAS on a GPU, oneDNN/MKL on a CPU).

It is the reference every other backend is checked against and the baseline speedups are measured over."""
from __future__ import annotations

from perfkit.backends import Backend
from perfkit.model import AlexNetModule, TorchOps


class TorchBackend(Backend):
    name = "torch"
    description = "stock PyTorch operators, eager (reference and baseline)"
    is_baseline = True

    def build(self, layers, parameters, device, dtype):
        return AlexNetModule(layers, TorchOps, device=device, dtype=dtype, parameters=parameters)
