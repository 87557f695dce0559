"""Monitors: windows around a timed case that return what they saw.

A monitor has `begin()` and `end()`; `end()` returns a dataclass whose field names are `Measurement` columns, with units
in the names. Without the hardware or the permission a monitor still runs, as a null object whose fields are None with
a note saying why. `min_window_s` is the shortest window the monitor can measure meaningfully. The runner puts monitors
with `min_window_s == 0` (memory) around the timed repetitions, and monitors that need a longer window (energy: NVML,
RAPL) around a sustained window in which the case runs back to back until the window is at least that long. A monitor
that was not run at all (a `--quick` run skips the sustained window) gives `unmeasured(reason)` instead.

- `CpuMemoryMonitor`: peak RSS of the process during the window (every row).
- `CudaMemoryMonitor`: torch's peak allocated and reserved bytes (reset at `begin`) and NVML's used memory (GPU rows).
- `NvmlMonitor`: the GPU's total-energy counter, a power timeline from a sampling thread, clocks, temperature at start
  and end, the enforced power limit, utilization and clock-event (throttle) reasons (GPU rows).
- `RaplMonitor`: the host CPU packages' energy from /sys/class/powercap (every row where it is readable; on CPU rows
  it is the row's energy).
`monitors_for(device)` assembles them for a case, null objects included, so every row carries every field or a reason.

Where they live: the windows they return (`*Window`, `PowerSample`) in `perfkit.measure.windows`; the memory monitors
in `perfkit.measure.memory`; the NVML monitor in `perfkit.measure.gpu_energy`; RAPL discovery and its monitor in
`perfkit.measure.rapl`. This module keeps the protocol, `NullMonitor`, the GPU handle cache and the assembling, and
re-exports the names importers took from it before the split (`__all__`), so `perfkit.measure.monitors` still
answers for all of them.
"""
from __future__ import annotations

from pathlib import Path

from perfkit.measure import nvml as _nvml
# Re-exported: everything public that this module defined before the split (see `__all__`).
from perfkit.measure.gpu_energy import (DEFAULT_POWER_INTERVAL_S, DEFAULT_STATE_INTERVAL_S, MIN_NVML_ENERGY_WINDOW_S,
                                        NvmlMonitor)
from perfkit.measure.memory import CpuMemoryMonitor, CudaMemoryMonitor
from perfkit.measure.rapl import (MIN_RAPL_ENERGY_WINDOW_S, POWERCAP_ROOT, RaplDomain, RaplMonitor, rapl_delta_uj,
                                  rapl_domains)
from perfkit.measure.windows import (CpuEnergyWindow, CpuMemoryWindow, CudaMemoryWindow, GpuEnergyWindow,
                                     GpuStateWindow, HostEnergyWindow, PowerSample)

__all__ = [
    # defined here
    "CPU_ROW_NOTE", "NullMonitor", "rapl_monitor", "gpu_nvml", "monitors_for",
    # re-exported from perfkit.measure.windows
    "CpuMemoryWindow", "CudaMemoryWindow", "GpuStateWindow", "GpuEnergyWindow", "HostEnergyWindow", "CpuEnergyWindow",
    "PowerSample",
    # re-exported from perfkit.measure.memory
    "CpuMemoryMonitor", "CudaMemoryMonitor",
    # re-exported from perfkit.measure.gpu_energy
    "MIN_NVML_ENERGY_WINDOW_S", "DEFAULT_POWER_INTERVAL_S", "DEFAULT_STATE_INTERVAL_S", "NvmlMonitor",
    # re-exported from perfkit.measure.rapl
    "MIN_RAPL_ENERGY_WINDOW_S", "POWERCAP_ROOT", "RaplDomain", "rapl_domains", "rapl_delta_uj", "RaplMonitor",
]

CPU_ROW_NOTE = "CPU row: GPU power, state and memory apply to GPU rows only"


class NullMonitor:
    """A monitor without its hardware: measures nothing and returns `window`, whose notes say why."""

    min_window_s = 0.0

    def __init__(self, window):
        self.window = window

    def begin(self) -> None:
        pass

    def end(self):
        return self.window

    def unmeasured(self, reason: str):
        return self.window


# -- assembling -----------------------------------------------------------------------------------------------------------
def rapl_monitor(root: Path = POWERCAP_ROOT, device_energy: bool = False):
    """A RaplMonitor over the readable package domains under `root`, else a null monitor saying why."""
    domains, reason = rapl_domains(root)
    if reason:
        return NullMonitor((CpuEnergyWindow if device_energy else HostEnergyWindow).unmeasured(reason))
    return RaplMonitor(domains, device_energy)


_GPU_HANDLES: dict[int, tuple] = {}  # torch device index -> (nvml, handle, reason), looked up once per process


def gpu_nvml(device: str):
    """(pynvml, handle, None) for a torch CUDA device, or (None, None, reason)."""
    import torch

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    if index not in _GPU_HANDLES:
        nvml, reason = _nvml.load()
        if nvml is None:
            _GPU_HANDLES[index] = (None, None, reason)
        else:
            handle, _, reason = _nvml.handle_for_torch_device(nvml, index)
            _GPU_HANDLES[index] = (nvml, handle, reason) if handle is not None else (None, None, reason)
    return _GPU_HANDLES[index]


def monitors_for(device: str, power_interval_s: float = DEFAULT_POWER_INTERVAL_S,
                 powercap_root: Path = POWERCAP_ROOT) -> list:
    """The monitors a case on `device` runs under: one per group of `Measurement` fields, null objects included.

    CPU rows never touch CUDA or NVML."""
    if device.startswith("cuda"):
        nvml, handle, reason = gpu_nvml(device)
        gpu = (NvmlMonitor(nvml, handle, power_interval_s) if handle is not None
               else NullMonitor(GpuEnergyWindow.unmeasured(reason)))
        return [CpuMemoryMonitor(), CudaMemoryMonitor(device, nvml, handle, reason), gpu,
                rapl_monitor(powercap_root, device_energy=False)]
    return [CpuMemoryMonitor(), NullMonitor(CudaMemoryWindow.unmeasured(CPU_ROW_NOTE)),
            NullMonitor(GpuStateWindow.unmeasured(CPU_ROW_NOTE)), rapl_monitor(powercap_root, device_energy=True)]
