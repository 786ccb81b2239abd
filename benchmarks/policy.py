"""Policy decisions per second and latency, embedded and OPA, uncached and cached
(docs/performance.md).

One run measures ``decide()`` of the node's policy engines over the node's own Rego
(``policies/``) and the example policy data (``policies/data/agreements.example.json``):

* **floor**: a plain-Python engine that returns a constant ``Decision``: the cost of a call
  through the ``PolicyEngine`` protocol as timed here (the baseline every row is divided by);
* **embedded** (regorus, in-process) and **opa** (``OpaEngine`` against a real OPA server
  that this benchmark starts on loopback and always stops), each
  * *uncached*, on a mix of Match and Fetch inputs for the three profiles (allows and
    denies: JIT, MLAT, re-shared and source-restricted records, a peer without Fetch), and
  * *cached* (``CachingEngine``) at steady state: Match traffic from a handful of distinct
    (peer, purpose, category) combinations with ``now`` to the second from a clock that
    advances with real elapsed time, as ``build_policy_input`` makes it, so the engine sees
    one miss per combination per second.

Each call is timed alone (``perf_counter`` around ``decide()``; inputs are built outside
the timer); decisions per second is calls / time inside ``decide()``. The target compares
the cached cost per Match, with the misses spread over the node's own Match rate, to the
Match server CPU per request (``--match-cpu-us``, from ``benchmarks/match.py``).

    python benchmarks/policy.py [--seconds 3] [--quick] [--match-cpu-us 730]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

from measuring import percentiles, print_table, process_cpu, raise_exit
from node.policy.cache import CachingEngine
from node.policy.decision import Decision, PolicyEngine
from node.policy.embedded import EmbeddedEngine
from node.policy.opa import OpaEngine
from node.policy.opa_process import OpaServer, find_opa, start_opa

ROOT: Final = Path(__file__).resolve().parent.parent
POLICY_DIR: Final = ROOT / "policies"
DATA_FILE: Final = POLICY_DIR / "data" / "agreements.example.json"
NODE_ID: Final = "DE-BKA"
NODE_COUNTRY: Final = "DE"
PROFILES: Final = ("eu-led", "bilateral", "strict")
STEADY_PROFILE: Final = "eu-led"
PEER_COUNTRY: Final = {"FR-DGPN": "FR", "NL-KMAR": "NL"}
# Inside every agreement's and the JIT's validity window in the example data.
MIX_NOW: Final = "2026-11-29T13:45:12Z"
CLOCK_ORIGIN: Final = datetime(2026, 11, 29, 13, 45, 12, tzinfo=UTC)
TARGET_SHARE: Final = 0.10
# docs/performance.md: the node's server CPU per Match at 64 in flight (match.py).
DEFAULT_MATCH_CPU_US: Final = 730.0
# Latencies kept per row for the percentiles (beyond, an even sample of the run).
KEPT_LATENCIES: Final = 1 << 20
ROUNDS: Final = 3


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Combo:
    """A distinct kind of Match: what, besides ``now``, its policy input is made of."""

    peer: str
    purpose: str
    category: str
    legal_basis: str
    identifier_kinds: tuple[str, ...]


# The steady-state traffic: every one of these is allowed by the example agreements.
COMBOS: Final = (
    Combo("FR-DGPN", "criminal_investigation", "travel_document", "none", ("document_number",)),
    Combo(
        "FR-DGPN", "border_control", "travel_document", "bilateral_agreement", ("document_number",)
    ),
    Combo("FR-DGPN", "criminal_investigation", "vehicle", "none", ("vin",)),
    Combo(
        "NL-KMAR",
        "criminal_investigation",
        "travel_document",
        "bilateral_agreement",
        ("document_number",),
    ),
    Combo(
        "NL-KMAR", "missing_person_search", "missing_person", "bilateral_agreement", ("name_dob",)
    ),
    Combo("NL-KMAR", "criminal_investigation", "wanted_person", "jit", ("name_dob",)),
)
# Refused: FR-DGPN has no firearm agreement.
DENIED_MATCH: Final = Combo(
    "FR-DGPN", "criminal_investigation", "firearm", "none", ("registration_number",)
)


def match_input(profile: str, combo: Combo, now: str) -> dict[str, Any]:
    """A Match input shaped as ``node.service.build_policy_input`` shapes it."""
    return {
        "version": 1,
        "now": now,
        "node": {"node_id": NODE_ID, "country": NODE_COUNTRY, "profile": profile},
        "requester": {
            "node_id": combo.peer,
            "country": PEER_COUNTRY[combo.peer],
            "status": "active",
        },
        "envelope": {
            "purpose": combo.purpose,
            "legal_basis": combo.legal_basis,
            "has_legal_reference": False,
            "has_case_reference": True,
        },
        "request": {
            "method": "Match",
            "category": combo.category,
            "identifier_kinds": sorted(combo.identifier_kinds),
        },
    }


def fetch_input(
    profile: str,
    peer: str,
    purpose: str,
    legal_basis: str,
    case_reference: str,
    record: Mapping[str, Any],
    *,
    legal_reference: bool = False,
) -> dict[str, Any]:
    """A step-2 input (policies/CONTRACT.md): the record's facts, the case reference."""
    category = str(record["category"])
    return {
        "version": 1,
        "now": MIX_NOW,
        "node": {"node_id": NODE_ID, "country": NODE_COUNTRY, "profile": profile},
        "requester": {"node_id": peer, "country": PEER_COUNTRY[peer], "status": "active"},
        "envelope": {
            "purpose": purpose,
            "legal_basis": legal_basis,
            "has_legal_reference": legal_reference,
            "has_case_reference": True,
            "case_reference": case_reference,
        },
        "request": {
            "method": "Fetch",
            "category": category,
            "identifier_kinds": [
                "document_number" if category == "travel_document" else "name_dob"
            ],
        },
        "record": dict(record),
    }


