"""The audit log: an append-only, hash-chained file, durable before any answer is sent.

Each line is canonical JSON of one entry plus `prev` (the previous entry's hash) and `hash`
(SHA-256 over `prev` and the entry), so removing, reordering or editing any line breaks the
chain from there on. Concurrent requests share one write and one fsync (group commit): the
cost of durability is paid per batch, not per request.

If a write fails (disk full, I/O error) every entry of that batch, and every entry chained
onto it, fails: the caller refuses its request, and the file is cut back to its last durable
entry, so nothing is disclosed unaudited and nothing half-written remains.

Every durable entry is also a leaf of an RFC 9162 Merkle tree (`federation.merkle`): the
leaf is the entry's line without its newline. The node signs the tree's head as a C2SP
checkpoint (`AuditLog.checkpoint`, `issue_checkpoint`) and appends it to a sibling file,
`<audit path>.checkpoints`, each note followed by one blank line. A checkpoint commits the
node to the log's first `size` entries: a rewritten log, even with a rebuilt chain, no
longer matches the roots the node signed (`verify_log_and_checkpoints`), and any entry can
be proven to an overseer who holds only the node's public key (`inclusion_proof`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import merkle, notes

GENESIS = "0" * 64
CHECKPOINTS_SUFFIX = ".checkpoints"


class AuditError(Exception):
    """The log could not record an entry: the request it belongs to must not be answered."""


class AuditCorrupt(AuditError):
    def __init__(self, path: Path, index: int, why: str) -> None:
        super().__init__(
            f"{path}: audit entry {index} is invalid ({why}); the log has been "
            "altered or damaged: keep a copy and run `liaison audit verify`"
        )
        self.index = index
        self.why = why


class CheckpointInvalid(AuditError):
    """A signed checkpoint that is false, forged, torn, or out of order.

    `index` is the checkpoint's position in the checkpoints file (0 is the first) or -1 when
    the file as a whole is at fault; `size` is the tree size it states, if it could be read.
    """

    def __init__(self, path: Path, index: int, size: int | None, why: str) -> None:
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


_FIELDS = tuple(f.name for f in fields(AuditRecord))
# An entry's line, its hash, and the future its request awaits.
_Pending = tuple[bytes, str, "asyncio.Future[str]"]


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


def _check_line(line: bytes, index: int, prev: str, path: Path) -> str:
    try:
        doc = _decode_json(line.decode())  # entries are UTF-8: no encoding is guessed
        stated = doc.pop("hash")
    except (ValueError, KeyError, AttributeError, TypeError):
        raise AuditCorrupt(path, index, "not a JSON entry with a hash") from None
    if doc.get("seq") != index:
        raise AuditCorrupt(path, index, f"sequence {doc.get('seq')!r} where {index} was due")
    if doc.get("prev") != prev:
        raise AuditCorrupt(path, index, "does not chain onto the entry before it")
    if _digest(prev, _canonical(doc)) != stated:
        raise AuditCorrupt(path, index, "hash does not match its content")
    return str(stated)


def entry_leaf(line: bytes) -> bytes:
    """An entry's Merkle leaf hash: RFC 9162's over its line, without the newline."""
    return merkle.leaf_hash(line[:-1] if line.endswith(b"\n") else line)


def _scan(
    path: Path, store: merkle.MemoryHashStore | None, *, torn_ok: bool
) -> tuple[str, int, int]:
    """Check the chain from entry 0 (head, count, byte length of the complete entries).

    A torn last line is an error unless `torn_ok`, when it is left out (and left alone).
    Every checked entry's leaf goes into `store`.
    """
    head, count, offset = GENESIS, 0, 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                if torn_ok:
                    break
                raise AuditCorrupt(path, count, "torn final line")
            head = _check_line(raw, count, head, path)
            if store is not None:
                store.append(entry_leaf(raw))
            count += 1
            offset += len(raw)
    return head, count, offset


def verify_log(path: Path) -> int:
    """Check the whole chain from entry 0; returns the entry count or raises AuditCorrupt."""
    return _scan(path, None, torn_ok=False)[1]


def load_tree(path: Path) -> merkle.MemoryHashStore:
    """The Merkle tree of a log's complete entries, the chain checked (AuditCorrupt if not).

    Reads only: a torn last line (an entry being written, or never acknowledged) is left
    out and left alone, so it is safe on the log of a running node.
    """
    store = merkle.MemoryHashStore()
    if path.exists():
        _scan(path, store, torn_ok=True)
    return store


def audit_origin(federation: str, node_id: str) -> str:
    """The origin of a node's audit log checkpoints, and the name of the key signing them."""
    return f"{federation}/{node_id}/audit"


