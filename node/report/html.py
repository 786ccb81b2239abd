"""The compliance report as one self-contained HTML file: inline CSS, inline SVG charts
(`charts`), no script, no font, image or style fetched from anywhere, so it opens offline,
in any browser, and prints on A4 (sections are not split across pages where they fit).

One section per group of indicators (`federation.indicators.SECTIONS`), each with its
chart, a table of the whole window by peer and, with months, a table of all peers by
month. Every figure shown is suppressed as `federation.suppression` says; the legend under
the title says how to read `<5`, `x` and `-`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from federation.indicators import (
    ALL_PEERS,
    SECTIONS,
    SPECS,
    WHOLE_WINDOW,
    Figure,
    Indicators,
    Spec,
)
from federation.suppression import THRESHOLD
from node.report.charts import bar_chart

_CSS = """
:root { color: #111; background: #fff; }
body { font: 11pt/1.4 system-ui, "DejaVu Sans", Arial, sans-serif; margin: 2em auto;
  max-width: 60em; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #333; padding-bottom: .1em; margin-top: 1.6em; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
.legend { border: 1px solid #999; padding: .5em .8em; background: #f4f4f4; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: .92em; }
th, td { border: 1px solid #bbb; padding: .15em .5em; }
th { background: #eee; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.hidden { color: #555; font-style: italic; }
.explain { color: #333; margin: .3em 0; }
svg.chart { display: block; max-width: 100%; height: auto; margin: .4em 0; }
svg.chart .caption { font-size: 13px; font-weight: 600; }
svg.chart .label, svg.chart .value, svg.chart .mark { font-size: 12px; }
svg.chart .mark { font-style: italic; fill: #555; }
svg.chart .bar { fill: #4a6fa5; stroke: #1d3557; stroke-width: .5; }
@page { size: A4; margin: 15mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  section { break-inside: avoid-page; }
  h2 { break-after: avoid-page; }
  .legend, th { background: none; }
  svg.chart .bar { fill: #777; }
}
"""

_EXPLAIN = {
    "exchanges": "A Match answered with a hit, or a Fetch that delivered a record.",
    "requests": "Every call of the ExchangeService, by method and the node's decision.",
    "timeliness": (
        "A Fetch answered at once, or sent to a person first (a ticket). Operators can "
        "decide a ticket only before its legal deadline; a ticket the node expired missed "
        "it. Hours run from the ticket's opening to the decision."
    ),
    "jit": "Requests stating a legal basis, and those under a joint investigation team.",
    "legal_basis": (
        "Fetch requests by the legal basis stated, and refusals because the legal basis "
        "was not agreed or not sufficient."
    ),
    "channels": (
        "A call from a peer identified by its mTLS certificate, with a valid request "
        "signature, is secure; an unidentified caller or an unauthenticated refusal is not."
    ),
    "refusals": "Refused calls and refused or expired tickets, by the reasons recorded.",
}


def _label(spec: Spec, key: str) -> str:
    return f"{spec.label} {key}" if key else spec.label


def _cell(figure: Figure, spec: Spec) -> str:
    cls = "n hidden" if figure.hidden else "n"
    return f'<td class="{cls}">{escape(figure.text(spec.kind))}</td>'


def _table(
    ind: Indicators, specs: Sequence[Spec], columns: Sequence[str], at: Any, heading: str
) -> str:
    """Rows: each figure of `specs` (each key of a keyed one); columns: `columns`, where
    `at(column, spec, key)` is the figure."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for spec in specs:
        for key in ind.keys_of(spec):
            cells = "".join(_cell(at(c, spec, key), spec) for c in columns)
            rows.append(f"<tr><th>{escape(_label(spec, key))}</th>{cells}</tr>")
    if not rows:
        return ""
    return (
        f"<h3>{escape(heading)}</h3><table><thead><tr><th>indicator</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _chart(ind: Indicators, section: str) -> str:
    months = [p for p in ind.periods if p != WHOLE_WINDOW]
    peers = [p for p in ind.peers if p != ALL_PEERS]

    def window(name: str, key: str = "", peer: str = ALL_PEERS) -> Figure:
        return ind.figure(WHOLE_WINDOW, peer, name, key)

    def keyed(name: str) -> list[tuple[str, Figure]]:
        return [(k, window(name, k)) for k in ind.keys.get(name, ())]

    if section == "exchanges":
        if months:
            items = [(m, ind.figure(m, ALL_PEERS, "successful_exchanges", "")) for m in months]
            return bar_chart("Successful exchanges by month, all peers", items)
        items = [(p, window("successful_exchanges", peer=p)) for p in peers]
        return bar_chart("Successful exchanges by peer", items)
    if section == "requests":
        return bar_chart("Calls received by peer", [(p, window("calls", peer=p)) for p in peers])
    if section == "timeliness":
        names = ("fetch_at_once", "tickets_opened", "tickets_in_time", "tickets_expired")
        items = [(n.replace("_", " "), window(n)) for n in names]
        return bar_chart("Fetch and tickets, all peers, whole window", items)
    if section == "jit":
        if months:
            items = [(m, ind.figure(m, ALL_PEERS, "jit_requests", "")) for m in months]
            return bar_chart("Requests under a JIT agreement by month", items)
        return bar_chart(
            "Requests under a JIT agreement by peer",
            [(p, window("jit_requests", peer=p)) for p in peers],
        )
    if section == "legal_basis":
        return bar_chart("Fetch requests by legal basis, all peers", keyed("fetch_by_basis"))
    if section == "channels":
        items = [("secure", window("secure_calls")), ("insecure", window("insecure_calls"))]
        return bar_chart("Calls by channel, all peers", items)
    return bar_chart("Refusals by reason, all peers", keyed("refusal_reasons"))


def _section(ind: Indicators, section: str, title: str) -> str:
    specs = [s for s in SPECS if s.section == section]
    by_peer = _table(
        ind,
        specs,
        ind.peers,
        lambda peer, spec, key: ind.figure(WHOLE_WINDOW, peer, spec.name, key),
        "Whole window, by peer",
    )
    months = [p for p in ind.periods if p != WHOLE_WINDOW]
    by_month = ""
    if months:
        by_month = _table(
            ind,
            specs,
            months,
            lambda month, spec, key: ind.figure(month, ALL_PEERS, spec.name, key),
            "All peers, by month",
        )
    return (
        f'<section id="{section}"><h2>{escape(title)}</h2>'
        f'<p class="explain">{escape(_EXPLAIN[section])}</p>'
        f"{_chart(ind, section)}{by_peer}{by_month}</section>"
    )


def to_html(ind: Indicators, verified: Mapping[str, Any] | None = None) -> str:
    """The whole report, one string."""
    first = ind.since.astimezone(UTC).isoformat(timespec="seconds")
    last = ind.until.astimezone(UTC).isoformat(timespec="seconds")
    facts = [
        ("Node", ind.node),
        (
            "Window",
            f"{first} to {last} (UTC, end excluded)",
        ),
        (
            "Periods",
            "each calendar month and the whole window"
            if ind.granularity == "month"
            else "the whole window",
        ),
        (
            "Computed from",
            f"audit entries 0 to {ind.entries - 1}" if ind.entries else "an empty audit log",
        ),
    ]
    if verified is not None:
        facts.append(("Verified", str(verified.get("statement", ""))))
    facts.append(("Generated", datetime.now(UTC).isoformat(timespec="seconds")))
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    legend = (
        f'<p class="legend"><strong>How to read the figures.</strong> No count identifies a '
        f"case: a count from 1 to {THRESHOLD - 1} reads <em>&lt;{THRESHOLD}</em>; a figure "
        f"that would reveal one (a total less the counts shown beside it, or a share or "
        f"median over fewer than {THRESHOLD} cases) reads <em>x</em>; <em>-</em> is a share "
        f"of nothing. The report holds no personal value: no identifier, no case reference.</p>"
    )
    sections = "".join(_section(ind, sid, title) for sid, title in SECTIONS)
    title = f"Compliance report: {ind.node}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{escape(title)}</h1><dl class="facts">{dl}</dl>{legend}</header>'
        f"<main>{sections}</main></body></html>\n"
    )
