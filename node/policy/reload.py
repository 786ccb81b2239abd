"""Hot reload of the policy (Rego and data) without restarting the node.

An operator edits an agreement or a Rego file and the node picks it up, by polling
(:meth:`ReloadingEngine.watch`) or on ``SIGHUP`` (:meth:`ReloadingEngine.install_sighup`).
A reload is all or nothing: the new engine is built from the files afresh and the policy's
own Rego unit tests must all pass against the new files; otherwise the engine in force keeps
deciding, the failure is logged (naming the file or the test) and counted. A bad edit thus
never turns into a deny-all, an allow-all or a half-loaded policy.

Threads. Compiling the Rego and running its tests takes ~0.1 s, too long for the event loop,
so it runs off the loop. It runs on a *fresh thread that ends when the build does*, not in the
loop's executor: a regorus engine is bound to the thread that made it (``EmbeddedEngine``
keeps one per thread) and, dropped from another thread, it is leaked with an "unsendable"
error. A thread that ends frees its own engines, on itself; a pooled thread would keep them
until some other thread dropped them. For the same reason the swap, and the release of the
old engine, happen on the thread that decides (the event loop): :meth:`areload` builds away
and swaps on the loop; synchronous :meth:`reload` swaps on the calling thread.

The decision cache stays correct with no help from here: wrap as
``CachingEngine(ReloadingEngine(...))``; the cache keys on ``revision``, which changes with
the swap, so a decision made by older Rego or data is never served again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from node.policy.data import PolicyDataError
from node.policy.decision import Decision, PolicyEngine, PolicyUnavailable
from node.policy.embedded import PolicyLoadError, engine_message
from node.policy.rego_tests import RegoTestResult, run_rego_tests

log = logging.getLogger("liaison.policy")

# (path, mtime_ns, size, inode) of each watched file; inode catches a rename-into-place
# (and a Kubernetes ConfigMap swap) that keeps the size and lands within one mtime tick.
Signature = tuple[tuple[str, int, int, int], ...]

# Failing Rego tests named in one error; the rest are counted.
_MAX_TESTS_NAMED = 5


class PolicyTestsFailed(PolicyLoadError):
    """The policy's Rego unit tests do not all pass; the message names the failing ones."""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The outcome of one reload attempt."""

    ok: bool
    revision: str  # in force after the attempt (the old one when it failed)
    previous: str  # in force before it
    trigger: str = "manual"
    error: str = ""  # why it failed: names the file, the JSON path and line, or the test

    @property
    def changed(self) -> bool:
        return self.ok and self.revision != self.previous


@dataclass
class _Slot:
    """An engine and the decide calls running on it, so that it is closed only when the
    last of them has finished (in-flight calls finish on the engine they started on)."""

    engine: PolicyEngine
    users: int = 0
    retired: bool = False
    closed: bool = False


@dataclass
class _Prepared:
    seq: int
    signature: Signature
    engine: PolicyEngine | None
    error: str


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PolicyLoadError | PolicyDataError | PolicyUnavailable):
        return engine_message(exc)
    return f"{type(exc).__name__}: {engine_message(exc)}"


def _test_failures(results: list[RegoTestResult]) -> str:
    failed = [r for r in results if not r.passed]
    if not failed:
        return ""
    named = [f"{r.test_id} ({' '.join(r.detail.split())[:200]})" for r in failed[:_MAX_TESTS_NAMED]]
    more = f"; and {len(failed) - _MAX_TESTS_NAMED} more" if len(failed) > _MAX_TESTS_NAMED else ""
    return f"{len(failed)} of {len(results)} Rego unit tests failed: {'; '.join(named)}{more}"


def _on_fresh_thread(work: Callable[[], _Prepared]) -> _Prepared:
    """Run ``work`` on a new thread and wait for it: the thread's regorus engines are freed
    on it when it ends (see the module docstring)."""
    box: list[_Prepared] = []
    thread = threading.Thread(target=lambda: box.append(work()), name="liaison-policy-build")
    thread.start()
    thread.join()
    if not box:  # pragma: no cover - _prepare turns every failure into a result
        raise PolicyUnavailable("the policy build thread ended without a result")
    return box[0]


