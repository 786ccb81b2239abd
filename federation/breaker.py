"""A circuit breaker per peer: stop spending every caller's deadline on a peer that is down.

    closed ──(failures_to_open failures in a row)──> open
    open ──(open_for_s later, the next call is let through as a probe)──> half-open
    half-open ──(the probe answered)──> closed
    half-open ──(the probe failed)──> open (for another open_for_s)

A failure is a peer that gave no answer: unreachable, its connection reset, or no answer
within the deadline. Any answer (a hit, a refusal, even an invalid request) shows the peer
is up and closes the count. While open, a call is not sent at all and its result is
`unavailable` with reason `circuit_open`; while the probe is out, other calls are not sent
either.

The state is exposed for the caller's monitoring on a prometheus_client registry the caller
passes (the client library runs no metrics server): `liaison_client_breaker_state{peer}`
(0 closed, 1 half-open, 2 open) and `liaison_client_calls_total{peer,result}`, each
attempt counted once with its result (`answered`, `unavailable`, `timed_out`), plus
`circuit_open` for a call the breaker held back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from prometheus_client import CollectorRegistry, Counter, Gauge


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures_to_open: int = 5
    open_for_s: float = 10.0

    def __post_init__(self) -> None:
        if self.failures_to_open < 1 or self.open_for_s < 0:
            raise ValueError("failures_to_open must be at least 1 and open_for_s not negative")


class ClientMetrics:
    """The fan-out client's metrics, on the caller's registry (a private one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.breaker_state = Gauge(
            "liaison_client_breaker_state",
            "circuit breaker state per peer: 0 closed, 1 half-open, 2 open",
            ["peer"],
            registry=self.registry,
        )
        self.calls = Counter(
            "liaison_client_calls",
            "attempts to call a peer by result (answered, unavailable, timed_out), and calls "
            "the breaker held back (circuit_open)",
            ["peer", "result"],
            registry=self.registry,
        )


class CircuitBreaker:
    """One peer's breaker. Not thread-safe: used from one event loop."""

    def __init__(
        self,
        peer: str,
        settings: BreakerSettings = BreakerSettings(),
        metrics: ClientMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peer = peer
        self._settings = settings
        self._clock = clock
        self._gauge = metrics.breaker_state.labels(peer) if metrics is not None else None
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._publish()

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose time is up reads as half-open)."""
        if self._state is BreakerState.OPEN and self._time_is_up():
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may be sent now; a True in half-open makes that call the probe,
        and the caller must then report it (`record`)."""
        if self._state is BreakerState.OPEN and self._time_is_up():
            self._move(BreakerState.HALF_OPEN)
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, answered: bool) -> None:
        """The outcome of a call `allow` let through: the peer answered, or it did not."""
        probe, self._probing = self._probing, False
        if answered:
            self._failures = 0
            self._move(BreakerState.CLOSED)
            return
        self._failures += 1
        if probe or self._failures >= self._settings.failures_to_open:
            self._opened_at = self._clock()
            self._move(BreakerState.OPEN)

    def _time_is_up(self) -> bool:
        return self._clock() - self._opened_at >= self._settings.open_for_s

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self._publish()

    def _publish(self) -> None:
        if self._gauge is not None:
            self._gauge.set(int(self._state))
