"""AlexNet network specs and their cost model, as data.

A variant is a list of layer specs, resolved for an input size. Each spec knows its output shape, its parameter count,
and for each pass (`forward`, `backward`, `train_step`) at any batch size and dtype its FLOPs and the minimum bytes it
must move. Conventions, stated once:

- A multiply-add is 2 FLOPs. `gemm_flops` are those of convolutions and matrix products, counted exactly as
  `torch.utils.flop_counter.FlopCounterMode` counts them (bias adds excluded); `other_flops` are the elementwise work
  (bias adds, activations, LRN, pooling comparisons, dropout scaling, softmax, the SGD update), one per basic
  operation, an estimate that only matters for memory-bound layers.
- Minimum bytes: every tensor a pass must read is read once and every tensor it produces is written once, in the
  layer's dtype (parameters included); nothing is re-read. Integer targets count 8 bytes per label. A fused
  implementation of several layers can move less than the sum of their minima.
- `backward` is the backward pass alone (its forward is not counted); `train_step` is forward + loss + backward + one SGD
  update (momentum 0.9, weight decay 5e-4: 6 FLOPs per parameter; reads parameter, gradient and momentum, writes
  parameter and momentum).
- The first layer's input is the image, which needs no gradient, so conv1's backward computes only its weight gradient.
- Network totals: `forward` is the layers up to the logits (the loss excluded); `backward` and `train_step` include the
  cross-entropy loss.

conv1's padding: with a 224x224 input, an 11x11 kernel and stride 4, padding 2 gives floor((224 + 4 - 11) / 4) + 1 = 55,
the paper's 55x55 maps (torchvision does the same). The paper's 224 does not divide evenly (227x227 with no padding
would); the 4 pixels of padding are what makes 224 give 55.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

PASSES = ("forward", "backward", "train_step")
ACTIVATIONS = ("relu", "tanh", "sigmoid")

@dataclass(frozen=True)
class DtypeSpec:
    """What perfkit knows of a dtype name: bytes per element, the torch dtype it stores in (by name, so this module
    needs no torch), its short label, whether its check is held to a fixed tolerance alone (strict), whether its GEMMs
    run on tensor cores, and whether torch.autocast can run a case in it."""

    bytes: int
    torch_name: str
    short: str
    strict: bool = False
    tensor_cores: bool = False
    autocast: bool = False


#: Every dtype name perfkit uses, in display order: the one table the others derive from. "float32" is IEEE float32
#: (TF32 off); "tf32" is float32 storage with TF32 tensor-core matmuls and convolutions.
DTYPES = {
    "float64": DtypeSpec(8, "float64", "fp64", strict=True),
    "float32": DtypeSpec(4, "float32", "fp32", strict=True),
    "tf32": DtypeSpec(4, "float32", "tf32", tensor_cores=True),
    "float16": DtypeSpec(2, "float16", "fp16", tensor_cores=True, autocast=True),
    "bfloat16": DtypeSpec(2, "bfloat16", "bf16", tensor_cores=True, autocast=True),
}
#: Bytes per element of each dtype name.
DTYPE_BYTES = {name: d.bytes for name, d in DTYPES.items()}
#: Short labels (fp32, bf16, ...) for tables and figures.
DTYPE_SHORT = {name: d.short for name, d in DTYPES.items()}
#: The precisions a GPU run measures (float64 is the reference's alone).
GPU_PRECISIONS = tuple(name for name in DTYPES if name != "float64")

SGD_FLOPS_PER_PARAM = 6  # weight decay (mul, add), momentum (mul, add), update (mul, sub)
SGD_TENSOR_ACCESSES_PER_PARAM = 5  # read param, grad, momentum; write param, momentum
LABEL_BYTES = 8  # int64 class index


@dataclass(frozen=True)
class Cost:
    """Work of one pass over one layer (or a network) at a given batch and dtype."""

    gemm_flops: int
    other_flops: int
    bytes_min: int

    @property
    def flops(self) -> int:
        return self.gemm_flops + self.other_flops

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte of minimum traffic."""
        return self.flops / self.bytes_min if self.bytes_min else math.inf

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.gemm_flops + other.gemm_flops, self.other_flops + other.other_flops,
                    self.bytes_min + other.bytes_min)


ZERO_COST = Cost(0, 0, 0)


