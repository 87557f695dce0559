"""Published figures the studies compare against, as data, each with its source next to it.

Copied from the project's reference notes (shared/REFERENCE.md). A figure marked `derived` is arithmetic on published
figures (the `note` says which). These are what others reported, shown beside our measurements; they are never used as
expectations for our own numbers.

    from perfkit.app.published import FIGURES, figure, cite
    figure("gtx580_fp32_flops_per_s").value   # 1.581e12
    cite("paper_training_days")               # "5-6 days (Krizhevsky, Sutskever, Hinton, ... NIPS 2012)"
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One published figure. `value` is a number, or a (low, high) range; `unit` says what it counts."""

    key: str
    value: float | tuple[float, float]
    unit: str
    what: str
    source: str
    derived: bool = False
    note: str = ""

    @property
    def low(self) -> float:
        return self.value[0] if isinstance(self.value, tuple) else self.value

    @property
    def high(self) -> float:
        return self.value[1] if isinstance(self.value, tuple) else self.value

    def text(self, fmt: str = "g") -> str:
        """The value as text with its unit: '5-6 days', '1.581 TFLOP/s', '192.4 GB/s'."""
        if self.unit in _SI_UNITS:
            parts = [_si(v, self.unit) for v in (self.value if isinstance(self.value, tuple) else (self.value,))]
            return "-".join(parts)
        if isinstance(self.value, tuple):
            number = f"{self.value[0]:{fmt}}-{self.value[1]:{fmt}}"
        else:
            number = f"{self.value:{fmt}}"
        return f"{number} {self.unit}".strip()


_SI_UNITS = ("FLOP/s", "B/s", "B")


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


PAPER = ('Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural Networks", '
         'NIPS 2012')
CONVNET_BENCHMARKS = "soumith/convnet-benchmarks (2017, \"one weird trick\" AlexNet, batch 128, forward+backward)"
MATCONVNET = "MatConvNet manual (AlexNet, batch 256, Titan Black)"
CAFFE_DOCS = "Caffe documentation (caffe.berkeleyvision.org, performance notes)"
CNN_BENCHMARKS = "jcjohnson/cnn-benchmarks (VGG/ResNet rows)"
POPULAR = "popular accounts of the 2012 result"
KERNELBENCH = "KernelBench level 3 problem 5_AlexNet, published H100 SXM baselines (torch 2.5, mean of 100 trials)"
VENDOR = "NVIDIA product specifications (vendor figures)"
MEASURED_ELSEWHERE = "measured on single-GPU machines (not vendor figures), perfkit project notes"
NVML_DOCS = "NVIDIA NVML API reference"
YANG_SC24 = 'Yang et al., SC\'24, "Part-time Power Measurements"'
ML_ENERGY = "ML.ENERGY (Zeus) measurement notes"
MLPERF_POWER = "MLPerf Power rules"

