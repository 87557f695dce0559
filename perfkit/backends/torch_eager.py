"""The torch backends: stock PyTorch operators in eager mode (cuDNN/cuBLAS on a GPU, oneDNN/MKL on a CPU).

`torch` (NCHW, the default memory format) is the reference every other backend is checked against and the baseline
speedups are measured over. `channels_last` is the same operators with activations and 4-D weights in channels_last
(NHWC) memory format: the layout oneDNN's convolutions prefer on a CPU and cuDNN's tensor-core kernels on a GPU, and
what PyTorch's performance guide tells users to try first."""
from __future__ import annotations

from perfkit.backends import Backend
from perfkit.model import AlexNetModule, TorchOps


class TorchBackend(Backend):
    name = "torch"
    description = "stock PyTorch operators, eager (reference and baseline)"
    is_baseline = True

    def build(self, layers, parameters, device, dtype):
        return AlexNetModule(layers, TorchOps, device=device, dtype=dtype, parameters=parameters)


class ChannelsLastBackend(Backend):
    name = "channels_last"
    description = "stock PyTorch operators, eager, activations and conv weights in channels_last (NHWC) memory format"

    def build(self, layers, parameters, device, dtype):
        # The workload hands the module a channels_last input (perfkit.workload), so no conversion is timed; the
        # linear layers flatten NHWC activations, which costs one copy at fc6 as it would for any channels_last user.
        return AlexNetModule(layers, TorchOps, device=device, dtype=dtype, parameters=parameters, channels_last=True)
