"""The running node forgets what it received once the owner's retention ends, and says so.

A record received from a peer may be kept only as long as its owner granted
(``retention_days``, kept as ``retain_until`` by :mod:`node.received`). The node runs this
job every ``[received] purge_interval_s``: every record past its retention is deleted in one
statement, then each deletion gets one audit entry (method ``ReceivedPurge``, the peer the
record came from, decision ``allow``, no payload value) and is counted in
``liaison_received_purged_total{peer}``.

Why the running node and not a command: the audit log has one writer, the running node
(as for tickets, :mod:`node.ticket_desk`), and a deletion the overseers cannot see would be
a deletion nobody can vouch for. ``liaison received purge`` purges directly only when no
node is running, and says that those deletions are not audited.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from node.audit.entries import AuditError, AuditRecord, canonical, new_entry_id
from node.audit.log import AuditLog
from node.database import StoreUnavailable
from node.metrics import NodeMetrics
from node.received import ReceivedRecord, ReceivedStore

log = logging.getLogger("liaison.node")

PURGE = "ReceivedPurge"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class ReceivedPurger:
    """Deletes received records past their retention, auditing and counting each.

    ``now`` is the clock (injectable for tests); the store is synchronous and runs in a
    worker thread, never on the event loop."""

    def __init__(
        self,
        received: ReceivedStore,
        audit: AuditLog,
        metrics: NodeMetrics,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._received = received
        self._audit = audit
        self._metrics = metrics
        self._now = now

    async def purge_due(self) -> list[tuple[ReceivedRecord, str]]:
        """Delete every record whose retention ended; each deleted record with the id of its
        audit entry (written together, in one group commit)."""
        now = self._now()
        gone = await asyncio.to_thread(self._received.purge_due, now)
        entries = await asyncio.gather(*(self._audited(record, now) for record in gone))
        return list(zip(gone, entries, strict=True))

    async def purge_every(self, interval: float) -> None:
        """The node's purge job: never stops on a failure (logged; tried again next time)."""
        while True:
            await asyncio.sleep(interval)
            try:
                purged = await self.purge_due()
            except (StoreUnavailable, AuditError) as exc:
                log.error("could not purge received records past their retention: %s", exc)
                continue
            for record, entry in purged:
                log.info(
                    "received record %s from %s purged at the end of its retention "
                    "(audit entry %s)",
                    record.id,
                    record.from_node,
                    entry,
                )

    async def _audited(self, record: ReceivedRecord, now: datetime) -> str:
        """The deletion's one audit entry: which record, from whom, under what ground and
        until when it was kept; never a payload value."""
        asked = {"action": "purge", "id": record.id}
        done = {"id": record.id, "retain_until": _iso(record.retain_until), "purged_at": _iso(now)}
        entry = AuditRecord(
            entry_id=new_entry_id(),
            time=_iso(now).replace("+00:00", "Z"),
            peer=record.from_node,
            method=PURGE,
            purpose=record.purpose[:64],
            legal_basis=record.legal_basis.value,
            decision="allow",
            reasons=(),
            policy_revision="",
            request_sha256=hashlib.sha256(canonical(asked)).hexdigest(),
            response_sha256=hashlib.sha256(canonical(done)).hexdigest(),
            category=record.category[:64],
            case_reference=record.case_reference[:128],
            ticket=record.ticket_id or "",
        )
        try:
            written = await self._audit.append(entry)
        except AuditError as exc:
            self._metrics.audit_failures.inc()
            log.error("received record %s was purged; its audit entry failed: %s", record.id, exc)
            raise
        self._metrics.audit_entries.inc()
        self._metrics.received_purged.labels(record.from_node).inc()
        return written