def checkpoints_path(path: Path) -> Path:
    """Where the signed checkpoints of the audit log at `path` are kept."""
    return path.with_name(path.name + CHECKPOINTS_SUFFIX)


def _split_checkpoints(text: str) -> tuple[list[str], int]:
    """The complete notes of a checkpoints file and the length of the text they take.

    Each record is a note then one blank line. A checkpoint's text and its signature block
    hold no blank line, so splitting at blank lines yields text, signatures, text, ...
    """
    chunks = text.split("\n\n")
    found: list[str] = []
    end = 0
    for i in range(0, len(chunks) - 2, 2):
        note = chunks[i] + "\n\n" + chunks[i + 1] + "\n"
        found.append(note)
        end += len(note) + 1
    return found, end


def _read_checkpoints_text(path: Path, data: bytes) -> tuple[list[str], int]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointInvalid(path, -1, None, "not UTF-8 text") from None
    found, end = _split_checkpoints(text)
    return found, len(text[:end].encode())


def read_checkpoints(path: Path) -> list[str]:
    """The signed notes of a checkpoints file, oldest first (none if there is no file).

    Raises CheckpointInvalid if its last record is torn. The notes are not verified here.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    found, end = _read_checkpoints_text(path, data)
    if end != len(data):
        raise CheckpointInvalid(path, len(found), None, "torn or malformed final record")
    return found


def _stated(note: str) -> notes.Checkpoint:
    """The checkpoint a note states, its signatures unchecked."""
    return notes.Checkpoint.from_note_body(note[: note.index("\n\n") + 1])


def issue_checkpoint(
    log_path: Path, tree: merkle.TreeHasher, key: ed25519.Ed25519PrivateKey, origin: str
) -> str:
    """Sign the head of `tree` (the log's durable entries) and append it, durably.

    Under an exclusive lock on the checkpoints file, so two signers never interleave. It
    refuses (CheckpointInvalid) to sign a tree smaller than the last checkpoint, or one
    whose root at that size differs from it: that would publish a fork of the log.
    """
    size = tree.size
    note = notes.sign_checkpoint(notes.Checkpoint(origin, size, tree.root(size)), origin, key)
    path = checkpoints_path(log_path)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = path.read_bytes()
        found, end = _read_checkpoints_text(path, data)
        if end != len(data):  # a record torn by a crash was never returned: cut it off
            os.ftruncate(fd, end)
        if found:
            index = len(found) - 1
            try:
                last = _stated(found[-1])
            except ValueError:
                raise CheckpointInvalid(path, index, None, "not a checkpoint note") from None
            if last.size > size:
                raise CheckpointInvalid(
                    path,
                    index,
                    last.size,
                    f"the log holds only {size} durable entries; refusing to sign a smaller tree",
                )
            if tree.root(last.size) != last.root:
                raise CheckpointInvalid(
                    path,
                    index,
                    last.size,
                    "the log's root at that size differs: the log was rewritten; refusing to sign",
                )
        view = memoryview((note + "\n").encode())
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return note


def verify_log_and_checkpoints(
    path: Path, verifier: notes.Verifier, origin: str | None = None
) -> tuple[int, int]:
    """Check the chain, then every checkpoint against the tree recomputed from entry 0.

    Each checkpoint must be signed by `verifier` (the node's log key) for `origin` (default
    the verifier's name), no smaller than the one before, no larger than the log, and its
    root must be the log's root at its size. Returns (entries, checkpoints) or raises
    AuditCorrupt (the chain) or CheckpointInvalid (naming the checkpoint and its size).
    """
    store = merkle.MemoryHashStore()
    count = _scan(path, store, torn_ok=False)[1]
    tree = merkle.TreeHasher(store)
    cp_path = checkpoints_path(path)
    expected = verifier.name if origin is None else origin
    found = read_checkpoints(cp_path)
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
                cp_path, index, stated, f"does not verify with the node's key: {exc}"
            ) from None
        size = checkpoint.size
        if size < previous:
            raise CheckpointInvalid(
                cp_path, index, size, f"smaller than the checkpoint before it ({previous})"
            )
        if size > count:
            raise CheckpointInvalid(
                cp_path, index, size, f"the log holds only {count} entries: entries were removed"
            )
        if tree.root(size) != checkpoint.root:
            raise CheckpointInvalid(
                cp_path,
                index,
                size,
                f"its root is not the root of the log's first {size} entries: the log was altered",
            )
        previous = size
    return count, len(found)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # The Merkle tree of the durable entries (only they become leaves).
        self._tree = merkle.MemoryHashStore()
        self._hasher = merkle.TreeHasher(self._tree)
        self._head, self._size, self._offset = self._recover()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        # What has been appended but not yet made durable.
        self._next_seq, self._next_head = self._size, self._head
        self.last_checkpoint_size = self._last_signed_size()

    def _last_signed_size(self) -> int:
        """The size of the newest checkpoint on disk (0 if none or unreadable: the next
        checkpoint then checks the file again, under its lock)."""
        try:
            found = read_checkpoints(checkpoints_path(self.path))
            return _stated(found[-1]).size if found else 0
        except (CheckpointInvalid, ValueError):
            return 0

    @property
    def next_seq(self) -> int:
        """The id the next `append` will get: the edge puts it in the answer it audits."""
        return self._next_seq

    @property
    def size(self) -> int:
        """Entries durable on disk."""
        return self._size

    @property
    def tree_size(self) -> int:
        """Leaves of the Merkle tree: the durable entries."""
        return self._tree.size

    def root(self, size: int | None = None) -> bytes:
        """The tree's root over its first `size` leaves (default: all durable entries)."""
        return self._hasher.root(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 proof that entry `index` is in the tree of `size` (default: current)."""
        return self._hasher.inclusion_proof(index, self._tree.size if size is None else size)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """RFC 9162 proof that the tree of `new` (default: current) extends the one of `old`."""
        return self._hasher.consistency_proof(old, self._tree.size if new is None else new)

    def checkpoint(self, key: ed25519.Ed25519PrivateKey, origin: str) -> str:
        """Sign the durable tree's head as a checkpoint note and append it to the
        checkpoints file (see `issue_checkpoint`); returns the note."""
        note = issue_checkpoint(self.path, self._hasher, key, origin)
        self.last_checkpoint_size = self._hasher.size
        return note

    def _recover(self) -> tuple[str, int, int]:
        """Verify the existing chain; cut off a torn last line (it was never acknowledged)."""
        if not self.path.exists():
            return GENESIS, 0, 0
        # A torn last line was written but never fsynced and acknowledged: discard below.
        head, count, offset = _scan(self.path, self._tree, torn_ok=True)
        if offset != self.path.stat().st_size:
            os.truncate(self.path, offset)
        return head, count, offset

    async def append(self, record: AuditRecord) -> str:
        """Record one exchange; returns its entry id once the entry is durable."""
        body: dict[str, Any] = {name: getattr(record, name) for name in _FIELDS}
        body["reasons"] = list(record.reasons)
        body["seq"], body["prev"] = self._next_seq, self._next_head
        canonical = _canonical(body)
        digest = _digest(self._next_head, canonical)
        # The line is the canonical body with its hash appended as the last member.
        line = canonical[:-1] + b',"hash":"' + digest.encode() + b'"}\n'
        self._next_seq += 1
        self._next_head = digest
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((line, digest, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            # One turn of the event loop first: requests that are already runnable append
            # their entries now and share this write, at no cost to a lone request.
            await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            data = b"".join(line for line, _, _ in batch)
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as exc:
                self._fail(batch + self._pending, exc)
                self._pending = []
                continue
            for line, _, _ in batch:
                self._tree.append(entry_leaf(line))
            for index, (_, _, future) in enumerate(batch):
                if not future.done():
                    future.set_result(f"{self._size + index}")
            self._size += len(batch)
            self._offset += len(data)
            self._head = batch[-1][1]

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fdatasync(self._fd)  # the data and the new size; mtime need not be durable

    def _fail(self, entries: list[_Pending], exc: OSError) -> None:
        with contextlib.suppress(OSError):  # if not now, the torn tail is cut at next start
            os.truncate(self.path, self._offset)
        self._next_seq, self._next_head = self._size, self._head
        error = AuditError(
            f"audit log {self.path} could not be written ({exc.strerror or exc}); "
            "the request was refused and nothing was disclosed: free space or fix the volume"
        )
        for _, _, future in entries:
            if not future.done():
                future.set_exception(error)

    def recent(self, since: float) -> Iterator[dict[str, Any]]:
        """Durable entries whose time is at or after `since` (Unix time), newest first.

        Reads the file backwards, so a restart costs the freshness window, not the log.
        """
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
                    if not raw:
                        continue
                    entry = json.loads(raw)
                    when = entry_timestamp(str(entry.get("time", "")))
                    if when is None or when < since:
                        return
                    yield entry

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        os.close(self._fd)
