"""The audit log: append-only and hash-chained, durable before any answer is sent.

Each entry is a line of canonical JSON of one entry plus `prev` (the previous entry's
hash) and `hash` (SHA-256 over `prev` and the entry), so removing, reordering or editing
any entry breaks the chain from there on. The lines are kept in a file (`audit.log`) or in
a database table shared by the node's replicas (`node.audit.storage`); both hold the same
bytes and are checked by the same code here. Concurrent requests share one write and one
fsync or transaction (group commit): the cost of durability is paid per batch, not per
request. One long-lived writer thread per log (`node.audit.writer`) takes as its next batch
whatever was queued while it wrote the last one, and wakes each batch's requests at once.

If a write fails (disk full, I/O error, database down) every entry of that batch fails:
the caller refuses its request, and nothing half-written remains (the file is cut back to
its last durable entry; the transaction rolls back), so nothing is disclosed unaudited.

Every durable entry is also a leaf of an RFC 9162 Merkle tree (`federation.merkle`). The
leaf is the entry's *redacted* form (`redact`): canonical JSON of the entry without its
chain fields, each personal field replaced by a salted SHA-256 of its value. An overseer
who receives redacted entries can recompute every leaf, and so check them against the
node's signed roots, without ever seeing a personal value; the node can later reveal a
value and its salt to prove what the digest stood for. The node signs the tree's head as a
C2SP checkpoint (`AuditLog.checkpoint`, `issue_checkpoint`), kept beside the entries (the
file `<audit path>.checkpoints`, each note followed by one blank line; or the table
`audit_checkpoints`). A checkpoint commits the node to the log's first `size` entries: a
rewritten log, even with a rebuilt chain, no longer matches the roots the node signed
(`verify_storage`), and any entry can be proven to an overseer who holds only the node's
public key (`inclusion_proof`).

With several replicas on one database there is still one log and one tree per node: each
batch is chained and written under one database lock, after the entries other replicas
wrote were taken in and checked (`AuditLog`).

Opening a log checks only the entries after its newest checkpoint when the anchor saved
with that checkpoint verifies (`node.audit.anchor`: the Merkle frontier and chain head,
bound to the signed root); else the whole chain, from entry 0, and the reason is logged.
After a fast open, the older entries (the *history*) are checked and their leaves loaded in
the background, in worker processes (`node.audit.log_tree`): proofs and reads of old
entries wait for it, appends and checkpoints do not.

This module holds the log that a running node appends to. What an entry is, and its
encoding, chain and leaf: `node.audit.entries`. Checking a log from entry 0 and its
checkpoints: `node.audit.verify`. Where the lines are kept: `node.audit.storage`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import make_url

from federation import checkpoints, merkle
from node.audit.anchor import AnchorRejected, encode_anchor, resume, trusted_anchor
from node.audit.checkpoints import sign_onto
from node.audit.database_store import DatabaseStorage
from node.audit.entries import (
    GENESIS,
    AuditError,
    AuditRecord,
    CheckpointInvalid,
    check_line_leaf,
    encode_entries,
    entry_body,
    entry_timestamp,
    leaf_input,
)
from node.audit.file_store import FileStorage
from node.audit.log_tree import LogTree
from node.audit.storage import AuditStorage, StorageError
from node.audit.verify import check_chain, stated_checkpoint
from node.audit.verify_file import check_file
from node.audit.writer import BatchWriter, Pending

log = logging.getLogger("liaison.node")


class AuditLog:
    """The node's audit log: group commit onto a backend (`node.audit.storage`), and the
    Merkle tree of its durable entries in memory.

    `AuditLog(path)` keeps the log in a file; `AuditLog(storage)` in any backend, e.g. a
    `DatabaseStorage` that several replicas of the node share. Each batch of concurrent
    appends is one locked write (one fsync, or one database transaction); under that lock
    the log first takes in, checked, the entries other replicas wrote since it last looked,
    so every replica chains onto the one true head and all of them grow one tree.

    Appends are written by the log's one writer thread (`node.audit.writer`). The other
    methods are synchronous and may read the backend: callers on an event loop run them in
    a thread. `size` and the tree
    are what this process has seen; `catch_up` takes in other replicas' newer entries
    (reads beyond the known size, and `checkpoint`, do so by themselves).
    """

    def __init__(
        self,
        target: Path | AuditStorage,
        *,
        replay_window_s: float = 0.0,
        verifier: checkpoints.Verifier | None = None,
        load_history: bool = True,
    ) -> None:
        """`verifier` (the node's log key, named by its origin): an anchor is used only if
        its checkpoint verifies with it (without one, only if it is of the newest stored
        checkpoint). `load_history`: after a fast open, check and load the older entries
        in the background (False: only when a proof or an old entry is asked for)."""
        if isinstance(target, Path):
            self.path: Path | None = target
            self._storage: AuditStorage = FileStorage(target)
        else:
            self.path = target.path if isinstance(target, FileStorage) else None
            self._storage = target
        self.where = self._storage.where
        # The Merkle tree of the durable entries (only they become leaves; its size is the
        # log's) and the chain's head; changed only under `_state`, by whichever thread
        # sees entries.
        self._state = threading.Lock()
        self._tree = LogTree(self._state, self._storage, self.where)
        self._verifier = verifier
        self._history: threading.Thread | None = None
        # One locked write (batch or checkpoint) at a time in this process.
        self._writer = threading.Lock()
        self._head = GENESIS
        # (requester, nonce) of the entries other replicas wrote, by entry time, kept for
        # `replay_window_s`: a request one replica answered and another receives is
        # refused when its batch is committed (`AuditReplay`). 0 keeps none (one process).
        self._replay_window = replay_window_s
        self._foreign: dict[tuple[str, str], float] = {}
        try:
            self._recover()
        except BaseException:
            self._storage.close()
            raise
        self._batches = BatchWriter(self._commit, self._unwritten)
        self.last_checkpoint_size = self._last_signed_size()
        if load_history and self._tree.store is None:
            self._history = threading.Thread(
                target=self._tree.load_history, name="audit-history", daemon=True
            )
            self._history.start()

    def _recover(self) -> None:
        """From the anchor if it verifies (`_resume`), else the whole chain from entry 0,
        building the tree (AuditCorrupt names the first bad entry); a file's torn last
        line, never acknowledged, is cut off."""
        try:
            if self._resume():
                return
            store = self._tree.store
            if isinstance(self._storage, FileStorage):
                # Read by the workers themselves, each entry's length sent back.
                lengths: array[int] = array("Q")
                path = self._storage.path
                self._head, count = check_file(
                    path, self.where, store, torn_ok=True, lengths=lengths
                )
                self._storage.scanned(lengths)
            else:
                lines = self._storage.scan()
                self._head, count = check_chain(lines, self.where, store, torn_ok=True)
            self._tree.scanned()
            self._storage.keep(count)
        except (StorageError, OSError) as exc:
            raise AuditError(f"audit log {self.where} could not be opened: {exc}") from exc

    def _resume(self) -> bool:
        """Open from the anchor of the newest checkpoint, reading only the entries from
        the last one it covers on; False (and why, logged) if the anchor cannot be trusted.
        A bad entry after it is AuditCorrupt, as in a full scan."""
        try:
            anchor = trusted_anchor(self._storage, self._verifier)
            start = self._storage.scan_from(anchor.size - 1, anchor.position)
            resumed = resume(start, anchor, self.where, torn_ok=True)
        except AnchorRejected as exc:
            if exc.saved:
                log.warning("audit log %s: %s; checking it from entry 0", self.where, exc)
            return False
        self._storage.keep(resumed.count)
        self._head = resumed.head
        self._tree.resumed(anchor, resumed)
        log.info(
            "audit log %s: opened from the checkpoint at %d (entries from %d checked); "
            "the older entries are checked in the background",
            self.where,
            anchor.size,
            anchor.size - 1,
        )
        return True

    def _last_signed_size(self) -> int:
        """The size of the newest stored checkpoint (0 if none or unreadable: the next
        checkpoint then checks them again, under its lock)."""
        try:
            note = self._storage.latest_checkpoint()
            return stated_checkpoint(note).size if note else 0
        except (CheckpointInvalid, StorageError, ValueError):
            return 0

    @property
    def size(self) -> int:
        """Entries durable in the backend, as far as this process has seen: the leaves of
        its Merkle tree."""
        return self._tree.size

    def history_damaged(self) -> bool:
        """Whether the entries before the anchor failed their check after a fast open: the
        log was altered after it was signed (the node keeps answering on the signed head,
        refuses proofs and exports of the past, and raises LiaisonAuditHistoryDamaged)."""
        return self._tree.history_damaged

    @property
    def history_loaded(self) -> bool:
        """Whether every leaf is in memory (after a full open, or the history's check)."""
        return self._tree.store is not None

    def _hasher(self) -> merkle.TreeHasher:
        return self._tree.hasher()

    def catch_up(self) -> int:
        """Take in the entries other replicas appended since this process last looked
        (their chain checked); returns the size. Nothing to do for a file log."""
        try:
            self._admit(self._storage.since(self._tree.size), self._tree.size)
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be read: {exc}") from exc
        return self._tree.size

    def _known(self, size: int | None) -> None:
        if size is not None and size > self._tree.size:
            self.catch_up()

    def root(self, size: int | None = None) -> bytes:
        """The tree's root over its first `size` leaves (default: all durable entries)."""
        self._known(size)
        return self._tree.root_at(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 proof that entry `index` is in the tree of `size` (default: current)."""
        self._known(size)
        hasher = self._hasher()
        return hasher.inclusion_proof(index, self._tree.size if size is None else size)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """RFC 9162 proof that the tree of `new` (default: current) extends the one of `old`."""
        self._known(new)
        hasher = self._hasher()
        return hasher.consistency_proof(old, self._tree.size if new is None else new)

    def checkpoint(self, key: ed25519.Ed25519PrivateKey, origin: str) -> str:
        """Sign the durable tree's head as a checkpoint note and store it; returns the note.

        Under the backend's lock, after taking in every entry durable so far (whichever
        replica wrote it), so the note is of the whole log, never smaller than the last one
        stored, and never of a fork (see `sign_onto`)."""
        where: Path | str = self._storage.checkpoints_where
        # A root this process does not know (another signer's checkpoint) needs the
        # history: read it now, not while appends wait for the lock.
        last = self._last_signed_size()
        if last <= self._tree.size and not self._tree.knows(last):
            self._hasher()
        with self._writer:
            try:
                with self._storage.locked() as held:
                    self._admit(held.since(self._tree.size), self._tree.size)
                    size = self._tree.size
                    note = sign_onto(held, where, size, self._tree.root_at, key, origin)
                    if size:
                        held.save_anchor(self._anchor(note))
            except StorageError as exc:
                raise AuditError(f"could not store a checkpoint of {self.where}: {exc}") from exc
        checkpoint = stated_checkpoint(note)
        self._tree.remember(checkpoint.size, checkpoint.root)
        self.last_checkpoint_size = checkpoint.size
        return note

    def _anchor(self, note: str) -> bytes:
        """The anchor of `note`, a checkpoint of every entry this process has seen."""
        with self._state:
            size = self._tree.size
            return encode_anchor(
                note, self._head, self._tree.before, self._storage.position(size - 1)
            )

    def latest_checkpoint(self) -> str | None:
        """The newest signed checkpoint note, or None if none was signed yet."""
        try:
            return self._storage.latest_checkpoint()
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be read: {exc}") from exc

    def entries(self, start: int, end: int) -> list[bytes]:
        """Durable entries [start, end) as an overseer sees them: each one's redacted form,
        the exact bytes its Merkle leaf hashes (`leaf_input`)."""
        self._known(end)
        self._hasher()  # a file knows where old entries are once it has read its history
        if not 0 <= start <= end <= self._tree.size:
            raise ValueError(f"entries [{start}, {end}) are not within the log's {self._tree.size}")
        try:
            lines = self._storage.lines(start, end)
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be read: {exc}") from exc
        return [leaf_input(json.loads(line)) for line in lines]

    def find(self, entry_id: str) -> int | None:
        """The index of the durable entry with this id (the one an answer named), or None.

        A file log is scanned: fine for an overseer's occasional question, not for a hot
        path; a database looks the id up in its index."""
        if len(entry_id) != 32 or any(c not in "0123456789abcdef" for c in entry_id):
            return None
        self._hasher()
        try:
            index = self._storage.find(entry_id)
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be read: {exc}") from exc
        if index is not None and index >= self._tree.size:
            self.catch_up()
        return index if index is not None and index < self._tree.size else None

    async def append(
        self, record: AuditRecord, *, if_replayed: Callable[[], AuditRecord] | None = None
    ) -> str:
        """Record one exchange; returns its entry id once the entry is durable.

        An answer to a request another replica already audited (a replay: `_replays`) is
        not written. Without `if_replayed` the append raises AuditReplay; with it, the
        record `if_replayed()` returns (the refusal of the replay, with the same entry id)
        is written in its place, in the same locked write, so the request still has
        exactly one entry. It is called at most once, in the writer's thread."""
        return await self._batches.append(entry_body(record), if_replayed)

    def _encode(self, batch: list[Pending]) -> tuple[list[bytes], list[bytes], list[str]]:
        """The batch's lines, chained on the durable head, with their leaves and heads."""
        return encode_entries([body for body, _, _ in batch], self._tree.size, self._head)

    def _commit(self, batch: list[Pending]) -> list[Pending]:
        """Write one batch in one locked write (the writer thread's work): take in what other
        replicas wrote, chain the batch onto that head, write it durably.

        If a database connection dies during the commit itself, the batch may have been
        committed after all: its requests are refused (AuditError) and the entries, if
        they were written, are taken in by the next catch-up like another replica's. An
        exchange is then audited but not answered, never the other way round."""
        with self._writer:
            try:
                with self._storage.locked() as held:
                    self._admit(held.since(self._tree.size), self._tree.size)
                    replays = self._replays(batch)
                    if replays:
                        batch = _instead_of_replays(batch, replays)
                        replays = [p for p in replays if p[2] is None]
                    first = self._tree.size
                    lines, leaves, heads = self._encode(batch)
                    if batch:
                        held.append(first, lines, [str(body["id"]) for body, _, _ in batch])
            except StorageError as exc:
                raise AuditError(
                    f"audit log {self.where} could not be written ({exc.detail}); the request "
                    f"was refused and nothing was disclosed: {exc.hint}"
                ) from exc
            with self._state:
                for seq, (leaf, head) in enumerate(zip(leaves, heads, strict=True), first):
                    if seq == self._tree.size:  # else a reader's catch_up took it in already
                        self._tree.add(leaf)
                        self._head = head
        return replays

    def _admit(self, lines: list[bytes], first: int) -> None:
        """Take in durable entries `first`, `first + 1`, ... that this process has not seen
        yet, checking that each chains onto the head (AuditCorrupt names one that does not)."""
        if not lines:
            return
        with self._state:
            for seq, raw in enumerate(lines, first):
                if seq < self._tree.size:
                    continue
                head, doc, leaf = check_line_leaf(raw, self._tree.size, self._head, self.where)
                self._tree.add(leaf)
                self._head = head
                if self._replay_window and doc.get("nonce"):
                    when = entry_timestamp(str(doc.get("time", ""))) or time.time()
                    self._foreign[(str(doc.get("peer")), str(doc["nonce"]))] = when

    def _replays(self, batch: list[Pending]) -> list[Pending]:
        """The batch's answers (entries that allow) whose (requester, nonce) another
        replica already audited (under the write lock, after taking in every entry written
        so far). A refusal discloses nothing: it is written whatever its nonce."""
        if not self._foreign:
            return []
        with self._state:
            horizon = time.time() - self._replay_window
            for key in [k for k, when in self._foreign.items() if when < horizon]:
                del self._foreign[key]
            return [
                pending
                for pending in batch
                if pending[0].get("decision") == "allow"
                and pending[0].get("nonce")
                and (str(pending[0].get("peer")), str(pending[0]["nonce"])) in self._foreign
            ]

    def _unwritten(self, exc: BaseException) -> AuditError:
        error = AuditError(
            f"audit log {self.where}: a batch could not be written ({type(exc).__name__}); "
            "the request was refused and nothing was disclosed"
        )
        error.__cause__ = exc
        return error

    def recent(self, since: float) -> Iterator[dict[str, Any]]:
        """Durable entries whose time is at or after `since` (Unix time), newest first,
        whichever replica wrote them. Reads backwards, so a restart costs the freshness
        window, not the log."""
        try:
            for raw in self._storage.newest_first():
                entry = json.loads(raw)
                when = entry_timestamp(str(entry.get("time", "")))
                if when is None or when < since:
                    return
                yield entry
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be read: {exc}") from exc

    async def close(self) -> None:
        await self._batches.close()
        self._tree.closing.set()
        if self._history is not None:
            await asyncio.to_thread(self._history.join)
        self._storage.close()


def _instead_of_replays(batch: list[Pending], replays: list[Pending]) -> list[Pending]:
    """The batch with each replay that has a replacement replaced by it (same entry id),
    and each replay without one left out (its request gets AuditReplay)."""
    replayed = {id(pending[1]) for pending in replays}
    kept: list[Pending] = []
    for body, future, instead in batch:
        if id(future) not in replayed:
            kept.append((body, future, instead))
        elif instead is not None:
            replacement = entry_body(instead())
            if replacement["id"] != body["id"] or replacement["decision"] == "allow":
                raise AuditError("the record written instead of a replay must refuse it")
            kept.append((replacement, future, None))
    return kept


def existing_storage(store: str, path: Path, url: str) -> AuditStorage:
    """The backend of an existing audit log, opened to read (and to sign checkpoints): what
    the `liaison audit` commands work on, whichever store the node's config names."""
    if store == "database":
        try:
            return DatabaseStorage(url, create=False)
        except StorageError as exc:
            raise AuditError(f"audit database: {exc}") from exc
    if not path.exists():
        raise FileNotFoundError(f"audit log {path} not found")
    return FileStorage(path)


def open_audit_log(
    store: str,
    path: Path,
    url: str,
    *,
    replay_window_s: float = 0.0,
    verifier: checkpoints.Verifier | None = None,
) -> AuditLog:
    """The audit log `[audit] store` names: a file at `path`, or tables in the database
    at `url` (AuditError, saying what to do, if it cannot be opened). In a database, shared
    by replicas, it refuses a request another replica audited within `replay_window_s`.
    `verifier`: the node's log key, which the anchor's checkpoint must verify with."""
    if store == "database":
        try:
            storage: AuditStorage = DatabaseStorage(url)
        except StorageError as exc:
            where = make_url(url).render_as_string()
            raise AuditError(
                f"audit database {where} could not be opened ({exc.detail}): start it, or fix "
                "[audit] url (or [store] url, which it defaults to); no request is answered "
                "unaudited, so the node does not start without it"
            ) from exc
        return AuditLog(storage, replay_window_s=replay_window_s, verifier=verifier)
    return AuditLog(path, verifier=verifier)
