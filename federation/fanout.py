"""Ask many peers at once, each within one shared deadline, and keep every partial result.

A slow or broken peer never hides the answers of the others, and nothing a peer does makes
this raise: each peer's outcome is one of hit, no-hit, refused (with reasons), invalid,
unavailable, timed-out or error (`Outcome`). The fan-out returns at the deadline at the
latest (plus the few milliseconds it takes to cancel what is still out); each call carries
the time that remains, so the peer knows it too (gRPC sends it as `grpc-timeout`).

A call that fails transiently is asked again (`federation.retry`) as a new request with a
new nonce, built by `make_query` for each attempt, within the same deadline; a peer whose
breaker is open is not asked (`federation.breaker`). `FanoutClient`
(`federation.fanout_client`) holds those across calls, with one channel per peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from federation.breaker import CircuitBreaker, ClientMetrics
from federation.client import MatchTransport
from federation.errors import (
    InvalidRequest,
    LiaisonError,
    PeerRefused,
    PeerUnavailable,
)
from federation.model import MatchAnswer, MatchQuery
from federation.retry import NO_RETRY, RetryPolicy

# How long after the deadline a call still out is given before it is cancelled: its own
# gRPC deadline fires at the deadline, and this lets that (a proper DEADLINE_EXCEEDED)
# rather than the cancellation end it.
CANCEL_GRACE_S = 0.01


class Outcome(StrEnum):
    HIT = "hit"
    NO_HIT = "no-hit"
    REFUSED = "refused"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"
    TIMED_OUT = "timed-out"
    ERROR = "error"

    @property
    def answered(self) -> bool:
        """Whether the peer answered (a refusal and an invalid request are answers too)."""
        return self not in (Outcome.UNAVAILABLE, Outcome.TIMED_OUT, Outcome.ERROR)


@dataclass(frozen=True, slots=True)
class PeerResult:
    peer: str
    outcome: Outcome
    elapsed_ms: float
    answer: MatchAnswer | None = None
    reasons: tuple[str, ...] = ()
    message: str = ""
    # Requests sent to the peer (each with its own nonce); 0 when none was sent.
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class FanoutResult:
    """One result per peer asked, in the order they were named, and the time it all took
    as the fan-out measured it."""

    results: tuple[PeerResult, ...]
    elapsed_ms: float

    def __iter__(self) -> Iterator[PeerResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> PeerResult:
        return self.results[index]

    def by_peer(self) -> dict[str, PeerResult]:
        return {r.peer: r for r in self.results}

    @property
    def all_answered(self) -> bool:
        return all(r.outcome.answered for r in self.results)


def outcome_of(exc: LiaisonError) -> Outcome:
    if isinstance(exc, PeerRefused):
        return Outcome.REFUSED
    if isinstance(exc, PeerUnavailable):
        return Outcome.TIMED_OUT if exc.status == "DEADLINE_EXCEEDED" else Outcome.UNAVAILABLE
    if isinstance(exc, InvalidRequest):
        return Outcome.INVALID
    return Outcome.ERROR


def _breaker_result(outcome: Outcome) -> str:
    if outcome is Outcome.TIMED_OUT:
        return "timed_out"
    return "unavailable" if outcome is Outcome.UNAVAILABLE else "answered"


@dataclass
class _Progress:
    """What one peer's task has done so far, readable when it is cancelled."""

    started: float
    attempts: int = 0
    last: PeerResult | None = None