def files_signature(policy_dir: Path, data_path: Path) -> Signature:
    """What the watcher compares: every file under ``policy_dir``, and the data file.

    A file that cannot be read is still listed (``-1``), so its disappearance is a change.
    """
    paths = {data_path}
    if policy_dir.is_dir():
        paths.update(policy_dir.rglob("*"))
    out: list[tuple[str, int, int, int]] = []
    for path in sorted(paths):
        try:
            info = path.stat()
        except OSError:
            out.append((str(path), -1, -1, -1))
            continue
        if stat.S_ISREG(info.st_mode):
            out.append((str(path), info.st_mtime_ns, info.st_size, info.st_ino))
    return tuple(out)


def reload_counter(registry: CollectorRegistry) -> Callable[[bool, str], None]:
    """An ``on_reload`` callback counting ``liaison_policy_reloads_total{result}``."""
    counter = Counter(
        "liaison_policy_reloads",
        "Policy reload attempts, by result (a failure keeps the policy in force).",
        ["result"],
        registry=registry,
    )
    for result in ("success", "failure"):
        counter.labels(result)  # both series exist from the start, so alerts see a 0

    def record(ok: bool, detail: str) -> None:
        counter.labels("success" if ok else "failure").inc()

    return record


class ReloadingEngine:
    """A :class:`PolicyEngine` whose engine can be replaced while the node runs.

    ``build`` makes a complete engine from the files as they are now (reading the policy
    directory and the data file afresh, e.g. ``EmbeddedEngine(dir, load_policy_data(data))``).
    The first engine is built in the constructor, on the calling thread: a broken policy,
    bad data or (with ``test_on_start``) a failing Rego test stops start-up with the error,
    as it would stop a reload. ``on_reload(ok, detail)`` is told of every attempt: ``detail``
    is the new revision, or the error.
    """

    def __init__(
        self,
        build: Callable[[], PolicyEngine],
        *,
        policy_dir: Path,
        data_path: Path,
        on_reload: Callable[[bool, str], None] | None = None,
        test_on_start: bool = True,
    ) -> None:
        self.policy_dir = policy_dir
        self.data_path = data_path
        self._build = build
        self._on_reload = on_reload
        self._lock = threading.Lock()  # guards the slot, the sequence numbers, closed
        self._sync_reload = threading.Lock()
        self._async_reload: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[ReloadResult]] = set()
        self._seen = self.signature()
        if test_on_start and (failures := _test_failures(run_rego_tests(policy_dir))):
            raise PolicyTestsFailed(f"{policy_dir}: {failures}")
        engine = build()
        self.name = engine.name
        self.waits_on_io = engine.waits_on_io
        self._slot = _Slot(engine)
        self._next_seq = 1
        self._installed_seq = 0
        self._closed = False

    # --- the PolicyEngine protocol ------------------------------------------------------

    @property
    def revision(self) -> str:
        return self._slot.engine.revision

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        with self._lock:
            if self._closed:
                raise PolicyUnavailable("the policy engine is closed")
            slot = self._slot
            slot.users += 1
        try:
            return slot.engine.decide(policy_input, input_json=input_json)
        finally:
            self._release(slot)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            slot = self._slot
            slot.retired = True
        for task in self._tasks:
            task.cancel()
        self._release(slot, retiring=True)

    # --- reloading -----------------------------------------------------------------------

    def signature(self) -> Signature:
        return files_signature(self.policy_dir, self.data_path)

    def reload(self, trigger: str = "manual") -> ReloadResult:
        """Build, test and swap now; blocks until done. The build runs on a fresh thread;
        the swap happens on the calling thread, which should be the one that decides."""
        with self._sync_reload:
            return self._install(_on_fresh_thread(self._prepare), trigger)

    async def areload(self, trigger: str = "manual") -> ReloadResult:
        """As :meth:`reload`, without blocking the loop: the build and the Rego tests run on
        a fresh thread (awaited through the default executor), the swap on the loop.
        Concurrent calls run one after the other."""
        if self._async_reload is None:
            self._async_reload = asyncio.Lock()
        async with self._async_reload:
            prepared = await asyncio.to_thread(_on_fresh_thread, self._prepare)
            return self._install(prepared, trigger)

    async def watch(self, interval: float) -> None:
        """Poll the files every ``interval`` seconds and reload when their signature moves;
        runs until cancelled (start it with ``asyncio.create_task``).

        A failed attempt is not retried until the files change again, so a broken file is
        reported once, not every interval.
        """
        if interval <= 0:
            raise ValueError("the watch interval must be positive")
        while True:
            await asyncio.sleep(interval)
            try:
                current = await asyncio.to_thread(self.signature)
                if current != self._seen:
                    await self.areload("files changed")
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("policy watch: checking the policy files failed")

    def install_sighup(self, loop: asyncio.AbstractEventLoop | None = None) -> Callable[[], None]:
        """Reload on ``SIGHUP``. The handler runs on the loop (asyncio's signal handling) and
        only schedules :meth:`areload` as a task, so the build runs off the loop as always.

        Call from the main thread with the loop running; returns a function that removes
        the handler and puts back whatever handled SIGHUP before.
        """
        loop = loop or asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGHUP)

        def on_sighup() -> None:
            task = loop.create_task(self.areload("SIGHUP"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)

        def uninstall() -> None:
            loop.remove_signal_handler(signal.SIGHUP)
            if previous is not None:  # None: set outside Python; asyncio left SIG_DFL
                signal.signal(signal.SIGHUP, previous)

        return uninstall

    # --- internals -----------------------------------------------------------------------

    def _prepare(self) -> _Prepared:
        """Read, build and test the files as they are now. Runs on a fresh thread; nothing
        it made, not even an exception (whose frames hold engines), leaves it but the result.
        """
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        signature = self.signature()
        engine: PolicyEngine | None = None
        try:
            # Tests first: building an OPA engine already pushes the files to the server.
            error = _test_failures(run_rego_tests(self.policy_dir))
            if not error:
                engine = self._build()
        except BaseException as exc:  # pyo3 panics are BaseExceptions: still a failed build
            error = _describe(exc)
        return _Prepared(seq, signature, engine, error)

    def _install(self, prepared: _Prepared, trigger: str) -> ReloadResult:
        with self._lock:
            old = self._slot
            previous = old.engine.revision
            stale = self._closed or prepared.seq < self._installed_seq
            if not stale:
                self._installed_seq = prepared.seq
                self._seen = prepared.signature
                if prepared.engine is not None:
                    self._slot = _Slot(prepared.engine)
                    old.retired = True
        if stale:
            # Closed meanwhile, or a reload that started later has been installed already:
            # it read newer files, so this one must not replace it.
            if prepared.engine is not None:
                prepared.engine.close()
            why = "the engine is closed" if self._closed else "superseded by a newer reload"
            return ReloadResult(False, previous, previous, trigger, why)
        if prepared.engine is None:
            log.error(
                "policy reload (%s) failed; still deciding with revision %s: %s",
                trigger,
                previous,
                prepared.error,
            )
            self._notify(False, prepared.error)
            return ReloadResult(False, previous, previous, trigger, prepared.error)
        self._release(old, retiring=True)
        revision = prepared.engine.revision
        if revision == previous:
            log.info("policy reload (%s): unchanged, revision %s", trigger, revision)
        else:
            log.info("policy reloaded (%s): revision %s -> %s", trigger, previous, revision)
        self._notify(True, revision)
        return ReloadResult(True, revision, previous, trigger)

    def _release(self, slot: _Slot, retiring: bool = False) -> None:
        """Drop one use of ``slot`` (or, when ``retiring``, none) and close its engine once
        it is retired and unused."""
        with self._lock:
            if not retiring:
                slot.users -= 1
            done = slot.retired and slot.users == 0 and not slot.closed
            slot.closed = slot.closed or done
        if done:
            slot.engine.close()

    def _notify(self, ok: bool, detail: str) -> None:
        if self._on_reload is None:
            return
        try:
            self._on_reload(ok, detail)
        except Exception:  # a metrics hiccup must not undo or fail a reload
            log.exception("policy reload: the on_reload callback failed")
