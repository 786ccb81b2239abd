"""The Match's policy key (node/service.py): decisions are cached by it, so two Matches
share a key exactly when the policy would see the same input; a key that left out a fact
the policy reads would hand one requester a decision made for another."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from federation.directory import Member, MemberStatus
from federation.model import Envelope, Identifier, MatchQuery
from federation.vocabulary import CATEGORIES, IDENTIFIER_KINDS, PURPOSES, LegalBasis
from node.metrics import NodeMetrics
from node.policy.cache import CachingEngine
from node.policy.embedded import EmbeddedEngine
from node.policy.revision import canonical_json
from node.references import References
from node.service import (
    MatchService,
    NodeIdentity,
    build_policy_input,
    match_policy_input,
    match_policy_key,
)
from node.store import RecordStore

POLICIES = Path(__file__).resolve().parents[2] / "policies"
DATA: dict[str, Any] = json.loads((POLICIES / "data" / "agreements.example.json").read_text())
NODE = NodeIdentity(node_id="DE-BKA", country="DE", profile="bilateral")
NOW = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
MEMBER = Member("FR-PN", "fr:7001", "a" * 64, "b" * 64)
QUERY = MatchQuery(
    Envelope(
        "FR-PN",
        "criminal_investigation",
        LegalBasis.BILATERAL_AGREEMENT,
        "FR-DE 2019/4",
        "PN-1",
        b"n" * 16,
        NOW,
    ),
    "vehicle",
    (Identifier("vin", "WVWZZZ1JZXW386752"),),
)


def _with_envelope(**changes: Any) -> MatchQuery:
    return replace(QUERY, envelope=replace(QUERY.envelope, **changes))


# Each changes one fact the policy input holds (every leaf of the input is changed by one).
ONE_FACT_CHANGED: dict[str, tuple[NodeIdentity, Member, MatchQuery, datetime]] = {
    "now": (NODE, MEMBER, QUERY, NOW + timedelta(seconds=1)),
    "node.node_id": (replace(NODE, node_id="DE-LKA"), MEMBER, QUERY, NOW),
    "node.country": (replace(NODE, country="AT"), MEMBER, QUERY, NOW),
    "node.profile": (replace(NODE, profile="multilateral"), MEMBER, QUERY, NOW),
    "requester.node_id": (NODE, replace(MEMBER, node_id="FR-GN"), QUERY, NOW),
    "requester.country": (NODE, replace(MEMBER, node_id="BE-PN"), QUERY, NOW),
    "requester.status": (NODE, replace(MEMBER, status=MemberStatus.SUSPENDED), QUERY, NOW),
    "envelope.purpose": (NODE, MEMBER, _with_envelope(purpose="border_control"), NOW),
    "envelope.legal_basis": (NODE, MEMBER, _with_envelope(legal_basis=LegalBasis.MLAT), NOW),
    "envelope.has_legal_reference": (NODE, MEMBER, _with_envelope(legal_reference=""), NOW),
    "envelope.has_case_reference": (NODE, MEMBER, _with_envelope(case_reference=""), NOW),
    "request.category": (
        NODE,
        MEMBER,
        replace(QUERY, category="firearm", identifiers=(Identifier("serial_number", "1"),)),
        NOW,
    ),
    "request.identifier_kinds": (
        NODE,
        MEMBER,
        replace(QUERY, identifiers=(*QUERY.identifiers, Identifier("registration_number", "B"))),
        NOW,
    ),
}


def _leaves(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in doc.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def test_each_fact_the_policy_sees_is_in_the_key() -> None:
    """Changing any one leaf of the input changes the key: no two of these share one."""
    base_input = build_policy_input(NODE, MEMBER, QUERY, NOW)
    # Every leaf but the constants (the input's version and the method) is changed once.
    assert set(_leaves(base_input)) - {"version", "request.method"} == set(ONE_FACT_CHANGED)
    keys = {"base": match_policy_key(NODE, MEMBER, QUERY, NOW)}
    for fact, (node, member, query, now) in ONE_FACT_CHANGED.items():
        changed = build_policy_input(node, member, query, now)
        differs = {k for k, v in _leaves(changed).items() if _leaves(base_input)[k] != v}
        assert fact in differs, fact  # the mutation does change that fact
        keys[fact] = match_policy_key(node, member, query, now)
    assert len(set(keys.values())) == len(keys)


def test_the_input_is_built_from_the_key_alone() -> None:
    key = match_policy_key(NODE, MEMBER, QUERY, NOW)
    assert match_policy_input(key) == build_policy_input(NODE, MEMBER, QUERY, NOW)
    # Identifier values, references and the nonce are in neither.
    text = repr(key) + canonical_json(match_policy_input(key))
    assert "WVWZZZ" not in text and "FR-DE 2019/4" not in text and "PN-1" not in text


_members = st.builds(
    Member,
    st.sampled_from(["FR-PN", "FR-GN", "BE-PN", "NL-KLPD"]),
    st.just("x:1"),
    st.just("a" * 64),
    st.just("b" * 64),
    st.sampled_from(list(MemberStatus)),
)
_nodes = st.builds(
    NodeIdentity,
    st.sampled_from(["DE-BKA", "DE-LKA"]),
    st.sampled_from(["DE", "AT"]),
    st.sampled_from(["bilateral", "multilateral"]),
)


@st.composite
def _queries(draw: st.DrawFn) -> MatchQuery:
    category = draw(st.sampled_from(sorted(CATEGORIES)))
    kinds = draw(st.lists(st.sampled_from(sorted(IDENTIFIER_KINDS[category])), min_size=1))
    envelope = Envelope(
        "FR-PN",
        draw(st.sampled_from(sorted(PURPOSES))),
        draw(st.sampled_from(list(LegalBasis))),
        draw(st.sampled_from(["", "ref"])),
        draw(st.sampled_from(["", "case"])),
        draw(st.binary(min_size=16, max_size=16)),
    )
    return MatchQuery(envelope, category, tuple(Identifier(k, draw(st.text())) for k in kinds))


_times = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 1, 1, 0, 0, 3), timezones=st.just(UTC)
)
_matches = st.tuples(_nodes, _members, _queries(), _times)


@settings(max_examples=400)
@given(_matches, _matches)
def test_two_matches_share_a_key_exactly_when_they_share_an_input(a: Any, b: Any) -> None:
    same_input = canonical_json(build_policy_input(*a)) == canonical_json(build_policy_input(*b))
    assert (match_policy_key(*a) == match_policy_key(*b)) == same_input


class _Counting:
    """The real embedded engine, counting what it is asked."""

    name = "embedded"
    waits_on_io = False

    def __init__(self) -> None:
        self.inner = EmbeddedEngine(POLICIES, DATA)
        self.inputs: list[str | None] = []

    @property
    def revision(self) -> str:
        return self.inner.revision

    def decide(self, policy_input: Any, *, input_json: str | None = None) -> Any:
        self.inputs.append(input_json)
        return self.inner.decide(policy_input, input_json=input_json)

    def close(self) -> None:
        self.inner.close()


def test_a_keyed_decision_is_the_engine_s_and_builds_the_input_only_on_a_miss() -> None:
    engine = _Counting()
    cache = CachingEngine(engine)
    built: list[Any] = []

    def build(key: Any) -> dict[str, Any]:
        built.append(key)
        return match_policy_input(key)

    key = match_policy_key(NODE, MEMBER, QUERY, NOW)
    # Looking before asking (what the node does before it hops to a thread) counts no miss:
    # the ask that follows counts it.
    assert cache.cached_keyed(key) is None and (cache.hits, cache.misses) == (0, 0)
    first = cache.decide_keyed(key, build)
    assert cache.cached_keyed(key) == first and (cache.hits, cache.misses) == (1, 1)
    assert first == engine.inner.decide(build_policy_input(NODE, MEMBER, QUERY, NOW))
    assert engine.inputs == [canonical_json(match_policy_input(key))]
    again = match_policy_key(NODE, MEMBER, _with_envelope(nonce=b"m" * 16), NOW)
    assert cache.decide_keyed(again, build) == first
    assert len(built) == 1 and (cache.hits, cache.misses) == (2, 1)
    other = match_policy_key(NODE, replace(MEMBER, status=MemberStatus.SUSPENDED), QUERY, NOW)
    assert cache.decide_keyed(other, build) != first and len(built) == 2
    # The same input asked by its JSON (`decide`) is another entry, never confused with it.
    assert cache.decide(build_policy_input(NODE, MEMBER, QUERY, NOW)) == first
    assert len(cache) == 3


def test_the_service_asks_by_key_for_a_match_and_by_input_for_the_rest(tmp_path: Path) -> None:
    """A Match's decision comes from the cache by its key; a Fetch's or a notice's
    (`MatchService.decide`, given their input) by the input's JSON: both are the engine's."""
    engine = _Counting()
    cache = CachingEngine(engine)
    store = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    service = MatchService(
        NODE, store, cache, NodeMetrics(CollectorRegistry()), references=References(bytes(32))
    )
    key = match_policy_key(NODE, MEMBER, QUERY, NOW)
    by_key = asyncio.run(service.decide_match(key))
    by_input = asyncio.run(service.decide(build_policy_input(NODE, MEMBER, QUERY, NOW)))
    assert by_key == by_input == engine.inner.decide(match_policy_input(key))
    again = asyncio.run(service.decide_match(key))
    assert again == by_key and (cache.hits, cache.misses) == (1, 2)
    store.close()
