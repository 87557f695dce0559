"""Windows: the dataclasses a monitor's `end()` returns, one per group of `Measurement` fields (units in the names).

`Window.unmeasured(reason)` gives the window of a monitor that was not run, every field None and every note the reason.
`PowerSample` is one reading of the NVML monitor's power timeline. The monitors themselves are in `memory`,
`gpu_energy` and `rapl`; the protocol is described in `perfkit.measure.monitors`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


class _Unmeasured:
    """`Window.unmeasured(reason)`: every field None and every `*_note` field set to the reason."""

    @classmethod
    def unmeasured(cls, reason: str):
        return cls(**{f.name: (reason if f.name.endswith("_note") else None) for f in fields(cls)})


@dataclass
class CpuMemoryWindow:
    cpu_peak_rss_bytes: int | None
    cpu_memory_note: str | None = None


@dataclass
class CudaMemoryWindow(_Unmeasured):
    torch_peak_allocated_bytes: int | None = None  # torch's caching allocator, peak in the window
    torch_peak_reserved_bytes: int | None = None  # the allocator's reserved segments, peak in the window
    nvml_used_bytes: int | None = None  # the whole device's used memory at the end of the window (NVML)
    gpu_memory_note: str | None = None


@dataclass
class GpuStateWindow(_Unmeasured):
    """Power and GPU state over a window (NVML)."""

    power_mean_w: float | None = None  # mean of the power samples
    power_max_w: float | None = None
    power_sample_count: int | None = None
    power_note: str | None = None
    sm_clock_mhz: float | None = None  # median of the polls during the window
    mem_clock_mhz: float | None = None
    temperature_c_start: int | None = None
    temperature_c_end: int | None = None
    power_limit_w: float | None = None  # enforced power limit
    gpu_utilization_pct: float | None = None  # mean of the polls (NVML's percent of time a kernel ran)
    clock_event_reasons: str | None = None  # NVML reason names seen in any poll, comma-separated; "none"
    power_or_thermal_throttled: bool | None = None  # a power or thermal reason was seen
    gpu_note: str | None = None


@dataclass
class GpuEnergyWindow(GpuStateWindow):
    """Everything the NVML monitor measures: energy from the total-energy counter, and power and state."""

    energy_j: float | None = None
    energy_window_s: float | None = None
    energy_source: str | None = None  # "nvml_total_energy"
    energy_note: str | None = None


@dataclass
class HostEnergyWindow(_Unmeasured):
    """Host CPU package energy (RAPL) over a window; on GPU rows, beside the GPU's own energy."""

    cpu_energy_j: float | None = None
    cpu_energy_note: str | None = None


@dataclass
class CpuEnergyWindow(HostEnergyWindow):
    """On CPU rows RAPL is the row's energy too."""

    energy_j: float | None = None
    energy_window_s: float | None = None
    energy_source: str | None = None  # "rapl"
    energy_note: str | None = None


@dataclass(frozen=True)
class PowerSample:
    """One power reading of a window: seconds since the window began, watts, and which NVML reading it is."""

    t_s: float
    power_w: float
    source: str
