"""Studies: one module each, with its grid of cases and its summary. Registered here, in one place.

A study module defines NAME, DESCRIPTION, `cases(options) -> list[perfkit.cases.Case]` and
`summarize(df, options) -> perfkit.study.Summary`; optionally `timing(options) -> perfkit.timer.TimingPolicy`.
Adding a study: write the module, add it to `_MODULES`.
"""
from __future__ import annotations

from perfkit.studies import baseline

_MODULES = (baseline,)

STUDIES = {module.NAME: module for module in _MODULES}

#: What `perfkit run` runs, in order.
DEFAULT_STUDIES = ("baseline",)


def get_study(name: str):
    try:
        return STUDIES[name]
    except KeyError:
        raise ValueError(f"unknown study {name!r}; expected one of {', '.join(STUDIES)}") from None
