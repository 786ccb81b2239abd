"""The running node forgets what it received once the owner's retention ends, and says so.

A record received from a peer may be kept only as long as its owner granted
(``retention_days``, kept as ``retain_until`` by :mod:`node.received`). The node runs this
job at start and then every ``[received] purge_interval_s``: every record past its retention
is deleted in one transaction, which also notes each deletion as still to be audited; then
each noted deletion gets one audit entry (method ``ReceivedPurge``, the peer the record came
from, decision ``allow``, no payload value), is counted in
``liaison_received_purged_total{peer}``, and its note is dropped.

Deletion comes first because the retention is the owner's condition: a record is never kept
past it because the audit log is failing. The note makes sure the deletion is still
audited: one whose entry failed is audited by the next run. (Two replicas auditing the same
note at once may both write an entry: at least once, never never.)

Why the running node and not a command: the audit log has one writer, the running node
(as for tickets, :mod:`node.ticket_desk`), and a deletion the overseers cannot see would be
a deletion nobody can vouch for. ``liaison received purge`` purges directly only when no
node is running; the node audits those deletions when it next starts.
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
from node.received import Purged, ReceivedStore

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

    async def purge_due(self) -> list[tuple[Purged, str]]:
        """Delete every record whose retention ended, then audit every deletion not yet
        audited (these and any earlier ones); each with the id of its audit entry (written
        together, in one group commit). An audit failure is raised once the deletions that
        were audited have had their notes dropped."""
        now = self._now()
        await asyncio.to_thread(self._received.purge_due, now)
        pending = await asyncio.to_thread(self._received.unaudited_purges)
        results = await asyncio.gather(
            *(self._audited(purged, now) for purged in pending), return_exceptions=True
        )
        done = [
            (purged, entry)
            for purged, entry in zip(pending, results, strict=True)
            if isinstance(entry, str)
        ]
        await asyncio.to_thread(self._received.purges_audited, [p.id for p, _ in done])
        for failure in results:
            if isinstance(failure, BaseException):
                raise failure
        return done

    async def purge_every(self, interval: float) -> None:
        """The node's purge job, at start and every `interval`: never stops on a failure
        (logged; tried again next time)."""
        while True:
            try:
                purged = await self.purge_due()
            except (StoreUnavailable, AuditError) as exc:
                log.error(
                    "could not purge or audit received records past their retention (tried "
                    "again in %s s; a deletion not audited yet stays noted until it is): %s",
                    interval,
                    exc,
                )
                purged = []
            for record, entry in purged:
                log.info(
                    "received record %s from %s purged at the end of its retention "
                    "(audit entry %s)",
                    record.id,
                    record.from_node,
                    entry,
                )
            await asyncio.sleep(interval)

    async def _audited(self, record: Purged, now: datetime) -> str:
        """The deletion's one audit entry: which record, from whom, under what ground and
        until when it was kept, and when it was deleted; never a payload value."""
        asked = {"action": "purge", "id": record.id}
        done = {
            "id": record.id,
            "retain_until": _iso(record.retain_until),
            "purged_at": _iso(record.purged_at),
        }
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
            log.error(
                "received record %s was purged; its audit entry failed (tried again next run): %s",
                record.id,
                exc,
            )
            raise
        self._metrics.audit_entries.inc()
        self._metrics.received_purged.labels(record.from_node).inc()
        return written
