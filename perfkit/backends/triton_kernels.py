"""The triton backend: perfkit's hand-written Triton kernels (perfkit.kernels), with their fusions.

The module is the same AlexNetModule as the torch backend's, run through `TritonOps`, which fuses conv + activation,
linear + activation (+ dropout) and LRN + max-pool into single kernels. The kernels are imported when a module is
built, never when perfkit is imported.

Training: every kernel is an autograd Function with a Triton backward (fused like its forward), and the optimizer is
`perfkit.kernels.sgd.TritonSGD` (the paper's SGD, one launch for all parameters), so the backward and train_step passes
run on Triton kernels only: no cuDNN or cuBLAS kernel is launched (tests/test_triton_training.py checks it with
torch.profiler on a GPU).

The runner times it on CUDA devices only. Under TRITON_INTERPRET=1 the same kernels run on CPU tensors, which is for
checking correctness (the tests do); the interpreter's timings mean nothing, so CPU cases are skipped with that reason.
"""
from __future__ import annotations

import importlib.util

from perfkit.backends import SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY, Backend
from perfkit.model import AlexNetModule


class TritonOps:
    """The ops interface of perfkit.model.TorchOps, on Triton kernels, with fusion."""

    name = "triton"
    fuses = True

    def __init__(self):
        from perfkit import kernels

        self.k = kernels

    def conv2d(self, x, weight, bias, stride, padding, groups, activation=None):
        return self.k.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups, activation=activation)

    def linear(self, x, weight, bias, activation=None, dropout_p=0.0):
        return self.k.linear(x, weight, bias, activation=activation, dropout_p=dropout_p)

    def activation(self, x, function):
        return {"relu": self.k.relu, "tanh": self.k.tanh, "sigmoid": self.k.sigmoid}[function](x)

    def local_response_norm(self, x, size, alpha, beta, k):
        return self.k.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)

    def lrn_max_pool2d(self, x, size, alpha, beta, k, kernel_size, stride, padding):
        return self.k.lrn_max_pool2d(x, size, alpha=alpha, beta=beta, k=k, kernel_size=kernel_size, stride=stride,
                                     padding=padding)

    def max_pool2d(self, x, kernel_size, stride, padding):
        return self.k.max_pool2d(x, kernel_size, stride=stride, padding=padding)

    def dropout(self, x, p, training):
        return self.k.dropout(x, p=p, training=training)

    def cross_entropy(self, logits, target):
        return self.k.cross_entropy(logits, target)


class TritonBackend(Backend):
    name = "triton"
    description = "hand-written Triton kernels with fusions (perfkit.kernels)"
    devices = ("cuda",)
    passes = ("forward", "backward", "train_step")
    supports_autocast = False  # its kernels run the dtype they are given: use the native dtype instead

    def unavailable_reason(self, device, dtype, pass_name):
        if device.split(":")[0] == "cpu":
            return ("Triton kernels need a CUDA GPU; on the CPU they run only in Triton's interpreter, which checks "
                    "correctness and whose timings are not performance")
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        return super().unavailable_reason(device, dtype, pass_name)

    def make_optimizer(self, params):
        from perfkit.kernels.sgd import TritonSGD

        return TritonSGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)

    def build(self, layers, parameters, device, dtype):
        # The implicit-GEMM convolutions read channels_last natively and convert NCHW inputs on every call, so the
        # module converts once at its input and keeps activations channels_last throughout.
        return AlexNetModule(layers, TritonOps(), device=device, dtype=dtype, parameters=parameters,
                             channels_last=True)
