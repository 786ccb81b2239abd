"""Where a Match's record lookup should run: on the event loop, or in a worker thread.

A Match looks its identifiers up in the node's database while other calls wait on the same
event loop. ``RecordStore.reads_on_loop`` (node/kept_reader.py) decides where: on the loop
for SQLite, in a worker thread for a database server. This measures both places for both
databases, in one process:

* a ``RecordStore`` of ``--records`` travel documents (one document number each) in a
  SQLite file, and in a scratch PostgreSQL database at ``--postgres-url`` (default: the
  environment's ``LIAISON_TEST_POSTGRES_URL``; without one the PostgreSQL rows are skipped
  with a note), created and dropped by the run;
* 1 and 64 asyncio tasks, each looking up one identifier after another for ``--seconds``
  (half of them held, half not), ``store.find`` called on the loop or through
  ``loop.run_in_executor`` (the default executor, as the node does);
* beside them a ticker that asks the loop for a turn every millisecond: its lag is what
  any other call on the loop (a Match waiting to be verified, a Fetch) waits while lookups
  run; its p99 is printed as "loop lag".

PostgreSQL on loopback answers in well under a millisecond; a node's database server on
another host (a Kubernetes deployment) is a network round trip away. ``--rtt-ms R`` puts a
relay between this process and PostgreSQL that holds every chunk R/2 ms each way (a
process of its own, so its CPU is not counted here), and adds the PostgreSQL rows at that
round trip: on the loop a lookup holds every other call for the whole round trip.

**Baseline**: the same database read on the loop, in the same run; each row prints its
lookups/s and CPU per lookup as a ratio to it. The rows take turns over ``--rounds`` (the
machine is shared, so its speed drifts). This process is pinned to one core (the node's
loop is one thread; ``--no-pin`` lets the kernel place it); PostgreSQL runs wherever the
kernel puts it. ``--quick`` (2,000 records, 0.5 s per row, one round) takes a few seconds
and is run by ``tests/federation/test_benchmark_smoke.py``.

    python benchmarks/lookups.py [--records 20000] [--seconds 2] [--rounds 3]
                                 [--postgres-url URL] [--rtt-ms R] [--quick] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy.engine import make_url

from audit_appends import scratch_database
from federation.model import Identifier
from measuring import percentiles, print_table, raise_exit
from node.kept_reader import SERVER_CONNECTIONS
from node.records import NewRecord
from node.store import RecordStore, new_ref

POSTGRES_ENV = "LIAISON_TEST_POSTGRES_URL"
IN_FLIGHT = (1, 64)
PLACES = ("loop", "thread")
CATEGORY = "travel_document"


@dataclass
class Row:
    database: str
    place: str
    in_flight: int
    lookups: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)

    def rate(self) -> float:
        return self.lookups / self.seconds if self.seconds else float("nan")

    def cpu_us(self) -> float:
        return 1e6 * self.cpu / self.lookups if self.lookups else float("nan")


def document(number: int) -> str:
    return f"D{number:09d}"


def fill(store: RecordStore, records: int) -> None:
    store.create_schema()
    store.add_records(
        [
            NewRecord(
                new_ref(), CATEGORY, "H1", (), (Identifier("document_number", document(n)),), {}
            )
            for n in range(records)
        ]
    )


async def measure(store: RecordStore, row: Row, records: int, seconds: float) -> None:
    """`row.in_flight` tasks looking up for `seconds`, on the loop or in worker threads,
    and the ticker beside them."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    rng = random.Random(row.in_flight)

    async def lookups() -> None:
        while loop.time() < stop:
            # Half the numbers are held (below `records`), half are not.
            ident = [Identifier("document_number", document(rng.randrange(2 * records)))]
            started = time.perf_counter()
            if row.place == "loop":
                store.find(CATEGORY, ident, 10)
            else:
                await loop.run_in_executor(None, store.find, CATEGORY, ident, 10)
            row.latencies.append(time.perf_counter() - started)
            row.lookups += 1
            await asyncio.sleep(0)  # on the loop, a turn for the others between lookups

    async def ticker() -> None:
        while loop.time() < stop:
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            row.lags.append(time.perf_counter() - asked - 0.001)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(ticker(), *(lookups() for _ in range(row.in_flight)))
    row.cpu += time.process_time() - cpu
    row.seconds += time.perf_counter() - wall


def report(rows: Sequence[Row]) -> None:
    table = [
        [
            "database",
            "lookup on",
            "in flight",
            "lookups/s",
            "vs loop",
            "p50 ms",
            "p99 ms",
            "CPU µs/lookup",
            "vs loop",
            "loop lag p99 ms",
        ]
    ]
    for row in rows:
        base = next(
            r
            for r in rows
            if (r.database, r.place, r.in_flight) == (row.database, "loop", row.in_flight)
        )
        p50, p99 = percentiles(row.latencies, 0.5, 0.99)
        (lag,) = percentiles(row.lags, 0.99)
        table.append(
            [
                row.database,
                row.place,
                str(row.in_flight),
                f"{row.rate():.0f}",
                f"{row.rate() / base.rate():.2f}x",
                f"{p50 * 1e3:.2f}",
                f"{p99 * 1e3:.2f}",
                f"{row.cpu_us():.0f}",
                f"{row.cpu_us() / base.cpu_us():.2f}x",
                f"{lag * 1e3:.2f}",
            ]
        )
    print_table(table)


