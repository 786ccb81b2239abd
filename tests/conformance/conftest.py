"""Fixtures for the conformance suite: one OPA server, engines per policy data document.

Both engines load the repository's own policy files (``policies/``). The embedded engine is
built once per data document and kept. An OPA server holds one data document at a time
(pushing replaces the ``liaison`` namespace and the root data), so the bank keeps one OPA
engine and rebuilds it, pushing again, when a test asks for another document; the corpus
tests are ordered by data document so that happens once per document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from node.policy.corpus import Case, load_corpus
from node.policy.decision import Decision, PolicyEngine
from node.policy.embedded import EmbeddedEngine
from node.policy.explanation import explain
from node.policy.opa import OpaEngine
from node.policy.opa_process import OpaServer, start_opa

CORPUS_DIR = Path(__file__).resolve().parent
ROOT = CORPUS_DIR.parents[1]
POLICIES = ROOT / "policies"
CONTRACT = POLICIES / "CONTRACT.md"
ENGINES = ("embedded", "opa")

# Generous: equality tests on a loaded CI box must not fail on the engine's deadline.
OPA_DEADLINE = 5.0


def contract_reasons(contract: Path = CONTRACT) -> set[str]:
    """Every reason in the reasons table of CONTRACT.md (second column, in backticks; the
    parenthesised remarks, which quote other values such as `none` or `strict`, skipped)."""
    section = contract.read_text(encoding="utf-8").split("\n## Reasons", 1)[1]
    section = section.split("\n## ", 1)[0]
    reasons: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] == "group" or not cells[0].strip("-: "):
            continue
        reasons.update(re.findall(r"`([a-z][a-z0-9_]*)`", re.sub(r"\([^)]*\)", "", cells[1])))
    return reasons


class EngineBank:
    """Engines by (kind, data document name); each case's decision and explanation computed
    once."""

    def __init__(self, opa_url: str, documents: Mapping[str, Mapping[str, Any]]) -> None:
        self._opa_url = opa_url
        self._documents = documents
        self._embedded: dict[str, EmbeddedEngine] = {}
        self._opa: OpaEngine | None = None
        self._opa_document: str | None = None
        self._decisions: dict[tuple[str, str], Decision] = {}
        self._explanations: dict[tuple[str, str], dict[str, Any]] = {}

    def engine(self, kind: str, document: str) -> PolicyEngine:
        if document not in self._documents:
            raise KeyError(f"no policy data document {document!r}")
        if kind == "embedded":
            if document not in self._embedded:
                self._embedded[document] = EmbeddedEngine(POLICIES, self._documents[document])
            return self._embedded[document]
        if kind == "opa":
            if self._opa is None or self._opa_document != document:
                if self._opa is not None:
                    self._opa.close()
                    self._opa = None
                self._opa = OpaEngine(
                    self._opa_url, POLICIES, self._documents[document], deadline=OPA_DEADLINE
                )
                self._opa_document = document
            return self._opa
        raise KeyError(f"no engine {kind!r}")

    def decide(self, kind: str, case: Case) -> Decision:
        key = (kind, case.name)
        if key not in self._decisions:
            self._decisions[key] = self.engine(kind, case.data).decide(case.input)
        return self._decisions[key]

    def explain(self, kind: str, case: Case) -> dict[str, Any]:
        key = (kind, case.name)
        if key not in self._explanations:
            self._explanations[key] = explain(self.engine(kind, case.data), case.input)
        return self._explanations[key]

    def close(self) -> None:
        for engine in self._embedded.values():
            engine.close()
        self._embedded.clear()
        if self._opa is not None:
            self._opa.close()
            self._opa = None


@pytest.fixture(scope="session")
def opa_server() -> Iterator[OpaServer]:
    """The one OPA server of the conformance session, stopped at the end."""
    server = start_opa()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def known_reasons() -> set[str]:
    return contract_reasons()


@pytest.fixture(scope="session")
def corpus() -> tuple[dict[str, Any], list[Case]]:
    return load_corpus(CORPUS_DIR)


@pytest.fixture(scope="session")
def bank(opa_server: OpaServer, corpus: tuple[dict[str, Any], list[Case]]) -> Iterator[EngineBank]:
    documents, _ = corpus
    engines = EngineBank(opa_server.url, documents)
    try:
        yield engines
    finally:
        engines.close()
