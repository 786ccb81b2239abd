"""The audit log's writer thread (node/audit/writer.py): one long-lived thread per log, each
batch what queued up while the last one was written, nothing answered before it is durable,
and a failed batch refused without stopping the writer."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from node.audit.entries import AuditError
from node.audit.log import AuditLog
from node.audit.verify import verify_log
from tests.unit.test_audit import _append_many, _record


class _GatedLog(AuditLog):
    """The real log; each locked write waits for `gate` (set by the test) and records the
    thread it ran in and its batch's size."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.threads: list[int] = []
        self.batches: list[int] = []

    def _commit(self, batch: list[Any]) -> list[Any]:
        self.threads.append(threading.get_ident())
        self.batches.append(len(batch))
        self.entered.set()
        assert self.gate.wait(10)
        return super()._commit(batch)


def _ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines()]


def test_every_batch_is_written_by_one_long_lived_thread_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    async def run() -> _GatedLog:
        log = _GatedLog(path)
        for round_ in range(5):
            await _append_many(log, round_ * 10, 10)
        await log.close()
        return log

    log = asyncio.run(run())
    assert len(set(log.threads)) == 1 and log.threads[0] != threading.get_ident()
    assert sum(log.batches) == 50 and len(log.batches) == 5  # one batch per gather
    assert verify_log(path) == 50
    # Its writer has stopped (other tests' logs may still have theirs).
    assert not [t for t in threading.enumerate() if t.ident in set(log.threads)]


def test_an_append_returns_only_once_its_entry_is_written(tmp_path: Path) -> None:
    """Nothing is answered before its entry is durable: while the write is held up, the
    request is still waiting, and when it returns its entry is in the file."""
    path = tmp_path / "audit.log"

    async def run() -> None:
        log = _GatedLog(path)
        log.gate.clear()
        pending = asyncio.ensure_future(log.append(_record(1)))
        assert await asyncio.to_thread(log.entered.wait, 10)
        await asyncio.sleep(0.1)
        assert not pending.done() and log.size == 0
        assert not path.exists() or path.read_bytes() == b""
        log.gate.set()
        entry_id = await pending
        assert _ids_in(path) == [entry_id] and log.size == 1
        await log.close()

    asyncio.run(run())


def test_appends_made_during_a_write_go_out_together_in_the_next(tmp_path: Path) -> None:
    """Group commit: while one batch is being written, the appends that arrive (over
    several turns of the loop) queue up and share the next write and fsync."""
    path = tmp_path / "audit.log"

    async def run() -> list[str]:
        log = _GatedLog(path)
        log.gate.clear()
        first = asyncio.ensure_future(log.append(_record(0)))
        assert await asyncio.to_thread(log.entered.wait, 10)
        later = []
        for i in range(1, 11):
            later.append(asyncio.ensure_future(log.append(_record(i))))
            await asyncio.sleep(0)  # each in its own turn of the loop
        await asyncio.sleep(0.05)
        log.gate.set()
        ids = [await first, *await asyncio.gather(*later)]
        assert log.batches == [1, 10]
        await log.close()
        return ids

    ids = asyncio.run(run())
    assert _ids_in(path) == ids and verify_log(path) == 11


def test_a_failed_batch_is_refused_and_the_writer_goes_on(tmp_path: Path) -> None:
    """A batch whose write fails refuses each of its requests (no partial entry stays);
    the same writer thread writes the next batch."""
    path = tmp_path / "audit.log"

    class _FailsFirst(_GatedLog):
        def _commit(self, batch: list[Any]) -> list[Any]:
            if not self.batches:
                self.batches.append(len(batch))
                self.threads.append(threading.get_ident())
                raise AuditError("No space left on device")
            return super()._commit(batch)

    async def run() -> None:
        log = _FailsFirst(path)
        results = await asyncio.gather(
            *(log.append(_record(i)) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, AuditError) for r in results), results
        written = await log.append(_record(3))
        assert log.batches == [3, 1] and len(set(log.threads)) == 1
        assert _ids_in(path) == [written] and log.size == 1
        await log.close()

    asyncio.run(run())
    assert verify_log(path) == 1


def test_a_cancelled_append_leaves_the_rest_of_its_batch_answered(tmp_path: Path) -> None:
    """A request that stops waiting (its client went away) does not upset the writer: its
    entry is written all the same (the exchange happened), and the others get their ids."""
    path = tmp_path / "audit.log"

    async def run() -> None:
        log = _GatedLog(path)
        log.gate.clear()
        tasks = [asyncio.ensure_future(log.append(_record(i))) for i in range(3)]
        assert await asyncio.to_thread(log.entered.wait, 10)
        tasks[1].cancel()
        log.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        assert len(_ids_in(path)) == 3 and {results[0], results[2]} < set(_ids_in(path))
        assert await log.append(_record(4)) == _ids_in(path)[-1]
        await log.close()

    asyncio.run(run())
    assert verify_log(path) == 4


def test_close_writes_what_is_queued_and_a_later_append_is_refused(tmp_path: Path) -> None:
    """Closing waits for the appends already made; one after close fails on the closed
    log (AuditError, so its request is refused) instead of waiting for ever."""
    path = tmp_path / "audit.log"

    async def run() -> None:
        log = AuditLog(path)
        pending = [asyncio.ensure_future(log.append(_record(i))) for i in range(5)]
        await asyncio.sleep(0)  # queued, not yet written
        await log.close()
        assert all(p.done() for p in pending)
        assert _ids_in(path) == [p.result() for p in pending]
        with pytest.raises(AuditError):
            await asyncio.wait_for(log.append(_record(9)), timeout=10)
        await log.close()

    asyncio.run(run())
    assert verify_log(path) == 5
