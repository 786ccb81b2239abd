"""The audit benchmark's entries and its append rows: group commit against one fdatasync
(or one transaction) per entry, on the file and the database backends.

What each row measures is in ``audit.py``'s docstring; this module holds the workload
(the records, a log that counts its writes), the asyncio runner whose SIGTERM cancels it,
the backends and the rows themselves. Imported by ``audit.py`` as a sibling module
(``python benchmarks/audit.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from measuring import raise_exit
from node.audit.database_store import DatabaseStorage
from node.audit.entries import AuditRecord
from node.audit.log import AuditLog
from node.audit.storage import AuditStorage

WRITERS: Final = (1, 64)
T = TypeVar("T")


# --- the entries -----------------------------------------------------------------------------

_T0: Final = datetime(2026, 3, 1, 12, tzinfo=UTC)


def record(i: int) -> AuditRecord:
    """Exchange `i` as the node records a Match: digests, hex signatures, a case, a nonce."""
    seed = i.to_bytes(8, "big")
    allowed = i % 4 != 3
    when = _T0 + timedelta(microseconds=1537 * i)
    return AuditRecord(
        time=when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        peer="DE-BKA",
        method="Match",
        purpose="criminal_investigation",
        legal_basis="bilateral_agreement",
        decision="allow" if allowed else "deny",
        reasons=() if allowed else ("no_agreement",),
        policy_revision="sha256:5f0c1e4b9a7d2c36",
        request_sha256=hashlib.sha256(b"q" + seed).hexdigest(),
        response_sha256=hashlib.sha256(b"a" + seed).hexdigest(),
        category="vehicle",
        case_reference=f"DE-BKA-2026-{i:07d}",
        nonce=hashlib.sha256(b"n" + seed).hexdigest()[:32],  # 16 bytes, as an envelope's
        request_signature=hashlib.sha512(b"q" + seed).hexdigest(),  # 64 bytes, as Ed25519
        response_signature=hashlib.sha512(b"a" + seed).hexdigest(),
    )


class CountingLog(AuditLog):
    """An AuditLog that counts its writes: each is one batch, one write and one fdatasync
    (a file) or one transaction (a database)."""

    def __init__(self, target: Path | AuditStorage) -> None:
        self.writes = 0
        self.write_seconds = 0.0
        super().__init__(target)

    def _commit(self, batch: list[Any]) -> list[Any]:
        start = time.perf_counter()
        replays = super()._commit(batch)
        # One flusher at a time: the counts are never updated concurrently.
        self.write_seconds += time.perf_counter() - start
        self.writes += 1
        return replays


# --- signals ---------------------------------------------------------------------------------


def run_loop(main: Callable[[], Awaitable[T]]) -> T:
    """`asyncio.run(main())`, SIGTERM cancelling it as Ctrl-C does (outside the loop,
    `raise_exit` handles it; inside, an exception raised by a signal handler could land
    in a callback that swallows it)."""

    async def guarded() -> T:
        this = asyncio.current_task()
        assert this is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
        return await main()

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:  # by SIGTERM; the logs were closed on the way out
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, raise_exit)  # the loop's handler went with it


# --- appends ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One append row summed over its rounds."""

    label: str
    unit: str = "fdatasync"  # what one batch is: "fdatasync" or "transaction"
    appends: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    syncs: int = 0
    sync_seconds: float = 0.0  # inside write + fdatasync
    rates: list[float] = field(default_factory=list)

    def add(self, appends: int, seconds: float, cpu: float, syncs: int, sync_s: float) -> None:
        self.appends += appends
        self.seconds += seconds
        self.cpu += cpu
        self.syncs += syncs
        self.sync_seconds += sync_s
        self.rates.append(appends / seconds)

    @property
    def rate(self) -> float:
        return self.appends / self.seconds

    @property
    def batch(self) -> float:
        return self.appends / self.syncs if self.syncs else float("nan")

    @property
    def sync_ms(self) -> float:
        return self.sync_seconds / self.syncs * 1e3 if self.syncs else float("nan")

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.appends * 1e6


