"""Device peaks and the roofline.

Once per run, device and dtype, the runner measures what the device can do, with the same timers as the cases, and
stores it in the `device_peaks` table:

- matmul rate: `torch.matmul` of two n x n matrices of random values in the dtype, 2 n^3 FLOPs per call over the median
  time (n = 8192 on a GPU, where tensor cores reach their sustained rate; 2048 on a CPU, 1024 for CPU dtypes other than
  float32/float64, which are slow there). "tf32" is float32 with TF32 tensor cores allowed, "float32" with them off,
  as in the cases;
- copy bandwidth: `dst.copy_(src)` between two buffers far larger than any cache (1 GiB on a GPU, 256 MiB on a CPU),
  counting the bytes read and the bytes written (2 x size per call), over the median time. Measured once per device.

A CPU's peaks depend on the thread count; they are measured for each thread count the run's cases use (the `threads`
column of `device_peaks`).

The roofline of a row: its bound is min(peak_flops, arithmetic intensity x peak_bytes) (FLOP/s), and its fraction is the
achieved FLOP/s over that bound. The intensity is the cost model's FLOPs over its minimum bytes, and the peaks are
measured rates, not the hardware's limits: a fraction near or above 1 means the case ran as fast as the peak
measurements did, or faster (a layer whose data stays in cache between repetitions, a library kernel beating a plain
matmul).
"""
from __future__ import annotations

from perfkit.measure.timer import TimingPolicy, timer_for

GPU_MATMUL_N = 8192
CPU_MATMUL_N = 2048
CPU_MATMUL_N_SLOW_DTYPES = 1024
GPU_COPY_BYTES = 1 << 30
CPU_COPY_BYTES = 256 << 20
PEAK_POLICY = TimingPolicy(warmup=2, min_reps=5, min_time_s=0.2)


def _is_gpu(device: str) -> bool:
    return device.startswith("cuda")


def matmul_size(device: str, dtype: str) -> int:
    if _is_gpu(device):
        return GPU_MATMUL_N
    return CPU_MATMUL_N if dtype in ("float32", "float64") else CPU_MATMUL_N_SLOW_DTYPES


def measure_matmul_rate(device: str, dtype: str, policy: TimingPolicy = PEAK_POLICY) -> tuple[float, str]:
    """(FLOP/s, method) of an n x n x n matmul on `device` in `dtype` (a perfkit dtype name)."""
    import torch

    from perfkit.backends import float32_precision
    from perfkit.model import torch_dtype

    n = matmul_size(device, dtype)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=torch_dtype(dtype))
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=torch_dtype(dtype))
    out = torch.empty_like(a)
    timer = timer_for(device)
    with float32_precision(dtype):
        timing = timer.measure(lambda: torch.matmul(a, b, out=out), None, policy, **_hot(device))
    flops = 2.0 * n ** 3
    return flops / timing.median_s, (f"torch.matmul {n}x{n}x{n} {dtype}, 2n^3 FLOPs / median of {timing.repetitions} "
                                     f"({timing.timer}){_threads(device)}")


def measure_copy_bandwidth(device: str, policy: TimingPolicy = PEAK_POLICY) -> tuple[float, str]:
    """(bytes/s, method) of a device-to-device copy, counting bytes read plus bytes written."""
    import torch

    size = GPU_COPY_BYTES if _is_gpu(device) else CPU_COPY_BYTES
    src = torch.ones(size // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    timer = timer_for(device)
    timing = timer.measure(lambda: dst.copy_(src), None, policy, **_hot(device))
    return 2.0 * size / timing.median_s, (f"copy_ of {size / 2**20:.0f} MiB, read + write bytes / median of "
                                          f"{timing.repetitions} ({timing.timer}){_threads(device)}")


def _hot(device: str) -> dict:
    # Both buffers dwarf any cache, so flushing the L2 between repetitions would only cost time.
    return {"hot_cache": True} if _is_gpu(device) else {}


def _threads(device: str) -> str:
    if _is_gpu(device):
        return ""
    import torch

    return f", {torch.get_num_threads()} threads"


def roofline(achieved_flops_per_s: float | None, intensity: float | None, peak_flops_per_s: float | None,
             peak_bytes_per_s: float | None) -> tuple[float | None, float | None, str | None]:
    """(bound FLOP/s, fraction of it achieved, note). The note says which roof binds, or why nothing was computed."""
    if peak_flops_per_s is None or peak_bytes_per_s is None:
        return None, None, "no roofline: the device's peaks were not measured"
    if intensity is None:
        return None, None, "no roofline: the case has no arithmetic intensity"
    ridge = peak_flops_per_s / peak_bytes_per_s
    bound = min(peak_flops_per_s, intensity * peak_bytes_per_s)
    kind = "memory-bound" if intensity < ridge else "compute-bound"
    note = f"{kind}: intensity {intensity:.3g} FLOP/B vs ridge {ridge:.3g} FLOP/B"
    if achieved_flops_per_s is None or bound <= 0:
        return (bound if bound > 0 else None), None, note + "; no achieved rate"
    return bound, achieved_flops_per_s / bound, note
