"""The file backend of the audit log (`node.audit.storage`): `audit.log`, a line per entry,
and `audit.log.checkpoints`, the signed notes, beside it."""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import itertools
import os
import threading
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

from node.audit.entries import CheckpointInvalid
from node.audit.storage import Locked, StorageError

CHECKPOINTS_SUFFIX = ".checkpoints"
ANCHOR_SUFFIX = ".anchor.json"


def checkpoints_path(path: Path) -> Path:
    """Where the signed checkpoints of the audit log at `path` are kept."""
    return path.with_name(path.name + CHECKPOINTS_SUFFIX)


def anchor_path(path: Path) -> Path:
    """Where the anchor of the newest checkpoint of the log at `path` is kept."""
    return path.with_name(path.name + ANCHOR_SUFFIX)


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

    def save_anchor(self, data: bytes) -> None:
        # Under the checkpoints file's lock (taken by add_checkpoint), so two signers'
        # anchors never cross; replaced whole (a reader sees the old one or the new one).
        self._checkpoints_fd()
        path = anchor_path(self._storage.path)
        temporary = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except OSError as exc:
            raise StorageError(f"{path}: {_io_error(exc)}", self._storage.write_hint) from exc

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
        # Where each durable entry's line starts (8 bytes an entry), from entry `_base` on
        # (0 unless the log was opened from an anchor and its history is not read yet),
        # and where they end.
        self._offsets: array[int] = array("Q")
        self._base = 0
        self._end = 0
        self._fd = -1
        # The checkpoints file read so far: bytes of complete records, and the last note.
        # Concurrent callers (overseers' and witnesses' GetCheckpoint, each in a thread)
        # take turns: two advancing the offset at once would skip or reread records.
        self._notes_end, self._last_note = 0, ""
        self._notes_lock = threading.Lock()

    def scan(self) -> Iterator[bytes]:
        self._offsets = array("Q")
        self._base = self._end = 0
        for raw in file_lines(self.path):
            self._offsets.append(self._end)
            self._end += len(raw)
            yield raw

    def scan_from(self, seq: int, position: int | None) -> Iterator[bytes]:
        self._offsets = array("Q")
        self._base, self._end = seq, position or 0
        if position is None or not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(position)
            for raw in fh:
                self._offsets.append(self._end)
                self._end += len(raw)
                yield raw

    def position(self, seq: int) -> int | None:
        index = seq - self._base
        return self._offsets[index] if 0 <= index < len(self._offsets) else None

    def history(self, count: int) -> Iterator[bytes]:
        if count != self._base:
            raise StorageError(
                f"{self.path}: entries [0, {count}) asked for, {self._base} unread",
                "reopen the log",
            )
        offsets, end = array("Q"), 0
        with self.path.open("rb") as fh:
            for raw in fh:
                if len(offsets) == count:
                    break
                offsets.append(end)
                end += len(raw)
                yield raw
        if len(offsets) == count and (not self._offsets or end == self._offsets[0]):
            # Known from entry 0 on, as if `scan` had read them (appends only extend).
            self._offsets[0:0] = offsets
            self._base = 0

    def scanned(self, lengths: array[int]) -> None:
        """Know the entries from their line lengths, as if `scan` had read them (a check
        in worker processes read them: `node.audit.verify_file`)."""
        offsets = array("Q", itertools.accumulate(lengths, initial=0))
        self._end = offsets.pop()
        self._offsets, self._base = offsets, 0

    def adopt_history(self, lengths: array[int]) -> None:
        """Know entries [0, base) from their line lengths, read by a check of the history
        after `scan_from(base, ...)` (as `history` would)."""
        offsets = array("Q", itertools.accumulate(lengths, initial=0))
        end = offsets.pop()
        if len(offsets) == self._base and (not self._offsets or end == self._offsets[0]):
            self._offsets[0:0] = offsets
            self._base = 0
        else:
            raise StorageError(f"{self.path}: its history changed while read", "reopen the log")

    def load_anchor(self) -> bytes | None:
        try:
            return anchor_path(self.path).read_bytes()
        except FileNotFoundError:
            return None

    def keep(self, count: int) -> None:
        index = count - self._base
        if 0 <= index < len(self._offsets):
            self._end = self._offsets[index]
            del self._offsets[index:]
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
        base = self._base
        if start < base:
            raise StorageError(f"{self.path}: entry {start} is not read yet", "reopen the log")
        stop = self._offsets[end - base] if end - base < len(self._offsets) else self._end
        begin = self._offsets[start - base]
        with self.path.open("rb") as fh:
            fh.seek(begin)
            data = fh.read(stop - begin)
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
                    known = bisect.bisect_right(self._offsets, position) - 1
                    return None if known < 0 else self._base + known
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
