"""The node's Prometheus metrics (docs/oversight.md): bounded labels, never a personal value.

The registry is passed in, so tests use a fresh one and read values with `get_sample_value`.
Label values are peers from the directory, methods, categories, purposes and reasons from
fixed vocabularies: an identifier value can never become a label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from federation.directory import Directory
    from node.tickets import Ticket

# The caller of a call refused before it was identified (node.rpc.call_path.UNIDENTIFIED).
UNIDENTIFIED = "unidentified"
# What an allowed exchange achieved (`liaison_exchanges_total{method,outcome}`): a Match
# hit or not; a Fetch that disclosed a record at once or for an approved ticket, that
# opened a ticket, or that only told a ticket's status. Successful: hit and delivered*.
EXCHANGE_OUTCOMES = (
    ("Match", "hit"),
    ("Match", "no_hit"),
    ("Fetch", "delivered"),
    ("Fetch", "delivered_ticket"),
    ("Fetch", "ticket_opened"),
    ("Fetch", "ticket_status"),
)
CHANNELS = ("secure", "insecure")
NOTICE_OUTCOMES = ("accepted", "duplicate", "refused", "withdrawn")
# A requester's withdrawal is not a decision: it is not counted here.
TICKET_OUTCOMES = ("approved", "refused", "expired")
LEGAL_BASES = ("none", "bilateral_agreement", "mlat", "jit", "treaty")
_DECISIONS = ("allow", "deny", "invalid", "unauthenticated")
# Refusal reasons whose series exist from the start for each peer (the legal-basis
# indicator's), and for callers never identified.
_PEER_REASONS = ("legal_basis_not_agreed", "legal_basis_insufficient")
_UNIDENTIFIED_REASONS = ("no_client_certificate", "unknown_member")

# Time to a ticket's decision: a legal deadline is hours to days (48 h under eu-led).
_HOUR = 3600.0
_RESOLUTION_BUCKETS = (1.0, 60.0, 600.0, _HOUR, 4 * _HOUR, 12 * _HOUR, 24 * _HOUR, 48 * _HOUR)
# Pending tickets by the share of their deadline used: [0, 0.5), [0.5, 0.8), [0.8, 1), due.
DEADLINE_BUCKETS = (("lt50", 0.5), ("50to80", 0.8), ("80to100", 1.0), ("overdue", float("inf")))
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # The families read at scrape time (from the database, the directory, the audit
        # log) rather than counted: with `serve --workers N` the process serving /metrics
        # reads them itself, and takes the counted ones from every worker
        # (node/metrics_workers.py). Gauges set by more than one worker say how their
        # values combine (`multiprocess_mode`; ignored in one process).
        self.computed: set[str] = {"liaison_directory_age_seconds"}  # DirectoryState's
        self.requests = Counter(
            "liaison_requests",
            "Requests answered, by peer, method and decision.",
            ["peer", "method", "decision"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "liaison_request_duration_seconds",
            "Time from receipt to answer.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.policy_decisions = Counter(
            "liaison_policy_decisions",
            "Policy decisions, by engine and result.",
            ["engine", "result"],
            registry=registry,
        )
        self.policy_duration = Histogram(
            "liaison_policy_decision_duration_seconds",
            "Time the policy engine took.",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25),
            registry=registry,
        )
        self.denials = Counter(
            "liaison_denials",
            "Refusals, by peer and machine-readable reason.",
            ["peer", "reason"],
            registry=registry,
        )
        self.hits = Counter(
            "liaison_hits",
            "Match requests that found a record, by peer and category.",
            ["peer", "category"],
            registry=registry,
        )
        self.fetch_withheld_fields = Counter(
            "liaison_fetch_withheld_fields",
            "Payload fields withheld from records disclosed by Fetch, by peer (how many, "
            "never which values).",
            ["peer"],
            registry=registry,
        )
        self.legal_basis = Counter(
            "liaison_legal_basis_use",
            "Requests by the legal basis they invoked.",
            ["peer", "legal_basis"],
            registry=registry,
        )
        self.audit_entries = Counter(
            "liaison_audit_entries", "Audit entries made durable.", registry=registry
        )
        self.audit_failures = Counter(
            "liaison_audit_failures",
            "Requests refused because their audit entry failed.",
            registry=registry,
        )
        self.audit_size = Gauge(
            "liaison_audit_tree_size", "Entries in the audit log.", registry=registry
        )
        self.audit_history_damaged = Gauge(
            "liaison_audit_history_damaged",
            "1 when the audit log's entries before its last signed checkpoint failed their "
            "check after a fast open (the log was altered after it was signed).",
            registry=registry,
        )
        self.directory_serial = Gauge(
            "liaison_directory_serial",
            "Serial of the directory in force.",
            multiprocess_mode="max",
            registry=registry,
        )
        self.certificate_expiry = Gauge(
            "liaison_certificate_expiry_timestamp_seconds",
            "When a node's TLS certificate expires (Unix time): this node's own, and each "
            "peer's as it last presented it.",
            ["node"],
            multiprocess_mode="max",
            registry=registry,
        )
        # The directory in force: its age is read at scrape time (see DirectoryState).
        self.directory_age = Gauge(
            "liaison_directory_age_seconds",
            "Seconds since the directory in force was issued.",
            registry=registry,
        )
        self.directory_expiry = Gauge(
            "liaison_directory_expiry_timestamp_seconds",
            "When the directory in force expires (Unix time).",
            multiprocess_mode="max",
            registry=registry,
        )
        self.directory_refusals = Counter(
            "liaison_directory_refusals",
            "Directories not installed, by reason (bad signature, rollback, expired, ...).",
            ["reason"],
            registry=registry,
        )
        self.directory_installs = Counter(
            "liaison_directory_installs",
            "Directories installed, by how they came (startup, refresh, peer).",
            ["via"],
            registry=registry,
        )
        # Witnessing peers' audit logs (node.audit.witness); `log` is a peer's node id from the
        # directory, `reason` one of node.audit.witness_state.FAILURES.
        self.witness_checkpoint_size = Gauge(
            "liaison_witness_checkpoint_size",
            "Tree size of the newest checkpoint of each peer's audit log this node verified.",
            ["log"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.witness_last_success = Gauge(
            "liaison_witness_last_success_timestamp_seconds",
            "When this node last verified and cosigned each peer's checkpoint (Unix time).",
            ["log"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.witness_failures = Counter(
            "liaison_witness_failures",
            "Peer checkpoints or witness views that could not be verified, by log and reason.",
            ["log", "reason"],
            registry=registry,
        )
        self.witness_split_view = Gauge(
            "liaison_witness_split_view",
            "1 once this node holds proof that a peer's log showed two different trees "
            "(the evidence is in its witness state file); it stays 1.",
            ["log"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.audit_cosignatures = Gauge(
            "liaison_audit_cosignatures",
            "Witness cosignatures collected on this node's latest audit checkpoint.",
            multiprocess_mode="mostrecent",
            registry=registry,
        )

        self.ticket_resolution = Histogram(
            "liaison_ticket_resolution_seconds",
            "Time from a ticket's opening to its decision, by outcome (approved, refused, "
            "expired, withdrawn).",
            ["outcome"],
            buckets=_RESOLUTION_BUCKETS,
            registry=registry,
        )
        self.ticket_deadline_misses = Counter(
            "liaison_ticket_deadline_misses",
            "Tickets that reached their legal deadline undecided (and expired).",
            registry=registry,
        )
        self.ticket_watches = Gauge(
            "liaison_ticket_watches",
            "WatchTicket streams open on this node, by peer (at most [tickets] "
            "max_watches_per_peer each).",
            ["peer"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.received_purged = Counter(
            "liaison_received_purged",
            "Records received from a peer and deleted when their retention ended, by peer.",
            ["peer"],
            registry=registry,
        )

        # The indicators' counters (docs/oversight.md#recording-rules).
        self.exchanges = Counter(
            "liaison_exchanges",
            "Match and Fetch calls answered (allowed), by peer, method and what they "
            "achieved: hit, no_hit, delivered (a record at once), delivered_ticket (for an "
            "approved ticket), ticket_opened, ticket_status.",
            ["peer", "method", "outcome"],
            registry=registry,
        )
        self.calls = Counter(
            "liaison_calls",
            "Every call the node audited, by peer and channel: secure (the caller's "
            "certificate is the one the directory lists, and a signed method's request "
            "signature, freshness and nonce verified) or insecure (anything else: no or "
            "another certificate, an unknown or revoked member, a bad or missing signature).",
            ["peer", "channel"],
            registry=registry,
        )
        self.ticket_decisions = Counter(
            "liaison_ticket_decisions",
            "Tickets decided, by the requester (peer) and outcome: approved, refused (by an "
            "operator, before the deadline) or expired (at the deadline: a miss).",
            ["peer", "outcome"],
            registry=registry,
        )

        self.metrics_refusals = Counter(
            "liaison_metrics_refusals",
            "Scrapes of /metrics refused (403), by reason: no_client_certificate, "
            "not_an_overseer, unknown_member, certificate_not_in_directory, ...",
            ["reason"],
            registry=registry,
        )

        # Notices: what peers sent (outcome: accepted, duplicate, refused, withdrawn).
        self.notices_received = Counter(
            "liaison_notices_received",
            "Notices received from peers, by peer and outcome (accepted, duplicate: a "
            "redelivery of a version already held, refused, withdrawn).",
            ["peer", "outcome"],
            registry=registry,
        )

    def count_ticket(self, ticket: Ticket) -> None:
        """A ticket's decision: its time to decision, by whom it was asked, and a miss if
        it expired."""
        spent = ticket.time_to_decision
        if spent is not None:
            self.ticket_resolution.labels(ticket.state.value).observe(spent.total_seconds())
        if ticket.state.value in TICKET_OUTCOMES:
            self.ticket_decisions.labels(ticket.requester, ticket.state.value).inc()
        if ticket.state.value == "expired":
            self.ticket_deadline_misses.inc()

    def know_members(self, directory: Directory) -> None:
        """Create, at zero, the indicators' series of every member the directory lists.

        Prometheus computes `rate` and `increase` from differences between samples: a series
        first scraped at 1 has no sample before it, so the first exchange with a peer would
        be lost to every recording rule (and an exchange is rare enough for that to show).
        The set is bounded by the directory: a few dozen series a member. Called at start
        and on each directory installed; series of members no longer listed stay (a counter
        is never taken back)."""
        for member in directory.members:
            peer = member.node_id
            for channel in CHANNELS:
                self.calls.labels(peer, channel)
            if not member.is_node:
                continue
            for method, outcome in EXCHANGE_OUTCOMES:
                self.exchanges.labels(peer, method, outcome)
            for outcome in TICKET_OUTCOMES:
                self.ticket_decisions.labels(peer, outcome)
            for basis in LEGAL_BASES:
                self.legal_basis.labels(peer, basis)
            for method in ("Match", "Fetch"):
                for decision in _DECISIONS:
                    self.requests.labels(peer, method, decision)
            for reason in _PEER_REASONS:
                self.denials.labels(peer, reason)
            for outcome in NOTICE_OUTCOMES:
                self.notices_received.labels(peer, outcome)
        for outcome in TICKET_OUTCOMES:
            self.ticket_resolution.labels(outcome)
        self.calls.labels(UNIDENTIFIED, "insecure")
        for reason in _UNIDENTIFIED_REASONS:
            self.denials.labels(UNIDENTIFIED, reason)
        for method in ("Match", "Fetch"):
            for decision in ("deny", "unauthenticated"):
                self.requests.labels(UNIDENTIFIED, method, decision)

    def track_tickets(
        self,
        by_state: Callable[[], Mapping[str, int]],
        deadline_used: Callable[[], Sequence[float]],
    ) -> None:
        """`liaison_tickets{state}` and the pending tickets' use of their deadlines, read
        from the ticket store at scrape time (`deadline_used`: each pending ticket's share
        of its deadline used, 1.0 = due)."""
        self._computed(_TicketCollector(by_state, deadline_used))

    def track_notices(
        self,
        hits_by_category: Callable[[], Mapping[str, int]],
        outbox_by_state: Callable[[], Mapping[str, int]],
    ) -> None:
        """`liaison_notice_hits_total{category}` and `liaison_notice_outbox{state}`, read from
        the database at scrape time: a hit raised by an import (another process) or by
        another replica counts too, and the outbox is never a stale copy."""
        self._computed(_NoticeCollector(hits_by_category, outbox_by_state))

    def track_policy_cache(self, lookups: Callable[[], tuple[int, int]]) -> None:
        """`liaison_policy_cache_lookups_total{result}`: the decision cache's hits and misses
        (`lookups` gives both), read at scrape time from the cache's own counts. The cache
        keys on the value-free input with `now` to the second, so its hit rate says how
        many distinct kinds of request a second brings (docs/performance.md)."""
        self.registry.register(_PolicyCacheCollector(lookups))

    def track_audit_size(
        self, size: Callable[[], int], damaged: Callable[[], bool] = lambda: False
    ) -> None:
        """Derived state is read at scrape time, never copied and left to go stale."""
        self.audit_size.set_function(lambda: float(size()))
        self.audit_history_damaged.set_function(lambda: float(damaged()))
        self.computed |= {"liaison_audit_tree_size", "liaison_audit_history_damaged"}

    def _computed(self, collector: _TicketCollector | _NoticeCollector) -> None:
        self.registry.register(collector)
        self.computed |= {family.name for family in collector.describe()}


class _TicketCollector(Collector):
    """Ticket figures computed at scrape time (one query each), never copied to go stale.
    If the database cannot answer, the families are left out of that scrape (an absent
    series, not a false zero) and the node's log says why."""

    def __init__(
        self,
        by_state: Callable[[], Mapping[str, int]],
        deadline_used: Callable[[], Sequence[float]],
    ) -> None:
        self._by_state = by_state
        self._deadline_used = deadline_used

    def describe(self) -> Iterator[Metric]:
        return iter(self._families({}, ()))

    def collect(self) -> Iterator[Metric]:
        try:
            counts, used = self._by_state(), self._deadline_used()
        except Exception as exc:  # a scrape must not fail for one family
            logging.getLogger("liaison.node").error("cannot read ticket figures: %s", exc)
            return iter(())
        return iter(self._families(counts, used))

    @staticmethod
    def _families(counts: Mapping[str, int], used: Sequence[float]) -> list[Metric]:
        states = GaugeMetricFamily("liaison_tickets", "Tickets by state.", labels=["state"])
        for state, n in counts.items():
            states.add_metric([state], float(n))
        buckets = GaugeMetricFamily(
            "liaison_tickets_pending_deadline_used",
            "Pending tickets by the share of their legal deadline used: lt50, 50to80, "
            "80to100, overdue (past it, not yet expired by the node).",
            labels=["bucket"],
        )
        for name, n in deadline_buckets(used).items():
            buckets.add_metric([name], float(n))
        most = GaugeMetricFamily(
            "liaison_tickets_pending_deadline_used_max",
            "The largest share of its legal deadline any pending ticket has used (0: none "
            "pending; 0.8 and above alerts, LiaisonTicketNearDeadline).",
            value=max(used, default=0.0),
        )
        return [states, buckets, most]


