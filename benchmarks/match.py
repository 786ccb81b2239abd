"""Match throughput and latency of a real node, beside a bare gRPC echo server
(docs/performance.md).

One run measures two servers, each in its own process, over the same mutual TLS (the
owner's certificate and key, client certificates required) and with the same bytes:

* **echo**: a bare ``grpc.aio`` server that answers every Match with a pre-serialised copy
  of the node's own hit answer and does nothing else: the floor of Python gRPC over mTLS;
* **node**: ``liaison serve`` for FR-DGPN holding ``--records`` synthetic records, asked by
  DE-BKA under the demo agreements, so every call is identified, decided, looked up and
  audited (half of the queries are hits, half no-hits).

For each, it drives 1 and then 64 calls in flight from one ``grpc.aio`` channel (one TLS
handshake), after a warm-up, for ``--seconds`` each. Requests (each with its own fresh
envelope) are serialised before the timed loop so that the client's own cost stays small;
the client still shares the machine's cores with the server, so beside req/s and latency it
prints each server's CPU time per request (from /proc), the figure the client distorts least.

With ``--workers N`` (N > 1) the node runs ``liaison serve --workers N`` with its audit log
in a SQLite database (``[audit] store = "database"``, made by ``liaison db upgrade``), and
the echo runs as N processes on one port (SO_REUSEPORT), its fair twin. One connection
lands on one process, so the client then opens ``--channels`` connections to each (4·N by
default, the same count for both, as many to each process: a connection the kernel put
where enough are is closed and another opened) and sends each call on the next in turn;
CPU per request sums every process of the server (the node's supervisor and workers, every
echo process).

    python benchmarks/match.py [--records 100000] [--seconds 5] [--workers N]
                               [--channels C] [--audit file|database] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

import grpc

from federation.client import ClientIdentity, secure_channel
from federation.pki import load_signing_key
from federation.serde import match_answer_from_bytes, match_answer_to_proto
from federation.signing import (
    request_message,
    response_message,
    sign,
    verify,
)
from match_echo import METHOD, EchoProcess, echo_serve
from match_load import ASKER, CALL_TIMEOUT, HIT_SHARE, Call, Measurement, Queries, measure
from match_workers import Setup, connections, database_audit, node_pids, spread
from measuring import node_benchmark_parser, print_table, raise_exit
from node.local.demo import AGREEMENTS
from node.local.federation import NodeHandle, build_federation

OWNER: Final = "FR-DGPN"
CONCURRENCY: Final = (1, 64)
TARGET_RATIO: Final = 0.6
# With several workers, the targets: p99 within 2x the echo's, CPU per request within 1.8x.
TARGET_P99: Final = 2.0
TARGET_CPU: Final = 1.8
# The audit entry id in a node's answer grows with its log; the echo answers with one of
# five digits, the size it has after ten thousand requests.
ECHO_AUDIT_ENTRY: Final = "12345"


# --- the run --------------------------------------------------------------------------------


def open_channel(identity: ClientIdentity, endpoint: str) -> grpc.aio.Channel:
    """One channel, one mTLS handshake: both servers present the owner's certificate."""
    return secure_channel(identity, OWNER, endpoint)


async def check_node(call: Call, queries: Queries) -> bytes:
    """The node must answer hits as hits and no-hits as no-hits (refusals are cheap and would
    flatter it); returns one hit answer, the size the echo server copies."""
    hit_answer = b""
    for n in range(20):
        hit = n % 2 == 0
        try:
            body, metadata = queries.one(hit)
            raw = await call(body, timeout=CALL_TIMEOUT, metadata=metadata)
        except grpc.RpcError as exc:
            raise RuntimeError(f"the node refused a benchmark query: {exc}") from None
        answer = match_answer_from_bytes(raw)
        if answer.hit != hit:
            raise RuntimeError(f"the node answered hit={answer.hit} where hit={hit} was due")
        if hit:
            hit_answer = raw
    answer = replace(match_answer_from_bytes(hit_answer), audit_entry=ECHO_AUDIT_ENTRY)
    return match_answer_to_proto(answer).SerializeToString()


