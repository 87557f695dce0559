"""Monitors: windows around a timed case that return what they saw.

A monitor has `begin()` and `end()`; `end()` returns a dataclass whose field names are `Measurement` columns, with units
in the names. Without the hardware or the permission a monitor still runs, as a null object whose fields are None with
a note saying why. `min_window_s` is the shortest window the monitor can measure meaningfully; the runner repeats the
case until the window is at least that long.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class CpuMemoryWindow:
    cpu_peak_rss_bytes: int | None
    cpu_memory_note: str | None = None


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


def monitors_for(device: str) -> list:
    """The monitors a case on `device` runs under."""
    return [CpuMemoryMonitor()]
