"""Cases: one measurement each, with a stable key, and grids that make them."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

from perfkit.specs import DEFAULT_VARIANT

#: The `layer` of a case that runs the whole network.
NETWORK = "network"
#: The `layer` of a case that runs AlexNet's training augmentation of a batch (perfkit.workloads.augment), not a layer.
AUGMENT = "augment"


@dataclass(frozen=True)
class Case:
    """What to measure: a layer (or the whole network) of a variant, on a backend, device and dtype, at a batch size,
    for one pass. `threads` is the CPU thread count (None: torch's default). `options` carries study-specific knobs as
    sorted (name, value) pairs, e.g. (("hot_cache", True),); they are part of the key."""

    variant: str = DEFAULT_VARIANT
    layer: str = NETWORK
    backend: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 1
    pass_name: str = "forward"
    activation: str = "relu"
    threads: int | None = None
    options: tuple[tuple[str, object], ...] = ()

    @property
    def key(self) -> str:
        """Stable identity within a run, e.g. `alexnet2012/conv1/torch/cpu/float32/b8/forward/relu/t2`."""
        parts = [self.variant, self.layer, self.backend, self.device, self.dtype, f"b{self.batch}", self.pass_name,
                 self.activation, f"t{self.threads}" if self.threads else "t-"]
        parts += [f"{k}={v}" for k, v in self.options]
        return "/".join(parts)

    def option(self, name: str, default=None):
        return dict(self.options).get(name, default)

    @property
    def label(self) -> str:
        """Short text for progress lines."""
        threads = f" {self.threads}t" if self.threads else ""
        return (f"{self.layer} {self.pass_name} {self.backend} {self.device}{threads} {self.dtype} b{self.batch}")


CASE_FIELDS = tuple(f.name for f in fields(Case))


def grid(**axes) -> list[Case]:
    """Every combination of the given axes (each a value or a sequence of values), as cases.

    grid(layer=["conv1", "network"], pass_name=["forward", "train_step"], batch=8) -> 4 cases."""
    unknown = set(axes) - set(CASE_FIELDS)
    if unknown:
        raise ValueError(f"unknown case fields: {', '.join(sorted(unknown))}")
    names = list(axes)
    values = [v if isinstance(v, (list, tuple)) and name != "options" else [v] for name, v in axes.items()]
    return [Case(**dict(zip(names, combo))) for combo in itertools.product(*values)]
