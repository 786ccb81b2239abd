"""Opening and verifying a large audit log: from the anchor saved with its newest
checkpoint, and from entry 0.

What the start-up issue asks of ``node.audit``, measured in one run on real files in a
temporary folder (``benchmarks/audit_folder.py`` chooses it, as for ``audit.py``):

* **build**: ``--size`` minus ``--tail`` entries made by the writer's own encoding
  (``node.audit.entries.encode_entries``, which ``AuditLog._encode`` calls, over
  ``entry_body`` of the records ``benchmarks/audit.py`` appends) and written in one go: the
  lines ``AuditLog.append`` writes, byte for byte but for their random ids and salts,
  without a million fdatasyncs. ``AuditLog`` then opens it (**open from entry 0**, timed:
  what every open cost before anchors, and what an open without a usable anchor costs),
  signs a checkpoint (which saves its anchor), and ``--tail`` more entries are appended
  through ``AuditLog.append``, so the next open has entries after the anchor to check.
* **baseline**: reading the file and SHA-256 over it, in this process: the I/O floor of
  anything that reads the log (the log is read back from the page cache, so this is
  mostly memory bandwidth and one SHA-256 core).
* **open from the anchor**: ``AuditLog(path, verifier=...)`` as the node opens it: the
  anchor checked against the signed root, the entries after it checked. Then how long the
  history (every older entry, checked and loaded in the background, in worker processes)
  takes to be ready for proofs.
* **verify**: ``liaison audit verify --log ... --public-key ... --origin ...`` end to end
  as a subprocess: the default (from the anchor), ``--full`` with the default workers (one
  per available core) and ``--full --workers 1``.
* **SQLite**: the same, for the log in a database (``[audit] store = "database"``) of
  ``--db-size`` entries (inserted directly, as the lines ``AuditLog`` writes): open from
  entry 0, then from the anchor.

Targets: open of 1,000,000 entries ≤ 2 s; ``liaison audit verify --full`` of 1,000,000
entries ≤ 15 s on 2 cores (at another ``--size``, the checks' share scaled linearly).
About 1 GB at the default size; the folder is removed at the end, also on Ctrl-C or
SIGTERM. ``--quick`` (20,000 entries, 5,000 in SQLite) takes a few seconds.

    python benchmarks/audit_open.py [--size 1000000] [--tail 1000] [--db-size 200000]
                                    [--dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519

from audit_appends import record, run_loop
from audit_folder import choose_folder
from federation import checkpoints
from federation.checkpoints import audit_origin
from federation.pki import public_key_text
from measuring import raise_exit
from node.audit.database_store import DatabaseStorage
from node.audit.entries import GENESIS, encode_entries, entry_body
from node.audit.log import AuditLog
from node.audit.storage import AuditStorage
from node.audit.verify import available_cores
from node.audit.verify_file import PARALLEL_MIN_BYTES

ROOT: Final = Path(__file__).resolve().parents[1]
ORIGIN: Final = audit_origin("liaison.example", "FR-DGPN")
TARGET_SIZE: Final = 1_000_000
TARGET_OPEN_S: Final = 2.0
TARGET_VERIFY_S: Final = 15.0
BATCH: Final = 10_000
BYTES_PER_ENTRY_BOUND: Final = 1100
T = TypeVar("T")


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """`fn()`, its wall seconds and CPU seconds (this process's and its ended workers')."""
    cpu, start = _cpu(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start, _cpu() - cpu


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def generate(append: Callable[[int, list[bytes]], object], count: int) -> None:
    """`count` entries as the writer encodes them, handed to `append` in batches."""
    head = GENESIS
    for first in range(0, count, BATCH):
        bodies = [entry_body(record(i)) for i in range(first, min(count, first + BATCH))]
        lines, _, heads = encode_entries(bodies, first, head)
        head = heads[-1]
        append(first, lines)


def write_file(path: Path, count: int) -> None:
    with path.open("wb") as fh:
        generate(lambda _first, lines: fh.write(b"".join(lines)), count)
        fh.flush()
        os.fsync(fh.fileno())


def fill_database(storage: DatabaseStorage, count: int) -> None:
    def append(first: int, lines: list[bytes]) -> None:
        ids = [line[line.index(b'"id":"') + 6 :][:32].decode() for line in lines]
        with storage.locked() as held:
            held.append(first, lines, ids)

    generate(append, count)


def sign_and_grow(
    log: AuditLog, key: ed25519.Ed25519PrivateKey, tail: int, start: int
) -> tuple[float, float]:
    """Sign a checkpoint (its anchor saved), append `tail` entries, close: (sign s, tail s)."""
    began = time.perf_counter()
    log.checkpoint(key, ORIGIN)
    signed = time.perf_counter() - began

    async def grow() -> None:
        try:
            for first in range(start, start + tail, 256):
                await asyncio.gather(
                    *(log.append(record(i)) for i in range(first, min(start + tail, first + 256)))
                )
        finally:
            await log.close()

    began = time.perf_counter()
    run_loop(grow)
    return signed, time.perf_counter() - began


def floor(path: Path) -> int:
    """Read the file and SHA-256 it, 8 MiB at a time: the I/O floor."""
    sha = hashlib.sha256()
    done = 0
    with path.open("rb", buffering=0) as fh:
        while block := fh.read(8 << 20):
            sha.update(block)
            done += len(block)
    return done


def run_cli(path: Path, public: ed25519.Ed25519PublicKey, *extra: str) -> tuple[str, float, float]:
    """`liaison audit verify --log ...` as the operator runs it: output, wall, CPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "node.cli",
        "audit",
        "verify",
        "--log",
        str(path),
        "--public-key",
        public_key_text(public),
        "--origin",
        ORIGIN,
        *extra,
    ]
    result, wall, cpu = timed(
        lambda: subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    )
    if result.returncode != 0 or "checkpoint(s)" not in result.stdout:
        raise RuntimeError(f"liaison audit verify failed: {result.stdout}{result.stderr}")
    return result.stdout, wall, cpu


