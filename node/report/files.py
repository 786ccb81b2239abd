"""The indicators as JSON and CSV: one row per figure, suppression already applied (a hidden
figure has no value, only how it was hidden), and no personal value anywhere (the figures
are counts over peers, periods, methods, legal bases and reasons).

JSON (`liaison-compliance-report/v1`):

    {"format": "liaison-compliance-report/v1", "node": "FR-DGPN",
     "since": "2026-01-01T00:00:00+00:00", "until": "...", "granularity": "month",
     "entries": 1234,                    # computed from the log's entries [0, entries)
     "suppression": {"threshold": 5},
     "verified": {...},                  # how the log was checked (the report only)
     "figures": [{"period": "2026-01", "peer": "DE-BKA", "section": "exchanges",
                  "indicator": "match_hits", "key": "", "kind": "count",
                  "value": 12, "shown": "12"}, ...]}

`value` is null when the figure is hidden or has nothing to be built from; `shown` is what
a reader sees: the figure, `<5` (a count from 1 to 4), `x` (hidden so a small count cannot
be recovered, or built on fewer than 5 cases) or `-` (not applicable). CSV has the same
columns as the figures, one row each.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from federation.indicators import SPEC, Indicators
from federation.suppression import THRESHOLD

REPORT_FORMAT = "liaison-compliance-report/v1"
COLUMNS = ("period", "peer", "section", "indicator", "key", "kind", "value", "shown")


def figure_rows(ind: Indicators) -> list[dict[str, Any]]:
    rows = []
    for period, peer, name, key, figure in ind.rows():
        spec = SPEC[name]
        value: float | int | None = figure.value
        if value is not None and spec.kind == "count":
            value = int(value)
        rows.append(
            {
                "period": period,
                "peer": peer,
                "section": spec.section,
                "indicator": name,
                "key": key,
                "kind": spec.kind,
                "value": value,
                "shown": figure.text(spec.kind),
            }
        )
    return rows


def to_json(ind: Indicators, verified: Mapping[str, Any] | None = None) -> str:
    doc: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "node": ind.node,
        "since": ind.since.isoformat(),
        "until": ind.until.isoformat(),
        "granularity": ind.granularity,
        "entries": ind.entries,
        "suppression": {"threshold": THRESHOLD},
    }
    if verified is not None:
        doc["verified"] = dict(verified)
    doc["figures"] = figure_rows(ind)
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def to_csv(ind: Indicators) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in figure_rows(ind):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()
