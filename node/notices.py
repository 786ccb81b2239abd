"""Notices this node received and accepted, the identifiers they are matched on, and the
local alerts (hits) they raised: in the node's own database, SQLite or PostgreSQL.

Receipt is idempotent by (publisher, notice id, version), and every receipt is ONE
transaction that compares versions in the database, so two replicas receiving the same
delivery at once, or a redelivery after a lost answer, store nothing twice; an older
version never replaces a newer one. A withdrawal of a notice never received is kept as a
tombstone, so a late publication of an older version cannot bring it back.

Matching: a notice's identifiers are stored normalised (node/normalise.py, as records
are) in their own table, indexed on ``(kind, value)``. A Match from a peer or a record
import whose identifier equals one of an active notice's, of the same kind, is a hit,
whatever the category it was asked under: a stolen passport named in a wanted-person
query is exactly what the notice is for. Each hit is a row here (the notice, when, what
triggered it), never an identifier value, and never told to the publisher.

A database that cannot answer raises :class:`node.database.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Row,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from federation.model import Identifier
from federation.vocabulary import MAX_IDENTIFIER_LENGTH, LegalBasis
from node.database import StoreUnavailable, answering, from_db, new_id, open_engine, to_db
from node.notice_model import NoticeHit, NoticeState, StoredNotice


class ReceivedNoticeRow(SQLModel, table=True):
    __tablename__ = "notices_received"

    publisher: str = Field(primary_key=True, max_length=64)
    notice_id: str = Field(primary_key=True, max_length=64)
    version: int
    category: str = Field(max_length=32)
    identifiers: str = Field(sa_type=Text)  # JSON [[kind, value], ...], normalised
    summary: str = Field(sa_type=Text)
    handling_code: str = Field(max_length=8)
    to_all_members: bool = Field(sa_column=Column(Boolean, nullable=False))
    recipients: str = Field(sa_type=Text)  # JSON list of node ids
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    active_until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    state: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    purpose: str = Field(max_length=64)
    legal_basis: str = Field(max_length=32)


class NoticeKeyRow(SQLModel, table=True):
    __tablename__ = "notice_keys"
    __table_args__ = (Index("ix_notice_keys_kind_value", "kind", "value"),)

    id: int | None = Field(default=None, primary_key=True)
    publisher: str = Field(max_length=64)
    notice_id: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=32)
    value: str = Field(max_length=MAX_IDENTIFIER_LENGTH)


class NoticeHitRow(SQLModel, table=True):
    __tablename__ = "notice_hits"

    id: str = Field(primary_key=True, max_length=32)
    publisher: str = Field(max_length=64)
    notice_id: str = Field(max_length=64)
    category: str = Field(max_length=32, index=True)
    trigger: str = Field(max_length=96)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))


_n = ReceivedNoticeRow.__table__  # type: ignore[attr-defined]
_k = NoticeKeyRow.__table__  # type: ignore[attr-defined]
_h = NoticeHitRow.__table__  # type: ignore[attr-defined]
_ACTIVE = NoticeState.ACTIVE.value
log = logging.getLogger("liaison.node")


def identifiers_json(identifiers: Iterable[Identifier]) -> str:
    return json.dumps([[i.kind, i.value] for i in identifiers])


def identifiers_from_json(text: str) -> tuple[Identifier, ...]:
    return tuple(Identifier(kind, value) for kind, value in json.loads(text))


def stored_notice(row: Row[Any]) -> StoredNotice:
    """A notice row (received or published: the columns they share) as a plain object."""
    m = row._mapping
    return StoredNotice(
        publisher=m["publisher"],
        notice_id=m["notice_id"],
        version=int(m["version"]),
        category=m["category"],
        identifiers=identifiers_from_json(m["identifiers"]),
        summary=m["summary"],
        handling_code=m["handling_code"],
        to_all_members=bool(m["to_all_members"]),
        recipients=tuple(json.loads(m["recipients"])),
        expires_at=from_db(m["expires_at"]),
        active_until=from_db(m["active_until"]),
        state=NoticeState(m["state"]),
        created_at=from_db(m["created_at"]),
        updated_at=from_db(m["updated_at"]),
        purpose=m["purpose"],
        legal_basis=LegalBasis(m["legal_basis"]),
    )


def _hit(row: Row[Any]) -> NoticeHit:
    m = row._mapping
    return NoticeHit(
        m["id"], m["publisher"], m["notice_id"], m["category"], m["trigger"], from_db(m["at"])
    )


class NoticeStore:
    """The notices this node received, shared by its replicas through the database.

    Synchronous: a server calls it from a worker thread (or, for the quick lookups of the
    Match path, as the record store is called)."""

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url)
        # Raised each time this process changes the notices (a cache of their keys, as
        # node/notice_hits.py keeps one, reloads at once then; other replicas' changes it
        # sees on its next timed reload).
        self.generation = 0

    def create_schema(self) -> None:
        with answering(self._engine, "creating the notice tables"):
            SQLModel.metadata.create_all(self._engine, tables=[_n, _k, _h])

    def held(self, publisher: str, notice_id: str) -> StoredNotice | None:
        with answering(self._engine, "reading a notice"), self._engine.connect() as conn:
            row = conn.execute(
                select(_n).where(_n.c.publisher == publisher, _n.c.notice_id == notice_id)
            ).one_or_none()
        return None if row is None else stored_notice(row)

    def publishers_of(self, notice_id: str) -> set[str]:
        """Every publisher this node holds a notice `notice_id` of (a withdrawal by any other
        node is refused)."""
        stmt = select(_n.c.publisher).where(_n.c.notice_id == notice_id)
        with answering(self._engine, "reading a notice"), self._engine.connect() as conn:
            return {str(p) for (p,) in conn.execute(stmt)}

    def receive(self, notice: StoredNotice) -> StoredNotice:
        """Store `notice` (identifiers normalised) unless this node already holds that
        version or a newer one; what it holds afterwards, in either case."""
        return self._retrying(lambda conn: self._receive(conn, notice), "receiving a notice")

    def _receive(self, conn: Any, notice: StoredNotice) -> StoredNotice:
        key = (_n.c.publisher == notice.publisher, _n.c.notice_id == notice.notice_id)
        current = conn.execute(select(_n).where(*key)).one_or_none()
        if current is not None and int(current.version) >= notice.version:
            return stored_notice(current)
        values = {
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
            "updated_at": to_db(notice.updated_at),
            "purpose": notice.purpose,
            "legal_basis": notice.legal_basis.value,
        }
        if current is None:
            first = {"publisher": notice.publisher, "notice_id": notice.notice_id}
            row = conn.execute(
                insert(_n)
                .values(**first, **values, created_at=to_db(notice.created_at))
                .returning(*_n.c)
            ).one()
        else:
            # Only over the version read: a replica that stored a newer one meanwhile wins.
            row = conn.execute(
                update(_n)
                .where(*key, _n.c.version == current.version)
                .values(**values)
                .returning(*_n.c)
            ).one_or_none()
            if row is None:
                raise IntegrityError("notice changed meanwhile", None, Exception())
        conn.execute(
            delete(_k).where(_k.c.publisher == notice.publisher, _k.c.notice_id == notice.notice_id)
        )
        if notice.state is NoticeState.ACTIVE and notice.identifiers:
            conn.execute(
                insert(_k),
                [
                    {
                        "publisher": notice.publisher,
                        "notice_id": notice.notice_id,
                        "kind": i.kind,
                        "value": i.value,
                    }
                    for i in sorted(set(notice.identifiers), key=lambda i: (i.kind, i.value))
                ],
            )
        return stored_notice(row)

    def withdraw(self, publisher: str, notice_id: str, version: int, now: datetime) -> StoredNotice:
        """Mark the notice withdrawn at `version` (it stops matching); a withdrawal of a
        notice never received is kept as a tombstone. An older version changes nothing."""

        def run(conn: Any) -> StoredNotice:
            key = (_n.c.publisher == publisher, _n.c.notice_id == notice_id)
            current = conn.execute(select(_n).where(*key)).one_or_none()
            if current is None:
                tombstone = StoredNotice(
                    publisher, notice_id, version, "", (), "", "", False, (), now, now,
                    NoticeState.WITHDRAWN, now, now, "", LegalBasis.NONE,
                )  # fmt: skip
                return self._receive(conn, tombstone)
            held = stored_notice(current)
            if held.version >= version:
                return held
            withdrawn = replace(held, version=version, state=NoticeState.WITHDRAWN, updated_at=now)
            return self._receive(conn, withdrawn)

        return self._retrying(run, "withdrawing a notice")

    def _retrying(self, run: Any, what: str) -> StoredNotice:
        """Run one transaction; if another replica wrote the same notice meanwhile (a
        duplicate key, or the version moved), run it once more on what is there now."""
        for attempt in (1, 2):
            try:
                with answering(self._engine, what), self._engine.begin() as conn:
                    result: StoredNotice = run(conn)
                self.generation += 1
                return result
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def match(self, identifiers: Sequence[Identifier], now: datetime) -> list[tuple[str, str, str]]:
        """(publisher, notice id, category) of every active notice one of `identifiers`
        (normalised) hits."""
        if not identifiers:
            return []
        pairs = or_(*(and_(_k.c.kind == i.kind, _k.c.value == i.value) for i in identifiers))
        stmt = (
            select(_n.c.publisher, _n.c.notice_id, _n.c.category)
            .select_from(
                _k.join(
                    _n, and_(_n.c.publisher == _k.c.publisher, _n.c.notice_id == _k.c.notice_id)
                )
            )
            .where(pairs, _n.c.state == _ACTIVE, _n.c.active_until > to_db(now))
            .distinct()
        )
        with answering(self._engine, "matching notices"), self._engine.connect() as conn:
            return sorted((str(p), str(n), str(c)) for p, n, c in conn.execute(stmt))

    def active_keys(self, now: datetime) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
        """Every identifier of every active notice, with the notices it names: for checking
        a whole import at once (notices are few, records many)."""
        stmt = (
            select(_k.c.kind, _k.c.value, _n.c.publisher, _n.c.notice_id, _n.c.category)
            .select_from(
                _k.join(
                    _n, and_(_n.c.publisher == _k.c.publisher, _n.c.notice_id == _k.c.notice_id)
                )
            )
            .where(_n.c.state == _ACTIVE, _n.c.active_until > to_db(now))
        )
        keys: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        with answering(self._engine, "reading notices"), self._engine.connect() as conn:
            for kind, value, publisher, notice_id, category in conn.execute(stmt):
                keys.setdefault((kind, value), []).append((publisher, notice_id, category))
        return keys

    def record_hits(
        self, hits: Iterable[tuple[str, str, str]], trigger: str, now: datetime
    ) -> list[NoticeHit]:
        """One hit row per (publisher, notice id, category): the local alert."""
        made = [
            NoticeHit(new_id("hit_"), publisher, notice_id, category, trigger[:96], now)
            for publisher, notice_id, category in hits
        ]
        if not made:
            return []
        rows = [
            {
                "id": h.id,
                "publisher": h.publisher,
                "notice_id": h.notice_id,
                "category": h.category,
                "trigger": h.trigger,
                "at": to_db(h.at),
            }
            for h in made
        ]
        with answering(self._engine, "recording notice hits"), self._engine.begin() as conn:
            conn.execute(insert(_h), rows)
        return made

    def hits(self, limit: int = 100) -> list[NoticeHit]:
        """The latest hits, newest first."""
        stmt = select(_h).order_by(_h.c.at.desc(), _h.c.id).limit(max(limit, 0))
        with answering(self._engine, "listing notice hits"), self._engine.connect() as conn:
            return [_hit(row) for row in conn.execute(stmt)]

    def hit_counts(self) -> dict[str, int]:
        """Hits ever raised, by category (for `liaison_notice_hits_total`)."""
        stmt = select(_h.c.category, func.count()).group_by(_h.c.category)
        with answering(self._engine, "counting notice hits"), self._engine.connect() as conn:
            return {str(c): int(n) for c, n in conn.execute(stmt)}

    def list(self, limit: int = 100) -> list[StoredNotice]:
        """Received notices (tombstones of withdrawals never preceded by a notice left out),
        newest first."""
        stmt = (
            select(_n)
            .where(_n.c.category != "")
            .order_by(_n.c.created_at.desc(), _n.c.notice_id)
            .limit(max(limit, 0))
        )
        with answering(self._engine, "listing notices"), self._engine.connect() as conn:
            return [stored_notice(row) for row in conn.execute(stmt)]

    def forget_expired(self, now: datetime) -> int:
        """Clear the identifiers and summary of every notice no longer active (expired, past
        its retention, or withdrawn), and its match keys: what it was is not kept longer
        than it may be used. The row stays, without personal data, so that a late
        redelivery is still answered with the version held instead of being stored again.
        How many were cleared."""
        gone = or_(_n.c.active_until <= to_db(now), _n.c.state != _ACTIVE)
        personal = or_(_n.c.identifiers != "[]", _n.c.summary != "")
        with answering(self._engine, "forgetting expired notices"), self._engine.begin() as conn:
            cleared = conn.execute(
                update(_n)
                .where(gone, personal)
                .values(identifiers="[]", summary="")
                .returning(_n.c.publisher, _n.c.notice_id)
            ).all()
            for publisher, notice_id in cleared:
                conn.execute(
                    delete(_k).where(_k.c.publisher == publisher, _k.c.notice_id == notice_id)
                )
        self.generation += 1
        return len(cleared)

    async def forget_every(self, interval: float) -> None:
        """The node's job clearing notices no longer active; never stops on a failure."""
        while True:
            await asyncio.sleep(interval)
            try:
                cleared = await asyncio.to_thread(self.forget_expired, datetime.now(UTC))
            except StoreUnavailable as exc:
                log.error("could not clear expired notices: %s", exc)
                continue
            if cleared:
                log.info("cleared %d notice(s) no longer active (identifiers, summary)", cleared)

    def close(self) -> None:
        self._engine.dispose()
