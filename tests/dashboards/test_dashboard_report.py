"""The report's sections, figures and HTML, from a real CPU store and a fabricated GPU store."""
from __future__ import annotations

import math
import re
import sys

import pytest

from dash_fixtures import FIXTURE_GPU_NAME, INCORRECT_SENTINEL_S
from perfkit.dashboards import published as ref
from perfkit.dashboards.common import BACKEND_COLORS, FLOPS_CONVENTION

ALL_SECTIONS = ["overview", "layers", "speedup", "backends", "sweeps", "roofline", "energy", "train-time",
                "activations", "ingredients", "augmentation", "multigpu", "machines", "regression"]


def section_ids(report):
    return [s.id for s in report.sections]


def test_cpu_store_shows_what_it_has_and_nothing_else(cpu_report):
    ids = section_ids(cpu_report)
    # CPU rows carry their roofline (measured CPU peaks) but no energy: there is no counter to read here
    assert ids == ["overview", "layers", "speedup", "backends", "roofline", "train-time"]
    names = [f.name for f in cpu_report.figures]
    assert "overview-network-throughput" in names and "layers-forward" in names and "layers-train_step" in names
    assert "train-time-days" in names and "backends-correctness" in names
    assert any(n.startswith("roofline") for n in names)
    assert not any(n.startswith(("energy", "sweeps", "machines", "regression")) for n in names)


def test_full_report_has_every_section(full_report):
    assert section_ids(full_report) == ALL_SECTIONS
    assert len({f.name for f in full_report.figures}) == len(full_report.figures)  # unique names


def test_merged_store_compares_machines(merged_store):
    from perfkit.dashboards import build

    report = build([merged_store])
    assert "machines" in section_ids(report)
    html = report.to_html()
    assert FIXTURE_GPU_NAME in html and "machines" in html


def test_html_is_self_contained_with_plotly_inlined_once(cpu_report):
    html = cpu_report.to_html()
    assert html.count('id="plotlyjs"') == 1
    import plotly

    banner = re.search(r"plotly\.js v\d+\.\d+\.\d+", html)
    assert banner and html.count(banner.group(0)) == 1, "plotly.js must be inlined exactly once"
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I), "no external scripts"
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?(https?:)?//", html, re.I), "no external stylesheets"
    assert not re.search(r"<(img|iframe)[^>]*src\s*=\s*[\"']?https?:", html, re.I)
    n = len(cpu_report.figures)
    assert f'data-perfkit-figures="{n}"' in html
    assert html.count('class="pk-figure"') == n
    assert html.count("Plotly.newPlot(") == n
    assert plotly.__version__  # plotly.py present; its plotly.js is the one inlined


def test_every_figure_says_where_its_data_came_from(cpu_report, cpu_store):
    from perfkit.dashboards.data import load

    data = load([cpu_store])
    env = next(iter(data.environments.values()))
    commit = data.measurements.git_commit.dropna().iloc[0][:7]
    for block in cpu_report.figures:
        layout = block.fig.layout
        assert layout.title.text, block.name
        subtitle = layout.title.subtitle.text or ""
        if block.name.startswith("regression"):
            continue
        assert env.label in subtitle and env.get("torch") in subtitle and commit in subtitle, block.name
        assert "triton" in subtitle, block.name
        assert env.label in block.caption and env.get("torch") in block.caption


def test_value_axes_have_titles_with_units_and_flops_convention_is_stated(full_report):
    for block in full_report.figures:
        layout = block.fig.layout
        axes = [layout[k] for k in layout.to_plotly_json() if re.fullmatch(r"[xy]axis\d*", k)]
        titles = [a.title.text for a in axes if a.title and a.title.text]
        assert any(re.search(r"\([^)]+\)", t) for t in titles), (block.name, titles)
    roof = [f for f in full_report.figures if f.name.startswith("roofline")]
    assert roof and FLOPS_CONVENTION in roof[0].fig.layout.yaxis.title.text
    assert FLOPS_CONVENTION in full_report.to_html()


