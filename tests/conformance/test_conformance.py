"""The conformance corpus: every case, on the embedded engine and on a real OPA server.

The expected decisions in ``cases/*.json`` were written from the documented rules
(``policies/CONTRACT.md``, ``policies/liaison/base/base.md`` and the profiles' notes), not
copied from an engine: a failing case is either a corpus mistake or an engine (Rego) that
does not do what the documents say.
"""

from __future__ import annotations

import pytest

from node.policy.corpus import Case, judge, load_corpus
from node.policy.decision import KNOWN_OBLIGATIONS

from .conftest import CORPUS_DIR, ENGINES, EngineBank, contract_reasons

DOCUMENTS, CASES = load_corpus(CORPUS_DIR)

MIN_CASES = 80

# Reasons of the CONTRACT table that no case can expect from the repository's policies:
# they name a broken policy, not a request. The entry point turns a profile answer without
# reasons into `policy_error`, and every profile's verdict into `obligations_undefined`
# when nothing refuses but no obligation was computed; neither happens with correct Rego
# (the engines' own failure paths are tested in tests/unit/test_policy_*.py).
UNREACHABLE_BY_INPUT = {
    "policy_error": "a malformed profile answer or an engine failure",
    "obligations_undefined": "verdict guard: never expected",
}

FETCH_OBLIGATIONS = {"handling_code", "redact", "require_approval", "retention_days"}

# Engine-major, and grouped by data document within an engine (a stable sort keeps file
# order), so the OPA server is pushed each document once.
PARAMS = [
    pytest.param(engine, case, id=f"{engine}-{case.name}")
    for engine in ENGINES
    for case in sorted(CASES, key=lambda c: c.data)
]


@pytest.mark.parametrize(("engine", "case"), PARAMS)
def test_case(bank: EngineBank, engine: str, case: Case) -> None:
    decision = bank.decide(engine, case)
    problems = judge(case, decision)
    assert not problems, f"{case.source} {case.name!r} on {engine}: " + "; ".join(problems)


def test_engines_agree_on_every_case(bank: EngineBank) -> None:
    differences = []
    for case in CASES:
        embedded = bank.decide("embedded", case)
        opa = bank.decide("opa", case)
        ours = (embedded.allow, embedded.reasons, dict(embedded.obligations))
        theirs = (opa.allow, opa.reasons, dict(opa.obligations))
        if ours != theirs:
            differences.append(f"{case.source} {case.name!r}: embedded {ours} != opa {theirs}")
    assert not differences, "\n".join(differences)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= MIN_CASES


def test_contract_table_is_parsed() -> None:
    reasons = contract_reasons()
    # A few from each group: an empty or half-read table must not pass the coverage test.
    assert {
        "unknown_profile",
        "requester_not_active",
        "no_agreement",
        "policy_data_invalid",
        "jit_not_member",
        "source_restrictions_invalid",
        "fetch_not_permitted_by_profile",
        "obligations_undefined",
    } <= reasons
    assert "none" not in reasons and "strict" not in reasons  # remarks in parentheses


def test_every_contract_reason_has_a_case() -> None:
    table = contract_reasons()
    assert set(UNREACHABLE_BY_INPUT) <= table, "an exemption names a reason no longer listed"
    expected = {reason for case in CASES for reason in case.expect.get("reasons", [])}
    missing = sorted(table - expected - set(UNREACHABLE_BY_INPUT))
    assert not missing, f"reasons in CONTRACT.md without a corpus case: {missing}"


def test_every_expected_reason_is_in_the_contract() -> None:
    table = contract_reasons()
    unknown = {
        f"{case.source}: {reason}"
        for case in CASES
        for reason in case.expect.get("reasons", [])
        if reason not in table
    }
    assert not unknown, f"expected reasons the contract does not list: {sorted(unknown)}"


def test_expectations_are_well_formed() -> None:
    """Denials name sorted reasons; every allow states its exact obligations (a Fetch that
    needs approval also its `approval_deadline_hours`, and no other Fetch does)."""
    problems = []
    for case in CASES:
        expect = case.expect
        reasons = expect.get("reasons", [])
        if expect["allow"]:
            obligations = expect.get("obligations")
            if reasons or not isinstance(obligations, dict):
                problems.append(f"{case.source}: an allow needs no reasons and obligations")
                continue
            if not set(obligations) <= KNOWN_OBLIGATIONS:
                problems.append(f"{case.source}: unknown obligation in {sorted(obligations)}")
            method = case.input.get("request", {}).get("method")
            wanted = {
                "Match": {"max_results"},
                "PublishNotice": {"retention_days"},
            }.get(str(method), set(FETCH_OBLIGATIONS))
            if method == "Fetch" and obligations.get("require_approval") is True:
                wanted.add("approval_deadline_hours")
            if set(obligations) != wanted:
                problems.append(f"{case.source}: a {method} carries exactly {sorted(wanted)}")
        elif not reasons or reasons != sorted(set(reasons)):
            problems.append(f"{case.source}: a denial names its reasons, sorted, once each")
    assert not problems, "\n".join(problems)


def test_every_data_document_is_used() -> None:
    used = {case.data for case in CASES}
    assert used == set(DOCUMENTS), f"unused data documents: {sorted(set(DOCUMENTS) - used)}"
