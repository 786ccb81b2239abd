"""The match benchmark with ``--workers N``: the node's audit log moved to a SQLite database
(which several workers need), the processes of a node of several workers, and how the
kernel spread the client's connections over a server's processes (SO_REUSEPORT hashes each
new connection to one of them, so a few connections may land unevenly).

Imported by ``match.py`` as a sibling module (``python benchmarks/match.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from node.local.federation import NodeHandle


@dataclass(frozen=True)
class Setup:
    """How the servers run and how the client reaches them."""

    workers: int  # node workers, and echo processes
    channels: int  # client connections to each server
    audit: str  # the node's audit store: "file" or "database"

    def describe(self) -> str:
        processes = "one process each" if self.workers == 1 else f"{self.workers} processes each"
        log = "its file" if self.audit == "file" else "SQLite"
        return (
            f"{processes}, {self.channels} client channel{'s' if self.channels > 1 else ''} "
            f"per server, the node's audit log in {log}"
        )


def database_audit(owner: NodeHandle) -> None:
    """Move the owner's (still empty) audit log into a SQLite database of its own, made by
    `liaison db upgrade` as an operator makes it."""
    toml = owner.config_path
    text = toml.read_text()
    old = '[audit]\npath = "audit.log"\n'
    if old not in text:
        raise RuntimeError(f"{toml}: expected {old!r} in the enrolled config")
    url = f"sqlite:///{owner.folder / 'audit.db'}"
    toml.write_text(text.replace(old, f'[audit]\nstore = "database"\nurl = "{url}"\n'))
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "db", "upgrade", "--config", str(toml)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"liaison db upgrade failed: {done.stderr.strip()}")


def node_pids(owner: NodeHandle, workers: int, timeout: float = 120.0) -> list[int]:
    """The node's processes once every worker serves: the supervisor and its workers (the one
    process of a node of one worker)."""
    assert owner.process is not None
    supervisor = owner.process.pid
    if workers == 1:
        return [supervisor]
    log = owner.folder / "node.log"
    deadline = time.monotonic() + timeout
    while log.read_text().count(" serving on ") < workers:  # each worker says so once up
        if time.monotonic() > deadline or owner.process.poll() is not None:
            raise RuntimeError(
                f"not every worker started; the log ends:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [supervisor, *map(int, children)]


def connections(endpoint: str, pids: Sequence[int]) -> set[tuple[int, int]]:
    """The established connections to `endpoint`'s port held by `pids`: (pid, client port)."""
    port = int(endpoint.rpartition(":")[2])
    by_inode = {}
    for table in ("tcp", "tcp6"):  # gRPC's sockets are IPv6 ones, 127.0.0.1 mapped
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == "01":
                by_inode[fields[9]] = int(fields[2].rpartition(":")[2], 16)
    held = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in by_inode:
                held.add((pid, by_inode[target[8:-1]]))
    return held


def spread(endpoint: str, pids: Sequence[int]) -> str:
    """Established connections to `endpoint`'s port held by each of `pids`, e.g. "4, 4"."""
    held = connections(endpoint, pids)
    return ", ".join(str(sum(1 for p, _ in held if p == pid)) for pid in pids)
