"""Published figures the dashboards draw as reference marks, as data, each with its source.

Every number here is copied from the project's REFERENCE.md ("Published figures the studies compare against"); the
`source` strings say where REFERENCE.md has it from, and `derived` marks numbers that REFERENCE.md itself derives by
arithmetic on published figures. The dashboards embed no other published number: anything else in a figure comes from
a store (or a pytest-benchmark file). These are reference marks for plots, never expectations for our measurements.
"""
from __future__ import annotations

from dataclasses import dataclass

PAPER = ('Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural Networks", '
         "NIPS 2012")
CONVNET_BENCHMARKS = "soumith/convnet-benchmarks (2017, \"one weird trick\" AlexNet, batch 128, forward+backward)"
MATCONVNET = "MatConvNet manual (AlexNet, batch 256, Titan Black)"
JCJOHNSON = "jcjohnson/cnn-benchmarks (VGG/ResNet rows)"
POPULAR_2012 = "the 2012 claim quoted in popular accounts"
VENDOR = "vendor figures"


#: Short names of the sources, for captions (the full names are in `Ref.source`).
SHORT_SOURCES = {PAPER: "Krizhevsky et al., NIPS 2012", CONVNET_BENCHMARKS: "convnet-benchmarks",
                 MATCONVNET: "MatConvNet", JCJOHNSON: "cnn-benchmarks", POPULAR_2012: "popular accounts",
                 VENDOR: "vendor"}


@dataclass(frozen=True)
class Ref:
    """One published figure: a value (or a low-high range), its unit, what it measures, and where it comes from."""

    key: str
    low: float
    high: float | None  # None for a single value
    unit: str
    text: str  # what the figure is, in REFERENCE.md's words
    source: str
    derived: bool = False  # REFERENCE.md derives it by arithmetic on published figures
    short: str = ""  # a few words for a legend entry; the full text is in `label()` and `citation()`

    @property
    def value(self) -> float:
        return self.low if self.high is None else (self.low + self.high) / 2

    @property
    def is_range(self) -> bool:
        return self.high is not None

    def amount(self) -> str:
        """The value (or range) with its unit: '61x', '5-6 days', '1.581 TFLOP/s', '25% training error'."""
        lo, prefix = _scaled(self.low)
        span = lo if self.high is None else f"{lo}-{_scaled(self.high)[0]}"
        if prefix:  # a rate takes the prefix on its unit (1.581 TFLOP/s); a count on its number (1.2M images)
            return f"{span} {prefix}{self.unit}" if self.unit.endswith("/s") else f"{span}{prefix} {self.unit}"
        glue = "" if self.unit == "x" or self.unit.startswith("%") else " "
        return f"{span}{glue}{self.unit}"

    def label(self) -> str:
        """Short legend text, e.g. '61x: Caffe in CPU mode ... (derived)'."""
        return f"{self.amount()}: {self.text}{' (derived)' if self.derived else ''}"

    @property
    def short_source(self) -> str:
        return SHORT_SOURCES.get(self.source, self.source)

    def citation(self) -> str:
        return f"{self.label()}. Source: {self.source}, via REFERENCE.md."

    def legend(self) -> str:
        """A legend entry, e.g. 'published: Caffe CPU vs cuDNN (61x, derived)'."""
        return f"published: {self.short or self.text} ({self.amount()}{', derived' if self.derived else ''})"


