"""The NVML monitor against a stand-in pynvml: counters, wrap-around, old drivers, missing permissions."""
from __future__ import annotations

import sys
import threading
import time
import types

import pytest
from harness_fakes import FakeGpu, NVMLError_FunctionNotFound, NVMLError_LibraryNotFound, NVMLError_NoPermission

from perfkit.measure import monitors, nvml
from perfkit.measure.monitors import GpuEnergyWindow, NullMonitor, NvmlMonitor


def window(fake, seconds=0.12, between=None, **kwargs):
    """Run an NvmlMonitor over a window of `seconds`; `between(fake)` runs inside it (to move the counters)."""
    monitor = NvmlMonitor(fake, fake.gpu, interval_s=kwargs.pop("interval_s", 0.005),
                          state_interval_s=kwargs.pop("state_interval_s", 0.02))
    monitor.begin()
    time.sleep(seconds / 2)
    if between:
        between(fake)
    time.sleep(seconds / 2)
    return monitor.end(), monitor


def advance(mj):
    def step(fake):
        fake.gpu.energy_mj += mj
    return step


def test_everything_measured(fake_nvml):
    result, monitor = window(fake_nvml, between=advance(150_000))
    assert result.energy_j == pytest.approx(150.0)
    assert result.energy_source == "nvml_total_energy"
    assert 0.1 < result.energy_window_s < 5.0
    assert "shorter than the 5 s" in result.energy_note  # a direct short window says it is inaccurate
    assert result.power_sample_count == len(monitor.samples) >= 5
    assert 300.0 <= result.power_mean_w <= result.power_max_w == 340.0
    assert result.power_note is None
    assert [s.source for s in monitor.samples] == ["nvml_power_instant"] * len(monitor.samples)
    times = [s.t_s for s in monitor.samples]
    assert times == sorted(times) and times[0] >= 0
    assert (result.sm_clock_mhz, result.mem_clock_mhz) == (1980.0, 2619.0)
    assert (result.temperature_c_start, result.temperature_c_end) == (41, 57)
    assert result.power_limit_w == 700.0
    assert result.gpu_utilization_pct == 97.0
    assert result.clock_event_reasons == "SwPowerCap"
    assert result.power_or_thermal_throttled is True
    assert result.gpu_note is None


def test_the_sampler_thread_stops(fake_nvml):
    window(fake_nvml, between=advance(1000))
    assert not [t for t in threading.enumerate() if t.name == "perfkit-nvml-sampler"]


def test_energy_counter_wraps_around(fake_nvml):
    fake_nvml.gpu.energy_mj = 2**64 - 2_000

    def wrap(fake):
        fake.gpu.energy_mj = 3_000  # 2 J to the wrap, 3 J after it
    result, _ = window(fake_nvml, between=wrap)
    assert result.energy_j == pytest.approx(5.0)


def test_energy_counter_reset_is_refused(fake_nvml):
    fake_nvml.gpu.energy_mj = 10**12

    def reset(fake):
        fake.gpu.energy_mj = 5  # a driver reload zeroes the counter: no energy, and no 2**64-sized nonsense
    result, _ = window(fake_nvml, between=reset)
    assert result.energy_j is None and result.energy_source is None
    assert "reset" in result.energy_note


def test_counter_that_does_not_advance_gives_no_energy(fake_nvml):
    result, _ = window(fake_nvml)
    assert result.energy_j is None and "did not advance" in result.energy_note


def test_instant_power_unsupported_falls_back_to_the_average(fake_nvml):
    fake_nvml.gpu.instant_supported = False
    result, monitor = window(fake_nvml, between=advance(1000))
    assert result.power_sample_count >= 5
    assert "1 s running average" in result.power_note
    assert {s.source for s in monitor.samples} == {"nvml_power_usage"}


def test_field_values_missing_from_old_pynvml(fake_nvml):
    fake_nvml.missing.add("nvmlDeviceGetFieldValues")
    result, monitor = window(fake_nvml, between=advance(1000))
    assert result.power_mean_w is not None and "1 s running average" in result.power_note


def test_clock_event_reasons_fall_back_when_pynvml_is_old(fake_nvml):
    fake_nvml.missing.add("nvmlDeviceGetCurrentClocksEventReasons")  # AttributeError
    fake_nvml.gpu.reasons = 0x001 | 0x040
    result, _ = window(fake_nvml, between=advance(1000))
    assert result.clock_event_reasons == "GpuIdle,HwThermalSlowdown"
    assert result.power_or_thermal_throttled is True
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in fake_nvml.calls


def test_clock_event_reasons_fall_back_when_the_driver_is_old(fake_nvml):
    fake_nvml.failures["nvmlDeviceGetCurrentClocksEventReasons"] = NVMLError_FunctionNotFound()
    fake_nvml.gpu.reasons = 0x001
    result, _ = window(fake_nvml, between=advance(1000))
    assert result.clock_event_reasons == "GpuIdle"
    assert result.power_or_thermal_throttled is False
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in fake_nvml.calls


def test_clock_event_reasons_other_errors_do_not_fall_back(fake_nvml):
    fake_nvml.failures["nvmlDeviceGetCurrentClocksEventReasons"] = NVMLError_NoPermission()
    result, _ = window(fake_nvml, between=advance(1000))
    assert result.clock_event_reasons is None and result.power_or_thermal_throttled is None
    assert "reasons not measured" in result.gpu_note and "NoPermission" in result.gpu_note
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" not in fake_nvml.calls


def test_no_reasons_reads_none_not_empty(fake_nvml):
    fake_nvml.gpu.reasons = 0
    result, _ = window(fake_nvml, between=advance(1000))
    assert result.clock_event_reasons == "none" and result.power_or_thermal_throttled is False


