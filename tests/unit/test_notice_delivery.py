"""The courier's arithmetic and judgement (node.notice_delivery): the jittered exponential
backoff, which failures are final and which are tried again, and the attempts that end
without a call (an expired notice, a recipient gone from the directory). Deliveries over
real gRPC are in tests/federation/test_notices.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from federation.client import ClientIdentity
from federation.directory import Directory
from federation.errors import InvalidRequest, PeerError, PeerRefused, PeerUnavailable
from federation.model import Identifier
from federation.vocabulary import LegalBasis
from node.notice_delivery import Backoff, NoticeCourier, _outcome_of
from node.notice_model import DeliveryState, NoticeState, StoredNotice
from node.notice_outbox import OutboxStore

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def test_the_backoff_doubles_up_to_its_ceiling_and_is_jittered_down_to_half() -> None:
    backoff = Backoff(initial_s=2, max_s=30)
    assert [backoff.delay(n, lambda: 1.0) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]
    assert [backoff.delay(n, lambda: 0.0) for n in (1, 2, 5)] == [1, 2, 15]
    draws = {backoff.delay(3) for _ in range(50)}
    assert all(4 <= d <= 8 for d in draws) and len(draws) > 1


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (PeerRefused("X", "no", ("method_not_permitted",), "PERMISSION_DENIED"), "refused"),
        (PeerRefused("X", "no", ("not_a_recipient",), "PERMISSION_DENIED"), "refused"),
        (InvalidRequest("X", "bad", ("summary_invalid",), "INVALID_ARGUMENT"), "refused"),
        (InvalidRequest("X", "late", ("notice_expired",), "FAILED_PRECONDITION"), "expired"),
        (PeerRefused("X", "who", ("unknown_member",), "PERMISSION_DENIED"), "pending"),
        (PeerRefused("X", "stale", ("request_not_fresh",), "UNAUTHENTICATED"), "pending"),
        (PeerUnavailable("X", "down", ("unreachable",), "UNAVAILABLE"), "pending"),
        (PeerUnavailable("X", "busy", ("policy_unavailable",), "UNAVAILABLE"), "pending"),
        (PeerError("X", "garbled", ("response_signature_invalid",)), "pending"),
    ],
)
def test_a_failure_is_final_only_when_the_receiver_would_say_it_again(
    error: Exception, state: str
) -> None:
    assert isinstance(error, PeerError | PeerRefused | InvalidRequest | PeerUnavailable)
    outcome = _outcome_of(error)
    assert outcome.state.value == state
    if state == "refused":
        assert outcome.reason == ", ".join(error.reasons)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[OutboxStore]:
    store = OutboxStore(f"sqlite:///{tmp_path / 'node.db'}")
    store.create_schema()
    yield store
    store.close()


def _notice(recipients: tuple[str, ...], expires: datetime) -> StoredNotice:
    return StoredNotice(
        "DE-BKA", "ntc_x", 1, "vehicle", (Identifier("vin", "WVWZZZ1JZXW386752"),), "stolen",
        "H0", False, recipients, expires, expires, NoticeState.ACTIVE, T0, T0,
        "criminal_investigation", LegalBasis.NONE,
    )  # fmt: skip


def _courier(outbox: OutboxStore, now: list[datetime]) -> NoticeCourier:
    directory = Directory("liaison.example", 1, T0, T0 + timedelta(days=30), members=())

    def no_identity() -> ClientIdentity:
        raise AssertionError("no call is made")

    return NoticeCourier(
        "DE-BKA",
        outbox,
        lambda: directory,
        no_identity,
        Backoff(1, 4),
        now=lambda: now[0],
        rng=lambda: 1.0,
    )


def test_attempts_that_end_without_a_call(outbox: OutboxStore) -> None:
    now = [T0]
    courier = _courier(outbox, now)
    outbox.publish(
        _notice(("FR-DGPN",), T0 + timedelta(hours=1)),
        legal_reference="",
        case_reference="",
        operator="a",
        now=T0,
    )
    (gone,) = asyncio.run(courier.deliver_due())
    assert gone.status == "refused: recipient_not_in_directory" and gone.attempts == 1
    assert asyncio.run(courier.deliver_due()) == []  # settled: nothing due any more


def test_a_notice_past_its_expiry_is_not_sent(outbox: OutboxStore) -> None:
    now = [T0]
    courier = _courier(outbox, now)
    outbox.publish(
        _notice(("NL-KLPD",), T0 + timedelta(minutes=1)),
        legal_reference="",
        case_reference="",
        operator="a",
        now=T0,
    )
    now[0] = T0 + timedelta(minutes=2)
    (expired,) = asyncio.run(courier.deliver_due())
    assert expired.state is DeliveryState.EXPIRED
    assert outbox.counts_by_state()["expired"] == 1
