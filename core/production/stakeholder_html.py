"""The stakeholder report as one self-contained HTML file: the same sections and sentences as the page, the
chart as an inline SVG image (no script, no network), formatted numbers, the date and the model version,
and print styles so that a browser's "print to PDF" gives clean pages."""

from __future__ import annotations

import html

import pandas as pd

from core.production.stakeholder import StakeholderReport

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:860px;margin:2em auto;line-height:1.5;color:#222}
h1{margin-bottom:.2em} h2{margin-top:1.4em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#555} .verdict{padding:.6em 1em;border-radius:6px;font-weight:600}
.healthy{background:#e6f4ea} .attention{background:#fff4e0} .failing{background:#fde8e8} .unjudged{background:#eef}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}
@media print{body{margin:0 1.5cm;max-width:none;font-size:11pt} h2{break-after:avoid} table,svg,.verdict{break-inside:avoid}}
"""


def utility_svg(report: StakeholderReport) -> str:
    """Horizontal bars of utility per 1,000 images with their 95% intervals, one per policy."""
    c = report.comparison
    values = [o.utility_per_image * 1000 for o in c.outcomes]
    lows = [lo * 1000 for lo, _ in c.intervals]
    highs = [hi * 1000 for _, hi in c.intervals]
    lo, hi = min(0.0, *lows), max(0.0, *highs)
    span = (hi - lo) or 1.0
    width, left, row = 640, 210, 34

    def x(v: float) -> float:
        return left + (v - lo) / span * (width - left - 20)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row * len(values) + 30}" role="img" '
        f'aria-label="utility per 1,000 images by policy">',
        f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{row * len(values)}" stroke="#888"/>',
    ]
    for i, (o, v, a, b) in enumerate(zip(c.outcomes, values, lows, highs, strict=True)):
        y = i * row + 6
        colour = "#4C78A8" if i == 0 else "#9ecae9"
        parts += [
            f'<text x="0" y="{y + 15}" font-size="12">{html.escape(o.policy)}</text>',
            f'<rect x="{min(x(0), x(v)):.1f}" y="{y}" width="{abs(x(v) - x(0)):.1f}" height="20" fill="{colour}"/>',
            f'<line x1="{x(a):.1f}" y1="{y + 10}" x2="{x(b):.1f}" y2="{y + 10}" stroke="#222" stroke-width="2"/>',
        ]
    parts.append(
        f'<text x="{left}" y="{row * len(values) + 22}" font-size="11" fill="#555">utility per 1,000 images '
        f"({html.escape(report.unit)}); bars: expected, lines: 95% interval</text></svg>"
    )
    return "".join(parts)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, escape=True)


def report_html(report: StakeholderReport) -> str:
    """The whole report as one standalone HTML page."""
    e = html.escape
    v = report.verdict
    css = {"healthy": "healthy", "needs attention": "attention", "failing": "failing"}.get(v.status, "unjudged") if v else ""
    body = [
        f"<h1>{e(report.workspace)}: stakeholder report</h1>",
        f'<p class="meta">Model {e(report.version)} · generated {e(report.generated)} UTC</p>',
    ]
    if v:
        body.append(f'<p class="verdict {css}">{e(v.headline)}. {e(" ".join(v.reasons))}</p>')
    for section in report.sections:
        body.append(f"<h2>{e(section.title)}</h2>")
        body += [f"<p>{e(s)}</p>" for s in section.sentences]
        if section.title == "What it gains":
            body.append(utility_svg(report))
        if section.table is not None:
            body.append(_table(section.table))
    body.append("<h2>Risks</h2>")
    body.append("<ul>" + "".join(f"<li>{e(r)}</li>" for r in report.risks) + "</ul>" if report.risks else "<p>None found.</p>")
    body.append(f"<h2>Decision pending</h2><p>{e(report.pending)}</p>")
    body.append(
        f'<p class="meta">Utility figures: {e(report.unit)} per 1,000 images, on validation images '
        "the policy was not fitted on; rates carry their 95% Wilson interval and n.</p>"
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{e(report.workspace)}: stakeholder report</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
