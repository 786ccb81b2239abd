"""The decision contract and the embedded engine on the real policy files."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from node.policy.decision import Decision, PolicyUnavailable
from node.policy.embedded import EmbeddedEngine, PolicyLoadError
from node.policy.revision import policy_revision
from tests.unit.policy_examples import ALLOW_INPUT, DATA, POLICIES


@pytest.fixture(scope="module")
def engine() -> EmbeddedEngine:
    return EmbeddedEngine(POLICIES, DATA)


# --- Decision.from_document -----------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        "allow",
        1,
        {},
        {"allow": "true"},
        {"allow": 1},
        {"allow": True, "reasons": "x"},
        {"allow": False, "reasons": [1]},
        {"allow": True, "obligations": []},
    ],
)
def test_malformed_document_is_policy_error(doc: object) -> None:
    assert Decision.from_document(doc, "r") == Decision.deny("policy_error", "r")


def test_unknown_obligation_denies() -> None:
    d = Decision.from_document({"allow": True, "obligations": {"teleport": 1}}, "r")
    assert (d.allow, d.reasons) == (False, ("unknown_obligation",))


FETCH = {
    "handling_code": "H1",
    "redact": ["health"],
    "require_approval": False,
    "retention_days": 30,
}
TICKET = {**FETCH, "require_approval": True, "approval_deadline_hours": 48}


@pytest.mark.parametrize(
    "obligations",
    [
        {"max_results": 5},
        FETCH,
        {**FETCH, "redact": []},
        TICKET,
        {**TICKET, "approval_deadline_hours": 1, "handling_code": "H3"},
    ],
)
def test_well_formed_obligations_allow(obligations: dict[str, object]) -> None:
    d = Decision.from_document({"allow": True, "reasons": [], "obligations": obligations}, "r")
    assert d == Decision(True, (), obligations, "r")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_results", 0),
        ("max_results", "5"),
        ("max_results", 2.5),
        ("max_results", True),
        ("redact", "health"),
        ("redact", ["health", 7]),
        ("redact", {"health": True}),
        ("redact", None),
        ("require_approval", "false"),
        ("require_approval", 0),
        ("retention_days", 0),
        ("retention_days", -30),
        ("retention_days", "30"),
        ("retention_days", 30.0),
        ("retention_days", False),
        ("handling_code", "H4"),
        ("handling_code", "h1"),
        ("handling_code", 1),
        ("handling_code", ["H1"]),
        ("approval_deadline_hours", 0),
        ("approval_deadline_hours", "48"),
        ("approval_deadline_hours", 1.5),
        ("approval_deadline_hours", True),
        ("approval_deadline_hours", None),
    ],
)
def test_malformed_obligation_value_is_policy_error(name: str, value: object) -> None:
    base = {"max_results": 5} if name == "max_results" else TICKET
    doc = {"allow": True, "reasons": [], "obligations": {**base, name: value}}
    assert Decision.from_document(doc, "r") == Decision.deny("policy_error", "r")


@pytest.mark.parametrize(
    "obligations",
    [
        {**FETCH, "require_approval": True},  # a ticket that could never expire
        {**FETCH, "approval_deadline_hours": 48},  # a deadline with nothing to decide
        {"max_results": 5, "approval_deadline_hours": 48},
    ],
)
def test_deadline_comes_exactly_with_approval(obligations: dict[str, object]) -> None:
    doc = {"allow": True, "reasons": [], "obligations": obligations}
    assert Decision.from_document(doc, "r") == Decision.deny("policy_error", "r")


def test_unknown_obligation_wins_over_a_malformed_one() -> None:
    doc = {"allow": True, "obligations": {"teleport": 1, "retention_days": "x"}}
    assert Decision.from_document(doc, "r").reasons == ("unknown_obligation",)


def test_a_deny_keeps_its_reasons_whatever_its_obligations() -> None:
    doc = {"allow": False, "reasons": ["no_agreement"], "obligations": {"retention_days": 0}}
    assert Decision.from_document(doc, "r").reasons == ("no_agreement",)


def test_allow_with_reasons_denies() -> None:
    d = Decision.from_document({"allow": True, "reasons": ["x"]}, "r")
    assert (d.allow, d.reasons) == (False, ("policy_error",))


def test_deny_without_reasons_gets_one() -> None:
    assert Decision.from_document({"allow": False}, "r").reasons == ("denied_by_policy",)


# --- the embedded engine on the real policy -------------------------------------------------


def test_allow(engine: EmbeddedEngine) -> None:
    d = engine.decide(ALLOW_INPUT)
    assert d == Decision(True, (), {"max_results": 5}, engine.revision)
    assert type(d.obligations["max_results"]) is int


def test_deny_lists_every_reason(engine: EmbeddedEngine) -> None:
    d = engine.decide(
        {**ALLOW_INPUT, "version": 2, "request": {"method": "Fetch", "category": "firearm"}}
    )
    assert not d.allow
    # A Fetch also needs a legal basis and the record's facts (the case is named:
    # has_case_reference is enough outside `jit`).
    assert d.reasons == (
        "category_not_agreed",
        "legal_basis_insufficient",
        "method_not_permitted",
        "record_missing",
        "unsupported_input_version",
    )
    assert d.obligations == {}


def test_second_agreement_uses_setting_cap(engine: EmbeddedEngine) -> None:
    d = engine.decide(
        {
            **ALLOW_INPUT,
            "requester": {"node_id": "NL-KMAR", "status": "active"},
            "envelope": {"purpose": "criminal_investigation", "legal_basis": "mlat"},
        }
    )
    assert d.allow and d.obligations == {"max_results": 10}


@pytest.mark.parametrize("bad", [{}, {"version": None}, {"requester": []}])
def test_odd_inputs_deny_cleanly(engine: EmbeddedEngine, bad: dict[str, Any]) -> None:
    d = engine.decide(bad)
    assert not d.allow and "unsupported_input_version" in d.reasons


def test_unserialisable_input_is_policy_error(engine: EmbeddedEngine) -> None:
    d = engine.decide({**ALLOW_INPUT, "now": float("nan")})
    assert d == Decision.deny("policy_error", engine.revision)


def test_evaluation_error_is_policy_error(tmp_path: Path) -> None:
    pkg = tmp_path / "liaison"
    pkg.mkdir()
    (pkg / "p.rego").write_text(
        'package liaison.exchange\n\ndecision := {"allow": 1 / input.zero > 0}\n'
    )
    d = EmbeddedEngine(tmp_path, {}).decide({"zero": 0})
    assert d.reasons == ("policy_error",)


def test_decides_on_a_thread_other_than_the_constructor(engine: EmbeddedEngine) -> None:
    """regorus engines are bound to their thread: the event loop is not the builder."""
    out: list[Decision] = []
    worker = threading.Thread(target=lambda: out.append(engine.decide(ALLOW_INPUT)))
    worker.start()
    worker.join()
    assert out and out[0].allow


def test_closed_engine_is_unavailable() -> None:
    engine = EmbeddedEngine(POLICIES, DATA)
    engine.close()
    with pytest.raises(PolicyUnavailable):
        engine.decide(ALLOW_INPUT)


def test_parse_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "good.rego").write_text("package liaison.exchange\n\nx := 1\n")
    (tmp_path / "broken.rego").write_text("package liaison.exchange\n\ny := \n")
    with pytest.raises(PolicyLoadError, match=r"broken\.rego"):
        EmbeddedEngine(tmp_path, {})


def test_no_policy_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError):
        EmbeddedEngine(tmp_path, {})


def test_test_files_are_not_loaded(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text('package liaison.exchange\n\ndecision := {"allow": true}\n')
    (tmp_path / "p_test.rego").write_text("package liaison.exchange\n\ny := \n")
    assert EmbeddedEngine(tmp_path, {}).decide({}).allow


# --- revision ---------------------------------------------------------------------------------


def test_revision_format_and_stability() -> None:
    rev = policy_revision(POLICIES, DATA)
    assert rev.startswith("sha256:") and len(rev) == len("sha256:") + 16
    assert rev == policy_revision(POLICIES, json.loads(json.dumps(DATA)))
    assert rev == EmbeddedEngine(POLICIES, DATA).revision


def test_revision_moves_with_rego_and_data_but_not_tests(tmp_path: Path) -> None:
    shutil.copytree(POLICIES, tmp_path / "p")
    root = tmp_path / "p"
    rego = root / "liaison" / "exchange" / "decision.rego"
    before = policy_revision(root, DATA)
    (root / "liaison" / "exchange" / "decision_test.rego").write_text("package x_test\n")
    assert policy_revision(root, DATA) == before
    assert policy_revision(root, {**DATA, "settings": {"max_match_results": 9}}) != before
    rego.write_text(rego.read_text() + "\n# comment\n")
    assert policy_revision(root, DATA) != before


def test_revision_depends_on_file_names(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text("package a\n")
    before = policy_revision(tmp_path, {})
    (tmp_path / "a.rego").rename(tmp_path / "b.rego")
    assert policy_revision(tmp_path, {}) != before
