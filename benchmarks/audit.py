"""The audit log on a real disk: group commit, proofs and verification at 1,000,000 entries.

What ``node.audit.log`` promises, measured in one process on real files in a temporary
folder whose filesystem the report names (the system's temporary folder, or the
repository's folder if that one is memory-backed: fdatasync on tmpfs costs nothing):

* **appends**: ``AuditLog.append`` awaited in a loop by 1 and by 64 asyncio tasks for
  ``--seconds`` each, every entry durable when its await returns. Group commit writes the
  entries that are waiting as one batch, one write and one fdatasync; the benchmark counts
  the batches (a subclass of ``AuditLog`` counts and times its ``_commit`` calls) to give
  the mean batch size and the mean time of one write + fdatasync. **Baseline**, in the
  same run: lines that ``AuditLog`` wrote (a warm-up log of the same records) written one
  at a time with ``os.write`` + ``os.fdatasync`` each, what a log without group commit
  does. The rows take turns over ``--rounds``: the disk is shared, so its speed
  drifts, and the time of one fdatasync is printed beside each row.
* **database appends**: the same two rows with the log in a database
  (``node.audit.database_store.DatabaseStorage``, as ``[audit] store = "database"``): SQLite, a
  file in the same folder (WAL, ``synchronous=FULL``, as the backend sets them), and
  PostgreSQL at ``--postgres-url`` (default: the environment's
  ``LIAISON_TEST_POSTGRES_URL``; without one these rows are skipped with a note), in a
  database the run creates and drops. A batch is one transaction; the mean batch and the
  mean transaction time are counted as for the file, and each row's ratio is to the same
  run's baseline.
* **build**: a ``--size`` log written through ``AuditLog.append`` itself by 1024 concurrent
  writers, so every line is a real, chain-valid entry exactly as the node writes it.
* **open**: ``AuditLog(path)`` on that log: the chain checked from entry 0 and the Merkle
  tree rebuilt (what a node restart costs).
* **proofs**: ``inclusion_proof`` at random indexes and ``consistency_proof`` from random
  older sizes, from the opened ``AuditLog``, each timed alone (p50 and p99), beside plain
  SHA-256 of 64 bytes (a node hash) measured in the same run; every proof timed is then
  checked against the log's root (outside the timer).
* **verify**: ``verify_log_and_checkpoints`` on the log with a checkpoint signed at its
  full size, then ``liaison audit verify --log ... --public-key ... --origin ...`` end to
  end as a subprocess; each first in this process only (``workers=1``, ``--workers 1``:
  the sequential check) and then with the default, one worker process per available core
  (a log of ``PARALLEL_MIN_ENTRIES`` or more is hashed in chunks by worker processes;
  the open uses the default too). **Baseline**: SHA-256 and ``json.loads`` of every line, the floor
  of any verifier written in Python. The target is the CLI at 1,000,000 entries in 30 s
  or less (at another ``--size``, the CLI's time with the scan's share scaled linearly).

Open, verify and the floor are printed as wall and CPU seconds: the log is read back from
the page cache (the machine's memory holds it), so they are CPU-bound, and on a shared
machine the CPU figure is the one other work distorts least (the load average is printed).
About 900 bytes per entry: the default run writes about 1 GB, takes two to three minutes on
2 cores and removes its folder at the end.
``--quick`` (20,000 entries, 0.5 s per append row, one round) takes a few seconds.

    python benchmarks/audit.py [--size 1000000] [--seconds 3] [--rounds 3]
                               [--postgres-url URL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import make_url

from audit_appends import (
    CountingLog,
    file_backend,
    measure_appends,
    postgres_backend,
    record,
    report_appends,
    run_loop,
    scratch_database,
    sqlite_backend,
)
from audit_folder import choose_folder
from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from federation.pki import public_key_text
from measuring import each_us, percentiles, raise_exit
from node.audit.entries import entry_leaf
from node.audit.log import AuditLog
from node.audit.verify import (
    PARALLEL_MIN_ENTRIES,
    available_cores,
    verify_log_and_checkpoints,
)

ROOT: Final = Path(__file__).resolve().parents[1]
DEFAULT_SIZE: Final = 1_000_000
DEFAULT_SECONDS: Final = 3.0
DEFAULT_ROUNDS: Final = 3
DEFAULT_SAMPLES: Final = 1000
BUILD_WRITERS: Final = 1024
TARGET_VERIFY_S: Final = 30.0
TARGET_SIZE: Final = 1_000_000
BYTES_PER_ENTRY_BOUND: Final = 1100  # the records below make lines of about 900 bytes
ORIGIN: Final = audit_origin("liaison.example", "FR-DGPN")
POSTGRES_ENV: Final = "LIAISON_TEST_POSTGRES_URL"
T = TypeVar("T")


# --- a large log: build, open, proofs --------------------------------------------------------


def build_log(path: Path, size: int) -> tuple[float, int]:
    """`size` entries appended through AuditLog by BUILD_WRITERS tasks: seconds, fdatasyncs."""
    log = CountingLog(path)
    taken = 0

    async def writer() -> None:
        nonlocal taken
        while taken < size:
            i = taken
            taken += 1
            await log.append(record(i))

    async def main() -> None:
        try:
            await asyncio.gather(*(writer() for _ in range(min(BUILD_WRITERS, size))))
        finally:
            await log.close()

    start = time.perf_counter()
    run_loop(main)
    elapsed = time.perf_counter() - start
    assert log.size == size
    return elapsed, log.writes


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall and CPU seconds of one task (CPU: this process's, or the child's)."""

    wall: float
    cpu: float

    def per_entry(self, size: int) -> str:
        return f"{self.wall / size * 1e6:.2f} µs per entry; CPU {self.cpu:.2f} s"

    def ratio(self, base: Timing) -> str:
        return f"ratio to baseline {self.wall / base.wall:.2f}, CPU {self.cpu / base.cpu:.2f}"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Callable[[], T]) -> tuple[T, Timing]:
    """`fn()` timed: wall, and CPU of this process and of the worker processes it ended."""
    cpu = time.process_time() + _children_cpu()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    return result, Timing(elapsed, time.process_time() + _children_cpu() - cpu)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def check_proofs(
    log: AuditLog,
    indexes: Sequence[int],
    inclusion: Sequence[list[bytes]],
    olds: Sequence[int],
    consistency: Sequence[list[bytes]],
) -> None:
    """The proofs that were timed verify (the entries read back from the file)."""
    size, root = log.size, log.root()
    wanted = dict(zip(indexes, inclusion, strict=True))
    assert log.path is not None, "the benchmark's log is a file"
    with log.path.open("rb") as fh:
        for index, line in enumerate(fh):
            proof = wanted.get(index)
            if proof is not None:
                merkle.verify_inclusion(entry_leaf(line), index, size, proof, root)
    for old, proof in zip(olds, consistency, strict=True):
        merkle.verify_consistency(old, size, log.root(old), root, proof)


