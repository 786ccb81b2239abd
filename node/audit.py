"""The audit log: append-only and hash-chained, durable before any answer is sent.

Each entry is a line of canonical JSON of one entry plus `prev` (the previous entry's
hash) and `hash` (SHA-256 over `prev` and the entry), so removing, reordering or editing
any entry breaks the chain from there on. The lines are kept in a file (`audit.log`) or in
a database table shared by the node's replicas (`node.audit_storage`); both hold the same
bytes and are checked by the same code here. Concurrent requests share one write and one
fsync or transaction (group commit): the cost of durability is paid per batch, not per
request.

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
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import multiprocessing
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import make_url

from federation import merkle, notes
from node.audit_storage import (
    CHECKPOINTS_SUFFIX as CHECKPOINTS_SUFFIX,
)
from node.audit_storage import (
    AuditStorage,
    DatabaseStorage,
    FileStorage,
    Locked,
    StorageError,
    file_lines,
    split_checkpoint_bytes,
)
from node.audit_storage import (
    checkpoints_path as checkpoints_path,
)

GENESIS = "0" * 64
# The entry encoding: canonical JSON (sorted keys, no spaces, UTF-8), this version in `v`.
ENTRY_VERSION = 1
# Fields that may carry personal data (free text an investigator typed): an overseer gets
# their salted digests, never their values.
PERSONAL_FIELDS = ("case_reference",)
# Fields of the local hash chain, not part of the Merkle leaf: `salt` would unmask the
# personal digests, and `prev`/`hash` are over the unredacted entry.
_CHAIN_FIELDS = frozenset({"prev", "hash", "salt"})


class AuditError(Exception):
    """The log could not record an entry: the request it belongs to must not be answered."""


class AuditCorrupt(AuditError):
    def __init__(self, path: Path | str, index: int, why: str) -> None:
        super().__init__(
            f"{path}: audit entry {index} is invalid ({why}); the log has been "
            "altered or damaged: keep a copy and run `liaison audit verify`"
        )
        self.index = index
        self.why = why


class AuditReplay(AuditError):
    """Another replica of this node already audited a request with this requester and
    nonce: the request is a replay, and its entry was not written."""


class CheckpointInvalid(AuditError):
    """A signed checkpoint that is false, forged, torn, or out of order.

    `index` is the checkpoint's position in the checkpoints file (0 is the first) or -1 when
    the file as a whole is at fault; `size` is the tree size it states, if it could be read.
    """

    def __init__(self, path: Path | str, index: int, size: int | None, why: str) -> None:
        where = f"checkpoint {index}" if index >= 0 else "the checkpoints file"
        at = f" (tree size {size})" if size is not None else ""
        super().__init__(f"{path}: {where}{at} is invalid: {why}")
        self.index = index
        self.size = size
        self.why = why


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What is recorded of one exchange: no identifier values, only their digests."""

    time: str
    peer: str
    method: str
    purpose: str
    legal_basis: str
    decision: str
    reasons: tuple[str, ...]
    policy_revision: str
    request_sha256: str
    response_sha256: str
    category: str = ""
    case_reference: str = ""
    nonce: str = ""
    # Ed25519 signatures (hex) of the exact request and response bytes: proof, later, of
    # who asked what and what this node answered.
    request_signature: str = ""
    response_signature: str = ""
    # A random id, chosen before the entry is written so the answer can carry it (the
    # entry's index is known only once it is written); `append` draws one if empty.
    entry_id: str = ""


_FIELDS = tuple(f.name for f in fields(AuditRecord) if f.name != "entry_id")
# An entry's body (before `seq` and `prev` are known) and the future its request awaits.
_Pending = tuple[dict[str, Any], "asyncio.Future[str]"]


def new_entry_id() -> str:
    """A fresh audit entry id: 128 random bits, hex."""
    return secrets.token_hex(16)


