"""The node's records and their normalised identifiers, in SQLite or PostgreSQL.

SQLModel declares the schema; the request path (:meth:`RecordStore.find`) uses SQLAlchemy
Core with statements built once per identifier count, because an ORM session per lookup
costs about twice as much (docs/performance.md). Only portable SQL is used, so the database URL is
the only thing that changes between SQLite and PostgreSQL.

Identifiers live in their own table, indexed on ``(kind, value, record_id)``: the index
alone answers "which records carry this identifier", without reading the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    Select,
    Text,
    bindparam,
    func,
    insert,
    not_,
    select,
)
from sqlmodel import Field, SQLModel

from federation.model import Identifier
from federation.vocabulary import MAX_IDENTIFIER_LENGTH
from node.database import new_id, open_engine
from node.kept_reader import Compiled, KeptReader
from node.records import NewRecord, StoredRecord

_CHUNK = 5_000


class RecordRow(SQLModel, table=True):
    __tablename__ = "records"

    id: int | None = Field(default=None, primary_key=True)
    ref: str = Field(max_length=32, unique=True)
    category: str = Field(max_length=32, index=True)
    handling_code: str = Field(max_length=8)
    source_restrictions: str = Field(sa_type=Text)  # JSON list of country codes
    payload: str = Field(sa_type=Text)  # JSON object
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class IdentifierRow(SQLModel, table=True):
    __tablename__ = "identifiers"
    __table_args__ = (Index("ix_identifiers_kind_value", "kind", "value", "record_id"),)

    id: int | None = Field(default=None, primary_key=True)
    record_id: int = Field(foreign_key="records.id", ondelete="CASCADE", index=True)
    kind: str = Field(max_length=32)
    value: str = Field(max_length=MAX_IDENTIFIER_LENGTH)


_records = RecordRow.__table__  # type: ignore[attr-defined]
_identifiers = IdentifierRow.__table__  # type: ignore[attr-defined]


def new_ref() -> str:
    """An opaque record reference, nothing a peer could learn from."""
    return new_id("rec_")


def _find_statement(n: int, hide: bool) -> Select[str]:
    """refs of one category carrying all of ``n`` identifiers, by insertion order.

    With ``hide``, records whose source restrictions name the ``hidden`` country are left
    out: a hit would tell that country the record exists, which the owner forbade.
    """
    stmt = select(_records.c.ref).where(_records.c.category == bindparam("category"))
    if hide:
        stmt = stmt.where(not_(_records.c.source_restrictions.like(bindparam("hidden"))))
    for i in range(n):
        carriers = select(_identifiers.c.record_id).where(
            _identifiers.c.kind == bindparam(f"kind{i}"),
            _identifiers.c.value == bindparam(f"value{i}"),
        )
        stmt = stmt.where(_records.c.id.in_(carriers))
    return stmt.order_by(_records.c.id).limit(bindparam("limit"))


def _get_statement() -> Select[Any]:
    """One record and its identifiers (one row each, in insertion order; one row with
    empty identifier columns when it has none)."""
    r, i = _records.c, _identifiers.c
    joined = _records.outerjoin(_identifiers, i.record_id == r.id)
    return (
        select(
            r.ref,
            r.category,
            r.handling_code,
            r.source_restrictions,
            r.payload,
            r.created_at,
            i.kind,
            i.value,
        )
        .select_from(joined)
        .where(r.ref == bindparam("ref"))
        .order_by(i.id)
    )


def _utc(value: datetime | str) -> datetime:
    """A stored time as an aware UTC datetime: SQLite's driver gives the text SQLAlchemy
    wrote, without a zone; every value was written in UTC."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.replace(tzinfo=at.tzinfo or UTC)


