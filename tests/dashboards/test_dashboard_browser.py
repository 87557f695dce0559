"""The report in a real browser: headless Chromium (Debian's `chromium`) opens it with the network off, logs no
JavaScript error, makes no network request, and draws every figure the report declares. Screenshots are saved under
$PERFKIT_TEST_ARTIFACTS (default tests/artifacts/).

Chromium is driven over the DevTools protocol through a pipe (tests/dashboards/dash_cdp.py, standard library only).
Without Chromium these tests skip, saying so; CI installs it.
"""
from __future__ import annotations

from contextlib import contextmanager

import pytest

from dash_cdp import Chromium

#: A figure counts as drawn when plotly.js has put at least one trace (or a heatmap image) into its SVG.
DRAWN = ".js-plotly-plot .main-svg .trace, .js-plotly-plot .main-svg .hm image"
COUNT_DRAWN = f"[...document.querySelectorAll('figure.pk-figure')].filter(f => f.querySelector('{DRAWN}')).length"
RENDERED = """(() => {
  const figs = [...document.querySelectorAll('figure.pk-figure')];
  const drawn = figs.filter(f => f.querySelector('%s') !== null);
  return {declared: Number(document.body.dataset.perfkitFigures), figures: figs.length, drawn: drawn.length,
          missing: figs.filter(f => !drawn.includes(f)).map(f => f.dataset.figure),
          plots: document.querySelectorAll('.js-plotly-plot').length};
})()""" % DRAWN


@contextmanager
def open_report(chromium_path, html_path, log_path, width=1400):
    """The report open in a fresh headless Chromium with the network off, once every declared figure is drawn (or
    90 s have passed)."""
    with Chromium(chromium_path, width=width, height=1000, log_path=str(log_path)) as browser:
        page = browser.open(html_path.resolve().as_uri(), offline=True)
        declared = page.evaluate("Number(document.body.dataset.perfkitFigures)")
        page.wait_for(f"{COUNT_DRAWN} >= {declared}", timeout=90)
        browser.pump(0.5)  # late console messages
        yield page


def check_page(page, report):
    state = page.evaluate(RENDERED)
    n = len(report.figures)
    assert state["declared"] == n and state["figures"] == n, state
    assert state["drawn"] == n and not state["missing"], state
    assert state["plots"] == n, state
    assert page.errors() == [], page.errors()
    external = [u for u in page.requests() if not u.startswith(("file:", "data:", "blob:", "about:"))]
    assert external == [], external
    # every figure is the one the report built, in order
    names = page.evaluate("[...document.querySelectorAll('figure.pk-figure')].map(f => f.dataset.figure)")
    assert names == [f.name for f in report.figures]


@pytest.mark.parametrize("which", ["cpu", "full"])
def test_report_renders_in_chromium_offline(which, request, tmp_path, chromium, artifacts_dir):
    report = request.getfixturevalue("cpu_report" if which == "cpu" else "full_report")
    html = report.write_html(tmp_path / f"report-{which}.html")
    with open_report(chromium, html, tmp_path / "chromium.log") as page:
        check_page(page, report)
        shot = page.screenshot(artifacts_dir / f"dashboard-{which}.png", full_page=(which == "cpu"))
    assert shot.stat().st_size > 50_000


def test_report_is_readable_on_a_narrow_screen(tmp_path, chromium, cpu_report, artifacts_dir):
    """On a laptop-sized or narrower window the contents move above the sections and nothing overflows sideways."""
    html = cpu_report.write_html(tmp_path / "report.html")
    with open_report(chromium, html, tmp_path / "chromium.log", width=900) as page:
        check_page(page, cpu_report)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        page.screenshot(artifacts_dir / "dashboard-cpu-narrow.png", full_page=False)
    assert overflow <= 1, overflow


def test_a_javascript_error_would_be_caught(tmp_path, chromium):
    """The error capture itself works: a page that throws is reported."""
    page_html = tmp_path / "broken.html"
    page_html.write_text("<html><body data-perfkit-figures='0'><script>undefinedFunction()</script>"
                         "<script>console.error('boom')</script></body></html>")
    with Chromium(chromium, log_path=str(tmp_path / "chromium.log")) as browser:
        page = browser.open(page_html.as_uri())
        browser.pump(0.5)
        errors = page.errors()
    assert any("undefinedFunction" in e for e in errors) and any("boom" in e for e in errors), errors
