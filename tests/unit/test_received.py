"""Received records (node.received) on every configured database: kept with their markings,
purged when their retention ends (injected clock), a clear error when the database is down.

SQLite always; PostgreSQL too when ``LIAISON_TEST_POSTGRES_URL`` is set, each test in a fresh
database (the ``postgres_url`` fixture).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from federation.model import Identifier
from federation.vocabulary import LegalBasis
from node.database import StoreUnavailable
from node.normalise import record_identifiers
from node.received import ReceivedRecord, ReceivedStore
from tests.conftest import DatabaseAway

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("LIAISON_TEST_POSTGRES_URL") else [])
T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
PERSON = {
    "family_name": "Dvořák",
    "given_names": "Jana Marie",
    "date_of_birth": "1980-02-29",
    "document_number": "c01-x00 t47",
}
NAME_DOB = Identifier("name_dob", "dvorak|jana marie|1980-02-29")
DOCUMENT = Identifier("document_number", "C01X00T47")


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def received(url: str) -> Iterator[ReceivedStore]:
    store = ReceivedStore(url)
    store.create_schema()
    yield store
    store.close()


def add_one(store: ReceivedStore, **over: Any) -> ReceivedRecord:
    args: dict[str, Any] = {
        "from_node": "DE-BKA",
        "record_ref": "rec_aaaaaaaaaaaaaaaaaaaa",
        "category": "wanted_person",
        "payload": {"family_name": "Dvořák", "marks": ["scar", None, 2.5]},
        "handling_code": "H2",
        "source_restrictions": ["NL", "BE", "NL"],
        "origin_country": "DE",
        "purpose": "criminal_investigation",
        "legal_basis": LegalBasis.MLAT,
        "legal_reference": "MLAT-2026-0042",
        "case_reference": "CASE-7",
        "retention_days": 30,
        "received_at": T0,
    }
    args.update(over)
    return store.add(**args)


class TestReceivedStore:
    def test_add_keeps_the_record_with_its_restrictions(self, received: ReceivedStore) -> None:
        record = add_one(received, ticket_id="tkt_abcdefghijklmnopqrst")
        assert re.fullmatch(r"rcv_[a-z2-7]{20}", record.id)
        assert record.from_node == "DE-BKA"
        assert record.record_ref == "rec_aaaaaaaaaaaaaaaaaaaa"
        assert record.payload == {"family_name": "Dvořák", "marks": ["scar", None, 2.5]}
        assert record.handling_code == "H2"
        assert record.source_restrictions == ("BE", "NL")  # sorted, once each
        assert record.legal_basis is LegalBasis.MLAT
        assert (record.legal_reference, record.case_reference) == ("MLAT-2026-0042", "CASE-7")
        assert record.ticket_id == "tkt_abcdefghijklmnopqrst"
        assert record.received_at == T0
        assert record.received_at.tzinfo is UTC
        assert record.retain_until == T0 + timedelta(days=30)
        assert received.get(record.id) == record
        assert received.get("rcv_nosuchrecord") is None

    def test_policy_facts_are_the_contracts_record_object(self, received: ReceivedStore) -> None:
        facts = add_one(received).policy_facts()
        assert facts == {
            "category": "wanted_person",
            "handling_code": "H2",
            "source_restrictions": ["BE", "NL"],
            "origin_country": "DE",
        }

    def test_add_refuses_what_cannot_be_kept_honestly(self, received: ReceivedStore) -> None:
        with pytest.raises(ValueError, match="retention_days"):
            add_one(received, retention_days=0)
        with pytest.raises(ValueError, match="zone"):
            add_one(received, received_at=T0.replace(tzinfo=None))
        with pytest.raises(ValueError, match="JSON object"):
            add_one(received, payload=["not", "an", "object"])
        assert received.list() == []

    def test_list_filters_and_orders_oldest_first(self, received: ReceivedStore) -> None:
        a = add_one(received, received_at=T0)
        b = add_one(received, from_node="FR-DGPN", received_at=T0 + timedelta(minutes=1))
        c = add_one(
            received,
            category="vehicle",
            case_reference="CASE-9",
            received_at=T0 + timedelta(minutes=2),
        )
        assert [r.id for r in received.list()] == [a.id, b.id, c.id]
        assert [r.id for r in received.list(from_node="FR-DGPN")] == [b.id]
        assert [r.id for r in received.list(category="vehicle")] == [c.id]
        assert [r.id for r in received.list(case_reference="CASE-7")] == [a.id, b.id]
        assert [r.id for r in received.list(limit=1)] == [a.id]
        assert received.list(limit=0) == []

    def test_purge_due_on_an_injected_clock(self, received: ReceivedStore) -> None:
        short = add_one(received, retention_days=1)
        longer = add_one(received, retention_days=7, received_at=T0 + timedelta(hours=1))
        keep = add_one(received, retention_days=90)
        assert received.purge_due(T0 + timedelta(hours=23)) == []
        gone = received.purge_due(T0 + timedelta(days=1))  # due at the instant retention ends
        assert gone == [short]
        assert received.get(short.id) is None
        assert received.purge_due(T0 + timedelta(days=1)) == []  # never reported twice
        gone = received.purge_due(T0 + timedelta(days=30))
        assert gone == [longer]
        assert [r.id for r in received.list()] == [keep.id]

    def test_purges_racing_report_each_record_once(self, url: str) -> None:
        """Two replicas purging at the same moment: every record is deleted and reported by
        exactly one of them."""
        stores = [ReceivedStore(url), ReceivedStore(url)]
        stores[0].create_schema()
        try:
            # With identifiers: each purge deletes those first, then the records.
            ids = {add_one(stores[0], payload=PERSON, retention_days=1).id for _ in range(30)}
            barrier = threading.Barrier(2)
            reports: list[list[ReceivedRecord]] = [[], []]

            def purge(n: int) -> None:
                barrier.wait()
                reports[n] = stores[n].purge_due(T0 + timedelta(days=2))

            threads = [threading.Thread(target=purge, args=(n,)) for n in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            reported = [r.id for report in reports for r in report]
            assert sorted(reported) == sorted(ids)
            assert stores[1].list() == []
            assert find(stores[1], NAME_DOB, asker="ES-CNP") == []
        finally:
            for store in stores:
                store.close()


def find(
    store: ReceivedStore, *idents: Identifier, asker: str = "NL-KLPD", limit: int = 10
) -> list[str]:
    return store.find("wanted_person", idents, limit, requester=asker, requester_country=asker[:2])


class TestFindingReceivedRecords:
    """A received record is a hit for a third country, found by the spellings own records
    are found by; never for the node it came from nor a country its source names."""

    def test_identifiers_are_derived_as_for_own_records(self, received: ReceivedStore) -> None:
        kept = add_one(received, payload=PERSON, source_restrictions=[])
        own, problems = record_identifiers("wanted_person", PERSON)
        assert problems == () and kept.identifiers == own == (NAME_DOB, DOCUMENT)
        assert received.get(kept.id) == kept
        assert received.list() == [kept]
        assert find(received, NAME_DOB) == [kept.id]
        assert find(received, DOCUMENT) == [kept.id]
        assert find(received, NAME_DOB, DOCUMENT) == [kept.id]
        assert find(received, NAME_DOB, Identifier("document_number", "OTHER1")) == []
        assert received.find("missing_person", [NAME_DOB], 10, requester="NL-KLPD",
                             requester_country="NL") == []  # fmt: skip

    def test_a_withheld_field_gives_no_identifier(self, received: ReceivedStore) -> None:
        partial = {k: v for k, v in PERSON.items() if k != "date_of_birth"}
        kept = add_one(received, payload=partial, source_restrictions=[])
        assert kept.identifiers == (DOCUMENT,)
        assert find(received, DOCUMENT) == [kept.id] and find(received, NAME_DOB) == []

    def test_never_a_hit_for_where_it_came_from(self, received: ReceivedStore) -> None:
        kept = add_one(received, payload=PERSON, source_restrictions=[], from_node="DE-BKA")
        assert find(received, NAME_DOB, asker="DE-BKA") == []
        assert find(received, NAME_DOB, asker="DE-LKA") == [kept.id]  # another German node

    def test_never_a_hit_for_a_restricted_country(self, received: ReceivedStore) -> None:
        kept = add_one(received, payload=PERSON, source_restrictions=["BE", "NL"])
        assert find(received, NAME_DOB, asker="NL-KLPD") == []
        assert find(received, NAME_DOB, asker="BE-FPJ") == []
        assert find(received, NAME_DOB, asker="ES-CNP") == [kept.id]
        with pytest.raises(ValueError, match="alpha-2"):
            received.find("wanted_person", [NAME_DOB], 10, requester="x", requester_country="")
        with pytest.raises(ValueError, match="at least one identifier"):
            received.find("wanted_person", [], 10, requester="x", requester_country="NL")

    def test_oldest_first_and_limited(self, received: ReceivedStore) -> None:
        ids = [
            add_one(
                received,
                payload=PERSON,
                source_restrictions=[],
                received_at=T0 - timedelta(hours=n),
            ).id
            for n in range(3)
        ]
        assert find(received, NAME_DOB) == ids[::-1]
        assert find(received, NAME_DOB, limit=2) == ids[::-1][:2]
        assert find(received, NAME_DOB, limit=0) == []

    def test_purge_takes_its_identifiers_with_it(self, url: str, received: ReceivedStore) -> None:
        short = add_one(received, payload=PERSON, source_restrictions=[], retention_days=1)
        longer = add_one(received, payload=PERSON, source_restrictions=[], retention_days=5)
        assert sorted(find(received, DOCUMENT)) == sorted([short.id, longer.id])
        assert received.purge_due(T0 + timedelta(days=1)) == [short]
        assert find(received, DOCUMENT) == [longer.id]
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                left = conn.execute(text("SELECT DISTINCT received_id FROM received_identifiers"))
                assert [row[0] for row in left] == [longer.id]
        finally:
            engine.dispose()


def test_a_database_that_is_down_gives_a_clear_error() -> None:
    store = ReceivedStore("postgresql+psycopg://liaison:secret@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StoreUnavailable) as err:
            store.purge_due(T0)
        message = str(err.value)
        assert "purging received records failed" in message
        assert "127.0.0.1:1/nowhere" in message
        assert "check that the database is up" in message
        assert "secret" not in message
    finally:
        store.close()


def test_postgresql_going_away_and_coming_back(
    postgres_url: str, database_away: DatabaseAway
) -> None:
    store = ReceivedStore(postgres_url)
    store.create_schema()
    record = add_one(store, retention_days=1)
    try:
        with (
            database_away(postgres_url),
            pytest.raises(StoreUnavailable, match="check that the database is up"),
        ):
            store.purge_due(T0 + timedelta(days=2))
        assert store.get(record.id) == record  # nothing was half deleted
        assert store.purge_due(T0 + timedelta(days=2)) == [record]
    finally:
        store.close()