def _prod(shape) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a network, resolved for its input shape.

    `in_shape` and `out_shape` are per image: (C, H, W) or (features,). Subclasses give the parameter count and the
    per-pass work; `cost()` assembles forward, backward and train_step from them.
    """

    name: str
    in_shape: tuple[int, ...] = ()
    first: bool = False  # input is the image: no input gradient

    kind = "layer"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.in_shape

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    @property
    def params(self) -> int:
        return sum(_prod(s) for s in self.param_shapes.values())

    @property
    def in_numel(self) -> int:
        return _prod(self.in_shape)

    @property
    def out_numel(self) -> int:
        return _prod(self.out_shape)

    def forward_cost(self, batch: int, nbytes: int) -> Cost:
        raise NotImplementedError

    def backward_cost(self, batch: int, nbytes: int) -> Cost:
        raise NotImplementedError

    def sgd_cost(self, nbytes: int) -> Cost:
        return Cost(0, SGD_FLOPS_PER_PARAM * self.params, SGD_TENSOR_ACCESSES_PER_PARAM * self.params * nbytes)

    def cost(self, pass_name: str, batch: int, dtype: str = "float32") -> Cost:
        """FLOPs and minimum bytes of `pass_name` at `batch` images in `dtype`."""
        nbytes = dtype_bytes(dtype)
        if pass_name == "forward":
            return self.forward_cost(batch, nbytes)
        if pass_name == "backward":
            return self.backward_cost(batch, nbytes)
        if pass_name == "train_step":
            return self.forward_cost(batch, nbytes) + self.backward_cost(batch, nbytes) + self.sgd_cost(nbytes)
        raise ValueError(f"unknown pass {pass_name!r}; expected one of {', '.join(PASSES)}")

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class Conv(LayerSpec):
    out_channels: int = 0
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1

    kind = "conv"

    @property
    def in_channels(self) -> int:
        return self.in_shape[0]

    @property
    def out_shape(self):
        c, h, w = self.in_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    @property
    def param_shapes(self):
        return {"weight": (self.out_channels, self.in_channels // self.groups, self.kernel_size, self.kernel_size),
                "bias": (self.out_channels,)}

    def macs_per_image(self) -> int:
        return self.out_numel * (self.in_channels // self.groups) * self.kernel_size ** 2

    def forward_cost(self, batch, nbytes):
        weights = self.params
        return Cost(gemm_flops=2 * batch * self.macs_per_image(),
                    other_flops=batch * self.out_numel,  # bias add
                    bytes_min=(batch * (self.in_numel + self.out_numel) + weights) * nbytes)

    def backward_cost(self, batch, nbytes):
        gemms = 1 if self.first else 2  # weight gradient, and input gradient unless the input is the image
        read = batch * self.out_numel + batch * self.in_numel + (0 if self.first else _prod(self.param_shapes["weight"]))
        write = self.params + (0 if self.first else batch * self.in_numel)
        return Cost(gemm_flops=gemms * 2 * batch * self.macs_per_image(),
                    other_flops=batch * self.out_numel,  # bias gradient: a sum over batch and space
                    bytes_min=(read + write) * nbytes)

    def describe(self):
        g = f" groups={self.groups}" if self.groups > 1 else ""
        return (f"conv {self.in_channels}->{self.out_channels} {self.kernel_size}x{self.kernel_size} "
                f"stride {self.stride} pad {self.padding}{g}")


@dataclass(frozen=True)
class Linear(LayerSpec):
    out_features: int = 0

    kind = "linear"

    @property
    def in_features(self) -> int:
        return self.in_numel  # a (C, H, W) input is flattened, as fc6 does

    @property
    def out_shape(self):
        return (self.out_features,)

    @property
    def param_shapes(self):
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def forward_cost(self, batch, nbytes):
        return Cost(gemm_flops=2 * batch * self.out_features * self.in_features,
                    other_flops=batch * self.out_features,
                    bytes_min=(batch * (self.in_features + self.out_features) + self.params) * nbytes)

    def backward_cost(self, batch, nbytes):
        gemms = 1 if self.first else 2
        weight = self.out_features * self.in_features
        read = batch * self.out_features + batch * self.in_features + (0 if self.first else weight)
        write = self.params + (0 if self.first else batch * self.in_features)
        return Cost(gemm_flops=gemms * 2 * batch * weight,
                    other_flops=batch * self.out_features,
                    bytes_min=(read + write) * nbytes)

    def describe(self):
        return f"linear {self.in_features}->{self.out_features}"


class _Elementwise(LayerSpec):
    """A layer that reads its input once and writes an output of the same shape; backward reads the output gradient
    and one saved tensor and writes the input gradient."""

    forward_ops_per_element = 1
    backward_ops_per_element = 2

    def forward_cost(self, batch, nbytes):
        return Cost(0, self.forward_ops_per_element * batch * self.in_numel,
                    batch * (self.in_numel + self.out_numel) * nbytes)

    def backward_cost(self, batch, nbytes):
        return Cost(0, self.backward_ops_per_element * batch * self.in_numel, 3 * batch * self.in_numel * nbytes)


@dataclass(frozen=True)
class Activation(_Elementwise):
    """relu, tanh or sigmoid: one operation per element forward, two backward (derivative from the saved output,
    times the gradient)."""

    function: str = "relu"

    kind = "activation"

    def describe(self):
        return self.function


@dataclass(frozen=True)
class LocalResponseNorm(_Elementwise):
    """Across-channel LRN as the paper writes it: b = a / (k + alpha * sum of a^2 over `size` neighbouring channels)^beta.

    torch.nn.functional.local_response_norm divides alpha by size, so it is called with `torch_alpha` = alpha * size.
    Forward per element: `size` multiply-adds for the window sum, then scale, power and divide (2 * size + 4 ops);
    backward about as much again plus the chain through the sum (2 * size + 6)."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    kind = "lrn"

    @property
    def torch_alpha(self) -> float:
        return self.alpha * self.size

    @property
    def forward_ops_per_element(self):
        return 2 * self.size + 4

    @property
    def backward_ops_per_element(self):
        return 2 * self.size + 6

    def describe(self):
        return f"lrn size {self.size} alpha {self.alpha:g} beta {self.beta:g} k {self.k:g}"


