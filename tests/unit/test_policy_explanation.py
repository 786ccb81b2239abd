"""The parts of `liaison policy explain` the corpus cannot reach: which rules and packages
it reads, how it names a contradiction, and what it refuses (real engines, real OPA)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from node.policy.cache import CachingEngine
from node.policy.decision import Decision
from node.policy.embedded import EmbeddedEngine
from node.policy.explanation import (
    contradictions,
    explain,
    fired_rules,
    packages_behind,
    rules_by_package,
)
from node.policy.opa import OpaEngine
from node.policy.opa_process import start_opa
from tests.unit.policy_examples import ALLOW_INPUT, DATA, POLICIES

PACKAGES = {
    "liaison.exchange",
    "liaison.base",
    "liaison.profiles.eu_led",
    "liaison.profiles.bilateral",
    "liaison.profiles.strict",
}


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, Any]]:
    with start_opa() as server:
        embedded = EmbeddedEngine(POLICIES, DATA)
        opa = OpaEngine(server.url, POLICIES, DATA, deadline=5.0)
        try:
            yield {"embedded": embedded, "opa": opa}
        finally:
            opa.close()
            embedded.close()


def test_rules_are_found_by_the_compiler_and_functions_are_not_rules() -> None:
    module = """package a.b["c"]

x := 1

p["y z"] := 2

q.r.s := 3

default f(_) := 1

f(x) := 2 if x

g(x) := 3

s contains 1

t if false
else := true

default u := 4

v[k] := 1 if {
	some k in [1]
}
"""
    assert rules_by_package((("m.rego", module),)) == {"a.b.c": ("p", "q", "s", "t", "u", "v", "x")}


@pytest.mark.parametrize(
    ("node", "profile"),
    [
        ({"profile": "eu-led"}, "liaison.profiles.eu_led"),
        ({"profile": "strict"}, "liaison.profiles.strict"),
        ({"profile": "lenient"}, None),
        ({"profile": "profiles.strict"}, None),
        ({"profile": ["strict"]}, None),
        ([], None),
        (None, None),
    ],
)
def test_only_the_selected_profile_is_read(node: Any, profile: str | None) -> None:
    behind = packages_behind(PACKAGES, {"node": node})
    assert behind == ["liaison.exchange", *([profile] if profile else []), "liaison.base"]


def test_packages_behind_an_input_that_is_not_an_object() -> None:
    assert packages_behind(PACKAGES, ["not", "an", "object"]) == [
        "liaison.exchange",
        "liaison.base",
    ]


def test_a_listed_allow_under_a_deny_is_a_contradiction() -> None:
    denied = Decision(False, ("handling_code_forbids_resharing",), {}, "r")
    listed = {"allow": True, "reasons": [], "obligations": {"handling_code": "H2"}}
    assert contradictions(denied, listed) == [
        "data.liaison.exchange.decision.allow is listed as True, decided False",
        "data.liaison.exchange.decision.reasons is listed as (), "
        "decided ('handling_code_forbids_resharing',)",
        "data.liaison.exchange.decision.obligations is listed as {'handling_code': 'H2'}, "
        "decided {}",
    ]
    same = {"allow": False, "reasons": ["handling_code_forbids_resharing"], "obligations": {}}
    assert contradictions(denied, same) == []


def test_an_answer_the_engine_read_as_policy_error_agrees_with_that_deny() -> None:
    error = Decision.deny("policy_error", "r")
    assert contradictions(error, "<not an object>") == []
    assert contradictions(error, None) == []  # undefined
    assert contradictions(error, {"allow": True, "reasons": [], "obligations": {}}) != []


def test_fired_rules_lists_what_holds() -> None:
    document = {"t": True, "f": False, "e": [], "s": ["a"], "n": 0, "o": {"k": "v", "z": None}}
    assert fired_rules(document, "data.p") == [
        "data.p.n = 0",
        'data.p.o.k = "v"',
        'data.p.s = ["a"]',
        "data.p.t",
    ]


@pytest.mark.parametrize("kind", ["embedded", "opa"])
def test_an_allowed_match_is_explained_alike_on_both_engines(
    engines: dict[str, Any], kind: str
) -> None:
    out = explain(engines[kind], ALLOW_INPUT)
    assert (out["allow"], out["reasons"], out["obligations"]) == (True, [], {"max_results": 5})
    assert "contradictions" not in out
    assert "data.liaison.exchange.decision.allow" in out["fired"]
    assert "data.liaison.exchange.decision.obligations.max_results = 5" in out["fired"]
    assert not [line for line in out["fired"] if ".reasons = " in line]
    assert not [line for line in out["fired"] if line.startswith("data.liaison.profiles.eu_led")]
    assert out["fired"] == explain(engines["embedded"], ALLOW_INPUT)["fired"]


@pytest.mark.parametrize("kind", ["embedded", "opa"])
def test_rule_values_take_only_names(engines: dict[str, Any], kind: str) -> None:
    with pytest.raises(ValueError, match="not a package"):
        engines[kind].rule_values("liaison.base; true", ["max_results"], ALLOW_INPUT)
    with pytest.raises(ValueError, match="not a package"):
        engines[kind].rule_values("liaison/../system", ["x"], ALLOW_INPUT)


def test_an_engine_that_cannot_list_its_rules_is_refused(engines: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="cannot list its rules"):
        explain(CachingEngine(engines["embedded"]), ALLOW_INPUT)
