"""`/metrics` of a node served by several worker processes (`liaison serve --workers N`).

Each worker counts into prometheus-client's multiprocess files (`PROMETHEUS_MULTIPROC_DIR`,
one folder per run of the supervisor, emptied at its start): the worker serving `/metrics`
(worker 0) answers with every worker's counters and histograms summed, its gauges combined
as each declares (`multiprocess_mode` in node/metrics.py), and a dead worker's counts kept,
so a total never goes down when a worker is restarted.

What is read at scrape time rather than counted (tickets and notices from the database, the
audit tree's size, the directory's age: `NodeMetrics.computed`) is the same from any
worker: worker 0 reads it itself, and the multiprocess files' copies (zeros, for
`set_function` gauges) are left out, so no family is served twice.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Workers(Collector):
    def __init__(self, local: CollectorRegistry, folder: str, computed: set[str]) -> None:
        self._local = local
        self._shared = MultiProcessCollector(None, folder)  # type: ignore[no-untyped-call]
        self._computed = computed

    def collect(self) -> Iterator[Metric]:
        for family in self._shared.collect():  # type: ignore[no-untyped-call]
            if family.name not in self._computed:
                yield family
        for family in self._local.collect():
            if family.name in self._computed:
                yield family


def workers_registry(local: CollectorRegistry, computed: set[str]) -> CollectorRegistry:
    """The registry worker 0 serves: all workers' counted figures, and its own computed
    ones. Only in a worker, where `PROMETHEUS_MULTIPROC_DIR` is set."""
    served = CollectorRegistry(auto_describe=False)
    served.register(_Workers(local, os.environ[MULTIPROC_ENV], computed))
    return served


def in_worker() -> bool:
    """True in a worker process of `serve --workers N` (its supervisor set the folder)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def fresh_folder(folder: Path) -> None:
    """Empty (or make) the multiprocess folder: counts left by an earlier run must not be
    added to this one's."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)


def worker_gone(pid: int, folder: Path) -> None:
    """Forget a dead worker's live gauges (its counts stay: totals never go down)."""
    mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
