"""Studies: one module each, with its grid of cases and its summary. Registered here, in one place.

A study module defines `cases(options) -> list[perfkit.cases.Case]` and `summarize(df, options) ->
perfkit.study.Summary`, and ends with `STUDY = perfkit.study.Study(name=..., description=..., cases=cases,
summarize=summarize, ...)`, which also declares its optional hooks (timing, quick_energy, measure_case, run_cases) and
its own command-line options (cli_options). `STUDIES` maps each name to its Study.
Adding a study: write the module, add it to `_MODULES`.
"""
from __future__ import annotations

from perfkit.study import Study
from perfkit.studies import (activations, augmentation, backends, baseline, batch, energy, headline, ingredients,
                             multigpu, precision, roofline, speedup2012, train_time)

_MODULES = (baseline, headline, speedup2012, backends, batch, precision, energy, roofline, train_time, activations,
            ingredients, augmentation, multigpu)


def _register(studies) -> dict[str, Study]:
    """name -> Study, in order; a name or a command-line option declared twice is a mistake caught at import."""
    out: dict[str, Study] = {}
    flags: dict[str, str] = {}
    for study in studies:
        if study.name in out:
            raise ValueError(f"two studies are named {study.name!r}")
        for option in study.cli_options:
            if option.flag in flags:
                raise ValueError(f"{option.flag} is declared by the {flags[option.flag]} and {study.name} studies")
            flags[option.flag] = study.name
        out[study.name] = study
    return out


#: name -> Study, in the order `perfkit study --list` shows them.
STUDIES: dict[str, Study] = _register(module.STUDY for module in _MODULES)

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


def get_study(name: str) -> Study:
    try:
        return STUDIES[name]
    except KeyError:
        raise ValueError(f"unknown study {name!r}; expected one of {', '.join(STUDIES)}") from None


def study_option_owner(flag: str) -> Study | None:
    """The study that declares the command-line option `flag` ("--cifar10"), or None."""
    return next((s for s in STUDIES.values() if s.cli_option(flag) is not None), None)
