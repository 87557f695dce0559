"""Tables that studies keep in their summaries' data JSON (`Store.add_summary(run_id, study, text, data)`), as rows
with the machine and device they were measured on, and why a value the summary leaves empty was not measured.

A summary holds values computed from its own run's measured rows only, and None for what the run did not measure;
the sections draw None as missing (with the reason from the run's rows), never as 0.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from perfkit.dashboards.common import esc
from perfkit.dashboards.data import machine_short_names


def summary_items(data, study: str, key: str, summary_keys: Sequence[str] = ()) -> pd.DataFrame:
    """The dicts in list `key` (or the one dict `key`) of every summary of `study`, one row each, oldest summary
    first, with the summary's run_id, machine_id, machine (a short name), the summary-level values named in
    `summary_keys` (e.g. the variant) and, when the items name a device but not its model, device_name from the run's
    measurement rows."""
    s = data.summaries
    if s.empty:
        return pd.DataFrame()
    s = s[s.study == study].sort_values("created_at", kind="stable")
    runs = data.runs.set_index("run_id") if len(data.runs) else pd.DataFrame()
    short = machine_short_names(data.environments.values())
    items = []
    for _, summary in s.iterrows():
        listed = summary.data.get(key) if isinstance(summary.data, dict) else None
        listed = [listed] if isinstance(listed, dict) else listed
        if not isinstance(listed, list):
            continue
        machine_id = runs.machine_id.get(summary.run_id) if len(runs) else None
        machine = short.get(machine_id) or (runs.machine.get(summary.run_id) if len(runs) else None) or "?"
        shared = {k: summary.data.get(k) for k in summary_keys}
        items += [{**shared, **item, "run_id": summary.run_id, "machine_id": machine_id, "machine": machine}
                  for item in listed if isinstance(item, dict)]
    df = pd.DataFrame(items)
    if len(df) and "device" in df and "device_name" not in df:
        df["device_name"] = [_device_name(data, r.run_id, r.device) for r in df.itertuples()]
    return df


def has_summary(data, study: str) -> bool:
    return not data.summaries.empty and (data.summaries.study == study).any()


def run_rows(data, run_ids) -> pd.DataFrame:
    """The measurement rows of the given runs (for what they did not measure, and why)."""
    m = data.measurements
    return m[m.run_id.isin(list(run_ids))] if len(m) else m


def _device_name(data, run_id: str, device: str):
    m = data.measurements
    if m.empty:
        return None
    names = m[(m.run_id == run_id) & (m.device == device)].device_name.dropna()
    return names.iloc[0] if len(names) else None


def where_label(row, several_machines: bool) -> str:
    """'CPU' or the GPU's name (its device string when unnamed), after the machine's short name when the items come
    from several machines."""
    device, name = str(row["device"]), row.get("device_name")
    here = "CPU" if device == "cpu" else str(name) if isinstance(name, str) and name else device
    return f"{row['machine']} · {here}" if several_machines else here


def why_not_measured(data, run_id: str, **fields) -> str:
    """Why run `run_id` has no ok row matching `fields` (column=value, or column=list of values): the status and note
    of its matching rows that were not measured, or that it stored no such row."""
    m = data.measurements
    if m.empty:
        return "no measurement rows in these stores"
    rows = m[m.run_id == run_id]
    for column, value in fields.items():
        rows = rows[rows[column].isin(value if isinstance(value, (list, tuple, set)) else [value])]
    bad = rows[rows.status != "ok"]
    if len(bad):
        return "; ".join(dict.fromkeys(f"{r.status}: {r.note}" if isinstance(r.note, str) and r.note else r.status
                                       for r in bad.itertuples()))
    if rows.empty:
        return "not in this run's cases"
    return "measured rows lack this value"


def runs_of(items: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(items.run_id)) if len(items) else []


def missing_note(count: int, what: str) -> str:
    """A caption sentence for values a figure leaves out because they were not measured."""
    return (f"{count} {esc(what)} not measured: not drawn (never as 0); the table below says why." if count else "")
