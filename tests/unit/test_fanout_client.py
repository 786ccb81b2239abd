"""The fan-out client over in-memory twins of its peers: retries as new requests, within the
deadline and only when transient; the breaker; the limit on calls in flight; one transport
per peer; the caller's mistakes; the blocking twin of the client; its metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from federation.breaker import BreakerSettings
from federation.client import ClientIdentity
from federation.directory import Member, MemberStatus
from federation.errors import BadQuery, CallerError, ClientClosed, LiaisonError, UnknownPeer
from federation.fanout import FanoutResult, Outcome, PeerResult
from federation.fanout_client import ALL, BlockingFanoutClient, FanoutClient
from federation.retry import RetryPolicy
from tests.unit.fanout_twins import TwinTransport, query

ME = "DE-BKA"
FAST_RETRY = RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.002, min_attempt_s=0.01)


def member(node_id: str, **kw: object) -> Member:
    return Member(node_id, "127.0.0.1:1", "0" * 64, "0" * 64, **kw)  # type: ignore[arg-type]


IDENTITY = ClientIdentity(ME, "liaison.example", b"")


class Clock:
    """A clock the test moves (for the breaker's wait), on top of the real one (for the
    deadlines the event loop waits out)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def client_for(
    twins: Sequence[TwinTransport],
    members: Sequence[Member] = (),
    connects: list[str] | None = None,
    **options: object,
) -> FanoutClient:
    by_peer = {t.peer: t for t in twins}

    def connect(m: Member) -> TwinTransport:
        if connects is not None:
            connects.append(m.node_id)
        return by_peer[m.node_id]

    everyone = [member(ME), *(member(t.peer) for t in twins), *members]
    return FanoutClient(IDENTITY, everyone, connect=connect, **options)  # type: ignore[arg-type]


_runner: list[asyncio.Runner] = []


@pytest.fixture(autouse=True)
def one_loop() -> Iterator[None]:
    """One event loop for each test: a client belongs to the loop it was first used on."""
    with asyncio.Runner() as runner:
        _runner.append(runner)
        yield
        _runner.clear()


def ask(
    client: FanoutClient,
    peers: Sequence[str] | object = ALL,
    deadline: float = 1.0,
    on_result: Callable[[PeerResult], None] | None = None,
) -> FanoutResult:
    async def run() -> FanoutResult:
        return await client.match(query(), peers, deadline, on_result)  # type: ignore[arg-type]

    return _runner[0].run(run())


def test_a_transient_failure_is_asked_again_as_a_new_request() -> None:
    twin = TwinTransport("FR-PN", script=["unavailable", "unavailable", "hit"])
    [result] = ask(client_for([twin], retry=FAST_RETRY))
    assert result.outcome is Outcome.HIT
    assert result.attempts == 3
    assert len(set(twin.nonces)) == 3 and b"" not in twin.nonces  # never the template's
    assert all(q.envelope.issued_at is not None for q, _ in twin.seen)
    # Each attempt is told the time that remains, less than the one before.
    timeouts = [t for _, t in twin.seen]
    assert timeouts == sorted(timeouts, reverse=True) and timeouts[0] <= 1.0


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [
        ("refuse", Outcome.REFUSED),
        ("invalid", Outcome.INVALID),
        ("exhausted", Outcome.INVALID),
        ("deadline", Outcome.TIMED_OUT),
        ("error", Outcome.ERROR),
        ("crash", Outcome.ERROR),
    ],
)
def test_what_is_not_transient_is_asked_once(behaviour: str, outcome: Outcome) -> None:
    twin = TwinTransport("FR-PN", behaviour)
    [result] = ask(client_for([twin], retry=FAST_RETRY))
    assert (result.outcome, result.attempts, len(twin.seen)) == (outcome, 1, 1)


def test_retries_stop_after_max_attempts() -> None:
    twin = TwinTransport("FR-PN", "unavailable")
    [result] = ask(client_for([twin], retry=FAST_RETRY))
    assert result.outcome is Outcome.UNAVAILABLE
    assert result.reasons == ("unreachable",)
    assert result.attempts == len(twin.seen) == 3


