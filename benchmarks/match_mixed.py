"""Match on a real node under a mixed workload, beside the same node under ``match.py``'s
single combination and the bare gRPC echo server, all in one run (docs/performance.md).

``match.py`` asks with one (peer, purpose, category), so after the first request of each
second the node's decision cache always answers. Here FR-DGPN (``liaison serve``,
``--records`` synthetic records) is asked by three enrolled peers (DE-BKA, NL-KLPD,
BE-FPJ) under agreements that differ, with every combination of purpose, category,
identifier kind and legal basis an agreement allows, evenly (``match_mixed_load.py``);
every 20th request (5%) is one the agreement refuses (a purpose or a category it does not
name), and the allowed ones are half hits, half no-hits. Every answer is checked against
the one it was due after each timed loop, and the run fails if any was not.

The three targets are measured in turn at 1 and then 64 calls in flight, each after a
warm-up, over the same mutual TLS: **echo** (``match_echo.py``, the floor), **single**
(DE-BKA, criminal_investigation, travel_document: ``match.py``'s workload) and **mixed**.
For each it prints req/s, p50/p99 latency, the server's CPU per request (from /proc), and
for the node the share of policy decisions its cache answered and the time spent deciding
(from its /metrics: ``liaison_policy_cache_lookups_total`` and the decision-duration
histogram), then the ratios mixed/single and mixed/echo and what one cache miss costs.
``--engine opa`` runs the node on an OPA server sidecar instead of the embedded engine.

    python benchmarks/match_mixed.py [--records 100000] [--seconds 5] [--quick] [--no-pin]
        [--targets echo,single,mixed] [--engine embedded|opa]
"""

from __future__ import annotations

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from prometheus_client.parser import text_string_to_metric_families

from match import check_node, open_channel, pin
from match_echo import METHOD, EchoProcess
from match_load import Call, Measurement, Queries
from match_mixed_load import (
    AGREEMENTS,
    OWNER,
    PEERS,
    REFUSAL_EVERY,
    Checked,
    Combination,
    Workload,
    allowed,
    by_kind,
    check,
    drive,
    refused,
)
from measuring import node_benchmark_parser, print_table, raise_exit
from node.local.federation import NodeHandle, build_federation
from node.policy.opa_process import start_opa

CONCURRENCY: Final = (1, 64)
TARGETS: Final = ("echo", "single", "mixed")
# req/s the request pool is sized for at least (the node's rate is below 1,500 on 2 cores).
MIN_RATE: Final = 1500.0
# match.py's one combination.
SINGLE: Final = Combination(
    "DE-BKA", "criminal_investigation", "travel_document", "document_number", "none"
)


@dataclass(frozen=True)
class Policy:
    """The node's policy figures from its /metrics: cache lookups by result, and the time
    spent in `decide()` (a hit included) with its count."""

    hits: int = 0
    misses: int = 0
    seconds: float = 0.0
    decisions: int = 0

    def __sub__(self, other: Policy) -> Policy:
        return Policy(
            self.hits - other.hits,
            self.misses - other.misses,
            self.seconds - other.seconds,
            self.decisions - other.decisions,
        )

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else float("nan")

    @property
    def us_per_decision(self) -> float:
        return self.seconds / self.decisions * 1e6 if self.decisions else float("nan")


def policy_figures(node: NodeHandle) -> Policy:
    cache = {"hit": 0, "miss": 0}
    seconds, decisions = 0.0, 0
    for family in text_string_to_metric_families(node.read_metrics()):
        for sample in family.samples:
            if sample.name == "liaison_policy_cache_lookups_total":
                cache[sample.labels["result"]] = int(sample.value)
            elif sample.name == "liaison_policy_decision_duration_seconds_sum":
                seconds = sample.value
            elif sample.name == "liaison_policy_decision_duration_seconds_count":
                decisions = int(sample.value)
    return Policy(cache["hit"], cache["miss"], seconds, decisions)


@dataclass(frozen=True)
class Point:
    """One measurement: its figures, its checked answers, and the node's policy meanwhile."""

    m: Measurement
    checked: Checked | None  # None for the echo, whose answers are one copied hit
    policy: Policy = Policy()
    kinds: tuple[tuple[str, int, float, float], ...] = ()  # match_mixed_load.by_kind