def pin(pid: int, cpus: set[int] | None) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads it starts later inherit it)."""
    if cpus is None:
        return
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(task), cpus)


async def bench(
    owner: NodeHandle,
    identity: ClientIdentity,
    queries: Queries,
    seconds: float,
    warmup: float,
    folder: Path,
    server_cpus: set[int] | None,
    setup: Setup,
) -> list[Measurement]:
    # SIGTERM cancels the run as Ctrl-C does, so the stack below stops all it started.
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    async with contextlib.AsyncExitStack() as stack:

        async def connect(endpoint: str, pids: Sequence[int]) -> list[Call]:
            """`setup.channels` channels, as many to each of the server's processes `pids`:
            the kernel places each new connection on one of them by a hash, so a connection
            that lands where enough are is closed and another opened."""
            quota = setup.channels // len(pids)
            kept = dict.fromkeys(pids, 0)
            calls: list[Call] = []
            for _ in range(20 * setup.channels):
                before = connections(endpoint, pids)
                channel = open_channel(identity, endpoint)
                await channel.channel_ready()
                landed = {pid for pid, _ in connections(endpoint, pids) - before}
                if len(landed) == 1 and kept[(pid := landed.pop())] < quota:
                    kept[pid] += 1
                    stack.push_async_callback(channel.close)
                    calls.append(channel.unary_unary(METHOD))
                    if len(calls) == setup.channels:
                        return calls
                else:
                    await channel.close()
            raise RuntimeError(f"could not spread {setup.channels} connections evenly: {kept}")

        owner.start(args=["--workers", str(setup.workers)])
        stack.callback(owner.stop, 30.0)
        owner.wait_ready(timeout=120.0)
        node_all = node_pids(owner, setup.workers)
        # The supervisor holds no connection: its workers do.
        node_calls = await connect(owner.endpoint, node_all[1:] or node_all)
        echo = EchoProcess(
            owner, await check_node(node_calls[0], queries), folder, processes=setup.workers
        )
        stack.callback(echo.stop)
        echo.wait_ready()
        echo_calls = await connect(echo.endpoint, echo.pids)
        if setup.workers > 1:
            print(f"  connections per node process: {spread(owner.endpoint, node_all[1:])}")
            print(f"  connections per echo process: {spread(echo.endpoint, echo.pids)}")
        # Both servers stay up (the idle one costs next to nothing) and are measured in turn
        # at each concurrency, so that a drift in the machine's speed touches both alike.
        results = []
        targets = (("echo", echo_calls, echo.pids), ("node", node_calls, node_all))
        for in_flight in CONCURRENCY:
            for target, calls, pids in targets:
                for pid in pids:
                    pin(pid, server_cpus)
                results.append(
                    await measure(calls, queries.build, target, pids, in_flight, seconds, warmup)
                )
        return results


def report(
    results: Sequence[Measurement], request_bytes: int, response_bytes: int, setup: Setup
) -> None:
    print(
        f"\nMatch over gRPC + mTLS, {setup.describe()}; client and server share "
        f"{os.cpu_count()} cores (the client is this process: its CPU is shown too)"
    )
    print(
        f"request ~{request_bytes} B, hit answer {response_bytes} B; queries "
        f"{HIT_SHARE:.0%} hits; server CPU per request is the figure least distorted by "
        "the shared client\n"
    )
    head = (
        "target",
        "in-flight",
        "req/s",
        "p50 ms",
        "p99 ms",
        "srv CPU µs/req",
        "srv cores",
        "cli CPU µs/req",
        "errors",
    )
    rows = [head] + [
        (
            m.target,
            str(m.in_flight),
            f"{m.rate:.0f}",
            f"{m.p50 * 1e3:.2f}",
            f"{m.p99 * 1e3:.2f}",
            f"{m.per_request_us(m.server_cpu):.0f}",
            f"{m.server_cpu / m.seconds:.2f}",
            f"{m.per_request_us(m.client_cpu):.0f}",
            str(m.errors),
        )
        for m in sorted(results, key=lambda m: (m.in_flight, m.target != "echo"))
    ]
    print_table(rows)
    for m in results:
        if m.pool_ran_out:
            print(
                f"note: {m.target} at {m.in_flight} in flight used up its pre-built requests "
                f"after {m.seconds:.1f} s"
            )
    by = {(m.target, m.in_flight): m for m in results}
    ratios = {
        c: by["node", c].rate / by["echo", c].rate if by["echo", c].rate else 0.0
        for c in CONCURRENCY
    }
    cpu = {
        c: by["echo", c].per_request_us(by["echo", c].server_cpu)
        / by["node", c].per_request_us(by["node", c].server_cpu)
        for c in CONCURRENCY
    }
    print(
        "\nratio node/echo throughput: "
        + ", ".join(f"{ratios[c]:.2f}x at {c} in flight" for c in CONCURRENCY)
    )
    print(
        "ratio echo/node server CPU per request: "
        + ", ".join(f"{cpu[c]:.2f}x at {c} in flight" for c in CONCURRENCY)
    )
    p99 = {c: by["node", c].p99 / by["echo", c].p99 for c in CONCURRENCY}
    print(
        "ratio node/echo p99 latency: "
        + ", ".join(f"{p99[c]:.2f}x at {c} in flight" for c in CONCURRENCY)
    )
    met = all(r >= TARGET_RATIO for r in ratios.values())
    print(
        f"target node >= {TARGET_RATIO}x echo throughput: {'met' if met else 'NOT met'} ("
        + "; ".join(
            f"{c} in flight: {'yes' if ratios[c] >= TARGET_RATIO else 'no'}" for c in CONCURRENCY
        )
        + ")"
    )
    top = CONCURRENCY[-1]  # the targets for workers are at 64 in flight
    node_cpu = 1 / cpu[top] if cpu[top] else float("inf")
    for label, ok in (
        (f"throughput >= {TARGET_RATIO}x echo's: {ratios[top]:.2f}x", ratios[top] >= TARGET_RATIO),
        (f"p99 <= {TARGET_P99}x echo's: {p99[top]:.2f}x", p99[top] <= TARGET_P99),
        (f"CPU per request <= {TARGET_CPU}x echo's: {node_cpu:.2f}x", node_cpu <= TARGET_CPU),
    ):
        print(
            f"target with {setup.workers} worker(s) at {top} in flight, {label}: "
            f"{'met' if ok else 'NOT met'}"
        )


def run(records: int, seconds: float, warmup: float, pinned: bool, setup: Setup) -> int:
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C (outside the loop)
    cpus = sorted(os.sched_getaffinity(0))
    # One core for the client and one for the server makes sense for a server of one process.
    pinned = pinned and len(cpus) > 1 and setup.workers == 1
    client_cpus, server_cpus = ({cpus[0]}, {cpus[1]}) if pinned else (None, None)
    if client_cpus is not None:
        pin(os.getpid(), client_cpus)  # before any gRPC thread exists; they inherit it
    root = Path(tempfile.mkdtemp(prefix="liaison-bench-match-"))
    try:
        print(
            f"Building {ASKER} (asker) and {OWNER} (owner) with {records} records each in "
            f"{root} ...",
            flush=True,
        )
        started = time.perf_counter()
        # build_federation gives every node the same record count; the asker's are unused.
        fed = build_federation(root / "federation", (ASKER, OWNER), AGREEMENTS, records=records)
        owner = fed.nodes[OWNER]
        if setup.audit == "database":
            database_audit(owner)
        identity = fed.nodes[ASKER].identity()
        queries = Queries(owner.rows, identity.signing_key)
        for handle in fed.nodes.values():
            handle.rows = []
        gc.collect()
        gc.freeze()  # the collector need not walk what setup left behind during the runs
        print(
            f"  built in {time.perf_counter() - started:.1f} s; measuring "
            f"{seconds:g} s per point after {warmup:g} s of warm-up",
            flush=True,
        )
        try:
            results = asyncio.run(
                bench(owner, identity, queries, seconds, warmup, root, server_cpus, setup)
            )
        except asyncio.CancelledError:  # by SIGTERM; everything started is stopped by now
            raise SystemExit(128 + signal.SIGTERM) from None
        finally:
            signal.signal(signal.SIGTERM, raise_exit)  # the loop's handler went with it
        request_bytes = len(queries.one(hit=True)[0])
        crypto_us = signing_cost_us(queries, identity.signing_key)
        response_bytes = len((root / "echo-response.bin").read_bytes())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"grpcio {grpc.__version__}, {records} records at the node"
    )
    if client_cpus is not None and server_cpus is not None:
        print(
            f"pinned: client (this process) on CPU {min(client_cpus)}, the server measured "
            f"on CPU {min(server_cpus)} (--no-pin lets the kernel place them)"
        )
    else:
        print("not pinned: the kernel places client and server threads on any core")
    report(results, request_bytes, response_bytes, setup)
    node_cpu = [r.per_request_us(r.server_cpu) for r in results if r.target == "node"]
    share = 100 * crypto_us / min(node_cpu) if node_cpu else float("nan")
    print(
        f"signing + verification per request at the node (verify the request's Ed25519 "
        f"signature, sign the answer bound to the request's SHA-256): {crypto_us:.0f} µs, "
        f"{share:.1f}% of the node's server CPU per request"
    )
    return 0


def signing_cost_us(queries: Queries, signing_key: bytes, rounds: int = 2000) -> float:
    """What the node spends per request on signatures, measured in this process."""
    key = load_signing_key(signing_key)
    public = key.public_key()
    answer = b"\x00" * 69
    requests = [queries.one(hit=True) for _ in range(rounds)]
    started = time.process_time()
    for body, metadata in requests:
        verify(public, metadata[0][1], request_message(METHOD, body), "request")
        sign(key, response_message(METHOD, hashlib.sha256(body).digest(), answer, ok=True))
    return (time.process_time() - started) / rounds * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = node_benchmark_parser(__doc__)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`liaison serve --workers N`, and N echo processes on one port (default 1)",
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=None,
        help="client connections to each server, calls sent on each in turn (default 1 with "
        "one worker, 4 per worker with more)",
    )
    parser.add_argument(
        "--audit",
        choices=("file", "database"),
        default=None,
        help='the node\'s audit store (default: the file with one worker; "database", a SQLite '
        "file, with more, which need it)",
    )
    parser.add_argument("--echo-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--echo-server",
        nargs=4,
        metavar=("CERT", "KEY", "CA", "RESPONSE"),
        type=Path,
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args(argv)
    if args.echo_server:
        with contextlib.suppress(KeyboardInterrupt):
            cert, key, ca, response = args.echo_server
            asyncio.run(echo_serve(cert, key, ca, response, port=args.echo_port))
        return 0
    if args.workers < 1 or (args.channels is not None and args.channels < 1):
        parser.error("--workers and --channels must be 1 or more")
    audit = args.audit or ("file" if args.workers == 1 else "database")
    if audit == "file" and args.workers > 1:
        parser.error("--workers > 1 needs --audit database (the file store serves one process)")
    channels = args.channels or (1 if args.workers == 1 else 4 * args.workers)
    if channels % args.workers:
        parser.error("--channels must be a multiple of --workers (as many to each process)")
    setup = Setup(args.workers, channels, audit)
    if args.quick:
        return run(2000, 1.0, 0.3, args.pin, setup)
    if args.records < 1 or args.seconds <= 0:
        parser.error("--records and --seconds must be positive")
    return run(args.records, args.seconds, 1.0, args.pin, setup)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process this benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)
