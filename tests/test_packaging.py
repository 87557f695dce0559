"""The distribution: a wheel built from the repo installs in a fresh venv and imports every part of the package."""
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IMPORT_EVERYTHING = r"""
import importlib, pkgutil, sys
import perfkit
site = sys.argv[1]
names = ["perfkit"]
for info in pkgutil.walk_packages(perfkit.__path__, "perfkit."):
    if not info.name.endswith("__main__"):
        names.append(info.name)
for name in names:
    module = importlib.import_module(name)
    assert module.__file__.startswith(site), (name, module.__file__)
for part in ("perfkit.kernels", "perfkit.studies", "perfkit.dashboards", "perfkit.backends"):
    assert part in names, part
print(len(names))
"""


def _setuptools_can_build() -> str | None:
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed"
    major = int(setuptools.__version__.split(".")[0])
    return None if major >= 77 else f"setuptools {setuptools.__version__} is older than the 77 the build needs"


@pytest.mark.skipif(_setuptools_can_build() is not None, reason=str(_setuptools_can_build()))
def test_wheel_installs_in_a_fresh_venv_and_imports_every_module(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    [wheel] = dist.glob("perfkit-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies (torch, pandas, ...) come from this test's environment, placed after the wheel's own files.
    Path(site, "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    imported = subprocess.run([str(python), "-c", IMPORT_EVERYTHING, site], cwd=tmp_path, env=clean_env,
                              capture_output=True, text=True, timeout=600)
    assert imported.returncode == 0, imported.stderr
    assert int(imported.stdout.strip()) > 15

    layers = subprocess.run([str(env_dir / "bin" / "perfkit"), "layers", "--format", "json"], cwd=tmp_path,
                            env=clean_env, capture_output=True, text=True, timeout=600)
    assert layers.returncode == 0, layers.stderr
    assert '"params": 60965224' in layers.stdout
