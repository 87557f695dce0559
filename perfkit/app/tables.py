"""Plain-text tables and number formatting for the CLI and the study summaries."""
from __future__ import annotations

import math
from typing import Callable, Sequence


def as_number(value) -> float | None:
    """A float, or None for anything missing: None, NaN, pandas' NA, text."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def ratio(a, b) -> float | None:
    """a / b, or None when a is missing or b is missing or zero."""
    return a / b if a is not None and b else None


def geomean(values, positive_only: bool = False) -> float | None:
    """The geometric mean of the values that are set (neither None nor zero), None when there are none. With
    `positive_only`, negative, infinite and NaN values are left out too (the campaign's headlines); without it they
    reach the logarithm (the backends study's summary)."""
    kept = [v for v in values if v and (not positive_only or (v > 0 and math.isfinite(v)))]
    return math.exp(sum(math.log(v) for v in kept) / len(kept)) if kept else None


def fmt_speedup(value) -> str:
    """A speedup with two decimals: 1.23x; None -> '-'."""
    return "-" if value is None else f"{value:.2f}x"


def fmt_times(value) -> str:
    """A large ratio with a thousands separator and one decimal: 1,234.5x (the GPU-vs-CPU ratios)."""
    return f"{value:,.1f}x"


def fmt_si(value, unit: str = "", digits: int = 3) -> str:
    """1.23e9 -> '1.23 G' + unit; missing -> '-'."""
    value = as_number(value)
    if value is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}".rstrip()


def fmt_ms(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1e3:.3f}"


def fmt_num(value, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, Callable | None]]) -> str:
    """Columns are (key, header, formatter); numbers right-aligned, text left-aligned."""
    cells = [[(fmt(row.get(key)) if fmt else ("-" if row.get(key) is None else str(row.get(key))))
              for key, _, fmt in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(_looks_numeric(r[i]) for r in cells) and bool(cells) for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _looks_numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("%", "").replace("x", "").split(" ")[0]
    if stripped in ("-", ""):
        return True
    try:
        float(stripped)
        return True
    except ValueError:
        return False