class _NoticeCollector(Collector):
    """Notice figures computed at scrape time; left out of a scrape the database cannot
    answer (an absent series, not a false zero), as for tickets."""

    def __init__(
        self,
        hits: Callable[[], Mapping[str, int]],
        outbox: Callable[[], Mapping[str, int]],
    ) -> None:
        self._hits = hits
        self._outbox = outbox

    def describe(self) -> Iterator[Metric]:
        return iter(self._families({}, {}))

    def collect(self) -> Iterator[Metric]:
        try:
            hits, outbox = self._hits(), self._outbox()
        except Exception as exc:  # a scrape must not fail for one family
            logging.getLogger("liaison.node").error("cannot read notice figures: %s", exc)
            return iter(())
        return iter(self._families(hits, outbox))

    @staticmethod
    def _families(hits: Mapping[str, int], outbox: Mapping[str, int]) -> list[Metric]:
        counted = CounterMetricFamily(
            "liaison_notice_hits",
            "Local alerts: a peer's Match or a record import that hit an accepted notice, by "
            "category (never told to the publisher).",
            labels=["category"],
        )
        for category, n in sorted(hits.items()):
            counted.add_metric([category], float(n))
        states = GaugeMetricFamily(
            "liaison_notice_outbox",
            "Deliveries of this node's notices, by state (pending, delivered, refused, expired).",
            labels=["state"],
        )
        for state, n in outbox.items():
            states.add_metric([state], float(n))
        return [counted, states]


class _PolicyCacheCollector(Collector):
    """The decision cache's counts, read when scraped (the cache counts under its own lock;
    copying them into a Counter on every decision would cost the hot path)."""

    def __init__(self, lookups: Callable[[], tuple[int, int]]) -> None:
        self._lookups = lookups

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(0, 0))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(*self._lookups()))

    @staticmethod
    def _families(hits: int, misses: int) -> list[Metric]:
        lookups = CounterMetricFamily(
            "liaison_policy_cache_lookups",
            "Policy decision cache lookups, by result (hit: answered from the cache; miss: "
            "the engine decided).",
            labels=["result"],
        )
        lookups.add_metric(["hit"], float(hits))
        lookups.add_metric(["miss"], float(misses))
        return [lookups]


def deadline_buckets(used: Sequence[float]) -> dict[str, int]:
    """How many pending tickets fall in each DEADLINE_BUCKETS bucket (lower bound
    inclusive: a ticket at exactly 80% is in 80to100)."""
    counts = {name: 0 for name, _ in DEADLINE_BUCKETS}
    for fraction in used:
        name = next(name for name, upper in DEADLINE_BUCKETS if fraction < upper)
        counts[name] += 1
    return counts
