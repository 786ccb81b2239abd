"""This node's own notices and its outbox: one row per (notice, recipient) saying which
version must reach that recipient, and how far its delivery got.

Why an outbox in the database and not a queue in memory: delivery is at-least-once across
restarts. A publication or withdrawal is written here first (one transaction with its
recipients' rows); the delivery job (:mod:`node.notice_delivery`) then works the rows until
each is `delivered`, `refused` (with the recipient's reasons) or `expired`. A recipient that
was down gets it when it is back, and a node that was down itself resumes where it was.

Every change is a conditional UPDATE over what the caller read (version, attempts), so
replicas of one node working the same outbox never both settle one attempt, and a withdrawal
made while a publication is in flight is never overwritten by that publication's outcome.

A database that cannot answer raises :class:`node.database.StoreUnavailable`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, Index, Row, Text, func, insert, select, update
from sqlmodel import Field, SQLModel

from node.database import answering, from_db, open_engine, to_db
from node.notice_model import (
    Delivery,
    DeliveryAction,
    DeliveryState,
    NoticeError,
    NoticeState,
    StoredNotice,
    UnknownNotice,
)
from node.notices import identifiers_json, stored_notice


class PublishedNoticeRow(SQLModel, table=True):
    __tablename__ = "notices_published"

    notice_id: str = Field(primary_key=True, max_length=64)
    publisher: str = Field(max_length=64)
    version: int
    category: str = Field(max_length=32)
    identifiers: str = Field(sa_type=Text)
    summary: str = Field(sa_type=Text)
    handling_code: str = Field(max_length=8)
    to_all_members: bool = Field(sa_column=Column(Boolean, nullable=False))
    recipients: str = Field(sa_type=Text)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    active_until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    state: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    purpose: str = Field(max_length=64)
    legal_basis: str = Field(max_length=32)
    legal_reference: str = Field(sa_type=Text)
    case_reference: str = Field(sa_type=Text)
    operator: str = Field(sa_type=Text)


class OutboxRow(SQLModel, table=True):
    __tablename__ = "notice_outbox"
    __table_args__ = (Index("ix_notice_outbox_state_next", "state", "next_attempt_at"),)

    notice_id: str = Field(primary_key=True, max_length=64)
    recipient: str = Field(primary_key=True, max_length=64)
    version: int
    action: str = Field(max_length=16)
    state: str = Field(max_length=16)
    attempts: int
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_reason: str = Field(sa_type=Text)
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


_p = PublishedNoticeRow.__table__  # type: ignore[attr-defined]
_o = OutboxRow.__table__  # type: ignore[attr-defined]
_PENDING = DeliveryState.PENDING.value
# The longest reason kept for a delivery (the recipient's reasons, or a transport error).
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class Published:
    """One of this node's notices, with what its requests carry beside it."""

    notice: StoredNotice
    legal_reference: str
    case_reference: str
    operator: str


def _published(row: Row[Any]) -> Published:
    m = row._mapping
    return Published(stored_notice(row), m["legal_reference"], m["case_reference"], m["operator"])


