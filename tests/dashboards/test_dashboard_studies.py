"""The ingredients, augmentation and multigpu sections: present with their figures when the study's summary is in the
stores, absent when it is not, and a value the run did not measure is never drawn (or written) as 0.

The GPU store is FABRICATED (dash_fixtures, dash_study_fixtures); the CPU store is a real measurement."""
from __future__ import annotations

import sqlite3

import pytest

from dash_study_fixtures import INGREDIENT_MISSING, NOT_MEASURED_NOTE, summary_json

NEW_SECTIONS = {"ingredients": ["ingredients-time", "ingredients-memory"], "augmentation": ["augmentation-rates"],
                "multigpu": ["multigpu-scaling"]}


def section(report, section_id):
    return next((s for s in report.sections if s.id == section_id), None)


def figure_named(report, name):
    return next(f for f in report.figures if f.name == name)


def test_each_section_has_its_figures_after_activations(full_report):
    ids = [s.id for s in full_report.sections]
    assert ids.index("activations") < ids.index("ingredients") < ids.index("augmentation") < ids.index("multigpu")
    for section_id, names in NEW_SECTIONS.items():
        assert [f.name for f in section(full_report, section_id).figures] == names
        for name in names:
            fig = figure_named(full_report, name).fig
            assert "FABRICATED FIXTURE GPU" in fig.layout.title.subtitle.text, name  # the machine it came from


def test_sections_are_absent_without_their_summaries(tmp_path, gpu_store):
    from perfkit.dashboards import build
    from perfkit.results.store import merge

    path = tmp_path / "no-summaries.db"
    merge(path, [gpu_store])
    con = sqlite3.connect(path)
    with con:
        con.execute("DELETE FROM summaries WHERE study IN ('ingredients', 'augmentation', 'multigpu')")
    con.close()
    report = build([path])
    assert all(section(report, s) is None for s in NEW_SECTIONS)  # their rows alone do not make the sections
    assert section(report, "activations") is not None


def test_unmeasured_ingredient_share_is_missing_not_zero(full_report, gpu_store):
    backend, pass_name, ingredient = INGREDIENT_MISSING
    rows = summary_json(gpu_store, "ingredients")["rows"]
    missing = next(r for r in rows if (r["backend"], r["pass"], r["ingredient"]) == INGREDIENT_MISSING)
    assert missing["share"] is None and missing["memory_share"] is None  # the study stored it as not measured
    for name in ("ingredients-time", "ingredients-memory"):
        trace = next(t for t in figure_named(full_report, name).fig.data if t.name.startswith("local response"))
        at = [i for i, (config, p) in enumerate(zip(*trace.x)) if "Triton" in config and p == "backward"]
        assert len(at) == 1 and trace.y[at[0]] is None, name
        assert sum(1 for y in trace.y if y is None) == 1
    html = full_report.to_html()
    assert "Ingredient shares not measured" in html and NOT_MEASURED_NOTE in html


def test_unmeasured_augmentation_kernel_has_no_bar(full_report):
    fig = figure_named(full_report, "augmentation-rates").fig
    bars = next(t for t in fig.data if t.type == "bar")
    assert all(v > 0 for v in bars.x) and not any("bfloat16" in label for label in bars.y)
    marks = [a for a in fig.layout.annotations if "not measured" in a.text]
    assert len(marks) == 1 and "bfloat16 channels_last" in marks[0].y and NOT_MEASURED_NOTE in marks[0].hovertext
    assert any("train step" in (s.name or "") for s in fig.layout.shapes)  # the rate the augmentation must feed


def test_speedup_without_a_baseline_is_not_computed(full_report):
    fig = figure_named(full_report, "multigpu-scaling").fig
    strong = [t for t in fig.data if "(strong)" in (t.name or "") and t.xaxis == "x2"]
    assert len(strong) == 1 and list(strong[0].y) == [None]
    assert any(t.name == "linear speedup (ideal)" for t in fig.data)
    html = full_report.to_html()
    assert "Speedups not computed" in html and NOT_MEASURED_NOTE in html  # the skipped 8-rank case, with its reason


def test_cpu_only_summaries_say_what_was_not_measured(tmp_path, cpu_store):
    """A CPU-only run: no GPU train step (so no CPU-feeds-GPU ratio) and no CPU memory comparison, said as such."""
    from perfkit.dashboards import build
    from perfkit.results.store import Store, merge
    from perfkit.studies.augmentation import verdict

    path = tmp_path / "cpu-summaries.db"
    merge(path, [cpu_store])
    aug = [{"device": "cpu", "device_name": None, "backend": "torch", "threads": t, "batch": 128, "input": "uint8",
            "layout": "nchw", "dtype": "float32", "plain": True, "images_per_s": rate, "time_s": 128 / rate,
            "error_rel": 1e-7} for t, rate in ((1, 500.0), (2, 800.0))]
    ingredient = {"device": "cpu", "backend": "torch", "pass": "forward", "batch": 4, "ingredient": "lrn",
                  "what": "local response normalization (removed)", "ablated": "alexnet2012-nolrn", "full_s": 0.2,
                  "ablated_s": 0.15, "cost_s": 0.05, "share": 0.25, "layers_s": None, "layers_share": None,
                  "full_memory_bytes": None, "ablated_memory_bytes": None, "memory_bytes": None,
                  "memory_share": None, "memory_kind": None}
    with Store.open(path) as store:
        run_id = store.con.execute("SELECT run_id FROM runs LIMIT 1").fetchone()[0]
        store.add_summary(run_id, "augmentation", "x", {"augment": aug, "train": [], "verdict": verdict(aug, [])})
        store.add_summary(run_id, "ingredients", "x", {"variant": "alexnet2012", "rows": [ingredient]})
    report = build([path])
    aug_section, ingredients = section(report, "augmentation"), section(report, "ingredients")
    html = report.to_html()
    assert "needs a GPU train step: none measured" in html
    verdict_table = next(b for b in aug_section.blocks if getattr(b, "title", "") == "Can the CPU feed the GPU?")
    assert verdict_table.rows[0][3] == "not measured" and verdict_table.rows[0][7] == "not measured"
    assert [f.name for f in ingredients.figures] == ["ingredients-time"]  # no memory figure: CPU memory not compared
    assert "Memory is not compared on the CPU" in html
    hover = ingredients.figures[0].fig.data[0].hovertext[0]
    assert "its layers timed alone: <b>not measured</b>" in hover


@pytest.mark.parametrize("section_id", list(NEW_SECTIONS))
def test_sections_render_in_chromium(section_id, full_report, tmp_path, chromium):
    """Only the new section's figures, drawn by plotly.js in a real browser without errors."""
    from dash_cdp import Chromium
    from perfkit.dashboards.report import Report

    report = Report(full_report.data, [section(full_report, section_id)])
    html = report.write_html(tmp_path / f"{section_id}.html")
    with Chromium(chromium, width=1400, height=1000, log_path=str(tmp_path / "chromium.log")) as browser:
        page = browser.open(html.resolve().as_uri(), offline=True)
        drawn = ("[...document.querySelectorAll('figure.pk-figure')].filter(f => "
                 "f.querySelector('.js-plotly-plot .main-svg .trace')).length")
        page.wait_for(f"{drawn} >= {len(report.figures)}", timeout=90)
        browser.pump(0.5)
        assert page.errors() == [], page.errors()
