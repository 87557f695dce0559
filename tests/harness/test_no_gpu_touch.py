"""Importing perfkit and running the CPU study never touches NVML or CUDA.

The check runs in a fresh interpreter where `pynvml` is a module that raises on any attribute access, and torch's
CUDA initialisation and device queries raise. It imports every perfkit module, runs the baseline study's cases for two
layers (both passes, quick and full) through `run_study`, and the CLI's `layers` and `env` commands.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import sys, types

    # Every touch is recorded as well as raised: perfkit turns NVML failures into notes, which would hide a raise.
    TOUCHED = []

    class Poisoned(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):  # module introspection (inspect, pickle) asks for dunders: not a use of NVML
                raise AttributeError(name)
            TOUCHED.append(f"pynvml.{name}")
            raise RuntimeError(f"NVML touched: pynvml.{name}")

    sys.modules["pynvml"] = Poisoned("pynvml")

    import torch

    def boom(name):
        def f(*args, **kwargs):
            TOUCHED.append(f"torch.cuda.{name}")
            raise RuntimeError(f"CUDA touched: torch.cuda.{name}")
        return f

    for name in ("init", "_lazy_init", "is_available", "device_count", "current_device", "set_device",
                 "synchronize", "get_device_properties", "get_device_name", "reset_peak_memory_stats",
                 "max_memory_allocated", "max_memory_reserved", "empty_cache", "mem_get_info", "is_bf16_supported"):
        setattr(torch.cuda, name, boom(name))
    if hasattr(torch._C, "_cuda_init"):
        torch._C._cuda_init = boom("_C._cuda_init")

    import importlib
    from pathlib import Path
    import perfkit

    # every module of the perfkit package itself, and the studies (perfkit's __path__ also holds the checkout root,
    # so pkgutil.walk_packages would wander into it); __main__ runs the CLI when imported
    here = Path(perfkit.__file__).parent
    names = [".".join(("perfkit",) + p.relative_to(here).with_suffix("").parts) for p in here.rglob("*.py")
             if p.stem != "__main__"]
    names = [n.removesuffix(".__init__") for n in names]
    assert {"perfkit.measure.monitors", "perfkit.results.store", "perfkit.app.cli"} <= set(names), names
    names += ["perfkit.studies", "perfkit.studies.baseline"]
    for name in names:
        importlib.import_module(name)

    from perfkit.app.cli import main
    from perfkit.results.store import load_measurements, load_power_samples
    from perfkit.study import StudyOptions, run_study
    from perfkit.studies import baseline

    from dataclasses import replace

    def cases(options):
        return [c for c in baseline.cases(options) if c.layer in ("relu1", "pool1")]

    TwoLayers = replace(baseline.STUDY, cases=cases)

    store, mode = sys.argv[1], sys.argv[2]
    if mode == "self-check":  # the poison must notice perfkit loading NVML: building a GPU row's monitors does
        from perfkit.measure import monitors
        monitors.monitors_for("cuda:0")
        assert TOUCHED, "the poison did not notice NVML being loaded"
        print("POISON-WORKS")
        sys.exit(0)

    for quick in (True, False):
        result = run_study(TwoLayers, StudyOptions(devices=("cpu",), quick=quick, batch=2), store,
                           show_progress=False)
        assert result.rows_added == 4, result
    df = load_measurements(store)
    assert len(df) == 8 and (df.status == "ok").all(), df[["layer", "status", "note"]]
    assert df.energy_j.isna().all() or (df.energy_source == "rapl").any()
    assert load_power_samples(store).empty
    assert main(["layers", "--format", "json"]) == 0
    assert main(["env", "--format", "json"]) == 0
    assert not TOUCHED, TOUCHED
    print("NO-GPU-TOUCH-OK")
''')


def check(tmp_path, mode):
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "cpu.db"), mode], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])


def test_cpu_study_never_touches_nvml_or_cuda(tmp_path):
    proc = check(tmp_path, "study")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "NO-GPU-TOUCH-OK" in proc.stdout
    assert "touched" not in proc.stderr


def test_the_poison_notices_a_touch(tmp_path):
    """The check above would catch perfkit loading NVML (whose failure perfkit reports as a note, not an error)."""
    proc = check(tmp_path, "self-check")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "POISON-WORKS" in proc.stdout