@dataclass(frozen=True)
class MaxPool(LayerSpec):
    """Max pooling, floor mode. Backward reads the output gradient and the input (to find each window's maximum
    again) and writes the input gradient."""

    kernel_size: int = 3
    stride: int = 2
    padding: int = 0

    kind = "maxpool"

    @property
    def out_shape(self):
        c, h, w = self.in_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    def forward_cost(self, batch, nbytes):
        return Cost(0, (self.kernel_size ** 2 - 1) * batch * self.out_numel,
                    batch * (self.in_numel + self.out_numel) * nbytes)

    def backward_cost(self, batch, nbytes):
        return Cost(0, batch * self.out_numel,
                    batch * (self.out_numel + 2 * self.in_numel) * nbytes)

    def describe(self):
        return f"maxpool {self.kernel_size}x{self.kernel_size} stride {self.stride}"


@dataclass(frozen=True)
class Dropout(_Elementwise):
    """Inverted dropout: kept elements scaled by 1 / (1 - p). The minimum traffic assumes the mask is regenerated
    from its seed rather than stored, so backward reads only the output gradient."""

    p: float = 0.5

    kind = "dropout"
    backward_ops_per_element = 1

    def backward_cost(self, batch, nbytes):
        return Cost(0, batch * self.in_numel, 2 * batch * self.in_numel * nbytes)

    def describe(self):
        return f"dropout p={self.p:g}"


@dataclass(frozen=True)
class CrossEntropy(LayerSpec):
    """Softmax cross-entropy over the logits, mean over the batch: reads logits and labels, writes a scalar.
    About 4 ops per logit forward (max, subtract, exp, sum) and 3 backward (softmax, minus one-hot, scale)."""

    kind = "cross_entropy"

    @property
    def out_shape(self):
        return ()

    def forward_cost(self, batch, nbytes):
        return Cost(0, 4 * batch * self.in_numel, batch * self.in_numel * nbytes + batch * LABEL_BYTES + nbytes)

    def backward_cost(self, batch, nbytes):
        return Cost(0, 3 * batch * self.in_numel, 2 * batch * self.in_numel * nbytes + batch * LABEL_BYTES)

    def describe(self):
        return "softmax cross-entropy"


# ---------------------------------------------------------------------------------------------------------------------
# The variants. Each entry: (name, spec without its input shape). "act" entries take the network's activation and are
# named after it (relu1, tanh1, ...). The loss comes last.