async def measure(
    calls: Mapping[str, Call],
    workload: Workload,
    target: str,
    pids: Sequence[int],
    in_flight: int,
    seconds: float,
    warmup: float,
    node: NodeHandle | None,
) -> Point:
    """Warm up (its answers checked too), then time it; the warm-up's rate sizes the pool.
    The node's policy figures are read just outside the timed loop."""
    warm_requests = workload.build(max(1000, 50 * in_flight))
    warm, answers, _ = await drive(calls, warm_requests, in_flight, warmup, pids, target)
    if node is not None:
        checked = check(warm_requests, answers)
        if checked.wrong:
            raise RuntimeError(
                f"{target}: a wrong answer during the warm-up: {checked.first_wrong}"
            )
    # Sized from the warm-up's rate, but never from a warm-up the shared machine slowed
    # down: a pool used up early cuts the measurement short.
    pool = workload.build(int(max(warm.rate, MIN_RATE) * seconds * 2) + 50 * in_flight)
    before = policy_figures(node) if node is not None else Policy()
    result, answers, latencies = await drive(calls, pool, in_flight, seconds, pids, target)
    after = policy_figures(node) if node is not None else Policy()
    print(f"  {target:<6} {in_flight:>3} in flight: {result.rate:8.0f} req/s", flush=True)
    if node is None:
        return Point(result, None)
    return Point(
        result,
        check(pool, answers),
        after - before,
        tuple(by_kind(pool, latencies)),
    )


def use_opa(node: NodeHandle, url: str) -> None:
    """The node's [policy] set to decide through the OPA server at `url`."""
    toml = node.config_path.read_text()
    if 'engine = "embedded"' not in toml:
        raise RuntimeError(f'{node.config_path}: no `engine = "embedded"` to replace')
    node.config_path.write_text(
        toml.replace('engine = "embedded"', f'engine = "opa"\nopa_url = "{url}"', 1)
    )


async def check_every_combination(calls: Mapping[str, Call], workload: Workload) -> None:
    """Before measuring: each combination, hit and no-hit, and each refusal once, in turn,
    must be answered as due (an agreement the benchmark misreads fails here, plainly)."""
    requests = [workload.one(c, hit) for c in workload.combos for hit in (True, False)]
    requests += [workload.one(c, False) for c in workload.refusals]
    answers: dict[int, bytes | grpc.RpcError] = {}
    for n, r in enumerate(requests):
        try:
            answers[n] = await calls[r.peer](r.body, timeout=30.0, metadata=r.metadata)
        except grpc.RpcError as exc:
            answers[n] = exc
    checked = check(requests, answers)
    if checked.wrong:
        raise RuntimeError(f"the node answered wrongly: {checked.first_wrong}")


async def bench(
    owner: NodeHandle,
    peers: Mapping[str, NodeHandle],
    workloads: Mapping[str, Workload],
    echo_queries: Queries,
    seconds: float,
    warmup: float,
    folder: Path,
    server_cpus: set[int] | None,
    targets: Sequence[str] = TARGETS,
    engine: str = "embedded",
) -> list[Point]:
    # SIGTERM cancels the run as Ctrl-C does, so the stack below stops all it started.
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    async with contextlib.AsyncExitStack() as stack:
        node_pids = []
        if engine == "opa":  # the sidecar first: the node pushes its policy at start-up
            opa = stack.enter_context(start_opa())
            use_opa(owner, opa.url)
            node_pids.append(opa.pid)
        owner.start()
        stack.callback(owner.stop)
        owner.wait_ready(timeout=120.0)
        assert owner.process is not None
        node_pids.insert(0, owner.process.pid)
        node_calls: dict[str, Call] = {}
        for peer, handle in peers.items():  # one channel (one mTLS identity) per peer
            channel = open_channel(handle.identity(), owner.endpoint)
            stack.push_async_callback(channel.close)
            await channel.channel_ready()
            node_calls[peer] = channel.unary_unary(METHOD)
        await check_every_combination(node_calls, workloads["mixed"])
        echo_calls: dict[str, Call] = {}
        echo_pid = 0
        if "echo" in targets:
            hit = await check_node(node_calls[SINGLE.peer], echo_queries)
            echo = EchoProcess(owner, hit, folder)
            stack.callback(echo.stop)
            echo.wait_ready()
            echo_pid = echo.pid
            echo_channel = open_channel(peers[SINGLE.peer].identity(), echo.endpoint)
            stack.push_async_callback(echo_channel.close)
            await echo_channel.channel_ready()
            echo_calls[SINGLE.peer] = echo_channel.unary_unary(METHOD)
        # All stay up and take turns at each concurrency, so that a drift in the machine's
        # speed touches them alike.
        points = []
        for in_flight in CONCURRENCY:
            for target in targets:
                is_echo = target == "echo"
                pids = [echo_pid] if is_echo else node_pids
                for pid in pids:  # the node and its OPA sidecar share the server's core
                    pin(pid, server_cpus)
                points.append(
                    await measure(
                        echo_calls if is_echo else node_calls,
                        workloads["single" if is_echo else target],
                        target,
                        pids,
                        in_flight,
                        seconds,
                        warmup,
                        None if is_echo else owner,
                    )
                )
        return points