def input_mix() -> list[dict[str, Any]]:
    """Seven Match and five Fetch inputs per profile, allows and denies."""
    inputs: list[dict[str, Any]] = []
    for profile in PROFILES:
        inputs += [match_input(profile, c, MIX_NOW) for c in (*COMBOS, DENIED_MATCH)]
        own = {"source_restrictions": [], "origin_country": NODE_COUNTRY}
        inputs += [
            # JIT member, wanted person: allowed with approval (refused by `strict`).
            fetch_input(
                profile,
                "NL-KMAR",
                "criminal_investigation",
                "jit",
                "JIT-2026-017",
                {"category": "wanted_person", "handling_code": "H1", **own},
            ),
            # MLAT citing its instrument, own travel document.
            fetch_input(
                profile,
                "NL-KMAR",
                "criminal_investigation",
                "mlat",
                "NL-2026-4471",
                {"category": "travel_document", "handling_code": "H0", **own},
                legal_reference=True,
            ),
            # An H2 record received from France may not be passed on.
            fetch_input(
                profile,
                "NL-KMAR",
                "missing_person_search",
                "bilateral_agreement",
                "NL-2026-5120",
                {
                    "category": "missing_person",
                    "handling_code": "H2",
                    "source_restrictions": [],
                    "origin_country": "FR",
                },
            ),
            # The source forbids the Netherlands.
            fetch_input(
                profile,
                "NL-KMAR",
                "criminal_investigation",
                "bilateral_agreement",
                "NL-2026-5121",
                {
                    "category": "travel_document",
                    "handling_code": "H0",
                    "source_restrictions": ["NL"],
                    "origin_country": NODE_COUNTRY,
                },
            ),
            # FR-DGPN's agreement permits Match only.
            fetch_input(
                profile,
                "FR-DGPN",
                "criminal_investigation",
                "bilateral_agreement",
                "FR-2026-0093",
                {"category": "travel_document", "handling_code": "H0", **own},
            ),
        ]
    return inputs


class RealTimeClock:
    """``now`` to the second, advancing with real elapsed time from a fixed instant (inside
    the agreements' windows), so the decision cache sees a new second as the node does."""

    def __init__(self, phase: float = 0.0) -> None:
        self._start = time.perf_counter() - phase
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.perf_counter() - self._start)
        if second != self._second:
            self._second = second
            moment = CLOCK_ORIGIN + timedelta(seconds=second)
            self._text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._text


