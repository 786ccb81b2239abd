"""How the policy benchmark times engines: the constant-Decision floor, a meter per row that
times each decide() alone and keeps its latencies, the uncached and cached meters, and the
check that both engines agree before any figure is printed.

Imported by ``policy.py`` as a sibling module (``python benchmarks/policy.py``).
"""

from __future__ import annotations

import gc
import json
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from measuring import percentiles, process_cpu
from node.policy.cache import CachingEngine
from node.policy.decision import Decision, PolicyEngine
from policy_inputs import (
    COMBOS,
    MIX_NOW,
    PROFILES,
    RealTimeClock,
    input_mix,
    match_input,
)

STEADY_PROFILE: Final = "eu-led"
# Latencies kept per row for the percentiles (beyond, an even sample of the run).
KEPT_LATENCIES: Final = 1 << 20


# --- engines ------------------------------------------------------------------------------


class ConstantEngine:
    """The floor: a PolicyEngine whose decide() returns one prebuilt Decision."""

    name = "constant"
    waits_on_io = False

    def __init__(self) -> None:
        self._decision = Decision(allow=True, obligations={"max_results": 5}, revision="floor")

    @property
    def revision(self) -> str:
        return "floor"

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        return self._decision

    def close(self) -> None:
        pass


# --- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    label: str
    calls: int
    busy: float  # seconds inside decide(), summed
    p50: float  # seconds
    p99: float
    cpu: float  # seconds of this process in the timed loops (the loop's own work too)
    opa_cpu: float | None  # seconds of the OPA process in the timed loops
    misses: int
    miss_mean: float  # seconds, over the misses (cached rows)
    hit_mean: float  # seconds, over the other calls

    @property
    def rate(self) -> float:
        return self.calls / self.busy if self.busy > 0 else 0.0

    @property
    def mean(self) -> float:
        return self.busy / self.calls if self.calls else float("nan")


class Meter:
    """One row: calls ``decide`` on ``next_input()``, timing each call alone, over as many
    timed rounds as it is given; a cached row counts each call as a hit or a miss."""

    def __init__(
        self,
        label: str,
        decide: Callable[[Mapping[str, Any]], Decision],
        next_input: Callable[[], Mapping[str, Any]],
        opa_pid: int | None,
        cache: CachingEngine | None = None,
    ) -> None:
        self.label = label
        self._decide = decide
        self._next_input = next_input
        self._opa_pid = opa_pid
        self._cache = cache
        # Every miss is kept; hits (all calls of an uncached row) are kept one in `stride`,
        # the stride doubling whenever KEPT_LATENCIES fill up: a sample even over the run.
        self._hits: array[float] = array("d")
        self._stride = 1
        self._misses: array[float] = array("d")
        self._hit_sum = 0.0
        self._hit_count = 0
        self._cpu = 0.0
        self._opa_cpu = 0.0

    def run(self, seconds: float) -> None:
        decide, next_input, cache = self._decide, self._next_input, self._cache
        hits, misses = self._hits, self._misses
        hit_sum, hit_count, stride = 0.0, 0, self._stride
        clock = time.perf_counter
        gc.collect()
        cpu0, opa0 = time.process_time(), self._opa_now()
        deadline = clock() + seconds
        while clock() < deadline:
            policy_input = next_input()
            missed = cache.misses if cache is not None else 0
            started = clock()
            decide(policy_input)
            elapsed = clock() - started
            if cache is not None and cache.misses != missed:
                misses.append(elapsed)
                continue
            hit_sum += elapsed
            hit_count += 1
            if hit_count % stride == 0:
                hits.append(elapsed)
                if len(hits) >= KEPT_LATENCIES:
                    hits = array("d", hits[::2])
                    stride *= 2
        self._cpu += time.process_time() - cpu0
        self._opa_cpu += self._opa_now() - opa0
        self._hits, self._stride = hits, stride
        self._hit_sum += hit_sum
        self._hit_count += hit_count

    def warm_up(self, seconds: float) -> None:
        """Run, then forget what was measured."""
        self.run(seconds)
        self._hits, self._misses, self._stride = array("d"), array("d"), 1
        self._hit_sum, self._hit_count, self._cpu, self._opa_cpu = 0.0, 0, 0.0, 0.0

    def _opa_now(self) -> float:
        return process_cpu(self._opa_pid) if self._opa_pid is not None else 0.0

    def sample(self) -> Sample:
        p50, p99 = percentiles(self._hits + self._misses, 0.50, 0.99)
        calls = self._hit_count + len(self._misses)
        return Sample(
            self.label,
            calls,
            self._hit_sum + sum(self._misses),
            p50,
            p99,
            self._cpu,
            self._opa_cpu if self._opa_pid is not None else None,
            len(self._misses),
            sum(self._misses) / len(self._misses) if self._misses else float("nan"),
            self._hit_sum / self._hit_count if self._hit_count else float("nan"),
        )


