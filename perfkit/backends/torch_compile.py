"""The compile backend: the torch backend's module through torch.compile (Inductor), with its default mode.

Compilation happens on the first call of each input shape, during the runner's correctness check and warm-up, so the
timed repetitions see compiled code only.

Every build starts from fresh compiled state (`torch._dynamo.reset()`). All modules share one code object,
`AlexNetModule.forward`, and dynamo keeps its compiled graphs per code object: without the reset, each case's check
batch and timed batch add graphs until dynamo's recompile limit (8 per code object) is reached, after which it runs
that code eagerly with only a logged warning, and later cases of a run would be eager code labelled compiled. On the
CPU the compiled C++ uses the thread count torch has when the case first runs (the runner sets the case's count
before building), which the reset also keeps from leaking between 1-thread and all-thread cases. CPU cases compile
in this process rather than in Inductor's worker pool (see `build`)."""
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
        torch._dynamo.reset()
        if device == "cpu":
            # Inductor compiles in a pool of worker processes that it starts (each importing torch) on the first
            # compile. On a CPU case those start-ups compete with the timed work for the same cores: on a 2-core
            # machine the first compile case's timed median came out 1.1-1.9x its profiled step. Compiling in this
            # process keeps the cores to the measurement.
            import torch._inductor.config as inductor_config

            inductor_config.compile_threads = 1
        module = AlexNetModule(layers, TorchOps, device=device, dtype=dtype, parameters=parameters)
        # The compiled forward lives beside the module so the runner's dropout-mask capture still reaches it.
        module.forward = torch.compile(module.forward, dynamic=False)
        return module
