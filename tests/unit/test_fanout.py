"""Fan-out over an in-memory twin of the peer transport: every outcome, order, deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest

from federation.client import MatchTransport
from federation.fanout import Outcome, PeerResult, match_all
from federation.model import MatchAnswer, MatchQuery
from tests.unit.fanout_twins import TwinTransport, query


def _transport(t: TwinTransport) -> MatchTransport:
    return t


def _query_for(t: MatchTransport) -> MatchQuery:
    return query(nonce=f"nonce-for-{t.peer}".encode())


def _run(transports: list[TwinTransport], timeout: float = 1.0) -> list[PeerResult]:
    return asyncio.run(match_all([_transport(t) for t in transports], _query_for, timeout))


def test_every_outcome_in_the_transports_order() -> None:
    twins = [
        TwinTransport("FR-PN", "hit", delay=0.03),
        TwinTransport("NL-KMAR", "no-hit"),
        TwinTransport("IT-CC", "refuse", delay=0.01),
        TwinTransport("ES-PN", "unavailable"),
        TwinTransport("PL-KGP", "invalid", delay=0.02),
        TwinTransport("AT-BK", "error"),
        TwinTransport("BE-FPJ", "deadline"),
    ]
    results = _run(twins)
    assert [r.peer for r in results] == [t.peer for t in twins]
    assert [r.outcome for r in results] == [
        Outcome.HIT,
        Outcome.NO_HIT,
        Outcome.REFUSED,
        Outcome.UNAVAILABLE,
        Outcome.INVALID,
        Outcome.ERROR,
        Outcome.TIMED_OUT,
    ]
    hit, no_hit, refused, unavailable, invalid, error, timed_out = results
    assert hit.answer == MatchAnswer("FR-PN", True, ("ref-1",), "rev")
    assert no_hit.answer is not None and no_hit.answer.record_refs == ()
    assert refused.answer is None
    assert refused.reasons == ("no_agreement",)
    assert refused.message == "refused by policy"
    assert unavailable.message == "connection refused"
    assert invalid.reasons == ("category_unknown",)
    assert error.message == "internal error"
    assert timed_out.reasons == ("deadline_exceeded",)
    assert [r.attempts for r in results] == [1] * 7  # match_all never retries
    assert [r.outcome.answered for r in results] == [True, True, True, False, True, False, False]
    assert all(r.elapsed_ms >= 0 for r in results)
    assert hit.elapsed_ms >= 25


def test_a_slow_peer_is_timed_out_and_does_not_hold_the_others() -> None:
    deadline = 1.0
    slow = TwinTransport("FR-PN", "hit", delay=5.0)
    fast = TwinTransport("NL-KMAR", "hit")
    started = time.monotonic()
    results = _run([slow, fast], timeout=deadline)
    elapsed = time.monotonic() - started
    # Waited out the deadline (plus its 10 ms grace), never the slow peer's 5 s; the slack
    # is for a loaded machine, not a speed claim.
    assert deadline <= elapsed < deadline + 2.0
    assert results[0].peer == "FR-PN"
    assert results[0].outcome is Outcome.TIMED_OUT
    assert results[0].reasons == ("deadline_exceeded",)
    assert results[0].message == "no answer within deadline"
    assert results[0].answer is None
    assert 0 < results[0].elapsed_ms <= elapsed * 1000
    assert slow.cancelled  # the abandoned call is cancelled, not left running
    assert results[1].outcome is Outcome.HIT
    assert results[1].elapsed_ms < deadline * 1000  # not held until the slow one is given up


def test_each_peer_is_told_the_time_that_remains() -> None:
    # The fan-out's clock reads 100.0 when the deadline is set (0.5 s later), 100.1 when it
    # starts, 100.1 again when it sets its own wait, then 100.1 and 100.25 as each peer is
    # sent its call, then 100.3 (a real clock would race the machine's load). The delay
    # makes each peer wait, so both have started before either finishes.
    readings = iter([100.0, 100.1, 100.1, 100.1, 100.25])

    def clock() -> float:
        return next(readings, 100.3)

    twins = [TwinTransport("FR-PN", delay=0.01), TwinTransport("NL-KMAR", delay=0.01)]
    asyncio.run(match_all([_transport(t) for t in twins], _query_for, 0.5, clock=clock))
    [(_, first)], [(_, second)] = (twin.seen for twin in twins)
    assert first == pytest.approx(0.4) and second == pytest.approx(0.25)


def test_each_peer_gets_its_own_query() -> None:
    twins = [TwinTransport("FR-PN"), TwinTransport("NL-KMAR"), TwinTransport("IT-CC")]
    _run(twins)
    nonces = []
    for twin in twins:
        [(query, _)] = twin.seen
        assert query.envelope.nonce == f"nonce-for-{twin.peer}".encode()
        nonces.append(query.envelope.nonce)
    assert len(set(nonces)) == 3


def test_an_exhausted_deadline_asks_no_one() -> None:
    ticks = iter([100.0])  # the deadline is set, then every later reading is past it

    def clock() -> float:
        return next(ticks, 101.0)

    twin = TwinTransport("FR-PN")
    [result] = asyncio.run(match_all([_transport(twin)], _query_for, 0.5, clock=clock))
    assert result.outcome is Outcome.TIMED_OUT
    assert result.reasons == ("deadline_exceeded",)
    assert result.attempts == 0
    assert twin.seen == []


def test_no_transports_no_results() -> None:
    assert _run([]) == []


def test_duplicate_peers_keep_their_positions() -> None:
    twins = [TwinTransport("FR-PN", "no-hit", delay=0.02), TwinTransport("FR-PN", "hit")]
    assert [r.outcome for r in _run(twins)] == [Outcome.NO_HIT, Outcome.HIT]


def test_a_crashing_transport_does_not_hide_the_others() -> None:
    results = _run([TwinTransport("FR-PN", "crash"), TwinTransport("NL-KMAR", "hit")])
    assert [r.outcome for r in results] == [Outcome.ERROR, Outcome.HIT]
    assert results[0].reasons == ("client_error",)
    assert results[0].message == "RuntimeError: a bug in the transport"
    assert results[1].answer is not None and results[1].answer.hit
