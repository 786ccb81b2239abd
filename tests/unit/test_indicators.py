"""The compliance indicators from hand-built audit entries: what each counts, the edges of
small-cell suppression (4 hidden, 5 shown, 0 shown; what would reveal a hidden cell hidden
too; shares and medians over fewer than 5 cases), the wire round trip, and the renderers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from federation.indicators import SECTIONS, Figure, Indicators, IndicatorsQuery, compute, months
from federation.serde_indicators import (
    indicators_from_bytes,
    indicators_request_from_bytes,
    indicators_request_to_bytes,
    indicators_to_bytes,
)
from federation.suppression import suppress
from node.report.files import to_csv, to_json
from node.report.html import to_html

JAN = datetime(2026, 1, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)


class Log:
    """Entries as the node writes them (with a case reference, which must never show)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(
        self,
        day: str,
        peer: str,
        method: str,
        decision: str = "allow",
        *,
        times: int = 1,
        reasons: tuple[str, ...] = (),
        legal_basis: str = "none",
        **extra: str,
    ) -> None:
        for _ in range(times):
            self.entries.append(
                {
                    "time": f"2026-{day}T10:00:00.000000Z",
                    "peer": peer,
                    "method": method,
                    "decision": decision,
                    "reasons": list(reasons),
                    "legal_basis": legal_basis,
                    "case_reference": "CASE-SECRET-42",
                    **extra,
                }
            )

    def compute(self, granularity: str = "month") -> Indicators:
        return compute(
            self.entries,
            node="FR-DGPN",
            since=JAN,
            until=MAR,
            granularity=granularity,  # type: ignore[arg-type]
        )


def shown(
    ind: Indicators, indicator: str, peer: str = "all", period: str = "window", key: str = ""
) -> str:
    from federation.indicators import SPEC

    return ind.figure(period, peer, indicator, key).text(SPEC[indicator].kind)


def test_a_count_of_four_is_hidden_five_is_shown_and_zero_is_shown() -> None:
    log = Log()
    log.add("01-05", "DE-BKA", "Match", outcome="hit", times=5)
    log.add("01-06", "NL-KLPD", "Match", outcome="hit", times=4)
    ind = log.compute("window")
    assert shown(ind, "match_hits", "NL-KLPD") == "<5"
    assert shown(ind, "fetch_delivered", "DE-BKA") == "0"
    # all = 9 would reveal NL-KLPD's 4 beside DE-BKA's 5: one of them goes (the smaller).
    assert shown(ind, "match_hits") == "9"
    hidden = [shown(ind, "match_hits", p) for p in ("DE-BKA", "NL-KLPD")]
    assert hidden == ["x", "<5"]


