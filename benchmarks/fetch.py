"""Allowed Fetch throughput and latency of a real node, as a ratio to its Match in the same
run (docs/performance.md).

A record request does all a Match does (identify, admit, decide, audit, sign) and more: it
opens the sealed reference, reads the record, applies the policy's redactions and signs the
record itself. The issue's target is that this costs little beside a Match: allowed Fetch
throughput at least 0.8x Match throughput.

One node (``liaison serve`` for FR-DGPN holding ``--records`` synthetic records), one
client (DE-BKA, one ``grpc.aio`` channel, one mTLS handshake), the same load generator as
``match.py``. At 1 and then 64 calls in flight, a phase of Match (half hits, half no-hits, as
``match.py`` asks) then a phase of allowed Fetch, each after a warm-up and for ``--seconds``.
The Fetches present references DE-BKA's own hits returned, for records FR-DGPN discloses at
once: its agreement with DE-BKA permits Fetch under a bilateral agreement, withholds one
field, and nothing in FR's policy asks a person first (no approval category, no H3 record),
so no ticket is opened. Requests, each with its own fresh envelope, are signed and
serialised before each timed loop.

A Fetch's policy input says only that it names a case (the case reference itself only under
``jit``, where a grant is named by it), so the decision cache serves Fetches as it serves
Matches: every Fetch here names a case of its own, and that costs nothing more.

    python benchmarks/fetch.py [--records 100000] [--seconds 5] [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import grpc

from federation.client import ClientIdentity, new_envelope
from federation.methods import FETCH_METHOD, MATCH_METHOD
from federation.model import FetchQuery
from federation.pki import load_signing_key
from federation.serde import fetch_answer_from_bytes, fetch_query_to_bytes, match_answer_from_bytes
from federation.signing import SIGNATURE_METADATA, request_message, sign
from federation.vocabulary import LegalBasis
from match import open_channel, pin
from match_load import CALL_TIMEOUT, HIT_SHARE, Call, Measurement, Queries, Request, measure
from measuring import node_benchmark_parser, print_table, raise_exit
from node.local.demo import WINDOW
from node.local.federation import NodeHandle, build_federation

ASKER: Final = "DE-BKA"
OWNER: Final = "FR-DGPN"
CONCURRENCY: Final = (1, 64)
TARGET_RATIO: Final = 0.8
# Distinct records the Fetches cycle through (each by the reference a hit returned).
REFERENCES: Final = 200
# FR-DGPN lets DE-BKA match and fetch travel documents, withholding FR's file reference;
# nothing in it sends a Fetch to a person.
AGREEMENTS: Final[dict[str, dict[str, Any]]] = {
    OWNER: {
        ASKER: {
            "categories": ["travel_document"],
            "purposes": ["criminal_investigation"],
            "methods": ["Match", "Fetch"],
            "legal_bases": ["none", "bilateral_agreement"],
            "redact": {"travel_document": ["reference"]},
            **WINDOW,
        }
    }
}


class Fetches:
    """Serialised FetchRequests for the references of records disclosed at once."""

    def __init__(self, references: Sequence[str], signing_key: bytes, seed: int = 2) -> None:
        self._key = load_signing_key(signing_key)
        self._references = list(references)
        self._rng = random.Random(seed)
        self._count = 0

    def one(self) -> Request:
        self._count += 1
        envelope = new_envelope(
            ASKER,
            "criminal_investigation",
            legal_basis=LegalBasis.BILATERAL_AGREEMENT,
            case_reference=f"BENCH-F-{self._count:08d}",
        )
        query = FetchQuery(envelope, record_ref=self._rng.choice(self._references))
        body = fetch_query_to_bytes(query)
        signature = sign(self._key, request_message(FETCH_METHOD, body))
        return body, ((SIGNATURE_METADATA, signature),)

    def build(self, n: int) -> list[Request]:
        return [self.one() for _ in range(n)]


def disclosed_at_once(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Document numbers of FR's travel documents its policy discloses without a person:
    no source restriction (DE could be named in it) and a marking other than H3."""
    return [
        str(r["document_number"])
        for r in rows
        if r["category"] == "travel_document"
        and not r.get("source_restrictions")
        and r.get("handling_code", "H0") != "H3"
    ][:REFERENCES]


async def references(call: Call, queries: Queries, numbers: Sequence[str]) -> list[str]:
    """What a hit on each number returned: the references DE-BKA may fetch by."""
    found: list[str] = []
    for number in numbers:
        body, metadata = queries.for_number(number)
        answer = match_answer_from_bytes(await call(body, timeout=CALL_TIMEOUT, metadata=metadata))
        if not answer.hit or not answer.record_refs:
            raise RuntimeError(f"the node answered no hit for its own document {number}")
        found.append(answer.record_refs[0])
    return found


async def check_fetch(call: Call, fetches: Fetches) -> None:
    """Every benchmark Fetch must deliver a record, not a ticket nor a refusal (either would
    flatter the node: both are cheaper than a disclosure)."""
    for _ in range(20):
        body, metadata = fetches.one()
        try:
            raw = await call(body, timeout=CALL_TIMEOUT, metadata=metadata)
        except grpc.RpcError as exc:
            raise RuntimeError(f"the node refused a benchmark Fetch: {exc}") from None
        answer = fetch_answer_from_bytes(raw)
        if answer.record is None:
            raise RuntimeError(f"the node answered a Fetch without a record: {answer.ticket}")
        if "reference" in json.loads(answer.record.payload_json):
            raise RuntimeError("the node disclosed the field its agreement withholds")


