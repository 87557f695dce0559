"""The environment a run happened in, and its fingerprint.

`collect_environment(probe_gpus=False)` reads only the OS, Python and package metadata: it imports neither triton nor
NVML and never initialises CUDA, so CPU-only runs stay clear of GPU drivers. With `probe_gpus=True` it also lists the
visible GPUs (torch.cuda) and the driver version (NVML, when it can be loaded).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import perfkit

#: Fields that identify a machine and its software; the fingerprint hashes these (not the hostname alone, so two
#: identical machines with different names stay apart, and not the time or the git commit).
FINGERPRINT_FIELDS = ("hostname", "os", "machine", "cpu_model", "cpu_count_logical", "memory_total_bytes", "python",
                      "torch", "torch_cuda", "triton", "gpus", "gpu_driver")


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def git_commit() -> str | None:
    """The commit of the perfkit checkout this code runs from ("<sha>-dirty" with local changes); None for a wheel."""
    root = Path(perfkit.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _gpus() -> tuple[list[dict], str | None, str | None]:
    """Visible GPUs (honouring CUDA_VISIBLE_DEVICES, as torch numbers them), the driver version, and a note."""
    import torch

    if not torch.cuda.is_available():
        return [], None, "no CUDA device visible to torch"
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name, "memory_bytes": props.total_memory,
                     "compute_capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count})
    driver, note = None, None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVML missing or refused: the driver version is then unknown, not an error
        note = f"driver version unknown: NVML unavailable ({type(exc).__name__}: {exc})"
    return gpus, driver, note


def collect_environment(probe_gpus: bool = False) -> dict:
    """A JSON-able description of this machine and its software."""
    import torch

    env = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_bytes": _memory_total_bytes(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads_default": torch.get_num_threads(),
        "triton": _package_version("triton"),
        "numpy": _package_version("numpy"),
        "pandas": _package_version("pandas"),
        "nvidia_ml_py": _package_version("nvidia-ml-py"),
        "perfkit": perfkit.__version__,
        "git_commit": git_commit(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if probe_gpus:
        env["gpus"], env["gpu_driver"], env["gpu_note"] = _gpus()
        if torch.cuda.is_available():
            env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["gpus"], env["gpu_driver"], env["gpu_note"] = None, None, "GPUs not probed (CPU-only run)"
    env["machine_id"] = machine_id(env)
    return env


#: Fields that identify the hardware alone, whether or not GPUs were probed: runs of one machine share a machine id.
MACHINE_FIELDS = ("hostname", "machine", "cpu_model", "cpu_count_logical", "memory_total_bytes")


def _short_hash(env: dict, keys) -> str:
    ident = {k: env.get(k) for k in keys}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def environment_id(env: dict) -> str:
    """A short stable hash of the machine- and software-identifying fields of `env`."""
    return _short_hash(env, FINGERPRINT_FIELDS)


def machine_id(env: dict) -> str:
    """A short stable hash of the hardware fields of `env`."""
    return _short_hash(env, MACHINE_FIELDS)


def machine_label(env: dict) -> str:
    """A short human name for a machine: its GPU if it has one, else its CPU, with the hostname."""
    gpus = env.get("gpus") or []
    hw = gpus[0]["name"] if gpus else (env.get("cpu_model") or env.get("machine") or "unknown CPU")
    return f"{hw} ({env.get('hostname')})"
