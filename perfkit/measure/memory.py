"""Memory monitors: the process's peak RSS (every row) and torch's and NVML's GPU memory (GPU rows).

Both have `min_window_s == 0`, so the runner puts them around the timed repetitions (see `perfkit.measure.monitors`).
"""
from __future__ import annotations

import threading
from pathlib import Path

from perfkit.measure import nvml as _nvml
from perfkit.measure.windows import CpuMemoryWindow, CudaMemoryWindow

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    """A `VmRSS:`-style field of /proc/self/status in KiB, or None where there is no procfs."""
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class CpuMemoryMonitor:
    """Peak resident set size of this process during the window, not over its lifetime.

    Linux lets a process reset its high-water mark (writing 5 to /proc/self/clear_refs); VmHWM at the end is then
    the exact peak of the window. Where that is refused, a thread samples VmRSS every `interval_s` instead (a
    sampled peak can miss short spikes; the note says which method was used)."""

    min_window_s = 0.0

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self._method = None
        self._peak_kib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        self._peak_kib = 0
        if _status_kib("VmHWM") is None:
            self._method = None
            return
        try:
            _PROC_CLEAR_REFS.write_text("5")
            self._method = "hwm"
            return
        except OSError:
            pass
        self._method = "sampled"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="perfkit-rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            rss = _status_kib("VmRSS") or 0
            self._peak_kib = max(self._peak_kib, rss)
            if self._stop.wait(self.interval_s):
                return

    def end(self) -> CpuMemoryWindow:
        if self._method is None:
            return CpuMemoryWindow(None, "no /proc/self/status on this system")
        if self._method == "hwm":
            return CpuMemoryWindow(_status_kib("VmHWM") * 1024)
        self._stop.set()
        self._thread.join()
        self._peak_kib = max(self._peak_kib, _status_kib("VmRSS") or 0)
        return CpuMemoryWindow(self._peak_kib * 1024,
                               f"sampled every {self.interval_s * 1e3:g} ms (clear_refs not permitted)")


    def unmeasured(self, reason: str) -> CpuMemoryWindow:
        return CpuMemoryWindow(None, reason)


# -- GPU memory ---------------------------------------------------------------------------------------------------------
class CudaMemoryMonitor:
    """torch's peak allocated and peak reserved bytes on the device during the window (the peaks are reset at
    `begin`, so they are this case's), less the harness's L2-flush buffer; and NVML's used memory of the whole device
    at the end of the window. `nvml`/`handle` may be None, with `nvml_reason` saying why."""

    min_window_s = 0.0

    def __init__(self, device: str, nvml=None, handle=None, nvml_reason: str | None = None):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.nvml, self.handle = nvml, handle
        self.nvml_reason = nvml_reason or ("no NVML handle given" if handle is None else None)

    def begin(self) -> None:
        self.torch.cuda.synchronize(self.device)
        # Cached blocks freed before the window (autotune buffers, the warm-up's) would otherwise set the reserved
        # peak's floor: reset_peak_memory_stats starts it from what is reserved now.
        self.torch.cuda.empty_cache()
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def end(self) -> CudaMemoryWindow:
        from perfkit.measure.timer import l2_flush_buffer_bytes

        torch = self.torch
        torch.cuda.synchronize(self.device)
        harness = l2_flush_buffer_bytes(self.device)
        allocated = torch.cuda.max_memory_allocated(self.device) - harness
        reserved = torch.cuda.max_memory_reserved(self.device) - harness
        notes = ["torch peaks: caching allocator during the timed repetitions"
                 + (f", less the {harness / 2**20:.0f} MiB L2-flush buffer" if harness else "")]
        used = None
        if self.handle is not None:
            info, reason = _nvml.call(self.nvml, "nvmlDeviceGetMemoryInfo", self.handle)
            if reason is None:
                used = int(info.used)
                notes.append("nvml used: whole device at window end (all processes, CUDA contexts, allocator cache)")
            else:
                notes.append(f"nvml used not measured: {reason}")
        else:
            notes.append(f"nvml used not measured: {self.nvml_reason}")
        return CudaMemoryWindow(allocated, reserved, used, "; ".join(notes))

    def unmeasured(self, reason: str) -> CudaMemoryWindow:
        return CudaMemoryWindow.unmeasured(reason)
