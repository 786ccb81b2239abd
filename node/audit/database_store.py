"""The database backend of the audit log (`node.audit.storage`): the tables `audit_entries`
and `audit_checkpoints` in SQLite or PostgreSQL, shared by every replica of a node."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from node.audit.storage import Locked, StorageError

_metadata = MetaData()
entries_table = Table(
    "audit_entries",
    _metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(32), nullable=False, unique=True),
    Column("line", Text, nullable=False),  # the entry's line, without its newline
)
checkpoints_table = Table(
    "audit_checkpoints",
    _metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("note", Text, nullable=False),
)
# The anchor of the newest checkpoint (`node.audit.anchor`): one row, replaced in the
# transaction that adds the checkpoint, so the two never disagree.
anchor_table = Table(
    "audit_anchor",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("data", Text, nullable=False),
)
# The PostgreSQL advisory lock serialising the writers of one database's audit log.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"liaison audit log").digest()[:8], "big", signed=True)
_CHUNK = 2000
# Taken first in every writing transaction; the commit waits for the WAL flush whatever the
# server's or role's default (durable means committed).
_LOCK = text("SELECT set_config('synchronous_commit', 'on', true), pg_advisory_xact_lock(:key)")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver leaves transactions to us (BEGIN IMMEDIATE takes the write lock at once);
    # WAL lets readers read while a replica writes; FULL makes a commit survive power loss.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class _DatabaseLocked:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def since(self, seq: int) -> list[bytes]:
        return _entry_lines(self._conn, seq)

    def append(self, seq: int, lines: Sequence[bytes], ids: Sequence[str]) -> None:
        rows = [
            {"seq": n, "id": entry_id, "line": line.rstrip(b"\n").decode()}
            for n, (line, entry_id) in enumerate(zip(lines, ids, strict=True), start=seq)
        ]
        self._conn.execute(insert(entries_table), rows)

    def checkpoints(self) -> list[str]:
        return _notes(self._conn)

    def add_checkpoint(self, size: int, note: str) -> None:
        count = self._conn.execute(select(func.count()).select_from(checkpoints_table))
        seq = int(count.scalar_one())
        self._conn.execute(insert(checkpoints_table), {"seq": seq, "size": size, "note": note})

    def save_anchor(self, data: bytes) -> None:
        self._conn.execute(delete(anchor_table))
        self._conn.execute(insert(anchor_table), {"id": 0, "data": data.decode()})


def _entry_lines(
    conn: Connection, start: int, end: int | None = None, limit: int | None = None
) -> list[bytes]:
    """Entry lines from `start` (up to `end`, at most `limit`), in order, each with its newline."""
    seq = entries_table.c.seq
    stmt = select(entries_table.c.line).where(seq >= start).order_by(seq).limit(limit)
    if end is not None:
        stmt = stmt.where(seq < end)
    return [line.encode() + b"\n" for line in conn.execute(stmt).scalars()]


def _notes(conn: Connection) -> list[str]:
    stmt = select(checkpoints_table.c.note).order_by(checkpoints_table.c.seq)
    return [str(n) for n in conn.execute(stmt).scalars()]


class DatabaseStorage:
    """The log of one node in a SQLite or PostgreSQL database, shared by its replicas."""

    write_hint = "check that the database is up and reachable; the node retries with each request"

    def __init__(self, url: str, *, create: bool = True) -> None:
        parsed = make_url(url)
        self.where = parsed.render_as_string(hide_password=True)
        self.checkpoints_where = self.where + " (audit_checkpoints)"
        self._sqlite = parsed.get_backend_name() == "sqlite"
        self._created = False
        if self._sqlite:
            # The pool hands a connection to one thread at a time (appends run in workers).
            self._engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False}, pool_pre_ping=True
            )
            event.listen(self._engine, "connect", _sqlite_connect)
        else:
            # A server that does not answer fails the append in seconds, not never; the
            # pre-ping replaces a connection the server dropped (restart, failover).
            self._engine = create_engine(
                url, connect_args={"connect_timeout": 5}, pool_pre_ping=True
            )
        try:
            if create:
                with self.locked():  # replicas starting together create the tables once
                    pass
            elif not inspect(self._engine).has_table(entries_table.name):
                self._engine.dispose()
                raise StorageError(
                    f"no table {entries_table.name}",
                    "check [audit] url, or start the node once to create it",
                )
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise self._error(exc) from exc
        except StorageError:
            self._engine.dispose()
            raise

    def _error(self, exc: SQLAlchemyError) -> StorageError:
        cause: BaseException = getattr(exc, "orig", None) or exc
        lines = str(cause).strip().splitlines()
        return StorageError(
            f"{type(cause).__name__}: {lines[0] if lines else 'no detail'}", self.write_hint
        )

    @contextlib.contextmanager
    def locked(self) -> Iterator[Locked]:
        try:
            with self._engine.connect() as conn:
                if self._sqlite:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.execute(_LOCK, {"key": _LOCK_KEY})
                if not self._created:
                    _metadata.create_all(conn)
                    self._created = True
                # An exception leaving the block rolls the transaction back as the
                # connection closes: nothing of it remains.
                yield _DatabaseLocked(conn)
                conn.commit()
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection to read on, without the lock; a database error as StorageError."""
        try:
            with self._engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def scan(self) -> Iterator[bytes]:
        return self.scan_from(0, None)

    def scan_from(self, seq: int, position: int | None) -> Iterator[bytes]:
        done = seq
        while True:
            with self._reading() as conn:
                rows = _entry_lines(conn, done, limit=_CHUNK)
            yield from rows
            if len(rows) < _CHUNK:
                return
            done += len(rows)

    def position(self, seq: int) -> int | None:
        return None  # an entry is found by its seq

    def history(self, count: int) -> Iterator[bytes]:
        done = 0
        while done < count:
            with self._reading() as conn:
                rows = _entry_lines(conn, done, count, limit=_CHUNK)
            if not rows:
                return
            yield from rows
            done += len(rows)

    def load_anchor(self) -> bytes | None:
        stmt = select(anchor_table.c.data).where(anchor_table.c.id == 0)
        try:
            with self._engine.connect() as conn:
                data = conn.execute(stmt).scalar()
        except SQLAlchemyError:
            return None  # no such table yet (a log from before anchors): a full scan
        return None if data is None else str(data).encode()

    def keep(self, count: int) -> None:
        pass  # a transaction commits whole: there is no torn tail to cut

    def since(self, seq: int) -> list[bytes]:
        with self._reading() as conn:
            return _entry_lines(conn, seq)

    def lines(self, start: int, end: int) -> list[bytes]:
        with self._reading() as conn:
            return _entry_lines(conn, start, end)

    def find(self, entry_id: str) -> int | None:
        stmt = select(entries_table.c.seq).where(entries_table.c.id == entry_id)
        with self._reading() as conn:
            found = conn.execute(stmt).scalar_one_or_none()
        return None if found is None else int(found)

    def newest_first(self) -> Iterator[bytes]:
        below: int | None = None
        while True:
            stmt = select(entries_table.c.seq, entries_table.c.line)
            if below is not None:
                stmt = stmt.where(entries_table.c.seq < below)
            stmt = stmt.order_by(entries_table.c.seq.desc()).limit(_CHUNK // 10)
            with self._reading() as conn:
                rows = conn.execute(stmt).all()
            for seq, line in rows:
                below = int(seq)
                yield line.encode()
            if len(rows) < _CHUNK // 10:
                return

    def checkpoints(self) -> tuple[list[str], bool]:
        with self._reading() as conn:
            return _notes(conn), False

    def latest_checkpoint(self) -> str | None:
        stmt = select(checkpoints_table.c.note).order_by(checkpoints_table.c.seq.desc()).limit(1)
        with self._reading() as conn:
            note = conn.execute(stmt).scalar()
        return None if note is None else str(note)

    def close(self) -> None:
        self._engine.dispose()
