"""The audit log: an append-only, hash-chained file, durable before any answer is sent.

Each line is canonical JSON of one entry plus `prev` (the previous entry's hash) and `hash`
(SHA-256 over `prev` and the entry), so removing, reordering or editing any line breaks the
chain from there on. Concurrent requests share one write and one fsync (group commit): the
cost of durability is paid per batch, not per request.

If a write fails (disk full, I/O error) every entry of that batch, and every entry chained
onto it, fails: the caller refuses its request, and the file is cut back to its last durable
entry, so nothing is disclosed unaudited and nothing half-written remains. This chain is the
walking skeleton's log; the Merkle transparency log replaces it behind the same `append`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


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


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(prev: str, canonical: bytes) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + canonical).hexdigest()


def _check_line(line: bytes, index: int, prev: str, path: Path) -> str:
    try:
        doc = json.loads(line)
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


def verify_log(path: Path) -> int:
    """Check the whole chain from entry 0; returns the entry count or raises AuditCorrupt."""
    head, count = GENESIS, 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                raise AuditCorrupt(path, count, "torn final line")
            head = _check_line(raw, count, head, path)
            count += 1
    return count


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._head, self._size, self._offset = self._recover()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        # What has been appended but not yet made durable.
        self._next_seq, self._next_head = self._size, self._head

    @property
    def next_seq(self) -> int:
        """The id the next `append` will get: the edge puts it in the answer it audits."""
        return self._next_seq

    @property
    def size(self) -> int:
        """Entries durable on disk."""
        return self._size

    def _recover(self) -> tuple[str, int, int]:
        """Verify the existing chain; cut off a torn last line (it was never acknowledged)."""
        head, count, offset = GENESIS, 0, 0
        if not self.path.exists():
            return head, count, offset
        with self.path.open("rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # written but never fsynced and acknowledged: discard below
                head = _check_line(raw, count, head, self.path)
                count += 1
                offset += len(raw)
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
