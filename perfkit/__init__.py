"""perfkit: GPU performance profiling and hardware studies built around AlexNet.

Importing perfkit never touches CUDA, NVML or Triton's GPU driver; those are probed only when a study asks for them.
"""
from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout kernels/, studies/ and dashboards/ sit beside perfkit/ (the design card's layout); a wheel
# installs them as perfkit/kernels/ and so on. Putting the checkout root on this package's path makes
# `perfkit.kernels` resolve in both, so a checkout also runs uninstalled (GPU machines that reach no package index).
_checkout_root = _Path(__file__).resolve().parent.parent
if (_checkout_root / "kernels" / "__init__.py").is_file() and not (_Path(__file__).parent / "kernels").is_dir():
    __path__.append(str(_checkout_root))  # noqa: F821 (module __path__)
