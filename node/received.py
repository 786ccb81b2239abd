"""Records this node received from peers, kept with the restrictions that follow them.

A record fetched from another country is still that country's: its handling code, source
restrictions and origin decide whether this node may pass it on (its policy reads
:meth:`ReceivedRecord.policy_facts`), and the retention the owner granted decides how long it
may be kept (:meth:`ReceivedStore.purge_due` deletes it then, returning what it deleted so
the caller can audit and count each). This module stores and forgets; policy decides.

A received record is found by Match like an own record (:meth:`ReceivedStore.find`): its
identifiers are derived from its disclosed fields by the one derivation own records use
(:func:`node.normalise.record_identifiers`) and kept beside it, in ``received_identifiers``,
written and purged in the record's own transaction. It is never a hit for the node it came
from, nor for a country its source restrictions name: even its existence is not disclosed.

A database that cannot answer raises :class:`node.store.StoreUnavailable`.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    Row,
    Select,
    Text,
    bindparam,
    delete,
    insert,
    not_,
    select,
)
from sqlmodel import Field, SQLModel

from federation.model import Identifier
from federation.vocabulary import MAX_IDENTIFIER_LENGTH, LegalBasis
from node.database import answering, from_db, new_id, open_engine, to_db
from node.kept_reader import Compiled, KeptReader
from node.normalise import record_identifiers

PREFIX = "rcv_"
_COUNTRY = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    """A record as received: the owner's reference and markings, the legal ground it came
    under, and the day it must be gone. Times are UTC."""

    id: str
    from_node: str
    record_ref: str
    category: str
    payload: Mapping[str, Any]
    identifiers: tuple[Identifier, ...]
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


class ReceivedIdentifierRow(SQLModel, table=True):
    """One normalised identifier of a received record (as ``identifiers`` for own ones)."""

    __tablename__ = "received_identifiers"
    __table_args__ = (Index("ix_received_identifiers_kind_value", "kind", "value", "received_id"),)

    id: int | None = Field(default=None, primary_key=True)
    received_id: str = Field(
        max_length=32, foreign_key="received_records.id", ondelete="CASCADE", index=True
    )
    kind: str = Field(max_length=32)
    value: str = Field(max_length=MAX_IDENTIFIER_LENGTH)


class ReceivedPurgeRow(SQLModel, table=True):
    """A deletion at the end of a retention whose audit entry is not written yet: the
    facts the entry needs, never a payload value. Written in the deleting transaction and
    removed once the running node has audited it, so that no deletion goes unaudited (a
    failed audit, or a purge by the command while no node ran, is audited on the next run)."""

    __tablename__ = "received_purges"

    id: str = Field(primary_key=True, max_length=32)  # the received record's id
    from_node: str = Field(max_length=64)
    category: str = Field(max_length=32)
    purpose: str = Field(max_length=64)
    legal_basis: str = Field(max_length=32)
    case_reference: str = Field(sa_type=Text)
    ticket_id: str | None = Field(default=None, max_length=32)
    retain_until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    purged_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


@dataclass(frozen=True, slots=True)
class Purged:
    """A received record deleted at the end of its retention, as its audit entry tells it."""

    id: str
    from_node: str
    category: str
    purpose: str
    legal_basis: LegalBasis
    case_reference: str
    ticket_id: str | None
    retain_until: datetime
    purged_at: datetime


_r = ReceivedRow.__table__  # type: ignore[attr-defined]
_ri = ReceivedIdentifierRow.__table__  # type: ignore[attr-defined]
_rp = ReceivedPurgeRow.__table__  # type: ignore[attr-defined]


def _purge_note(record: ReceivedRecord, now: datetime) -> dict[str, Any]:
    return {
        "id": record.id,
        "from_node": record.from_node,
        "category": record.category,
        "purpose": record.purpose,
        "legal_basis": record.legal_basis.value,
        "case_reference": record.case_reference,
        "ticket_id": record.ticket_id,
        "retain_until": to_db(record.retain_until),
        "purged_at": to_db(now),
    }


def _received(row: Row[Any], identifiers: Iterable[Identifier] = ()) -> ReceivedRecord:
    return ReceivedRecord(
        id=row.id,
        from_node=row.from_node,
        record_ref=row.record_ref,
        category=row.category,
        payload=json.loads(row.payload),
        identifiers=tuple(identifiers),
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


def _find_statement(n: int) -> Select[Any]:
    """ids of one category's received records carrying all of ``n`` identifiers, oldest
    first, except those that came from the ``requester`` and those whose source
    restrictions name the ``hidden`` country."""
    stmt = select(_r.c.id).where(
        _r.c.category == bindparam("category"),
        _r.c.from_node != bindparam("requester"),
        not_(_r.c.source_restrictions.like(bindparam("hidden"))),
    )
    for i in range(n):
        carriers = select(_ri.c.received_id).where(
            _ri.c.kind == bindparam(f"kind{i}"),
            _ri.c.value == bindparam(f"value{i}"),
        )
        stmt = stmt.where(_r.c.id.in_(carriers))
    return stmt.order_by(_r.c.received_at, _r.c.id).limit(bindparam("limit"))


def _identifiers_of(conn: Connection, ids: Iterable[str]) -> dict[str, list[Identifier]]:
    """Each record's identifiers, in the order they were written."""
    found: dict[str, list[Identifier]] = {}
    wanted = sorted(set(ids))
    if not wanted:
        return found
    stmt = select(_ri.c.received_id, _ri.c.kind, _ri.c.value).where(_ri.c.received_id.in_(wanted))
    for received_id, kind, value in conn.execute(stmt.order_by(_ri.c.id)):
        found.setdefault(received_id, []).append(Identifier(kind, value))
    return found


