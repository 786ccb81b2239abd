"""The decision cache never answers with a decision from an older policy revision."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from node.metrics import NodeMetrics
from node.policy.cache import CachingEngine
from node.policy.decision import Decision
from node.policy.embedded import EmbeddedEngine

POLICIES = Path(__file__).resolve().parents[2] / "policies"
DATA: dict[str, Any] = json.loads((POLICIES / "data" / "agreements.example.json").read_text())
INPUT: dict[str, Any] = {
    "version": 1,
    "now": "2026-11-29T13:45:12Z",
    "node": {"node_id": "DE-BKA", "country": "DE", "profile": "bilateral"},
    "requester": {"node_id": "FR-DGPN", "status": "active"},
    "envelope": {"purpose": "criminal_investigation", "legal_basis": "none"},
    "request": {"method": "Match", "category": "travel_document"},
}


class SwappableEngine:
    """An embedded engine whose data can be replaced under the cache, as a reload would."""

    name = "embedded"
    waits_on_io = False

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.inner = EmbeddedEngine(POLICIES, data)
        self.calls = 0
        self.input_json: str | None = None

    @property
    def revision(self) -> str:
        return self.inner.revision

    def swap(self, data: Mapping[str, Any]) -> None:
        self.inner = EmbeddedEngine(POLICIES, data)

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        self.calls += 1
        self.input_json = input_json
        return self.inner.decide(policy_input, input_json=input_json)

    def close(self) -> None:
        self.inner.close()


class ScriptedEngine:
    name = "scripted"
    waits_on_io = False

    def __init__(self, *decisions: Decision) -> None:
        self.decisions = list(decisions)
        self.revision = "r1"

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        return self.decisions.pop(0)

    def close(self) -> None:
        pass


def test_hit_after_miss_and_key_order_does_not_matter() -> None:
    engine = SwappableEngine(DATA)
    cache = CachingEngine(engine)
    first = cache.decide(INPUT)
    second = cache.decide(dict(reversed(list(INPUT.items()))))
    assert first == second and first.allow
    assert (cache.hits, cache.misses, engine.calls) == (1, 1, 1)


def test_a_miss_hands_the_engine_the_input_already_serialised() -> None:
    engine = SwappableEngine(DATA)
    decision = CachingEngine(engine).decide(INPUT)
    assert engine.input_json is not None and json.loads(engine.input_json) == INPUT
    assert decision == engine.inner.decide(INPUT)  # as the engine decides on its own


def test_never_serves_a_decision_from_an_older_revision() -> None:
    engine = SwappableEngine(DATA)
    cache = CachingEngine(engine)
    assert cache.decide(INPUT).allow
    old_revision = engine.revision
    engine.swap({"agreements": {}, "settings": {}})  # the peer's agreement is withdrawn
    d = cache.decide(INPUT)
    assert not d.allow and d.reasons == ("no_agreement",)
    assert d.revision == engine.revision != old_revision
    assert len(cache) == 1
    engine.swap(DATA)  # back to the first revision: recomputed, not resurrected
    assert cache.decide(INPUT).allow
    assert cache.misses == 3 and cache.hits == 0


def test_decision_from_a_revision_that_moved_meanwhile_is_not_stored() -> None:
    engine = ScriptedEngine(Decision(True, (), {}, "r0"), Decision(True, (), {}, "r1"))
    cache = CachingEngine(engine)
    cache.decide(INPUT)
    assert len(cache) == 0
    cache.decide(INPUT)
    assert len(cache) == 1


def test_policy_errors_are_not_cached() -> None:
    engine = ScriptedEngine(Decision.deny("policy_error", "r1"), Decision(True, (), {}, "r1"))
    cache = CachingEngine(engine)
    assert not cache.decide(INPUT).allow
    assert cache.decide(INPUT).allow


def test_lru_bound_evicts_least_recent() -> None:
    engine = SwappableEngine(DATA)
    cache = CachingEngine(engine, max_entries=2)
    a, b, c = ({**INPUT, "now": f"2026-11-2{i}T00:00:00Z"} for i in range(3))
    cache.decide(a)
    cache.decide(b)
    cache.decide(a)  # a is now the most recent
    cache.decide(c)  # evicts b
    assert len(cache) == 2
    calls = engine.calls
    cache.decide(a)
    assert engine.calls == calls
    cache.decide(b)
    assert engine.calls == calls + 1


def test_cached_obligations_cannot_be_mutated() -> None:
    cache = CachingEngine(SwappableEngine(DATA))
    d = cache.decide(INPUT)
    with pytest.raises(TypeError):
        # Read-only by its type already; the point is that it is read-only at run time too.
        d.obligations["max_results"] = 1000  # type: ignore[index]
    assert cache.decide(INPUT).obligations == {"max_results": 5}


def test_unkeyable_input_goes_to_the_engine() -> None:
    cache = CachingEngine(SwappableEngine(DATA))
    d = cache.decide({**INPUT, "now": float("nan")})
    assert d.reasons == ("policy_error",) and len(cache) == 0


def test_rejects_empty_bound() -> None:
    with pytest.raises(ValueError):
        CachingEngine(SwappableEngine(DATA), max_entries=0)


def test_the_cache_counts_are_exported_as_lookups_by_result_at_scrape_time() -> None:
    registry = CollectorRegistry()
    engine = CachingEngine(SwappableEngine(DATA))
    NodeMetrics(registry).track_policy_cache(lambda: (engine.hits, engine.misses))
    later = {**INPUT, "now": "2026-11-29T13:45:13Z"}
    for policy_input in (INPUT, INPUT, INPUT, later):
        engine.decide(policy_input)
    engine.close()

    def lookups(result: str) -> float | None:
        return registry.get_sample_value("liaison_policy_cache_lookups_total", {"result": result})

    # A new second is a new key: two misses, two hits.
    assert (lookups("hit"), lookups("miss")) == (2.0, 2.0)
