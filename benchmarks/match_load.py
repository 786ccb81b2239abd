"""The match benchmark's load generator: signed MatchRequests built before the timed loop
(half hits, half no-hits), a fixed number of calls kept in flight on one channel (or spread
in turn over several: one per connection, for servers of several processes), and what one
measurement yields (rate, latency percentiles, server and client CPU).

Imported by ``match.py`` as a sibling module (``python benchmarks/match.py``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import grpc

from federation.client import match_query, new_envelope
from federation.pki import load_signing_key
from federation.serde import match_query_to_bytes
from federation.signing import SIGNATURE_METADATA, request_message, sign
from match_echo import METHOD
from measuring import percentiles, process_cpu

ASKER: Final = "DE-BKA"
HIT_SHARE: Final = 0.5
CALL_TIMEOUT: Final = 30.0


# Raw bytes in and out, no (de)serialiser: the client only sends what was built beforehand.
Call: TypeAlias = "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]"
# A serialised request and the metadata that carries its signature.
Request: TypeAlias = tuple[bytes, tuple[tuple[str, bytes], ...]]


@dataclass(frozen=True)
class Measurement:
    target: str
    in_flight: int
    requests: int
    errors: int
    seconds: float
    p50: float
    p99: float
    server_cpu: float  # seconds, all threads of every process of the server
    client_cpu: float  # seconds, this process
    pool_ran_out: bool

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def per_request_us(self, cpu: float) -> float:
        return cpu / self.requests * 1e6 if self.requests else float("nan")


# --- the load generator --------------------------------------------------------------------


class Queries:
    """Serialised MatchRequests, half hits (the owner's document numbers), half no-hits."""

    def __init__(
        self, owner_rows: Sequence[dict[str, Any]], signing_key: bytes, seed: int = 1
    ) -> None:
        self._key = load_signing_key(signing_key)
        # A record whose source restricts it from the asker is a no-hit for it (its
        # existence is not disclosed), so it is no hit to ask about.
        self.hits = [
            str(r["document_number"])
            for r in owner_rows
            if r["category"] == "travel_document"
            and ASKER[:2] not in r.get("source_restrictions", ())
        ]
        if not self.hits:
            raise ValueError("the owner holds no travel documents to ask about")
        self._rng = random.Random(seed)
        self._count = 0

    def one(self, hit: bool) -> Request:
        number = self._rng.choice(self.hits) if hit else f"ZZFAKE{self._rng.randrange(10**9):09d}"
        return self.for_number(number)

    def for_number(self, number: str) -> Request:
        """A signed request for this document number (benchmarks/fetch.py collects the
        references its hits return)."""
        self._count += 1
        env = new_envelope(
            ASKER, "criminal_investigation", case_reference=f"BENCH-{self._count:08d}"
        )
        query = match_query(env, "travel_document", [("document_number", number)])
        body = match_query_to_bytes(query)
        # Signed like every real request: the node refuses unsigned ones.
        signature = sign(self._key, request_message(METHOD, body))
        return body, ((SIGNATURE_METADATA, signature),)

    def build(self, n: int) -> list[Request]:
        """``n`` requests, each with its own fresh envelope (nonce and issue time)."""
        return [self.one(self._rng.random() < HIT_SHARE) for _ in range(n)]


def servers_cpu(pids: Sequence[int]) -> float:
    """CPU seconds of every process of a server (a supervisor and its workers)."""
    return sum(process_cpu(pid) for pid in pids)


async def drive(
    call: Call | Sequence[Call],
    requests: Sequence[Request],
    in_flight: int,
    seconds: float,
    pid: int | Sequence[int],
    target: str,
) -> Measurement:
    """Keep ``in_flight`` calls going until ``seconds`` pass or the requests run out; with
    several ``call``s (one per channel), each request takes the next in turn. ``pid``: the
    server's process, or all of them (their CPU is summed)."""
    calls = [call] if callable(call) else list(call)
    pids = [pid] if isinstance(pid, int) else list(pid)
    latencies: list[float] = []
    errors = 0
    cursor = 0
    clock = time.perf_counter
    deadline = clock() + seconds

    async def worker() -> None:
        nonlocal cursor, errors
        while cursor < len(requests) and clock() < deadline:
            body, metadata = requests[cursor]
            channel = calls[cursor % len(calls)]
            cursor += 1
            started = clock()
            try:
                await channel(body, timeout=CALL_TIMEOUT, metadata=metadata)
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(clock() - started)

    server0, client0, started = servers_cpu(pids), time.process_time(), clock()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = clock() - started
    server_cpu, client_cpu = servers_cpu(pids) - server0, time.process_time() - client0
    p50, p99 = percentiles(latencies, 0.50, 0.99)
    return Measurement(
        target,
        in_flight,
        len(latencies),
        errors,
        elapsed,
        p50,
        p99,
        server_cpu,
        client_cpu,
        pool_ran_out=cursor >= len(requests),
    )


async def measure(
    call: Call | Sequence[Call],
    build: Callable[[int], list[Request]],
    target: str,
    pid: int | Sequence[int],
    in_flight: int,
    seconds: float,
    warmup: float,
) -> Measurement:
    """Warm up at ``in_flight``, then time it; the warm-up's rate sizes the request pool."""
    warm = await drive(call, build(max(2000, 50 * in_flight)), in_flight, warmup, pid, target)
    if warm.errors:
        raise RuntimeError(f"{target}: {warm.errors} calls failed during the warm-up")
    pool = build(int(warm.rate * seconds * 2) + 50 * in_flight)
    result = await drive(call, pool, in_flight, seconds, pid, target)
    print(f"  {target:<5} {in_flight:>3} in flight: {result.rate:8.0f} req/s", flush=True)
    return result