def cycling(inputs: Sequence[Mapping[str, Any]]) -> Callable[[], Mapping[str, Any]]:
    position = 0

    def next_input() -> Mapping[str, Any]:
        nonlocal position
        position += 1
        return inputs[position % len(inputs)]

    return next_input


def steady_traffic(clock: RealTimeClock) -> Callable[[], Mapping[str, Any]]:
    """A fresh Match input per call (as the node builds one per request), round the combos."""
    position = 0

    def next_input() -> Mapping[str, Any]:
        nonlocal position
        position += 1
        return match_input(STEADY_PROFILE, COMBOS[position % len(COMBOS)], clock.now())

    return next_input


def uncached_meter(label: str, engine: PolicyEngine, warmup: float, opa_pid: int | None) -> Meter:
    """The engine alone on the mix of inputs, warmed up."""
    meter = Meter(label, engine.decide, cycling(input_mix()), opa_pid)
    meter.warm_up(warmup)
    return meter


def cached_meter(
    label: str, engine: PolicyEngine, warmup: float, first_boundary: float, opa_pid: int | None
) -> Meter:
    """A fresh CachingEngine over ``engine`` on steady traffic, warmed up (its cache stays
    filled between rounds). The clock's first new second falls ``first_boundary`` after the
    warm-up: a node's clock has no particular phase, and this one makes a short run see
    misses too."""
    cache = CachingEngine(engine)
    clock = RealTimeClock(phase=1.0 - (warmup + first_boundary) % 1.0)
    meter = Meter(f"{label}+cache", cache.decide, steady_traffic(clock), opa_pid, cache)
    meter.warm_up(warmup)
    return meter


def same(a: Decision, b: Decision) -> bool:
    return (a.allow, a.reasons, dict(a.obligations)) == (b.allow, b.reasons, dict(b.obligations))


def check_engines(embedded: PolicyEngine, opa: PolicyEngine) -> str:
    """Both engines must give the same decision on every input, and the steady traffic
    must be allowed (refusals would make a different workload); returns the mix's shape."""
    mix = input_mix()
    steady = [match_input(STEADY_PROFILE, c, MIX_NOW) for c in COMBOS]
    for policy_input in [*mix, *steady]:
        mine, theirs = embedded.decide(policy_input), opa.decide(policy_input)
        if not same(mine, theirs):
            raise RuntimeError(
                f"the engines disagree on {json.dumps(policy_input)}: {mine} vs {theirs}"
            )
        if "policy_error" in mine.reasons:
            raise RuntimeError(f"policy_error on {json.dumps(policy_input)}")
    for policy_input in steady:
        if not embedded.decide(policy_input).allow:
            raise RuntimeError(f"steady-state input refused: {json.dumps(policy_input)}")
    decisions = [embedded.decide(i) for i in mix]
    methods = [str(i["request"]["method"]) for i in mix]
    allowed = sum(d.allow for d in decisions)
    return (
        f"{len(mix)} inputs ({methods.count('Match')} Match, {methods.count('Fetch')} Fetch; "
        f"{allowed} allowed, {len(mix) - allowed} denied) over profiles {', '.join(PROFILES)}; "
        "embedded and OPA agree on every one"
    )