class ReceivedStore:
    """Received records of one node, in the node's database (shared by its replicas).

    Synchronous. :meth:`find` and :meth:`get` answer on the request path (compiled reads
    on one kept connection, as :class:`node.store.RecordStore`); the rest runs in worker
    threads, never on the event loop.
    """

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url)
        self._reader = KeptReader(self._engine)
        self._find_sql: dict[int, Compiled] = {}

    def create_schema(self) -> None:
        with answering(self._engine, "creating the received records tables"):
            SQLModel.metadata.create_all(self._engine, tables=[_r, _ri, _rp])

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
        owner's policy granted; a record with no retention is not kept at all. Its
        identifiers, derived from the fields it came with, are written in the same
        transaction: it is findable exactly while it is kept."""
        if retention_days < 1:
            raise ValueError("retention_days must be a whole number of days, at least 1")
        if not isinstance(payload, Mapping):
            raise ValueError("a received record's payload must be a JSON object")
        # A field the owner withheld (or sent malformed) gives no identifier: the record is
        # then found by the others, or not at all; it is kept either way.
        identifiers, _problems = record_identifiers(category, payload)
        received_at = to_db(received_at)
        row = {
            "id": new_id(PREFIX),
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
        idents = [{"received_id": row["id"], "kind": i.kind, "value": i.value} for i in identifiers]
        with answering(self._engine, "storing a received record"), self._engine.begin() as conn:
            kept = conn.execute(insert(_r).values(row).returning(*_r.c)).one()
            if idents:
                conn.execute(insert(_ri), idents)
        return _received(kept, identifiers)

    def find(
        self,
        category: str,
        identifiers: Sequence[Identifier],
        limit: int,
        *,
        requester: str,
        requester_country: str,
    ) -> builtins.list[str]:
        """ids of received ``category`` records carrying every one of ``identifiers``
        (normalised), oldest first; never one that came from ``requester``, nor one whose
        source restrictions name ``requester_country``. The request path: one compiled
        statement per identifier count, on the kept connection."""
        if not identifiers:
            raise ValueError("find needs at least one identifier; a bare category is a dump")
        if not _COUNTRY.fullmatch(requester_country):
            raise ValueError("requester_country must be an ISO 3166 alpha-2 code")
        if limit <= 0:
            return []
        unique = sorted({(i.kind, i.value) for i in identifiers})
        compiled = self._find_sql.get(len(unique))
        if compiled is None:
            compiled = self._find_sql[len(unique)] = self._reader.compile(
                _find_statement(len(unique))
            )
        params: dict[str, Any] = {
            "category": category,
            "requester": requester,
            # Restrictions are stored as a JSON list of quoted codes: '["DE", "XX"]'.
            "hidden": f'%"{requester_country}"%',
            "limit": limit,
        }
        for n, (kind, value) in enumerate(unique):
            params[f"kind{n}"] = kind
            params[f"value{n}"] = value
        return [row[0] for row in self._reader.read(compiled, params, "received record lookup")]

    def get(self, received_id: str) -> ReceivedRecord | None:
        with answering(self._engine, "reading a received record"), self._engine.connect() as conn:
            row = conn.execute(select(_r).where(_r.c.id == received_id)).one_or_none()
            idents = _identifiers_of(conn, [received_id]) if row is not None else {}
        return None if row is None else _received(row, idents.get(received_id, ()))

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
            rows = conn.execute(stmt).all()
            idents = _identifiers_of(conn, (row.id for row in rows))
        return [_received(row, idents.get(row.id, ())) for row in rows]

    def purge_due(self, now: datetime) -> builtins.list[ReceivedRecord]:
        """Delete every record whose retention ended (``retain_until <= now``), with its
        identifiers, in one transaction, returning what it deleted: two purging replicas
        never both report one, and no purged record is a hit any more. The same transaction
        notes each deletion as still to be audited (:meth:`unaudited_purges`)."""
        due = select(_r.c.id).where(_r.c.retain_until <= to_db(now))
        forget = (
            delete(_ri)
            .where(_ri.c.received_id.in_(due.scalar_subquery()))
            .returning(_ri.c.id, _ri.c.received_id, _ri.c.kind, _ri.c.value)
        )
        # The foreign key cascades too; deleting them here first returns them with the record.
        stmt = delete(_r).where(_r.c.retain_until <= to_db(now)).returning(*_r.c)
        with answering(self._engine, "purging received records"), self._engine.begin() as conn:
            idents: dict[str, list[Identifier]] = {}
            for _id, received_id, kind, value in sorted(conn.execute(forget)):
                idents.setdefault(received_id, []).append(Identifier(kind, value))
            gone = [_received(row, idents.get(row.id, ())) for row in conn.execute(stmt)]
            if gone:
                conn.execute(insert(_rp), [_purge_note(r, now) for r in gone])
        return sorted(gone, key=lambda r: (r.retain_until, r.id))

    def unaudited_purges(self, limit: int = 1000) -> builtins.list[Purged]:
        """Deletions whose audit entry is still to be written, oldest first."""
        stmt = select(_rp).order_by(_rp.c.purged_at, _rp.c.id).limit(limit)
        with answering(self._engine, "reading purges to audit"), self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            Purged(
                id=row.id,
                from_node=row.from_node,
                category=row.category,
                purpose=row.purpose,
                legal_basis=LegalBasis(row.legal_basis),
                case_reference=row.case_reference,
                ticket_id=row.ticket_id,
                retain_until=from_db(row.retain_until),
                purged_at=from_db(row.purged_at),
            )
            for row in rows
        ]

    def purges_audited(self, ids: Iterable[str]) -> None:
        """Forget the notes of deletions now in the audit log."""
        done = builtins.list(ids)
        if not done:
            return
        with answering(self._engine, "noting audited purges"), self._engine.begin() as conn:
            conn.execute(delete(_rp).where(_rp.c.id.in_(done)))

    def close(self) -> None:
        self._reader.close()
        self._engine.dispose()
