"""The report as one self-contained HTML file: plotly.js inlined once in the head, each figure a div drawn by a small
inline script, a table of contents, no request to any network.

The body declares how many figures it holds (`data-perfkit-figures`); each figure's container carries
`data-figure="<name>"`, so a browser test can check that every declared figure rendered.
"""
from __future__ import annotations

import json

import plotly.io as pio
from plotly.offline import get_plotlyjs

import perfkit
from perfkit.dashboards.common import FLOPS_CONVENTION, CardsBlock, FigureBlock, NoteBlock, TableBlock, esc
from perfkit.dashboards.plot import CONFIG

CSS = """
:root { --ink:#1f2933; --muted:#66707c; --line:#e3e7ed; --bg:#f6f7f9; --card:#fff; --accent:#3b6fb6; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin:0; font-family: Inter, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: var(--bg); font-size: 14px; line-height: 1.5; }
header.top { background: #17212b; color: #f3f5f7; padding: 18px 28px; }
header.top h1 { margin: 0; font-size: 22px; font-weight: 650; letter-spacing: .2px; }
header.top .meta { color: #b7c0ca; font-size: 12.5px; margin-top: 4px; }
.layout { display: grid; grid-template-columns: 230px minmax(0, 1fr); gap: 24px; max-width: 1500px;
          margin: 0 auto; padding: 20px 24px 60px; }
nav.toc { position: sticky; top: 16px; align-self: start; max-height: calc(100vh - 32px); overflow: auto;
          background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 12px; }
nav.toc h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted); margin: 0 0 8px; }
nav.toc ol { list-style: none; padding: 0; margin: 0; }
nav.toc li { margin: 2px 0; }
nav.toc a { color: var(--ink); text-decoration: none; display: flex; justify-content: space-between; gap: 8px;
            padding: 4px 8px; border-radius: 6px; font-size: 13.5px; }
nav.toc a:hover { background: #eef2f8; color: var(--accent); }
nav.toc .count { color: var(--muted); font-size: 12px; }
main { min-width: 0; }
section.pk-section { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
                     padding: 18px 22px 10px; margin-bottom: 22px; }
section.pk-section h2 { margin: 0 0 6px; font-size: 19px; }
section.pk-section p.lead { margin: 0 0 14px; color: #3d4752; max-width: 980px; }
figure.pk-figure { margin: 0 0 18px; border: 1px solid var(--line); border-radius: 10px; padding: 6px 8px 8px;
                   background: #fff; }
figure.pk-figure figcaption { color: var(--muted); font-size: 12.5px; padding: 4px 8px 2px; }
.table-wrap { overflow: auto; max-height: 460px; margin: 6px 0 18px; border: 1px solid var(--line);
              border-radius: 10px; }
.table-title { font-weight: 600; margin: 10px 0 4px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { position: sticky; top: 0; background: #f1f3f6; text-align: left; font-weight: 600; color: #39434e; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
tr:last-child td { border-bottom: none; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); font-size: 12px; }
.badge { display: inline-block; color: #fff; border-radius: 10px; padding: 0 8px; font-size: 11.5px;
         font-weight: 600; line-height: 18px; }
.note { background: #f3f6fb; border-left: 4px solid var(--accent); padding: 8px 12px; border-radius: 6px;
        margin: 6px 0 14px; color: #33404d; }
.note.warn { background: #fff7e8; border-left-color: #d39a1f; }
.warn-text { color: #b06d00; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 12px; margin: 4px 0 18px; }
.card { border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px; background: #fbfcfd; }
.card .value { font-size: 24px; font-weight: 650; }
.card .label { font-weight: 600; color: #39434e; }
.card .detail { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 10px 0 30px; }
@media (max-width: 980px) {
  .layout { grid-template-columns: 1fr; padding: 12px; }
  nav.toc { position: static; max-height: none; }
}
"""


def render(report) -> str:
    figures = report.figures
    data = report.data
    stores = ", ".join(esc(str(p)) for p in data.stores) or "no store"
    toc = "\n".join(
        f'<li><a href="#{esc(s.id)}"><span>{esc(s.title)}</span>'
        f'<span class="count">{len(s.figures) or ""}</span></a></li>' for s in report.sections)
    body = "\n".join(_section(s) for s in report.sections) or \
        '<section class="pk-section"><h2>No data</h2><p class="lead">The stores hold no measurements.</p></section>'
    title = "perfkit report"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="perfkit {esc(perfkit.__version__)}">
<title>{title}</title>
<style>{CSS}</style>
<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript" id="plotlyjs">{get_plotlyjs()}</script>
</head>
<body data-perfkit-figures="{len(figures)}" data-perfkit-sections="{len(report.sections)}">
<header class="top">
  <h1>{title}</h1>
  <div class="meta">Built {esc(report.created_at)} by perfkit {esc(perfkit.__version__)} from {stores}.
  FLOP/s count {esc(FLOPS_CONVENTION)}. Published figures are marked as such and come from REFERENCE.md.</div>
</header>
<div class="layout">
<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>
{toc}
</ol></nav>
<main>
{body}
</main>
</div>
<footer>perfkit {esc(perfkit.__version__)} · {len(figures)} figures in {len(report.sections)} sections ·
self-contained: works offline, no network requests.</footer>
</body>
</html>
"""


def _section(section) -> str:
    parts = [f'<section class="pk-section" id="{esc(section.id)}">', f"<h2>{esc(section.title)}</h2>",
             f'<p class="lead">{section.lead}</p>']
    for block in section.blocks:
        parts.append(_block(block))
    parts.append("</section>")
    return "\n".join(parts)


def _block(block) -> str:
    if isinstance(block, FigureBlock):
        return _figure(block)
    if isinstance(block, TableBlock):
        return _table(block)
    if isinstance(block, NoteBlock):
        return f'<div class="note {esc(block.kind)}">{block.html}</div>'
    if isinstance(block, CardsBlock):
        cards = "".join(f'<div class="card"><div class="value">{v}</div><div class="label">{label}</div>'
                        f'<div class="detail">{detail}</div></div>' for v, label, detail in block.cards)
        return f'<div class="cards">{cards}</div>'
    raise TypeError(f"unknown block {type(block).__name__}")


def _figure(block: FigureBlock) -> str:
    config = json.loads(json.dumps(CONFIG))
    config["toImageButtonOptions"]["filename"] = block.name
    div = pio.to_html(block.fig, include_plotlyjs=False, full_html=False, config=config, div_id=f"fig-{block.name}",
                      default_width="100%", default_height=f"{int(block.fig.layout.height or 460)}px",
                      validate=False)
    caption = f"<figcaption>{block.caption}</figcaption>" if block.caption else ""
    return f'<figure class="pk-figure" data-figure="{esc(block.name)}">{div}{caption}</figure>'


def _table(block: TableBlock) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in block.columns)
    rows = "".join("<tr>" + "".join(f'<td{_num_class(cell)}>{cell}</td>' for cell in row) + "</tr>"
                   for row in block.rows)
    title = f'<div class="table-title">{esc(block.title)}</div>' if block.title else ""
    note = f'<div class="muted">{esc(block.note)}</div>' if block.note else ""
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return f'{title}<div class="table-wrap">{table}</div>{note}'


def _num_class(cell: str) -> str:
    text = str(cell).replace(",", "").replace(" ", "").rstrip("x%")
    try:
        float(text)
        return ' class="num"'
    except ValueError:
        return ""