# --- engines ------------------------------------------------------------------------------


class ConstantEngine:
    """The floor: a PolicyEngine whose decide() returns one prebuilt Decision."""

    name = "constant"

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


# --- the run ------------------------------------------------------------------------------


def report(samples: Sequence[Sample], match_cpu_us: float, match_cpu_source: str) -> None:
    by = {s.label: s for s in samples}
    floor = by["floor"]
    head = (
        "engine",
        "decisions/s",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "x floor",
        "own CPU µs/call",
        "OPA CPU µs/call",
        "misses",
    )
    rows = [head] + [
        (
            s.label,
            f"{s.rate:.0f}",
            f"{s.mean * 1e6:.2f}",
            f"{s.p50 * 1e6:.2f}",
            f"{s.p99 * 1e6:.2f}",
            f"{s.mean / floor.mean:.1f}",
            f"{s.cpu / s.calls * 1e6:.2f}",
            "-" if s.opa_cpu is None else f"{s.opa_cpu / s.calls * 1e6:.2f}",
            str(s.misses) if s.label.endswith("+cache") else "-",
        )
        for s in samples
    ]
    print()
    print_table(rows)
    print(
        "\n(own CPU includes the loop's work outside decide(): building each cached row's "
        "fresh input, the clock; OPA CPU is the OPA server process's, per call)"
    )

    print(
        f"\nratio of mean µs per decision to the floor ({floor.mean * 1e6:.2f} µs, a "
        "constant Decision through the protocol): "
        + ", ".join(f"{s.label} {s.mean / floor.mean:.0f}x" for s in samples[1:])
    )
    print(
        "ratio uncached/cached mean µs per decision: "
        + ", ".join(
            f"{name} {by[name].mean / by[name + '+cache'].mean:.0f}x"
            for name in ("embedded", "opa")
        )
    )

    rate = 1e6 / match_cpu_us
    print(
        f"\nMatch server CPU per request: {match_cpu_us:g} µs ({match_cpu_source}); at that "
        f"cost one saturated server core answers {rate:,.0f} Match/s, and with "
        f"{len(COMBOS)} combinations each missing once per second, {len(COMBOS)} of every "
        f"{rate:,.0f} Matches reach the engine. Cost per Match = mean hit + "
        f"{len(COMBOS)} * miss / {rate:,.0f}, where a miss costs the larger of the misses' "
        "mean time in the run and the uncached CPU per decision (this process + OPA's: OPA "
        "works on more than one thread):"
    )
    for name in ("embedded", "opa"):
        cached, uncached = by[name + "+cache"], by[name]
        uncached_us = uncached_cost_us(uncached)
        if cached.misses and cached.miss_mean * 1e6 >= uncached_us:
            miss_us, source = cached.miss_mean * 1e6, f"mean of {cached.misses} misses"
        else:  # a very short run may also cross no second
            miss_us, source = uncached_us, f"uncached CPU; {cached.misses} misses in the run"
        per_match = cached.hit_mean * 1e6 + len(COMBOS) * miss_us / rate
        share = per_match / match_cpu_us
        print(
            f"  {name}: hit {cached.hit_mean * 1e6:.2f} µs + {len(COMBOS)} * miss "
            f"{miss_us:.0f} µs ({source}) / {rate:,.0f} = {per_match:.2f} µs per Match"
        )
        print(
            f"  {name}: policy cost at steady state (cached) as a share of Match server CPU: "
            f"{share:.1%} (target ≤ {TARGET_SHARE:.0%}): "
            + ("met" if share <= TARGET_SHARE else "NOT met")
        )
    print(
        "  uncached, for comparison (every Match asks the engine): "
        + ", ".join(
            f"{name} {uncached_cost_us(by[name]) / match_cpu_us:.0%} of Match server CPU"
            for name in ("embedded", "opa")
        )
    )


def uncached_cost_us(sample: Sample) -> float:
    """µs per decision: the larger of the time in decide() and the CPU both processes spent."""
    cpu = (sample.cpu + (sample.opa_cpu or 0.0)) / sample.calls
    return max(sample.mean, cpu) * 1e6


