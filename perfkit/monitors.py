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
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from perfkit import nvml as _nvml

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


#: Shortest window over which NVML's total-energy counter (updated about every 100 ms) gives a usable reading: 5 s, as
#: ML.ENERGY (Zeus) and Yang et al. (SC'24) found (see REFERENCE.md, "Measuring energy").
MIN_NVML_ENERGY_WINDOW_S = 5.0
#: RAPL counters update about every millisecond with ~61 uJ resolution; a 1 s window is ample.
MIN_RAPL_ENERGY_WINDOW_S = 1.0
#: How often the NVML monitor's thread samples power by default (50 Hz; instant power refreshes at about that rate).
DEFAULT_POWER_INTERVAL_S = 0.02
#: How often it polls clocks, utilization and clock-event reasons.
DEFAULT_STATE_INTERVAL_S = 0.25
POWERCAP_ROOT = Path("/sys/class/powercap")

CPU_ROW_NOTE = "CPU row: GPU power, state and memory apply to GPU rows only"


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
        from perfkit.timer import l2_flush_buffer_bytes

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


# -- NVML energy, power and state -----------------------------------------------------------------------------------------
class NvmlMonitor:
    """A GPU's energy, power timeline and state over a window, from NVML.

    Energy: the difference of the total-energy counter (mJ since the driver loaded, Volta and newer) between `begin`
    and `end`, modulo 2**64 (a wrapped counter); a difference larger than the board could draw in the window means the
    counter was reset (a driver reload), and is refused. The counter updates about every 100 ms, so windows must be at
    least `min_window_s` (5 s) long to be accurate to a few percent.

    Power: a daemon thread reads power every `interval_s` (instant power where the driver has it, else the 1 s running
    average, noted) into `samples`, and every `state_interval_s` polls SM and memory clocks, utilization and clock-event
    reasons. Temperature is read at `begin` and `end`, the enforced power limit at `begin`. Any reading NVML refuses
    (old driver, no permission, not supported) leaves its fields None with the reason in the group's note."""

    min_window_s = MIN_NVML_ENERGY_WINDOW_S

    def __init__(self, nvml, handle, interval_s: float = DEFAULT_POWER_INTERVAL_S,
                 state_interval_s: float = DEFAULT_STATE_INTERVAL_S):
        self.nvml = nvml
        self.handle = handle
        self.interval_s = interval_s
        self.state_interval_s = state_interval_s
        self.samples: list[PowerSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the sampling thread ------------------------------------------------------------------------------------------
    def _poll_state(self) -> None:
        nvml, h = self.nvml, self.handle
        sm, reason = _nvml.call(nvml, "nvmlDeviceGetClockInfo", h, getattr(nvml, "NVML_CLOCK_SM", 1))
        self._poll("sm_clock", sm, reason)
        mem, reason = _nvml.call(nvml, "nvmlDeviceGetClockInfo", h, getattr(nvml, "NVML_CLOCK_MEM", 2))
        self._poll("mem_clock", mem, reason)
        util, reason = _nvml.call(nvml, "nvmlDeviceGetUtilizationRates", h)
        self._poll("utilization", None if util is None else util.gpu, reason)
        mask, reason = _nvml.clock_event_reasons(nvml, h)
        self._poll("reasons", mask, reason)

    def _poll(self, name: str, value, reason: str | None) -> None:
        if reason is None:
            self._polls.setdefault(name, []).append(value)
        else:
            self._poll_errors.setdefault(name, reason)

    def _run(self) -> None:
        next_state = self._t0 + self.state_interval_s
        while True:
            now = time.perf_counter()
            if self._read_power is not None:
                watts = self._read_power()
                if watts is None:
                    self._power_errors += 1
                else:
                    self.samples.append(PowerSample(now - self._t0, watts, self._power_source))
            if now >= next_state:
                self._poll_state()
                next_state += self.state_interval_s
            if self._stop.wait(self.interval_s):
                return

    # the window ---------------------------------------------------------------------------------------------------
    def begin(self) -> None:
        nvml, h = self.nvml, self.handle
        self.samples = []
        self._polls: dict[str, list] = {}
        self._poll_errors: dict[str, str] = {}
        self._power_errors = 0
        self._limit_mw, self._limit_reason = _nvml.call(nvml, "nvmlDeviceGetEnforcedPowerLimit", h)
        self._temp0, self._temp0_reason = _nvml.call(nvml, "nvmlDeviceGetTemperature", h,
                                                     getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        self._read_power, self._power_source, self._power_reason = _nvml.power_reader(nvml, h)
        self._energy0, self._energy0_reason = _nvml.call(nvml, "nvmlDeviceGetTotalEnergyConsumption", h)
        self._t0 = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="perfkit-nvml-sampler", daemon=True)
        self._thread.start()

    def end(self) -> GpuEnergyWindow:
        nvml, h = self.nvml, self.handle
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        energy1, energy1_reason = _nvml.call(nvml, "nvmlDeviceGetTotalEnergyConsumption", h)
        window_s = time.perf_counter() - self._t0
        temp1, temp1_reason = _nvml.call(nvml, "nvmlDeviceGetTemperature", h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        gpu_notes = []
        if not self._polls and not self._poll_errors:
            # the window was shorter than one poll interval: read the state now, and say so
            self._poll_state()
            gpu_notes.append("clocks, utilization and reasons read once, after the window")
        limit_w = None if self._limit_mw is None else self._limit_mw / 1e3
        out = GpuEnergyWindow(power_limit_w=limit_w, temperature_c_start=self._temp0, temperature_c_end=temp1)
        self._fill_energy(out, energy1, energy1_reason, window_s, limit_w)
        self._fill_power(out, window_s)
        polls = self._polls
        if "sm_clock" in polls:
            out.sm_clock_mhz = float(statistics.median(polls["sm_clock"]))
        if "mem_clock" in polls:
            out.mem_clock_mhz = float(statistics.median(polls["mem_clock"]))
        if "utilization" in polls:
            out.gpu_utilization_pct = float(statistics.fmean(polls["utilization"]))
        if "reasons" in polls:
            mask = 0
            for m in polls["reasons"]:
                mask |= m
            out.clock_event_reasons = _nvml.reason_names(mask)
            out.power_or_thermal_throttled = bool(mask & _nvml.POWER_OR_THERMAL_REASONS)
        for label, reason in (("power limit", self._limit_reason), ("temperature at start", self._temp0_reason),
                              ("temperature at end", temp1_reason)):
            if reason:
                gpu_notes.append(f"{label} not measured: {reason}")
        for name, reason in self._poll_errors.items():
            if name not in polls:
                gpu_notes.append(f"{name.replace('_', ' ')} not measured: {reason}")
        out.gpu_note = "; ".join(gpu_notes) or None
        return out

    def _fill_energy(self, out: GpuEnergyWindow, energy1, energy1_reason, window_s: float, limit_w) -> None:
        reason = self._energy0_reason or energy1_reason
        if reason:
            out.energy_note = f"energy not measured: {reason}"
            return
        delta_mj = (int(energy1) - int(self._energy0)) % 2**64  # a wrapped counter comes out right modulo 2**64
        ceiling_j = max(limit_w or 0.0, 1000.0) * 2 * window_s + 1.0  # more than any board draws in the window
        if delta_mj / 1e3 > ceiling_j:
            out.energy_note = (f"energy not measured: the counter jumped from {self._energy0} to {energy1} mJ in "
                               f"{window_s:.2f} s (reset by a driver reload?)")
            return
        if delta_mj == 0:
            out.energy_note = f"energy not measured: the counter did not advance in {window_s:.3f} s"
            return
        out.energy_j = delta_mj / 1e3
        out.energy_window_s = window_s
        out.energy_source = "nvml_total_energy"
        if window_s < self.min_window_s:
            out.energy_note = (f"window {window_s:.2f} s is shorter than the {self.min_window_s:g} s the counter "
                               "(updated every ~100 ms) needs: inaccurate")

    def _fill_power(self, out: GpuEnergyWindow, window_s: float) -> None:
        if self._read_power is None:
            out.power_note = f"power not measured: {self._power_reason}"
            return
        notes = [self._power_reason] if self._power_reason else []
        if self._power_errors:
            notes.append(f"{self._power_errors} power reading(s) failed")
        if not self.samples:
            out.power_note = "; ".join(notes + [f"power not measured: no sample in the {window_s:.3f} s window"])
            return
        watts = [s.power_w for s in self.samples]
        out.power_mean_w = statistics.fmean(watts)
        out.power_max_w = max(watts)
        out.power_sample_count = len(watts)
        out.power_note = "; ".join(notes) or None

    def unmeasured(self, reason: str) -> GpuEnergyWindow:
        return GpuEnergyWindow.unmeasured(reason)


# -- RAPL -----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaplDomain:
    name: str  # "package-0"
    energy_path: Path
    max_energy_range_uj: int | None  # where the counter wraps; None if unreadable


def rapl_domains(root: Path = POWERCAP_ROOT) -> tuple[list[RaplDomain], str | None]:
    """The readable RAPL package domains under a powercap tree, or ([], reason).

    Package domains are the top-level `intel-rapl:N` zones named `package-N` (AMD's RAPL appears under the same name).
    Sub-zones (`intel-rapl:N:M`: core, uncore, dram) are parts of a package, and `psys` covers the whole platform:
    either would count energy twice."""
    root = Path(root)
    if not root.is_dir():
        return [], f"RAPL not available: {root} does not exist"
    domains = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            name = zone.name
        if not name.startswith("package"):
            continue
        energy = zone / "energy_uj"
        try:
            int(energy.read_text())
        except PermissionError:
            return [], (f"RAPL not readable: {energy}: permission denied (energy_uj is root-only since Linux 5.10; "
                        "a root-owned udev rule or chmod can open it)")
        except (OSError, ValueError) as exc:
            return [], f"RAPL not readable: {energy}: {exc}"
        try:
            max_range = int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            max_range = None
        domains.append(RaplDomain(name, energy, max_range))
    if not domains:
        return [], f"RAPL not available: no intel-rapl:N package domain under {root}"
    return domains, None


def rapl_delta_uj(start: int, end: int, max_energy_range_uj: int | None) -> int | None:
    """Energy between two readings of one RAPL counter, in uJ; a counter that wrapped once (end < start) wraps at
    max_energy_range_uj. None if it wrapped and the range is unknown."""
    if end >= start:
        return end - start
    if max_energy_range_uj is None:
        return None
    return end + max_energy_range_uj - start


class RaplMonitor:
    """Host CPU package energy over a window, summed over the packages, from the RAPL counters in sysfs.

    A counter wraps at its max_energy_range_uj (2**32 units of ~61 uJ: tens of minutes at full power), so a window
    shorter than that sees at most one wrap. With `device_energy` (CPU rows) the result is also the row's energy."""

    min_window_s = MIN_RAPL_ENERGY_WINDOW_S

    def __init__(self, domains: list[RaplDomain], device_energy: bool = False):
        self.domains = domains
        self.window_type = CpuEnergyWindow if device_energy else HostEnergyWindow

    def _read(self) -> list[int]:
        return [int(d.energy_path.read_text()) for d in self.domains]

    def begin(self) -> None:
        self._start, self._start_error = None, None
        try:
            self._start = self._read()
        except (OSError, ValueError) as exc:
            self._start_error = f"RAPL read failed at window start: {exc}"
        self._t0 = time.perf_counter()

    def end(self):
        window_s = time.perf_counter() - self._t0
        if self._start_error:
            return self.window_type.unmeasured(self._start_error)
        try:
            stop = self._read()
        except (OSError, ValueError) as exc:
            return self.window_type.unmeasured(f"RAPL read failed at window end: {exc}")
        total = 0
        for domain, a, b in zip(self.domains, self._start, stop):
            delta = rapl_delta_uj(a, b, domain.max_energy_range_uj)
            if delta is None:
                return self.window_type.unmeasured(f"RAPL {domain.name} counter wrapped and its "
                                                   "max_energy_range_uj is unreadable")
            total += delta
        if total == 0:
            return self.window_type.unmeasured(f"RAPL counters did not advance in {window_s:.3f} s")
        joules = total / 1e6
        names = ",".join(d.name for d in self.domains)
        note = f"RAPL {names}" if len(self.domains) > 1 else None
        if self.window_type is CpuEnergyWindow:
            return CpuEnergyWindow(cpu_energy_j=joules, cpu_energy_note=note, energy_j=joules,
                                   energy_window_s=window_s, energy_source="rapl", energy_note=note)
        return HostEnergyWindow(joules, note)

    def unmeasured(self, reason: str):
        return self.window_type.unmeasured(reason)


def rapl_monitor(root: Path = POWERCAP_ROOT, device_energy: bool = False):
    """A RaplMonitor over the readable package domains under `root`, else a null monitor saying why."""
    domains, reason = rapl_domains(root)
    if reason:
        return NullMonitor((CpuEnergyWindow if device_energy else HostEnergyWindow).unmeasured(reason))
    return RaplMonitor(domains, device_energy)


# -- assembling -----------------------------------------------------------------------------------------------------------
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