def _wait_history(log: AuditLog) -> None:
    log.inclusion_proof(0)  # waits for the history (and raises if it did not check)


def open_rows(
    label: str, opener: Callable[[], AuditLog], size: int, base: float, base_label: str
) -> tuple[float, float]:
    """Open from the anchor, then the history: printed; returns (open s, history s)."""
    log, wall, cpu = timed(opener)
    assert log.size == size and not log.history_loaded, (log.size, log.history_loaded)
    print(
        f"{label}: open from the anchor: {wall:.3f} s (CPU {cpu:.3f} s; ratio to "
        f"{base_label} {wall / base:.3f})",
        flush=True,
    )
    _, history, history_cpu = timed(lambda: _wait_history(log))
    print(
        f"{label}: history checked and loaded in the background, ready {history:.2f} s after "
        f"the open returned (CPU {history_cpu:.2f} s, its workers' included)",
        flush=True,
    )
    run_loop(log.close)
    return wall, history


def file_part(
    folder: Path, size: int, tail: int, key: ed25519.Ed25519PrivateKey
) -> tuple[float, float]:
    path = folder / "audit.log"
    verifier = checkpoints.Verifier.for_log(ORIGIN, key.public_key())
    _, built, _ = timed(lambda: write_file(path, size - tail))
    print(f"build: {size - tail:,} entries by the writer's encoding in {built:.1f} s", flush=True)
    log, full, full_cpu = timed(lambda: AuditLog(path, verifier=verifier))
    assert log.history_loaded and log.size == size - tail
    signed, grown = sign_and_grow(log, key, tail, size - tail)
    mib = path.stat().st_size / (1 << 20)
    print(
        f"file, {size:,} entries ({mib:,.0f} MiB, {path.stat().st_size / size:.0f} bytes per "
        f"entry); checkpoint at {size - tail:,} signed in {signed * 1e3:.1f} ms, then {tail:,} "
        f"entries appended through AuditLog.append in {grown:.2f} s",
        flush=True,
    )
    read, base, base_cpu = timed(lambda: floor(path))
    assert read == path.stat().st_size
    print(
        f"baseline: read + SHA-256 of the file (the I/O floor): {base:.2f} s (CPU {base_cpu:.2f} "
        f"s; {read / base / (1 << 20):,.0f} MiB/s)",
        flush=True,
    )
    print(
        f"file: open from entry 0 (no anchor: every entry checked, tree rebuilt; "
        f"{size - tail:,} entries): {full:.2f} s (CPU {full_cpu:.2f} s; ratio to baseline "
        f"{full / base:.2f})",
        flush=True,
    )
    opener = functools.partial(AuditLog, path, verifier=verifier)
    opened, _ = open_rows("file", opener, size, base, "baseline")

    public = key.public_key()
    out, anchored, cpu = run_cli(path, public)
    assert "not read again" in out, out
    wall = anchored
    print(
        f"liaison audit verify (default: from the anchor; subprocess, end to end): {wall:.2f} s "
        f"(CPU {cpu:.2f} s; ratio to baseline {wall / base:.2f})",
        flush=True,
    )
    full_wall = 0.0
    for extra, how in ((), "default workers"), (("--workers", "1"), "--workers 1"):
        out, wall, cpu = run_cli(path, public, "--full", *extra)
        assert "intact from entry 0" in out, out
        print(
            f"liaison audit verify --full ({how}; subprocess, end to end): {wall:.2f} s (CPU "
            f"{cpu:.2f} s, its workers' included; ratio to baseline {wall / base:.2f})",
            flush=True,
        )
        full_wall = full_wall or wall
    # At another size, the full check scales with the entries; the start-up (about the
    # default verify's time) does not.
    return opened, anchored + (full_wall - anchored) * TARGET_SIZE / size


