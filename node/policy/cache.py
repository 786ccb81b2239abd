"""A decision cache in front of any engine (docs/performance.md: cache by the value-free input).

The policy input never holds identifier values, so many requests share one input and one
answer. Correctness rests on the key: the policy revision is part of it, the cache is
emptied when the revision moves, and a decision is stored only under the revision it was
made with, so an answer from older Rego or data can never be served. The rest of the key is
the input's canonical JSON (`decide`), or, for a caller that builds its input from a tuple
of value-free facts (a Match: `node.service.match_policy_key`), that tuple
(`decide_keyed`): hashing a few strings costs far less than writing the whole input as
JSON, and the input (and its JSON) is then built only on a miss.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from node.policy.decision import Decision, PolicyEngine
from node.policy.revision import canonical_json

DEFAULT_MAX_ENTRIES = 4096
K = TypeVar("K", bound=Hashable)

# Transient failures must be retried by the next request, not remembered.
UNCACHEABLE_REASONS = frozenset({"policy_error"})


class CachingEngine:
    """Bounded LRU of decisions keyed by (revision, canonical input), or by (revision, a
    caller's key of the facts its input is built from)."""

    def __init__(self, engine: PolicyEngine, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.name = engine.name
        self.waits_on_io = engine.waits_on_io
        self.hits = 0
        self.misses = 0
        self._engine = engine
        self._max = max_entries
        # (revision, key): a key is the input's canonical JSON (`decide`) or a caller's
        # tuple of the facts its input is built from (`decide_keyed`).
        self._entries: OrderedDict[tuple[str, Hashable], Decision] = OrderedDict()
        self._revision = engine.revision
        self._lock = threading.Lock()

    @property
    def revision(self) -> str:
        return self._engine.revision

    def __len__(self) -> int:
        return len(self._entries)

    def _sync_revision(self, revision: str) -> None:
        if revision != self._revision:
            self._entries.clear()
            self._revision = revision

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        # The key is always this module's own spelling (sorted keys), whatever was given.
        try:
            text = canonical_json(policy_input)
        except (TypeError, ValueError):
            self.misses += 1  # not keyable: the engine will judge (and deny) it
            return self._engine.decide(policy_input, input_json=input_json)
        cached = self._cached(text)
        if cached is not None:
            return cached
        # The key's text is the input's JSON: the engine need not serialise it again.
        return self._miss(text, policy_input, text)

    def cached_keyed(self, key: Hashable) -> Decision | None:
        """The decision `decide_keyed(key, ...)` would answer from the cache, or None (not
        counted as a miss: the caller asks `decide_keyed` next, which counts it). Lets a
        caller that asks the engine from another thread answer a hit without the hop."""
        return self._cached(key, count_miss=False)

    def decide_keyed(self, key: K, policy_input: Callable[[K], Mapping[str, Any]]) -> Decision:
        """The decision for `policy_input(key)`, by `key` (a tuple of the value-free facts
        the input is built from): the input is built, and written as JSON, only on a miss.

        Correct only if the input is a function of the key alone, as `policy_input` makes
        it: two calls with one key then have one input. A key is a tuple, so it never
        equals the JSON text `decide` keys by."""
        cached = self._cached(key)
        if cached is not None:
            return cached
        built = policy_input(key)
        try:
            text = canonical_json(built)
        except (TypeError, ValueError):
            return self._engine.decide(built)  # not JSON: the engine will deny it
        return self._miss(key, built, text)

    def _cached(self, key: Hashable, *, count_miss: bool = True) -> Decision | None:
        with self._lock:
            self._sync_revision(self._engine.revision)
            full = (self._revision, key)
            cached = self._entries.get(full)
            if cached is not None:
                self._entries.move_to_end(full)
                self.hits += 1
                return cached
            if count_miss:
                self.misses += 1
            return None

    def _miss(self, key: Hashable, policy_input: Mapping[str, Any], text: str) -> Decision:
        decision = self._engine.decide(policy_input, input_json=text)
        if UNCACHEABLE_REASONS.intersection(decision.reasons):
            return decision
        # Shared between callers: freeze the one mutable part.
        frozen = dataclasses.replace(
            decision, obligations=MappingProxyType(dict(decision.obligations))
        )
        with self._lock:
            self._sync_revision(self._engine.revision)
            # Stored only if made under the revision now in force (it may have moved).
            if decision.revision == self._revision:
                self._entries[(decision.revision, key)] = frozen
                self._entries.move_to_end((decision.revision, key))
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return frozen

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        self.clear()
        self._engine.close()