_FIGURES = (
    # -- the paper --------------------------------------------------------------------------------------------------
    Figure("paper_training_days", (5.0, 6.0), "days", "training time of the paper's network", PAPER,
           note="\"five to six days on two NVIDIA GTX 580 3GB GPUs\""),
    Figure("paper_gpus", 2, "GPUs", "GTX 580 3GB cards the network was split over", PAPER),
    Figure("paper_epochs", 90, "epochs", "passes over the training set (\"roughly 90 cycles\")", PAPER),
    Figure("paper_train_images", 1.2e6, "images", "ImageNet (ILSVRC-2012) training images", PAPER),
    Figure("paper_batch", 128, "images", "SGD batch size", PAPER),
    Figure("paper_images_per_s", (208.0, 250.0), "images/s", "training throughput implied by 90 epochs of 1.2M images "
           "in 5-6 days", PAPER, derived=True, note="90 x 1.2e6 / (6 or 5 days x 86,400 s)"),
    Figure("paper_params", 60_965_224, "parameters", "parameters of the paper's network", PAPER),
    Figure("paper_forward_macs", 724.4e6, "multiply-adds/image", "forward multiply-adds per image", PAPER,
           derived=True, note="the multiply-adds of the paper's layer shapes, summed"),
    Figure("paper_top5_error_1cnn", 18.2, "%", "ILSVRC-2012 top-5 error, 1 CNN (val)", PAPER),
    Figure("paper_top5_error_5cnn", 16.4, "%", "ILSVRC-2012 top-5 error, 5 CNNs", PAPER),
    Figure("paper_top5_error_7cnn", 15.3, "%", "ILSVRC-2012 top-5 error, 7 CNNs (test)", PAPER),
    Figure("ilsvrc2012_second_place_top5", 26.2, "%", "ILSVRC-2012 second place top-5 error", PAPER),
    Figure("paper_fig1_target_train_error", 25.0, "%", "Figure 1's threshold: training error on CIFAR-10 the ReLU and "
           "tanh networks are timed to", PAPER),
    Figure("paper_relu_vs_tanh_speedup", 6.0, "x", "CIFAR-10, 4-layer CNN: epochs to 25% training error, tanh over "
           "ReLU (Figure 1)", PAPER),
    # -- GPU vs CPU over the years ----------------------------------------------------------------------------------
    Figure("claim_gpu_vs_cpu_speedup", 100.0, "x", "GPU training \"up to one hundred times faster\" than CPUs",
           POPULAR, note="a claim, with no stated hardware or baseline"),
    Figure("convnet_benchmarks_cudnn_r4_fp32_ms", 81.0, "ms/batch", "cuDNN R4 fp32, Maxwell Titan X (27 forward, 53 "
           "backward)", CONVNET_BENCHMARKS),
    Figure("convnet_benchmarks_cudnn_r4_fp16_ms", 71.0, "ms/batch", "cuDNN R4 fp16, Maxwell Titan X",
           CONVNET_BENCHMARKS),
    Figure("convnet_benchmarks_cuda_convnet2_ms", 177.0, "ms/batch", "cuda-convnet2, Maxwell Titan X",
           CONVNET_BENCHMARKS),
    Figure("convnet_benchmarks_caffe_gpu_ms", 324.0, "ms/batch", "Caffe native, Maxwell Titan X", CONVNET_BENCHMARKS),
    Figure("convnet_benchmarks_caffe_cpu_ms", 4920.0, "ms/batch", "Caffe in CPU mode, i7-5930K", CONVNET_BENCHMARKS),
    Figure("convnet_benchmarks_cpu_vs_cudnn", 4920.0 / 81.0, "x", "Caffe CPU (i7-5930K) time over cuDNN R4 fp32 "
           "(Titan X) time", CONVNET_BENCHMARKS, derived=True, note="4920 ms / 81 ms"),
    Figure("matconvnet_cpu_images_per_s", 22.0, "images/s", "AlexNet on the CPU", MATCONVNET),
    Figure("matconvnet_gpu_images_per_s", 192.0, "images/s", "AlexNet on the GPU (Titan Black)", MATCONVNET),
    Figure("matconvnet_cudnn_images_per_s", 264.0, "images/s", "AlexNet on the GPU with cuDNN (Titan Black)",
           MATCONVNET),
    Figure("matconvnet_gpu_vs_cpu", 192.0 / 22.0, "x", "GPU over CPU throughput", MATCONVNET, derived=True,
           note="192 / 22 images/s"),
    Figure("matconvnet_cudnn_vs_cpu", 264.0 / 22.0, "x", "GPU with cuDNN over CPU throughput", MATCONVNET,
           derived=True, note="264 / 22 images/s"),
    Figure("cnn_benchmarks_gpu_vs_cpu", (49.0, 74.0), "x", "Pascal Titan X with cuDNN over dual Xeon E5-2630 v3",
           CNN_BENCHMARKS),
    Figure("caffe_k40_images_per_day", 60e6, "images/day", "\"over 60M images per day with a single NVIDIA K40 GPU\"",
           CAFFE_DOCS),
    Figure("caffe_k40_inference_ms_per_image", 1.0, "ms/image", "inference on a K40", CAFFE_DOCS),
    Figure("caffe_k40_learning_ms_per_image", 4.0, "ms/image", "learning on a K40", CAFFE_DOCS),
    # -- network variants -------------------------------------------------------------------------------------------
    Figure("owt_params", 61_100_840, "parameters", "torchvision alexnet (\"one weird trick\", arXiv 1404.5997)",
           "torchvision / arXiv 1404.5997"),
    Figure("owt_macs", 0.714e9, "multiply-adds/image", "torchvision alexnet forward", "torchvision / arXiv 1404.5997"),
    Figure("kernelbench_batch", 1024, "images", "KernelBench AlexNet problem batch size", KERNELBENCH),
    Figure("kernelbench_h100_eager_ms", 23.7, "ms/batch", "torch eager on H100 SXM, batch 1024", KERNELBENCH),
    Figure("kernelbench_h100_compile_ms", 16.7, "ms/batch", "torch.compile on H100 SXM, batch 1024", KERNELBENCH),
    # -- GPUs: vendor figures ---------------------------------------------------------------------------------------
    Figure("gtx580_fp32_flops_per_s", 1.581e12, "FLOP/s", "GeForce GTX 580 FP32 peak", VENDOR, derived=True,
           note="512 cores x 2 FLOPs (FMA) x 1.544 GHz"),
    Figure("gtx580_bytes_per_s", 192.4e9, "B/s", "GeForce GTX 580 memory bandwidth", VENDOR),
    Figure("gtx580_memory_bytes", (1.5e9, 3e9), "B", "GeForce GTX 580 memory (1.5 GB or 3 GB boards)", VENDOR),
    Figure("gtx580_board_power_w", 244.0, "W", "GeForce GTX 580 board power", VENDOR),
    Figure("h100_sxm_fp32_flops_per_s", 66.9e12, "FLOP/s", "H100 SXM5 FP32", VENDOR),
    Figure("h100_sxm_tf32_flops_per_s", 494.7e12, "FLOP/s", "H100 SXM5 TF32 tensor, dense", VENDOR),
    Figure("h100_sxm_bf16_flops_per_s", 989.4e12, "FLOP/s", "H100 SXM5 BF16 tensor, dense", VENDOR),
    Figure("h100_sxm_bytes_per_s", 3350e9, "B/s", "H100 SXM5 memory bandwidth", VENDOR),
    Figure("h100_sxm_memory_bytes", 80e9, "B", "H100 SXM5 memory", VENDOR),
    Figure("h100_sxm_board_power_w", 700.0, "W", "H100 SXM5 board power", VENDOR),
    Figure("h100_pcie_fp32_flops_per_s", 51.2e12, "FLOP/s", "H100 PCIe FP32", VENDOR),
    Figure("h100_pcie_tf32_flops_per_s", 378e12, "FLOP/s", "H100 PCIe TF32 tensor, dense", VENDOR),
    Figure("h100_pcie_bf16_flops_per_s", 756e12, "FLOP/s", "H100 PCIe BF16 tensor, dense", VENDOR),
    Figure("h100_pcie_bytes_per_s", 2000e9, "B/s", "H100 PCIe memory bandwidth", VENDOR),
    Figure("h100_pcie_memory_bytes", 80e9, "B", "H100 PCIe memory", VENDOR),
    Figure("h100_pcie_board_power_w", 350.0, "W", "H100 PCIe board power", VENDOR),
    Figure("h200_sxm_fp32_flops_per_s", 66.9e12, "FLOP/s", "H200 SXM FP32", VENDOR),
    Figure("h200_sxm_tf32_flops_per_s", 494.7e12, "FLOP/s", "H200 SXM TF32 tensor, dense", VENDOR),
    Figure("h200_sxm_bf16_flops_per_s", 989.4e12, "FLOP/s", "H200 SXM BF16 tensor, dense", VENDOR),
    Figure("h200_sxm_bytes_per_s", 4800e9, "B/s", "H200 SXM memory bandwidth", VENDOR),
    Figure("h200_sxm_memory_bytes", 141e9, "B", "H200 SXM memory", VENDOR),
    Figure("h200_sxm_board_power_w", 700.0, "W", "H200 SXM board power", VENDOR),
    Figure("h100_sxm_measured_bf16_matmul_flops_per_s", 798e12, "FLOP/s", "H100 SXM bf16 8192^3 matmul",
           MEASURED_ELSEWHERE),
    Figure("h100_sxm_measured_copy_bytes_per_s", 3.0e12, "B/s", "H100 SXM device copy", MEASURED_ELSEWHERE),
    Figure("h200_measured_copy_bytes_per_s", 4.3e12, "B/s", "H200 device copy", MEASURED_ELSEWHERE),
    # -- measuring energy -------------------------------------------------------------------------------------------
    Figure("nvml_power_average_window_s", 1.0, "s", "nvmlDeviceGetPowerUsage is a running average over this window "
           "on Ampere and newer (instant power: NVML_FI_DEV_POWER_INSTANT)", NVML_DOCS),
    Figure("nvml_energy_counter_update_s", 0.1, "s", "update interval of the total-energy counter (mJ, Volta and "
           "newer)", NVML_DOCS),
    Figure("sensor_runtime_coverage", 0.25, "fraction", "share of runtime the on-board power sensor covers on "
           "A100/H100", YANG_SC24),
    Figure("energy_min_window_s", 5.0, "s", "shortest measurement window to use (or 32 iterations), trials repeated",
           YANG_SC24, note="ML.ENERGY (Zeus) also found windows under ~5 s noisy"),
)

