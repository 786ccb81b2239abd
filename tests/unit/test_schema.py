"""The node's schema under Alembic (node/schema.py, node/migrations), on SQLite and PostgreSQL:
the revisions make exactly the models, create_schema makes the same, an upgrade keeps every
row (and the audit log still verifies), a database made before migrations is recorded and
not recreated, and a schema the code does not expect is refused with the command that fixes
it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from node.audit.database_store import DatabaseStorage
from node.audit.log import AuditLog
from node.audit.verify import verify_storage
from node.notice_outbox import OutboxStore
from node.notices import NoticeStore
from node.received import ReceivedStore
from node.schema import (
    BASE,
    VERSION_TABLE,
    SchemaError,
    current,
    head,
    history,
    require_current,
    scripts,
    target_metadata,
    upgrade,
)
from node.store import RecordStore
from node.tickets import TicketStore
from tests.unit.test_audit import _append_many
from tests.unit.test_audit_merkle import KEY, ORIGIN, VERIFIER
from tests.unit.test_notices_store import DOC, T0, notice
from tests.unit.test_received import PERSON, add_one
from tests.unit.test_store import doc
from tests.unit.test_tickets import open_one

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("LIAISON_TEST_POSTGRES_URL") else [])
CONFIG = Path("/srv/liaison/node.toml")


def _url(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / name}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request, tmp_path, "node.db")


def _differences(url: str, metadata: MetaData | list[MetaData]) -> list[Any]:
    """What autogenerate would change to make the database at `url` match `metadata`."""
    if isinstance(metadata, list):
        merged = MetaData()
        for part in metadata:
            for table in part.tables.values():
                table.to_metadata(merged)
        metadata = merged
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    # the version table is Alembic's own, in no model
                    "include_name": lambda name, type_, _p: name != VERSION_TABLE,
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _create_schema_everywhere(url: str) -> None:
    """Every table as the stores' create_schema make them (and the audit log's own)."""
    for cls in (RecordStore, TicketStore, ReceivedStore, NoticeStore, OutboxStore):
        store = cls(url)
        store.create_schema()
        store.close()
    DatabaseStorage(url).close()


def test_the_revisions_make_exactly_the_models(url: str) -> None:
    said = upgrade(url)
    assert said == [
        f"{current(url).where}: upgraded from an empty database to {head()} "
        f"(applied {', '.join(reversed([h.revision for h in history()]))})"
    ]
    assert current(url).revision == head()
    assert _differences(url, target_metadata()) == []
    assert upgrade(url) == [f"{current(url).where}: already at {head()}; nothing to do"]


# The tables the revisions after 0001 create (each new revision that adds one says so here).
ADDED_AFTER_BASE = {"audit_anchor"}  # 0002


def test_create_schema_makes_what_the_revisions_make(
    request: pytest.FixtureRequest, url: str
) -> None:
    """Unit tests build throwaway databases with create_schema: it must make the same tables
    as the migrations, or they would test another schema."""
    _create_schema_everywhere(url)
    assert _differences(url, target_metadata()) == []
    # ... and what the first revision froze is today's create_all but for the tables later
    # revisions add (checked from both sides).
    frozen = scripts().get_revision(BASE).module.schema()
    extra = _differences(url, frozen)
    assert all(d[0] == "remove_table" for d in extra), extra
    assert {d[1].name for d in extra} == ADDED_AFTER_BASE
    assert {t for m in target_metadata() for t in m.tables} == set(frozen.tables) | ADDED_AFTER_BASE


def _fill(url: str) -> None:
    """A row in every table, written by the real stores (the audit log on the database)."""
    records = RecordStore(url)
    records.add_records([doc("X1234567", note="kept"), doc("Y7654321")])
    records.close()
    tickets = TicketStore(url)
    open_one(tickets)
    tickets.close()
    received = ReceivedStore(url)
    add_one(received, payload=PERSON)
    add_one(received, record_ref="rec_bbbbbbbbbbbbbbbbbbbb", retention_days=1)
    assert len(received.purge_due(T0 + timedelta(days=2))) == 1  # a received_purges row
    received.close()
    notices = NoticeStore(url)
    notices.receive(notice())
    notices.record_hits(notices.match([DOC], T0), "match from FR-DGPN", T0)
    notices.close()
    outbox = OutboxStore(url)
    outbox.publish(
        notice(notice_id="ntc_two"),
        legal_reference="",
        case_reference="C-1",
        operator="alice",
        now=T0,
    )
    outbox.close()

    async def audit() -> None:
        log = AuditLog(DatabaseStorage(url))
        await _append_many(log, 0, 25)
        log.checkpoint(KEY, ORIGIN)
        await log.close()

    asyncio.run(audit())


def _dump(url: str) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of every table (but Alembic's), as comparable tuples."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names()) - {VERSION_TABLE}
            return {
                name: {tuple(row) for row in conn.execute(text(f'SELECT * FROM "{name}"'))}
                for name in names
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("start", [h.revision for h in history()])
def test_an_upgrade_keeps_every_row_and_the_audit_log_verifies(url: str, start: str) -> None:
    """From every revision (each new one joins this test by being in the history): a row in
    every table survives the upgrade to head, unchanged, and the log still verifies."""
    upgrade(url, start)
    _fill(url)
    before = _dump(url)
    assert all(before.values()), [name for name, rows in before.items() if not rows]
    assert set(before) == {t for m in target_metadata() for t in m.tables}
    upgrade(url)
    after = _dump(url)
    assert current(url).revision == head()
    for name, rows in before.items():
        # A later revision may add columns: each row before is the start of one after.
        width = len(next(iter(rows)))
        assert rows <= {a[:width] for a in after[name]}, name
    storage = DatabaseStorage(url, create=False)
    try:
        assert verify_storage(storage, VERIFIER, ORIGIN) == (25, 1)
    finally:
        storage.close()


def test_a_database_made_before_migrations_is_recorded_not_recreated(url: str) -> None:
    """A node's database from before migrations: create_all made its tables, the audit log
    was a file (no audit tables). `db upgrade` keeps its rows and records it at BASE."""
    for cls in (RecordStore, TicketStore, ReceivedStore, NoticeStore, OutboxStore):
        store = cls(url)
        store.create_schema()
        store.close()
    records = RecordStore(url)
    records.add_records([doc("X1234567")])
    records.close()
    with pytest.raises(SchemaError, match=r"predates schema migrations.*liaison db upgrade"):
        require_current(url, CONFIG)
    [said, *_] = upgrade(url)
    assert "predates schema migrations" in said and f"recorded it at {BASE}" in said
    assert "creating the tables it lacked (audit_checkpoints, audit_entries)" in said
    assert current(url).revision == head()
    assert len(_dump(url)["records"]) == 1
    assert _differences(url, target_metadata()) == []
    require_current(url, CONFIG)


def test_a_database_unlike_the_first_revision_is_refused_untouched(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE records (id INTEGER PRIMARY KEY, ref VARCHAR(32))"))
    engine.dispose()
    with pytest.raises(SchemaError, match=r"its tables differ from those Liaison made"):
        upgrade(url)
    assert current(url).revision is None and current(url).tables == {"records"}


def test_a_database_of_something_else_is_refused(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(SchemaError, match=r"none of Liaison's"):
        upgrade(url)


@pytest.fixture
def stamped(url: str) -> Iterator[str]:
    """A database at head whose recorded revision then says something newer."""
    upgrade(url)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeed'"))
    engine.dispose()
    yield url


def test_a_newer_schema_is_refused_by_the_check_and_by_upgrade(stamped: str) -> None:
    newer = r"this node's code is older than its database .*\(revision f00dfeed.*upgrade the node"
    with pytest.raises(SchemaError, match=newer):
        require_current(stamped, CONFIG)
    with pytest.raises(SchemaError, match=newer):
        upgrade(stamped)


def test_an_empty_database_is_refused_with_the_command_that_creates_it(url: str) -> None:
    with pytest.raises(
        SchemaError, match=rf"has no tables yet: run `liaison db upgrade --config {CONFIG}`"
    ):
        require_current(url, CONFIG)


def test_an_unknown_target_revision_is_refused(url: str) -> None:
    with pytest.raises(SchemaError, match=r"cannot upgrade .* to 'nope'.*liaison db history"):
        upgrade(url, "nope")
