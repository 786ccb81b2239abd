"""The node's database schema: which revision a database is at, upgrading it, and the check
the node makes before it serves.

Alembic (the revisions are in node/migrations/versions) manages every table of the node's
database: records, tickets, received records, notices and the outbox, and the audit log's
tables (which hold the nonces replay protection is rebuilt from). A node whose audit log is
in a database of its own (``[audit] url``) keeps the same schema there, at the same
revision; only the audit tables fill up.

Why a refusal and not an upgrade at start: a node must not serve on tables its code does
not know (older: a column missing, an answer wrong; newer: a rollback of the code), and
changing a database is an operator's decision, taken after a backup. So ``liaison serve``
checks and refuses, naming the command that fixes it; the set-up commands (``liaison data
import``, the local kit) create the schema of an EMPTY database, which changes nothing that
was there; ``liaison db upgrade`` does the rest.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from node.database import answering, where

if TYPE_CHECKING:
    from node.config import NodeConfig

VERSION_TABLE = "alembic_version"
# The revision whose tables are those Liaison made before migrations (create_all).
BASE = "0001"
# Serialises two upgrades of one PostgreSQL database (two operators, two replicas' set-up).
_LOCK_KEY = 0x4C49_4149_534F_4E31  # "LIAISON1"
# Alembic says what it runs at INFO ("Context impl ...", "Running upgrade ..."); the node says
# what was applied in its own words (upgrade's return value).
logging.getLogger("alembic").setLevel(logging.WARNING)


class SchemaError(RuntimeError):
    """The database's schema is not the one this code expects, or cannot be made so; the
    message says which command fixes it."""


def target_metadata() -> list[MetaData]:
    """The metadata of every table of the node, as its code declares them (what autogenerate
    compares a database with)."""
    # Imported here: importing a store module declares its tables.
    from sqlmodel import SQLModel

    import node.notice_outbox
    import node.notices
    import node.received
    import node.store
    import node.tickets
    from node.audit.database_store import entries_table

    del node  # only imported for their tables
    return [SQLModel.metadata, entries_table.metadata]


def alembic_config() -> Config:
    """Alembic's configuration, in code: the node runs without an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", "node:migrations")
    return config


@functools.cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this code expects."""
    found = scripts().get_current_head()
    assert found is not None, "node/migrations/versions has no revision"
    return found


def known(revision: str) -> bool:
    """Whether this code knows `revision` (a database at an unknown one was upgraded by a
    newer version of Liaison)."""
    return revision in {s.revision for s in scripts().walk_revisions()}


@dataclass(frozen=True, slots=True)
class History:
    revision: str
    down_revision: str | None
    title: str


def history() -> list[History]:
    """Every revision, newest first."""
    found = []
    for s in scripts().walk_revisions():
        down = s.down_revision
        assert down is None or isinstance(down, str), "the history is linear"
        found.append(History(s.revision, down, (s.doc or "").strip().splitlines()[0]))
    return found


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What a database holds: its recorded revision (None if none) and its tables."""

    where: str
    revision: str | None
    tables: frozenset[str]

    @property
    def empty(self) -> bool:
        return self.revision is None and not self.tables


