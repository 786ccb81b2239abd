"""Checking an audit log from entry 0 (in worker processes for large logs), and its
signed checkpoints: what `liaison audit verify` and opening a log do. Signing one:
`node.audit.checkpoints`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from federation import checkpoints, merkle
from node.audit.entries import (
    GENESIS,
    NOT_CHAINED,
    AuditCorrupt,
    CheckpointInvalid,
    check_content,
    check_line_leaf,
    leaf_of_canonical,
    parse_line,
)
from node.audit.file_store import FileStorage
from node.audit.storage import AuditStorage

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


def check_chain(
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
        head, _, leaf = check_line_leaf(raw, count, head, where)
        if store is not None:
            store.append(leaf)
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
    it matches, the hash checked here is the hash `check_line` checks."""
    prevs: list[Any] = []
    hashes: list[str] = []
    out = bytearray()
    for index, raw in enumerate(lines, first):
        if not raw.endswith(b"\n"):
            return prevs, hashes, bytes(out), (index, "torn final line", True)
        try:
            stated, doc = parse_line(raw, index, "")
            prev = doc.get("prev")
            prevs.append(prev)
            if not isinstance(prev, str):  # never the previous entry's hash
                return prevs, hashes, bytes(out), (index, NOT_CHAINED, False)
            encoded = check_content(doc, prev, stated, index, "")
        except AuditCorrupt as exc:
            return prevs, hashes, bytes(out), (index, exc.why, False)
        hashes.append(str(stated))
        if leaves:
            out += leaf_of_canonical(doc, encoded)
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
    """`check_chain` with the per-entry work (parse, hashes, leaf) done by `workers`
    processes, chunk by chunk; this process reads the lines, checks that each entry's
    `prev` is the hash the entry before it states, and builds the tree, in order. The first
    failure in log order is raised, with the reason `check_line` gives: a chunk's own
    failure at entry i stands only if entries up to i chain (and, for a failure after its
    `prev` was read, entry i's `prev` too, since `check_line` checks it first)."""
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
                raise AuditCorrupt(where, count, NOT_CHAINED)
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
            raise AuditCorrupt(where, index, NOT_CHAINED)
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
    `check_chain`)."""
    from node.audit.verify_file import check_file  # it builds on this module

    return check_file(path, path, None, torn_ok=False, workers=workers)[1]


def load_tree(path: Path) -> merkle.MemoryHashStore:
    """The Merkle tree of a log's complete entries, the chain checked (AuditCorrupt if not).

    Reads only: a torn last line (an entry being written, or never acknowledged) is left
    out and left alone, so it is safe on the log of a running node.
    """
    return load_storage_tree(FileStorage(path))


def load_storage_tree(storage: AuditStorage) -> merkle.MemoryHashStore:
    """As `load_tree`, for a log in any backend."""
    store = merkle.MemoryHashStore()
    check_chain(storage.scan(), storage.where, store, torn_ok=True)
    return store


def storage_checkpoints(storage: AuditStorage) -> list[str]:
    """The notes a backend holds, oldest first; CheckpointInvalid if a record is torn."""
    found, torn = storage.checkpoints()
    if torn:
        raise CheckpointInvalid(
            storage.checkpoints_where, len(found), None, "torn or malformed final record"
        )
    return found


def stated_checkpoint(note: str) -> checkpoints.Checkpoint:
    """The checkpoint a note states, its signatures unchecked."""
    return checkpoints.Checkpoint.from_note_body(note[: note.index("\n\n") + 1])


def verify_log_and_checkpoints(
    path: Path,
    verifier: checkpoints.Verifier,
    origin: str | None = None,
    *,
    workers: int | None = None,
) -> tuple[int, int]:
    """Check the chain of a log file, then every checkpoint against the tree recomputed
    from entry 0 (see `verify_storage`). Returns (entries, checkpoints)."""
    return verify_storage(FileStorage(path), verifier, origin, workers=workers)


def verify_storage(
    storage: AuditStorage,
    verifier: checkpoints.Verifier,
    origin: str | None = None,
    *,
    workers: int | None = None,
) -> tuple[int, int]:
    """Check the chain, then every checkpoint against the tree recomputed from entry 0.

    Each checkpoint must be signed by `verifier` (the node's log key) for `origin` (default
    the verifier's name), no smaller than the one before, no larger than the log, and its
    root must be the log's root at its size. Returns (entries, checkpoints) or raises
    AuditCorrupt (the chain) or CheckpointInvalid (naming the checkpoint and its size).
    A large log is checked by `workers` processes (default: one per core; `check_chain`).
    """
    from node.audit.verify_file import check_file  # it builds on this module

    store = merkle.MemoryHashStore()
    if isinstance(storage, FileStorage):
        count = check_file(storage.path, storage.where, store, torn_ok=False, workers=workers)[1]
    else:
        lines = storage.scan()
        count = check_chain(lines, storage.where, store, torn_ok=False, workers=workers)[1]
    return count, check_checkpoints(storage, store, count, verifier, origin)


def check_checkpoints(
    storage: AuditStorage,
    store: merkle.MemoryHashStore,
    count: int,
    verifier: checkpoints.Verifier,
    origin: str | None = None,
) -> int:
    """Check every checkpoint `storage` holds against the tree of its first `count`
    entries (`store`, their chain checked already), as `verify_storage` describes; returns
    how many there are, or raises CheckpointInvalid."""
    tree = merkle.TreeHasher(store)
    return check_notes(storage, count, tree.root, verifier, origin)


def check_notes(
    storage: AuditStorage,
    count: int,
    root_at: Callable[[int], bytes | None],
    verifier: checkpoints.Verifier,
    origin: str | None = None,
) -> int:
    """`check_checkpoints` with the log's root at a size from `root_at` (None: that root is
    not checked, only the note's signature, origin and order)."""
    cp_where = storage.checkpoints_where
    expected = verifier.name if origin is None else origin
    found = storage_checkpoints(storage)
    previous = 0
    for index, note in enumerate(found):
        try:
            stated: int | None = stated_checkpoint(note).size
        except ValueError:
            stated = None
        try:
            checkpoint = checkpoints.verify_checkpoint(note, expected, verifier)
        except checkpoints.NoteError as exc:
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
        root = root_at(size)
        if root is not None and root != checkpoint.root:
            raise CheckpointInvalid(
                cp_where,
                index,
                size,
                f"its root is not the root of the log's first {size} entries: the log was altered",
            )
        previous = size
    return len(found)
