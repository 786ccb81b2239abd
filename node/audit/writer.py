"""The audit log's writer: one long-lived thread that drains a queue of appends.

Requests on an event loop add their entry and await a future. The entries added in one
turn of the loop are handed to the thread together, in one queue put at the end of that
turn, so requests that are already runnable share a write at no cost to a lone one. A
loop has one batch with the thread at a time: what it adds meanwhile goes out as its next
batch, handed over in the turn after the last one's requests are answered (a batch per
fsync's round trip, not per request finished while the thread is idle). The thread commits
each batch (`commit`: one locked write, one fsync or transaction) and wakes the batch's
requests with one call into their event loop. A batch so costs one thread wake-up and one
loop wake-up, where a thread-pool hop per batch (`asyncio.to_thread`) cost a task, an
executor future and their chaining besides.

Nothing is answered before its entry is durable: a future gets its entry id only after
`commit` returned, and `commit`'s failure (disk full, database down, a bug) refuses every
request of that batch and leaves the writer running for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

from node.audit.entries import AuditError, AuditRecord, AuditReplay

# An entry's body (before `seq` and `prev` are known), the future its request awaits, and
# what to write instead if the entry turns out to answer a replay (`AuditLog.append`).
Pending = tuple[dict[str, Any], "asyncio.Future[str]", "Callable[[], AuditRecord] | None"]


class BatchWriter:
    """Group commit on one writer thread, started by the first append (and again by an
    append after `close`, which then fails in `commit` on the closed backend).

    `commit(batch)` writes a batch durably and returns the appends it refused as replays
    (AuditReplay for their requests); `unwritten(exc)` turns an error that is not an
    AuditError into the one its requests get."""

    def __init__(
        self,
        commit: Callable[[list[Pending]], list[Pending]],
        unwritten: Callable[[BaseException], AuditError],
    ) -> None:
        self._commit = commit
        self._unwritten = unwritten
        # The entries each loop added that are not handed over yet, and the loops that
        # have a batch with the writer: one batch per loop at a time, so that what
        # arrives while it is written goes out together in the next.
        self._turns: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
        self._busy: set[asyncio.AbstractEventLoop] = set()
        # None asks the thread to stop once every append queued before it is written.
        self._queue: queue.SimpleQueue[list[Pending] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    async def append(
        self, body: dict[str, Any], if_replayed: Callable[[], AuditRecord] | None
    ) -> str:
        """Queue one entry's body; its id once the batch it went out in is durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = []
            if loop not in self._busy:  # else `_settled` hands it over
                loop.call_soon(self._hand_over, loop)
        turn.append((body, future, if_replayed))
        return await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """At the end of a loop turn: its entries to the writer thread, in one put (none
        if `close` handed them over already)."""
        if loop in self._busy:
            return
        batch = self._turns.pop(loop, None)
        if not batch:
            return
        self._busy.add(loop)
        self._queue.put(batch)
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start()

    def _start(self) -> None:
        with self._starting:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Each batch is the first turn's entries waited for, and every turn's queued
        behind them."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = first, False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch += more
            self.write(batch)
            if stop:
                return

    def write(self, batch: list[Pending]) -> None:
        """Commit one batch and wake its requests; whatever goes wrong refuses the batch,
        never the writer: entries queued meanwhile are not chained onto this batch yet, so
        they get their own attempt."""
        replays: list[Pending] = []
        error: AuditError | None = None
        try:
            replays = self._commit(batch)
        except BaseException as exc:
            # Any error but an AuditError (an entry that is not UTF-8, a bug) refuses the
            # batch too, rather than leave its requests waiting for ever; its text may
            # quote an entry, so `unwritten` tells only its type.
            error = exc if isinstance(exc, AuditError) else self._unwritten(exc)
        replayed = {id(p[1]) for p in replays} if error is None else set()
        replay = AuditReplay("another replica already audited this nonce") if replayed else None
        # One wake-up per batch and event loop (nearly always one loop).
        by_loop: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
        for pending in batch:
            by_loop.setdefault(pending[1].get_loop(), []).append(pending)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these
                loop.call_soon_threadsafe(self._settled, loop, settled, error, replayed, replay)

    def _settled(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[Pending],
        error: AuditError | None,
        replayed: set[int],
        replay: AuditReplay | None,
    ) -> None:
        """On the loop: the batch's requests are answered, and what the loop added
        meanwhile is handed over at the end of this turn."""
        self._busy.discard(loop)
        _settle(batch, error, replayed, replay)
        if self._turns.get(loop):
            loop.call_soon(self._hand_over, loop)

    async def close(self) -> None:
        """Write what this loop added (waiting for its batch with the writer first), then
        stop the thread."""
        loop = asyncio.get_running_loop()
        while loop in self._busy or self._turns.get(loop):
            self._hand_over(loop)
            await asyncio.sleep(0.001)
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join)
            self._thread = None


def _settle(
    batch: list[Pending], error: AuditError | None, replayed: set[int], replay: AuditReplay | None
) -> None:
    """On the requests' event loop: each append of a written batch gets its entry id, or
    the batch's error, or (an answer another replica had given: `replayed`, by its
    future) AuditReplay. A request that stopped waiting (cancelled) is skipped."""
    for body, future, _ in batch:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        elif replay is not None and id(future) in replayed:
            future.set_exception(replay)
        else:
            future.set_result(str(body["id"]))
