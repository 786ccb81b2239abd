"""RecordStore behaviour, run against every configured database.

SQLite always; PostgreSQL too when ``LIAISON_TEST_POSTGRES_URL`` is set (``make test`` sets
it): each test then gets a fresh database of its own (the ``postgres_url`` fixture).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from federation.model import Identifier
from node.kept_reader import SERVER_CONNECTIONS
from node.records import NewRecord
from node.store import RecordStore, new_ref

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("LIAISON_TEST_POSTGRES_URL") else [])


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    record_store = RecordStore(url)
    record_store.create_schema()
    yield record_store
    record_store.close()


def doc(number: str, **payload: object) -> NewRecord:
    return NewRecord(
        ref=new_ref(),
        category="travel_document",
        handling_code="H0",
        source_restrictions=(),
        identifiers=(Identifier("document_number", number),),
        payload=payload,
    )


def person(name_dob: str, number: str | None = None, category: str = "wanted_person") -> NewRecord:
    idents = [Identifier("name_dob", name_dob)]
    if number:
        idents.append(Identifier("document_number", number))
    return NewRecord(new_ref(), category, "H2", ("FR", "NL"), tuple(idents), {"n": name_dob})


class TestRecordStore:
    def test_empty_store_counts_zero(self, store: RecordStore) -> None:
        assert store.count() == 0
        assert store.count("vehicle") == 0

    def test_add_and_count_by_category(self, store: RecordStore) -> None:
        added = store.add_records([doc("A1"), doc("A2"), person("x||1970-01-01")])
        assert added == 3
        assert store.count() == 3
        assert store.count("travel_document") == 2
        assert store.count("wanted_person") == 1
        assert store.count("firearm") == 0

    def test_find_by_one_identifier(self, store: RecordStore) -> None:
        wanted = doc("A2")
        store.add_records([doc("A1"), wanted, doc("A3")])
        ident = Identifier("document_number", "A2")
        assert store.find("travel_document", [ident], 10) == [wanted.ref]
        assert store.find("travel_document", [Identifier("document_number", "A9")], 10) == []

    def test_find_is_scoped_to_the_category(self, store: RecordStore) -> None:
        store.add_records([doc("A1")])
        assert store.find("wanted_person", [Identifier("document_number", "A1")], 10) == []

    def test_find_needs_all_identifiers(self, store: RecordStore) -> None:
        both = person("muller|zoe|1970-01-01", "P1")
        name_only = person("muller|zoe|1970-01-01", "P2")
        store.add_records([both, name_only])
        by_name = [Identifier("name_dob", "muller|zoe|1970-01-01")]
        assert store.find("wanted_person", by_name, 10) == [both.ref, name_only.ref]
        by_both = [*by_name, Identifier("document_number", "P1")]
        assert store.find("wanted_person", by_both, 10) == [both.ref]
        mismatch = [*by_name, Identifier("document_number", "P9")]
        assert store.find("wanted_person", mismatch, 10) == []

    def test_source_restricted_records_are_hidden_from_that_country(
        self, store: RecordStore
    ) -> None:
        open_record = doc("SHARED")
        restricted = dataclasses.replace(doc("SHARED"), source_restrictions=("DE", "PL"))
        store.add_records([open_record, restricted])
        ident = [Identifier("document_number", "SHARED")]
        assert store.find("travel_document", ident, 10) == [open_record.ref, restricted.ref]
        both = [open_record.ref, restricted.ref]
        assert store.find("travel_document", ident, 10, hidden_from="FR") == both
        assert store.find("travel_document", ident, 10, hidden_from="DE") == [open_record.ref]
        assert store.find("travel_document", ident, 10, hidden_from="PL") == [open_record.ref]
        with pytest.raises(ValueError, match="alpha-2"):
            store.find("travel_document", ident, 10, hidden_from='"%')

    def test_kind_matters_not_only_value(self, store: RecordStore) -> None:
        store.add_records([doc("SAME")])
        assert store.find("travel_document", [Identifier("vin", "SAME")], 10) == []

    def test_repeated_identifier_in_a_query_is_harmless(self, store: RecordStore) -> None:
        record = doc("A1")
        store.add_records([record])
        ident = Identifier("document_number", "A1")
        assert store.find("travel_document", [ident, ident], 10) == [record.ref]

    def test_find_limit_and_deterministic_order(self, store: RecordStore) -> None:
        records = [doc("SHARED") for _ in range(5)]
        store.add_records(records)
        ident = [Identifier("document_number", "SHARED")]
        assert store.find("travel_document", ident, 3) == [r.ref for r in records[:3]]
        assert store.find("travel_document", ident, 3) == [r.ref for r in records[:3]]
        assert store.find("travel_document", ident, 100) == [r.ref for r in records]
        assert store.find("travel_document", ident, 0) == []

    def test_find_without_identifiers_is_refused(self, store: RecordStore) -> None:
        store.add_records([doc("A1")])
        with pytest.raises(ValueError, match="at least one identifier"):
            store.find("travel_document", [], 10)

    def test_find_sees_records_added_after_earlier_finds(self, store: RecordStore) -> None:
        ident = [Identifier("document_number", "LATE")]
        assert store.find("travel_document", ident, 10) == []
        late = doc("LATE")
        store.add_records([late])
        assert store.find("travel_document", ident, 10) == [late.ref]

    def test_find_sees_records_written_by_another_store(
        self, store: RecordStore, tmp_path: Path
    ) -> None:
        ident = [Identifier("document_number", "OTHER")]
        assert store.find("travel_document", ident, 10) == []
        other = RecordStore(store.engine.url.render_as_string(hide_password=False))
        try:
            record = doc("OTHER")
            other.add_records([record])
        finally:
            other.close()
        assert store.find("travel_document", ident, 10) == [record.ref]

    def test_add_is_all_or_nothing(self, store: RecordStore) -> None:
        first = doc("A1")
        clash = NewRecord(first.ref, "vehicle", "H0", (), (Identifier("vin", "V1"),), {})
        with pytest.raises(IntegrityError):
            store.add_records([first, doc("A2"), clash])
        assert store.count() == 0
        assert store.find("travel_document", [Identifier("document_number", "A1")], 10) == []

    def test_get_returns_the_whole_record(self, store: RecordStore) -> None:
        record = person("dvorak|jan|1980-01-02", "P1")
        before = datetime.now(UTC) - timedelta(seconds=5)
        store.add_records([record])
        stored = store.get(record.ref)
        assert stored is not None
        assert stored.category == "wanted_person"
        assert stored.handling_code == "H2"
        assert stored.source_restrictions == ("FR", "NL")
        assert stored.identifiers == record.identifiers
        assert stored.payload == {"n": "dvorak|jan|1980-01-02"}
        assert stored.created_at.tzinfo is not None
        assert before <= stored.created_at <= datetime.now(UTC)
        assert store.get("rec_doesnotexist") is None

    def test_payload_keeps_unicode_and_nesting(self, store: RecordStore) -> None:
        record = doc("A1", family_name="Dvořák", extra={"list": [1, 2.5, None, True]})
        store.add_records([record])
        stored = store.get(record.ref)
        assert stored is not None
        assert stored.payload == {"family_name": "Dvořák", "extra": {"list": [1, 2.5, None, True]}}

    def test_many_records_in_chunks(self, store: RecordStore) -> None:
        records = [doc(f"N{i:06d}") for i in range(12_345)]
        assert store.add_records(records) == 12_345
        assert store.count() == 12_345
        for i in (0, 4_999, 5_000, 12_344):
            found = store.find("travel_document", [Identifier("document_number", f"N{i:06d}")], 5)
            assert found == [records[i].ref]

    def test_store_can_be_reopened(self, store: RecordStore) -> None:
        store.add_records([doc("A1")])
        url = store.engine.url.render_as_string(hide_password=False)
        reopened = RecordStore(url)
        try:
            reopened.create_schema()  # idempotent on an existing database
            assert reopened.count() == 1
        finally:
            reopened.close()


def test_refs_are_opaque_and_unique() -> None:
    refs = {new_ref() for _ in range(10_000)}
    assert len(refs) == 10_000
    assert all(re.fullmatch(r"rec_[a-z2-7]{20}", ref) for ref in refs)


def test_sqlite_connections_are_durable_wal_with_foreign_keys(tmp_path: Path) -> None:
    store = RecordStore(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        store.create_schema()
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    finally:
        store.close()


def test_identifier_must_belong_to_a_record(tmp_path: Path) -> None:
    store = RecordStore(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        store.create_schema()
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO identifiers (record_id, kind, value) VALUES (42, 'vin', 'X')")
            )
    finally:
        store.close()


def test_find_survives_a_lost_postgresql_connection(postgres_url: str) -> None:
    """A PostgreSQL restart or a proxy's idle timeout must not break every later lookup."""
    store = RecordStore(postgres_url)
    try:
        store.create_schema()
        record = doc("A1")
        store.add_records([record])
        ident = [Identifier("document_number", "A1")]
        assert store.find("travel_document", ident, 10) == [record.ref]  # opens the kept one
        with store.engine.connect() as conn:
            killed = (
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                .scalars()
                .all()
            )
        assert killed == [True]
        assert store.find("travel_document", ident, 10) == [record.ref]
        assert store.find("travel_document", ident, 10) == [record.ref]
    finally:
        store.close()