def plain_hash_us(count: int = 200_000) -> float:
    """µs per SHA-256 of a 64-byte message: a node hash is SHA-256 over 65 bytes."""
    messages = [i.to_bytes(8, "big") * 8 for i in range(count)]
    sha = hashlib.sha256
    start = time.perf_counter()
    for m in messages:
        sha(m).digest()
    return (time.perf_counter() - start) / count * 1e6


def floor_scan(path: Path) -> int:
    """SHA-256 and json.loads of every line: the least any verifier in Python must do."""
    sha, loads = hashlib.sha256, json.loads
    count = 0
    with path.open("rb") as fh:
        for raw in fh:
            sha(raw).digest()
            loads(raw)
            count += 1
    return count


# --- the run ---------------------------------------------------------------------------------


def run(
    size: int,
    seconds: float,
    rounds: int,
    samples: int,
    asked: Path | None,
    postgres_url: str = "",
    seed: int = 5,
) -> None:
    folder_parent, fs = choose_folder(asked)
    print(
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} cores; {size:,} entries"
    )
    print(f"files in {folder_parent}, on {fs}; {_load()}")
    print(
        f"verify: a log of {PARALLEL_MIN_ENTRIES:,} entries or more is checked by "
        f"{available_cores()} worker process(es) by default (one per available core)"
    )
    if fs.in_memory:
        print("  WARNING: a memory-backed filesystem: fdatasync is free, the figures are no disk's")
    need = size * BYTES_PER_ENTRY_BOUND + (64 << 20)
    free = shutil.disk_usage(folder_parent).free
    if free < need:
        raise SystemExit(f"{folder_parent} has {free >> 20} MiB free; this run needs {need >> 20}")
    folder = Path(tempfile.mkdtemp(prefix="liaison-audit-bench-", dir=folder_parent))
    try:
        with contextlib.ExitStack() as stack:
            backends = [file_backend(), sqlite_backend()]
            if postgres_url:
                scratch = stack.enter_context(scratch_database(postgres_url))
                where = make_url(scratch).render_as_string(hide_password=True)
                print(f"PostgreSQL: a scratch database, {where}")
                backends.append(postgres_backend(scratch))
            else:
                print(f"PostgreSQL: skipped (no --postgres-url and {POSTGRES_ENV} is unset)")
            rows = measure_appends(folder, seconds, rounds, backends)
        report_appends(rows, seconds, rounds)
        _run_in(folder, size, samples, seed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_in(folder: Path, size: int, samples: int, seed: int) -> None:
    rng = random.Random(seed)

    path = folder / "audit.log"
    build_s, syncs = build_log(path, size)
    mib = path.stat().st_size / (1 << 20)
    print(
        f"build: {size:,} entries through AuditLog.append by {BUILD_WRITERS} writers in "
        f"{build_s:.1f} s ({size / build_s:,.0f} appends/s, mean batch "
        f"{size / syncs:,.0f} entries per fdatasync), {mib:,.0f} MiB "
        f"({path.stat().st_size / size:.0f} bytes per entry)",
        flush=True,
    )

    floor_count, floor = _timed(lambda: floor_scan(path))
    assert floor_count == size
    print(
        f"baseline: SHA-256 + json.loads of every line: {floor.wall:.2f} s "
        f"({floor.per_entry(size)})",
        flush=True,
    )

    log, opened = _timed(lambda: AuditLog(path))
    assert log.size == size
    print(
        f"open (recover: chain checked, Merkle tree rebuilt): {opened.wall:.2f} s "
        f"({opened.per_entry(size)}; {opened.ratio(floor)})",
        flush=True,
    )

    hash_us = plain_hash_us()
    indexes = [rng.randrange(size) for _ in range(samples)]
    olds = [rng.randrange(1, size) for _ in range(samples)]
    inclusion, inc = each_us(log.inclusion_proof, [(i,) for i in indexes])
    consistency, con = each_us(log.consistency_proof, [(m,) for m in olds])
    check_proofs(log, indexes, inclusion, olds, consistency)
    for label, times, what in (
        ("inclusion", inc, "random entries"),
        ("consistency", con, "random old sizes"),
    ):
        p50, p99 = percentiles(times, 0.5, 0.99)
        print(
            f"{label} proof at {size:,} from the AuditLog ({samples} {what}): p50 {p50:.1f} µs, "
            f"p99 {p99:.1f} µs (p50 = {p50 / hash_us:,.0f} plain SHA-256 of 64 bytes, "
            f"{hash_us:.3f} µs each in this run)"
        )

    key = ed25519.Ed25519PrivateKey.generate()
    start = time.perf_counter()
    log.checkpoint(key, ORIGIN)
    checkpoint_s = time.perf_counter() - start
    run_loop(log.close)
    del log  # its tree: the verifier builds its own
    print(f"checkpoint signed at {size:,} (root, Ed25519, fsync): {checkpoint_s * 1e3:.1f} ms")

    verifier = checkpoints.Verifier.for_log(ORIGIN, key.public_key())
    verified = Timing(0, 0)
    for workers in (1, None):
        how = "workers=1" if workers == 1 else "default workers"
        counts, verified = _timed(
            functools.partial(verify_log_and_checkpoints, path, verifier, ORIGIN, workers=workers)
        )
        assert counts == (size, 1), counts
        print(
            f"verify_log_and_checkpoints ({how}): {verified.wall:.2f} s "
            f"({verified.per_entry(size)}; {verified.ratio(floor)})",
            flush=True,
        )

    cli = Timing(0, 0)
    for workers in (1, None):
        how = "--workers 1" if workers == 1 else "default workers"
        cli = run_cli(path, key.public_key(), workers)
        print(
            f"liaison audit verify (subprocess, end to end, {how}): {cli.wall:.2f} s "
            f"(CPU {cli.cpu:.2f} s; {cli.ratio(floor)})",
            flush=True,
        )
    print(_load())
    # At another size, the scan scales with the entries; the CLI's start-up does not.
    projected = cli.wall + verified.wall * (TARGET_SIZE / size - 1)
    projected_cpu = cli.cpu + verified.cpu * (TARGET_SIZE / size - 1)
    at = "" if size == TARGET_SIZE else f", projected from {size:,}: the scan scaled linearly"
    if size < PARALLEL_MIN_ENTRIES:
        at += ", checked in one process at this size"
    met = "met" if projected <= TARGET_VERIFY_S else "NOT met"
    print(
        f"target: liaison audit verify of {TARGET_SIZE:,} entries ≤ {TARGET_VERIFY_S:.0f} s: "
        f"{met} ({projected:.1f} s; CPU {projected_cpu:.1f} s{at})"
    )


def run_cli(path: Path, public: ed25519.Ed25519PublicKey, workers: int | None) -> Timing:
    """`liaison audit verify` on `path`, run as the operator would: wall and its CPU (its
    workers' included)."""
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
        "--full",  # every entry, as before anchors (the default starts from the anchor)
        *(["--workers", str(workers)] if workers is not None else []),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if result.returncode != 0 or "1 checkpoint(s)" not in result.stdout:
        raise RuntimeError(f"liaison audit verify failed: {result.stdout}{result.stderr}")
    return Timing(elapsed, cpu)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="entries (default 1e6)")
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="per append row and round (3)"
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="append rounds (3)")
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help="proofs of each kind (1000)"
    )
    parser.add_argument(
        "--dir", type=Path, help="where to write (default: the temporary folder, if on a disk)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_ENV, ""),
        help=f"a PostgreSQL server (SQLAlchemy URL) allowed to create databases; default "
        f"${POSTGRES_ENV}; none: the PostgreSQL rows are skipped",
    )
    parser.add_argument(
        "--quick", action="store_true", help="20,000 entries, 0.5 s per append row, 1 round"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.seconds, args.rounds, args.samples = 20_000, 0.5, 1, 50
    if args.size < 2 or args.seconds <= 0 or args.rounds < 1 or args.samples < 1:
        parser.error("--size must be at least 2, --seconds positive, --rounds and --samples ≥ 1")
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C
    run(args.size, args.seconds, args.rounds, args.samples, args.dir, args.postgres_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
