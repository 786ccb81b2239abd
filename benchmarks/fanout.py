"""Fan-out latency: one query to 1, 10 and 30 real peer nodes, one of them artificially
slow, against that slow peer's own latency measured in the same run (docs/performance.md).

A fan-out cannot answer before its slowest peer; what it adds is its own cost: signing a
request per peer, verifying every answer, and the scheduling of many calls on one event
loop. The issue's target: at 30 peers, the whole fan-out within the slowest peer's latency
+ 20 ms.

Every peer is a ``liaison serve`` process (``--records`` synthetic records each), all on
this machine. The slow one sits behind a latency proxy (``python -m tests.faults``, a
process of its own) that delays every chunk ``--slow-ms`` each way, so each call to it
takes at least twice that. The client (``FanoutClient``: one channel per peer, kept open
and warmed up first) asks, each round, the slow peer alone (the baseline), then 10 peers
(9 and the slow one), then 30: taking turns, so that a drift in the machine's speed
touches each alike. Each figure is the median (and p90) over the rounds; the overhead is
a fan-out's median minus the slow peer's alone.

    python benchmarks/fanout.py [--rounds 30] [--slow-ms 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import grpc

from federation.client import match_query, new_envelope
from federation.fanout import FanoutResult
from federation.fanout_client import FanoutClient
from measuring import percentiles, print_table, raise_exit
from node.local.demo import WINDOW
from node.local.federation import Federation, build_federation

ROOT: Final = Path(__file__).resolve().parents[1]
ASKER: Final = "DE-BKA"
# Peers' countries: one node each (a node id is <country>-<agency>).
COUNTRIES: Final = (
    "FR",
    "NL",
    "BE",
    "IT",
    "ES",
    "PT",
    "AT",
    "PL",
    "CZ",
    "SE",
    "FI",
    "DK",
    "IE",
    "LU",
    "GR",
    "HU",
    "SK",
    "SI",
    "HR",
    "RO",
    "BG",
    "EE",
    "LV",
    "LT",
    "MT",
    "CY",
    "NO",
    "CH",
    "IS",
    "LI",
)
SIZES: Final = (1, 10, 30)
QUICK_SIZES: Final = (1, 4, 8)
TARGET_MS: Final = 20.0
DEADLINE_S: Final = 10.0
NICE: Final = 10


def peer_ids(n: int) -> list[str]:
    return [f"{country}-P{i:02d}" for i, country in enumerate(COUNTRIES[:n])]


def agreements(peers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each peer lets the asker match its vehicles."""
    agreed = {
        "categories": ["vehicle"],
        "purposes": ["criminal_investigation"],
        "methods": ["Match"],
        "legal_bases": ["none"],
        **WINDOW,
    }
    return {peer: {ASKER: agreed} for peer in peers}