def run(
    seconds: float, rounds: int, warmup: float, match_cpu_us: float, match_cpu_source: str
) -> int:
    signal.signal(signal.SIGTERM, raise_exit)  # clean up as on Ctrl-C
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    print(
        f"Policy engines over {POLICY_DIR.relative_to(ROOT)}/ and "
        f"{DATA_FILE.relative_to(ROOT)}; {seconds:g} s per row in {rounds} round(s), rows "
        f"taking turns, after {warmup:g} s of warm-up each",
        flush=True,
    )
    opa_server: OpaServer | None = None
    engines: list[PolicyEngine] = []
    try:
        embedded = EmbeddedEngine(POLICY_DIR, data)
        engines.append(embedded)
        # start_opa cannot hand back a process it was interrupted while starting: hold
        # Ctrl-C and SIGTERM until it has (they arrive right after, and `finally` stops it).
        held = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            opa_server = start_opa()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        opa = OpaEngine(opa_server.url, POLICY_DIR, data)
        engines.append(opa)
        print(f"  OPA at {opa_server.url} (pid {opa_server.pid}), policy pushed", flush=True)
        print(f"  mix: {check_engines(embedded, opa)}", flush=True)
        gc.collect()
        gc.freeze()  # setup's objects need not be walked during the runs

        per_round = seconds / rounds
        first_boundary = min(per_round, 1.0) / 2
        subjects: list[tuple[str, PolicyEngine, int | None]] = [
            ("floor", ConstantEngine(), None),
            ("embedded", embedded, None),
            ("opa", opa, opa_server.pid),
        ]
        builders: list[Callable[[], Meter]] = []
        for label, subject, opa_pid in subjects:
            builders += [
                partial(uncached_meter, label, subject, warmup, opa_pid),
                partial(cached_meter, label, subject, warmup, first_boundary, opa_pid),
            ]
        # Rows take turns, round after round, so that a drift in the machine's speed (the
        # cores are shared) touches them alike; each is warmed up just before its first turn.
        meters: list[Meter] = []
        for number in range(rounds):
            for index, build in enumerate(builders):
                if number == 0:
                    meters.append(build())
                meters[index].run(per_round)
            print(f"  round {number + 1}/{rounds} done", flush=True)
        samples = [meter.sample() for meter in meters]
    finally:
        for each in engines:
            each.close()
        if opa_server is not None:
            opa_server.stop()
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores shared by this process and OPA ({opa_version()}, plain HTTP "
        "on loopback, one keep-alive connection); one calling thread"
    )
    print(
        f"uncached: {len(input_mix())} Match and Fetch inputs in turn; cached: profile "
        f"{STEADY_PROFILE}, {len(COMBOS)} (peer, purpose, category) combinations in turn, a "
        "fresh input per call with `now` to the second from a real-time clock"
    )
    report(samples, match_cpu_us, match_cpu_source)
    return 0


def opa_version() -> str:
    try:
        out = subprocess.run(
            [str(find_opa()), "version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "OPA"
    first = out.splitlines()[0] if out else ""
    return first.replace("Version: ", "OPA ") if first else "OPA"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="length of each timed measurement (default 3)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.5 s per measurement")
    parser.add_argument(
        "--match-cpu-us",
        type=float,
        default=None,
        help=f"Match server CPU µs per request to compare with (default {DEFAULT_MATCH_CPU_US:g}, "
        "docs/performance.md's figure at 64 in flight; measure it with benchmarks/match.py)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or (args.match_cpu_us is not None and args.match_cpu_us <= 0):
        parser.error("--seconds and --match-cpu-us must be positive")
    if args.match_cpu_us is None:
        source = "the default: docs/performance.md, benchmarks/match.py"
        match_cpu = DEFAULT_MATCH_CPU_US
    else:
        match_cpu, source = args.match_cpu_us, "given by --match-cpu-us"
    if args.quick:
        return run(0.5, 1, 0.2, match_cpu, source)
    return run(args.seconds, ROUNDS, 0.5, match_cpu, source)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(
            "interrupted; the OPA server this benchmark started has been stopped", file=sys.stderr
        )
        sys.exit(130)
