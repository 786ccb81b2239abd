"""Checking a log *file* from entry 0 in worker processes that read it themselves.

`node.audit.verify.check_chain` checks any sequence of lines, so the lines it hands its
workers are read, pickled and sent by the calling process: at 1,000,000 entries (about
1 GB) that process's share was about 3 s of CPU on top of the workers'. Here the caller
only cuts the file into byte ranges at line ends (a few reads); each worker reads its
range, checks its entries and the links between them, and sends back only what the
caller needs to join the ranges: the first entry's `seq` and `prev`, the last entry's
hash, the leaves (32 bytes an entry) and, if asked, the line lengths (8 bytes an entry).

The result is `check_chain`'s, for a good log and a bad one: the same count, head and
leaves, and the first bad entry with the same reason. The order of the checks of one
entry is the one `check_line` follows (JSON and hash, `seq`, `prev`, content), and a
range's first entry, whose `seq` and `prev` only the caller can judge, is judged by it in
that order (`_join`).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import threading
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from federation import merkle
from node.audit import verify
from node.audit.entries import (
    GENESIS,
    NOT_CHAINED,
    AuditCorrupt,
    check_content,
    leaf_of_canonical,
    parse_line,
)

# Bytes per range: about 4,000 entries, a few milliseconds of reading and ~80 ms of checks.
RANGE_BYTES = 4 << 20
# A log file at least this large is checked in worker processes (about 65,000 entries).
PARALLEL_MIN_BYTES = 64 << 20


class Stopped(Exception):
    """The check was asked to stop (`check_file`'s `stop`)."""


# One range's result: the first entry's stated `seq` (None if it did not parse), its
# stated `prev` (None if not read), the last good entry's hash, the good entries' count,
# their leaves and line lengths (array "Q" bytes, if asked), and the failure: (index in
# the range, reason, torn) or None. A reason of None is a `seq` the caller words.
_RangeResult = tuple[Any, Any, str, int, bytes, bytes, tuple[int, str | None, bool] | None]


def _first_seq(raw: bytes) -> tuple[Any, str | None]:
    """The `seq` a range's first line states, or the reason it is not an entry (the one
    `parse_line` gives; None: it is one, with a `seq` that is not a number)."""
    try:
        parse_line(raw, -1, "")
    except AuditCorrupt as exc:
        if not exc.why.startswith("sequence"):
            return None, exc.why
        stated = json.loads(raw).get("seq")
        return (stated, "") if isinstance(stated, int) else (stated, None)
    return -1, ""  # seq -1: never a valid index, the caller says so


def _check_range(path: str, start: int, end: int, leaves: bool, lengths: bool) -> _RangeResult:
    """Check the entries in bytes [start, end) of `path` (whole lines), in a worker."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    pieces = data.split(b"\n")
    tail = pieces.pop()  # b"" when the range ends with a newline, else a torn last line
    out, sizes = bytearray(), array("Q")
    first_seq: Any = None
    first_prev: Any = None
    head = ""
    good = 0

    def result(failure: tuple[int, str | None, bool] | None) -> _RangeResult:
        return first_seq, first_prev, head, good, bytes(out), sizes.tobytes(), failure

    for k, piece in enumerate(pieces):
        raw = piece + b"\n"
        if k == 0:
            first_seq, why = _first_seq(raw)
            if why is None or first_seq is None:
                return result((0, why, False))
        try:
            stated, doc = parse_line(raw, first_seq + k, "")
            prev = doc.get("prev")
            if k == 0:
                first_prev = prev
                if not isinstance(prev, str):
                    return result((0, NOT_CHAINED, False))
            elif prev != head:
                return result((k, NOT_CHAINED, False))
            encoded = check_content(doc, prev, stated, k, "")
        except AuditCorrupt as exc:
            return result((k, exc.why, False))
        head = str(stated)
        if leaves:
            out += leaf_of_canonical(doc, encoded)
        if lengths:
            sizes.append(len(raw))
        good += 1
    if tail:
        return result((len(pieces), "torn final line", True))
    return result(None)


def _ranges(path: Path, end: int) -> list[tuple[int, int]]:
    """Bytes [0, end) of `path` cut at line ends into ranges of about RANGE_BYTES."""
    cuts = [0]
    with path.open("rb") as fh:
        while cuts[-1] + RANGE_BYTES < end:
            fh.seek(cuts[-1] + RANGE_BYTES)
            at = -1
            while at < 0:
                block = fh.read(1 << 16)
                if not block:
                    break
                at = block.find(b"\n")
                if at < 0:
                    continue
                cut = fh.tell() - len(block) + at + 1
            if at < 0 or cut >= end:
                break
            cuts.append(cut)
    cuts.append(end)
    return list(itertools.pairwise(cuts))


def check_file(
    path: Path,
    where: Path | str,
    store: merkle.MemoryHashStore | None,
    *,
    torn_ok: bool,
    workers: int | None = None,
    end: int | None = None,
    lengths: array[int] | None = None,
    stop: threading.Event | None = None,
) -> tuple[str, int]:
    """`check_chain(file_lines(path), ...)` (head, count), for bytes [0, end) of the file
    (default: all of it), in worker processes if it is large and several are allowed.
    `lengths`, if given, gets each good entry's line length. `stop`, once set, ends the
    check between ranges with Stopped."""
    if end is None:
        end = path.stat().st_size if path.exists() else 0
    size = end
    workers = verify.available_cores() if workers is None else workers
    if workers <= 1 or size < PARALLEL_MIN_BYTES:
        lines = _lines_until(path, size)
        if lengths is None:
            return verify.check_chain(lines, where, store, torn_ok=torn_ok, workers=1)
        return verify.check_chain(
            _measured(lines, lengths), where, store, torn_ok=torn_ok, workers=1
        )
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(verify.POOL_START))
    pending: deque[Future[_RangeResult]] = deque()
    state = _Joined(where, store, torn_ok, lengths)
    try:
        for first, last in _ranges(path, size):
            future = pool.submit(
                _check_range, str(path), first, last, store is not None, lengths is not None
            )
            pending.append(future)
            if len(pending) > 2 * workers and not state.join(pending.popleft().result()):
                return state.head, state.count
            if stop is not None and stop.is_set():
                raise Stopped
        while pending:
            if not state.join(pending.popleft().result()):
                return state.head, state.count
        return state.head, state.count
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _lines_until(path: Path, end: int) -> Iterator[bytes]:
    """The lines in bytes [0, end) of `path` (a torn last one without its newline)."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        left = end
        for raw in fh:
            if len(raw) >= left:
                yield raw[:left]
                return
            left -= len(raw)
            yield raw


def _measured(lines: Iterator[bytes], lengths: array[int]) -> Iterator[bytes]:
    for raw in lines:
        if raw.endswith(b"\n"):
            lengths.append(len(raw))
        yield raw


class _Joined:
    """The ranges' results taken in, in order: the chain across them, and the tree."""

    def __init__(
        self,
        where: Path | str,
        store: merkle.MemoryHashStore | None,
        torn_ok: bool,
        lengths: array[int] | None,
    ) -> None:
        self.where, self.store, self.torn_ok, self.lengths = where, store, torn_ok, lengths
        self.head, self.count = GENESIS, 0

    def join(self, result: _RangeResult) -> bool:
        """Take in one range; False if the log ends in it (a torn line, allowed)."""
        first_seq, first_prev, last, good, leaves, sizes, failure = result
        index = self.count
        # The range's first entry, in check_line's order: JSON and hash, seq, prev (the
        # worker checked the rest, and the entries after it against it).
        at_first = failure is not None and failure[0] == 0
        torn_first = at_first and failure is not None and failure[2]
        if not torn_first:
            if at_first and failure is not None and failure[1] is not None and first_seq is None:
                raise AuditCorrupt(self.where, index, failure[1])  # not an entry
            if first_seq != index or (at_first and failure is not None and failure[1] is None):
                raise AuditCorrupt(
                    self.where, index, f"sequence {first_seq!r} where {index} was due"
                )
            if first_prev != self.head:
                raise AuditCorrupt(self.where, index, NOT_CHAINED)
        if good:
            self.head = last
            if self.store is not None:
                for k in range(good):
                    self.store.append(leaves[k * merkle.HASH_SIZE : (k + 1) * merkle.HASH_SIZE])
            if self.lengths is not None:
                self.lengths.frombytes(sizes)
            self.count += good
        if failure is None:
            return True
        at, why, torn = failure
        if torn and self.torn_ok:
            return False
        raise AuditCorrupt(self.where, index + at, why or NOT_CHAINED)
