"""Checks and fixtures for the whole suite."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from node.policy.opa_process import OpaNotFound, find_opa

# A PostgreSQL database the tests may create and drop databases beside (its user needs
# CREATEDB); `make test` starts a throwaway cluster with scripts/postgres.sh and sets both.
POSTGRES_URL = "LIAISON_TEST_POSTGRES_URL"
REQUIRE_POSTGRES = "LIAISON_REQUIRE_POSTGRES"


def _postgres_problem(url: str) -> str | None:
    """Why the tests cannot use the PostgreSQL at ``url``, or None if they can."""
    try:
        engine = create_engine(url, poolclass=NullPool)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        return f"{POSTGRES_URL} is not a usable database URL: {exc}"
    try:
        if engine.dialect.name != "postgresql":
            return f"{POSTGRES_URL} names a {engine.dialect.name} database, not PostgreSQL"
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        where = make_url(url).render_as_string(hide_password=True)
        return f"cannot connect to {where}: {exc.__cause__ or exc}"
    finally:
        engine.dispose()
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    """The suite needs the real OPA binary, and under `make test` a real PostgreSQL: a
    missing one fails loudly, never skips."""
    try:
        find_opa()
    except OpaNotFound as exc:
        raise pytest.UsageError(f"{exc}; run `make setup` (scripts/setup.sh) first") from None
    url = os.environ.get(POSTGRES_URL, "")
    if url:
        problem = _postgres_problem(url)
        if problem:
            raise pytest.UsageError(f"{problem} (scripts/postgres.sh start gives a fresh one)")
    elif os.environ.get(REQUIRE_POSTGRES) == "1":
        raise pytest.UsageError(
            f"{REQUIRE_POSTGRES}=1 but {POSTGRES_URL} is unset: the PostgreSQL tests must run. "
            f"Use `make test`, or `export {POSTGRES_URL}=$(scripts/postgres.sh start)`"
        )


@pytest.fixture(scope="session")
def _postgres_admin() -> Iterator[Engine]:
    url = os.environ.get(POSTGRES_URL, "")
    if not url:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_URL} (make test does)")
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(_postgres_admin: Engine) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test (even with
    connections still open to it)."""
    name = f"liaison_t_{secrets.token_hex(6)}"
    with _postgres_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _postgres_admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with _postgres_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


DatabaseAway = Callable[[str], AbstractContextManager[None]]


@pytest.fixture
def database_away(_postgres_admin: Engine) -> DatabaseAway:
    """`with database_away(url):` the database named by `url` is gone for the block: its
    sessions are cut and no new one is let in (a server restart or a network cut, as a
    client sees it); after the block it takes connections again."""

    @contextmanager
    def away(url: str) -> Iterator[None]:
        name = make_url(url).database
        with _postgres_admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            try:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                yield
            finally:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    return away
