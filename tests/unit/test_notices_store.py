"""Received notices, their matching and hits (node.notices), and the publisher's outbox
(node.notice_outbox), on every configured database: idempotent receipt by (publisher, id,
version), an older version never over a newer, withdrawals and tombstones, claims that two
workers cannot both settle, and a withdrawal that outlives a publication in flight.

SQLite always; PostgreSQL too when ``LIAISON_TEST_POSTGRES_URL`` is set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from federation.model import Identifier
from federation.vocabulary import LegalBasis
from node.notice_model import (
    DeliveryAction,
    DeliveryState,
    NoticeError,
    NoticeState,
    StoredNotice,
    UnknownNotice,
)
from node.notice_outbox import OutboxStore
from node.notices import NoticeStore

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("LIAISON_TEST_POSTGRES_URL") else [])
T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
DOC = Identifier("document_number", "X1234567")
PERSON = Identifier("name_dob", "doe|john|1980-01-02")


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def notices(url: str) -> Iterator[NoticeStore]:
    store = NoticeStore(url)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
def outbox(url: str) -> Iterator[OutboxStore]:
    store = OutboxStore(url)
    store.create_schema()
    yield store
    store.close()


def notice(version: int = 1, **changes: object) -> StoredNotice:
    base = StoredNotice(
        publisher="DE-BKA",
        notice_id="ntc_one",
        version=version,
        category="wanted_person",
        identifiers=(PERSON, DOC),
        summary="armed; do not approach",
        handling_code="H1",
        to_all_members=False,
        recipients=("FR-DGPN", "NL-KLPD"),
        expires_at=T0 + timedelta(days=30),
        active_until=T0 + timedelta(days=30),
        state=NoticeState.ACTIVE,
        created_at=T0,
        updated_at=T0,
        purpose="criminal_investigation",
        legal_basis=LegalBasis.NONE,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_received_notice_is_matched_on_each_identifier_of_its_kind(
    notices: NoticeStore,
) -> None:
    notices.receive(notice())
    hit = [("DE-BKA", "ntc_one", "wanted_person")]
    assert notices.match([DOC], T0) == hit
    assert notices.match([Identifier("document_number", "OTHER"), PERSON], T0) == hit
    # the same value under another kind is not the same identifier
    assert notices.match([Identifier("vin", "X1234567")], T0) == []
    # past its active_until it no longer matches
    assert notices.match([DOC], T0 + timedelta(days=31)) == []


def test_receipt_is_idempotent_and_an_older_version_never_replaces_a_newer(
    notices: NoticeStore,
) -> None:
    first = notices.receive(notice())
    again = notices.receive(notice())
    assert first == again
    assert len(notices.list()) == 1
    notices.receive(notice(2, summary="update", identifiers=(DOC,)))
    held = notices.receive(notice(1))  # a late redelivery of version 1
    assert (held.version, held.summary, held.identifiers) == (2, "update", (DOC,))
    assert notices.match([PERSON], T0) == []  # version 2 dropped that identifier


def test_a_withdrawn_notice_stops_matching_and_a_late_publication_cannot_revive_it(
    notices: NoticeStore,
) -> None:
    notices.receive(notice())
    held = notices.withdraw("DE-BKA", "ntc_one", 2, T0)
    assert (held.state, held.version) == (NoticeState.WITHDRAWN, 2)
    assert notices.match([DOC], T0) == []
    assert notices.receive(notice(1)).state is NoticeState.WITHDRAWN
    # a withdrawal of a notice never received is a tombstone: the publication stays out
    tomb = notices.withdraw("DE-BKA", "ntc_two", 2, T0)
    assert tomb.state is NoticeState.WITHDRAWN
    assert notices.receive(notice(1, notice_id="ntc_two")).state is NoticeState.WITHDRAWN
    assert notices.match([DOC], T0) == []
    assert [n.notice_id for n in notices.list()] == ["ntc_one"]  # tombstones not listed
    assert notices.publishers_of("ntc_one") == {"DE-BKA"}


def test_hits_are_recorded_without_values_and_counted_by_category(notices: NoticeStore) -> None:
    notices.receive(notice())
    hits = notices.record_hits(notices.match([DOC], T0), "match from FR-DGPN", T0)
    notices.record_hits([("DE-BKA", "ntc_one", "wanted_person")], "import", T0)
    assert [h.trigger for h in hits] == ["match from FR-DGPN"]
    assert {h.trigger for h in notices.hits()} == {"match from FR-DGPN", "import"}
    assert notices.hit_counts() == {"wanted_person": 2}
    assert notices.active_keys(T0)[(DOC.kind, DOC.value)] == [
        ("DE-BKA", "ntc_one", "wanted_person")
    ]


def test_the_outbox_owes_each_recipient_its_version_until_it_is_settled(
    outbox: OutboxStore,
) -> None:
    published, deliveries = outbox.publish(
        notice(), legal_reference="", case_reference="C-1", operator="alice", now=T0
    )
    assert published.notice.version == 1 and published.case_reference == "C-1"
    assert [(d.recipient, d.state) for d in deliveries] == [
        ("FR-DGPN", DeliveryState.PENDING),
        ("NL-KLPD", DeliveryState.PENDING),
    ]
    due = outbox.due(T0)
    assert len(due) == 2
    claimed = outbox.claim(due[0], T0 + timedelta(seconds=30), T0)
    assert claimed is not None and claimed.attempts == 1
    assert outbox.claim(due[0], T0 + timedelta(seconds=30), T0) is None  # claimed already
    assert [d.recipient for d in outbox.due(T0)] == ["NL-KLPD"]
    done = outbox.settle(claimed, DeliveryState.DELIVERED, "", T0, T0)
    assert done is not None and done.status == "delivered"
    assert outbox.settle(claimed, DeliveryState.REFUSED, "late", T0, T0) is None
    nl = outbox.claim(outbox.due(T0)[0], T0, T0)
    assert nl is not None
    refused = outbox.settle(nl, DeliveryState.REFUSED, "category_not_agreed", T0, T0)
    assert refused is not None and refused.status == "refused: category_not_agreed"
    assert outbox.counts_by_state() == {"pending": 0, "delivered": 1, "refused": 1, "expired": 0}


def test_a_withdrawal_bumps_the_version_and_outlives_a_publication_in_flight(
    outbox: OutboxStore,
) -> None:
    outbox.publish(notice(), legal_reference="", case_reference="", operator="a", now=T0)
    in_flight = outbox.claim(outbox.due(T0)[0], T0 + timedelta(seconds=30), T0)
    assert in_flight is not None
    withdrawn, deliveries = outbox.withdraw("ntc_one", T0)
    assert (withdrawn.notice.version, withdrawn.notice.state) == (2, NoticeState.WITHDRAWN)
    assert {(d.version, d.action, d.state) for d in deliveries} == {
        (2, DeliveryAction.WITHDRAW, DeliveryState.PENDING)
    }
    # the publication's answer comes back after the withdrawal: it does not settle the row
    assert outbox.settle(in_flight, DeliveryState.DELIVERED, "", T0, T0) is None
    assert len(outbox.due(T0)) == 2
    with pytest.raises(NoticeError) as again:
        outbox.withdraw("ntc_one", T0)
    assert again.value.reason == "notice_not_active"
    with pytest.raises(UnknownNotice):
        outbox.withdraw("ntc_none", T0)
    assert outbox.next_due() == T0


def test_what_no_longer_matches_is_forgotten_but_still_answered(notices: NoticeStore) -> None:
    notices.receive(notice())
    notices.receive(notice(notice_id="ntc_two", identifiers=(DOC,)))
    notices.withdraw("DE-BKA", "ntc_two", 2, T0)
    assert notices.forget_expired(T0) == 1  # the withdrawn one
    assert notices.forget_expired(T0 + timedelta(days=31)) == 1  # then the expired one
    assert notices.forget_expired(T0 + timedelta(days=31)) == 0
    held = notices.held("DE-BKA", "ntc_one")
    assert held is not None and (held.identifiers, held.summary, held.version) == ((), "", 1)
    assert notices.receive(notice()).identifiers == ()  # a redelivery stores nothing again
    assert notices.active_keys(T0) == {}