def _chunks(items: Sequence[NewRecord], size: int) -> Iterator[Sequence[NewRecord]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


_COUNTRY = re.compile(r"[A-Z]{2}")


class RecordStore:
    """Records of one node; synchronous and thread-safe. The request path reads on the
    event loop or in worker threads, as `reads_on_loop` says (node/kept_reader.py)."""

    def __init__(self, url: str = "sqlite:///liaison.db") -> None:
        self._engine: Engine = open_engine(url)
        self._reader = KeptReader(self._engine)
        self._find_sql: dict[tuple[int, bool], Compiled] = {}
        self._get_sql: Compiled | None = None

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def reads_on_loop(self) -> bool:
        """Whether a lookup is cheaper on the event loop than in a worker thread (SQLite:
        yes; a database server: no, it waits a round trip)."""
        return self._reader.reads_on_loop

    def create_schema(self) -> None:
        SQLModel.metadata.create_all(self._engine, tables=[_records, _identifiers])

    def add_records(self, records: Sequence[NewRecord]) -> int:
        """Insert all ``records`` in one transaction: a failed import leaves nothing behind."""
        created_at = datetime.now(UTC)
        with self._engine.begin() as conn:
            for chunk in _chunks(records, _CHUNK):
                rows = [
                    {
                        "ref": r.ref,
                        "category": r.category,
                        "handling_code": r.handling_code,
                        "source_restrictions": json.dumps(list(r.source_restrictions)),
                        "payload": json.dumps(r.payload, ensure_ascii=False, sort_keys=True),
                        "created_at": created_at,
                    }
                    for r in chunk
                ]
                stmt = insert(_records).returning(_records.c.id, sort_by_parameter_order=True)
                ids = conn.execute(stmt, rows).scalars().all()
                idents = [
                    {"record_id": record_id, "kind": i.kind, "value": i.value}
                    for record_id, r in zip(ids, chunk, strict=True)
                    for i in r.identifiers
                ]
                if idents:
                    conn.execute(insert(_identifiers), idents)
        return len(records)

    def find(
        self,
        category: str,
        identifiers: Sequence[Identifier],
        limit: int,
        *,
        hidden_from: str | None = None,
    ) -> list[str]:
        """refs of ``category`` records carrying every one of ``identifiers``, oldest first.

        The hot path. SQLAlchemy builds and compiles the statement once per identifier
        count, for whatever database the URL names; each lookup then runs that SQL on one
        kept DBAPI connection. Executing through a SQLAlchemy Connection cost ~110 µs of
        the ~130 µs a lookup took under load (benchmarks/match.py); the driver alone ~10 µs.
        """
        if not identifiers:
            raise ValueError("find needs at least one identifier; a bare category is a dump")
        if limit <= 0:
            return []
        unique = sorted({(i.kind, i.value) for i in identifiers})
        shape = (len(unique), hidden_from is not None)
        compiled = self._find_sql.get(shape)
        if compiled is None:
            compiled = self._find_sql[shape] = self._reader.compile(_find_statement(*shape))
        params: dict[str, Any] = {"category": category, "limit": limit}
        if hidden_from is not None:
            if not _COUNTRY.fullmatch(hidden_from):
                raise ValueError("hidden_from must be an ISO 3166 alpha-2 code")
            # Restrictions are stored as a JSON list of quoted codes: '["DE", "XX"]'.
            params["hidden"] = f'%"{hidden_from}"%'
        for n, (kind, value) in enumerate(unique):
            params[f"kind{n}"] = kind
            params[f"value{n}"] = value
        return [row[0] for row in self._reader.read(compiled, params, "record lookup")]

    def get(self, ref: str) -> StoredRecord | None:
        """The whole record behind ``ref``, for step 2: one statement on the kept
        connection, as :meth:`find` (through a SQLAlchemy Connection it cost a Fetch about
        as much as the rest of the request; docs/performance.md)."""
        if self._get_sql is None:
            self._get_sql = self._reader.compile(_get_statement())
        rows = self._reader.read(self._get_sql, {"ref": ref}, "reading a record")
        if not rows:
            return None
        _ref, category, handling_code, restrictions, payload, created_at = rows[0][:6]
        return StoredRecord(
            ref=ref,
            category=category,
            handling_code=handling_code,
            source_restrictions=tuple(json.loads(restrictions)),
            identifiers=tuple(Identifier(k, v) for *_, k, v in rows if k is not None),
            payload=json.loads(payload),
            created_at=_utc(created_at),
        )

    def count(self, category: str | None = None) -> int:
        stmt = select(func.count()).select_from(_records)
        if category is not None:
            stmt = stmt.where(_records.c.category == category)
        with self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def close(self) -> None:
        self._reader.close()
        self._engine.dispose()