def miss_us(points: Sequence[Point], in_flight: int) -> float:
    """What one cache miss costs in `decide()` under the mixed load: its policy time less
    its hits, each costed at the single load's µs per decision (nearly all hits there)."""
    by = {p.m.target: p.policy for p in points if p.m.in_flight == in_flight}
    mixed, hit_us = by["mixed"], by["single"].us_per_decision
    if not mixed.misses:
        return float("nan")
    return (mixed.seconds * 1e6 - mixed.hits * hit_us) / mixed.misses


def report(points: Sequence[Point], combinations: int) -> bool:
    """Prints the table, the checks and the ratios; whether every answer was the one due."""
    print(
        f"\nMatch over gRPC + mTLS; client and server share {os.cpu_count()} cores (the client "
        "is this process). mixed: 3 peers, "
        f"{combinations} decision inputs (+ `now` to the second), every {REFUSAL_EVERY}th "
        "request refused by policy, the rest half hits; single: match.py's one combination, "
        "half hits\n"
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
        "cache hits",
        "misses/s",
        "policy µs/req",
        "refused",
    )
    rows = [head]
    for p in points:
        m = p.m
        rows.append(
            (
                m.target,
                str(m.in_flight),
                f"{m.rate:.0f}",
                f"{m.p50 * 1e3:.2f}",
                f"{m.p99 * 1e3:.2f}",
                f"{m.per_request_us(m.server_cpu):.0f}",
                f"{m.server_cpu / m.seconds:.2f}",
                f"{m.per_request_us(m.client_cpu):.0f}",
                "-" if p.checked is None else f"{p.policy.hit_rate:.1%}",
                "-" if p.checked is None else f"{p.policy.misses / m.seconds:.1f}",
                "-" if p.checked is None else f"{p.policy.us_per_decision:.0f}",
                "-" if p.checked is None else f"{p.checked.refusals / p.checked.answered:.1%}",
            )
        )
    print_table(rows)
    good = True
    print()
    for p in points:
        if p.m.pool_ran_out:
            print(f"note: {p.m.target} at {p.m.in_flight} in flight used up its requests")
        if p.checked is None:
            continue
        c = p.checked
        refusals = ", ".join(
            f"{o} {n}" for o, n in sorted(c.outcomes.items()) if o not in ("hit", "no_hit")
        )
        print(
            f"answers checked, {p.m.target} at {p.m.in_flight} in flight: {c.answered} "
            f"(hits {c.outcomes['hit']}, no-hits {c.outcomes['no_hit']}, refused "
            f"{c.refusals} = {c.refusals / c.answered:.1%}"
            + (f": {refusals}" if refusals else "")
            + f"), wrong {c.wrong}"
            + (f" (first: {c.first_wrong})" if c.wrong else "")
        )
        good = good and not c.wrong
    for p in points:
        # At 1 in flight only: at 64, queueing makes every kind's latency alike.
        if p.kinds and p.m.target == "mixed" and p.m.in_flight == 1:
            print(
                f"mixed at {p.m.in_flight} in flight, latency by kind of request: "
                + "; ".join(
                    f"{kind} {n}: p50 {p50 * 1e3:.2f} ms, mean {mean * 1e3:.2f} ms"
                    for kind, n, p50, mean in p.kinds
                )
            )
    by = {(p.m.target, p.m.in_flight): p.m for p in points}

    def ratio(a: str, b: str, c: int) -> float:
        return by[a, c].rate / by[b, c].rate if by[b, c].rate else float("nan")

    def cpu(a: str, c: int) -> float:
        return by[a, c].per_request_us(by[a, c].server_cpu)

    measured = {p.m.target for p in points}
    for a, b in (("mixed", "single"), ("mixed", "echo"), ("single", "echo")):
        if not {a, b} <= measured:
            continue
        print(
            f"ratio {a}/{b} throughput: "
            + ", ".join(f"{ratio(a, b, c):.2f}x at {c} in flight" for c in CONCURRENCY)
        )
    if {"mixed", "single"} <= measured:
        print(
            "ratio mixed/single server CPU per request: "
            + ", ".join(
                f"{cpu('mixed', c) / cpu('single', c):.2f}x at {c} in flight" for c in CONCURRENCY
            )
        )
    if {"mixed", "single"} <= measured:
        print(
            "policy time per cache miss (the node's decision-duration histogram, the hits' "
            "time at single's µs per decision taken off): "
            + ", ".join(f"{miss_us(points, c):.0f} µs at {c} in flight" for c in CONCURRENCY)
        )
    print(f"every answer the one due: {'yes' if good else 'NO'}")
    return good


