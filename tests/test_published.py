"""The published figures: every number copied from REFERENCE.md is there, every derived one says how."""
import os
import re
from pathlib import Path

import pytest

from perfkit.app.published import FIGURES, cite, figure


#: The published figures, as the project's REFERENCE.md gives them (a copy kept with the tests; PERFKIT_REFERENCE_MD
#: points elsewhere, to check a newer one).
REFERENCE_MD = Path(os.environ.get("PERFKIT_REFERENCE_MD") or Path(__file__).parent / "data" / "REFERENCE.md")


def _renderings(value: float, unit: str) -> set[str]:
    """How REFERENCE.md may write a value: as is, with thousands separators, with an SI prefix, a fraction as a
    percentage, seconds as milliseconds."""
    out = {f"{value:g}", f"{value:,g}"}
    if float(value).is_integer():
        out.add(f"{value:,.0f}")
    for scale, suffix in ((1e12, ""), (1e9, ""), (1e6, "M"), (1e3, "")):
        if value >= scale / 10:  # 0.714 G as well as 714M
            out.add(f"{value / scale:g}{suffix}")
    if unit == "fraction":
        out.add(f"{value * 100:g}")
    if unit == "s":
        out.add(f"{value * 1e3:g}")
    return out - {"0"}


def test_every_published_number_is_in_reference_md():
    numbers = set(re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?M?", REFERENCE_MD.read_text()))
    for f in FIGURES.values():
        if f.derived:
            continue
        for value in (f.value if isinstance(f.value, tuple) else (f.value,)):
            assert _renderings(value, f.unit) & numbers, f"{f.key}: {value} not found in REFERENCE.md"


def test_derived_figures_say_how_they_were_derived():
    for f in FIGURES.values():
        if f.derived:
            assert f.note, f"{f.key} is derived but does not say how"
    assert figure("convnet_benchmarks_cpu_vs_cudnn").value == pytest.approx(4920 / 81)
    assert figure("paper_images_per_s").low == pytest.approx(90 * 1.2e6 / (6 * 86400), rel=0.01)


def test_every_figure_has_a_source_and_citations_name_it():
    for f in FIGURES.values():
        assert f.source and f.unit and f.what, f.key
    assert "NIPS 2012" in cite("paper_training_days") and "5-6 days" in cite("paper_training_days")
    with pytest.raises(KeyError, match="no published figure"):
        figure("moore_law")
