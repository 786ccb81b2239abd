"""Integers stay integers on the node's embedded path, and decisions that compare them are
the same on OPA, type included.

regorus's Python dict API (``add_data``/``eval_rule``) returns 5 as 5.0
(benchmarks/policy_engines.py reports it as an upstream note). The node never uses that
API: it sends JSON in and reads JSON out (node/policy/embedded.py), and a 5.0 there would
not pass unnoticed: an obligation such as ``max_results`` or ``retention_days`` must be an
``int`` (node/policy/decision.py), else the decision is a ``policy_error`` refusal. These
tests pin the JSON path, compare with ``json.dumps`` (``5 == 5.0`` in Python, so a plain
``==`` would not see the difference), and check the one way a float could reach the
engines, a ``30.0`` in the policy data, is refused when the data is loaded.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.policy.data import PolicyDataError, load_policy_data
from node.policy.decision import Decision
from node.policy.embedded import EmbeddedEngine
from node.policy.opa import OpaEngine
from node.policy.opa_process import OpaServer, start_opa
from tests.unit.policy_examples import ALLOW_INPUT, POLICIES, ROOT

CONFORMANCE = ROOT / "tests" / "conformance"
FETCH_INPUT: dict[str, Any] = json.loads((CONFORMANCE / "inputs" / "fetch.json").read_text())
# The corpus's data, under which FR-DGPN may both Match and Fetch.
STANDARD: dict[str, Any] = json.loads((CONFORMANCE / "data" / "standard.json").read_text())
# Beyond a double's exact integers (2**53 + 1): a float on the way would round it.
BIG = 9_007_199_254_740_993
# A decision that reads one integer from data and one from input, and compares them.
ARITHMETIC = """package liaison.exchange

decision := {"allow": true, "reasons": [], "obligations": {"max_results": n}} if {
	input.asked <= data.settings.cap
	n := data.settings.cap - input.asked
}

decision := {"allow": false, "reasons": ["over_cap"]} if input.asked > data.settings.cap
"""


def typed(decision: Decision) -> str:
    """The decision as JSON: 5 and 5.0 differ here, as they do to the node."""
    return json.dumps(
        [decision.allow, decision.reasons, dict(decision.obligations)], sort_keys=True
    )


@pytest.fixture(scope="module")
def opa() -> Iterator[OpaServer]:
    with start_opa() as server:
        yield server


def with_settings(**settings: Any) -> dict[str, Any]:
    data = copy.deepcopy(STANDARD)
    data["settings"].update(settings)
    return data


def test_embedded_keeps_integers_from_data_and_input(tmp_path: Path) -> None:
    (tmp_path / "decision.rego").write_text(ARITHMETIC)
    engine = EmbeddedEngine(tmp_path, {"settings": {"cap": BIG}})
    for asked, left in ((1, BIG - 1), (BIG - 5, 5)):
        decision = engine.decide({"asked": asked})
        assert decision.allow, decision
        assert type(decision.obligations["max_results"]) is int
        assert decision.obligations["max_results"] == left
    assert engine.decide({"asked": BIG + 1}).reasons == ("over_cap",)


def test_arithmetic_on_integers_is_the_same_on_both_engines(tmp_path: Path) -> None:
    (tmp_path / "decision.rego").write_text(ARITHMETIC)
    data = {"settings": {"cap": 10}}
    embedded = EmbeddedEngine(tmp_path, data)
    # A fresh OPA of its own: pushing replaces the `liaison` namespace.
    with start_opa() as server:
        engine = OpaEngine(server.url, tmp_path, data, deadline=5.0)
        try:
            for asked in (0, 5, 9, 10, 11):
                assert typed(embedded.decide({"asked": asked})) == typed(
                    engine.decide({"asked": asked})
                ), asked
        finally:
            engine.close()


@pytest.mark.parametrize("days", [1, 30, 90, 3650, BIG])
def test_retention_days_decision_is_identical_on_both_engines(opa: OpaServer, days: int) -> None:
    data = with_settings(retention_days=days)
    opa_engine = OpaEngine(opa.url, POLICIES, data, deadline=5.0)
    try:
        ours, theirs = (
            EmbeddedEngine(POLICIES, data).decide(FETCH_INPUT),
            opa_engine.decide(FETCH_INPUT),
        )
    finally:
        opa_engine.close()
    assert ours.allow, ours
    assert type(ours.obligations["retention_days"]) is int
    assert ours.obligations["retention_days"] == days
    assert typed(ours) == typed(theirs)


@pytest.mark.parametrize("cap", [1, 3, 10])
def test_max_results_cap_comparison_is_identical_on_both_engines(opa: OpaServer, cap: int) -> None:
    # min() over the agreement's and the node's caps: an integer comparison in the Rego.
    data = with_settings(max_match_results=cap)
    opa_engine = OpaEngine(opa.url, POLICIES, data, deadline=5.0)
    try:
        ours, theirs = (
            EmbeddedEngine(POLICIES, data).decide(ALLOW_INPUT),
            opa_engine.decide(ALLOW_INPUT),
        )
    finally:
        opa_engine.close()
    assert ours.allow, ours
    assert type(ours.obligations["max_results"]) is int
    assert typed(ours) == typed(theirs)


def test_a_float_in_the_policy_data_is_refused_before_any_engine_sees_it(tmp_path: Path) -> None:
    # The engines differ on 30.0 (regorus writes it back as 30, OPA as 30.0, which the node
    # refuses as policy_error), so the node's data schema must keep it out.
    path = tmp_path / "agreements.json"
    path.write_text(json.dumps(with_settings(retention_days=30.0)))
    with pytest.raises(PolicyDataError, match=r"settings\.retention_days: expected an integer"):
        load_policy_data(path)