@dataclass
class Fanout:
    """One fan-out's shared settings: the deadline, retries, breakers, the limit on calls
    in flight, and where each result goes as soon as it is known."""

    deadline: float
    clock: Callable[[], float] = time.monotonic
    retry: RetryPolicy = NO_RETRY
    breakers: Callable[[str], CircuitBreaker | None] = lambda _peer: None
    limiter: asyncio.Semaphore | None = None
    metrics: ClientMetrics | None = None
    on_result: Callable[[PeerResult], None] | None = None
    rng: random.Random = field(default_factory=random.Random)
    idempotent: bool = True

    def _count(self, peer: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.calls.labels(peer, result).inc()

    def _result(
        self,
        t: MatchTransport,
        p: _Progress,
        outcome: Outcome,
        answer: MatchAnswer | None = None,
        reasons: tuple[str, ...] = (),
        message: str = "",
    ) -> PeerResult:
        elapsed = (self.clock() - p.started) * 1000
        return PeerResult(t.peer, outcome, elapsed, answer, reasons, message, p.attempts)

    def _timed_out(self, t: MatchTransport, p: _Progress) -> PeerResult:
        reasons = ("deadline_exceeded",)
        return self._result(t, p, Outcome.TIMED_OUT, None, reasons, "no answer within deadline")

    async def ask(
        self, t: MatchTransport, make_query: Callable[[MatchTransport], MatchQuery], p: _Progress
    ) -> PeerResult:
        """Ask one peer, attempt after attempt while a retry is allowed."""
        async with self.limiter or contextlib.nullcontext():
            while True:
                result, wait = await self._attempt(t, make_query, p)
                p.last = result
                if wait is None:
                    return result
                await asyncio.sleep(wait)

    async def _attempt(
        self, t: MatchTransport, make_query: Callable[[MatchTransport], MatchQuery], p: _Progress
    ) -> tuple[PeerResult, float | None]:
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            return self._timed_out(t, p), None
        breaker = self.breakers(t.peer)
        if breaker is not None and not breaker.allow():
            self._count(t.peer, "circuit_open")
            if p.last is not None:  # a retry the breaker now holds back: the last failure
                return p.last, None
            return self._result(
                t,
                p,
                Outcome.UNAVAILABLE,
                reasons=("circuit_open",),
                message="not asked: it failed repeatedly; asked again once its breaker's "
                "wait is over",
            ), None
        p.attempts += 1
        try:
            answer = await t.match(make_query(t), remaining)
        except asyncio.CancelledError:
            self._settle(breaker, t.peer, Outcome.TIMED_OUT)
            raise
        except LiaisonError as exc:
            outcome = outcome_of(exc)
            self._settle(breaker, t.peer, outcome)
            result = self._result(t, p, outcome, reasons=exc.reasons, message=exc.message)
            wait = self.retry.next_wait(
                exc, p.attempts, self.deadline - self.clock(), self.rng, self.idempotent
            )
            return result, wait
        except Exception as exc:  # one broken transport must not hide the other peers' answers
            self._settle(breaker, t.peer, Outcome.ERROR)
            return self._result(
                t,
                p,
                Outcome.ERROR,
                reasons=("client_error",),
                message=f"{type(exc).__name__}: {exc}",
            ), None
        self._settle(breaker, t.peer, Outcome.HIT)
        outcome = Outcome.HIT if answer.hit else Outcome.NO_HIT
        return self._result(t, p, outcome, answer=answer), None

    def _settle(self, breaker: CircuitBreaker | None, peer: str, outcome: Outcome) -> None:
        result = _breaker_result(outcome)
        self._count(peer, result)
        if breaker is not None:
            breaker.record(result == "answered")

    async def run(
        self,
        transports: Sequence[MatchTransport],
        make_query: Callable[[MatchTransport], MatchQuery],
    ) -> FanoutResult:
        """Every transport asked concurrently; results in the transports' order."""
        started = self.clock()
        progress = [_Progress(started) for _ in transports]
        tasks = [
            asyncio.ensure_future(self._reported(t, make_query, p))
            for t, p in zip(transports, progress, strict=True)
        ]
        try:
            if tasks:
                await asyncio.wait(
                    tasks, timeout=max(0.0, self.deadline - self.clock()) + CANCEL_GRACE_S
                )
        finally:  # at the deadline, or when the caller is cancelled: nothing left running
            for task in tasks:
                task.cancel()
        results = []
        for task, t, p in zip(tasks, transports, progress, strict=True):
            try:
                results.append(await task)
            except asyncio.CancelledError:  # still out at the deadline: given up
                result = self._timed_out(t, p)
                self._report(result)
                results.append(result)
        return FanoutResult(tuple(results), (self.clock() - started) * 1000)

    async def _reported(
        self, t: MatchTransport, make_query: Callable[[MatchTransport], MatchQuery], p: _Progress
    ) -> PeerResult:
        result = await self.ask(t, make_query, p)
        self._report(result)
        return result

    def _report(self, result: PeerResult) -> None:
        if self.on_result is not None:
            self.on_result(result)


async def match_all(
    transports: Sequence[MatchTransport],
    make_query: Callable[[MatchTransport], MatchQuery],
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[PeerResult]:
    """Query every transport concurrently, once each, no retries and no breakers; results
    come back in the transports' order. `make_query` builds each peer's query so that
    every peer gets its own nonce. (`FanoutClient` adds the rest.)"""
    fanout = Fanout(deadline=clock() + timeout, clock=clock)
    return list(await fanout.run(transports, make_query))