async def _relay(upstream: tuple[str, int], one_way: float, ready: Connection) -> None:
    """Accept connections and pass each byte on to `upstream` and back, `one_way` seconds
    late each way, in order."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                when, data = await due.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, when - loop.time()))
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        while data := await reader.read(65536):
            due.put_nowait((loop.time() + one_way, data))
        due.put_nowait((loop.time(), b""))
        await delivering

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
        with contextlib.suppress(ConnectionError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    ready.send(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def relay_main(upstream: tuple[str, int], one_way: float, ready: Connection) -> None:
    asyncio.run(_relay(upstream, one_way, ready))


@contextlib.contextmanager
def relayed(url: str, rtt_ms: float) -> Iterator[str]:
    """`url` reached through a relay that adds `rtt_ms` to every round trip."""
    parsed = make_url(url)
    ours, theirs = multiprocessing.Pipe()
    upstream = (parsed.host or "127.0.0.1", parsed.port or 5432)
    spawn = multiprocessing.get_context("spawn")
    process = spawn.Process(target=relay_main, args=(upstream, rtt_ms / 2000, theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(30):
            raise RuntimeError("the relay did not start")
        port = ours.recv()
        yield parsed.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        process.terminate()
        process.join(10)


@contextlib.contextmanager
def stores(
    folder: Path, postgres_url: str, rtt_ms: float
) -> Iterator[list[tuple[str, RecordStore, bool]]]:
    """(name, store, whether to fill it): a relayed store reads the database of the one
    before it."""
    opened: list[tuple[str, RecordStore, bool]] = []
    with contextlib.ExitStack() as stack:
        opened.append(("SQLite", RecordStore(f"sqlite:///{folder / 'records.db'}"), True))
        if postgres_url:
            scratch = stack.enter_context(scratch_database(postgres_url))
            opened.append(("PostgreSQL", RecordStore(scratch), True))
            if rtt_ms > 0:
                far = stack.enter_context(relayed(scratch, rtt_ms))
                opened.append((f"PostgreSQL+{rtt_ms:g}ms", RecordStore(far), False))
        else:
            print(f"PostgreSQL: skipped (no --postgres-url and {POSTGRES_ENV} is unset)")
        try:
            yield opened
        finally:
            for _, store, _ in opened:
                store.close()


def run(
    records: int, seconds: float, rounds: int, postgres_url: str, rtt_ms: float, pinned: bool
) -> int:
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C
    cpus = sorted(os.sched_getaffinity(0))
    folder = Path(tempfile.mkdtemp(prefix="liaison-bench-lookups-"))
    try:
        with stores(folder, postgres_url, rtt_ms) as opened:
            filled = [store for _, store, fills in opened if fills]
            print(f"Filling {len(filled)} database(s) with {records} records each ...", flush=True)
            for store in filled:
                fill(store, records)
            if pinned:  # after the relay started: it runs wherever the kernel puts it
                os.sched_setaffinity(0, {cpus[-1]})
            rows = [
                Row(name, place, n) for name, _, _ in opened for n in IN_FLIGHT for place in PLACES
            ]
            by_name = {name: store for name, store, _ in opened}
            for number in range(rounds):
                for row in rows:
                    store = by_name[row.database]
                    asyncio.run(measure(store, row, records, seconds / rounds))
                print(f"  round {number + 1}/{rounds} done", flush=True)
            where = {name: "loop" if s.reads_on_loop else "thread" for name, s, _ in opened}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, {records} records, "
        f"{seconds:g} s per row over {rounds} round(s); "
        + (f"this process pinned to CPU {cpus[-1]}" if pinned else "not pinned")
        + f"; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "the node reads "
        + ", ".join(f"{name} on the {place}" for name, place in where.items())
        + f" (RecordStore.reads_on_loop; a server on up to {SERVER_CONNECTIONS} connections)"
    )
    report(rows)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records (default 20000)")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="time per row, over all rounds (default 2)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns of the rows (default 3)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_ENV, ""),
        help=f"a PostgreSQL server to make a scratch database on (default ${POSTGRES_ENV}; "
        "url=$(scripts/postgres.sh start) gives one)",
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="also read PostgreSQL through a relay adding this round trip (default 0: not)",
    )
    parser.add_argument("--quick", action="store_true", help="2000 records, 0.5 s, one round")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin this process to a core"
    )
    args = parser.parse_args(argv)
    if args.quick:
        return run(2000, 0.5, 1, args.postgres_url, args.rtt_ms, args.pin)
    return run(args.records, args.seconds, args.rounds, args.postgres_url, args.rtt_ms, args.pin)


if __name__ == "__main__":
    raise SystemExit(main())