_LRN_PAPER = LocalResponseNorm("lrn", size=5, alpha=1e-4, beta=0.75, k=2.0)


def _pool(name):
    return MaxPool(name, kernel_size=3, stride=2)


_VARIANT_TABLES = {
    # Krizhevsky, Sutskever, Hinton (NIPS 2012): 96-256-384-384-256, groups=2 where a layer sees only its own GPU's maps,
    # LRN after the first two ReLUs, overlapping pooling, dropout on the outputs of fc6 and fc7.
    "alexnet2012": (
        Conv("conv1", out_channels=96, kernel_size=11, stride=4, padding=2), "act1",
        replace(_LRN_PAPER, name="lrn1"), _pool("pool1"),
        Conv("conv2", out_channels=256, kernel_size=5, padding=2, groups=2), "act2",
        replace(_LRN_PAPER, name="lrn2"), _pool("pool2"),
        Conv("conv3", out_channels=384, kernel_size=3, padding=1), "act3",
        Conv("conv4", out_channels=384, kernel_size=3, padding=1, groups=2), "act4",
        Conv("conv5", out_channels=256, kernel_size=3, padding=1, groups=2), "act5", _pool("pool5"),
        Linear("fc6", out_features=4096), "act6", Dropout("drop6", p=0.5),
        Linear("fc7", out_features=4096), "act7", Dropout("drop7", p=0.5),
        Linear("fc8", out_features=1000),
        CrossEntropy("loss"),
    ),
    # torchvision's alexnet ("one weird trick", arXiv 1404.5997): 64-192-384-256-256, no LRN or groups, dropout on the
    # inputs of fc6 and fc7. Its AdaptiveAvgPool2d((6, 6)) is the identity at 224x224 and is left out.
    "owt": (
        Conv("conv1", out_channels=64, kernel_size=11, stride=4, padding=2), "act1", _pool("pool1"),
        Conv("conv2", out_channels=192, kernel_size=5, padding=2), "act2", _pool("pool2"),
        Conv("conv3", out_channels=384, kernel_size=3, padding=1), "act3",
        Conv("conv4", out_channels=256, kernel_size=3, padding=1), "act4",
        Conv("conv5", out_channels=256, kernel_size=3, padding=1), "act5", _pool("pool5"),
        Dropout("drop6", p=0.5), Linear("fc6", out_features=4096), "act6",
        Dropout("drop7", p=0.5), Linear("fc7", out_features=4096), "act7",
        Linear("fc8", out_features=1000),
        CrossEntropy("loss"),
    ),
    # KernelBench level 3 problem 5 (AlexNet): the paper's channels without groups or LRN, dropout with p=0.
    "kernelbench": (
        Conv("conv1", out_channels=96, kernel_size=11, stride=4, padding=2), "act1", _pool("pool1"),
        Conv("conv2", out_channels=256, kernel_size=5, padding=2), "act2", _pool("pool2"),
        Conv("conv3", out_channels=384, kernel_size=3, padding=1), "act3",
        Conv("conv4", out_channels=384, kernel_size=3, padding=1), "act4",
        Conv("conv5", out_channels=256, kernel_size=3, padding=1), "act5", _pool("pool5"),
        Linear("fc6", out_features=4096), "act6", Dropout("drop6", p=0.0),
        Linear("fc7", out_features=4096), "act7", Dropout("drop7", p=0.0),
        Linear("fc8", out_features=1000),
        CrossEntropy("loss"),
    ),
}

VARIANTS = tuple(_VARIANT_TABLES)
DEFAULT_VARIANT = "alexnet2012"
DEFAULT_INPUT_SIZE = 224
NUM_CLASSES = 1000

# ---------------------------------------------------------------------------------------------------------------------
# Ablations: a variant without some of the paper's ingredients, named by suffixes ("alexnet2012-nolrn",
# "alexnet2012-nolrn-nodropout-pool2x2"), so a case's `variant` says which network it ran and `build_network` resolves
# it. Removing a layer that has no parameters, or changing a pool's window, leaves every parameter's name and shape as
# it was: the full network's parameters (init_parameters) load into every ablation, and all backends share them.

#: suffix -> what it does. Suffixes appear in this order in a name.
ABLATIONS = {
    "nolrn": "without local response normalization",
    "nodropout": "without dropout",
    "pool2x2": "non-overlapping 2x2 stride-2 max pooling instead of the paper's overlapping 3x3 stride 2",
}
#: `without=` names -> suffix, and `pooling=` values.
_WITHOUT = {"lrn": "nolrn", "dropout": "nodropout"}
POOLINGS = ("overlapping", "nonoverlapping")