def _numbers(obj):
    """Every number in a figure's JSON (data and layout)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _numbers(v)
    elif hasattr(obj, "tolist"):
        yield from _numbers(obj.tolist())
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield float(obj)


def test_incorrect_rows_are_never_plotted_as_speed(full_report):
    forbidden = {INCORRECT_SENTINEL_S, INCORRECT_SENTINEL_S * 1e3, 128 / INCORRECT_SENTINEL_S}
    for block in full_report.figures:
        for trace in block.fig.data:
            for value in _numbers(trace.to_plotly_json()):
                assert not any(math.isclose(value, f, rel_tol=1e-9) for f in forbidden), \
                    f"{block.name}: an incorrect row's time is plotted"
    # ... but they are shown, as incorrect: in the correctness figure and in the tables
    correctness = next(f for f in full_report.figures if f.name == "backends-correctness")
    assert any(t.name and t.name.startswith("incorrect") for t in correctness.fig.data)
    html = full_report.to_html()
    assert ">incorrect</span>" in html and "error 0.21 &gt; tolerance 0.0001" in html


def test_reference_marks_are_the_published_figures(full_report):
    values = {v for r in ref.ALL for v in (r.low, r.high) if v is not None}
    marks = 0
    for block in full_report.figures:
        for shape in block.fig.layout.shapes:
            if shape.name and shape.name.startswith("published:"):
                marks += 1
                coords = {shape.y0, shape.y1} if shape.xref and "domain" in shape.xref else {shape.x0, shape.x1}
                assert coords <= values, (block.name, shape.name, coords)
    assert marks >= 8


def test_backend_colours_are_consistent(full_report):
    seen = 0
    for block in full_report.figures:
        for trace in block.fig.data:
            name = (trace.name or "").lower()
            color = getattr(getattr(trace, "marker", None), "color", None)
            if trace.type == "bar" and isinstance(color, str) and name.startswith(("triton", "torch.compile")):
                backend = "triton" if name.startswith("triton") else "compile"
                assert color == BACKEND_COLORS[backend], (block.name, trace.name, color)
                seen += 1
    assert seen >= 6


def test_energy_and_throttling_are_shown(full_report):
    energy = next(s for s in full_report.sections if s.id == "energy")
    names = [f.name for f in energy.figures]
    assert names[0] == "energy-per-image" and any(n.startswith("energy-power") for n in names)
    power = next(f for f in energy.figures if f.name.startswith("energy-power"))
    throttled = [t for t in power.fig.data if t.name and "power/thermal limit" in t.name]
    assert len(throttled) == 1
    per_image = energy.figures[0].fig
    assert any("throttled" in str(t.text) for t in per_image.data)


def test_activation_curves_and_ratio(full_report):
    section = next(s for s in full_report.sections if s.id == "activations")
    assert [f.name for f in section.figures] == ["activations-epoch", "activations-wall_s", "activations-kernels"]
    html = full_report.to_html()
    assert "tanh / ReLU epochs" in html and "25% training error" in html


def test_malformed_curves_are_reported_not_fatal(tmp_path, cpu_store):
    from perfkit.dashboards import build
    from perfkit.results.store import Store, merge

    path = tmp_path / "curves.db"
    merge(path, [cpu_store])
    with Store.open(path) as store:
        run_id = store.con.execute("SELECT run_id FROM runs LIMIT 1").fetchone()[0]
        store.add_summary(run_id, "activations", "x", {"curves": [{"activation": "relu", "epoch": 1}]})
    report = build([path])
    section = next(s for s in report.sections if s.id == "activations")
    assert "missing train_error, wall_s, dataset" in report.to_html() and not section.figures


def test_regression_history_from_real_benchmark_files(full_report):
    section = next(s for s in full_report.sections if s.id == "regression")
    history = section.figures[0].fig
    assert len(history.data) == 3 and all(len(t.x) == 2 for t in history.data)


def test_empty_store_gives_an_empty_report(tmp_path):
    from perfkit.dashboards import build
    from perfkit.results.store import Store

    Store.open(tmp_path / "empty.db").close()
    report = build([tmp_path / "empty.db"])
    assert report.figures == [] and "No data" in report.to_html()


def test_build_report_writes_the_file(tmp_path, cpu_store):
    from perfkit.dashboards import build_report

    out = build_report(cpu_store, tmp_path / "sub" / "r.html")
    assert out == tmp_path / "sub" / "r.html" and out.stat().st_size > 1_000_000


def test_without_plotly_a_clear_message(monkeypatch, tmp_path, cpu_store):
    import perfkit.dashboards as dashboards

    monkeypatch.setitem(sys.modules, "plotly", None)
    with pytest.raises(dashboards.MissingDependencyError, match=r"pip install 'perfkit\[dashboards\]'"):
        dashboards.build_report([cpu_store], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_hover_text_carries_exact_values_with_units(cpu_report, cpu_store):
    from perfkit.dashboards.data import load

    forward = next(f for f in cpu_report.figures if f.name == "layers-forward").fig
    ok = load([cpu_store]).ok
    conv1 = ok[(ok.layer == "conv1") & (ok.pass_name == "forward")].iloc[-1]
    # the configuration that measured conv1 (stock eager on all threads; the CPU baselines cover a few layers only):
    # a bar per configuration, or with many configurations a heatmap row per configuration
    trace = forward.data[0]
    rows = trace.hovertext if trace.type == "heatmap" else [trace.hovertext]
    column = list(trace.x).index("conv1")
    text = next(row[column] for row in rows if "not measured" not in row[column])
    # the exact median, to 6 significant digits, in the unit its size calls for
    shown = re.search(r"median time: <b>([\d.]+) (s|ms|µs|ns) ", text)
    assert shown, text
    scale = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}[shown.group(2)]
    assert float(shown.group(1)) * scale == pytest.approx(conv1.time_median_s, rel=1e-5)
    for unit in ("images/s", "FLOP/s", "p10", "p90", "reps", f"{conv1.batch} images", "rel. error vs float64",
                 "machine"):
        assert unit in text, unit


def test_a_failing_section_does_not_cost_the_report(monkeypatch, cpu_store):
    from perfkit.dashboards import build, layers

    def broken(data):
        raise KeyError("some_new_column")

    monkeypatch.setattr(layers, "build", broken)
    report = build([cpu_store])
    ids = section_ids(report)
    assert "failed-layers" in ids and "overview" in ids and "train-time" in ids
    assert "KeyError" in report.to_html()


def test_regression_section_plots_the_last_ab_check(tmp_path, gpu_store):
    """`perfkit bench check` leaves its verdict in the history folder; the section draws each gated benchmark's ratio
    with its range and limit, coloured by verdict, and lists what was not gated. The file is no pytest-benchmark run."""
    import json

    from perfkit.app import benchgate
    from perfkit.dashboards import build

    def rounds(times):
        return [{"benchmarks": [{"fullname": f"t.py::test[{k}]", "stats": {"min": v}, "extra_info": {"batch": 10}}
                                for k, v in times.items()]} for _ in range(2)]

    base = {"conv2": 0.04, "fc6": 0.02, "relu3": 1e-4}
    result = benchgate.ab_compare(rounds(dict(base, conv2=0.052, pool9=0.01)), rounds(base))
    (tmp_path / "ab-check.json").write_text(json.dumps(
        benchgate.ab_summary(result) | {"side_a": "working tree", "side_b": "reference 1234567", "reference": "1" * 40}))
    report = build([gpu_store], benchmarks_dir=tmp_path)
    section = next(s for s in report.sections if s.id == "regression")
    figure = next(f for f in section.figures if f.name == "regression-ab-check")
    traces = {t.name: t for t in figure.fig.data}
    assert list(traces["regressed"].y) == ["test[conv2]"] and traces["regressed"].x[0] == pytest.approx(1.3)
    assert sorted(traces["ok"].y) == ["test[fc6]", "test[relu3]"] and len(traces["limit"].x) == 3
    assert figure.caption.startswith("FAILED") and "test[pool9] (new" in figure.caption
    assert report.data.ab_check["reference"] == "1" * 40
    assert not any("ab-check.json" in note for note in report.data.notes)


def test_regression_section_lists_the_committed_per_machine_baselines(tmp_path, gpu_store):
    from perfkit.dashboards import build
    from perfkit.dashboards.data import load_baselines

    baselines = load_baselines()
    assert [path.name for path, _ in baselines] == ["cpu.json"]  # tests/benchmarks/baselines/ of this checkout
    report = build([gpu_store], benchmarks_dir=tmp_path)  # an empty history folder: the table alone
    section = next(s for s in report.sections if s.id == "regression")
    table = next(b for b in section.blocks if getattr(b, "title", "").startswith("Per-machine baselines"))
    machine = baselines[0][1]["perfkit_baseline"]["machine"]
    assert table.rows[0][0] == "cpu.json" and table.rows[0][2] == machine["cpu_family_model"]
