"""The NVML monitor: a GPU's energy (total-energy counter), power timeline, clocks, temperatures, power limit,
utilization and clock-event (throttle) reasons over a window, returned as a `GpuEnergyWindow`.

It needs a sustained window (`MIN_NVML_ENERGY_WINDOW_S`); NVML access itself is in `perfkit.measure.nvml`.
"""
from __future__ import annotations

import statistics
import threading
import time

from perfkit.measure import nvml as _nvml
from perfkit.measure.windows import GpuEnergyWindow, PowerSample

#: Shortest window over which NVML's total-energy counter (updated about every 100 ms) gives a usable reading: 5 s, as
#: ML.ENERGY (Zeus) and Yang et al. (SC'24) found (see REFERENCE.md, "Measuring energy").
MIN_NVML_ENERGY_WINDOW_S = 5.0
#: How often the NVML monitor's thread samples power by default (50 Hz; instant power refreshes at about that rate).
DEFAULT_POWER_INTERVAL_S = 0.02
#: How often it polls clocks, utilization and clock-event reasons.
DEFAULT_STATE_INTERVAL_S = 0.25


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
