"""The node's side of ticket decisions (node.ticket_desk, node/rpc/admin*.py) on real stores,
a real audit log and a fresh metrics registry, with an injected clock: each decision is one
audit entry and one count, a refused decision is neither; the ticket figures; the admin
socket's start, stale-socket replacement and mode; the wire form of a ticket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from federation.model import Identifier
from federation.vocabulary import LegalBasis
from node.audit.entries import AuditError
from node.audit.file_store import FileStorage
from node.audit.log import AuditLog
from node.metrics import NodeMetrics, deadline_buckets
from node.records import NewRecord
from node.rpc.admin import AdminServer, AdminSocketError
from node.rpc.admin_client import AdminClient, AdminError
from node.rpc.admin_wire import ticket_from_proto, ticket_to_proto
from node.store import RecordStore
from node.ticket_desk import TicketDesk
from node.tickets import InvalidDecision, TicketExpired, TicketNotPending, TicketState, TicketStore

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Desk:
    desk: TicketDesk
    tickets: TicketStore
    audit: AuditLog
    registry: CollectorRegistry
    clock: Clock
    ref: str
    # The tickets the desk said it moved (the node wakes their watchers with it).
    changed: list[str]

    def open(self, hours: float = 48) -> str:
        return self.tickets.open(
            requester="DE-BKA",
            record_ref=self.ref,
            category="travel_document",
            purpose="criminal_investigation",
            legal_basis=LegalBasis.MLAT,
            legal_reference="MLAT-1",
            case_reference="CASE-1",
            handling_code="H1",
            redact=("address",),
            retention_days=30,
            deadline_at=self.clock.now + timedelta(hours=hours),
            request_entry="",
            now=self.clock.now,
        ).id

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def entries(self) -> list[dict[str, object]]:
        """The log's entries as written (the operator's view, `note` in clear)."""
        assert self.audit.path is not None
        return [json.loads(line) for line in self.audit.path.read_text().splitlines()]


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Desk]:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    records, tickets = RecordStore(url), TicketStore(url)
    records.create_schema()
    tickets.create_schema()
    payload = {"family_name": "X", "address": "Y", "photo": "Z"}
    ident = (Identifier("document_number", "P1"),)
    records.add_records([NewRecord("rec_1", "travel_document", "H1", (), ident, payload)])
    audit = AuditLog(tmp_path / "audit.log")
    registry, clock = CollectorRegistry(), Clock()
    metrics = NodeMetrics(registry)
    metrics.track_tickets(
        lambda: {s.value: n for s, n in tickets.open_by_state().items()},
        lambda: [a.fraction for a in tickets.pending_ages(clock.now)],
    )
    changed: list[str] = []
    desk = TicketDesk(tickets, records, audit, metrics, now=clock, on_change=changed.append)
    yield Desk(desk, tickets, audit, registry, clock, "rec_1", changed)
    asyncio.run(audit.close())
    tickets.close()
    records.close()


def test_an_approval_is_one_entry_and_one_count(d: Desk) -> None:
    tid = d.open()
    d.clock.now += timedelta(hours=2)
    done = asyncio.run(d.desk.approve(tid, "alice", "checked", ["photo"]))
    assert done.ticket.state is TicketState.APPROVED
    assert done.ticket.withheld == ("address", "photo")
    [entry] = d.entries()
    assert entry["id"] == done.audit_entry
    assert entry["method"] == "TicketApprove" and entry["decision"] == "allow"
    assert entry["ticket"] == tid and entry["operator"] == "alice" and entry["note"] == "checked"
    assert entry["withheld"] == ["photo"] and entry["peer"] == "DE-BKA"
    assert entry["time"] == "2026-12-05T11:00:00.000000Z"
    assert d.value("liaison_ticket_resolution_seconds_count", outcome="approved") == 1
    assert d.value("liaison_ticket_resolution_seconds_sum", outcome="approved") == 7200
    assert d.value("liaison_audit_entries_total") == 1
    assert d.changed == [tid]


def test_a_refused_decision_changes_and_audits_nothing(d: Desk) -> None:
    tid = d.open()
    with pytest.raises(InvalidDecision) as no_reason:
        asyncio.run(d.desk.refuse(tid, "alice", "  "))
    assert no_reason.value.reason == "reason_required"
    with pytest.raises(InvalidDecision) as no_field:
        asyncio.run(d.desk.approve(tid, "alice", extra_redact=["shoe_size"]))
    assert no_field.value.reason == "unknown_field"
    asyncio.run(d.desk.refuse(tid, "bob", "no basis"))
    with pytest.raises(TicketNotPending, match=f"ticket {tid} is already refused by bob at"):
        asyncio.run(d.desk.approve(tid, "alice"))
    assert [e["method"] for e in d.entries()] == ["TicketRefuse"]
    assert d.value("liaison_audit_entries_total") == 1
    assert d.changed == [tid]  # the refusal only: nothing else moved it


@contextlib.contextmanager
def full_disk(audit: AuditLog) -> Iterator[None]:
    """The audit file's writes fail with a real ENOSPC (/dev/full) while inside."""
    storage = audit._storage
    assert isinstance(storage, FileStorage)
    good = storage._fd
    storage._fd = os.open("/dev/full", os.O_WRONLY)
    try:
        yield
    finally:
        os.close(storage._fd)
        storage._fd = good


