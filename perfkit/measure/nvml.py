"""NVML through nvidia-ml-py (imported as `pynvml`), loaded only when a GPU case asks for it.

Nothing here runs at import: `load()` imports `pynvml` and initialises NVML the first time a GPU monitor is built, and
remembers the outcome (the module, or the reason it is unusable) for the process. Every reading goes through `call`,
which turns a missing function (an old nvidia-ml-py: AttributeError) or an NVML error (an old driver:
NVMLError_FunctionNotFound; no permission: NVMLError_NoPermission; NVMLError_NotSupported) into a `(None, reason)` pair,
so a monitor can leave exactly the fields it could not read empty and say why.

Units as NVML gives them: power and power limits in milliwatts, energy in millijoules, clocks in MHz, temperatures in
degrees Celsius, memory in bytes.
"""
from __future__ import annotations

import os
from typing import Any

#: nvml.h's field id of NVML_FI_DEV_POWER_INSTANT (instant board power, mW), for an nvidia-ml-py too old to name it.
FI_DEV_POWER_INSTANT = 186

#: Clock-event (throttle) reason bits, named as NVML names them (nvmlClocksEventReason*).
CLOCK_EVENT_REASONS = {
    0x001: "GpuIdle",
    0x002: "ApplicationsClocksSetting",
    0x004: "SwPowerCap",
    0x008: "HwSlowdown",
    0x010: "SyncBoost",
    0x020: "SwThermalSlowdown",
    0x040: "HwThermalSlowdown",
    0x080: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
}
#: The reasons that mean a power or thermal limit held the clocks down (HwSlowdown is raised by either).
POWER_OR_THERMAL_REASONS = 0x004 | 0x008 | 0x020 | 0x040 | 0x080

_state: dict[str, Any] = {}


def load():
    """(pynvml module, None) with NVML initialised, or (None, reason). Tried once per process."""
    if "result" not in _state:
        _state["result"] = _load()
    return _state["result"]


def reset() -> None:
    """Forget what `load()` found (tests swap in a stand-in pynvml)."""
    _state.clear()


def _load():
    try:
        import pynvml
    except ImportError:
        return None, "NVML not available: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()  # reference-counted by NVML; never shut down, the process's monitors share it
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, _NoPermission, ...
        return None, f"NVML not available: nvmlInit failed ({describe(exc)})"
    return pynvml, None


def describe(exc: BaseException) -> str:
    """'NVMLError_NoPermission: Insufficient Permissions' and the like."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def call(nvml, name: str, *args):
    """(nvml.name(*args), None), or (None, reason) if the function is missing or NVML refuses."""
    fn = getattr(nvml, name, None)
    if fn is None:
        return None, f"{name} is missing from this nvidia-ml-py"
    try:
        return fn(*args), None
    except Exception as exc:  # an NVMLError subclass, or a ctypes failure: recorded, never fatal to a case
        return None, f"{name}: {describe(exc)}"


# -- device handles -----------------------------------------------------------------------------------------------------
def pci_bus_id(domain: int, bus: int, device: int) -> str:
    """NVML's PCI bus id text, 'dddddddd:bb:dd.0' (the form nvmlPciInfo_t.busId takes)."""
    return f"{domain:08x}:{bus:02x}:{device:02x}.0"


