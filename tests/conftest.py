"""Checks for the whole suite."""

from __future__ import annotations

import pytest

from node.policy.opa_process import OpaNotFound, find_opa


def pytest_sessionstart(session: pytest.Session) -> None:
    """The suite needs the real OPA binary: a missing one fails loudly, never skips."""
    try:
        find_opa()
    except OpaNotFound as exc:
        raise pytest.UsageError(f"{exc}; run `make setup` (scripts/setup.sh) first") from None