def variant_name(variant: str, without=(), pooling: str = "overlapping") -> str:
    """The name of `variant` ablated: variant_name("alexnet2012", without=("lrn",)) == "alexnet2012-nolrn"."""
    base, ablations = parse_variant(variant)
    for item in without:
        if item not in _WITHOUT:
            raise ValueError(f"cannot remove {item!r}; expected any of {', '.join(_WITHOUT)}")
        ablations += (_WITHOUT[item],)
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    if pooling == "nonoverlapping":
        ablations += ("pool2x2",)
    return "-".join([base, *(a for a in ABLATIONS if a in ablations)])


def parse_variant(name: str) -> tuple[str, tuple[str, ...]]:
    """("alexnet2012", ("nolrn",)) for "alexnet2012-nolrn": the base variant and its ablation suffixes."""
    base, *suffixes = name.split("-")
    if base not in _VARIANT_TABLES:
        raise ValueError(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)}, optionally followed by "
                         f"ablations ({', '.join('-' + a for a in ABLATIONS)})")
    unknown = [s for s in suffixes if s not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation {unknown[0]!r} in variant {name!r}; expected any of "
                         f"{', '.join(ABLATIONS)}")
    return base, tuple(a for a in ABLATIONS if a in suffixes)


def _ablate(table, ablations):
    out = []
    for entry in table:
        if isinstance(entry, LocalResponseNorm) and "nolrn" in ablations:
            continue
        if isinstance(entry, Dropout) and "nodropout" in ablations:
            continue
        if isinstance(entry, MaxPool) and "pool2x2" in ablations:
            entry = replace(entry, kernel_size=2, stride=2, padding=0)
        out.append(entry)
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------------
# Small networks that are not AlexNet, as layer tables run by the same modules and backends.

def cifar4_table(conv_channels=(32, 32, 64)):
    """The paper's Figure 1 network: "a four-layer convolutional neural network" on CIFAR-10, which the paper does not
    spell out further. Modelled on cuda-convnet's small CIFAR-10 example (example-layers/layers-80sec.cfg: 5x5
    convolutions of 32, 32 and 64 kernels with padding 2, each followed by a 3x3 stride-2 pool), trimmed to four layers
    with weights: the three convolutions, each followed by the activation and a 3x3 stride-2 max pool, then one fully
    connected layer to the classes (80sec's extra 64-unit layer dropped, its average pools made max pools). cuda-convnet
    pools produce ceil((size - 3) / 2) + 1 outputs (32 -> 16 -> 8 -> 4); padding 1 gives the same sizes here."""
    table = []
    for i, channels in enumerate(conv_channels, start=1):
        table += [Conv(f"conv{i}", out_channels=channels, kernel_size=5, padding=2), f"act{i}",
                  MaxPool(f"pool{i}", kernel_size=3, stride=2, padding=1)]
    return tuple(table)


def build_cifar4(activation: str = "relu", input_size: int = 32, in_channels: int = 3,
                 num_classes: int = 10) -> Network:
    """The Figure 1 network (`cifar4_table`) for `in_channels` x `input_size` x `input_size` images and
    `num_classes` classes: 32x32x3 and 10 for CIFAR-10, 8x8x1 for scikit-learn's digits (maps 8 -> 4 -> 2 -> 1)."""
    convs = cifar4_table()
    table = (*convs, Linear(f"fc{len(convs) // 3 + 1}", out_features=num_classes), CrossEntropy("loss"))
    return network_from_table("cifar4", table, (in_channels, input_size, input_size), activation)