FIGURES: dict[str, Figure] = {f.key: f for f in _FIGURES}

#: Published GPU specs by a name found in torch's device name, for matching a measured device to its vendor figures.
GPU_SPECS = {
    "H100 PCIe": "h100_pcie",
    "H100": "h100_sxm",  # "NVIDIA H100 80GB HBM3" is the SXM part
    "H200": "h200_sxm",
    "GTX 580": "gtx580",
}


def figure(key: str) -> Figure:
    try:
        return FIGURES[key]
    except KeyError:
        raise KeyError(f"no published figure {key!r}") from None


def cite(key: str, fmt: str = "g") -> str:
    """'value unit (source)', with '(derived)' for derived figures."""
    f = figure(key)
    return f"{f.text(fmt)} ({f.source}{'; derived: ' + f.note if f.derived and f.note else ''})"


def gpu_spec_prefix(device_name: str | None) -> str | None:
    """The key prefix of the vendor figures for a GPU name ('NVIDIA H100 80GB HBM3' -> 'h100_sxm'), or None."""
    if not device_name:
        return None
    for marker, prefix in GPU_SPECS.items():
        if marker in device_name:
            return prefix
    return None


def as_records() -> list[dict]:
    """Every figure as a plain dict (for JSON summaries and dashboards)."""
    return [{"key": f.key, "value": list(f.value) if isinstance(f.value, tuple) else f.value, "unit": f.unit,
             "what": f.what, "source": f.source, "derived": f.derived, "note": f.note} for f in _FIGURES]