async def _drive(
    log: AuditLog, writers: int, seconds: float, records: Sequence[AuditRecord]
) -> int:
    """`writers` tasks, each awaiting one append at a time until the deadline."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def writer(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < deadline:
            await log.append(records[i % len(records)])
            done += 1
            i += writers

    await asyncio.gather(*(writer(k) for k in range(writers)))
    return done


def run_log(
    target: Path | AuditStorage, writers: int, seconds: float, records: Sequence[AuditRecord]
) -> tuple[int, float, float, int, float]:
    """A fresh log driven by `writers` tasks: appends, seconds, CPU seconds, batches
    (fdatasyncs or transactions) and seconds spent in them."""
    log = CountingLog(target)

    async def main() -> int:
        try:
            return await _drive(log, writers, seconds, records)
        finally:
            await log.close()

    cpu = time.process_time()
    start = time.perf_counter()
    appends = run_loop(main)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    assert log.size == appends, "an awaited append was not durable"
    return appends, elapsed, cpu, log.writes, log.write_seconds


def run_baseline(
    path: Path, lines: Sequence[bytes], seconds: float
) -> tuple[int, float, float, int, float]:
    """`lines` written one at a time, each made durable before the next (no group commit);
    the same figures as `run_log`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    done = 0
    clock = time.perf_counter
    try:
        cpu = time.process_time()
        start = clock()
        deadline = start + seconds
        sync_s = 0.0
        while (now := clock()) < deadline:
            line = lines[done % len(lines)]
            if os.write(fd, line) != len(line):
                raise OSError(f"short write to {path}")
            os.fdatasync(fd)
            sync_s += clock() - now
            done += 1
        elapsed = clock() - start
        cpu = time.process_time() - cpu
    finally:
        os.close(fd)
    return done, elapsed, cpu, done, sync_s


@dataclass(frozen=True, slots=True)
class Backend:
    """Where an append row keeps its log: a fresh one for each run (`open`), removed after
    it (`clear`)."""

    name: str
    unit: str
    open: Callable[[Path], Path | AuditStorage]
    clear: Callable[[Path], None]


def _unlink_all(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def file_backend() -> Backend:
    return Backend("AuditLog.append", "fdatasync", lambda path: path, _unlink_all)


def sqlite_backend() -> Backend:
    def open_(path: Path) -> AuditStorage:
        return DatabaseStorage(f"sqlite:///{path.with_suffix('.db')}")

    return Backend(
        "SQLite", "transaction", open_, lambda path: _unlink_all(path.with_suffix(".db"))
    )


def postgres_backend(url: str) -> Backend:
    """Tables in the database at `url` (one the run created): dropped after every run."""

    def clear(_path: Path) -> None:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS audit_entries, audit_checkpoints"))
        finally:
            engine.dispose()

    return Backend("PostgreSQL", "transaction", lambda _path: DatabaseStorage(url), clear)


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database beside the one at `admin_url`, dropped at the end."""
    admin = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    name = f"liaison_bench_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def measure_appends(
    folder: Path, seconds: float, rounds: int, backends: Sequence[Backend]
) -> list[Row]:
    """The baseline, then 1 and 64 writers on each backend, taking turns over `rounds`."""
    records = [record(i) for i in range(4096)]
    warm_up = folder / "warm-up.log"
    run_log(warm_up, WRITERS[-1], min(seconds, 0.5), records)
    lines = warm_up.read_bytes().splitlines(keepends=True)
    warm_up.unlink()
    baseline = Row("os.write + os.fdatasync per entry (baseline)")
    runs: list[tuple[Row, Backend | None, int]] = [(baseline, None, 1)]
    for backend in backends:
        for w in WRITERS:
            label = f"{backend.name}, {w} writer{'s' if w > 1 else ''}"
            runs.append((Row(label, backend.unit), backend, w))
    for r in range(rounds):
        order = list(range(len(runs)))
        order = order[r % len(order) :] + order[: r % len(order)]  # rows take turns going first
        for k in order:
            row, where, writers = runs[k]
            path = folder / f"appends-{k}-{r}.log"
            if where is None:
                row.add(*run_baseline(path, lines, seconds))
                path.unlink()
                continue
            try:
                row.add(*run_log(where.open(path), writers, seconds, records))
            finally:
                where.clear(path)
    return [row for row, _, _ in runs]


def report_appends(rows: Sequence[Row], seconds: float, rounds: int) -> None:
    base = rows[0].rate
    print(f"appends, {rounds} round(s) of {seconds:g} s per row, every entry durable:")
    for row in rows:
        spread = f"{min(row.rates):,.0f} to {max(row.rates):,.0f}" if len(row.rates) > 1 else ""
        what = "write + fdatasync" if row.unit == "fdatasync" else "transaction"
        print(
            f"  {row.label}: {row.rate:,.0f} appends/s"
            + (f" (rounds {spread})" if spread else "")
            + f", mean batch {row.batch:.1f} entries per {row.unit} "
            f"({what} {row.sync_ms:.2f} ms), CPU {row.cpu_us:.0f} µs per append, "
            f"ratio to baseline {row.rate / base:.2f}",
            flush=True,
        )
