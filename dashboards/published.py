"""Published figures the dashboards draw as reference marks: the figures of `perfkit.app.published` (the one place their
numbers and sources live, copied from REFERENCE.md), with the legend and caption text a plot needs.

The dashboards embed no other published number: anything else in a figure comes from a store (or a pytest-benchmark
file). These are reference marks for plots, never expectations for our measurements.
"""
from __future__ import annotations

from dataclasses import dataclass

from perfkit.app import published
from perfkit.app.published import CNN_BENCHMARKS as JCJOHNSON
from perfkit.app.published import CONVNET_BENCHMARKS, MATCONVNET, PAPER, VENDOR
from perfkit.app.published import POPULAR as POPULAR_2012

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
            return f"{value / scale:.4g}", prefix
    return (f"{value:,.0f}" if float(value).is_integer() else f"{value:.4g}"), ""


def _ref(key: str, text: str, unit: str | None = None, short: str = "") -> Ref:
    """A plot's view of the published figure `key` of perfkit.app.published: its value, source and derived flag."""
    f = published.figure(key)
    low, high = f.value if isinstance(f.value, tuple) else (f.value, None)
    return Ref(key, low, high, unit or f.unit, text, f.source, f.derived, short)


# -- training AlexNet in 2012 -------------------------------------------------------------------------------------------
TRAIN_DAYS = _ref("paper_training_days", "five to six days on two NVIDIA GTX 580 3GB GPUs",
                  short="the paper on 2x GTX 580")
TRAIN_IMAGES_PER_S = _ref("paper_images_per_s", "training throughput implied by five to six days for ~90 epochs over "
                          "1.2M images", short="paper training rate")
TRAIN_EPOCHS = _ref("paper_epochs", "~90 epochs")
TRAIN_IMAGES = _ref("paper_train_images", "1.2M training images")
TRAIN_BATCH = _ref("paper_batch", "SGD batch 128")
TRAIN_GPUS = _ref("paper_gpus", "two NVIDIA GTX 580 3GB GPUs")

# -- the paper's Figure 1 (ReLU vs tanh) --------------------------------------------------------------------------------
FIG1_TARGET_ERROR = _ref("paper_fig1_target_train_error", "Figure 1's threshold: 25% training error on CIFAR-10",
                         unit="% training error", short="Figure 1 threshold")
FIG1_RELU_SPEEDUP = _ref("paper_relu_vs_tanh_speedup", "a 4-layer CNN with ReLUs reaches 25% training error on "
                         "CIFAR-10 six times faster than with tanh", short="ReLU vs tanh, Figure 1")

# -- GPU vs CPU ---------------------------------------------------------------------------------------------------------
GPU_CPU_CLAIM = _ref("claim_gpu_vs_cpu_speedup", 'GPU training "up to one hundred times faster" than CPUs',
                     short="2012 claim")
CAFFE_CPU_VS_CUDNN = _ref("convnet_benchmarks_cpu_vs_cudnn", "Caffe in CPU mode (i7-5930K) vs cuDNN R4 fp32 on a "
                          "Maxwell Titan X, forward+backward", short="Caffe CPU vs cuDNN")
JCJOHNSON_SPEEDUP = _ref("cnn_benchmarks_gpu_vs_cpu", "Pascal Titan X with cuDNN vs dual Xeon E5-2630 v3",
                         short="cnn-benchmarks")
GPU_CPU_SPEEDUPS = (GPU_CPU_CLAIM, CAFFE_CPU_VS_CUDNN, JCJOHNSON_SPEEDUP)

MATCONVNET_CPU = _ref("matconvnet_cpu_images_per_s", "MatConvNet on CPU", short="MatConvNet CPU")
MATCONVNET_GPU = _ref("matconvnet_gpu_images_per_s", "MatConvNet on GPU", short="MatConvNet GPU")
MATCONVNET_CUDNN = _ref("matconvnet_cudnn_images_per_s", "MatConvNet on GPU with cuDNN", short="MatConvNet cuDNN")
PUBLISHED_THROUGHPUT = (MATCONVNET_CPU, MATCONVNET_GPU, MATCONVNET_CUDNN)

#: convnet-benchmarks' per-batch times (batch 128, forward+backward), shown as a table beside the speedups.
CONVNET_BENCHMARK_TIMES = (
    _ref("convnet_benchmarks_cudnn_r4_fp32_ms", "cuDNN R4 fp32 on a Maxwell Titan X (27 forward, 53 backward)",
         unit="ms"),
    _ref("convnet_benchmarks_cudnn_r4_fp16_ms", "cuDNN R4 fp16", unit="ms"),
    _ref("convnet_benchmarks_cuda_convnet2_ms", "cuda-convnet2", unit="ms"),
    _ref("convnet_benchmarks_caffe_gpu_ms", "Caffe native", unit="ms"),
    _ref("convnet_benchmarks_caffe_cpu_ms", "Caffe in CPU mode (i7-5930K)", unit="ms"),
)

# -- the GTX 580 (vendor figures) ---------------------------------------------------------------------------------------
GTX580_FP32_FLOPS = _ref("gtx580_fp32_flops_per_s", "GeForce GTX 580 FP32 peak (512 cores x 2 x 1.544 GHz)",
                         short="GTX 580 FP32 peak")
GTX580_BYTES = _ref("gtx580_bytes_per_s", "GeForce GTX 580 memory bandwidth", short="GTX 580 memory")

ALL = (TRAIN_DAYS, TRAIN_IMAGES_PER_S, TRAIN_EPOCHS, TRAIN_IMAGES, TRAIN_BATCH, TRAIN_GPUS, FIG1_TARGET_ERROR,
       FIG1_RELU_SPEEDUP, *GPU_CPU_SPEEDUPS, *PUBLISHED_THROUGHPUT, *CONVNET_BENCHMARK_TIMES, GTX580_FP32_FLOPS,
       GTX580_BYTES)
