"""Match throughput of 1, 2 and 3 replicas of one node sharing one PostgreSQL database and
one audit tree, and where their audit appends serialise (docs/performance.md).

One owner (FR-DGPN, ``--records`` synthetic records) runs as replica processes of
``liaison serve``: the same keys, agreements and directory, distinct folders and ports,
records and audit log in one scratch PostgreSQL database (``[audit] store = "database"``).
For each replica count, in one run, the benchmark starts that many replicas and one client
(DE-BKA, this process, one mTLS channel per replica) keeps ``--concurrency`` Matches in
flight, each sent to the next replica in turn (round-robin), for ``--duration`` seconds
after a warm-up. Requests (half hits, half no-hits, each with its own signed envelope) are
built before the timed loop. The one-replica row is the baseline the others are divided by.

Every batch of audit appends, whichever replica makes it, is one transaction that first
takes one PostgreSQL advisory lock (node/audit/database_store.py). While the load runs a
function inside the server samples that lock every millisecond: the share of time it is
held is the share of the run the replicas spend serialised, and with the number of
transactions (from the rows' xmin) and entries in the window it gives the lock's cost per
transaction and per entry. At the end the log is checked: the chain and every checkpoint
from entry 0 (one tree), one entry per request answered, no nonce twice.

On a 2-core machine shared by client, replicas and PostgreSQL the curve shows correctness
and contention, not the speed-up more cores would give.

    python benchmarks/replicas.py [--duration 10] [--concurrency 64] [--replicas 1,2,3]
                                  [--records 20000] [--postgres-url URL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from audit_appends import scratch_database
from federation.client import ClientIdentity
from federation.serde import match_answer_from_bytes
from match import open_channel
from match_echo import METHOD
from match_load import ASKER, CALL_TIMEOUT, Call, Queries, Request
from measuring import percentiles, print_table, process_cpu, raise_exit
from node.local.demo import AGREEMENTS
from node.local.federation import NodeHandle, build_federation
from replicas_cluster import (
    Correctness,
    LockSampler,
    LockShare,
    check_log,
    engine,
    log_size,
    make_replicas,
    transactions,
)

OWNER: Final = "FR-DGPN"
POSTGRES_ENV: Final = "LIAISON_TEST_POSTGRES_URL"


@dataclass(frozen=True)
class Drive:
    """What one stretch of load gave: answers, failures, latencies, answers per replica."""

    answered: int
    errors: int
    seconds: float
    latencies: list[float]
    per_replica: list[int]

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Phase:
    replicas: int
    load: Drive
    appended: int  # entries the timed window added to the log (any replica)
    transactions: int  # audit transactions that wrote them
    lock: LockShare
    node_cpu: float  # seconds, all replica processes
    busy: float  # the machine's CPU busy share over the window (all cores)

    @property
    def per_transaction(self) -> float:
        return self.appended / self.transactions if self.transactions else 0.0

    @property
    def held_seconds(self) -> float:
        return self.lock.held * self.load.seconds

    def hold_us(self, per: int) -> float:
        return self.held_seconds / per * 1e6 if per else float("nan")


async def drive(
    calls: Sequence[Call], requests: Sequence[Request], in_flight: int, seconds: float
) -> Drive:
    """Keep `in_flight` calls going, each to the next replica in turn, until `seconds` pass
    or the requests run out."""
    latencies: list[float] = []
    per_replica = [0] * len(calls)
    errors = 0
    cursor = 0
    clock = time.perf_counter
    deadline = clock() + seconds

    async def worker() -> None:
        nonlocal cursor, errors
        while cursor < len(requests) and clock() < deadline:
            n = cursor
            cursor += 1
            body, metadata = requests[n]
            target = n % len(calls)
            started = clock()
            try:
                await calls[target](body, timeout=CALL_TIMEOUT, metadata=metadata)
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(clock() - started)
            per_replica[target] += 1

    started = clock()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = clock() - started
    return Drive(len(latencies), errors, elapsed, latencies, per_replica)


async def check_replicas(calls: Sequence[Call], queries: Queries) -> int:
    """Every replica answers hits as hits and no-hits as no-hits (refusals would flatter
    it); returns the number of answers, which the log must also count."""
    for call in calls:
        for n in range(6):
            hit = n % 2 == 0
            body, metadata = queries.one(hit)
            try:
                raw = await call(body, timeout=CALL_TIMEOUT, metadata=metadata)
            except grpc.RpcError as exc:
                raise RuntimeError(f"a replica refused a benchmark query: {exc}") from None
            if match_answer_from_bytes(raw).hit != hit:
                raise RuntimeError(f"a replica answered hit={not hit} where hit={hit} was due")
    return 6 * len(calls)


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return float(sum(fields) - idle), float(sum(fields))


def stop(replica: NodeHandle) -> None:
    """Stop a replica gracefully; one that crashed or would not stop fails the run (its
    log's end is shown), since a lost replica would make its figures meaningless."""
    code = replica.stop()
    if code not in (0, None):
        tail = (replica.folder / "node.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"a replica exited with status {code}; its log ends:\n{tail}")


async def phase(
    replicas: Sequence[NodeHandle],
    identity: ClientIdentity,
    queries: Queries,
    db: Engine,
    sampler: LockSampler,
    in_flight: int,
    seconds: float,
    warmup: float,
) -> tuple[Phase, int, int]:
    """Start the replicas, load them, stop them: the phase, and every answer and failure it
    saw (warm-up and checks included, since each of those is audited too)."""
    async with contextlib.AsyncExitStack() as stack:
        for node in replicas:
            node.start(args=["--workers", "1"])  # a replica is one process (not one per core)
            stack.callback(stop, node)
        for node in replicas:
            node.wait_ready(timeout=120.0)
        calls: list[Call] = []
        for node in replicas:
            channel = open_channel(identity, node.endpoint)
            stack.push_async_callback(channel.close)
            await channel.channel_ready()
            calls.append(channel.unary_unary(METHOD))
        answered = await check_replicas(calls, queries)
        warm = await drive(calls, queries.build(max(2000, 50 * in_flight)), in_flight, warmup)
        if warm.errors:
            raise RuntimeError(f"{len(replicas)} replicas: {warm.errors} calls failed warming up")
        answered += warm.answered
        pool = queries.build(int(warm.rate * seconds * 2) + 50 * in_flight)
        pids = [node.process.pid for node in replicas if node.process is not None]
        first = await asyncio.to_thread(log_size, db)
        cpu0, machine0 = sum(process_cpu(p) for p in pids), cpu_times()
        sampled = asyncio.create_task(asyncio.to_thread(sampler.sample, seconds))
        load = await drive(calls, pool, in_flight, seconds)
        cpu1, machine1 = sum(process_cpu(p) for p in pids), cpu_times()
        lock = await sampled
        last = await asyncio.to_thread(log_size, db)
        batches = await asyncio.to_thread(transactions, db, first, last)
        if load.answered and len(pool) <= load.answered + load.errors:
            print(f"note: {len(replicas)} replicas used up the pre-built requests", flush=True)
    # Every replica has stopped (each signs a checkpoint of the log's end as it goes).
    busy = (machine1[0] - machine0[0]) / max(1.0, machine1[1] - machine0[1])
    result = Phase(len(replicas), load, last - first, batches, lock, cpu1 - cpu0, busy)
    print(
        f"  {len(replicas)} replica(s): {load.rate:8.0f} req/s, lock held "
        f"{100 * lock.held:.0f}% of the time",
        flush=True,
    )
    return result, answered + load.answered, warm.errors + load.errors


async def bench(
    replicas: Sequence[NodeHandle],
    counts: Sequence[int],
    identity: ClientIdentity,
    queries: Queries,
    url: str,
    in_flight: int,
    seconds: float,
    warmup: float,
) -> tuple[list[Phase], int, int]:
    # SIGTERM cancels the run as Ctrl-C does, so every stack below stops all it started.
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    db = engine(url)
    sampler = LockSampler(db)
    try:
        phases, answered, errors = [], 0, 0
        for count in counts:
            result, seen, failed = await phase(
                replicas[:count], identity, queries, db, sampler, in_flight, seconds, warmup
            )
            phases.append(result)
            answered += seen
            errors += failed
        return phases, answered, errors
    finally:
        sampler.close()
        db.dispose()


def report(phases: Sequence[Phase], in_flight: int) -> None:
    base = phases[0].load.rate
    print(
        f"\nMatch over gRPC + mTLS at {in_flight} in flight, round-robin over the replicas "
        f"(one channel each); client, replicas and PostgreSQL share {os.cpu_count()} cores"
    )
    head = (
        "replicas",
        "req/s",
        "p50 ms",
        "p99 ms",
        "appends/s",
        "entries/tx",
        "lock held",
        "waiting",
        "lock µs/tx",
        "lock µs/entry",
        "node CPU µs/req",
        "machine busy",
        "ratio",
        "errors",
    )
    rows = [head]
    for p in phases:
        p50, p99 = percentiles(p.load.latencies, 0.50, 0.99)
        rows.append(
            (
                str(p.replicas),
                f"{p.load.rate:.0f}",
                f"{p50 * 1e3:.2f}",
                f"{p99 * 1e3:.2f}",
                f"{p.appended / p.load.seconds:.0f}",
                f"{p.per_transaction:.1f}",
                f"{100 * p.lock.held:.0f}%",
                f"{p.lock.waiting:.2f}",
                f"{p.hold_us(p.transactions):.0f}",
                f"{p.hold_us(p.appended):.0f}",
                f"{p.node_cpu / max(1, p.load.answered) * 1e6:.0f}",
                f"{100 * p.busy:.0f}%",
                f"{p.load.rate / base:.2f}x" if base else "-",
                str(p.load.errors),
            )
        )
    print_table(rows)
    for p in phases:
        split = "/".join(str(n) for n in p.load.per_replica)
        ceiling = p.appended / p.held_seconds if p.held_seconds else float("inf")
        print(
            f"{p.replicas} replica(s): answers per replica {split}; audit lock sampled "
            f"{p.lock.samples} times, held {100 * p.lock.held:.1f}% ({p.held_seconds:.2f} s "
            f"of {p.load.seconds:.2f} s), {p.transactions} transactions for {p.appended} "
            f"entries; at this batch size the lock alone would pass {ceiling:,.0f} appends/s"
        )
        if p.lock.held:
            held = p.lock.held
            print(
                f"  of the time the lock was held: {100 * p.lock.active / held:.0f}% a "
                f"statement running in PostgreSQL ({100 * p.lock.wal / held:.0f}% the commit's "
                f"WAL flush), {100 * (held - p.lock.active) / held:.0f}% waiting for the "
                "holding replica's next statement (its Python work, or a CPU)"
            )
    print(
        "ratio to 1 replica (same run): "
        + ", ".join(f"{p.replicas}: {p.load.rate / base:.2f}x" for p in phases if base)
    )


def report_correctness(found: Correctness, errors: int) -> bool:
    print(
        f"\nthe log after the run: {found.entries} entries, chain and {found.checkpoints} "
        f"checkpoint(s) verified from entry 0 (one tree); {found.answered} requests answered, "
        f"{errors} failed; {found.distinct_nonces} distinct nonces; {found.refusals} refusals"
    )
    problems = found.problems
    print("correctness: " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
    return not problems


def run(
    admin_url: str,
    counts: Sequence[int],
    records: int,
    in_flight: int,
    seconds: float,
    warmup: float,
) -> int:
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C (outside the loop)
    root = Path(tempfile.mkdtemp(prefix="liaison-bench-replicas-"))
    load0 = os.getloadavg()[0]
    try:
        with scratch_database(admin_url) as url:
            where = make_url(url).render_as_string(hide_password=True)
            print(f"Building {ASKER} (asker) and {OWNER} (owner, {records} records) in {root}")
            print(f"  records and audit log of every replica in {where}", flush=True)
            fed = build_federation(root / "federation", (ASKER, OWNER), AGREEMENTS, records=records)
            owner = fed.nodes[OWNER]
            replicas = make_replicas(owner, url, max(counts), root)
            identity = fed.nodes[ASKER].identity()
            # A record whose source restrictions name the asker's country is not a hit for
            # it: those are left out of the hits asked for.
            visible = [r for r in owner.rows if ASKER[:2] not in r.get("source_restrictions", ())]
            queries = Queries(visible, identity.signing_key)
            for handle in fed.nodes.values():
                handle.rows = []
            gc.collect()
            gc.freeze()
            print(
                f"  measuring {seconds:g} s per replica count after {warmup:g} s of warm-up",
                flush=True,
            )
            try:
                phases, answered, errors = asyncio.run(
                    bench(replicas, counts, identity, queries, url, in_flight, seconds, warmup)
                )
            except asyncio.CancelledError:  # by SIGTERM; everything started is stopped by now
                raise SystemExit(128 + signal.SIGTERM) from None
            finally:
                signal.signal(signal.SIGTERM, raise_exit)  # the loop's handler went with it
            found = check_log(replicas[0], url, answered)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, grpcio "
        f"{grpc.__version__}, {records} records; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    report(phases, in_flight)
    return 0 if report_correctness(found, errors) else 1


def replica_counts(value: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give counts such as 1,2,3") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give positive counts such as 1,2,3")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="timed seconds per replica count (10)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="calls kept in flight (default 64)"
    )
    parser.add_argument(
        "--replicas",
        type=replica_counts,
        default=[1, 2, 3],
        help="replica counts to measure, in order; the first is the baseline (default 1,2,3)",
    )
    parser.add_argument(
        "--records", type=int, default=20_000, help="records the node holds (default 20000)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_ENV, ""),
        help=f"a PostgreSQL server (a scratch database is made on it and dropped at the end; "
        f"default ${POSTGRES_ENV}; scripts/postgres.sh start gives one)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1000 records, 1 and 2 replicas, 1 s each, 16 in flight",
    )
    args = parser.parse_args(argv)
    if not args.postgres_url:
        parser.error(
            f"no PostgreSQL: give --postgres-url or set {POSTGRES_ENV} "
            "(url=$(scripts/postgres.sh start) starts a throwaway one)"
        )
    if args.quick:
        return run(args.postgres_url, [1, 2], 1000, 16, 1.0, 0.3)
    if args.duration <= 0 or args.concurrency < 1 or args.records < 1:
        parser.error("--duration, --concurrency and --records must be positive")
    warmup = min(2.0, args.duration / 2)
    return run(
        args.postgres_url, args.replicas, args.records, args.concurrency, args.duration, warmup
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process this benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)
