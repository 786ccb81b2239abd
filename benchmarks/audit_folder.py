"""Where the audit benchmark writes: a folder on a real disk, and the filesystem it names.

fdatasync on a memory-backed filesystem (tmpfs) costs nothing, so the system's temporary
folder is used only when it is on a disk; else the repository's folder. Imported by
``audit.py`` as a sibling module (``python benchmarks/audit.py``).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
MEMORY_FILESYSTEMS: Final = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})


# --- where the files go ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filesystem:
    mount_point: str
    kind: str
    source: str

    @property
    def in_memory(self) -> bool:
        return self.kind in MEMORY_FILESYSTEMS

    def __str__(self) -> str:
        return f"{self.kind} ({self.source} mounted at {self.mount_point})"


def _unescape(text: str) -> str:
    """A /proc/self/mountinfo field: spaces and the like are written as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def filesystem_of(folder: Path) -> Filesystem:
    """The mount holding `folder`, from /proc/self/mountinfo (the longest matching mount)."""
    where = os.path.realpath(folder)
    best = Filesystem("?", "unknown", "?")
    try:
        table = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    for row in table:
        left, _, right = row.partition(" - ")
        mount_point = _unescape(left.split()[4])
        kind, source = right.split()[:2]
        inside = mount_point == "/" or where == mount_point or where.startswith(mount_point + "/")
        if inside and (best.mount_point == "?" or len(mount_point) >= len(best.mount_point)):
            best = Filesystem(mount_point, kind, _unescape(source))
    return best


def choose_folder(asked: Path | None) -> tuple[Path, Filesystem]:
    """`asked`, else the temporary folder, else the repository's, if on a disk."""
    if asked is not None:
        return asked, filesystem_of(asked)
    candidates = [Path(tempfile.gettempdir()), ROOT]
    for folder in candidates:
        fs = filesystem_of(folder)
        if not fs.in_memory:
            return folder, fs
    return candidates[0], filesystem_of(candidates[0])