@dataclass(frozen=True)
class Network:
    """A variant resolved for an input size and activation: its layers in order, the loss last."""

    variant: str
    activation: str
    input_shape: tuple[int, int, int]
    layers: tuple[LayerSpec, ...] = field(repr=False)

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.variant} has no layer {name!r}; its layers: {', '.join(self.layer_names)}")

    def span(self, name: str) -> tuple[LayerSpec, ...]:
        """The layers a name stands for: one layer ("conv1"), or consecutive layers joined by "+" ("conv1+relu1",
        the way perfkit.model names a fused stage)."""
        names = name.split("+")
        first = self.layer_names.index(self.layer(names[0]).name)
        run = self.layers[first:first + len(names)]
        if tuple(spec.name for spec in run) != tuple(names):
            raise KeyError(f"{name!r} is not a run of consecutive layers of {self.variant}; its layers: "
                           f"{', '.join(self.layer_names)}")
        return run

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.layers)

    @property
    def body(self) -> tuple[LayerSpec, ...]:
        """The layers up to the logits (the loss left out)."""
        return tuple(spec for spec in self.layers if spec.kind != "cross_entropy")

    @property
    def num_classes(self) -> int:
        return self.body[-1].out_numel

    @property
    def params(self) -> int:
        return sum(spec.params for spec in self.layers)

    def layers_for(self, pass_name: str) -> tuple[LayerSpec, ...]:
        """The layers a whole-network pass runs: the body for `forward`, everything for the training passes."""
        return self.body if pass_name == "forward" else self.layers

    def cost(self, pass_name: str, batch: int, dtype: str = "float32") -> Cost:
        total = ZERO_COST
        for spec in self.layers_for(pass_name):
            total = total + spec.cost(pass_name, batch, dtype)
        return total


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPE_BYTES)}") from None


def build_network(variant: str = DEFAULT_VARIANT, activation: str = "relu", input_size: int = DEFAULT_INPUT_SIZE,
                  without=(), pooling: str = "overlapping") -> Network:
    """Resolve `variant`'s layer table for a square `input_size` image and an activation (relu, tanh or sigmoid).

    Ablations: `without` names ingredients to remove ("lrn", "dropout"); `pooling="nonoverlapping"` replaces every
    3x3 stride-2 max pool with a 2x2 stride-2 one (the same 55 -> 27 -> 13 -> 6 sizes). The variant may also carry
    them as suffixes ("alexnet2012-nolrn-pool2x2"); the network's `variant` is the suffixed name either way."""
    name = variant_name(variant, without, pooling)
    base, ablations = parse_variant(name)
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
    return network_from_table(name, _ablate(_VARIANT_TABLES[base], ablations), (3, input_size, input_size),
                              activation)


def network_from_table(name: str, table, input_shape: tuple[int, int, int], activation: str = "relu") -> Network:
    """A Network from a layer table in the variants' form, resolved for `input_shape` (C, H, W): specs without their
    input shapes, in order, the loss last; a string "actN" is the network's activation, named after it (relu1, tanh1).
    The three variants are built this way; so can other networks of the same layers (a small test network, the
    paper's CIFAR-10 net), without being registered as variants."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
    shape: tuple[int, ...] = tuple(input_shape)
    layers = []
    for entry in table:
        spec = Activation(f"{activation}{entry[3:]}", function=activation) if isinstance(entry, str) else entry
        spec = replace(spec, in_shape=shape, first=not layers)
        if spec.out_shape and min(spec.out_shape) < 1:
            raise ValueError(f"input {input_shape[1]}x{input_shape[2]} is too small for {name}: {spec.name} would "
                             f"output {spec.out_shape}")
        layers.append(spec)
        shape = spec.out_shape
    return Network(name, activation, tuple(input_shape), tuple(layers))


def layer_table(network: Network, batch: int, dtype: str = "float32") -> list[dict]:
    """One dict per layer (and a final 'total'), with shapes, parameters and per-pass FLOPs and bytes."""
    rows = []
    for spec in network.layers:
        row = {"layer": spec.name, "kind": spec.kind, "description": spec.describe(),
               "in_shape": list(spec.in_shape), "out_shape": list(spec.out_shape), "params": spec.params}
        for p in PASSES:
            c = spec.cost(p, batch, dtype)
            row[f"{p}_flops"] = c.flops
            row[f"{p}_gemm_flops"] = c.gemm_flops
            row[f"{p}_bytes_min"] = c.bytes_min
        rows.append(row)
    total = {"layer": "total", "kind": "network", "description": f"{network.variant} ({network.activation})",
             "in_shape": list(network.input_shape), "out_shape": [network.num_classes], "params": network.params}
    for p in PASSES:
        c = network.cost(p, batch, dtype)
        total[f"{p}_flops"] = c.flops
        total[f"{p}_gemm_flops"] = c.gemm_flops
        total[f"{p}_bytes_min"] = c.bytes_min
    rows.append(total)
    return rows