def test_sqlite_is_read_on_the_loop(tmp_path: Path) -> None:
    store = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    try:
        assert store.reads_on_loop
    finally:
        store.close()


def test_postgresql_lookups_wait_on_the_server_side_by_side(postgres_url: str) -> None:
    """A database server is read from worker threads, on up to SERVER_CONNECTIONS kept
    connections at once: lookups waiting on the server do not queue behind each other, and
    no more connections than that are opened, however many threads ask."""
    store = RecordStore(postgres_url)
    try:
        store.create_schema()
        record = doc("B1")
        store.add_records([record])
        ident = [Identifier("document_number", "B1")]
        assert not store.reads_on_loop
        waiting_sql = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )

        def waiting(watcher: Connection) -> int:
            # Counted in a transaction of its own: PostgreSQL keeps one snapshot of its
            # activity view per transaction.
            with watcher.begin():
                return int(watcher.execute(waiting_sql).scalar_one())

        many = SERVER_CONNECTIONS + 3
        with (
            store.engine.connect() as locker,
            store.engine.connect() as watcher,
            ThreadPoolExecutor(max_workers=many) as pool,
        ):
            locker.execute(text("LOCK TABLE records IN ACCESS EXCLUSIVE MODE"))
            try:
                lookups = [
                    pool.submit(store.find, "travel_document", ident, 10) for _ in range(many)
                ]
                deadline = time.monotonic() + 30
                while waiting(watcher) < SERVER_CONNECTIONS:
                    assert time.monotonic() < deadline, "the lookups did not reach the server"
                    time.sleep(0.05)
                time.sleep(0.3)  # the others would have arrived by now, were they let through
                assert waiting(watcher) == SERVER_CONNECTIONS
            finally:
                locker.commit()  # lets them through (and the pool can then be shut down)
            assert [f.result(timeout=30) for f in lookups] == [[record.ref]] * many
    finally:
        store.close()
