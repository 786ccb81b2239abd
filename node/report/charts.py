"""Inline SVG bar charts for the HTML report, drawn by this module (no plotting library, no
script, nothing fetched): the report stays one file that opens offline and prints.

A hidden figure gets no bar, only its mark (`<5` or `x`), so a chart can never show more
than the tables beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from federation.indicators import Figure, Kind

WIDTH = 640
LABEL_W = 230
ROW_H = 22
BAR_H = 14
VALUE_W = 60


def bar_chart(title: str, items: Sequence[tuple[str, Figure]], kind: Kind = "count") -> str:
    """A horizontal bar chart: one row per (label, figure), bars scaled to the largest
    shown value; `title` is the chart's accessible name and caption."""
    shown = [f.value for _, f in items if f.value is not None]
    top = max(shown, default=0.0) or 1.0
    span = WIDTH - LABEL_W - VALUE_W
    height = ROW_H * max(len(items), 1) + 28
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<text class="caption" x="0" y="14">{escape(title)}</text>',
    ]
    if not items:
        parts.append('<text class="mark" x="0" y="40">nothing recorded</text>')
    for row, (label, figure) in enumerate(items):
        y = 28 + row * ROW_H
        mid = y + ROW_H / 2 + 4
        parts.append(
            f'<text class="label" x="{LABEL_W - 8}" y="{mid:.0f}" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        text = escape(figure.text(kind))
        if figure.value is None:
            parts.append(f'<text class="mark" x="{LABEL_W + 4}" y="{mid:.0f}">{text}</text>')
            continue
        width = span * figure.value / top
        parts.append(
            f'<rect class="bar" x="{LABEL_W}" y="{y + (ROW_H - BAR_H) / 2:.0f}" '
            f'width="{width:.1f}" height="{BAR_H}"/>'
        )
        parts.append(
            f'<text class="value" x="{LABEL_W + width + 6:.1f}" y="{mid:.0f}">{text}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