def test_a_decision_the_log_cannot_record_does_not_stand(d: Desk) -> None:
    """Every transition is an audit entry: with the disk full the ticket stays pending, the
    operator is told to try again, and nothing was counted; then it goes through."""
    tid = d.open()
    with full_disk(d.audit):
        with pytest.raises(AuditError, match=rf"ticket {tid} is unchanged \(still pending\)"):
            asyncio.run(d.desk.approve(tid, "alice", "checked", ["photo"]))
        with pytest.raises(AuditError, match="No space left"):
            asyncio.run(d.desk.refuse(tid, "bob", "no basis"))
    ticket = d.tickets.get(tid)
    assert ticket.state is TicketState.PENDING and ticket.decided_at is None
    assert (ticket.operator, ticket.reason, ticket.withheld) == ("", "", ("address",))
    assert d.value("liaison_ticket_resolution_seconds_count", outcome="approved") == 0
    assert d.value("liaison_audit_failures_total") == 2 and d.entries() == []
    assert d.changed == []  # no watcher is woken for a decision that did not stand
    done = asyncio.run(d.desk.approve(tid, "alice", "checked", ["photo"]))
    assert done.ticket.state is TicketState.APPROVED
    assert [e["method"] for e in d.entries()] == ["TicketApprove"]
    assert d.changed == [tid]


def test_an_expiry_the_log_cannot_record_is_tried_again(d: Desk) -> None:
    tid = d.open(1)
    d.clock.now += timedelta(hours=2)
    with full_disk(d.audit), pytest.raises(AuditError):
        asyncio.run(d.desk.expire_due())
    assert d.tickets.get(tid).state is TicketState.PENDING
    [done] = asyncio.run(d.desk.expire_due())
    assert done.ticket.state is TicketState.EXPIRED
    assert [e["method"] for e in d.entries()] == ["TicketExpire"]


def test_expiry_audits_each_ticket_and_counts_misses(d: Desk) -> None:
    first, second, later = d.open(1), d.open(2), d.open(10)
    d.clock.now += timedelta(hours=3)
    with pytest.raises(TicketExpired):
        asyncio.run(d.desk.approve(first, "alice"))
    expired = asyncio.run(d.desk.expire_due())
    assert [e.ticket.id for e in expired] == [first, second]
    entries = d.entries()
    assert [(e["method"], e["ticket"], e["reasons"]) for e in entries] == [
        ("TicketExpire", first, ["ticket_expired"]),
        ("TicketExpire", second, ["ticket_expired"]),
    ]
    assert all("operator" not in e and "note" not in e for e in entries)
    assert d.value("liaison_ticket_deadline_misses_total") == 2
    assert d.value("liaison_ticket_resolution_seconds_count", outcome="expired") == 2
    assert asyncio.run(d.desk.expire_due()) == []
    assert sorted(d.changed) == sorted([first, second])
    assert d.value("liaison_tickets", state="pending") == 1
    assert d.value("liaison_tickets", state="expired") == 2
    assert d.tickets.get(later).state is TicketState.PENDING


def test_the_deadline_gauges_at_scrape_time(d: Desk) -> None:
    d.open(10)
    assert d.value("liaison_tickets_pending_deadline_used_max") == 0
    d.clock.now += timedelta(hours=7, minutes=54)  # 79%
    assert d.value("liaison_tickets_pending_deadline_used", bucket="50to80") == 1
    assert d.value("liaison_tickets_pending_deadline_used", bucket="80to100") == 0
    d.clock.now += timedelta(minutes=6)  # 80%
    assert d.value("liaison_tickets_pending_deadline_used", bucket="80to100") == 1
    assert d.value("liaison_tickets_pending_deadline_used_max") == pytest.approx(0.8)


def test_deadline_buckets_bounds() -> None:
    assert deadline_buckets([0.0, 0.49, 0.5, 0.79, 0.8, 0.99, 1.0, 3.0]) == {
        "lt50": 2,
        "50to80": 2,
        "80to100": 2,
        "overdue": 2,
    }


def test_a_ticket_survives_the_wire(d: Desk) -> None:
    tid = d.open()
    asyncio.run(d.desk.approve(tid, "alice", "ok", ["photo"]))
    ticket = d.tickets.get(tid)
    assert ticket_from_proto(ticket_to_proto(ticket)) == ticket


def _short(tmp_path: Path) -> Path:
    """A socket path short enough for sun_path whatever pytest's temp folder is."""
    return tmp_path / "a.sock"


def test_the_socket_is_0600_replaces_a_stale_one_and_goes_at_stop(d: Desk, tmp_path: Path) -> None:
    path = _short(tmp_path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a crashed node's socket: the file, no one listening

    async def run() -> None:
        server = AdminServer(d.desk, path)
        await server.start()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        second = AdminServer(d.desk, path)
        with pytest.raises(AdminSocketError, match="another process answers"):
            await second.start()

        def ask() -> list[str]:
            with AdminClient(path) as client:
                return [t.id for t in client.list(TicketState.PENDING)]

        tid = d.open()
        assert await asyncio.to_thread(ask) == [tid]

        def unknown() -> None:
            with AdminClient(path) as client:
                client.get("tkt_none")

        with pytest.raises(AdminError, match="no ticket tkt_none") as err:
            await asyncio.to_thread(unknown)
        assert err.value.reason == "unknown_ticket"
        await server.stop()
        assert not path.exists()

    asyncio.run(run())


def test_a_file_in_the_sockets_place_is_not_removed(d: Desk, tmp_path: Path) -> None:
    path = _short(tmp_path)
    path.write_text("the operator's notes")
    with pytest.raises(AdminSocketError, match="is not a socket"):
        asyncio.run(AdminServer(d.desk, path).start())
    assert path.read_text() == "the operator's notes"