async def bench(
    owner: NodeHandle,
    identity: ClientIdentity,
    queries: Queries,
    numbers: Sequence[str],
    seconds: float,
    warmup: float,
    server_cpus: set[int] | None,
) -> list[Measurement]:
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    async with contextlib.AsyncExitStack() as stack:
        owner.start()
        stack.callback(owner.stop)
        owner.wait_ready(timeout=120.0)
        assert owner.process is not None
        pid = owner.process.pid
        pin(pid, server_cpus)
        channel = open_channel(identity, owner.endpoint)
        stack.push_async_callback(channel.close)
        await channel.channel_ready()
        match_call: Call = channel.unary_unary(MATCH_METHOD)
        fetch_call: Call = channel.unary_unary(FETCH_METHOD)
        refs = await references(match_call, queries, numbers)
        fetches = Fetches(refs, identity.signing_key)
        await check_fetch(fetch_call, fetches)
        results = []
        for in_flight in CONCURRENCY:
            for target, call, build in (
                ("match", match_call, queries.build),
                ("fetch", fetch_call, fetches.build),
            ):
                results.append(await measure(call, build, target, pid, in_flight, seconds, warmup))
        return results


def report(results: Sequence[Measurement]) -> None:
    print(
        "\nMatch, then allowed Fetch, on one node over gRPC + mTLS, one client channel; "
        f"client and server share {os.cpu_count()} cores"
    )
    print(
        f"Match queries {HIT_SHARE:.0%} hits; every Fetch delivers a record (one field "
        "withheld), each for a case of its own; server CPU per request is the figure least "
        "distorted by the shared client\n"
    )
    head = ("method", "in-flight", "req/s", "p50 ms", "p99 ms", "srv CPU µs/req", "errors")
    rows = [head] + [
        (
            m.target,
            str(m.in_flight),
            f"{m.rate:.0f}",
            f"{m.p50 * 1e3:.2f}",
            f"{m.p99 * 1e3:.2f}",
            f"{m.per_request_us(m.server_cpu):.0f}",
            str(m.errors),
        )
        for m in results
    ]
    print_table(rows)
    for m in results:
        if m.pool_ran_out:
            print(f"note: {m.target} at {m.in_flight} in flight used up its pre-built requests")
    by = {(m.target, m.in_flight): m for m in results}
    rate = {c: by["fetch", c].rate / by["match", c].rate for c in CONCURRENCY}
    p99 = {c: by["fetch", c].p99 / by["match", c].p99 for c in CONCURRENCY}
    print(
        "\nratio Fetch/Match throughput: "
        + ", ".join(f"{rate[c]:.2f}x at {c} in flight" for c in CONCURRENCY)
    )
    print(
        "ratio Fetch/Match p99 latency: "
        + ", ".join(f"{p99[c]:.2f}x at {c} in flight" for c in CONCURRENCY)
    )
    met = all(r >= TARGET_RATIO for r in rate.values())
    print(
        f"target Fetch >= {TARGET_RATIO}x Match throughput: {'met' if met else 'NOT met'} ("
        + "; ".join(
            f"{c} in flight: {'yes' if rate[c] >= TARGET_RATIO else 'no'}" for c in CONCURRENCY
        )
        + ")"
    )


def run(records: int, seconds: float, warmup: float, pinned: bool) -> int:
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C (outside the loop)
    cpus = sorted(os.sched_getaffinity(0))
    client_cpus, server_cpus = ({cpus[0]}, {cpus[1]}) if pinned and len(cpus) > 1 else (None, None)
    if client_cpus is not None:
        pin(os.getpid(), client_cpus)  # before any gRPC thread exists; they inherit it
    root = Path(tempfile.mkdtemp(prefix="liaison-bench-fetch-"))
    try:
        print(f"Building {ASKER} and {OWNER} with {records} records each in {root} ...", flush=True)
        fed = build_federation(root / "federation", (ASKER, OWNER), AGREEMENTS, records=records)
        owner = fed.nodes[OWNER]
        identity = fed.nodes[ASKER].identity()
        queries = Queries(owner.rows, identity.signing_key)
        numbers = disclosed_at_once(owner.rows)
        for handle in fed.nodes.values():
            handle.rows = []
        gc.collect()
        gc.freeze()
        print(f"  measuring {seconds:g} s per point after {warmup:g} s of warm-up", flush=True)
        try:
            results = asyncio.run(
                bench(owner, identity, queries, numbers, seconds, warmup, server_cpus)
            )
        except asyncio.CancelledError:  # by SIGTERM; everything started is stopped by now
            raise SystemExit(128 + signal.SIGTERM) from None
        finally:
            signal.signal(signal.SIGTERM, raise_exit)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"grpcio {grpc.__version__}, {records} records at the node, Fetches over "
        f"{len(numbers)} records; "
        + ("pinned: client and server on one core each" if server_cpus else "not pinned")
    )
    report(results)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = node_benchmark_parser(__doc__, servers="the server")
    args = parser.parse_args(argv)
    if args.quick:
        return run(2000, 1.0, 0.3, args.pin)
    if args.records < 1 or args.seconds <= 0:
        parser.error("--records and --seconds must be positive")
    return run(args.records, args.seconds, 1.0, args.pin)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process this benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)
