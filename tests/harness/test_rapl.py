"""RAPL CPU energy from a fake /sys/class/powercap tree: package domains only, wrap-around, unreadable files."""
from __future__ import annotations

from pathlib import Path

import pytest
from harness_fakes import make_powercap

from perfkit.measure.monitors import (CpuEnergyWindow, HostEnergyWindow, NullMonitor, RaplMonitor, rapl_delta_uj, rapl_domains,
                              rapl_monitor)

MAX = 262143328850


def set_uj(root: Path, zone: str, value: int) -> None:
    (root / zone / "energy_uj").write_text(f"{value}\n")


def test_package_domains_only(powercap):
    domains, reason = rapl_domains(powercap)
    assert reason is None
    assert [d.name for d in domains] == ["package-0", "package-1"]  # not the core sub-zone, not psys
    assert all(d.max_energy_range_uj == MAX for d in domains)


def test_energy_summed_over_packages(powercap):
    monitor = rapl_monitor(powercap)
    assert isinstance(monitor, RaplMonitor) and monitor.min_window_s > 0
    monitor.begin()
    set_uj(powercap, "intel-rapl:0", 1_000_000 + 3_000_000)
    set_uj(powercap, "intel-rapl:1", 2_000_000 + 1_500_000)
    set_uj(powercap, "intel-rapl:0:0", 99_000_000)  # a sub-zone: already in package-0, never added
    set_uj(powercap, "intel-rapl:2", 99_000_000)  # psys: the whole platform, never added
    result = monitor.end()
    assert isinstance(result, HostEnergyWindow) and not isinstance(result, CpuEnergyWindow)
    assert result.cpu_energy_j == pytest.approx(4.5)
    assert "package-0,package-1" in result.cpu_energy_note


def test_cpu_rows_get_rapl_as_their_energy(powercap):
    monitor = rapl_monitor(powercap, device_energy=True)
    monitor.begin()
    set_uj(powercap, "intel-rapl:0", 1_000_000 + 2_000_000)
    result = monitor.end()
    assert isinstance(result, CpuEnergyWindow)
    assert result.energy_j == result.cpu_energy_j == pytest.approx(2.0)
    assert result.energy_source == "rapl"
    assert result.energy_window_s >= 0


def test_counter_wrap_around(powercap):
    set_uj(powercap, "intel-rapl:0", MAX - 1_000)
    monitor = rapl_monitor(powercap)
    monitor.begin()
    set_uj(powercap, "intel-rapl:0", 4_000)  # wrapped: 1 mJ to the top, 4 mJ after
    result = monitor.end()
    assert result.cpu_energy_j == pytest.approx(5_000 / 1e6)


def test_delta_arithmetic():
    assert rapl_delta_uj(10, 25, MAX) == 15
    assert rapl_delta_uj(MAX - 5, 7, MAX) == 12
    assert rapl_delta_uj(MAX - 5, 7, None) is None


def test_wrap_with_unreadable_range_is_null_with_reason(tmp_path):
    root = make_powercap(tmp_path / "pc", {"intel-rapl:0": {"name": "package-0", "energy_uj": "900"}})
    monitor = rapl_monitor(root, device_energy=True)
    monitor.begin()
    set_uj(root, "intel-rapl:0", 100)
    result = monitor.end()
    assert result.energy_j is None and result.cpu_energy_j is None
    assert "max_energy_range_uj is unreadable" in result.energy_note


def test_missing_tree_is_a_null_monitor_with_reason(tmp_path):
    monitor = rapl_monitor(tmp_path / "absent", device_energy=True)
    assert isinstance(monitor, NullMonitor) and monitor.min_window_s == 0
    result = monitor.end()
    assert result.energy_j is None and result.cpu_energy_j is None and result.energy_source is None
    assert "does not exist" in result.energy_note and "does not exist" in result.cpu_energy_note


def test_tree_without_packages(tmp_path):
    root = make_powercap(tmp_path / "pc", {"intel-rapl:0": {"name": "psys", "energy_uj": "1"}})
    monitor = rapl_monitor(root)
    assert isinstance(monitor, NullMonitor)
    assert "no intel-rapl:N package domain" in monitor.end().cpu_energy_note


def test_unreadable_counter_is_null_with_reason(powercap, monkeypatch):
    # As on Linux >= 5.10, where energy_uj is root-only. Patched, not chmod-ed: root could read a 0400 file anyway.
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "read_text", read_text)
    monitor = rapl_monitor(powercap)
    assert isinstance(monitor, NullMonitor)
    result = monitor.end()
    assert result.cpu_energy_j is None
    assert "permission denied" in result.cpu_energy_note and "root-only" in result.cpu_energy_note


def test_counter_vanishing_mid_window_is_null_with_reason(powercap):
    monitor = rapl_monitor(powercap)
    monitor.begin()
    (powercap / "intel-rapl:1" / "energy_uj").unlink()
    result = monitor.end()
    assert result.cpu_energy_j is None and "read failed at window end" in result.cpu_energy_note


def test_counter_that_does_not_advance_is_null_not_zero(powercap):
    monitor = rapl_monitor(powercap)
    monitor.begin()
    result = monitor.end()
    assert result.cpu_energy_j is None and "did not advance" in result.cpu_energy_note
