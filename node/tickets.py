"""Step-2 requests that policy sent to a human (tickets), kept in the node's database.

A Fetch whose decision carries ``require_approval`` opens a ticket; an operator approves or
refuses it before its legal deadline, or it expires; the requester may withdraw it, and
takes an approved record exactly once. Replicas of a node and several operators work the
same tickets, so every transition is ONE conditional UPDATE (``WHERE id = :id AND state =
'pending' AND deadline_at > :now``) whose returned row says whether it happened: of two
operators approving at once, exactly one wins. Nothing is read first to decide what to write
(it could be stale by the write); only when nothing changed is the row read, to say why.

The clock is a parameter everywhere (``now``), so expiry, deadlines and tests agree on it.
Plain frozen objects go in and out; no table row leaves this module.

The objects and the error tree are in :mod:`node.ticket_model`; every name is re-exported
here, so callers import from this module.

A database that cannot answer raises :class:`node.store.StoreUnavailable`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, Row, Text, func, insert, select, update
from sqlmodel import Field, SQLModel

from federation.vocabulary import LegalBasis
from node.database import answering, from_db, new_id, open_engine, to_db
from node.ticket_model import (
    AlreadyDelivered,
    InvalidDecision,
    NotYourTicket,
    PendingAge,
    Ticket,
    TicketError,
    TicketExpired,
    TicketNotApproved,
    TicketNotPending,
    TicketState,
    UnknownTicket,
)

__all__ = [
    "MAX_OPERATOR",
    "MAX_REASON",
    "AlreadyDelivered",
    "InvalidDecision",
    "NotYourTicket",
    "PendingAge",
    "Ticket",
    "TicketError",
    "TicketExpired",
    "TicketNotApproved",
    "TicketNotPending",
    "TicketRow",
    "TicketState",
    "TicketStore",
    "UnknownTicket",
]

MAX_REASON = 1000  # characters: a decision's reason is a sentence or two, not a file
MAX_OPERATOR = 128


class TicketRow(SQLModel, table=True):
    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_state_deadline", "state", "deadline_at"),)

    id: str = Field(primary_key=True, max_length=32)
    requester: str = Field(max_length=64, index=True)
    record_ref: str = Field(max_length=32)
    category: str = Field(max_length=32)
    purpose: str = Field(max_length=64)
    legal_basis: str = Field(max_length=32)
    legal_reference: str = Field(sa_type=Text)
    case_reference: str = Field(sa_type=Text)
    handling_code: str = Field(max_length=8)
    redact: str = Field(sa_type=Text)  # JSON list, sorted
    extra_redact: str = Field(sa_type=Text)  # JSON list, sorted
    retention_days: int
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    deadline_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    state: str = Field(max_length=16)
    decided_at: datetime | None = Field(sa_column=Column(DateTime(timezone=True)))
    operator: str = Field(sa_type=Text)
    reason: str = Field(sa_type=Text)
    delivered_at: datetime | None = Field(sa_column=Column(DateTime(timezone=True)))
    request_entry: str = Field(max_length=64)


_t = TicketRow.__table__  # type: ignore[attr-defined]
_PENDING = TicketState.PENDING.value


def _ticket(row: Row[Any]) -> Ticket:
    stored = dict(row._mapping)
    times = ("created_at", "deadline_at", "decided_at", "delivered_at")
    return Ticket(
        **{
            **stored,
            **{name: from_db(stored[name]) for name in times},
            "legal_basis": LegalBasis(stored["legal_basis"]),
            "state": TicketState(stored["state"]),
            "redact": tuple(json.loads(stored["redact"])),
            "extra_redact": tuple(json.loads(stored["extra_redact"])),
        }
    )


def _text(ticket_id: str, value: str, field: str, limit: int, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidDecision(ticket_id, f"{field}_required", f"a {field} is required")
    if len(value) > limit:
        raise InvalidDecision(
            ticket_id, f"{field}_too_long", f"the {field} is longer than {limit} characters"
        )
    return value


class TicketStore:
    """The tickets of one node, shared by its replicas and operators through the database.

    Synchronous: a server calls it from a worker thread, never on its event loop.
    """

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url)

    def create_schema(self) -> None:
        with answering(self._engine, "creating the tickets table"):
            SQLModel.metadata.create_all(self._engine, tables=[_t])

    def open(
        self,
        *,
        requester: str,
        record_ref: str,
        category: str,
        purpose: str,
        legal_basis: LegalBasis,
        legal_reference: str,
        case_reference: str,
        handling_code: str,
        redact: Iterable[str],
        retention_days: int,
        deadline_at: datetime,
        request_entry: str,
        now: datetime,
    ) -> Ticket:
        """A new pending ticket for a Fetch the policy sent to a human."""
        if to_db(deadline_at) <= to_db(now):
            raise ValueError("a ticket's deadline must lie after its opening")
        if retention_days < 1:
            raise ValueError("retention_days must be a whole number of days, at least 1")
        row = {
            "id": new_id("tkt_"),
            "requester": requester,
            "record_ref": record_ref,
            "category": category,
            "purpose": purpose,
            "legal_basis": LegalBasis(legal_basis).value,
            "legal_reference": legal_reference,
            "case_reference": case_reference,
            "handling_code": handling_code,
            "redact": json.dumps(sorted(set(redact))),
            "extra_redact": "[]",
            "retention_days": retention_days,
            "created_at": to_db(now),
            "deadline_at": to_db(deadline_at),
            "state": _PENDING,
            "decided_at": None,
            "operator": "",
            "reason": "",
            "delivered_at": None,
            "request_entry": request_entry,
        }
        with answering(self._engine, "opening a ticket"), self._engine.begin() as conn:
            return _ticket(conn.execute(insert(_t).values(row).returning(*_t.c)).one())

    def approve(
        self,
        ticket_id: str,
        operator: str,
        now: datetime,
        *,
        extra_redact: Iterable[str] = (),
        fields: Collection[str] = (),
        reason: str = "",
    ) -> Ticket:
        """Approve a pending ticket before its deadline, possibly withholding more fields.

        ``fields`` are the record's payload field names: a redaction naming any other field is
        refused (``unknown_field``), since it would withhold nothing while the operator
        believes it does. The policy's own ``redact`` is kept whatever is passed.
        """
        operator = _text(ticket_id, operator, "operator", MAX_OPERATOR, required=True)
        reason = _text(ticket_id, reason, "reason", MAX_REASON, required=False)
        extra = sorted({f.strip() for f in extra_redact})
        unknown = tuple(f for f in extra if f not in fields)
        if unknown:
            known = ", ".join(sorted(fields)) or "none"
            message = (
                f"no such field in the record: {', '.join(unknown)} "
                f"(the record's payload fields: {known})"
            )
            raise InvalidDecision(ticket_id, "unknown_field", message, unknown)
        values = {"operator": operator, "reason": reason, "extra_redact": json.dumps(extra)}
        return self._decide(ticket_id, TicketState.APPROVED, now, values)

    def refuse(self, ticket_id: str, operator: str, reason: str, now: datetime) -> Ticket:
        """Refuse a pending ticket; the requester is owed a reason, so one is required."""
        operator = _text(ticket_id, operator, "operator", MAX_OPERATOR, required=True)
        reason = _text(ticket_id, reason, "reason", MAX_REASON, required=True)
        values = {"operator": operator, "reason": reason}
        return self._decide(ticket_id, TicketState.REFUSED, now, values)

    def withdraw(self, ticket_id: str, requester: str, now: datetime) -> Ticket:
        """The requester no longer needs the record; only the node that opened it may."""
        return self._decide(ticket_id, TicketState.WITHDRAWN, now, {}, requester=requester)

    def _decide(
        self,
        ticket_id: str,
        state: TicketState,
        now: datetime,
        values: dict[str, Any],
        *,
        requester: str | None = None,
    ) -> Ticket:
        now = to_db(now)
        conditions = [_t.c.id == ticket_id, _t.c.state == _PENDING, _t.c.deadline_at > now]
        if requester is not None:
            conditions.append(_t.c.requester == requester)
        stmt = (
            update(_t)
            .where(*conditions)
            .values(state=state.value, decided_at=now, **values)
            .returning(*_t.c)
        )
        return self._update(stmt, ticket_id, requester, f"moving a ticket to {state}")

    def expire_due(self, now: datetime) -> builtins.list[Ticket]:
        """Move every pending ticket whose deadline passed to ``expired``, in one statement,
        returning those it moved (the caller audits each and tells its requester)."""
        now = to_db(now)
        stmt = (
            update(_t)
            .where(_t.c.state == _PENDING, _t.c.deadline_at <= now)
            .values(state=TicketState.EXPIRED.value, decided_at=now)
            .returning(*_t.c)
        )
        with answering(self._engine, "expiring tickets"), self._engine.begin() as conn:
            moved = [_ticket(row) for row in conn.execute(stmt)]
        return sorted(moved, key=lambda t: (t.deadline_at, t.id))

    def mark_delivered(self, ticket_id: str, requester: str, now: datetime) -> Ticket:
        """Record that the approved record went to its requester: once, and only to it."""
        stmt = (
            update(_t)
            .where(
                _t.c.id == ticket_id,
                _t.c.requester == requester,
                _t.c.state == TicketState.APPROVED.value,
                _t.c.delivered_at.is_(None),
            )
            .values(delivered_at=to_db(now))
            .returning(*_t.c)
        )
        return self._update(stmt, ticket_id, requester, "recording a delivery", delivery=True)

    def undo(self, ticket: Ticket) -> bool:
        """Put back what one transition did, when its audit entry could not be written: a
        decision goes back to pending, a delivery back to undelivered. Only while the row is
        exactly as that transition left it (nothing else moved it since); whether it was.

        Why: every transition is an audit entry. A decision the log never recorded must not
        stand, and a delivery the requester never received must not use up its ticket."""
        if ticket.delivered_at is not None:
            stmt = (
                update(_t)
                .where(_t.c.id == ticket.id, _t.c.delivered_at == to_db(ticket.delivered_at))
                .values(delivered_at=None)
            )
        elif ticket.decided_at is not None and ticket.state is not TicketState.PENDING:
            stmt = (
                update(_t)
                .where(
                    _t.c.id == ticket.id,
                    _t.c.state == ticket.state.value,
                    _t.c.decided_at == to_db(ticket.decided_at),
                    _t.c.delivered_at.is_(None),
                )
                .values(state=_PENDING, decided_at=None, operator="", reason="", extra_redact="[]")
            )
        else:
            return False
        what = f"undoing a change to ticket {ticket.id}"
        with answering(self._engine, what), self._engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def _update(
        self,
        stmt: Any,
        ticket_id: str,
        requester: str | None,
        what: str,
        *,
        delivery: bool = False,
    ) -> Ticket:
        """Run one conditional UPDATE; if it changed nothing, read the row and say why."""
        with answering(self._engine, what):
            with self._engine.begin() as conn:
                row = conn.execute(stmt).one_or_none()
            if row is not None:
                return _ticket(row)
            current = self._find(ticket_id)
        if current is None:
            raise UnknownTicket(ticket_id, f"no ticket {ticket_id}")
        if requester is not None and current.requester != requester:
            raise NotYourTicket(ticket_id, f"ticket {ticket_id} was not opened by {requester}")
        if delivery:
            if current.state is not TicketState.APPROVED:
                raise TicketNotApproved(current)
            raise AlreadyDelivered(current)
        if current.state is not TicketState.PENDING:
            raise TicketNotPending(current)
        raise TicketExpired(current)

    def get(self, ticket_id: str, requester: str | None = None) -> Ticket:
        """The ticket ``ticket_id``; with ``requester``, only if that node opened it."""
        with answering(self._engine, "reading a ticket"):
            ticket = self._find(ticket_id)
        if ticket is None:
            raise UnknownTicket(ticket_id, f"no ticket {ticket_id}")
        if requester is not None and ticket.requester != requester:
            raise NotYourTicket(ticket_id, f"ticket {ticket_id} was not opened by {requester}")
        return ticket

    def _find(self, ticket_id: str) -> Ticket | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_t).where(_t.c.id == ticket_id)).one_or_none()
        return None if row is None else _ticket(row)

    def list(
        self,
        state: TicketState | str | None = None,
        requester: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Ticket]:
        """Tickets, oldest first, optionally of one state (a name from the CLI is checked:
        ValueError) and one requester."""
        stmt = select(_t).order_by(_t.c.created_at, _t.c.id).limit(max(limit, 0))
        if state is not None:
            stmt = stmt.where(_t.c.state == TicketState(state).value)
        if requester is not None:
            stmt = stmt.where(_t.c.requester == requester)
        with answering(self._engine, "listing tickets"), self._engine.connect() as conn:
            return [_ticket(row) for row in conn.execute(stmt)]

    def open_by_state(self) -> dict[TicketState, int]:
        """How many tickets are in each state (every state present, zero included)."""
        stmt = select(_t.c.state, func.count()).group_by(_t.c.state)
        with answering(self._engine, "counting tickets"), self._engine.connect() as conn:
            counts = {TicketState(state): int(n) for state, n in conn.execute(stmt)}
        return {state: counts.get(state, 0) for state in TicketState}

    def pending_ages(self, now: datetime) -> builtins.list[PendingAge]:
        """Age and allowed time of every pending ticket, oldest first (times only)."""
        now = to_db(now)
        stmt = (
            select(_t.c.created_at, _t.c.deadline_at)
            .where(_t.c.state == _PENDING)
            .order_by(_t.c.created_at)
        )
        with answering(self._engine, "reading ticket ages"), self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            PendingAge(now - from_db(created), from_db(deadline) - from_db(created))
            for created, deadline in rows
        ]

    def close(self) -> None:
        self._engine.dispose()
