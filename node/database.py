"""What every table of the node's own database shares: how an engine is opened, how times are
kept, and how a database that cannot answer is reported.

The records store (:mod:`node.store`), the tickets (:mod:`node.tickets`) and the received
records (:mod:`node.received`) live in one database, SQLite or PostgreSQL, named by one URL;
these helpers keep the three consistent so that only the URL changes between backends.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

UNAVAILABLE_HINT = "check that the database is up and reachable, then retry"


class StoreUnavailable(RuntimeError):
    """The database could not answer (down, disk full, locked past its timeout)."""


def open_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite durable in WAL mode and usable from worker threads;
    every backend checks a pooled connection before use, so one killed by a server restart or
    an idle timeout is replaced instead of failing the next call."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the server) read while another writes (an import), FULL makes a
    # commit survive power loss, busy_timeout makes a second writer wait for the first
    # instead of failing at once.
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=FULL", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def where(engine: Engine) -> str:
    """The database's URL without its password: fit for an error message or a log."""
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def answering(engine: Engine, what: str) -> Iterator[None]:
    """Turn a database that cannot answer (down, unreachable, locked past its timeout) into
    :class:`StoreUnavailable` naming the operation and the database, never a driver trace."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        cause = str(exc.orig or exc).strip().splitlines()[0]
        raise StoreUnavailable(
            f"{what} failed: {where(engine)} did not answer ({cause}); {UNAVAILABLE_HINT}"
        ) from exc


def to_db(moment: datetime) -> datetime:
    """``moment`` in UTC. SQLite keeps no zone, so every stored time is UTC, and a naive time
    (whose zone nobody knows) is refused rather than guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("times must carry their zone (UTC); a naive datetime is ambiguous")
    return moment.astimezone(UTC)


@overload
def from_db(moment: datetime) -> datetime: ...
@overload
def from_db(moment: None) -> None: ...
def from_db(moment: datetime | None) -> datetime | None:
    """A stored time back in UTC (SQLite returns it without a zone; it was written in UTC)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def new_id(prefix: str) -> str:
    """An opaque id: 100 random bits after ``prefix``, nothing a peer could learn from."""
    return prefix + base64.b32encode(secrets.token_bytes(15)).decode()[:20].lower()
