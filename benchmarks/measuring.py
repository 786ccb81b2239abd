"""What the benchmark scripts share: per-call timing, percentiles, a process's CPU from
/proc, a table printer, the SIGTERM handler that makes a run clean up as on Ctrl-C, and
the options every benchmark of a running node takes.

The scripts are run as ``python benchmarks/<name>.py``, which puts this folder first on
``sys.path``: they import this module as ``measuring`` (a sibling), not as a package.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeVar

T = TypeVar("T")


def each_us(
    fn: Callable[..., T], calls: Sequence[tuple[object, ...]]
) -> tuple[list[T], list[float]]:
    """`fn` called once per argument tuple, each call timed alone: results and µs."""
    results: list[T] = []
    times: list[float] = []
    for args in calls:
        start = time.perf_counter()
        result = fn(*args)
        times.append((time.perf_counter() - start) * 1e6)
        results.append(result)
    return results, times


def percentiles(values: Iterable[float], *qs: float) -> tuple[float, ...]:
    """The value at rank ``int(q · n)`` of the sorted `values` (the last at most) for each
    ``q`` in `qs`, sorting once; NaN for each if there are no values."""
    ordered = sorted(values)
    if not ordered:
        return tuple(float("nan") for _ in qs)
    return tuple(ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs)


def process_cpu(pid: int) -> float:
    """utime + stime of every thread of ``pid``, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows of cells (the first row the heading) in aligned columns: the first column to
    the left, the figures to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


def raise_exit(signum: int, _frame: FrameType | None) -> None:
    """A signal handler (for SIGTERM): exit as Ctrl-C would, unwinding through `finally`."""
    raise SystemExit(128 + signum)


def node_benchmark_parser(
    doc: str | None, *, servers: str = "the servers"
) -> argparse.ArgumentParser:
    """A parser with the options every benchmark of a running node takes, so that they
    mean the same in each: --records, --seconds, --quick and --no-pin."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument(
        "--records", type=int, default=100_000, help="records the node holds (default 100000)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of each timed measurement (default 5)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 2000 records, 1 s per measurement"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help=f"do not pin the client and {servers} to one core each",
    )
    return parser
