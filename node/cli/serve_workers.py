"""`liaison serve --workers N`: N processes answering on one port, kept running.

Each worker is `liaison serve` itself (node/rpc/server.py), bound to the same address with
SO_REUSEPORT (the kernel spreads new connections over them), sharing the node's database
and its one audit log in the database (`[audit] store = "database"`, which serialises the
appends of replicas and refuses across them a request another already answered:
docs/audit.md). Worker 0 alone serves the admin socket and /metrics (every worker's counts,
node/metrics_workers.py) and runs the jobs on the shared database; the others only answer.

The supervisor starts no server itself: it restarts a worker that exits (its log says so,
with a backoff doubling to 30 s, reset once the worker has run a minute) while the others
keep serving, passes SIGHUP (reload the policy) on to every worker, and at SIGTERM or
SIGINT stops them all gracefully.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from node.config import NodeConfig
from node.metrics_workers import MULTIPROC_ENV, fresh_folder, worker_gone

log = logging.getLogger("liaison.node")

_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_STEADY_S = 60.0  # a worker that ran this long before exiting is restarted at once
_STOP_GRACE_S = 15.0


class WorkersRefused(ValueError):
    """`--workers N` cannot run with this configuration; the message says what to do."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), capped by a cgroup v2 CPU quota
    if one is set: in a container limited to 2 CPUs on a 64-core host, 2 workers, not 64."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def default_workers(config: NodeConfig) -> int:
    """`liaison serve` without `--workers`: one per usable core when the audit log is in the
    database (workers share it as replicas do), one with the file store (which one process
    owns), saying so in the log with what would change it."""
    if config.audit.store == "database":
        return usable_cores()
    log.info(
        "serving with one worker: the file audit store belongs to one process and cannot be "
        "shared; for one worker per core, move the log to the database ([audit] store = "
        '"database", docs/operating.md#workers)'
    )
    return 1


def check_workers(config: NodeConfig, workers: int, path: Path) -> None:
    if workers < 1:
        raise WorkersRefused(f"--workers {workers}: give 1 or more")
    if workers > 1 and config.audit.store != "database":
        raise WorkersRefused(
            f'{path}: --workers {workers} needs [audit] store = "database" (one audit tree '
            "that several processes append to); the file store serves one process: use "
            "--workers 1, or move the log to the database (docs/operating.md#workers)"
        )


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class _Worker:
    def __init__(self, index: int, command: list[str], env: dict[str, str]) -> None:
        self.index = index
        self._command, self._env = command, env
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.backoff = _FIRST_BACKOFF_S
        self.due = 0.0  # when to start it again (monotonic), once it has exited

    def start(self) -> None:
        # SIGHUP ignored until the worker's loop handles it (an ignored signal stays ignored
        # across exec; a handler does not), so a reload passed on while it starts does not
        # kill it. It reads the policy as it starts; only a change made between that read and
        # its handler waits for the next SIGHUP (or `[policy] watch`).
        self.process = subprocess.Popen(
            [*self._command, "--worker-index", str(self.index)],
            env=self._env,
            preexec_fn=_ignore_sighup,
        )
        self.started = time.monotonic()
        log.info("worker %d started (pid %d)", self.index, self.process.pid)


def supervise(config_path: Path, workers: int) -> int:
    """Run `workers` workers until SIGTERM or SIGINT; 0 once all have stopped."""
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    folder = Path(tempfile.mkdtemp(prefix="liaison-workers-"))
    fresh_folder(folder)
    env = {**os.environ, MULTIPROC_ENV: str(folder)}
    command = [sys.executable, "-m", "node.cli", "serve", "--config", str(config_path)]
    pool = [_Worker(i, command, env) for i in range(workers)]
    log.info("supervising %d workers on one port", workers)

    def reload(signum: int, frame: FrameType | None) -> None:
        """SIGHUP reloads the policy of `liaison serve`: in every worker."""
        for worker in pool:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    try:
        for worker in pool:
            worker.start()
        while not stopping:
            time.sleep(0.2)
            for worker in pool:
                _look_after(worker, folder)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(pool)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _look_after(worker: _Worker, folder: Path) -> None:
    process = worker.process
    now = time.monotonic()
    if process is None:
        if now >= worker.due:
            worker.start()
        return
    code = process.poll()
    if code is None:
        return
    worker_gone(process.pid, folder)
    if now - worker.started >= _STEADY_S:
        worker.backoff = _FIRST_BACKOFF_S
    log.error(
        "worker %d (pid %d) exited with code %d: starting it again in %.1f s; "
        "the other workers keep serving",
        worker.index,
        process.pid,
        code,
        worker.backoff,
    )
    worker.process, worker.due = None, now + worker.backoff
    worker.backoff = min(2 * worker.backoff, _MAX_BACKOFF_S)


def _stop_all(pool: list[_Worker]) -> None:
    """SIGTERM to every worker (in-flight calls finish), SIGKILL to those still up after
    the grace period."""
    running = [w.process for w in pool if w.process is not None and w.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker pid %d did not stop in %.0f s: killed", process.pid, _STOP_GRACE_S)
            process.kill()
            process.wait()
