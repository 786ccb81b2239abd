"""Reads on the request path: statements compiled once, run on one kept DBAPI connection.

A Match looks up the node's own records (:mod:`node.store`) and the records it received
(:mod:`node.received`) on every request. Executing through a SQLAlchemy Connection cost
~110 µs of the ~130 µs a lookup took under load (benchmarks/match.py); the driver alone
~10 µs. So both stores build their statements with SQLAlchemy (portable: the URL is the only
thing that changes between SQLite and PostgreSQL), compile them once for the engine's
dialect, and run them here.

Where the reads run: a SQLite read (~15 µs) costs less than a worker thread's hop (~30 µs
pinned, docs/performance.md#per-request-cpu), so it runs on the event loop, on one kept
connection. A read from a database server waits a network round trip, during which the
loop could serve other calls, so it runs in a worker thread, on one of a few kept
connections (`reads_on_loop`): several lookups wait on the server at once.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, Select
from sqlalchemy.engine.interfaces import DBAPIModule

from node.database import StoreUnavailable

# A read's SQL for one dialect, the order of its positional parameters, its fixed values.
Compiled = tuple[str, tuple[str, ...], dict[str, Any]]
# Kept connections to a database server: lookups waiting on it at once (the loop's default
# executor runs up to min(32, cores + 4) of them; more would only queue there).
SERVER_CONNECTIONS = 4


class KeptReader:
    """Compiled reads on kept connections of ``engine``: one for SQLite (one reader at a
    time), `SERVER_CONNECTIONS` for a database server."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # SQLite is read on the loop; an in-memory database is one connection's own, so
        # every reader must share that one.
        self.reads_on_loop = engine.dialect.name == "sqlite"
        size = 1 if self.reads_on_loop else SERVER_CONNECTIONS
        # Readers take a connection from `_idle` (opening one while fewer than `size`
        # are open) and give it back; `_slots` holds the others back (uncontended: well
        # under 1 µs).
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def compile(self, statement: Select[Any]) -> Compiled:
        """A read's SQL for this dialect, its positional order, fixed values."""
        compiled = statement.compile(dialect=self._engine.dialect)
        order = tuple(compiled.positiontup or ()) if compiled.positional else ()
        # Parameters the dialect adds itself (SQLite's OFFSET 0) come with their values.
        defaults = {k: v for k, v in compiled.params.items() if v is not None}
        return compiled.string, order, defaults

    def read(self, compiled: Compiled, params: dict[str, Any], what: str) -> list[tuple[Any, ...]]:
        """Rows of a compiled read; a dead connection is replaced once (a PostgreSQL restart
        or failover, an idle timeout in between: without it, every later read would fail on
        the dead one; a read is safe to repeat)."""
        sql, order, defaults = compiled
        merged = {**defaults, **params}
        args = [merged[name] for name in order] if order else merged
        dbapi_error = self._engine.dialect.loaded_dbapi.Error
        with self._slots:
            conn: Any = None
            try:
                conn = self._take()
                try:
                    return _run(conn, sql, args)
                except dbapi_error as exc:
                    if not self._lost(conn, exc):
                        raise
                    conn.invalidate(exc)
                    conn = None
                    conn = self._take()
                    return _run(conn, sql, args)
            except dbapi_error as exc:
                raise StoreUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc
            finally:
                if conn is not None:
                    self._give_back(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _lost(self, conn: Any, exc: DBAPIModule.Error) -> bool:
        """Whether ``exc`` means the kept connection is gone."""
        return bool(self._engine.dialect.is_disconnect(exc, conn.dbapi_connection, None))

    def _take(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        # A DBAPI connection kept for reads, in autocommit where the driver has it, so it
        # never holds a read snapshot open (it must see records written after it opened).
        conn = self._engine.raw_connection()
        driver: Any = conn.driver_connection
        if not self.reads_on_loop and hasattr(driver, "autocommit"):
            driver.autocommit = True
        return conn

    def _give_back(self, conn: Any) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()  # a read that finished after close()


def _run(conn: Any, sql: str, args: Any) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, args)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()
