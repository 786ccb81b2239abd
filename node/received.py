"""Records this node received from peers, kept with the restrictions that follow them.

A record fetched from another country is still that country's: its handling code, source
restrictions and origin decide whether this node may pass it on (its policy reads
:meth:`ReceivedRecord.policy_facts`), and the retention the owner granted decides how long it
may be kept (:meth:`ReceivedStore.purge_due` deletes it then, returning what it deleted so
the caller can audit and count each). This module stores and forgets; policy decides.

A database that cannot answer raises :class:`node.store.StoreUnavailable`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Row, Text, delete, insert, select
from sqlmodel import Field, SQLModel

from federation.vocabulary import LegalBasis
from node.database import answering, from_db, new_id, open_engine, to_db


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    """A record as received: the owner's reference and markings, the legal ground it came
    under, and the day it must be gone. Times are UTC."""

    id: str
    from_node: str
    record_ref: str
    category: str
    payload: Mapping[str, Any]
    handling_code: str
    source_restrictions: tuple[str, ...]
    origin_country: str
    purpose: str
    legal_basis: LegalBasis
    legal_reference: str
    case_reference: str
    ticket_id: str | None
    received_at: datetime
    retain_until: datetime

    def policy_facts(self) -> dict[str, Any]:
        """The ``record`` object of a Fetch policy input (policies/CONTRACT.md) for this record:
        facts only, never a payload value."""
        return {
            "category": self.category,
            "handling_code": self.handling_code,
            "source_restrictions": list(self.source_restrictions),
            "origin_country": self.origin_country,
        }


class ReceivedRow(SQLModel, table=True):
    __tablename__ = "received_records"

    id: str = Field(primary_key=True, max_length=32)
    from_node: str = Field(max_length=64, index=True)
    record_ref: str = Field(max_length=32)
    category: str = Field(max_length=32)
    payload: str = Field(sa_type=Text)  # JSON object
    handling_code: str = Field(max_length=8)
    source_restrictions: str = Field(sa_type=Text)  # JSON list of country codes
    origin_country: str = Field(max_length=2)
    purpose: str = Field(max_length=64)
    legal_basis: str = Field(max_length=32)
    legal_reference: str = Field(sa_type=Text)
    case_reference: str = Field(sa_type=Text)
    ticket_id: str | None = Field(default=None, max_length=32)
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    retain_until: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )


_r = ReceivedRow.__table__  # type: ignore[attr-defined]


def _received(row: Row[Any]) -> ReceivedRecord:
    return ReceivedRecord(
        id=row.id,
        from_node=row.from_node,
        record_ref=row.record_ref,
        category=row.category,
        payload=json.loads(row.payload),
        handling_code=row.handling_code,
        source_restrictions=tuple(json.loads(row.source_restrictions)),
        origin_country=row.origin_country,
        purpose=row.purpose,
        legal_basis=LegalBasis(row.legal_basis),
        legal_reference=row.legal_reference,
        case_reference=row.case_reference,
        ticket_id=row.ticket_id,
        received_at=from_db(row.received_at),
        retain_until=from_db(row.retain_until),
    )


class ReceivedStore:
    """Received records of one node, in the node's database (shared by its replicas).

    Synchronous: a server calls it from a worker thread, never on its event loop.
    """

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url)

    def create_schema(self) -> None:
        with answering(self._engine, "creating the received_records table"):
            SQLModel.metadata.create_all(self._engine, tables=[_r])

    def add(
        self,
        *,
        from_node: str,
        record_ref: str,
        category: str,
        payload: Mapping[str, Any],
        handling_code: str,
        source_restrictions: Iterable[str],
        origin_country: str,
        purpose: str,
        legal_basis: LegalBasis,
        legal_reference: str,
        case_reference: str,
        retention_days: int,
        received_at: datetime,
        ticket_id: str | None = None,
    ) -> ReceivedRecord:
        """Keep a received record until ``received_at`` + ``retention_days``, the time the
        owner's policy granted; a record with no retention is not kept at all."""
        if retention_days < 1:
            raise ValueError("retention_days must be a whole number of days, at least 1")
        if not isinstance(payload, Mapping):
            raise ValueError("a received record's payload must be a JSON object")
        received_at = to_db(received_at)
        row = {
            "id": new_id("rcv_"),
            "from_node": from_node,
            "record_ref": record_ref,
            "category": category,
            "payload": json.dumps(dict(payload), ensure_ascii=False, sort_keys=True),
            "handling_code": handling_code,
            "source_restrictions": json.dumps(sorted(set(source_restrictions))),
            "origin_country": origin_country,
            "purpose": purpose,
            "legal_basis": LegalBasis(legal_basis).value,
            "legal_reference": legal_reference,
            "case_reference": case_reference,
            "ticket_id": ticket_id,
            "received_at": received_at,
            "retain_until": received_at + timedelta(days=retention_days),
        }
        with answering(self._engine, "storing a received record"), self._engine.begin() as conn:
            return _received(conn.execute(insert(_r).values(row).returning(*_r.c)).one())

    def get(self, received_id: str) -> ReceivedRecord | None:
        with answering(self._engine, "reading a received record"), self._engine.connect() as conn:
            row = conn.execute(select(_r).where(_r.c.id == received_id)).one_or_none()
        return None if row is None else _received(row)

    def list(
        self,
        *,
        from_node: str | None = None,
        category: str | None = None,
        case_reference: str | None = None,
        limit: int = 100,
    ) -> builtins.list[ReceivedRecord]:
        """Received records, oldest first, optionally narrowed."""
        stmt = select(_r).order_by(_r.c.received_at, _r.c.id).limit(max(limit, 0))
        if from_node is not None:
            stmt = stmt.where(_r.c.from_node == from_node)
        if category is not None:
            stmt = stmt.where(_r.c.category == category)
        if case_reference is not None:
            stmt = stmt.where(_r.c.case_reference == case_reference)
        with answering(self._engine, "listing received records"), self._engine.connect() as conn:
            return [_received(row) for row in conn.execute(stmt)]

    def purge_due(self, now: datetime) -> builtins.list[ReceivedRecord]:
        """Delete every record whose retention ended (``retain_until <= now``) in one
        statement, returning what it deleted: two purging replicas never both report one."""
        stmt = delete(_r).where(_r.c.retain_until <= to_db(now)).returning(*_r.c)
        with answering(self._engine, "purging received records"), self._engine.begin() as conn:
            gone = [_received(row) for row in conn.execute(stmt)]
        return sorted(gone, key=lambda r: (r.retain_until, r.id))

    def close(self) -> None:
        self._engine.dispose()