def test_retries_never_go_past_the_deadline() -> None:
    # Each attempt fails after 40 ms and would be retried without end: the deadline ends it.
    twin = TwinTransport("FR-PN", "unavailable", delay=0.04)
    retry = RetryPolicy(max_attempts=1000, base_s=0.01, cap_s=0.02, min_attempt_s=0.01)
    deadline = 0.3
    client = client_for([twin], retry=retry, breaker=BreakerSettings(failures_to_open=1000))
    started = time.monotonic()
    [result] = ask(client, deadline=deadline)
    elapsed = time.monotonic() - started
    assert result.outcome in (Outcome.UNAVAILABLE, Outcome.TIMED_OUT)
    assert 2 <= result.attempts < 1000
    assert result.elapsed_ms <= deadline * 1000 + 50
    assert elapsed < deadline + 1.0  # slack for a loaded machine, not a speed claim
    assert all(timeout <= deadline for _, timeout in twin.seen)


def test_a_peer_that_keeps_failing_opens_its_breaker_then_is_probed() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    twin = TwinTransport("FR-PN", "unavailable")
    client = client_for(
        [twin],
        retry=RetryPolicy(max_attempts=1),
        breaker=BreakerSettings(failures_to_open=2, open_for_s=5.0),
        registry=registry,
        clock=clock,
    )

    def state() -> float | None:
        return registry.get_sample_value("liaison_client_breaker_state", {"peer": "FR-PN"})

    assert [r.outcome for r in ask(client)] == [Outcome.UNAVAILABLE]
    assert state() == 0
    ask(client)
    assert state() == 2  # open: the next call is not sent
    [held] = ask(client)
    assert (held.outcome, held.reasons, held.attempts) == (
        Outcome.UNAVAILABLE,
        ("circuit_open",),
        0,
    )
    assert len(twin.seen) == 2
    clock.offset += 5.0  # its wait is over: one probe, which fails: open again
    [probe] = ask(client)
    assert probe.attempts == 1 and probe.reasons == ("unreachable",)
    assert state() == 2
    [held] = ask(client)
    assert held.reasons == ("circuit_open",)
    clock.offset += 5.0
    twin.behaviour = "no-hit"  # it is back: the probe answers, the breaker closes
    assert [r.outcome for r in ask(client)] == [Outcome.NO_HIT]
    assert state() == 0
    calls = {
        result: registry.get_sample_value(
            "liaison_client_calls_total", {"peer": "FR-PN", "result": result}
        )
        for result in ("answered", "unavailable", "circuit_open")
    }
    assert calls == {"answered": 1, "unavailable": 3, "circuit_open": 2}


def test_a_retry_the_breaker_holds_back_reports_the_failure() -> None:
    twin = TwinTransport("FR-PN", "unavailable")
    client = client_for([twin], retry=FAST_RETRY, breaker=BreakerSettings(failures_to_open=2))
    [result] = ask(client)
    assert (result.outcome, result.reasons, result.attempts) == (
        Outcome.UNAVAILABLE,
        ("unreachable",),
        2,
    )


def test_calls_in_flight_stay_within_the_limit() -> None:
    in_flight = [0, 0]  # now, most

    class Counted(TwinTransport):
        async def match(self, q: object, timeout: float) -> object:  # type: ignore[override]
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
            try:
                return await super().match(q, timeout)  # type: ignore[arg-type]
            finally:
                in_flight[0] -= 1

    twins = [Counted(f"P{i}-X", delay=0.02) for i in range(6)]
    results = ask(client_for(twins, max_in_flight=2), deadline=5.0)
    assert [r.outcome for r in results] == [Outcome.HIT] * 6
    assert in_flight[1] == 2


def test_one_transport_per_peer_reused_across_calls_and_closed_with_the_client() -> None:
    connects: list[str] = []
    twins = [TwinTransport("FR-PN"), TwinTransport("NL-KMAR")]
    client = client_for(twins, connects=connects)

    async def run() -> None:
        for _ in range(3):
            await client.match(query(), ALL, 1.0)
        await client.close()

    asyncio.run(run())
    assert sorted(connects) == ["FR-PN", "NL-KMAR"]
    assert all(t.closed for t in twins)
    with pytest.raises(ClientClosed):
        ask(client)


def test_a_client_belongs_to_the_loop_it_was_first_used_on() -> None:
    client = client_for([TwinTransport("FR-PN")])
    assert [r.outcome for r in ask(client)] == [Outcome.HIT]
    with pytest.raises(BadQuery, match="BlockingFanoutClient"):
        asyncio.run(client.match(query(), ALL, 1.0))