def migration_engine(url: str) -> Engine:
    """An engine to change the schema with (not the stores' :func:`node.database.open_engine`).

    SQLite: the driver's own transaction handling is turned off and ``BEGIN IMMEDIATE`` is
    emitted instead, so DDL runs inside the transaction (a failed upgrade leaves nothing
    half-done) and a second writer waits; foreign keys are OFF, because a later revision
    that rebuilds a table (batch mode) drops the old one, and with them ON the drop would
    cascade into the rows that reference it. No pool: the upgrade runs once."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, poolclass=NullPool)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, poolclass=NullPool)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "foreign_keys=OFF", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


@contextmanager
def _connected(url: str, what: str) -> Iterator[Connection]:
    """One transaction on `url`, committed if the block ends normally; a database that does
    not answer is :class:`node.database.StoreUnavailable`."""
    engine = migration_engine(url)
    try:
        with answering(engine, what), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            yield conn
    finally:
        engine.dispose()


def _state(conn: Connection) -> SchemaState:
    revision = MigrationContext.configure(conn).get_current_revision()
    tables = frozenset(inspect(conn).get_table_names()) - {VERSION_TABLE}
    return SchemaState(where(conn.engine), revision, tables)


def current(url: str) -> SchemaState:
    with _connected(url, "reading the schema revision") as conn:
        return _state(conn)


def _newer(state: SchemaState) -> SchemaError:
    return SchemaError(
        f"this node's code is older than its database {state.where} (revision "
        f"{state.revision}; this code knows revisions up to {head()}): upgrade the node"
    )


def _adopt(conn: Connection, state: SchemaState) -> str:
    """Check a database made before migrations against revision BASE's tables, so the
    upgrade records it at BASE instead of recreating anything; what to tell the operator."""
    base: MetaData = scripts().get_revision(BASE).module.schema()
    ours = state.tables & set(base.tables)
    if not ours:
        raise SchemaError(
            f"{state.where} holds tables ({', '.join(sorted(state.tables)[:5])}) but none of "
            "Liaison's, and no schema revision: check that the URL names this node's database"
        )

    def only_ours(_obj: Any, name: str | None, type_: str, _reflected: bool, _to: Any) -> bool:
        return type_ != "table" or name in ours

    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "include_object": only_ours}
    )
    differences = compare_metadata(context, base)
    if differences:
        shown = "; ".join(str(d) for d in differences[:5])
        raise SchemaError(
            f"{state.where} predates schema migrations but its tables differ from those "
            f"Liaison made then (revision {BASE}): {shown}. Nothing was changed; restore it "
            "from a backup made by that version, or bring the tables in line by hand"
        )
    missing = sorted(set(base.tables) - ours)
    created = f", creating the tables it lacked ({', '.join(missing)})" if missing else ""
    return (
        f"{state.where} predates schema migrations; its tables are those of revision {BASE}: "
        f"recorded it at {BASE}{created}"
    )


def _foreign_keys_hold(conn: Connection) -> None:
    """SQLite checks no foreign key while they are off (the upgrade's connection): check
    them all before committing."""
    if conn.dialect.name == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise SchemaError(
                f"the upgrade would leave {len(broken)} row(s) whose foreign key points "
                f"nowhere (first: table {broken[0][0]}); nothing was changed"
            )


def upgrade(url: str, revision: str = "head") -> list[str]:
    """Upgrade the database at `url` to `revision`, in one transaction; what was done, in
    the operator's words.

    A database that predates migrations (tables, no revision) is checked against revision
    BASE's tables and recorded at BASE, never recreated; one at a revision this code does
    not know is refused (its code is newer)."""
    said: list[str] = []
    with _connected(url, "upgrading the schema") as conn:
        before = _state(conn)
        if before.revision is not None and not known(before.revision):
            raise _newer(before)
        start = before.revision
        if start is None and before.tables:
            said.append(_adopt(conn, before))
            start = BASE  # said; what follows it is said below
        config = alembic_config()
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, revision)
        except CommandError as exc:
            raise SchemaError(
                f"cannot upgrade {before.where} to {revision!r}: {exc} (see `liaison db history`)"
            ) from None
        after = _state(conn).revision
        _foreign_keys_hold(conn)
    if after != start:
        applied = [s.revision for s in scripts().iterate_revisions(after, start or "base")]
        said.append(
            f"{before.where}: upgraded from {start or 'an empty database'} to {after} "
            f"(applied {', '.join(reversed(applied))})"
        )
    elif not said:
        said.append(f"{before.where}: already at {after}; nothing to do")
    return said


def require_current(url: str, config_path: Path) -> None:
    """Refuse (SchemaError, naming the fix) unless the database at `url` is at :func:`head`."""
    state = current(url)
    want = head()
    if state.revision == want:
        return
    fix = f"run `liaison db upgrade --config {config_path}`"
    if state.revision is None:
        if state.empty:
            raise SchemaError(f"{state.where} has no tables yet: {fix} to create them")
        raise SchemaError(
            f"{state.where} predates schema migrations (no revision recorded): back it up, "
            f"then {fix} (it recognises the tables and records their revision)"
        )
    if not known(state.revision):
        raise _newer(state)
    raise SchemaError(
        f"{state.where} is at schema revision {state.revision}, this node needs {want}: "
        f"back it up, then {fix}"
    )


def node_databases(config: NodeConfig) -> list[str]:
    """The URLs of the node's databases: [store] url, and [audit] url when the audit log is
    in a database of its own."""
    urls = [config.store.url]
    if config.audit.store == "database" and config.audit.url not in urls:
        urls.append(config.audit.url)
    return urls


def check_node(config: NodeConfig) -> None:
    """Before serving: every database of the node at :func:`head`, or SchemaError."""
    for url in node_databases(config):
        require_current(url, config.source)


def upgrade_node(config: NodeConfig, revision: str = "head") -> list[str]:
    return [line for url in node_databases(config) for line in upgrade(url, revision)]


def create_if_empty(config: NodeConfig, say: Callable[[str], None] = print) -> None:
    """For the set-up commands: an empty database gets the schema (nothing is changed that
    was there); one at the head is left alone; any other is refused as :func:`check_node`
    refuses it (an upgrade is the operator's `liaison db upgrade`)."""
    for url in node_databases(config):
        if current(url).empty:
            for line in upgrade(url):
                say(line)
        else:
            require_current(url, config.source)


def describe(state: SchemaState) -> str:
    """One line for `liaison db current`."""
    if state.revision is None:
        return f"{state.where}: {'empty' if state.empty else 'predates schema migrations'}"
    if state.revision == head():
        return f"{state.where}: {state.revision} (head)"
    if known(state.revision):
        return f"{state.where}: {state.revision} (older than this code's {head()})"
    return f"{state.where}: {state.revision} (unknown to this code: newer than {head()})"
