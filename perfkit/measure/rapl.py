"""RAPL: discovery of the host CPU package domains under /sys/class/powercap, and the monitor of their energy.

`rapl_monitor` (in `perfkit.measure.monitors`) gives a `RaplMonitor`, or a null monitor saying why RAPL is unreadable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from perfkit.measure.windows import CpuEnergyWindow, HostEnergyWindow

#: RAPL counters update about every millisecond with ~61 uJ resolution; a 1 s window is ample.
MIN_RAPL_ENERGY_WINDOW_S = 1.0
POWERCAP_ROOT = Path("/sys/class/powercap")


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
