"""The Merkle tree of an `AuditLog`'s durable entries, as the log keeps it in memory.

Appending, the size, the root and signing a checkpoint need only the frontier
(`merkle.CompactRange`: O(log n) hashes). Proofs, and reading old entries, need every leaf
(`merkle.MemoryHashStore`). A log opened from an anchor (`node.audit.anchor`) starts with
the frontier alone, so that opening it costs the entries after the newest checkpoint, not
the log's length; its *history* (entries [0, anchor size - 1)) is read, checked and turned
into leaves afterwards, in the background, and whoever needs it first waits for it.

The history is checked as a full scan checks it (the chain, in worker processes for a
large log), and more: its last hash must be the `prev` the anchor's entry states, and its
leaves with the ones after it must give the root of the checkpoint the anchor was saved
with. If it fails, what needs the history raises the error (proofs and reads of old
entries are refused, naming the first bad entry) and the error is logged; appending goes
on, since what is appended is chained onto a head the signed root vouches for.
"""

from __future__ import annotations

import logging
import threading
from array import array
from collections.abc import Iterator

from federation import merkle
from node.audit.anchor import Anchor, Resumed
from node.audit.entries import GENESIS, NOT_CHAINED, AuditCorrupt, AuditError
from node.audit.file_store import FileStorage
from node.audit.storage import AuditStorage, StorageError
from node.audit.verify import check_chain
from node.audit.verify_file import Stopped, check_file

log = logging.getLogger("liaison.node")


class _Closing(Exception):
    """The log is closing: the history is no longer needed."""


class LogTree:
    """The frontier always, every leaf once the history is read (see the module).

    `state` is the log's lock: `add`, and reads of `size`/`root` that must agree with the
    chain head, are done under it by the caller; the history is swapped in under it."""

    def __init__(self, state: threading.Lock, storage: AuditStorage, where: str) -> None:
        self._state = state
        self._storage, self._where = storage, where
        self.workers: int | None = None  # of the history's check (None: one per core)
        self.range = merkle.CompactRange()
        # The frontier before the newest leaf: what an anchor saves (`node.audit.anchor`).
        self.before: tuple[bytes, ...] = ()
        self._store: merkle.MemoryHashStore | None = merkle.MemoryHashStore()
        self._hasher: merkle.TreeHasher | None = merkle.TreeHasher(self._store)
        # Without the history: the leaves from `anchor.size - 1` on.
        self._tail: list[bytes] = []
        self._roots: dict[int, bytes] = {}  # roots known without the history
        self._anchor: Anchor | None = None
        self._anchor_prev = GENESIS
        self._loading = threading.Lock()
        self._error: AuditError | None = None
        self.closing = threading.Event()

    @property
    def store(self) -> merkle.MemoryHashStore | None:
        """Every leaf, once the history is read (None before)."""
        return self._store

    @property
    def size(self) -> int:
        return self.range.size

    def add(self, leaf: bytes) -> None:
        """Append a durable entry's leaf (the caller holds the log's lock)."""
        self.before = self.range.hashes
        self.range.append(leaf)
        if self._store is not None:
            self._store.append(leaf)
        else:
            self._tail.append(leaf)

    def scanned(self) -> None:
        """After a full scan filled `store` from entry 0: the frontier from it."""
        assert self._store is not None
        size = self._store.size
        self.range = merkle.CompactRange.from_state(size, self._store.frontier(size))
        self.before = tuple(self._store.frontier(size - 1)) if size else ()

    def resumed(self, anchor: Anchor, resumed: Resumed) -> None:
        """Start from a checked anchor: the frontier, and the leaves from its entry on."""
        self.range, self.before = resumed.tree, resumed.before
        self._store = self._hasher = None
        self._tail = resumed.leaves
        self._anchor, self._anchor_prev = anchor, resumed.anchor_prev
        self._roots[anchor.size] = anchor.checkpoint.root

    def remember(self, size: int, root: bytes) -> None:
        """A root signed at `size`: the next checkpoint checks it without the history."""
        self._roots[size] = root

    def root_at(self, size: int | None = None) -> bytes:
        """The root at `size` (default: the current size); the history only if needed."""
        with self._state:
            if size is None or size == self.range.size:
                return self.range.root()
            known = self._roots.get(size)
            if known is not None and size <= self.range.size:
                return known
        return self.hasher().root(size)

    def knows(self, size: int) -> bool:
        """Whether `root_at(size)` is answered without reading the history."""
        return self._hasher is not None or size == self.range.size or size in self._roots

    def hasher(self) -> merkle.TreeHasher:
        """Every leaf, for proofs; reads the history first if nobody has yet (or raises
        what made it fail, an AuditError)."""
        if self._hasher is None:
            self.load_history()
        if self._hasher is None:
            raise self._error or AuditError(f"audit log {self._where}: no history")
        return self._hasher

    @property
    def history_damaged(self) -> bool:
        """Whether the background check found the entries before the anchor altered (not
        merely unread yet, nor cut short by the log closing)."""
        error = self._error
        return error is not None and "is closing" not in str(error)

    def load_history(self) -> None:
        """Read and check entries [0, anchor size - 1) and take in their leaves; once only,
        whoever asks first (the others wait). A failure is kept and raised by `hasher`."""
        with self._loading:
            if self._hasher is not None or self._error is not None or self._anchor is None:
                return
            anchor, where = self._anchor, self._where
            try:
                store = self._read_history(anchor)
            except _Closing:
                self._error = AuditError(f"audit log {where} is closing")
                return
            except (AuditError, StorageError, OSError) as exc:
                self._error = (
                    exc
                    if isinstance(exc, AuditError)
                    else AuditError(f"audit log {where}: its history could not be read ({exc})")
                )
                log.error("audit log %s: its history does not check: %s", where, self._error)
                return
            with self._state:
                for leaf in self._tail:
                    store.append(leaf)
                hasher = merkle.TreeHasher(store)
                if hasher.root(anchor.size) != anchor.checkpoint.root:
                    self._error = AuditError(
                        f"audit log {where}: its first {anchor.size} entries do not give the "
                        "root of the checkpoint signed at that size: the log was altered; keep "
                        "a copy and run `liaison audit verify --full`"
                    )
                    log.error("%s", self._error)
                    return
                self._store, self._hasher, self._tail = store, hasher, []

    def _read_history(self, anchor: Anchor) -> merkle.MemoryHashStore:
        store = merkle.MemoryHashStore()
        count, where = anchor.size - 1, self._where
        storage = self._storage
        if isinstance(storage, FileStorage) and anchor.position is not None:
            # Read by the workers themselves, each entry's length sent back.
            lengths: array[int] = array("Q")
            try:
                head, found = check_file(
                    storage.path,
                    where,
                    store,
                    torn_ok=False,
                    workers=self.workers,
                    end=anchor.position,
                    lengths=lengths,
                    stop=self.closing,
                )
            except Stopped:
                raise _Closing from None
            if found == count:
                storage.adopt_history(lengths)
        else:
            lines = self._until_closing(storage.history(count))
            head, found = check_chain(lines, where, store, torn_ok=False, workers=self.workers)
        if found != count:
            raise AuditCorrupt(where, found, f"missing: the anchor's checkpoint covers {count + 1}")
        if head != self._anchor_prev:
            raise AuditCorrupt(where, count, NOT_CHAINED)
        return store

    def _until_closing(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        for n, raw in enumerate(lines):
            if not n & 1023 and self.closing.is_set():
                raise _Closing
            yield raw
