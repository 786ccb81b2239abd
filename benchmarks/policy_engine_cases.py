"""What every candidate Rego engine is checked on: small Rego cases with the values OPA v1
returns, the node's decision policy on a handful of inputs, and that policy written out in
plain Python (the oracle for those inputs and the speed baseline).

Imported by ``policy_engines.py`` as a sibling module, in the parent and in each worker
subprocess (``python benchmarks/policy_engines.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

AGREEMENT: dict[str, Any] = {
    "categories": ["travel_document", "vehicle"],
    "purposes": ["criminal_investigation", "border_control"],
    "methods": ["Match"],
    "legal_bases": ["none", "bilateral_agreement"],
    "valid_from": "2025-01-01",
    "valid_until": "2027-12-31",
    "max_results": 5,
}
DATA: dict[str, Any] = {
    "agreements": {"FR-DGPN": AGREEMENT},
    "settings": {"max_match_results": 10},
}
# The conformance corpus's base Match input, which the engines' unit tests decide too (read
# by path: the workers run with their own sys.path). DATA's agreement allows it.
ALLOW_INPUT: dict[str, Any] = json.loads(
    (ROOT / "tests" / "conformance" / "inputs" / "match.json").read_text(encoding="utf-8")
)
DENY_INPUT: dict[str, Any] = {
    **ALLOW_INPUT,
    "now": "2028-01-01T00:00:00Z",
    "requester": {"node_id": "FR-DGPN", "country": "FR", "status": "suspended"},
    "request": {"method": "Match", "category": "firearm", "identifier_kinds": ["x"]},
}


@dataclass(frozen=True)
class Case:
    """One semantics check: ``res := [v | v := <expr>]`` turns "undefined" into ``[]``."""

    name: str
    rules: str
    expr: str
    expected: Any
    input: Any = None


EVERY = "ok if {\n  every x in input.xs { x > 0 }\n}"

CASES: list[Case] = [
    Case(
        "default_rule_false",
        "default allow := false\nallow if input.x == 1",
        "allow",
        [False],
        {"x": 2},
    ),
    Case(
        "default_rule_true",
        "default allow := false\nallow if input.x == 1",
        "allow",
        [True],
        {"x": 1},
    ),
    Case("every_all_true", EVERY, "ok", [True], {"xs": [1, 2]}),
    Case("every_one_false", EVERY, "ok", [], {"xs": [1, -1]}),
    Case("every_empty", EVERY, "ok", [True], {"xs": []}),
    Case(
        "some_in", "s contains x if { some x in input.xs; x > 1 }", "s", [[2, 3]], {"xs": [3, 1, 2]}
    ),
    Case(
        "some_k_v_in_object",
        "s contains k if { some k, v in input.o; v }",
        "s",
        [["a"]],
        {"o": {"a": True, "b": False}},
    ),
    Case("set_comprehension", "s := {x | some x in input.xs}", "s", [[1, 2]], {"xs": [2, 1, 2]}),
    Case(
        "array_comprehension",
        "a := [y | some x in input.xs; y := x * 2]",
        "a",
        [[4, 2]],
        {"xs": [2, 1]},
    ),
    Case(
        "count_empty_partial_set",
        "s contains x if { some x in input.xs }",
        "count(s)",
        [0],
        {"xs": []},
    ),
    Case("min_set", "", "min({5, 10})", [5]),
    Case("min_set_of_data", "s contains 10 if true\ns contains 5 if true", "min(s)", [5]),
    Case("min_array", "", "min([3, 1, 2])", [1]),
    Case("max_set", "", "max({5, 10, 7})", [10]),
    Case("string_less_equal", "", '"2025-01-01" <= "2025-01-10"', [True]),
    Case("string_year_boundary", "", '"2027-12-31" < "2028-01-01"', [True]),
    Case("substring", "", 'substring("2026-11-29T13:45:12Z", 0, 10)', ["2026-11-29"]),
    Case("object_get_path", "", 'object.get(input, ["a", "b"], "d")', [7], {"a": {"b": 7}}),
    Case("object_get_default", "", 'object.get(input, "missing", 7)', [7], {}),
    Case("in_partial_set", 's contains "a" if true', '"a" in s', [True]),
    Case("not_undefined_is_true", "t if not input.missing == 1", "t", [True], {}),
    Case("neq_undefined_is_undefined", "t if input.missing != 1", "t", [], {}),
    Case("int_stays_int", "", "input.n", [5], {"n": 5}),
    Case("sort_set", 's := {"b", "a", "c"}', "sort(s)", [["a", "b", "c"]]),
    Case("else_chain", 'f := "a" if input.x == 1\nelse := "b"', "f", ["b"], {"x": 2}),
    Case("with_input", 't if input.x == 1\nu if t with input as {"x": 1}', "u", [True], {}),
    Case("regex_match", "", 'regex.match(`^\\d{4}-\\d{2}-\\d{2}$`, "2026-11-29")', [True]),
    Case(
        "parse_rfc3339_z",
        "",
        'time.parse_rfc3339_ns("2026-11-29T13:45:12Z")',
        [1795959912000000000],
    ),
    Case("is_object_undefined", "t if is_object(input.missing)", "t", [], {}),
]


def expected_decision(policy_input: Any) -> dict[str, Any]:
    """The policy for a Match under the `bilateral` profile written out in Python: the speed
    baseline and the oracle for its cases."""
    inp = policy_input if isinstance(policy_input, dict) else {}

    def get(*path: str) -> Any:
        cur: Any = inp
        for key in path:
            if not isinstance(cur, dict) or key not in cur:
                return None
            cur = cur[key]
        return cur

    reasons: set[str] = set()
    if get("version") != 1 or isinstance(get("version"), bool):
        reasons.add("unsupported_input_version")
    if get("node", "profile") != "bilateral":
        return {"allow": False, "reasons": sorted(reasons | {"unknown_profile"}), "obligations": {}}
    if get("requester", "status") != "active":
        reasons.add("requester_not_active")
    purpose = get("envelope", "purpose")
    if not isinstance(purpose, str) or purpose == "":
        reasons.add("purpose_missing")
        purpose = None
    agreement = DATA["agreements"].get(get("requester", "node_id"))
    if not isinstance(agreement, dict):
        reasons.add("no_agreement")
    else:
        now = get("now")
        today = now[:10] if isinstance(now, str) else None
        if today is None or not agreement["valid_from"] <= today <= agreement["valid_until"]:
            reasons.add("agreement_not_in_force")
        if purpose is not None and purpose not in agreement["purposes"]:
            reasons.add("purpose_not_agreed")
        if get("request", "category") not in agreement["categories"]:
            reasons.add("category_not_agreed")
        if get("request", "method") not in agreement["methods"]:
            reasons.add("method_not_permitted")
        if get("envelope", "legal_basis") not in agreement["legal_bases"]:
            reasons.add("legal_basis_not_agreed")
    allow = not reasons
    caps = [agreement["max_results"]] if isinstance(agreement, dict) else []
    caps.append(DATA["settings"]["max_match_results"])
    return {
        "allow": allow,
        "reasons": sorted(reasons),
        "obligations": {"max_results": min(caps)} if allow else {},
    }


DECISION_INPUTS: dict[str, Any] = {
    "decision_allow": ALLOW_INPUT,
    "decision_deny_many": DENY_INPUT,
    "decision_empty_input": {},
    "decision_no_agreement": {
        **ALLOW_INPUT,
        "requester": {"node_id": "XX-NONE", "status": "active"},
    },
    "decision_first_day": {**ALLOW_INPUT, "now": "2025-01-01T00:00:00Z"},
    "decision_day_after": {**ALLOW_INPUT, "now": "2028-01-01T00:00:00Z"},
}
