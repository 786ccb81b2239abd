"""Property tests: random requests, both engines, invariants that must hold for any input.

Inputs are drawn around the corpus's ``standard``, ``defaults`` and ``malformed_agreements``
data documents: the peers, teams and case references those documents know, ``now`` around
every validity edge, and now and then a field that is missing or of the wrong type. For every input:

1. the embedded engine and OPA return the same decision (allow, reasons, obligations);
2. a Fetch on legal basis ``none``, or none at all, is never allowed;
3. a requester whose status is not ``active`` is never allowed;
4. an allow carries only obligations the node knows (exactly ``max_results`` on a Match,
   exactly the four Fetch obligations on a Fetch, plus ``approval_deadline_hours`` exactly
   when ``require_approval`` is true), and a denial names sorted reasons from the CONTRACT
   table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation import vocabulary
from federation.vocabulary import LegalBasis
from node.policy.decision import KNOWN_OBLIGATIONS, Decision

from .conftest import EngineBank

EXAMPLES = 300

MISSING: Any = object()  # a drawn value meaning "leave the field out"

JUNK = st.sampled_from([None, 0, 1, -1, 2.5, "", "x", True, [], {}, ["FR"], {"a": 1}])

PEERS = {
    "FR-DGPN": "FR",
    "ES-CNP": "ES",
    "NL-KLPD": "NL",
    "AT-BK": "AT",
    "PL-KGP": "PL",
    "BY-MVD": "BY",
    "XX-NOBODY": "XX",
    # malformed_agreements: one malformation each
    "XA-STR": "XA",
    "XC-NOMETH": "XC",
    "XE-NOUNTIL": "XE",
    "XG-LIST": "XG",
    "XH-ZERO": "XH",
    "XJ-FRAC": "XJ",
    "XK-REDACT": "XK",
    "XL-REDACTCAT": "XL",
}
COUNTRIES = ["FR", "ES", "NL", "AT", "PL", "BY", "DE", "US", "XX"]
PROFILES = ["eu-led", "bilateral", "strict"]
PURPOSES = sorted(vocabulary.PURPOSES)
CATEGORIES = sorted(vocabulary.CATEGORIES)
LEGAL_BASES = [basis.value for basis in LegalBasis]
CASE_REFERENCES = [
    "CASE-2026-0042",
    "JIT-2026-017",
    "JIT-2026-020",
    "JIT-2026-021",
    "JIT-2025-003",
    "JIT-2024-009",
    "JIT-2026-030",
    "JIT-2026-040",
    "team-x",
    "JIT-BAD-MEMBERS",
    "JIT-BAD-TYPE",
    "JIT-BAD-WINDOW",
]
HANDLING_CODES = sorted(vocabulary.HANDLING_CODES)
FETCH_LEGAL_BASES = ("bilateral_agreement", "mlat", "jit", "treaty")

# Every bound of an agreement or team window in the data documents, and the days around.
EDGE_DAYS = [
    "2024-12-31",
    "2025-01-01",
    "2025-12-31",
    "2026-01-01",
    "2026-11-29",
    "2026-12-31",
    "2027-01-01",
    "2027-06-30",
    "2027-07-01",
    "2027-12-31",
    "2028-01-01",
]
EDGE_TIMES = ["00:00:00", "12:00:00", "23:59:59"]

CLOCKS = st.one_of(
    st.builds(lambda d, t: f"{d}T{t}Z", st.sampled_from(EDGE_DAYS), st.sampled_from(EDGE_TIMES)),
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31, 23, 59, 59)).map(
        lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    ),
)
ODD_CLOCKS = st.sampled_from([MISSING, "", "2026-11-29", "soon", 1795873512, None])


def weighted(*pairs: tuple[Any, int]) -> st.SearchStrategy[Any]:
    """A value drawn with the given weights (so that allows are common enough to test)."""
    return st.sampled_from([value for value, weight in pairs for _ in range(weight)])


def put(doc: dict[str, Any], key: str, value: Any) -> None:
    if value is not MISSING:
        doc[key] = value


@st.composite
def policy_inputs(draw: st.DrawFn) -> dict[str, Any]:
    # Two inputs in three are well formed; in the others each field is odd (missing,
    # unknown, of the wrong type) one time in eight.
    odd_one_in = draw(st.sampled_from([0, 0, 8]))

    def field(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        # (a middle value: Hypothesis favours the bounds of a range)
        if odd_one_in and draw(st.integers(0, odd_one_in - 1)) == odd_one_in // 2:
            return draw(st.one_of(odd, JUNK, st.just(MISSING)))
        return draw(good)

    method = field(
        st.sampled_from(["Match", "Fetch", "PublishNotice"]), st.sampled_from(["Delete", "match"])
    )
    category = field(st.sampled_from(CATEGORIES), st.just("spaceship"))
    peer = draw(weighted(("FR-DGPN", 10), ("ES-CNP", 3), *((p, 1) for p in PEERS)))

    doc: dict[str, Any] = {}
    put(doc, "version", field(st.just(1), st.sampled_from([2, "1", 1.0])))
    put(doc, "now", field(CLOCKS, ODD_CLOCKS))

    node: dict[str, Any] = {"node_id": "DE-BKA"}
    put(node, "country", field(st.just("DE"), st.sampled_from(["FR", "de"])))
    profiles = weighted(("bilateral", 2), ("eu-led", 2), ("strict", 1))
    put(node, "profile", field(profiles, st.just("lenient")))
    put(doc, "node", field(st.just(node), st.just(MISSING)))

    requester: dict[str, Any] = {}
    put(requester, "node_id", field(st.just(peer), st.sampled_from(["", "BY-OTHER"])))
    put(
        requester,
        "country",
        field(weighted((PEERS[peer], 8), *((c, 1) for c in COUNTRIES)), st.just("")),
    )
    status = weighted(("active", 16), ("suspended", 1), ("revoked", 1))
    put(requester, "status", field(status, st.sampled_from(["ACTIVE", "inactive"])))
    put(doc, "requester", field(st.just(requester), st.just([])))

    envelope: dict[str, Any] = {}
    purposes = weighted(("criminal_investigation", 6), *((p, 1) for p in PURPOSES))
    put(envelope, "purpose", field(purposes, st.just("curiosity")))
    bases = weighted(("bilateral_agreement", 3), ("none", 2), *((b, 1) for b in LEGAL_BASES))
    put(envelope, "legal_basis", field(bases, st.just("goodwill")))
    put(envelope, "has_legal_reference", field(weighted((True, 3), (False, 1)), st.just("true")))
    put(envelope, "has_case_reference", draw(st.booleans()))
    if method == "Fetch" or draw(st.integers(0, 9)) == 0:
        references = weighted(
            ("CASE-2026-0042", 3), ("JIT-2026-017", 3), *((r, 1) for r in CASE_REFERENCES)
        )
        put(envelope, "case_reference", field(references, st.just("jit-2026-017")))
    put(doc, "envelope", envelope)

    request: dict[str, Any] = {"identifier_kinds": ["document_number"]}
    put(request, "method", method)
    put(request, "category", category)
    put(doc, "request", request)

    if method == "Fetch" or draw(st.integers(0, 9)) == 0:
        record: dict[str, Any] = {}
        put(record, "category", field(st.just(category), st.sampled_from(CATEGORIES)))
        codes = weighted(("H0", 3), ("H1", 2), ("H2", 2), ("H3", 2))
        put(record, "handling_code", field(codes, st.sampled_from(["H4", "h0"])))
        restrictions: st.SearchStrategy[list[str]] = st.one_of(
            st.just([]), st.lists(st.sampled_from(COUNTRIES), max_size=3, unique=True)
        )
        put(record, "source_restrictions", field(restrictions, st.just("FR")))
        origins = weighted(("DE", 3), ("NL", 1), ("FR", 1))
        put(record, "origin_country", field(origins, st.just(MISSING)))
        put(doc, "record", field(st.just(record), st.just("record")))
    if method == "PublishNotice" or draw(st.integers(0, 9)) == 0:
        notice: dict[str, Any] = {}
        marks = weighted(("H1", 3), ("H0", 2), ("H2", 2), ("H3", 2))
        put(notice, "handling_code", field(marks, st.sampled_from(["H4", "h1", 1])))
        put(notice, "addressed_to", field(st.sampled_from(["named", "all_members"]), JUNK))
        put(doc, "notice", field(st.just(notice), st.just("notice")))
    return doc


def triple(decision: Decision) -> tuple[bool, tuple[str, ...], dict[str, Any]]:
    return decision.allow, decision.reasons, dict(decision.obligations)


def get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return MISSING
        doc = doc[key]
    return doc


def check(policy_input: dict[str, Any], decision: Decision, known_reasons: set[str]) -> None:
    method = get(policy_input, "request", "method")
    if decision.allow:
        assert decision.reasons == ()
        keys = set(decision.obligations)
        assert keys <= KNOWN_OBLIGATIONS
        if method == "Match":
            assert keys == {"max_results"}
            max_results = decision.obligations["max_results"]
            assert isinstance(max_results, int) and max_results >= 1
        elif method == "PublishNotice":
            assert keys == {"retention_days"}
            days = decision.obligations["retention_days"]
            assert isinstance(days, int) and days >= 1
            assert get(policy_input, "notice", "handling_code") in HANDLING_CODES
        else:
            assert method == "Fetch"
            fetch_keys = {"handling_code", "redact", "require_approval", "retention_days"}
            approval = decision.obligations.get("require_approval")
            assert isinstance(approval, bool)
            if approval:
                assert keys == fetch_keys | {"approval_deadline_hours"}
                hours = decision.obligations["approval_deadline_hours"]
                assert isinstance(hours, int) and hours >= 1
                if get(policy_input, "node", "profile") == "eu-led":
                    assert hours <= 48
            else:
                assert keys == fetch_keys
            assert decision.obligations["handling_code"] in HANDLING_CODES
        # (2) a disclosure always needs a real legal basis (never `none`, never missing)
        if method == "Fetch":
            assert get(policy_input, "envelope", "legal_basis") in FETCH_LEGAL_BASES
        # (3) only active members
        assert get(policy_input, "requester", "status") == "active"
        # and only a known profile, on input version 1, with strict never disclosing
        profile = get(policy_input, "node", "profile")
        assert profile in PROFILES
        assert get(policy_input, "version") == 1
        assert not (profile == "strict" and method == "Fetch")
    else:
        assert decision.reasons, "a denial names at least one reason"
        assert list(decision.reasons) == sorted(set(decision.reasons))
        assert set(decision.reasons) <= known_reasons, decision.reasons
        assert decision.obligations == {}


@pytest.mark.parametrize("document", ["standard", "defaults", "malformed_agreements", "notices"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policy_input=policy_inputs())
def test_engines_agree_and_invariants_hold(
    bank: EngineBank, known_reasons: set[str], document: str, policy_input: dict[str, Any]
) -> None:
    embedded = bank.engine("embedded", document).decide(policy_input)
    opa = bank.engine("opa", document).decide(policy_input)
    assert triple(embedded) == triple(opa), f"embedded {triple(embedded)} != opa {triple(opa)}"
    check(policy_input, embedded, known_reasons)
