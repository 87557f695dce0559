"""Fixtures of the harness tests: a stand-in pynvml installed as `pynvml`, and a fake RAPL powercap tree."""
from __future__ import annotations

import sys

import pytest
from harness_fakes import FakePynvml, make_powercap


@pytest.fixture
def fake_nvml(monkeypatch):
    """A FakePynvml installed as `pynvml`, with perfkit's NVML state reset before and after."""
    from perfkit.measure import monitors, nvml

    fake = FakePynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    nvml.reset()
    monitors._GPU_HANDLES.clear()
    yield fake
    nvml.reset()
    monitors._GPU_HANDLES.clear()


@pytest.fixture
def powercap(tmp_path):
    """Two packages, a core sub-zone and a psys zone (the last two must be left out of the sum)."""
    return make_powercap(tmp_path / "powercap", {
        "intel-rapl:0": {"name": "package-0\n", "energy_uj": "1000000\n", "max_energy_range_uj": "262143328850\n"},
        "intel-rapl:0:0": {"name": "core\n", "energy_uj": "500\n", "max_energy_range_uj": "262143328850\n"},
        "intel-rapl:1": {"name": "package-1\n", "energy_uj": "2000000\n", "max_energy_range_uj": "262143328850\n"},
        "intel-rapl:2": {"name": "psys\n", "energy_uj": "9000000\n", "max_energy_range_uj": "262143328850\n"},
    })
