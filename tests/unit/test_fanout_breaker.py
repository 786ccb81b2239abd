"""The circuit breaker's states and the retry policy's choices, on their own."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from federation.breaker import BreakerSettings, BreakerState, CircuitBreaker, ClientMetrics
from federation.errors import InvalidRequest, PeerError, PeerRefused, PeerUnavailable
from federation.retry import NO_RETRY, RetryPolicy


class Tick:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(
    failures: int = 3, open_for: float = 10.0
) -> tuple[CircuitBreaker, Tick, ClientMetrics]:
    tick = Tick()
    metrics = ClientMetrics(CollectorRegistry())
    return (
        CircuitBreaker("FR-PN", BreakerSettings(failures, open_for), metrics, tick),
        tick,
        metrics,
    )


def state(b: CircuitBreaker) -> BreakerState:
    """Read through a call, so that each reading is a new one (not narrowed by the last)."""
    return b.state


def gauge(metrics: ClientMetrics) -> float | None:
    return metrics.registry.get_sample_value("liaison_client_breaker_state", {"peer": "FR-PN"})


def test_opens_after_failures_in_a_row_and_an_answer_resets_the_count() -> None:
    b, _, metrics = breaker(failures=3)
    assert gauge(metrics) == 0
    for answered in (False, False, True, False, False):
        assert b.allow()
        b.record(answered)
    assert state(b) is BreakerState.CLOSED
    assert b.allow()
    b.record(False)
    assert state(b) is BreakerState.OPEN and gauge(metrics) == 2
    assert not b.allow()


def test_half_open_lets_one_probe_through_at_a_time() -> None:
    b, tick, metrics = breaker(failures=1, open_for=10.0)
    b.allow()
    b.record(False)
    tick.now += 9.9
    assert not b.allow()
    tick.now += 0.1
    assert state(b) is BreakerState.HALF_OPEN
    assert b.allow()  # the probe
    assert gauge(metrics) == 1
    assert not b.allow()  # no second call while the probe is out
    b.record(False)  # the probe failed: open for another wait
    assert state(b) is BreakerState.OPEN
    tick.now += 10.0
    assert b.allow()
    b.record(True)
    assert state(b) is BreakerState.CLOSED and gauge(metrics) == 0
    assert b.allow() and b.allow()


def test_a_breaker_without_metrics_still_works() -> None:
    b = CircuitBreaker("FR-PN", BreakerSettings(1, 5.0), None, lambda: 0.0)
    b.allow()
    b.record(False)
    assert state(b) is BreakerState.OPEN


@pytest.mark.parametrize("bad", [{"failures_to_open": 0}, {"open_for_s": -1.0}])
def test_breaker_settings_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerSettings(**bad)  # type: ignore[arg-type]


UNAVAILABLE = PeerUnavailable("FR-PN", "reset", ("unreachable",), "UNAVAILABLE")


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (UNAVAILABLE, True),
        (
            PeerUnavailable("FR-PN", "policy engine down", ("policy_unavailable",), "UNAVAILABLE"),
            True,
        ),
        (PeerUnavailable("FR-PN", "late", ("deadline_exceeded",), "DEADLINE_EXCEEDED"), False),
        (PeerUnavailable("FR-PN", "held back", ("circuit_open",), "UNAVAILABLE"), False),
        (PeerRefused("FR-PN", "no", ("no_agreement",), "PERMISSION_DENIED"), False),
        (PeerRefused("FR-PN", "who?", (), "UNAUTHENTICATED"), False),
        (InvalidRequest("FR-PN", "bad", (), "INVALID_ARGUMENT"), False),
        (InvalidRequest("FR-PN", "gone", (), "NOT_FOUND"), False),
        (InvalidRequest("FR-PN", "stale", (), "FAILED_PRECONDITION"), False),
        (InvalidRequest("FR-PN", "too big", (), "RESOURCE_EXHAUSTED"), False),
        (PeerError("FR-PN", "oops", (), "INTERNAL"), False),
    ],
)
def test_only_a_transient_failure_of_an_idempotent_call_is_retried(
    exc: PeerUnavailable, retryable: bool
) -> None:
    policy = RetryPolicy()
    assert policy.retryable(exc, idempotent=True) is retryable
    assert policy.retryable(exc, idempotent=False) is False  # e.g. Fetch: never


def test_backoff_is_jittered_within_an_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=0.1, cap_s=0.5)
    rng = random.Random(1)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)):
        waits = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8 and min(waits) < ceiling * 0.2  # spread, not fixed


def test_no_wait_when_out_of_attempts_or_of_time() -> None:
    policy = RetryPolicy(max_attempts=3, base_s=0.1, cap_s=0.1, min_attempt_s=0.05)
    rng = random.Random(2)
    wait = policy.next_wait(UNAVAILABLE, 1, remaining=1.0, rng=rng, idempotent=True)
    assert wait is not None and 0 <= wait <= 0.1
    assert policy.next_wait(UNAVAILABLE, 3, remaining=1.0, rng=rng, idempotent=True) is None
    assert policy.next_wait(UNAVAILABLE, 1, remaining=0.05, rng=rng, idempotent=True) is None
    assert NO_RETRY.next_wait(UNAVAILABLE, 1, remaining=1.0, rng=rng, idempotent=True) is None


def test_a_retry_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_s=-1)
