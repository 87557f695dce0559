"""Hand-written Triton kernels for every AlexNet layer, forward and backward, behind a functional API that mirrors
torch.nn.functional (names, argument order, defaults), plus fused forms, and a fused SGD optimizer.

    conv2d(input, weight, bias=None, stride=1, padding=0, groups=1, activation=None)
    linear(input, weight, bias=None, activation=None, dropout_p=0.0, dropout_seed=None)
    relu(input), tanh(input), sigmoid(input)
    local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0)
    max_pool2d(input, kernel_size, stride=None, padding=0)
    lrn_max_pool2d(input, size, alpha=1e-4, beta=0.75, k=1.0, kernel_size=3, stride=2, padding=0)
    dropout(input, p=0.5, training=True, seed=None)
    cross_entropy(logits, target)
    augment(input, top, left, flip, alpha, color, mean, std, size=224, out_dtype=torch.float32,
            channels_last=False, input_scale=None)
    is_interpreting()
    TritonSGD(params, lr=0.01, momentum=0.9, dampening=0, weight_decay=5e-4, nesterov=False)   (perfkit.kernels.sgd)

Every function is differentiable: each op is a torch.autograd.Function (in its kernel module) whose backward runs
Triton kernels, so ``loss.backward()`` through them launches nothing else. Fused forward forms have fused backwards:
conv2d / linear with an activation apply its derivative (from the saved output) inside the gradient kernels, linear's
dropout mask is regenerated from its seed, lrn_max_pool2d goes back through the pooling's saved one-byte winning taps
and the LRN in one kernel. Backward kernels write input gradients in the input's memory format (channels_last stays
channels_last) and parameter gradients in the parameter's.

Tensors are float32, float16 or bfloat16 (accumulation in float32) on a CUDA device, or on the CPU when
TRITON_INTERPRET=1 was set before this package was imported (Triton's interpreter: correctness only, and wrong for
bfloat16). Arguments are checked before anything is launched: TypeError for a wrong type or dtype, ValueError for a
wrong shape, value or device (see ``_common``). ``activation`` is None, "relu", "tanh" or "sigmoid" everywhere.
``augment`` is not a layer: it is AlexNet's training augmentation (crop, mirror, PCA lighting, normalisation) of a
batch of uint8 or float images, fused into one kernel; ``perfkit.workloads.augment`` has its torch reference.

For callers timing these kernels: conv2d is fastest on channels_last activations and weights
(``module.to(memory_format=torch.channels_last)`` converts both once); an NCHW input with C / groups >= 16 is
converted on every call, as is an NCHW weight. The first call for each problem shape compiles its binary (one config
per problem, from the committed table of the GPU's arch; ``PERFKIT_AUTOTUNE=full`` compiles and times every config
instead, see ``tuning``): warm up before measuring or capturing a CUDA graph, or precompile (``perfkit.backends.triton_binaries``).
Under graph replay, a dropout seed drawn at capture time is replayed too. ``aot`` compiles the kernels for a GPU that
is not there (``perfkit kernels check``).
"""
from ._common import is_interpreting
from .activation import relu, sigmoid, tanh
from .augment import augment
from .conv import conv2d
from .cross_entropy import cross_entropy
from .dropout import dropout
from .linear import linear
from .lrn import local_response_norm, lrn_max_pool2d
from .pool import max_pool2d
from .sgd import TritonSGD

__all__ = [
    "TritonSGD",
    "augment",
    "conv2d",
    "cross_entropy",
    "dropout",
    "is_interpreting",
    "linear",
    "local_response_norm",
    "lrn_max_pool2d",
    "max_pool2d",
    "relu",
    "sigmoid",
    "tanh",
]
