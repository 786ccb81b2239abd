"""Where the audit log's entries and checkpoints are kept: a file, or database tables.

Both backends keep the same bytes: each entry is the exact line the file log holds
(canonical JSON ending in its `hash`), so `node.audit.log` checks either with one piece of
code. A backend knows nothing of hashes or trees: it keeps lines in order, keeps signed
checkpoint notes in order, and serialises writers (`locked`).

- `FileStorage` (`node.audit.file_store`): `audit.log` (a line per entry, appended with
  O_APPEND, one fdatasync per batch) and `audit.log.checkpoints` (notes, each followed by
  a blank line, appended under an exclusive flock). One node process writes it: it holds an
  exclusive flock on the log while open, and a second one is refused.
- `DatabaseStorage` (`node.audit.database_store`): the tables `audit_entries` (seq, id,
  line) and `audit_checkpoints` (seq, size, note) in SQLite or PostgreSQL, shared by every
  replica of a node. A writer holds one lock per transaction (PostgreSQL: a
  transaction-scoped advisory lock; SQLite: BEGIN IMMEDIATE), so the appends of all
  replicas form one sequence; a transaction commits whole or not at all, so the table
  never holds half a batch.

Failures are raised as `StorageError`, saying what failed and what the operator can do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol


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

    def save_anchor(self, data: bytes) -> None:
        """Keep `data`, the anchor of the checkpoint just added (`node.audit.anchor`), in
        place of the one before; a cache that is checked before use, so a write that is
        lost only costs the next open a full scan."""
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

    def scan_from(self, seq: int, position: int | None) -> Iterator[bytes]:
        """As `scan`, from entry `seq` on; `position` is where it starts, as `position`
        gave it (a file's byte offset; None for a database). The entries before it are
        then known only once `history` has read them."""
        ...

    def position(self, seq: int) -> int | None:
        """Where entry `seq` starts, for an anchor (None if unknown or not needed)."""
        ...

    def history(self, count: int) -> Iterator[bytes]:
        """Entry lines [0, count) after a `scan_from(count, ...)`: once all are read, they
        are known as if `scan` had read them (a file learns where each starts)."""
        ...

    def load_anchor(self) -> bytes | None:
        """The anchor saved with the newest checkpoint, or None."""
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