def test_what_counts_as_a_successful_exchange_a_ticket_and_a_secure_call() -> None:
    log = Log()
    log.add("01-02", "DE-BKA", "Match", outcome="hit", times=6)
    log.add("01-02", "DE-BKA", "Match", times=7)  # no-hits
    log.add("01-03", "DE-BKA", "Fetch", outcome="delivered", legal_basis="mlat", times=5)
    for n in range(6):
        log.add(
            "01-04", "DE-BKA", "Fetch", outcome="ticket_opened", ticket=f"t{n}", legal_basis="jit"
        )
    for n in range(5):  # decided 24 h after opening, each in time
        log.add("01-05", "DE-BKA", "TicketApprove", ticket=f"t{n}", legal_basis="jit")
    log.add("02-20", "DE-BKA", "TicketExpire", "deny", ticket="t5", reasons=("ticket_expired",))
    log.add(
        "01-06",
        "unidentified",
        "Match",
        "unauthenticated",
        reasons=("no_client_certificate",),
        legal_basis="",
        times=5,
    )
    log.add("01-06", "DE-BKA", "GetCheckpoint", times=50)  # oversight traffic: not counted
    ind = log.compute()
    assert shown(ind, "successful_exchanges", "DE-BKA") == "11"
    assert shown(ind, "match_hits", "DE-BKA") == "6"
    assert shown(ind, "fetch_delivered", "DE-BKA") == "5"
    assert shown(ind, "fetch_at_once", "DE-BKA") == "5"
    assert shown(ind, "tickets_opened", "DE-BKA") == "6"
    assert shown(ind, "tickets_in_time", "DE-BKA") == "5"
    assert shown(ind, "ticket_median_hours", "DE-BKA") == "24.0"
    assert shown(ind, "tickets_expired", "DE-BKA") == "<5"
    assert shown(ind, "tickets_in_time_share", "DE-BKA") == "x"  # built on a hidden count
    assert shown(ind, "jit_requests", "DE-BKA") == "6"
    assert shown(ind, "fetch_by_basis", "DE-BKA", key="mlat") == "5"
    assert shown(ind, "fetch_basis_share", "DE-BKA", key="jit") == "55%"
    assert shown(ind, "insecure_calls", "unidentified") == "5"
    assert shown(ind, "secure_calls", "DE-BKA") == "24"
    assert shown(ind, "calls") == "29"  # GetCheckpoint is not cooperation
    assert shown(ind, "refusal_reasons", key="no_client_certificate") == "5"
    # With the 6 refusals (or the months' and peers' counts that add up to them), the 5
    # unauthenticated calls would reveal the one expiry.
    assert shown(ind, "requests", key="Match unauthenticated") == "x"
    assert ind.peers == ("DE-BKA", "unidentified", "all")
    # By month: the expiry fell in February.
    assert ind.periods == ("2026-01", "2026-02", "window")
    assert shown(ind, "tickets_expired", period="2026-01") == "0"


def test_a_share_over_fewer_than_five_is_hidden_and_a_share_of_nothing_is_not_applicable() -> None:
    log = Log()
    log.add("01-02", "DE-BKA", "Match", legal_basis="jit", times=2)
    log.add("01-02", "PL-KGP", "Match", legal_basis="jit", times=3)  # 5 hidden: not both 1 or 4
    log.add("01-02", "NL-KLPD", "Match", times=10)
    log.add("01-02", "NL-KLPD", "Match", legal_basis="jit", times=5)
    ind = log.compute("window")
    assert shown(ind, "jit_share", "DE-BKA") == "x"  # 2 requests: too few to share
    assert shown(ind, "jit_share", "NL-KLPD") == "33%"
    assert shown(ind, "tickets_in_time_share", "NL-KLPD") == "-"
    assert shown(ind, "ticket_median_hours", "NL-KLPD") == "-"


def test_entries_outside_the_window_are_not_counted_but_open_tickets_before_it_are_known() -> None:
    log = Log()
    log.entries.append(
        {"time": "2025-12-31T12:00:00Z", "peer": "DE-BKA", "method": "Fetch", "decision": "allow",
         "outcome": "ticket_opened", "ticket": "old", "legal_basis": "mlat", "reasons": []}
    )  # fmt: skip
    for n in range(5):
        log.add("01-01", "DE-BKA", "Fetch", outcome="ticket_opened", ticket=f"t{n}")
    log.add("01-01", "DE-BKA", "TicketApprove", ticket="old")
    log.add("01-01", "DE-BKA", "TicketApprove", ticket="t0", times=4)
    log.add("03-01", "DE-BKA", "Match", times=9)  # `until` is excluded
    ind = log.compute("window")
    assert shown(ind, "tickets_opened", "DE-BKA") == "5"
    assert shown(ind, "tickets_in_time", "DE-BKA") == "5"
    assert shown(ind, "calls", "DE-BKA") == "5"
    # 22 h for the ticket opened the day before the window, 0 for the four others.
    assert shown(ind, "ticket_median_hours", "DE-BKA") == "0.0"
    assert ind.entries == len(log.entries)