def test_all_is_every_active_node_but_this_one() -> None:
    twins = [TwinTransport("FR-PN"), TwinTransport("NL-KMAR")]
    others = [
        member("EU-EDPS", roles=("overseer",)),
        member("IT-CC", status=MemberStatus.SUSPENDED),
    ]
    client = client_for(twins, others)
    assert client.all_peers == ("FR-PN", "NL-KMAR")
    assert [r.peer for r in ask(client)] == ["FR-PN", "NL-KMAR"]
    assert [r.peer for r in ask(client, ["NL-KMAR"])] == ["NL-KMAR"]


@pytest.mark.parametrize(
    ("peers", "deadline", "change", "error", "words"),
    [
        (["XX-NOBODY"], 1.0, {}, UnknownPeer, "not in the directory"),
        (["EU-EDPS"], 1.0, {}, UnknownPeer, "overseer"),
        ([ME], 1.0, {}, UnknownPeer, "this node itself"),
        ("FR-PN", 1.0, {}, BadQuery, "not one string"),
        (ALL, 0.0, {}, BadQuery, "positive number of seconds"),
        (ALL, 1.0, {"identifiers": ()}, BadQuery, "at least one identifier"),
        (ALL, 1.0, {"requester": "FR-PN"}, BadQuery, "requester_mismatch"),
    ],
)
def test_the_callers_mistakes_raise_before_anything_is_sent(
    peers: object, deadline: float, change: dict[str, object], error: type, words: str
) -> None:
    twin = TwinTransport("FR-PN")
    client = client_for([twin], [member("EU-EDPS", roles=("overseer",))])
    q = query(requester=str(change.get("requester", ME)))
    if "identifiers" in change:
        q = replace(q, identifiers=())
    with pytest.raises(error) as raised:
        asyncio.run(client.match(q, peers, deadline))  # type: ignore[arg-type]
    assert isinstance(raised.value, CallerError) and isinstance(raised.value, LiaisonError)
    assert words in str(raised.value)
    assert twin.seen == []


def test_results_are_reported_as_they_come() -> None:
    twins = [TwinTransport("FR-PN", delay=0.1), TwinTransport("NL-KMAR", "refuse")]
    seen: list[str] = []
    results = ask(client_for(twins), on_result=lambda r: seen.append(r.peer))
    assert seen == ["NL-KMAR", "FR-PN"]  # as they answered
    assert [r.peer for r in results] == ["FR-PN", "NL-KMAR"]  # as they were named
    assert results.elapsed_ms >= 90
    assert results.all_answered  # a refusal is an answer
    assert results.by_peer()["NL-KMAR"].outcome is Outcome.REFUSED


def test_a_timed_out_peer_is_reported_once_too() -> None:
    twins = [TwinTransport("FR-PN", delay=5.0), TwinTransport("NL-KMAR")]
    seen: list[PeerResult] = []
    results = ask(client_for(twins), deadline=0.2, on_result=seen.append)
    assert sorted(r.peer for r in seen) == ["FR-PN", "NL-KMAR"]
    assert results.by_peer()["FR-PN"].outcome is Outcome.TIMED_OUT
    assert twins[0].cancelled
    assert not results.all_answered


def test_the_blocking_client_from_code_without_an_event_loop() -> None:
    twins = [TwinTransport("FR-PN"), TwinTransport("NL-KMAR", "no-hit")]
    everyone = [member(ME), *(member(t.peer) for t in twins)]
    by_peer = {t.peer: t for t in twins}
    seen: list[str] = []
    with BlockingFanoutClient(IDENTITY, everyone, connect=lambda m: by_peer[m.node_id]) as client:
        first = client.match(query(), ALL, 1.0, on_result=lambda r: seen.append(r.peer))
        second = client.match(query(), ["NL-KMAR"], 1.0)
        assert client.all_peers == ("FR-PN", "NL-KMAR")
        with pytest.raises(UnknownPeer):
            client.match(query(), ["XX-NOBODY"])
    assert [r.outcome for r in first] == [Outcome.HIT, Outcome.NO_HIT]
    assert [r.outcome for r in second] == [Outcome.NO_HIT]
    assert sorted(seen) == ["FR-PN", "NL-KMAR"]
    assert all(t.closed for t in twins)
    with pytest.raises(ClientClosed):
        client.match(query())
