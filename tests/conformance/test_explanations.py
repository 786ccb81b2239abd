"""`liaison policy explain` over the corpus, on both engines: an explanation never
contradicts the decision it explains, and the two engines explain alike.

An explanation lists the rules that hold behind a decision ("fired"). The checks here are
written from the decision and from `policies/liaison/exchange/decision.rego` (whose
`decision` is built from its rules `allow`, `reasons` and `obligations`), not from the
explanation code: whatever the decision says, `...decision.allow` (and `...exchange.allow`)
is listed exactly when the decision allows, the reasons listed are the decision's reasons,
and the obligations listed are the decision's. OPA, the reference implementation of Rego,
must list the very same rules with the very same values as the embedded engine.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from node.policy.corpus import Case, judge_explanation, load_corpus
from node.policy.decision import Decision

from .conftest import CORPUS_DIR, ENGINES, EngineBank

_, CASES = load_corpus(CORPUS_DIR)

# The decision, and the rules of decision.rego it is made of.
DECISION_RULES = ("data.liaison.exchange.decision", "data.liaison.exchange")

PARAMS = [
    pytest.param(engine, case, id=f"{engine}-{case.name}")
    for engine in ENGINES
    for case in sorted(CASES, key=lambda c: c.data)
]


def listed(path: str, value: Any) -> list[str]:
    """How a rule holding `value` is listed: true as its path, a value as `path = json`;
    false, null and empty values are not listed; an object, key by key."""
    if isinstance(value, dict):
        return [line for key in sorted(value) for line in listed(f"{path}.{key}", value[key])]
    if value is True:
        return [path]
    if value is False or value in (None, [], ""):
        return []
    return [f"{path} = {json.dumps(value)}"]


def under(fired: list[str], path: str) -> list[str]:
    """The lines of `fired` about rule `path` or a key below it."""
    return [line for line in fired if line == path or line.startswith((f"{path} = ", f"{path}."))]


def disagreements(decision: Decision, out: dict[str, Any]) -> list[str]:
    problems = []
    headline = (out["allow"], out["reasons"], out["obligations"])
    if headline != (decision.allow, list(decision.reasons), dict(decision.obligations)):
        problems.append(f"the explanation's decision {headline} is not the decision {decision}")
    fired = out["fired"]
    for prefix in DECISION_RULES:
        for rule, value in (
            ("allow", decision.allow),
            ("reasons", list(decision.reasons)),
            ("obligations", dict(decision.obligations)),
        ):
            path = f"{prefix}.{rule}"
            want, got = listed(path, value), under(fired, path)
            if got != want:
                problems.append(f"{path}: listed {got}, the decision makes it {want}")
    return problems


@pytest.mark.parametrize(("engine", "case"), PARAMS)
def test_explanation_agrees_with_the_decision(bank: EngineBank, engine: str, case: Case) -> None:
    out = bank.explain(engine, case)
    problems = disagreements(bank.decide(engine, case), out)
    problems += judge_explanation(case, out["fired"])
    assert not problems, f"{case.source} {case.name!r} on {engine}:\n  " + "\n  ".join(problems)


def test_engines_explain_alike(bank: EngineBank) -> None:
    differences = []
    for case in sorted(CASES, key=lambda c: c.data):  # one push of each document to OPA
        ours, theirs = (bank.explain(engine, case)["fired"] for engine in ENGINES)
        if ours != theirs:
            differences.append(
                f"{case.source} {case.name!r}: only embedded {sorted(set(ours) - set(theirs))}, "
                f"only opa {sorted(set(theirs) - set(ours))}"
            )
    assert not differences, "\n".join(differences)