def handle_for_torch_device(nvml, index: int, props=None, visible: str | None = None):
    """The NVML handle of torch's CUDA device `index`: (handle, how, None) or (None, None, reason).

    torch numbers the devices CUDA_VISIBLE_DEVICES leaves visible, in CUDA's order (fastest first unless
    CUDA_DEVICE_ORDER=PCI_BUS_ID); NVML numbers every device in PCI order and ignores CUDA_VISIBLE_DEVICES. So the
    device is found by its UUID, else its PCI bus id, both read from torch's device properties; only when neither is
    available does the index go through CUDA_VISIBLE_DEVICES (which is right only in PCI order). `props` and `visible`
    default to torch's properties of the device and the environment's CUDA_VISIBLE_DEVICES."""
    if props is None:
        import torch

        props = torch.cuda.get_device_properties(index)
    reasons = []
    uuid = getattr(props, "uuid", None)
    if uuid is not None and str(uuid):
        text = str(uuid).strip()  # torch's _CUuuid prints the bare UUID; NVML's have a GPU- prefix, in lower case
        text = text if text.upper().startswith(("GPU-", "MIG-")) else f"GPU-{text}"
        text = text[:4].upper() + text[4:].lower()
        handle, reason = call(nvml, "nvmlDeviceGetHandleByUUID", text)
        if reason is None:
            return handle, f"uuid {text}", None
        reasons.append(reason)
    if all(hasattr(props, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        bus_id = pci_bus_id(props.pci_domain_id, props.pci_bus_id, props.pci_device_id)
        handle, reason = call(nvml, "nvmlDeviceGetHandleByPciBusId", bus_id)
        if reason is None:
            return handle, f"pci {bus_id}", None
        reasons.append(reason)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    entries = [e.strip() for e in visible.split(",") if e.strip()] if visible else None
    if entries is None:
        nvml_index = index
    elif index < len(entries) and entries[index].isdigit():
        nvml_index = int(entries[index])
    else:
        reasons.append(f"CUDA_VISIBLE_DEVICES={visible!r} does not give torch device {index} an NVML index")
        return None, None, "no NVML handle for this GPU: " + "; ".join(reasons)
    handle, reason = call(nvml, "nvmlDeviceGetHandleByIndex", nvml_index)
    if reason is None:
        return handle, f"index {nvml_index} (via CUDA_VISIBLE_DEVICES)", None
    reasons.append(reason)
    return None, None, "no NVML handle for this GPU: " + "; ".join(reasons)


# -- readings -----------------------------------------------------------------------------------------------------------
_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def field_value(nvml, handle, field_id: int):
    """(value, None) of one NVML field (nvmlDeviceGetFieldValues), or (None, reason)."""
    values, reason = call(nvml, "nvmlDeviceGetFieldValues", handle, [field_id])
    if reason:
        return None, reason
    fv = values[0]
    if fv.nvmlReturn != 0:  # NVML_SUCCESS
        return None, f"field {field_id}: NVML error {fv.nvmlReturn}"
    member = _VALUE_MEMBERS.get(int(fv.valueType))
    if member is None:
        return None, f"field {field_id}: unknown value type {fv.valueType}"
    return getattr(fv.value, member), None


def power_reader(nvml, handle):
    """(read() -> watts, source, note) for the best power reading the device gives, or (None, None, reason).

    Instant power (the NVML_FI_DEV_POWER_INSTANT field) where the driver has it; else nvmlDeviceGetPowerUsage, which on
    Ampere and newer is a 1 s running average, not an instant reading (the note says so)."""
    field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", FI_DEV_POWER_INSTANT)
    _, instant_reason = field_value(nvml, handle, field_id)
    if instant_reason is None:
        def read_instant():
            value, reason = field_value(nvml, handle, field_id)
            return None if reason else value / 1e3
        return read_instant, "nvml_power_instant", None
    _, usage_reason = call(nvml, "nvmlDeviceGetPowerUsage", handle)
    if usage_reason is None:
        def read_usage():
            value, reason = call(nvml, "nvmlDeviceGetPowerUsage", handle)
            return None if reason else value / 1e3
        return read_usage, "nvml_power_usage", (
            f"instant power unavailable ({instant_reason}); samples are nvmlDeviceGetPowerUsage, a 1 s running "
            "average on Ampere and newer")
    return None, None, f"no power reading: {instant_reason}; {usage_reason}"


def clock_event_reasons(nvml, handle):
    """(bitmask, None) of the clocks' current event (throttle) reasons, or (None, reason).

    nvmlDeviceGetCurrentClocksEventReasons is the current name. Older nvidia-ml-py releases lack it (AttributeError)
    and older drivers lack the symbol (NVMLError_FunctionNotFound); both still have the deprecated
    nvmlDeviceGetCurrentClocksThrottleReasons, which is then used."""
    not_found = getattr(nvml, "NVMLError_FunctionNotFound", None)
    new = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    first = "nvmlDeviceGetCurrentClocksEventReasons is missing from this nvidia-ml-py"
    if new is not None:
        try:
            return int(new(handle)), None
        except Exception as exc:
            first = f"nvmlDeviceGetCurrentClocksEventReasons: {describe(exc)}"
            if not (isinstance(not_found, type) and isinstance(exc, not_found)):
                return None, first
    mask, reason = call(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
    if reason is None:
        return int(mask), None
    return None, f"{first}; {reason}"


def reason_names(mask: int) -> str:
    """'SwPowerCap,HwSlowdown' for a reason bitmask; 'none' when no bit is set; unknown bits in hex."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    bit = 1
    while unknown:
        if unknown & bit:
            names.append(hex(bit))
            unknown &= ~bit
        bit <<= 1
    return ",".join(names) if names else "none"