def entry_timestamp(text: str) -> float | None:
    """An entry's `time` as Unix time; None if unreadable."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# One encoder and one decoder for every entry: `json.dumps` with these options builds a new
# encoder on each call, and `json.loads` of bytes first guesses their encoding (UTF-16,
# UTF-32, a UTF-8 byte-order mark), where an entry is UTF-8 and nothing else.
_encode_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_decode_json = json.JSONDecoder().decode


def _canonical(body: Mapping[str, Any]) -> bytes:
    return _encode_json(body).encode()


def _digest(prev: str, canonical: bytes) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + canonical).hexdigest()


_NOT_CHAINED = "does not chain onto the entry before it"


def _parse_line(line: bytes, index: int, path: Path | str) -> tuple[str, dict[str, Any]]:
    """The hash an entry states and its body (without `hash`), if it is entry `index`."""
    try:
        doc = _decode_json(line.decode())  # entries are UTF-8: no encoding is guessed
        stated = doc.pop("hash")
    except (ValueError, KeyError, AttributeError, TypeError):
        raise AuditCorrupt(path, index, "not a JSON entry with a hash") from None
    if doc.get("seq") != index:
        raise AuditCorrupt(path, index, f"sequence {doc.get('seq')!r} where {index} was due")
    return stated, doc


def _check_content(
    doc: dict[str, Any], prev: str, stated: Any, index: int, path: Path | str
) -> None:
    """An entry chained on `prev` (its `prev` checked already) hashes to what it states."""
    if _digest(prev, _canonical(doc)) != stated:
        raise AuditCorrupt(path, index, "hash does not match its content")
    if doc.get("v") != ENTRY_VERSION:
        raise AuditCorrupt(path, index, f"entry version {doc.get('v')!r}, not {ENTRY_VERSION}")


def _check_line(line: bytes, index: int, prev: str, path: Path | str) -> tuple[str, dict[str, Any]]:
    """The entry's hash and body (without `hash`), if it is entry `index` chained on `prev`."""
    stated, doc = _parse_line(line, index, path)
    if doc.get("prev") != prev:
        raise AuditCorrupt(path, index, _NOT_CHAINED)
    _check_content(doc, prev, stated, index, path)
    return str(stated), doc


def personal_digest(salt: str, value: str) -> str:
    """The salted digest standing for a personal value ("" for no value): the salt (128
    random bits per entry) makes guessing a short value from its digest hopeless."""
    if not value:
        return ""
    return hashlib.sha256(bytes.fromhex(salt) + value.encode()).hexdigest()


