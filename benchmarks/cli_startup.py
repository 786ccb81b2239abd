"""How long the `liaison` command takes to start, beside the interpreter's own start.

Operators run `liaison` often (a container health check would run it every few seconds), so
what matters is the wall time of a whole process: the interpreter, the imports, building
the parser (all of it, on every run), and printing. Each run below is a fresh process:

* **baseline**: ``python -c pass`` with the same interpreter (its start, ``site`` and the
  editable install's path hooks included), measured in the same run;
* ``liaison --help``, ``liaison audit verify --help`` and ``liaison policy explain --help``
  through the console script (``python -m node.cli`` where there is none).

The commands take turns, one run each per round, so that a drift in a shared machine's
speed touches them alike; a first round, not counted, warms the page cache. Each figure is
the median and p90 of the runs, with the median's ratio to the baseline's. ``--quick``
runs 3 rounds (about two seconds).

    python benchmarks/cli_startup.py [--runs 30] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from measuring import percentiles, raise_exit

DEFAULT_RUNS: Final = 30
TARGET_S: Final = 0.5
HELPS: Final = ((), ("audit", "verify"), ("policy", "explain"))


def liaison_command() -> list[str]:
    """The console script beside this interpreter, as an operator runs it."""
    script = Path(sys.executable).parent / "liaison"
    return [str(script)] if script.exists() else [sys.executable, "-m", "node.cli"]


def _run_s(argv: Sequence[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}:\n{stderr}")
    return elapsed


def measure(runs: int) -> dict[str, list[float]]:
    """Seconds per run of each command, by its label; the baseline first."""
    liaison = liaison_command()
    commands = {"python -c pass": [sys.executable, "-c", "pass"]}
    for words in HELPS:
        commands[" ".join(["liaison", *words, "--help"])] = [*liaison, *words, "--help"]
    for argv in commands.values():  # warm-up, not counted
        _run_s(argv)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, argv in commands.items():
            times[label].append(_run_s(argv))
    return times


def report(times: dict[str, list[float]]) -> None:
    (label, base), *rest = times.items()
    base_p50, base_p90 = percentiles(base, 0.5, 0.9)
    print(
        f"baseline: {label}: median {base_p50 * 1e3:.1f} ms, p90 {base_p90 * 1e3:.1f} ms "
        f"({len(base)} runs)"
    )
    worst = 0.0
    for label, values in rest:
        p50, p90 = percentiles(values, 0.5, 0.9)
        worst = max(worst, p50)
        print(
            f"{label}: median {p50 * 1e3:.1f} ms, p90 {p90 * 1e3:.1f} ms "
            f"(ratio to baseline {p50 / base_p50:.1f})"
        )
    met = "met" if worst < TARGET_S else "NOT met"
    print(
        f"target: every --help under {TARGET_S * 1e3:.0f} ms (median): {met} "
        f"(slowest {worst * 1e3:.1f} ms)"
    )


def run(runs: int) -> dict[str, list[float]]:
    print(
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} cores; {runs} runs of each command; "
        f"liaison is {' '.join(liaison_command())}"
    )
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    times = measure(runs)
    report(times)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help="runs of each command (default 30)"
    )
    parser.add_argument("--quick", action="store_true", help="3 runs of each command")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, raise_exit)
    run(3 if args.quick else args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
