"""The node's Prometheus metrics (docs/oversight.md): bounded labels, never a personal value.

The registry is passed in, so tests use a fresh one and read values with `get_sample_value`.
Label values are peers from the directory, methods, categories, purposes and reasons from
fixed vocabularies: an identifier value can never become a label.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self.directory_serial = Gauge(
            "liaison_directory_serial", "Serial of the directory in force.", registry=registry
        )
        self.certificate_expiry = Gauge(
            "liaison_certificate_expiry_timestamp_seconds",
            "When a node's TLS certificate expires (Unix time): this node's own, and each "
            "peer's as it last presented it.",
            ["node"],
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
            registry=registry,
        )
        self.witness_last_success = Gauge(
            "liaison_witness_last_success_timestamp_seconds",
            "When this node last verified and cosigned each peer's checkpoint (Unix time).",
            ["log"],
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
            registry=registry,
        )
        self.audit_cosignatures = Gauge(
            "liaison_audit_cosignatures",
            "Witness cosignatures collected on this node's latest audit checkpoint.",
            registry=registry,
        )

    def track_audit_size(self, size: Callable[[], int]) -> None:
        """Derived state is read at scrape time, never copied and left to go stale."""
        self.audit_size.set_function(lambda: float(size()))