def redact(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry as an overseer sees it (and as its Merkle leaf commits to it)."""
    out = dict(entry)
    for name in _CHAIN_FIELDS:
        out.pop(name, None)
    salt = str(entry.get("salt", ""))
    for name in PERSONAL_FIELDS:
        value = out.pop(name, "")
        out[f"{name}_sha256"] = personal_digest(salt, str(value)) if salt else ""
    return out


def leaf_input(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's Merkle leaf hashes: its redacted form, canonical JSON."""
    return _canonical(redact(entry))


def entry_leaf(line: bytes) -> bytes:
    """An entry's Merkle leaf hash, from its line in the log."""
    return merkle.leaf_hash(leaf_input(json.loads(line)))


# A log at least this long is checked in worker processes when several cores are free (a
# pool costs a few tenths of a second to start), in chunks of this many lines.
PARALLEL_MIN_ENTRIES = 1 << 16
CHUNK_LINES = 1 << 13
# Workers are spawned, not forked: the caller may be a node with threads running.
POOL_START = "spawn"


def available_cores() -> int:
    """The cores this process may run on: the default number of workers of a check."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_chain(
    lines: Iterable[bytes],
    where: Path | str,
    store: merkle.MemoryHashStore | None,
    *,
    torn_ok: bool,
    workers: int | None = None,
) -> tuple[str, int]:
    """Check the chain from entry 0 (head, count); every checked entry's leaf goes into
    `store`. A torn last line (no newline) is an error unless `torn_ok`, when it ends the log.

    A log of PARALLEL_MIN_ENTRIES or more is checked by `workers` processes (default: one
    per available core; 1 checks in this process), with the same result and, for a bad
    log, the same first bad entry and reason (`_check_chain_parallel`).
    """
    lines = iter(lines)
    workers = available_cores() if workers is None else workers
    if workers > 1:
        ahead = list(itertools.islice(lines, PARALLEL_MIN_ENTRIES))
        if len(ahead) == PARALLEL_MIN_ENTRIES:
            return _check_chain_parallel(
                itertools.chain(ahead, lines), where, store, torn_ok=torn_ok, workers=workers
            )
        lines = iter(ahead)
    head, count = GENESIS, 0
    for raw in lines:
        if not raw.endswith(b"\n"):
            if torn_ok:
                break
            raise AuditCorrupt(where, count, "torn final line")
        head, doc = _check_line(raw, count, head, where)
        if store is not None:
            store.append(merkle.leaf_hash(leaf_input(doc)))
        count += 1
    return head, count


# What a worker found in one chunk: the `prev` and `hash` each entry states, up to and
# excluding the first entry that fails a check of its own; that entry's `prev` if it was
# read (so `len(prevs) == len(hashes) + 1`); the leaves of the good entries, concatenated;
# and the failure: (index, reason, torn) or None.
_ChunkResult = tuple[list[Any], list[str], bytes, tuple[int, str, bool] | None]


def _check_chunk(lines: list[bytes], first: int, leaves: bool) -> _ChunkResult:
    """The checks of entries `first`, `first + 1`, ... that need no other entry: whole
    line, JSON, `seq`, the hash over the entry's stated `prev`, version; and its leaf.

    Only `prev` is left to check, against the entry before (`_check_chain_parallel`): once
    it matches, the hash checked here is the hash `_check_line` checks."""
    prevs: list[Any] = []
    hashes: list[str] = []
    out = bytearray()
    for index, raw in enumerate(lines, first):
        if not raw.endswith(b"\n"):
            return prevs, hashes, bytes(out), (index, "torn final line", True)
        try:
            stated, doc = _parse_line(raw, index, "")
            prev = doc.get("prev")
            prevs.append(prev)
            if not isinstance(prev, str):  # never the previous entry's hash
                return prevs, hashes, bytes(out), (index, _NOT_CHAINED, False)
            _check_content(doc, prev, stated, index, "")
        except AuditCorrupt as exc:
            return prevs, hashes, bytes(out), (index, exc.why, False)
        hashes.append(str(stated))
        if leaves:
            out += merkle.leaf_hash(leaf_input(doc))
    return prevs, hashes, bytes(out), None


def _chunks(lines: Iterator[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    first = 0
    while chunk := list(itertools.islice(lines, CHUNK_LINES)):
        yield first, chunk
        first += len(chunk)


def _check_chain_parallel(
    lines: Iterator[bytes],
    where: Path | str,
    store: merkle.MemoryHashStore | None,
    *,
    torn_ok: bool,
    workers: int,
) -> tuple[str, int]:
    """`_check_chain` with the per-entry work (parse, hashes, leaf) done by `workers`
    processes, chunk by chunk; this process reads the lines, checks that each entry's
    `prev` is the hash the entry before it states, and builds the tree, in order. The first
    failure in log order is raised, with the reason `_check_line` gives: a chunk's own
    failure at entry i stands only if entries up to i chain (and, for a failure after its
    `prev` was read, entry i's `prev` too, since `_check_line` checks it first)."""
    head, count = GENESIS, 0
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(POOL_START))
    pending: deque[Future[_ChunkResult]] = deque()

    def take(result: _ChunkResult) -> bool:
        """Take in a chunk's result; False if the log ends there (a torn line, allowed)."""
        nonlocal head, count
        prevs, hashes, leaves, failure = result
        size = merkle.HASH_SIZE
        for k, stated in enumerate(hashes):
            if prevs[k] != head:
                raise AuditCorrupt(where, count, _NOT_CHAINED)
            head = stated
            if store is not None:
                store.append(leaves[k * size : (k + 1) * size])
            count += 1
        if failure is None:
            return True
        index, why, torn = failure
        assert index == count
        if torn:
            if torn_ok:
                return False
            raise AuditCorrupt(where, index, why)
        if len(prevs) > len(hashes) and prevs[-1] != head:
            raise AuditCorrupt(where, index, _NOT_CHAINED)
        raise AuditCorrupt(where, index, why)

    try:
        for first, chunk in _chunks(lines):
            pending.append(pool.submit(_check_chunk, chunk, first, store is not None))
            if len(pending) > 2 * workers and not take(pending.popleft().result()):
                return head, count
        while pending:
            if not take(pending.popleft().result()):
                return head, count
        return head, count
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def verify_log(path: Path, *, workers: int | None = None) -> int:
    """Check the whole chain from entry 0; returns the entry count or raises AuditCorrupt.
    A large log is checked by `workers` processes (default: one per core; see
    `_check_chain`)."""
    return _check_chain(file_lines(path), path, None, torn_ok=False, workers=workers)[1]


def load_tree(path: Path) -> merkle.MemoryHashStore:
    """The Merkle tree of a log's complete entries, the chain checked (AuditCorrupt if not).

    Reads only: a torn last line (an entry being written, or never acknowledged) is left
    out and left alone, so it is safe on the log of a running node.
    """
    return load_storage_tree(FileStorage(path))


def load_storage_tree(storage: AuditStorage) -> merkle.MemoryHashStore:
    """As `load_tree`, for a log in any backend."""
    store = merkle.MemoryHashStore()
    _check_chain(storage.scan(), storage.where, store, torn_ok=True)
    return store


def audit_origin(federation: str, node_id: str) -> str:
    """The origin of a node's audit log checkpoints, and the name of the key signing them."""
    return f"{federation}/{node_id}/audit"


def read_checkpoints(path: Path) -> list[str]:
    """The signed notes of a checkpoints file, oldest first (none if there is no file).

    Raises CheckpointInvalid if its last record is torn. The notes are not verified here.
    """
    if not path.exists():
        return []
    try:
        found, end = split_checkpoint_bytes(path.read_bytes())
    except UnicodeDecodeError:
        raise CheckpointInvalid(path, -1, None, "not UTF-8 text") from None
    if end != path.stat().st_size:
        raise CheckpointInvalid(path, len(found), None, "torn or malformed final record")
    return found


def storage_checkpoints(storage: AuditStorage) -> list[str]:
    """The notes a backend holds, oldest first; CheckpointInvalid if a record is torn."""
    try:
        found, torn = storage.checkpoints()
    except UnicodeDecodeError:
        raise CheckpointInvalid(storage.checkpoints_where, -1, None, "not UTF-8 text") from None
    if torn:
        raise CheckpointInvalid(
            storage.checkpoints_where, len(found), None, "torn or malformed final record"
        )
    return found


def _stated(note: str) -> notes.Checkpoint:
    """The checkpoint a note states, its signatures unchecked."""
    return notes.Checkpoint.from_note_body(note[: note.index("\n\n") + 1])


def _sign_onto(
    held: Locked,
    where: Path | str,
    tree: merkle.TreeHasher,
    key: ed25519.Ed25519PrivateKey,
    origin: str,
) -> str:
    """Sign the head of `tree` and append it to the checkpoints of a backend held locked.

    Refuses (CheckpointInvalid) to sign a tree smaller than the last checkpoint, or one
    whose root at that size differs from it: that would publish a fork of the log.
    """
    size = tree.size
    note = notes.sign_checkpoint(notes.Checkpoint(origin, size, tree.root(size)), origin, key)
    try:
        found = held.checkpoints()
    except UnicodeDecodeError:
        raise CheckpointInvalid(where, -1, None, "not UTF-8 text") from None
    if found:
        index = len(found) - 1
        try:
            last = _stated(found[-1])
        except ValueError:
            raise CheckpointInvalid(where, index, None, "not a checkpoint note") from None
        if last.size > size:
            raise CheckpointInvalid(
                where,
                index,
                last.size,
                f"the log holds only {size} durable entries; refusing to sign a smaller tree",
            )
        if tree.root(last.size) != last.root:
            raise CheckpointInvalid(
                where,
                index,
                last.size,
                "the log's root at that size differs: the log was rewritten; refusing to sign",
            )
    held.add_checkpoint(size, note)
    return note


def issue_checkpoint(
    log_path: Path, tree: merkle.TreeHasher, key: ed25519.Ed25519PrivateKey, origin: str
) -> str:
    """Sign the head of `tree` (the file log's durable entries) and append it, durably, to
    its checkpoints file, under an exclusive lock so two signers never interleave (see
    `_sign_onto` for what it refuses to sign)."""
    storage = FileStorage(log_path)
    try:
        with storage.locked() as held:
            return _sign_onto(held, checkpoints_path(log_path), tree, key, origin)
    except StorageError as exc:
        raise AuditError(f"could not write a checkpoint: {exc}") from exc


def verify_log_and_checkpoints(
    path: Path, verifier: notes.Verifier, origin: str | None = None, *, workers: int | None = None
) -> tuple[int, int]:
    """Check the chain of a log file, then every checkpoint against the tree recomputed
    from entry 0 (see `verify_storage`). Returns (entries, checkpoints)."""
    return verify_storage(FileStorage(path), verifier, origin, workers=workers)


def verify_database(
    url: str,
    verifier: notes.Verifier | None,
    origin: str | None = None,
    *,
    workers: int | None = None,
) -> tuple[int, int]:
    """`verify_storage` for a log kept in the database at `url` (none there: AuditError).
    Without a verifier only the chain is checked (and no checkpoint is counted)."""
    try:
        storage = DatabaseStorage(url, create=False)
    except StorageError as exc:
        raise AuditError(f"audit log {make_url(url).render_as_string()}: {exc}") from exc
    try:
        if verifier is None:
            chain = _check_chain(
                storage.scan(), storage.where, None, torn_ok=False, workers=workers
            )
            return chain[1], 0
        return verify_storage(storage, verifier, origin, workers=workers)
    except StorageError as exc:
        raise AuditError(f"audit log {storage.where} could not be read: {exc}") from exc
    finally:
        storage.close()


def verify_storage(
    storage: AuditStorage,
    verifier: notes.Verifier,
    origin: str | None = None,
    *,
    workers: int | None = None,
) -> tuple[int, int]:
    """Check the chain, then every checkpoint against the tree recomputed from entry 0.

    Each checkpoint must be signed by `verifier` (the node's log key) for `origin` (default
    the verifier's name), no smaller than the one before, no larger than the log, and its
    root must be the log's root at its size. Returns (entries, checkpoints) or raises
    AuditCorrupt (the chain) or CheckpointInvalid (naming the checkpoint and its size).
    A large log is checked by `workers` processes (default: one per core; `_check_chain`).
    """
    store = merkle.MemoryHashStore()
    count = _check_chain(storage.scan(), storage.where, store, torn_ok=False, workers=workers)[1]
    tree = merkle.TreeHasher(store)
    cp_where = storage.checkpoints_where
    expected = verifier.name if origin is None else origin
    found = storage_checkpoints(storage)
    previous = 0
    for index, note in enumerate(found):
        try:
            stated: int | None = _stated(note).size
        except ValueError:
            stated = None
        try:
            checkpoint = notes.verify_checkpoint(note, expected, verifier)
        except notes.NoteError as exc:
            raise CheckpointInvalid(
                cp_where, index, stated, f"does not verify with the node's key: {exc}"
            ) from None
        size = checkpoint.size
        if size < previous:
            raise CheckpointInvalid(
                cp_where, index, size, f"smaller than the checkpoint before it ({previous})"
            )
        if size > count:
            raise CheckpointInvalid(
                cp_where, index, size, f"the log holds only {count} entries: entries were removed"
            )
        if tree.root(size) != checkpoint.root:
            raise CheckpointInvalid(
                cp_where,
                index,
                size,
                f"its root is not the root of the log's first {size} entries: the log was altered",
            )
        previous = size
    return count, len(found)


class AuditLog:
    """The node's audit log: group commit onto a backend (`node.audit_storage`), and the
    Merkle tree of its durable entries in memory.

    `AuditLog(path)` keeps the log in a file; `AuditLog(storage)` in any backend, e.g. a
    `DatabaseStorage` that several replicas of the node share. Each batch of concurrent
    appends is one locked write (one fsync, or one database transaction); under that lock
    the log first takes in, checked, the entries other replicas wrote since it last looked,
    so every replica chains onto the one true head and all of them grow one tree.

    Appends run their I/O in a worker thread. The other methods are synchronous and may
    read the backend: callers on an event loop run them in a thread. `size` and the tree
    are what this process has seen; `catch_up` takes in other replicas' newer entries
    (reads beyond the known size, and `checkpoint`, do so by themselves).
    """

    def __init__(self, target: Path | AuditStorage, *, replay_window_s: float = 0.0) -> None:
        if isinstance(target, Path):
            self.path: Path | None = target
            self._storage: AuditStorage = FileStorage(target)
        else:
            self.path = target.path if isinstance(target, FileStorage) else None
            self._storage = target
        self.where = self._storage.where
        # The Merkle tree of the durable entries (only they become leaves), the chain's
        # head and length; changed only under `_state`, by whichever thread sees entries.
        self._tree = merkle.MemoryHashStore()
        self._hasher = merkle.TreeHasher(self._tree)
        self._state = threading.Lock()
        # One locked write (batch or checkpoint) at a time in this process.
        self._writer = threading.Lock()
        self._head, self._size = GENESIS, 0
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
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.last_checkpoint_size = self._last_signed_size()

    @property
    def _fd(self) -> int:
        """The file backend's descriptor (tests swap it for /dev/full)."""
        assert isinstance(self._storage, FileStorage)
        return self._storage._fd

    @_fd.setter
    def _fd(self, fd: int) -> None:
        assert isinstance(self._storage, FileStorage)
        self._storage._fd = fd

    def _recover(self) -> None:
        """Verify the existing chain from entry 0 and build the tree (AuditCorrupt names
        the first bad entry); a file's torn last line, never acknowledged, is cut off."""
        try:
            self._head, self._size = _check_chain(
                self._storage.scan(), self.where, self._tree, torn_ok=True
            )
            self._storage.keep(self._size)
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be opened: {exc}") from exc
        except OSError as exc:
            raise AuditError(f"audit log {self.where} could not be opened: {exc}") from exc

    def _last_signed_size(self) -> int:
        """The size of the newest stored checkpoint (0 if none or unreadable: the next
        checkpoint then checks them again, under its lock)."""
        try:
            found = storage_checkpoints(self._storage)
            return _stated(found[-1]).size if found else 0
        except (CheckpointInvalid, StorageError, ValueError):
            return 0

    @property
    def size(self) -> int:
        """Entries durable in the backend, as far as this process has seen."""
        return self._size

    @property
    def tree_size(self) -> int:
        """Leaves of the Merkle tree: the durable entries this process has seen."""
        return self._tree.size

    def catch_up(self) -> int:
        """Take in the entries other replicas appended since this process last looked
        (their chain checked); returns the size. Nothing to do for a file log."""
        try:
            self._admit(self._storage.since(self._size), self._size)
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be read: {exc}") from exc
        return self._size

    def _known(self, size: int | None) -> None:
        if size is not None and size > self._size:
            self.catch_up()

    def root(self, size: int | None = None) -> bytes:
        """The tree's root over its first `size` leaves (default: all durable entries)."""
        self._known(size)
        return self._hasher.root(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 proof that entry `index` is in the tree of `size` (default: current)."""
        self._known(size)
        return self._hasher.inclusion_proof(index, self._tree.size if size is None else size)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """RFC 9162 proof that the tree of `new` (default: current) extends the one of `old`."""
        self._known(new)
        return self._hasher.consistency_proof(old, self._tree.size if new is None else new)

    def checkpoint(self, key: ed25519.Ed25519PrivateKey, origin: str) -> str:
        """Sign the durable tree's head as a checkpoint note and store it; returns the note.

        Under the backend's lock, after taking in every entry durable so far (whichever
        replica wrote it), so the note is of the whole log, never smaller than the last one
        stored, and never of a fork (see `_sign_onto`)."""
        where: Path | str = self._storage.checkpoints_where
        with self._writer:
            try:
                with self._storage.locked() as held:
                    self._admit(held.since(self._size), self._size)
                    note = _sign_onto(held, where, self._hasher, key, origin)
            except StorageError as exc:
                raise AuditError(f"could not store a checkpoint of {self.where}: {exc}") from exc
        self.last_checkpoint_size = _stated(note).size
        return note

    def latest_checkpoint(self) -> str | None:
        """The newest signed checkpoint note, or None if none was signed yet."""
        try:
            return self._storage.latest_checkpoint()
        except UnicodeDecodeError:
            raise CheckpointInvalid(
                self._storage.checkpoints_where, -1, None, "not UTF-8 text"
            ) from None
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be read: {exc}") from exc

    def entries(self, start: int, end: int) -> list[bytes]:
        """Durable entries [start, end) as an overseer sees them: each one's redacted form,
        the exact bytes its Merkle leaf hashes (`leaf_input`)."""
        self._known(end)
        if not 0 <= start <= end <= self._size:
            raise ValueError(f"entries [{start}, {end}) are not within the log's {self._size}")
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
        try:
            index = self._storage.find(entry_id)
        except StorageError as exc:
            raise AuditError(f"audit log {self.where} could not be read: {exc}") from exc
        if index is not None and index >= self._size:
            self.catch_up()
        return index if index is not None and index < self._size else None

    async def append(self, record: AuditRecord) -> str:
        """Record one exchange; returns its entry id once the entry is durable."""
        body: dict[str, Any] = {name: getattr(record, name) for name in _FIELDS}
        body["reasons"] = list(record.reasons)
        body["v"], body["id"] = ENTRY_VERSION, record.entry_id or new_entry_id()
        body["salt"] = secrets.token_hex(16)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((body, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    def _encode(self, batch: list[_Pending]) -> tuple[list[bytes], list[bytes], list[str]]:
        """The batch's lines, chained on the durable head, with their leaves and heads."""
        lines, leaves, heads, head = [], [], [], self._head
        for seq, (body, _) in enumerate(batch, start=self._size):
            body["seq"], body["prev"] = seq, head
            canonical = _canonical(body)
            head = _digest(head, canonical)
            # The line is the canonical body with its hash appended as the last member.
            lines.append(canonical[:-1] + b',"hash":"' + head.encode() + b'"}\n')
            leaves.append(merkle.leaf_hash(leaf_input(body)))
            heads.append(head)
        return lines, leaves, heads

    async def _flush(self) -> None:
        while self._pending:
            # One turn of the event loop first: requests that are already runnable append
            # their entries now and share this write, at no cost to a lone request.
            await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            try:
                replays = await asyncio.to_thread(self._commit, batch)
            except AuditError as exc:
                # Entries appended meanwhile are not chained onto this batch yet: they get
                # their own attempt.
                self._fail(batch, exc)
                continue
            if replays:
                self._fail(replays, AuditReplay("another replica already audited this nonce"))
            for body, future in batch:
                if not future.done():
                    future.set_result(str(body["id"]))

    def _commit(self, batch: list[_Pending]) -> list[_Pending]:
        """Write one batch in one locked write (a worker thread's work): take in what other
        replicas wrote, chain the batch onto that head, write it durably.

        If a database connection dies during the commit itself, the batch may have been
        committed after all: its requests are refused (AuditError) and the entries, if
        they were written, are taken in by the next catch-up like another replica's. An
        exchange is then audited but not answered, never the other way round."""
        with self._writer:
            try:
                with self._storage.locked() as held:
                    self._admit(held.since(self._size), self._size)
                    replays = self._replays(batch)
                    if replays:
                        refused = {id(future) for _, future in replays}
                        batch = [p for p in batch if id(p[1]) not in refused]
                    first = self._size
                    lines, leaves, heads = self._encode(batch)
                    if batch:
                        held.append(first, lines, [str(body["id"]) for body, _ in batch])
            except StorageError as exc:
                raise AuditError(
                    f"audit log {self.where} could not be written ({exc.detail}); the request "
                    f"was refused and nothing was disclosed: {exc.hint}"
                ) from exc
            with self._state:
                for seq, (leaf, head) in enumerate(zip(leaves, heads, strict=True), first):
                    if seq == self._size:  # else a reader's catch_up took it in already
                        self._tree.append(leaf)
                        self._head, self._size = head, seq + 1
        return replays

    def _admit(self, lines: list[bytes], first: int) -> None:
        """Take in durable entries `first`, `first + 1`, ... that this process has not seen
        yet, checking that each chains onto the head (AuditCorrupt names one that does not)."""
        if not lines:
            return
        with self._state:
            for seq, raw in enumerate(lines, first):
                if seq < self._size:
                    continue
                head, doc = _check_line(raw, self._size, self._head, self.where)
                self._tree.append(merkle.leaf_hash(leaf_input(doc)))
                self._head, self._size = head, self._size + 1
                if self._replay_window and doc.get("nonce"):
                    when = entry_timestamp(str(doc.get("time", ""))) or time.time()
                    self._foreign[(str(doc.get("peer")), str(doc["nonce"]))] = when

    def _replays(self, batch: list[_Pending]) -> list[_Pending]:
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

    def _fail(self, entries: list[_Pending], error: AuditError) -> None:
        for _, future in entries:
            if not future.done():
                future.set_exception(error)

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
        if self._flusher is not None:
            await self._flusher
        self._storage.close()


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


def open_audit_log(store: str, path: Path, url: str, *, replay_window_s: float = 0.0) -> AuditLog:
    """The audit log `[audit] store` names: a file at `path`, or tables in the database
    at `url` (AuditError, saying what to do, if it cannot be opened). In a database, shared
    by replicas, it refuses a request another replica audited within `replay_window_s`."""
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
        return AuditLog(storage, replay_window_s=replay_window_s)
    return AuditLog(path)
