"""The compliance indicators oversight bodies judge cross-border cooperation by, computed
from a node's audit entries: what `liaison report` renders, what the OversightService's
GetIndicators serves, and what an overseer can recompute from a verified audit export.

The computation reads only the non-personal fields of an entry (time, peer, method,
decision, reasons, legal_basis, ticket, outcome), so it gives the same figures over the
node's own entries and over their redacted form (the Merkle leaves an overseer holds).
Every figure is a count of entries, or a share or median built from such counts, per peer
(and all peers) and per period (each calendar month in UTC, and the whole window); every
count has been through small-cell suppression (`federation.suppression`) before it leaves
`compute`, so nothing downstream can show a count from 1 to 4.

What counts, and why (docs/oversight.md#the-compliance-report):
- only the ExchangeService's calls (the cross-border exchange itself) and the ticket
  transitions an operator or the clock made; the OversightService's calls (overseers,
  witnesses) are not cooperation and are left out, so checking a node does not move its
  figures;
- a successful exchange is a Match that matched (`outcome` hit) or a Fetch that disclosed a
  record (`outcome` delivered);
- timeliness: a ticket is opened by a Fetch (`outcome` ticket_opened) and decided by an
  operator (TicketApprove, TicketRefuse) or expired by the node at its deadline
  (TicketExpire). An operator can decide only before the deadline, so a decision is in
  time and an expiry is a miss; hours to decision run from the opening entry to the
  deciding one;
- a secure call came from a peer identified by its mTLS certificate and was not refused as
  unauthenticated (a missing or invalid request signature); an unidentified caller or an
  unauthenticated refusal is an insecure one.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from federation.suppression import THRESHOLD, suppress

# The peer label of every peer together, and the period label of the whole window.
ALL_PEERS = "all"
WHOLE_WINDOW = "window"
UNIDENTIFIED = "unidentified"
Granularity = Literal["month", "window"]
GRANULARITIES: tuple[Granularity, ...] = ("month", "window")

EXCHANGE_METHODS = frozenset({"Match", "Fetch", "GetTicket", "WatchTicket", "GetDirectory"})
TICKET_DECIDED = frozenset({"TicketApprove", "TicketRefuse"})
TICKET_EXPIRED = "TicketExpire"
REFUSING = ("deny", "invalid", "unauthenticated")

Kind = Literal["count", "share", "hours"]


@dataclass(frozen=True, slots=True)
class Spec:
    """One indicator: its name on the wire and in files, what kind of figure it is, the
    report section it belongs to and a label for people. A keyed indicator has one figure
    per key (a method and decision, a legal basis, a reason)."""

    name: str
    kind: Kind
    section: str
    label: str
    keyed: bool = False


SECTIONS: tuple[tuple[str, str], ...] = (
    ("exchanges", "Successful exchanges"),
    ("requests", "Requests received, by method and decision"),
    ("timeliness", "Timeliness"),
    ("jit", "Joint investigation teams"),
    ("legal_basis", "Legal basis"),
    ("channels", "Secure channels"),
    ("refusals", "Refusals and their reasons"),
)

SPECS: tuple[Spec, ...] = (
    Spec("successful_exchanges", "count", "exchanges", "successful exchanges"),
    Spec("match_hits", "count", "exchanges", "Match answered with a hit"),
    Spec("fetch_delivered", "count", "exchanges", "Fetch that delivered a record"),
    Spec("calls", "count", "requests", "calls received"),
    Spec("requests", "count", "requests", "calls", keyed=True),
    Spec("fetch_at_once", "count", "timeliness", "Fetch answered at once"),
    Spec("tickets_opened", "count", "timeliness", "Fetch sent to a person (ticket opened)"),
    Spec("tickets_in_time", "count", "timeliness", "tickets decided within the deadline"),
    Spec("tickets_expired", "count", "timeliness", "tickets expired at the deadline"),
    Spec("tickets_in_time_share", "share", "timeliness", "share decided within the deadline"),
    Spec("ticket_median_hours", "hours", "timeliness", "median hours to decision"),
    Spec("requests_with_basis", "count", "jit", "requests stating a legal basis"),
    Spec("jit_requests", "count", "jit", "requests under a JIT agreement"),
    Spec("jit_share", "share", "jit", "share under a JIT agreement"),
    Spec("fetch_requests", "count", "legal_basis", "Fetch requests"),
    Spec("fetch_by_basis", "count", "legal_basis", "Fetch under", keyed=True),
    Spec("fetch_basis_share", "share", "legal_basis", "share of Fetch under", keyed=True),
    Spec("legal_basis_refusals", "count", "legal_basis", "refused for", keyed=True),
    Spec("secure_calls", "count", "channels", "calls over verified mTLS, signature valid"),
    Spec("insecure_calls", "count", "channels", "calls unidentified or unauthenticated"),
    Spec("secure_share", "share", "channels", "share of secure calls"),
    Spec("refusals", "count", "refusals", "refusals"),
    Spec("refusal_reasons", "count", "refusals", "refused for", keyed=True),
)
SPEC = {s.name: s for s in SPECS}
# Counted, never shown: each is the rest of a total a share is built from, and takes part in
# suppression so that `total - shown part` cannot reveal it.
_INTERNAL = ("requests_without_jit", "tickets_approved")
# The reasons the ticket desk records (node/ticket_desk.py).
OPERATOR_REFUSED, EXPIRED_REASON = "refused_by_operator", "ticket_expired"


@dataclass(frozen=True, slots=True)
class Figure:
    """One cell. `value` is None when the figure is hidden or has nothing to be built from
    (a share of no requests). `hidden` is "" (shown), "small" (a count from 1 to 4: reads
    `<5`) or "secondary" (hidden so a small one cannot be recovered, or a share or median
    over fewer than 5 cases or a hidden count: reads `x`)."""

    value: float | None
    hidden: Literal["", "small", "secondary"] = ""

    def text(self, kind: Kind) -> str:
        if self.hidden == "small":
            return f"<{THRESHOLD}"
        if self.hidden:
            return "x"
        if self.value is None:
            return "-"
        if kind == "count":
            return str(int(self.value))
        if kind == "share":
            return f"{100 * self.value:.0f}%"
        return f"{self.value:.1f}"


Cell = tuple[str, str, str, str]  # (period, peer, indicator, key)


@dataclass(frozen=True, slots=True)
class Indicators:
    """The figures of one node over one window, suppression applied. `entries` is how many
    audit entries they were computed from (the log's first `entries`, all verified)."""

    node: str
    since: datetime
    until: datetime
    granularity: Granularity
    entries: int
    periods: tuple[str, ...]
    peers: tuple[str, ...]
    keys: Mapping[str, tuple[str, ...]]
    figures: Mapping[Cell, Figure]

    def figure(self, period: str, peer: str, indicator: str, key: str = "") -> Figure:
        return self.figures[(period, peer, indicator, key)]

    def rows(self) -> list[tuple[str, str, str, str, Figure]]:
        """Every figure, in report order: period, peer, then indicator and key."""
        out = []
        for period in self.periods:
            for peer in self.peers:
                for spec in SPECS:
                    for key in self.keys_of(spec):
                        cell = (period, peer, spec.name, key)
                        out.append((*cell, self.figures[cell]))
        return out

    def keys_of(self, spec: Spec) -> tuple[str, ...]:
        return self.keys.get(spec.name, ()) if spec.keyed else ("",)


def months(since: datetime, until: datetime) -> list[str]:
    """The calendar months (UTC, YYYY-MM) the window [since, until) touches."""
    out = []
    year, month = since.year, since.month
    while datetime(year, month, 1, tzinfo=UTC) < until:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _moment(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Tally:
    """Raw counts and durations, each added to its peer and all peers, its month and the
    whole window."""

    def __init__(self, granularity: Granularity) -> None:
        self.monthly = granularity == "month"
        self.counts: Counter[Cell] = Counter()
        self.hours: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
        self.keys: defaultdict[str, set[str]] = defaultdict(set)

    def _places(self, moment: datetime, peer: str) -> list[tuple[str, str]]:
        periods = [WHOLE_WINDOW]
        if self.monthly:
            periods.append(moment.astimezone(UTC).strftime("%Y-%m"))
        return [(p, q) for p in periods for q in (peer, ALL_PEERS)]

    def add(self, moment: datetime, peer: str, name: str, key: str = "") -> None:
        if key:
            self.keys[name].add(key)
        for period, who in self._places(moment, peer):
            self.counts[(period, who, name, key)] += 1

    def took(self, moment: datetime, peer: str, hours: float) -> None:
        for place in self._places(moment, peer):
            self.hours[place].append(hours)


def _tally(
    entries: Iterable[Mapping[str, Any]], since: datetime, until: datetime, g: Granularity
) -> tuple[_Tally, set[str]]:
    t = _Tally(g)
    peers: set[str] = set()
    opened: dict[str, datetime] = {}  # ticket -> when the Fetch that opened it was audited
    for entry in entries:
        method, moment = str(entry.get("method", "")), _moment(entry.get("time"))
        if moment is None:
            continue
        decision, outcome = str(entry.get("decision", "")), str(entry.get("outcome", ""))
        ticket = str(entry.get("ticket", ""))
        if method == "Fetch" and decision == "allow" and outcome == "ticket_opened" and ticket:
            opened.setdefault(ticket, moment)  # before the window too: its decision may be in
        if not since <= moment < until:
            continue
        peer = str(entry.get("peer", "")) or UNIDENTIFIED
        reasons = [str(r) for r in entry.get("reasons", ())]
        if method in TICKET_DECIDED or method == TICKET_EXPIRED:
            peers.add(peer)
            _ticket(t, moment, peer, method, reasons, opened.get(ticket))
        elif method in EXCHANGE_METHODS:
            peers.add(peer)
            _call(t, moment, peer, method, decision, outcome, ticket, entry, reasons)
    return t, peers


def _ticket(
    t: _Tally,
    moment: datetime,
    peer: str,
    method: str,
    reasons: list[str],
    opened: datetime | None,
) -> None:
    if method == TICKET_EXPIRED:
        t.add(moment, peer, "tickets_expired")
    else:
        t.add(moment, peer, "tickets_in_time")
        if method == "TicketApprove":
            t.add(moment, peer, "tickets_approved")
        if opened is not None:
            t.took(moment, peer, (moment - opened).total_seconds() / 3600)
    if method != "TicketApprove":  # refused by the operator, or expired: a refusal too
        t.add(moment, peer, "refusals")
        for reason in reasons:
            t.add(moment, peer, "refusal_reasons", reason)


def _call(
    t: _Tally,
    moment: datetime,
    peer: str,
    method: str,
    decision: str,
    outcome: str,
    ticket: str,
    entry: Mapping[str, Any],
    reasons: list[str],
) -> None:
    add = t.add
    add(moment, peer, "calls")
    add(moment, peer, "requests", f"{method} {decision}")
    allowed = decision == "allow"
    if allowed and method == "Match" and outcome == "hit":
        add(moment, peer, "match_hits")
        add(moment, peer, "successful_exchanges")
    if allowed and method == "Fetch" and outcome == "delivered":
        add(moment, peer, "fetch_delivered")
        add(moment, peer, "successful_exchanges")
        if not ticket:
            add(moment, peer, "fetch_at_once")
    if allowed and method == "Fetch" and outcome == "ticket_opened":
        add(moment, peer, "tickets_opened")
    basis = str(entry.get("legal_basis", ""))
    if basis:
        add(moment, peer, "requests_with_basis")
        add(moment, peer, "jit_requests" if basis == "jit" else "requests_without_jit")
    if method == "Fetch":
        add(moment, peer, "fetch_requests")
        add(moment, peer, "fetch_by_basis", basis or "none")
    if peer == UNIDENTIFIED or decision == "unauthenticated":
        add(moment, peer, "insecure_calls")
    else:
        add(moment, peer, "secure_calls")
    if decision in REFUSING:
        add(moment, peer, "refusals")
        for reason in reasons:
            add(moment, peer, "refusal_reasons", reason)
            if reason.startswith("legal_basis_"):
                add(moment, peer, "legal_basis_refusals", reason)


def compute(
    entries: Iterable[Mapping[str, Any]],
    *,
    node: str,
    since: datetime,
    until: datetime,
    granularity: Granularity = "month",
    entry_count: int | None = None,
) -> Indicators:
    """The indicators over the entries whose time is in [since, until), suppression
    applied. `entries` are audit entries in log order (as written, or redacted), from
    entry 0: a ticket decided in the window may have been opened before it."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    if not since < until:
        raise ValueError(f"the window is empty: {since.isoformat()} is not before {until}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of {GRANULARITIES}")
    counted = 0

    def counting() -> Iterable[Mapping[str, Any]]:
        nonlocal counted
        for entry in entries:
            counted += 1
            yield entry

    t, seen = _tally(counting(), since, until, granularity)
    periods = (*(months(since, until) if granularity == "month" else ()), WHOLE_WINDOW)
    peers = (*sorted(seen - {UNIDENTIFIED}), *sorted(seen & {UNIDENTIFIED}), ALL_PEERS)
    keys = {name: tuple(sorted(found)) for name, found in t.keys.items()}
    keys["fetch_basis_share"] = keys.get("fetch_by_basis", ())
    figures = _figures(t, periods, peers, keys)
    return Indicators(
        node=node,
        since=since,
        until=until,
        granularity=granularity,
        entries=counted if entry_count is None else entry_count,
        periods=periods,
        peers=peers,
        keys=keys,
        figures=figures,
    )


def _count_cells(
    periods: tuple[str, ...], peers: tuple[str, ...], keys: Mapping[str, tuple[str, ...]]
) -> list[Cell]:
    names = [(s.name, keys.get(s.name, ()) if s.keyed else ("",)) for s in SPECS]
    names = [(n, k) for n, k in names if SPEC[n].kind == "count"]
    names += [(n, ("",)) for n in _INTERNAL]
    return [(p, q, n, k) for p in periods for q in peers for n, ks in names for k in ks]


def _groups(
    periods: tuple[str, ...], peers: tuple[str, ...], keys: Mapping[str, tuple[str, ...]]
) -> list[tuple[Cell, list[Cell]]]:
    """The sums a reader could subtract from: peers to all, months to the window, and the
    breakdowns the report shows beside their totals."""
    cells = _count_cells(periods, peers, keys)
    groups: list[tuple[Cell, list[Cell]]] = []
    one_peer = [q for q in peers if q != ALL_PEERS]
    one_month = [p for p in periods if p != WHOLE_WINDOW]
    for p, q, n, k in cells:
        if q == ALL_PEERS:
            groups.append(((p, q, n, k), [(p, other, n, k) for other in one_peer]))
        if p == WHOLE_WINDOW and one_month:
            groups.append(((p, q, n, k), [(month, q, n, k) for month in one_month]))
    for p in periods:
        for q in peers:
            groups += _breakdowns(p, q, keys)
    return groups


def _breakdowns(
    p: str, q: str, keys: Mapping[str, tuple[str, ...]]
) -> list[tuple[Cell, list[Cell]]]:
    """The sums within one period and peer; two cells that always hold the same count (a
    reason and the indicator it also is) are each other's group, so hiding one hides both."""

    def at(name: str, key: str = "") -> Cell:
        return (p, q, name, key)

    def each(name: str, only: Iterable[str] | None = None) -> list[Cell]:
        return [at(name, k) for k in keys.get(name, ()) if only is None or k in only]

    def same(a: Cell, b: Cell) -> list[tuple[Cell, list[Cell]]]:
        return [(a, [b]), (b, [a])]

    refusing = [c for c in each("requests") if c[3].rsplit(" ", 1)[-1] in REFUSING]
    by_desk = each("refusal_reasons", (OPERATOR_REFUSED, EXPIRED_REASON))
    groups = [
        (at("successful_exchanges"), [at("match_hits"), at("fetch_delivered")]),
        (at("calls"), each("requests")),
        (at("calls"), [at("secure_calls"), at("insecure_calls")]),
        (at("requests_with_basis"), [at("jit_requests"), at("requests_without_jit")]),
        (at("fetch_requests"), each("fetch_by_basis")),
        (
            at("tickets_in_time"),
            [at("tickets_approved"), *each("refusal_reasons", (OPERATOR_REFUSED,))],
        ),
        (at("refusals"), [*refusing, *by_desk]),
    ]
    for reason in each("refusal_reasons", (EXPIRED_REASON,)):
        groups += same(at("tickets_expired"), reason)
    for found in each("legal_basis_refusals"):
        groups += same(found, at("refusal_reasons", found[3]))
    return groups


def _figures(
    t: _Tally, periods: tuple[str, ...], peers: tuple[str, ...], keys: Mapping[str, tuple[str, ...]]
) -> dict[Cell, Figure]:
    cells = _count_cells(periods, peers, keys)
    values = {c: t.counts.get(c, 0) for c in cells}
    small, secondary = suppress(values, _groups(periods, peers, keys))
    figures: dict[Cell, Figure] = {}
    for c in cells:
        if c[2] in _INTERNAL:
            continue
        hidden: Literal["", "small", "secondary"] = (
            "small" if c in small else "secondary" if c in secondary else ""
        )
        figures[c] = Figure(None if hidden else float(values[c]), hidden)

    def share(part: Cell, whole: Cell) -> Figure:
        den = values[whole]
        if den == 0:
            return Figure(None)
        if den < THRESHOLD or {part, whole} & (small | secondary):
            return Figure(None, "secondary")
        return Figure(values[part] / den)

    for p in periods:
        for q in peers:
            figures[(p, q, "tickets_in_time_share", "")] = _in_time_share(
                values, p, q, small | secondary
            )
            figures[(p, q, "jit_share", "")] = share(
                (p, q, "jit_requests", ""), (p, q, "requests_with_basis", "")
            )
            figures[(p, q, "secure_share", "")] = share(
                (p, q, "secure_calls", ""), (p, q, "calls", "")
            )
            for k in keys.get("fetch_by_basis", ()):
                figures[(p, q, "fetch_basis_share", k)] = share(
                    (p, q, "fetch_by_basis", k), (p, q, "fetch_requests", "")
                )
            took = t.hours.get((p, q), [])
            figures[(p, q, "ticket_median_hours", "")] = (
                Figure(None)
                if not took
                else Figure(None, "secondary")
                if len(took) < THRESHOLD
                else Figure(statistics.median(took))
            )
    return figures


def _in_time_share(values: Mapping[Cell, int], p: str, q: str, hidden: frozenset[Cell]) -> Figure:
    """Decided within the deadline, of all tickets that reached a decision or their deadline."""
    in_time, expired = (p, q, "tickets_in_time", ""), (p, q, "tickets_expired", "")
    den = values[in_time] + values[expired]
    if den == 0:
        return Figure(None)
    if den < THRESHOLD or {in_time, expired} & hidden:
        return Figure(None, "secondary")
    return Figure(values[in_time] / den)


@dataclass(frozen=True, slots=True)
class IndicatorsQuery:
    """What GetIndicators asks: the window [since, until) (until None: now) and whether to
    break it down by month."""

    since: datetime
    until: datetime | None = None
    granularity: Granularity = "month"


def keys_from(figures: Mapping[Cell, Figure]) -> dict[str, tuple[str, ...]]:
    """The keys each keyed indicator has, as `compute` lists them (sorted)."""
    found: defaultdict[str, set[str]] = defaultdict(set)
    for _, _, name, key in figures:
        if name in SPEC and SPEC[name].keyed:
            found[name].add(key)
    return {name: tuple(sorted(keys)) for name, keys in found.items()}
