"""Where the audit log's entries and checkpoints are kept: a file, or database tables.

Both backends keep the same bytes: each entry is the exact line the file log holds
(canonical JSON ending in its `hash`), so `node.audit.log` checks either with one piece of
code. A backend knows nothing of hashes or trees: it keeps lines in order, keeps signed
checkpoint notes in order, and serialises writers (`locked`).

- `FileStorage`: `audit.log` (a line per entry, appended with O_APPEND, one fdatasync per
  batch) and `audit.log.checkpoints` (notes, each followed by a blank line, appended under
  an exclusive flock). One node process writes it: it holds an exclusive flock on the log
  while open, and a second one is refused.
- `DatabaseStorage`: the tables `audit_entries` (seq, id, line) and `audit_checkpoints`
  (seq, size, note) in SQLite or PostgreSQL, shared by every replica of a node. A writer
  holds one lock per transaction (PostgreSQL: a transaction-scoped advisory lock; SQLite:
  BEGIN IMMEDIATE), so the appends of all replicas form one sequence; a transaction
  commits whole or not at all, so the table never holds half a batch.

Failures are raised as `StorageError`, saying what failed and what the operator can do.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import os
import threading
from array import array
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

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
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from node.audit.entries import CheckpointInvalid

CHECKPOINTS_SUFFIX = ".checkpoints"


class StorageError(Exception):
    """The backend could not read or write; `hint` is what the operator can do about it."""

    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(f"{detail}; {hint}")
        self.detail = detail
        self.hint = hint


class Locked(Protocol):
    """A backend held exclusively (against other threads, processes and replicas)."""

    def since(self, seq: int) -> list[bytes]:
        """The entry lines from `seq` on (each ending in a newline), in order."""
        ...

    def append(self, seq: int, lines: Sequence[bytes], ids: Sequence[str]) -> None:
        """Write `lines` as entries `seq`, `seq + 1`, ...: durable on return, or nothing."""
        ...

    def checkpoints(self) -> list[str]:
        """The checkpoint notes, oldest first (a file's torn last record is cut off)."""
        ...

    def add_checkpoint(self, size: int, note: str) -> None:
        """Append a signed note, durably."""
        ...


class AuditStorage(Protocol):
    #: The log, as messages name it (a file path; a URL without its password).
    where: str
    #: The checkpoints, as messages name them.
    checkpoints_where: str
    #: What the operator should do when the backend cannot be written.
    write_hint: str

    def scan(self) -> Iterator[bytes]:
        """Every entry line from entry 0, each ending in a newline (a file's torn last
        line is yielded without one)."""
        ...

    def keep(self, count: int) -> None:
        """After a scan found `count` good entries: open for writing, dropping what follows
        them (a file's torn last line)."""
        ...

    def since(self, seq: int) -> list[bytes]:
        """Entry lines from `seq` on, committed by anyone (no lock taken)."""
        ...

    def locked(self) -> AbstractContextManager[Locked]:
        """Hold the log exclusively; a write inside commits when the block ends normally."""
        ...

    def lines(self, start: int, end: int) -> list[bytes]:
        """Entry lines [start, end), which the caller knows to be durable."""
        ...

    def find(self, entry_id: str) -> int | None:
        """The index of the entry with this id (a valid 32-hex id), or None."""
        ...

    def newest_first(self) -> Iterator[bytes]:
        """Entry lines from the newest back."""
        ...

    def checkpoints(self) -> tuple[list[str], bool]:
        """The checkpoint notes, oldest first, and whether a torn record follows them.

        Raises CheckpointInvalid if a checkpoints file is not UTF-8."""
        ...

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint note (None if none), cheaply: overseers and witnesses ask
        for it on every call, and a log signs many.

        Raises CheckpointInvalid if a checkpoints file is not UTF-8."""
        ...

    def close(self) -> None: ...


def checkpoints_path(path: Path) -> Path:
    """Where the signed checkpoints of the audit log at `path` are kept."""
    return path.with_name(path.name + CHECKPOINTS_SUFFIX)


def split_checkpoint_bytes(data: bytes, where: Path | str) -> tuple[list[str], int]:
    """The complete notes of a checkpoints file and the number of bytes they take.

    Each record is a note then one blank line. A checkpoint's text and its signature block
    hold no blank line, so splitting at blank lines yields text, signatures, text, ...
    It splits bytes, not text: a record torn inside a multi-byte character (the signature
    line's em dash) is a torn record, not a file that is not UTF-8. A complete note that
    is not UTF-8 is CheckpointInvalid, naming the file (`where`).
    """
    chunks = data.split(b"\n\n")
    found: list[str] = []
    end = 0
    for i in range(0, len(chunks) - 2, 2):
        note = chunks[i] + b"\n\n" + chunks[i + 1] + b"\n"
        try:
            found.append(note.decode("utf-8"))
        except UnicodeDecodeError:
            raise CheckpointInvalid(where, -1, None, "not UTF-8 text") from None
        end += len(note) + 1
    return found, end


def file_lines(path: Path) -> Iterator[bytes]:
    """The lines of a log file (none if there is no file); a torn last one has no newline."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        yield from fh


def _io_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


class _FileLocked:
    def __init__(self, storage: FileStorage) -> None:
        self._storage = storage
        self._cp_fd: int | None = None
        self._cp_created = False

    def since(self, seq: int) -> list[bytes]:
        return []  # one process writes a file log: nobody else appends

    def append(self, seq: int, lines: Sequence[bytes], ids: Sequence[str]) -> None:
        self._storage._append(seq, lines)

    def _checkpoints_fd(self) -> int:
        if self._cp_fd is None:
            path = checkpoints_path(self._storage.path)
            self._cp_created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # two signers never interleave
            except OSError:
                os.close(fd)
                raise
            self._cp_fd = fd
        return self._cp_fd

    def checkpoints(self) -> list[str]:
        fd = self._checkpoints_fd()
        path = checkpoints_path(self._storage.path)
        data = path.read_bytes()
        found, end = split_checkpoint_bytes(data, path)
        if end != len(data):  # a record torn by a crash was never returned: cut it off
            os.ftruncate(fd, end)
        return found

    def add_checkpoint(self, size: int, note: str) -> None:
        fd = self._checkpoints_fd()
        try:
            view = memoryview((note + "\n").encode())
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            if self._cp_created:
                dir_fd = os.open(self._storage.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            where = checkpoints_path(self._storage.path)
            raise StorageError(f"{where}: {_io_error(exc)}", self._storage.write_hint) from exc

    def close(self) -> None:
        if self._cp_fd is not None:
            os.close(self._cp_fd)
            self._cp_fd = None


class FileStorage:
    """A JSONL log file and its checkpoints file beside it."""

    write_hint = "free space or fix the volume"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self.checkpoints_where = str(checkpoints_path(path))
        # Where each durable entry's line starts (8 bytes an entry), and where they end.
        self._offsets: array[int] = array("Q")
        self._end = 0
        self._fd = -1
        # The checkpoints file read so far: bytes of complete records, and the last note.
        # Concurrent callers (overseers' and witnesses' GetCheckpoint, each in a thread)
        # take turns: two advancing the offset at once would skip or reread records.
        self._notes_end, self._last_note = 0, ""
        self._notes_lock = threading.Lock()

    def scan(self) -> Iterator[bytes]:
        self._offsets = array("Q")
        self._end = 0
        for raw in file_lines(self.path):
            self._offsets.append(self._end)
            self._end += len(raw)
            yield raw

    def keep(self, count: int) -> None:
        if count < len(self._offsets):
            self._end = self._offsets[count]
            del self._offsets[count:]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # Two writers would interleave their chains: the second one is refused before
            # it changes a byte (a torn tail it saw may be the first one's write).
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(
                f"{self.path} is in use by another node process",
                "stop that process first; one process writes a file audit log (replicas "
                'share a database one: [audit] store = "database")',
            ) from None
        # A torn last line was written but never fsynced and acknowledged: cut it off.
        if os.fstat(fd).st_size != self._end:
            os.ftruncate(fd, self._end)
        self._fd = fd

    def since(self, seq: int) -> list[bytes]:
        return []

    @contextlib.contextmanager
    def locked(self) -> Iterator[Locked]:
        held = _FileLocked(self)
        try:
            yield held
        finally:
            held.close()

    def _append(self, seq: int, lines: Sequence[bytes]) -> None:
        data = b"".join(lines)
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)  # the data and the new size; mtime need not be durable
        except OSError as exc:
            with contextlib.suppress(OSError):  # if not now, the torn tail is cut at next open
                os.truncate(self.path, self._end)
            raise StorageError(_io_error(exc), self.write_hint) from exc
        start = self._end
        for line in lines:
            self._offsets.append(start)
            start += len(line)
        self._end = start

    def lines(self, start: int, end: int) -> list[bytes]:
        if start == end:
            return []
        stop = self._offsets[end] if end < len(self._offsets) else self._end
        with self.path.open("rb") as fh:
            fh.seek(self._offsets[start])
            data = fh.read(stop - self._offsets[start])
        return data.splitlines(keepends=True)

    def find(self, entry_id: str) -> int | None:
        """Scans the file: fine for an overseer's occasional question, not for a hot path."""
        needle = b'"id":"' + entry_id.encode() + b'"'
        with self.path.open("rb") as fh:
            done, carry = 0, b""
            while done < self._end:
                block = fh.read(min(1 << 20, self._end - done))
                if not block:
                    break
                data = carry + block
                at = data.find(needle)
                if at >= 0:
                    position = done - len(carry) + at
                    return bisect.bisect_right(self._offsets, position) - 1
                done += len(block)
                carry = data[-len(needle) :]
        return None

    def newest_first(self) -> Iterator[bytes]:
        """Reads the file backwards, so a restart costs the freshness window, not the log."""
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            tail = b""
            while end > 0:
                start = max(0, end - 65536)
                fh.seek(start)
                block = fh.read(end - start) + tail
                end = start
                lines = block.split(b"\n")
                tail = lines.pop(0) if start > 0 else b""
                for raw in reversed(lines):
                    if raw:
                        yield raw

    def checkpoints(self) -> tuple[list[str], bool]:
        path = checkpoints_path(self.path)
        if not path.exists():
            return [], False
        data = path.read_bytes()
        found, end = split_checkpoint_bytes(data, path)
        return found, end != len(data)

    def latest_checkpoint(self) -> str | None:
        with self._notes_lock:
            return self._read_latest_checkpoint()

    def _read_latest_checkpoint(self) -> str | None:
        # The file only grows by whole records (a torn one is cut before the next is
        # written): read just what was added since the last call.
        path = checkpoints_path(self.path)
        try:
            with path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self._notes_end:  # cut back (a torn record) or replaced
                    self._notes_end, self._last_note = 0, ""
                fh.seek(self._notes_end)
                found, end = split_checkpoint_bytes(fh.read(size - self._notes_end), path)
        except FileNotFoundError:
            self._notes_end, self._last_note = 0, ""
            return None
        if found:
            self._last_note = found[-1]
        self._notes_end += end
        return self._last_note or None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
        done = 0
        while True:
            with self._reading() as conn:
                rows = _entry_lines(conn, done, limit=_CHUNK)
            yield from rows
            if len(rows) < _CHUNK:
                return
            done += len(rows)

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
