"""The operator's side of tickets, done by the running node: each decision is one ticket
transition (:mod:`node.tickets`) and one audit entry naming the operator and the reason,
counted; and tickets past their deadline are moved to ``expired`` by the node itself.

Why the node does it and not the command an operator runs: the audit log has exactly one
writer, the running node (a file log is locked by it), and no transition may go
unaudited. So ``liaison tickets approve|refuse`` asks the node over its admin socket
(:mod:`node.rpc.admin`), and the node calls this desk.

The transition comes first (a conditional UPDATE: of two operators deciding at once,
exactly one wins, and the loser's TicketError says who won), then its audit entry. An entry
that cannot be written after the transition succeeded is reported to the operator as an
AuditError naming the ticket (and counted in ``liaison_audit_failures_total``): the
decision stands in the database, and the node's log says why its entry is missing.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from node.audit.entries import AuditError, AuditRecord, canonical, new_entry_id
from node.audit.log import AuditLog
from node.database import StoreUnavailable
from node.metrics import NodeMetrics
from node.received import PREFIX as RECEIVED_PREFIX
from node.received import ReceivedRecord, ReceivedStore
from node.records import StoredRecord
from node.store import RecordStore
from node.tickets import Ticket, TicketState, TicketStore

log = logging.getLogger("liaison.node")

# The audit entries' methods: not RPCs a peer can call, but the transitions an operator
# (or the node's clock) made.
APPROVE, REFUSE, EXPIRE = "TicketApprove", "TicketRefuse", "TicketExpire"
# The machine-readable reasons a ticket that was not approved records.
REFUSED_BY_OPERATOR = "refused_by_operator"
TICKET_EXPIRED = "ticket_expired"


@dataclass(frozen=True, slots=True)
class Decided:
    """A ticket as a transition left it, and the audit entry that records the transition."""

    ticket: Ticket
    audit_entry: str


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="microseconds")


def ticket_digest(ticket: Ticket) -> str:
    """SHA-256 of the ticket's state after a transition (canonical JSON): the audit entry's
    "response", what the node left the ticket as."""
    doc = {
        "id": ticket.id,
        "state": ticket.state.value,
        "decided_at": _iso(ticket.decided_at),
        "operator": ticket.operator,
        "reason": ticket.reason,
        "withheld": list(ticket.withheld),
    }
    return hashlib.sha256(canonical(doc)).hexdigest()


class TicketDesk:
    """Tickets as the node's operators work them: list, read, approve, refuse, expire.

    ``now`` is the clock (injectable for tests); the stores are synchronous and run in a
    worker thread, never on the event loop. ``on_change(ticket_id)`` is told of each
    transition once it is audited (the node wakes that ticket's WatchTicket streams)."""

    def __init__(
        self,
        tickets: TicketStore,
        records: RecordStore,
        audit: AuditLog,
        metrics: NodeMetrics,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        received: ReceivedStore | None = None,
        on_change: Callable[[str], None] = lambda ticket_id: None,
    ) -> None:
        self._on_change = on_change
        self._tickets = tickets
        self._records = records
        self._received = received
        self._audit = audit
        self._metrics = metrics
        self._now = now

    async def list(self, state: TicketState | None = None, limit: int = 100) -> list[Ticket]:
        return await asyncio.to_thread(self._tickets.list, state, None, limit)

    async def get(self, ticket_id: str) -> Ticket:
        return await asyncio.to_thread(self._tickets.get, ticket_id)

    async def approve(
        self, ticket_id: str, operator: str, reason: str = "", extra_redact: Iterable[str] = ()
    ) -> Decided:
        """Approve, withholding ``extra_redact`` on top of the policy's redactions: each must
        name a payload field of the ticket's record (``unknown_field`` otherwise)."""
        extra = tuple(extra_redact)
        asked: dict[str, object] = {"action": "approve", "id": ticket_id, "operator": operator}
        asked |= {"reason": reason, "extra_redact": sorted(extra)}

        def transition() -> Ticket:
            fields = self._fields(self._tickets.get(ticket_id).record_ref)
            return self._tickets.approve(
                ticket_id, operator, self._now(), extra_redact=extra, fields=fields, reason=reason
            )

        ticket = await asyncio.to_thread(transition)
        return await self._audited(APPROVE, ticket, asked)

    async def refuse(self, ticket_id: str, operator: str, reason: str) -> Decided:
        """Refuse; without a reason the store refuses it (``reason_required``)."""
        asked = {"action": "refuse", "id": ticket_id, "operator": operator, "reason": reason}
        ticket = await asyncio.to_thread(
            self._tickets.refuse, ticket_id, operator, reason, self._now()
        )
        return await self._audited(REFUSE, ticket, asked)

    async def expire_due(self) -> builtins.list[Decided]:
        """Move every pending ticket past its deadline to ``expired``; each gets its audit
        entry (written together, in one group commit) and counts as a deadline miss."""
        moved = await asyncio.to_thread(self._tickets.expire_due, self._now())
        return list(
            await asyncio.gather(
                *(self._audited(EXPIRE, t, {"action": "expire", "id": t.id}) for t in moved)
            )
        )

    async def expire_every(self, interval: float) -> None:
        """The node's expiry job: never stops on a failure (logged; tried again next time)."""
        while True:
            await asyncio.sleep(interval)
            try:
                expired = await self.expire_due()
            except (StoreUnavailable, AuditError) as exc:
                log.error("could not expire tickets past their deadline: %s", exc)
                continue
            for done in expired:
                log.info(
                    "ticket %s of %s expired at its deadline (audit entry %s)",
                    done.ticket.id,
                    done.ticket.requester,
                    done.audit_entry,
                )

    def _fields(self, record_ref: str) -> tuple[str, ...]:
        """The payload field names of a ticket's record (none if it is gone: then no
        redaction can be added, since none would withhold anything)."""
        record: StoredRecord | ReceivedRecord | None
        if record_ref.startswith(RECEIVED_PREFIX):  # a received record being passed on
            record = None if self._received is None else self._received.get(record_ref)
        else:
            record = self._records.get(record_ref)
        return () if record is None else tuple(record.payload)

    async def _audited(self, method: str, ticket: Ticket, asked: Mapping[str, object]) -> Decided:
        """The transition's one audit entry, durable; then it is counted."""
        approved = ticket.state is TicketState.APPROVED
        reasons = {REFUSE: (REFUSED_BY_OPERATOR,), EXPIRE: (TICKET_EXPIRED,)}.get(method, ())
        record = AuditRecord(
            entry_id=new_entry_id(),
            time=_iso(self._now()).replace("+00:00", "Z"),
            peer=ticket.requester,
            method=method,
            purpose=ticket.purpose[:64],
            legal_basis=ticket.legal_basis.value,
            decision="allow" if approved else "deny",
            reasons=reasons,
            policy_revision="",
            request_sha256=hashlib.sha256(canonical(asked)).hexdigest(),
            response_sha256=ticket_digest(ticket),
            category=ticket.category[:64],
            case_reference=ticket.case_reference[:128],
            ticket=ticket.id,
            withheld=ticket.extra_redact,
            operator=ticket.operator,
            note=ticket.reason,
        )
        try:
            written = await self._audit.append(record)
        except AuditError as exc:
            self._metrics.audit_failures.inc()
            # A transition the log never recorded does not stand: put it back.
            try:
                undone = await asyncio.to_thread(self._tickets.undo, ticket)
            except StoreUnavailable as store_exc:
                log.error("could not undo unaudited ticket %s: %s", ticket.id, store_exc)
                undone = False
            if undone:
                log.error("ticket %s left pending: its audit entry failed: %s", ticket.id, exc)
                raise AuditError(
                    f"ticket {ticket.id} is unchanged (still pending): the audit log could not "
                    f"record the {method} ({exc}); try again once the node's audit log is "
                    "writable (see the node's log)"
                ) from None
            log.error("ticket %s is %s; its audit entry failed: %s", ticket.id, ticket.state, exc)
            raise AuditError(
                f"ticket {ticket.id} is {ticket.state}, but its audit entry could not be "
                f"written ({exc}): see the node's log"
            ) from None
        self._metrics.audit_entries.inc()
        self._metrics.count_ticket(ticket)
        self._on_change(ticket.id)
        return Decided(ticket, written)