def run(
    records: int,
    seconds: float,
    warmup: float,
    pinned: bool,
    targets: Sequence[str] = TARGETS,
    engine: str = "embedded",
) -> int:
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C (outside the loop)
    cpus = sorted(os.sched_getaffinity(0))
    client_cpus, server_cpus = ({cpus[0]}, {cpus[1]}) if pinned and len(cpus) > 1 else (None, None)
    if client_cpus is not None:
        pin(os.getpid(), client_cpus)  # before any gRPC thread exists; they inherit it
    root = Path(tempfile.mkdtemp(prefix="liaison-bench-match-mixed-"))
    agreements = AGREEMENTS[OWNER]
    try:
        print(f"Building {OWNER} (owner) and {', '.join(PEERS)} with {records} records each ...")
        started = time.perf_counter()
        # The same order as match.py's (DE-BKA, FR-DGPN): FR-DGPN holds the same records.
        ids = (PEERS[0], OWNER, *PEERS[1:])
        fed = build_federation(root / "federation", ids, AGREEMENTS, records=records)
        owner = fed.nodes[OWNER]
        peers = {p: fed.nodes[p] for p in PEERS}
        keys = {p: h.identity().signing_key for p, h in peers.items()}
        workloads = {
            "single": Workload(owner.rows, keys, [SINGLE]),
            "mixed": Workload(owner.rows, keys, allowed(agreements), refused(agreements)),
        }
        echo_queries = Queries(owner.rows, keys[SINGLE.peer])
        for handle in fed.nodes.values():
            handle.rows = []
        gc.collect()
        gc.freeze()  # the collector need not walk what setup left behind during the runs
        print(
            f"  built in {time.perf_counter() - started:.1f} s; measuring {seconds:g} s per "
            f"point after {warmup:g} s of warm-up",
            flush=True,
        )
        try:
            points = asyncio.run(
                bench(
                    owner,
                    peers,
                    workloads,
                    echo_queries,
                    seconds,
                    warmup,
                    root,
                    server_cpus,
                    targets,
                    engine,
                )
            )
        except asyncio.CancelledError:  # by SIGTERM; everything started is stopped by now
            raise SystemExit(128 + signal.SIGTERM) from None
        finally:
            signal.signal(signal.SIGTERM, raise_exit)  # the loop's handler went with it
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"grpcio {grpc.__version__}, {records} records at the node, {engine} policy engine"
        + (" (the OPA sidecar's CPU counted in the server's)" if engine == "opa" else "")
    )
    if client_cpus is not None and server_cpus is not None:
        print(
            f"pinned: client on CPU {min(client_cpus)}, the server measured on {min(server_cpus)}"
        )
    else:
        print("not pinned: the kernel places client and server threads on any core")
    mixed = workloads["mixed"]
    return 0 if report(points, len(mixed.combos) + len(mixed.refusals)) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = node_benchmark_parser(__doc__)
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="which to measure, in this order (default echo,single,mixed; e.g. only "
        "mixed while a profiler samples the node)",
    )
    parser.add_argument(
        "--engine",
        choices=("embedded", "opa"),
        default="embedded",
        help="the node's policy engine (opa: an OPA server sidecar this run starts)",
    )
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    if not targets or set(targets) - set(TARGETS):
        parser.error(f"--targets: a comma-separated list of {', '.join(TARGETS)}")
    if args.quick:
        return run(2000, 1.0, 0.3, args.pin, targets, args.engine)
    if args.records < 1 or args.seconds <= 0:
        parser.error("--records and --seconds must be positive")
    return run(args.records, args.seconds, 1.0, args.pin, targets, args.engine)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process this benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)