def _scaled(value: float) -> tuple[str, str]:
    """(number, SI prefix): 1.581e12 -> ('1.581', 'T'); 4920 -> ('4,920', '')."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:g}", prefix
    return (f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"), ""


# -- training AlexNet in 2012 -------------------------------------------------------------------------------------------
TRAIN_DAYS = Ref("train_days", 5, 6, "days", "five to six days on two NVIDIA GTX 580 3GB GPUs", PAPER,
                 short="the paper on 2x GTX 580")
TRAIN_IMAGES_PER_S = Ref("train_images_per_s", 208, 250, "images/s",
                         "training throughput implied by five to six days for ~90 epochs over 1.2M images", PAPER,
                         derived=True, short="paper training rate")
TRAIN_EPOCHS = Ref("train_epochs", 90, None, "epochs", "~90 epochs", PAPER)
TRAIN_IMAGES = Ref("train_images", 1_200_000, None, "images", "1.2M training images", PAPER)
TRAIN_BATCH = Ref("train_batch", 128, None, "images", "SGD batch 128", PAPER)
TRAIN_GPUS = Ref("train_gpus", 2, None, "GPUs", "two NVIDIA GTX 580 3GB GPUs", PAPER)

# -- the paper's Figure 1 (ReLU vs tanh) --------------------------------------------------------------------------------
FIG1_TARGET_ERROR = Ref("fig1_target_error", 25, None, "% training error",
                        "Figure 1's threshold: 25% training error on CIFAR-10", PAPER,
                        short="Figure 1 threshold")
FIG1_RELU_SPEEDUP = Ref("fig1_relu_speedup", 6, None, "x",
                        "a 4-layer CNN with ReLUs reaches 25% training error on CIFAR-10 six times faster than with "
                        "tanh", PAPER, short="ReLU vs tanh, Figure 1")

# -- GPU vs CPU ---------------------------------------------------------------------------------------------------------
GPU_CPU_CLAIM = Ref("gpu_cpu_claim", 100, None, "x", 'GPU training "up to one hundred times faster" than CPUs',
                    POPULAR_2012, short="2012 claim")
CAFFE_CPU_VS_CUDNN = Ref("caffe_cpu_vs_cudnn", 61, None, "x",
                         "Caffe in CPU mode (i7-5930K) vs cuDNN R4 fp32 on a Maxwell Titan X, forward+backward",
                         CONVNET_BENCHMARKS, derived=True, short="Caffe CPU vs cuDNN")
JCJOHNSON_SPEEDUP = Ref("jcjohnson_speedup", 49, 74, "x",
                        "Pascal Titan X with cuDNN vs dual Xeon E5-2630 v3", JCJOHNSON, short="cnn-benchmarks")
GPU_CPU_SPEEDUPS = (GPU_CPU_CLAIM, CAFFE_CPU_VS_CUDNN, JCJOHNSON_SPEEDUP)

MATCONVNET_CPU = Ref("matconvnet_cpu", 22, None, "images/s", "MatConvNet on CPU", MATCONVNET, short="MatConvNet CPU")
MATCONVNET_GPU = Ref("matconvnet_gpu", 192, None, "images/s", "MatConvNet on GPU", MATCONVNET, short="MatConvNet GPU")
MATCONVNET_CUDNN = Ref("matconvnet_cudnn", 264, None, "images/s", "MatConvNet on GPU with cuDNN", MATCONVNET,
                       short="MatConvNet cuDNN")
PUBLISHED_THROUGHPUT = (MATCONVNET_CPU, MATCONVNET_GPU, MATCONVNET_CUDNN)

#: convnet-benchmarks' per-batch times (batch 128, forward+backward), shown as a table beside the speedups.
CONVNET_BENCHMARK_TIMES = (
    Ref("cb_cudnn_r4_fp32", 81, None, "ms", "cuDNN R4 fp32 on a Maxwell Titan X (27 forward, 53 backward)",
        CONVNET_BENCHMARKS),
    Ref("cb_cudnn_r4_fp16", 71, None, "ms", "cuDNN R4 fp16", CONVNET_BENCHMARKS),
    Ref("cb_cuda_convnet2", 177, None, "ms", "cuda-convnet2", CONVNET_BENCHMARKS),
    Ref("cb_caffe_native", 324, None, "ms", "Caffe native", CONVNET_BENCHMARKS),
    Ref("cb_caffe_cpu", 4920, None, "ms", "Caffe in CPU mode (i7-5930K)", CONVNET_BENCHMARKS),
)

# -- the GTX 580 (vendor figures) ---------------------------------------------------------------------------------------
GTX580_FP32_FLOPS = Ref("gtx580_fp32_flops", 1.581e12, None, "FLOP/s",
                        "GeForce GTX 580 FP32 peak (512 cores x 2 x 1.544 GHz)", VENDOR, derived=True,
                        short="GTX 580 FP32 peak")
GTX580_BYTES = Ref("gtx580_bytes", 192.4e9, None, "B/s", "GeForce GTX 580 memory bandwidth", VENDOR,
                   short="GTX 580 memory")

ALL = (TRAIN_DAYS, TRAIN_IMAGES_PER_S, TRAIN_EPOCHS, TRAIN_IMAGES, TRAIN_BATCH, TRAIN_GPUS, FIG1_TARGET_ERROR,
       FIG1_RELU_SPEEDUP, *GPU_CPU_SPEEDUPS, *PUBLISHED_THROUGHPUT, *CONVNET_BENCHMARK_TIMES, GTX580_FP32_FLOPS,
       GTX580_BYTES)
