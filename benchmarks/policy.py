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
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Final

from measuring import print_table, raise_exit
from node.policy.decision import PolicyEngine
from node.policy.embedded import EmbeddedEngine
from node.policy.opa import OpaEngine
from node.policy.opa_process import OpaServer, find_opa, start_opa
from policy_inputs import COMBOS, input_mix
from policy_meters import (
    STEADY_PROFILE,
    ConstantEngine,
    Meter,
    Sample,
    cached_meter,
    check_engines,
    uncached_meter,
)

ROOT: Final = Path(__file__).resolve().parent.parent
POLICY_DIR: Final = ROOT / "policies"
DATA_FILE: Final = POLICY_DIR / "data" / "agreements.example.json"
TARGET_SHARE: Final = 0.10
# docs/performance.md: the node's server CPU per Match at 64 in flight (match.py).
DEFAULT_MATCH_CPU_US: Final = 730.0
ROUNDS: Final = 3


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