def database_part(folder: Path, size: int, tail: int, key: ed25519.Ed25519PrivateKey) -> None:
    url = f"sqlite:///{folder / 'audit.db'}"
    verifier = checkpoints.Verifier.for_log(ORIGIN, key.public_key())

    def storage() -> AuditStorage:
        return DatabaseStorage(url)

    filling = DatabaseStorage(url)
    _, filled, _ = timed(lambda: fill_database(filling, size - tail))
    filling.close()
    log, full, full_cpu = timed(lambda: AuditLog(storage(), verifier=verifier))
    assert log.size == size - tail
    sign_and_grow(log, key, tail, size - tail)
    print(
        f"SQLite, {size:,} entries ({size - tail:,} inserted in {filled:.1f} s, {tail:,} "
        f"appended): open from entry 0: {full:.2f} s (CPU {full_cpu:.2f} s)",
        flush=True,
    )

    def opener() -> AuditLog:
        return AuditLog(storage(), verifier=verifier)

    open_rows("SQLite", opener, size, full, "the open from entry 0")


def run(size: int, tail: int, db_size: int, asked: Path | None) -> None:
    folder_parent, fs = choose_folder(asked)
    print(
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} cores ({available_cores()} available); "
        f"{size:,} entries, {tail:,} after the checkpoint"
    )
    print(f"files in {folder_parent}, on {fs}; {_load()}")
    need = (size + db_size) * BYTES_PER_ENTRY_BOUND * 2 + (64 << 20)
    free = shutil.disk_usage(folder_parent).free
    if free < need:
        raise SystemExit(f"{folder_parent} has {free >> 20} MiB free; this run needs {need >> 20}")
    folder = Path(tempfile.mkdtemp(prefix="liaison-audit-open-", dir=folder_parent))
    key = ed25519.Ed25519PrivateKey.generate()
    try:
        opened, verified = file_part(folder, size, tail, key)
        (folder / "audit.log").unlink()
        database_part(folder, db_size, min(tail, db_size // 2), key)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(_load())
    # The open reads the anchor and the entries after it: it does not grow with the log.
    met = "met" if opened <= TARGET_OPEN_S else "NOT met"
    print(
        f"target: open of {TARGET_SIZE:,} entries ≤ {TARGET_OPEN_S:.0f} s: {met} "
        f"({opened:.3f} s at {size:,}, {tail:,} after the checkpoint)"
    )
    projected = verified
    at = "" if size == TARGET_SIZE else f", projected from {size:,}: the check scaled linearly"
    if size * 1000 < PARALLEL_MIN_BYTES:
        at += ", checked in one process at this size"
    met = "met" if projected <= TARGET_VERIFY_S else "NOT met"
    print(
        f"target: liaison audit verify --full of {TARGET_SIZE:,} entries ≤ "
        f"{TARGET_VERIFY_S:.0f} s: {met} ({projected:.1f} s{at})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=TARGET_SIZE, help="entries (default 1e6)")
    parser.add_argument("--tail", type=int, default=1000, help="entries after the checkpoint")
    parser.add_argument("--db-size", type=int, default=200_000, help="entries in SQLite")
    parser.add_argument(
        "--dir", type=Path, help="where to write (default: the temporary folder, if on a disk)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20,000 entries (5,000 in SQLite), tail 100"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.tail, args.db_size = 20_000, 100, 5_000
    if not 1 <= args.tail < args.size or args.db_size < 4:
        parser.error("--tail must be in [1, --size), --db-size at least 4")
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C
    run(args.size, args.tail, args.db_size, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