def _delivery(row: Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(
        notice_id=m["notice_id"],
        recipient=m["recipient"],
        version=int(m["version"]),
        action=DeliveryAction(m["action"]),
        state=DeliveryState(m["state"]),
        attempts=int(m["attempts"]),
        next_attempt_at=from_db(m["next_attempt_at"]),
        last_reason=m["last_reason"],
        updated_at=from_db(m["updated_at"]),
    )


class OutboxStore:
    """This node's notices and their deliveries. Synchronous: run in a worker thread."""

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url)

    def create_schema(self) -> None:
        with answering(self._engine, "creating the notice outbox"):
            SQLModel.metadata.create_all(self._engine, tables=[_p, _o])

    def publish(
        self,
        notice: StoredNotice,
        *,
        legal_reference: str,
        case_reference: str,
        operator: str,
        now: datetime,
    ) -> tuple[Published, builtins.list[Delivery]]:
        """Store a new notice (version 1) and one pending delivery per recipient, in one
        transaction: from here on its delivery survives any restart."""
        row = {
            "notice_id": notice.notice_id,
            "publisher": notice.publisher,
            "version": notice.version,
            "category": notice.category,
            "identifiers": identifiers_json(notice.identifiers),
            "summary": notice.summary,
            "handling_code": notice.handling_code,
            "to_all_members": notice.to_all_members,
            "recipients": json.dumps(list(notice.recipients)),
            "expires_at": to_db(notice.expires_at),
            "active_until": to_db(notice.active_until),
            "state": notice.state.value,
            "created_at": to_db(now),
            "updated_at": to_db(now),
            "purpose": notice.purpose,
            "legal_basis": notice.legal_basis.value,
            "legal_reference": legal_reference,
            "case_reference": case_reference,
            "operator": operator,
        }
        deliveries = [
            {
                "notice_id": notice.notice_id,
                "recipient": recipient,
                "version": notice.version,
                "action": DeliveryAction.PUBLISH.value,
                "state": _PENDING,
                "attempts": 0,
                "next_attempt_at": to_db(now),
                "last_reason": "",
                "updated_at": to_db(now),
            }
            for recipient in notice.recipients
        ]
        with answering(self._engine, "publishing a notice"), self._engine.begin() as conn:
            stored = conn.execute(insert(_p).values(row).returning(*_p.c)).one()
            if deliveries:
                conn.execute(insert(_o), deliveries)
        return _published(stored), self.deliveries(notice.notice_id)

    def withdraw(self, notice_id: str, now: datetime) -> tuple[Published, builtins.list[Delivery]]:
        """Withdraw an active notice: its version goes up by one, and every recipient that
        has it or is still to get it is owed the withdrawal (pending again). A recipient that
        refused it or never got it before it expired is left as it is."""
        stmt = (
            update(_p)
            .where(_p.c.notice_id == notice_id, _p.c.state == NoticeState.ACTIVE.value)
            .values(
                version=_p.c.version + 1,
                state=NoticeState.WITHDRAWN.value,
                updated_at=to_db(now),
            )
            .returning(*_p.c)
        )
        with answering(self._engine, "withdrawing a notice"), self._engine.begin() as conn:
            row = conn.execute(stmt).one_or_none()
            if row is not None:
                conn.execute(
                    update(_o)
                    .where(
                        _o.c.notice_id == notice_id,
                        _o.c.state.in_([_PENDING, DeliveryState.DELIVERED.value]),
                    )
                    .values(
                        version=int(row.version),
                        action=DeliveryAction.WITHDRAW.value,
                        state=_PENDING,
                        attempts=0,
                        next_attempt_at=to_db(now),
                        last_reason="",
                        updated_at=to_db(now),
                    )
                )
        if row is None:
            current = self.get(notice_id)  # UnknownNotice if there is none
            raise NoticeError(
                "notice_not_active",
                f"notice {notice_id} is already {current.notice.state} "
                f"(version {current.notice.version})",
            )
        return _published(row), self.deliveries(notice_id)

    def get(self, notice_id: str) -> Published:
        with answering(self._engine, "reading a notice"), self._engine.connect() as conn:
            row = conn.execute(select(_p).where(_p.c.notice_id == notice_id)).one_or_none()
        if row is None:
            raise UnknownNotice(notice_id)
        return _published(row)

    def list(self, limit: int = 100) -> builtins.list[StoredNotice]:
        """This node's notices, newest first."""
        stmt = select(_p).order_by(_p.c.created_at.desc(), _p.c.notice_id).limit(max(limit, 0))
        with answering(self._engine, "listing notices"), self._engine.connect() as conn:
            return [stored_notice(row) for row in conn.execute(stmt)]

    def deliveries(self, notice_id: str) -> builtins.list[Delivery]:
        stmt = select(_o).where(_o.c.notice_id == notice_id).order_by(_o.c.recipient)
        with answering(self._engine, "reading deliveries"), self._engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(stmt)]

    def due(self, now: datetime, limit: int = 50) -> builtins.list[Delivery]:
        """Pending deliveries whose next attempt is due, most overdue first."""
        stmt = (
            select(_o)
            .where(_o.c.state == _PENDING, _o.c.next_attempt_at <= to_db(now))
            .order_by(_o.c.next_attempt_at, _o.c.notice_id, _o.c.recipient)
            .limit(limit)
        )
        with answering(self._engine, "reading the outbox"), self._engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(stmt)]

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (None: nothing pending)."""
        stmt = select(func.min(_o.c.next_attempt_at)).where(_o.c.state == _PENDING)
        with answering(self._engine, "reading the outbox"), self._engine.connect() as conn:
            when = conn.execute(stmt).scalar_one_or_none()
        return None if when is None else from_db(when)

    def claim(self, delivery: Delivery, until: datetime, now: datetime) -> Delivery | None:
        """Take one attempt at `delivery`: its attempt count goes up and it is not due again
        before `until` (so a replica does not try it at the same time, and a node that dies
        mid-attempt retries it then). None if someone else claimed or changed it first."""
        stmt = (
            update(_o)
            .where(*self._unchanged(delivery))
            .values(attempts=delivery.attempts + 1, next_attempt_at=to_db(until))
            .values(updated_at=to_db(now))
            .returning(*_o.c)
        )
        with answering(self._engine, "claiming a delivery"), self._engine.begin() as conn:
            row = conn.execute(stmt).one_or_none()
        return None if row is None else _delivery(row)

    def settle(
        self,
        claimed: Delivery,
        state: DeliveryState,
        reason: str,
        next_attempt_at: datetime,
        now: datetime,
    ) -> Delivery | None:
        """Record an attempt's outcome, only over the claim it belongs to (a withdrawal
        made meanwhile stays owed); None if the row moved on."""
        stmt = (
            update(_o)
            .where(*self._unchanged(claimed))
            .values(
                state=state.value,
                last_reason=reason[:MAX_REASON],
                next_attempt_at=to_db(next_attempt_at),
                updated_at=to_db(now),
            )
            .returning(*_o.c)
        )
        with answering(self._engine, "recording a delivery"), self._engine.begin() as conn:
            row = conn.execute(stmt).one_or_none()
        return None if row is None else _delivery(row)

    @staticmethod
    def _unchanged(d: Delivery) -> Sequence[Any]:
        return (
            _o.c.notice_id == d.notice_id,
            _o.c.recipient == d.recipient,
            _o.c.version == d.version,
            _o.c.state == _PENDING,
            _o.c.attempts == d.attempts,
        )

    def counts_by_state(self) -> dict[str, int]:
        """Deliveries in each state (every state present, zero included)."""
        stmt = select(_o.c.state, func.count()).group_by(_o.c.state)
        with answering(self._engine, "counting deliveries"), self._engine.connect() as conn:
            counts = {str(s): int(n) for s, n in conn.execute(stmt)}
        return {state.value: counts.get(state.value, 0) for state in DeliveryState}

    def close(self) -> None:
        self._engine.dispose()
