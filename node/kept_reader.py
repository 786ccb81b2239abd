"""Reads on the request path: statements compiled once, run on one kept DBAPI connection.

A Match looks up the node's own records (:mod:`node.store`) and the records it received
(:mod:`node.received`) on every request. Executing through a SQLAlchemy Connection cost
~110 µs of the ~130 µs a lookup took under load (benchmarks/match.py); the driver alone
~10 µs. So both stores build their statements with SQLAlchemy (portable: the URL is the only
thing that changes between SQLite and PostgreSQL), compile them once for the engine's
dialect, and run them here.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, Select
from sqlalchemy.engine.interfaces import DBAPIModule

from node.database import StoreUnavailable

# A read's SQL for one dialect, the order of its positional parameters, its fixed values.
Compiled = tuple[str, tuple[str, ...], dict[str, Any]]


class KeptReader:
    """Compiled reads on one kept connection of ``engine``, one reader at a time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._raw_conn: Any = None
        # The request path reads on the event loop, the operator's desk from worker
        # threads: one reader at a time on the one connection (uncontended, well under 1 µs).
        self._lock = threading.Lock()

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
        with self._lock:
            try:
                try:
                    return self._run(sql, args)
                except dbapi_error as exc:
                    if not self._lost(exc):
                        raise
                    self._raw_conn.invalidate(exc)
                    self._raw_conn = None
                    return self._run(sql, args)
            except dbapi_error as exc:
                raise StoreUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._raw_conn is not None:
                self._raw_conn.close()
                self._raw_conn = None

    def _run(self, sql: str, args: Any) -> list[tuple[Any, ...]]:
        cursor = self._raw().cursor()
        try:
            cursor.execute(sql, args)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def _lost(self, exc: DBAPIModule.Error) -> bool:
        """Whether ``exc`` means the kept connection is gone."""
        if self._raw_conn is None:
            return False
        return bool(self._engine.dialect.is_disconnect(exc, self._raw_conn.dbapi_connection, None))

    def _raw(self) -> Any:
        # One DBAPI connection kept for reads, in autocommit where the driver has it, so it
        # never holds a read snapshot open (it must see records written after it opened).
        if self._raw_conn is None:
            self._raw_conn = self._engine.raw_connection()
            driver = self._raw_conn.driver_connection
            if self._engine.dialect.name != "sqlite" and hasattr(driver, "autocommit"):
                driver.autocommit = True
        return self._raw_conn