def test_permission_denied_energy_leaves_energy_null_with_the_reason(fake_nvml):
    fake_nvml.failures["nvmlDeviceGetTotalEnergyConsumption"] = NVMLError_NoPermission()
    result, _ = window(fake_nvml, between=advance(1000))
    assert result.energy_j is None and result.energy_window_s is None and result.energy_source is None
    assert "NVMLError_NoPermission: Insufficient Permissions" in result.energy_note
    assert result.power_mean_w is not None  # the rest is still measured


def test_permission_denied_everywhere_gives_nulls_with_reasons_never_zero(fake_nvml):
    for name in ("nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetFieldValues", "nvmlDeviceGetPowerUsage",
                 "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetTemperature", "nvmlDeviceGetClockInfo",
                 "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetCurrentClocksEventReasons"):
        fake_nvml.failures[name] = NVMLError_NoPermission()
    result, monitor = window(fake_nvml, between=advance(1000))
    values = {k: v for k, v in vars(result).items() if not k.endswith("_note")}
    assert all(v is None for v in values.values()), values
    assert monitor.samples == []
    for note in (result.energy_note, result.power_note, result.gpu_note):
        assert "Insufficient Permissions" in note
    for label in ("power limit", "temperature at start", "temperature at end", "sm clock", "mem clock",
                  "utilization", "reasons"):
        assert f"{label} not measured" in result.gpu_note


def test_window_shorter_than_a_poll_reads_state_once_after(fake_nvml):
    result, _ = window(fake_nvml, seconds=0.0, between=advance(10), state_interval_s=10.0)
    assert result.sm_clock_mhz == 1980.0
    assert "read once, after the window" in result.gpu_note


# -- loading NVML -------------------------------------------------------------------------------------------------------
def test_load_reports_a_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    nvml.reset()
    try:
        module, reason = nvml.load()
        assert module is None and "nvidia-ml-py is not installed" in reason
    finally:
        nvml.reset()


def test_load_reports_a_failed_init(fake_nvml):
    fake_nvml.failures["nvmlInit"] = NVMLError_LibraryNotFound()
    module, reason = nvml.load()
    assert module is None
    assert reason == ("NVML not available: nvmlInit failed (NVMLError_LibraryNotFound: NVML Shared Library Not "
                      "Found)")


def test_gpu_monitor_without_nvml_is_a_null_object_that_says_why(fake_nvml):
    fake_nvml.failures["nvmlInit"] = NVMLError_NoPermission()
    found = monitors.monitors_for("cuda:0")  # builds monitors only: touches no CUDA
    gpu = [m for m in found if isinstance(m, NullMonitor) and isinstance(m.window, GpuEnergyWindow)]
    assert len(gpu) == 1
    result = gpu[0].end()
    assert result.energy_j is None and result.power_mean_w is None and result.sm_clock_mhz is None
    assert "nvmlInit failed" in result.energy_note and "Insufficient Permissions" in result.power_note
    assert gpu[0].min_window_s == 0  # nothing to wait for: no sustained window is run


# -- torch device -> NVML handle --------------------------------------------------------------------------------------
def props(**kw):
    return types.SimpleNamespace(**kw)


@pytest.fixture
def two_gpus(fake_nvml):
    fake_nvml.gpus = [FakeGpu(0, "GPU-aaaaaaaa-0000-0000-0000-000000000000", "00000000:17:00.0"),
                      FakeGpu(1, "GPU-bbbbbbbb-0000-0000-0000-000000000000", "00000000:65:00.0")]
    return fake_nvml


def test_handle_by_uuid_ignores_the_index(two_gpus):
    # CUDA_VISIBLE_DEVICES=1: torch's device 0 is NVML's device 1; torch reports the UUID without "GPU-"
    handle, how, reason = nvml.handle_for_torch_device(
        two_gpus, 0, props(uuid="bbbbbbbb-0000-0000-0000-000000000000"), visible="1")
    assert reason is None and handle is two_gpus.gpus[1] and how.startswith("uuid")


def test_handle_by_uuid_in_upper_case(two_gpus):
    handle, _, _ = nvml.handle_for_torch_device(two_gpus, 0, props(uuid="AAAAAAAA-0000-0000-0000-000000000000"))
    assert handle is two_gpus.gpus[0]


def test_handle_by_pci_bus_id_when_there_is_no_uuid(two_gpus):
    handle, how, reason = nvml.handle_for_torch_device(
        two_gpus, 0, props(pci_domain_id=0, pci_bus_id=0x65, pci_device_id=0), visible="1")
    assert handle is two_gpus.gpus[1] and how == "pci 00000000:65:00.0"


def test_handle_by_cuda_visible_devices_as_the_last_resort(two_gpus):
    handle, how, _ = nvml.handle_for_torch_device(two_gpus, 0, props(), visible="1,0")
    assert handle is two_gpus.gpus[1] and "CUDA_VISIBLE_DEVICES" in how
    handle, _, _ = nvml.handle_for_torch_device(two_gpus, 1, props(), visible="")
    assert handle is two_gpus.gpus[1]  # unset: the same index


def test_no_handle_says_why(two_gpus):
    handle, how, reason = nvml.handle_for_torch_device(two_gpus, 0, props(uuid="cccc"), visible="GPU-cccc")
    assert handle is None and how is None
    assert "no NVML handle" in reason and "GPU-cccc" in reason


def test_reason_names():
    assert nvml.reason_names(0) == "none"
    assert nvml.reason_names(0x004 | 0x080) == "SwPowerCap,HwPowerBrakeSlowdown"
    assert nvml.reason_names(0x800 | 0x001) == "GpuIdle,0x800"
