"""Studies: one module each, with its grid of cases and its summary. Registered here, in one place.

A study module defines NAME, DESCRIPTION, `cases(options) -> list[perfkit.cases.Case]` and
`summarize(df, options) -> perfkit.study.Summary`; optionally `timing(options) -> perfkit.timer.TimingPolicy`.
Adding a study: write the module, add it to `_MODULES`.
"""
from __future__ import annotations

from perfkit.studies import (activations, augmentation, backends, baseline, batch, energy, headline, ingredients,
                             multigpu, precision, roofline, speedup2012, train_time)

_MODULES = (baseline, headline, speedup2012, backends, batch, precision, energy, roofline, train_time, activations,
            ingredients, augmentation, multigpu)

STUDIES = {module.NAME: module for module in _MODULES}

#: What `perfkit run` runs, in order, on a machine (or a --device choice) without a GPU: the CPU baseline, every layer
#: and the whole network, forward and train_step (a couple of minutes with --quick on a 2-core machine).
CPU_DEFAULT_STUDIES = ("baseline",)
#: ... and with a GPU: every study in its GPU form (speedup2012 and train_time also measure the CPU).
GPU_DEFAULT_STUDIES = ("headline", "speedup2012", "backends", "batch", "precision", "energy", "roofline", "train_time",
                       "activations", "ingredients", "augmentation", "multigpu")
#: Kept for callers that want one list: the CPU default.
DEFAULT_STUDIES = CPU_DEFAULT_STUDIES


def default_studies(devices) -> tuple[str, ...]:
    """The studies `perfkit run` runs for resolved devices ("cpu", "cuda:0", ...)."""
    return GPU_DEFAULT_STUDIES if any(d.startswith("cuda") for d in devices) else CPU_DEFAULT_STUDIES


def get_study(name: str):
    try:
        return STUDIES[name]
    except KeyError:
        raise ValueError(f"unknown study {name!r}; expected one of {', '.join(STUDIES)}") from None