def test_secondary_suppression_leaves_nothing_recoverable() -> None:
    # Two hidden parts of sum 2 are both 1; of sum 8, both 4; of sum 5, not recoverable.
    def hidden(a: int, b: int, c: int) -> set[str]:
        primary, secondary = suppress(
            {"t": a + b + c, "a": a, "b": b, "c": c}, [("t", ["a", "b", "c"])]
        )
        return set(primary | secondary)

    assert hidden(1, 1, 9) == {"a", "b", "c"}
    assert hidden(4, 4, 9) == {"a", "b", "c"}
    assert hidden(2, 3, 9) == {"a", "b"}
    assert hidden(0, 3, 9) == {"b", "c"}
    assert hidden(0, 3, 0) == {"b", "t"}
    assert hidden(0, 0, 9) == set()


def test_the_month_breakdown_protects_the_window_total() -> None:
    log = Log()
    log.add("01-10", "DE-BKA", "Match", outcome="hit", times=9)
    log.add("02-10", "DE-BKA", "Match", outcome="hit", times=2)
    ind = log.compute()
    assert shown(ind, "match_hits", "DE-BKA", "2026-02") == "<5"
    assert shown(ind, "match_hits", "DE-BKA", "2026-01") == "x"
    assert shown(ind, "match_hits", "DE-BKA") == "11"


def test_a_window_must_not_be_empty_and_months_are_calendar_months() -> None:
    with pytest.raises(ValueError, match="empty"):
        compute([], node="X", since=MAR, until=JAN)
    assert months(datetime(2025, 11, 15, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)) == [
        "2025-11",
        "2025-12",
        "2026-01",
    ]


def _workload() -> Indicators:
    log = Log()
    log.add("01-02", "DE-BKA", "Match", outcome="hit", times=12)
    log.add("01-03", "NL-KLPD", "Match", "deny", reasons=("legal_basis_not_agreed",), times=2)
    log.add("02-03", "DE-BKA", "Fetch", outcome="delivered", legal_basis="treaty", times=6)
    return log.compute()


def test_figures_cross_the_wire_unchanged() -> None:
    ind = _workload()
    assert indicators_from_bytes(indicators_to_bytes(ind)) == ind
    query = IndicatorsQuery(JAN, MAR, "window")
    assert indicators_request_from_bytes(indicators_request_to_bytes(query)) == query
    assert indicators_request_from_bytes(
        indicators_request_to_bytes(IndicatorsQuery(JAN))
    ) == IndicatorsQuery(JAN)


def test_json_csv_and_html_show_the_same_figures_and_nothing_personal() -> None:
    ind = _workload()
    doc = json.loads(to_json(ind, {"entries": 20}))
    rows = list(csv.DictReader(io.StringIO(to_csv(ind))))
    assert [r["shown"] for r in rows] == [r["shown"] for r in doc["figures"]]
    assert len(rows) == len(ind.rows())
    page = to_html(ind)
    for text in (to_json(ind), to_csv(ind), page):
        assert "CASE-SECRET-42" not in text
    for section, title in SECTIONS:
        assert f'<section id="{section}"><h2>{title}</h2>' in page
    assert page.count("<svg") == len(SECTIONS)
    # Self-contained: nothing is fetched, nothing runs.
    for outside in ("http://", "https://", "<script", "<link", "@import", "src="):
        assert outside not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    hidden = next(
        r
        for r in doc["figures"]
        if r["peer"] == "NL-KLPD" and r["indicator"] == "refusals" and r["period"] == "window"
    )
    assert hidden["value"] is None and hidden["shown"] == "<5"


def test_a_figure_reads_as_its_kind() -> None:
    assert Figure(12.0).text("count") == "12"
    assert Figure(0.5).text("share") == "50%"
    assert Figure(1.25).text("hours") == "1.2"
    assert Figure(None, "small").text("count") == "<5"
    assert Figure(None, "secondary").text("share") == "x"
    assert Figure(None).text("share") == "-"
