"""A stand-in `pynvml` for tests without a GPU, and fake RAPL powercap trees.

`FakePynvml` answers the nvidia-ml-py calls perfkit makes, from state a test sets: the total-energy counter (mJ), the
power readings (mW), clocks, temperatures, utilization, clock-event reasons, memory. It can drop functions (an old
nvidia-ml-py: the attribute is missing), make them raise NVMLError_FunctionNotFound (an old driver) or any other NVML
error (NVMLError_NoPermission, NVMLError_NotSupported), and report a field value as unsupported.
"""
from __future__ import annotations

import itertools
import threading
import types
from pathlib import Path

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
_ERROR_STRINGS = {NVML_ERROR_NOT_SUPPORTED: "Not Supported", NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
                  NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
                  NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found"}


class NVMLError(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value

    def __str__(self):
        return _ERROR_STRINGS.get(self.value, f"NVML error {self.value}")


def _error_class(name: str, code: int):
    return type(name, (NVMLError,), {"__init__": lambda self: NVMLError.__init__(self, code)})


NVMLError_NotSupported = _error_class("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NVMLError_NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_LibraryNotFound = _error_class("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _error_class("NVMLError_FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)


class FakeGpu:
    """One device's readings. Sequences repeat their last value once used up."""

    def __init__(self, index=0, uuid="GPU-11111111-2222-3333-4444-555555555555", pci="00000000:17:00.0"):
        self.index, self.uuid, self.pci = index, uuid, pci
        self.energy_mj = 1_000_000
        self.power_mw = [300_000, 320_000, 340_000]
        self.instant_supported = True
        self.sm_clock_mhz = 1980
        self.mem_clock_mhz = 2619
        self.temperatures_c = [41, 57]
        self.power_limit_mw = 700_000
        self.utilization_pct = 97
        self.reasons = 0x004  # SwPowerCap
        self.memory_used = 5 << 30
        self._power = None
        self._temps = None

    def next_power(self):
        if self._power is None:
            self._power = itertools.chain(self.power_mw, itertools.repeat(self.power_mw[-1]))
        return next(self._power)

    def next_temperature(self):
        if self._temps is None:
            self._temps = itertools.chain(self.temperatures_c, itertools.repeat(self.temperatures_c[-1]))
        return next(self._temps)


class _Value:
    def __init__(self, ui):
        self.dVal = float(ui)
        self.uiVal = self.ulVal = self.ullVal = self.sllVal = self.siVal = self.usVal = ui


class _FieldValue:
    def __init__(self, field_id, ret, value):
        self.fieldId, self.nvmlReturn, self.valueType, self.value = field_id, ret, 1, _Value(value)


class FakePynvml(types.ModuleType):
    """`sys.modules["pynvml"]` for a test. `missing`: names that are absent; `failures`: name -> exception to raise."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_SUCCESS = NVML_SUCCESS
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound

    def __init__(self, gpus=None):
        super().__init__("pynvml")
        self.gpus = gpus or [FakeGpu()]
        self.missing: set[str] = set()
        self.failures: dict[str, BaseException] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __getattribute__(self, name):
        if name.startswith("nvml") and name in object.__getattribute__(self, "missing"):
            raise AttributeError(f"module 'pynvml' has no attribute {name!r}")
        attr = object.__getattribute__(self, name)
        if name.startswith("nvml") and callable(attr):
            failures = object.__getattribute__(self, "failures")
            calls = object.__getattribute__(self, "calls")

            def wrapper(*args):
                calls.append(name)
                if name in failures:
                    raise failures[name]
                return attr(*args)
            return wrapper
        return attr

    @property
    def gpu(self) -> FakeGpu:
        return self.gpus[0]

    # -- the API ------------------------------------------------------------------------------------------------------
    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError(6)  # NVML_ERROR_NOT_FOUND

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        for gpu in self.gpus:
            if gpu.pci.lower() == bus_id.lower():
                return gpu
        raise NVMLError(6)

    def nvmlDeviceGetHandleByIndex(self, index):
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu
        raise NVMLError(2)  # NVML_ERROR_INVALID_ARGUMENT

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu):
        return gpu.energy_mj

    def nvmlDeviceGetFieldValues(self, gpu, field_ids):
        out = []
        for field_id in field_ids:
            if field_id == 186 and gpu.instant_supported:
                out.append(_FieldValue(field_id, NVML_SUCCESS, gpu.next_power()))
            else:
                out.append(_FieldValue(field_id, NVML_ERROR_NOT_SUPPORTED, 0))
        return out

    def nvmlDeviceGetPowerUsage(self, gpu):
        return gpu.next_power()

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu):
        return gpu.power_limit_mw

    def nvmlDeviceGetTemperature(self, gpu, sensor):
        return gpu.next_temperature()

    def nvmlDeviceGetClockInfo(self, gpu, clock):
        return {1: gpu.sm_clock_mhz, 2: gpu.mem_clock_mhz}[clock]

    def nvmlDeviceGetUtilizationRates(self, gpu):
        return types.SimpleNamespace(gpu=gpu.utilization_pct, memory=50)

    def nvmlDeviceGetCurrentClocksEventReasons(self, gpu):
        return gpu.reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, gpu):
        return gpu.reasons

    def nvmlDeviceGetMemoryInfo(self, gpu):
        return types.SimpleNamespace(total=80 << 30, used=gpu.memory_used, free=(80 << 30) - gpu.memory_used)


def make_powercap(root: Path, zones: dict[str, dict[str, str]]) -> Path:
    """A powercap tree: zones maps a zone directory name to its files' contents."""
    root.mkdir(parents=True, exist_ok=True)
    for zone, files in zones.items():
        (root / zone).mkdir()
        for name, text in files.items():
            (root / zone / name).write_text(text)
    return root