@contextmanager
def latency_proxy(upstream: str, slow_ms: float) -> Iterator[str]:
    """`python -m tests.faults` delaying every chunk `slow_ms` each way: its endpoint."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.faults",
            "--upstream",
            upstream,
            "--fault",
            "latency",
            "--latency-ms",
            str(slow_ms),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the latency proxy did not start: {line!r}")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def bench(
    fed: Federation,
    peers: Sequence[str],
    slow: str,
    slow_endpoint: str,
    sizes: Sequence[int],
    rounds: int,
) -> tuple[dict[int, list[FanoutResult]], dict[int, list[float]]]:
    identity = fed.nodes[ASKER].identity()
    members = [fed.member(node_id) for node_id in (ASKER, *peers)]
    healthy = [p for p in peers if p != slow]
    groups = {n: [*healthy[: n - 1], slow] for n in sizes}
    envelope = new_envelope(ASKER, "criminal_investigation", case_reference="BENCH-FANOUT")
    query = match_query(envelope, "vehicle", [("vin", "WVWZZZ1JZXW000001")])
    results: dict[int, list[FanoutResult]] = {n: [] for n in sizes}
    # This process's CPU (every thread, gRPC's included) per fan-out, in ms.
    client_cpu: dict[int, list[float]] = {n: [] for n in sizes}
    async with FanoutClient(
        identity, members, endpoints={slow: slow_endpoint}, max_in_flight=64
    ) as client:
        for _ in range(3):  # warm-up: every channel opened, every node's caches warm
            for n in sizes:
                warm = await client.match(query, groups[n], DEADLINE_S)
                if not warm.all_answered:
                    raise RuntimeError(f"a peer did not answer: {list(warm)}")
        for _ in range(rounds):
            for n in sizes:
                cpu = time.process_time()
                results[n].append(await client.match(query, groups[n], DEADLINE_S))
                client_cpu[n].append((time.process_time() - cpu) * 1000)
    return results, client_cpu


def report(
    results: dict[int, list[FanoutResult]], client_cpu: dict[int, list[float]], slow_ms: float
) -> None:
    sizes = sorted(results)
    baseline = sizes[0]
    alone_p50, alone_p90 = percentiles((r.elapsed_ms for r in results[baseline]), 0.5, 0.9)
    print(
        f"\nOne Match to n peers at once, one of them {slow_ms:g} ms away each way; "
        f"client and {max(sizes)} nodes share {os.cpu_count()} cores"
    )
    print(
        "baseline: the slow peer alone, in the same rounds; 'slowest in it' is the slow "
        "peer's own time inside that fan-out\n"
    )
    head = (
        "peers",
        "rounds",
        "total p50 ms",
        "p90 ms",
        "slowest in it p50",
        "over alone p50",
        "client CPU ms p50",
    )
    rows = [head]
    overhead: dict[int, float] = {}
    median: dict[int, float] = {}
    for n in sizes:
        p50, p90 = percentiles((r.elapsed_ms for r in results[n]), 0.5, 0.9)
        median[n] = p50
        (slowest,) = percentiles((max(p.elapsed_ms for p in r) for r in results[n]), 0.5)
        overhead[n] = p50 - alone_p50
        rows.append(
            (
                str(n),
                str(len(results[n])),
                f"{p50:.1f}",
                f"{p90:.1f}",
                f"{slowest:.1f}",
                f"{overhead[n]:+.1f}",
                f"{percentiles(client_cpu[n], 0.5)[0]:.1f}",
            )
        )
    print_table(rows)
    print(f"\nslow peer alone: p50 {alone_p50:.1f} ms, p90 {alone_p90:.1f} ms")
    print(
        "ratio total/slowest alone (p50): "
        + ", ".join(f"{median[n] / alone_p50:.2f}x at {n} peers" for n in sizes)
    )
    largest = sizes[-1]
    met = overhead[largest] <= TARGET_MS
    print(
        f"target total <= slowest + {TARGET_MS:g} ms at {largest} peers: "
        f"{'met' if met else 'NOT met'} ({overhead[largest]:+.1f} ms)"
    )


def run(sizes: Sequence[int], rounds: int, slow_ms: float, records: int, nice: bool) -> int:
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C
    peers = peer_ids(max(sizes))
    slow = peers[-1]
    root = Path(tempfile.mkdtemp(prefix="liaison-bench-fanout-"))
    try:
        print(
            f"Building {ASKER} and {len(peers)} peers with {records} records each ...", flush=True
        )
        fed = build_federation(
            root / "federation", (ASKER, *peers), agreements(peers), records=records
        )
        nodes = [fed.nodes[p] for p in peers]
        try:
            for node in nodes:
                node.start()
            for node in nodes:
                node.wait_ready(timeout=300)
            if nice:
                for node in nodes:
                    assert node.process is not None
                    os.setpriority(os.PRIO_PROCESS, node.process.pid, NICE)
            print(f"  {len(nodes)} nodes serving; {rounds} rounds after 3 of warm-up", flush=True)
            with latency_proxy(fed.nodes[slow].endpoint, slow_ms) as slow_endpoint:
                results, client_cpu = asyncio.run(
                    bench(fed, peers, slow, slow_endpoint, sizes, rounds)
                )
        finally:
            for node in nodes:
                node.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"grpcio {grpc.__version__}, {records} records per node; "
        + (
            f"the nodes at nice {NICE} (they stand for other machines: the client and the "
            "latency proxy, the network, are not kept waiting for a CPU by them)"
            if nice
            else "the nodes at the client's priority (--no-nice)"
        )
    )
    report(results, client_cpu, slow_ms)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds (default 30)")
    parser.add_argument(
        "--slow-ms", type=float, default=100.0, help="the slow peer's delay each way (default 100)"
    )
    parser.add_argument("--records", type=int, default=1000, help="records per node (default 1000)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1, 4 and 8 peers, 5 rounds"
    )
    parser.add_argument(
        "--no-nice",
        dest="nice",
        action="store_false",
        help=f"run the nodes at the client's priority (default: nice {NICE})",
    )
    args = parser.parse_args(argv)
    if args.quick:
        return run(QUICK_SIZES, 5, args.slow_ms, 200, args.nice)
    if args.rounds < 1 or args.slow_ms < 0 or args.records < 1:
        parser.error("--rounds and --records must be positive, --slow-ms not negative")
    return run(SIZES, args.rounds, args.slow_ms, args.records, args.nice)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process this benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)
