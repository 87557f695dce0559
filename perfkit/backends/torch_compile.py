"""The compile backend: the torch backend's module through torch.compile (Inductor), with its default mode.

Compilation happens on the first call of each input shape, during the runner's correctness check and warm-up, so the
timed repetitions see compiled code only."""
from __future__ import annotations

import shutil

import torch

from perfkit.backends import Backend
from perfkit.model import AlexNetModule, TorchOps


class CompileBackend(Backend):
    name = "compile"
    description = "the torch backend through torch.compile (Inductor)"

    def unavailable_reason(self, device, dtype, pass_name):
        reason = super().unavailable_reason(device, dtype, pass_name)
        if reason:
            return reason
        if device == "cpu" and not (shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")):
            return "torch.compile on the CPU needs a C++ compiler, and none is on PATH"
        return None

    def build(self, layers, parameters, device, dtype):
        module = AlexNetModule(layers, TorchOps, device=device, dtype=dtype, parameters=parameters)
        # The compiled forward lives beside the module so the runner's dropout-mask capture still reaches it.
        module.forward = torch.compile(module.forward, dynamic=False)
        return module
