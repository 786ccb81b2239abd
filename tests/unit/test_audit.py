"""The hash-chained audit log: group commit, recovery, tampering, and a real full disk."""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.audit.entries import (
    GENESIS,
    AuditCorrupt,
    AuditError,
    AuditRecord,
    personal_digest,
    redact,
)
from node.audit.file_store import FileStorage
from node.audit.log import AuditLog
from node.audit.storage import AuditStorage
from node.audit.verify import verify_log


def _record(i: int, **changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "time": f"2026-03-01T12:00:{i % 60:02d}Z",
        "peer": "FR-PN",
        "method": "Match",
        "purpose": "criminal_investigation",
        "legal_basis": "bilateral_agreement",
        "decision": "allow" if i % 2 else "deny",
        "reasons": () if i % 2 else ("no_agreement",),
        "policy_revision": "rev-1",
        "request_sha256": f"{i:064x}",
        "response_sha256": f"{i + 1:064x}",
        "category": "vehicle",
        "nonce": f"n{i}",
        "case_reference": f"CASE-{i}" if i % 3 else "",
    }
    fields.update(changes)
    return AuditRecord(**fields)


async def _append_many(log: AuditLog, start: int, count: int) -> list[str]:
    return list(await asyncio.gather(*(log.append(_record(start + i)) for i in range(count))))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _write_entries(path: Path, count: int) -> None:
    async def run() -> None:
        log = AuditLog(path)
        await _append_many(log, 0, count)
        await log.close()

    asyncio.run(run())


def test_200_concurrent_appends_are_all_durable_and_chained(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.log"

    async def run() -> tuple[list[str], int]:
        log = AuditLog(path)
        ids = await _append_many(log, 0, 200)
        size = log.size
        await log.close()
        return ids, size

    ids, size = asyncio.run(run())
    assert len(set(ids)) == 200 and all(len(i) == 32 for i in ids)
    assert size == 200
    assert verify_log(path) == 200
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = _lines(path)
    assert [e["seq"] for e in entries] == list(range(200))
    assert sorted(e["id"] for e in entries) == sorted(ids)
    prev = GENESIS
    for entry in entries:
        assert entry["prev"] == prev
        stated = entry.pop("hash")
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert stated == hashlib.sha256(prev.encode() + b"\n" + canonical.encode()).hexdigest()
        prev = stated


def test_each_entry_keeps_its_own_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    async def run() -> list[str]:
        log = AuditLog(path)
        ids = await _append_many(log, 0, 20)
        await log.close()
        return ids

    ids = asyncio.run(run())
    by_id = {e["id"]: e for e in _lines(path)}
    for i, entry_id in enumerate(ids):
        entry = by_id[entry_id]
        assert entry["request_sha256"] == f"{i:064x}"
        assert entry["nonce"] == f"n{i}"
        assert entry["reasons"] == ([] if i % 2 else ["no_agreement"])


def test_reopen_after_close_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 5)
    head = _lines(path)[-1]["hash"]

    async def run() -> list[str]:
        log = AuditLog(path)
        assert log.size == 5
        ids = [await log.append(_record(5)), await log.append(_record(6))]
        await log.close()
        return ids

    ids = asyncio.run(run())
    assert verify_log(path) == 7
    assert [e["id"] for e in _lines(path)[5:]] == ids
    assert _lines(path)[5]["prev"] == head


def test_a_second_writer_of_one_file_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """Two processes appending to one file would interleave two chains; a torn tail the
    second one saw may be the first one's write in flight, so it must not cut it either."""
    path = tmp_path / "audit.log"
    _write_entries(path, 3)

    async def run() -> None:
        first = AuditLog(path)
        with path.open("ab") as fh:
            fh.write(b'{"v":1,"torn')  # as if the first were mid-write
        before = path.read_bytes()
        with pytest.raises(AuditError, match="in use by another node process; stop that"):
            AuditLog(path)
        assert path.read_bytes() == before
        await first.close()
        second = AuditLog(path)  # once the first is closed, it may (and cuts the tail)
        await second.append(_record(3))
        await second.close()

    asyncio.run(run())
    assert verify_log(path) == 4


def test_an_empty_log_verifies_with_zero_entries(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.touch()
    assert verify_log(path) == 0

    async def run() -> int:
        log = AuditLog(path)
        await log.close()
        return log.size

    assert asyncio.run(run()) == 0


def test_removed_entry_breaks_the_chain_there(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 6)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    with pytest.raises(
        AuditCorrupt,
        match=r"audit entry 2 is invalid \(sequence 3 where 2 "
        r"was due\)",
    ):
        verify_log(path)


def test_a_recomputed_hash_does_not_hide_a_broken_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 4)
    lines = path.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry.pop("hash")
    entry["peer"] = "GR-PN"
    entry["prev"] = "f" * 64
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    entry["hash"] = hashlib.sha256(entry["prev"].encode() + b"\n" + canonical.encode()).hexdigest()
    lines[2] = (json.dumps(entry) + "\n").encode()
    path.write_bytes(b"".join(lines))
    with pytest.raises(
        AuditCorrupt,
        match=r"entry 2 is invalid \(does not chain onto the "
        r"entry before it\)",
    ):
        verify_log(path)


def test_an_entry_in_another_encoding_is_not_an_entry(tmp_path: Path) -> None:
    # Same JSON, same hash: only the bytes differ (a byte-order mark, then UTF-16).
    recode: Callable[[bytes], bytes]
    for recode in (
        lambda line: codecs.BOM_UTF8 + line,
        lambda line: line.decode().encode("utf-16"),
    ):
        path = tmp_path / "audit.log"
        _write_entries(path, 3)
        lines = path.read_bytes().splitlines(keepends=True)
        lines[1] = recode(lines[1][:-1]) + b"\n"
        path.write_bytes(b"".join(lines))
        with pytest.raises(AuditCorrupt, match=r"entry 1 is invalid \(not a JSON entry") as info:
            verify_log(path)
        assert info.value.index == 1
        path.unlink()


def test_garbage_line_is_not_an_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 2)
    with path.open("ab") as fh:
        fh.write(b"[1, 2]\n")
    with pytest.raises(AuditCorrupt, match=r"entry 2 is invalid \(not a JSON entry with a hash"):
        verify_log(path)


def test_disk_full_refuses_keeps_the_file_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 3)
    before = path.read_bytes()

    async def run() -> None:
        storage = FileStorage(path)
        log = AuditLog(storage)
        good_fd = storage._fd
        storage._fd = os.open("/dev/full", os.O_WRONLY)
        try:
            results = await asyncio.gather(
                *(log.append(_record(3 + i)) for i in range(5)), return_exceptions=True
            )
            assert len(results) == 5
            for result in results:
                assert isinstance(result, AuditError)
                assert "No space left" in str(result)
                assert str(path) in str(result)
                assert "nothing was disclosed" in str(result)
            assert path.read_bytes() == before
            assert log.size == 3
            with pytest.raises(AuditError, match="No space left"):
                await log.append(_record(9))
            assert log.size == 3
        finally:
            os.close(storage._fd)
            storage._fd = good_fd
        os.close(good_fd)
        storage._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        ids = [await log.append(_record(3)), await log.append(_record(4))]
        await log.close()
        assert [e["id"] for e in _lines(path)[3:]] == ids

    asyncio.run(run())
    assert verify_log(path) == 5
    assert path.read_bytes().startswith(before)


class _CountingLog(AuditLog):
    """The real log, counting its locked writes (one fsync or transaction each) and the
    entries in each, optionally slowing them."""

    def __init__(self, target: Path | AuditStorage, delay: float = 0.0) -> None:
        super().__init__(target)
        self.batches: list[int] = []
        self.delay = delay

    def _commit(self, batch: list[Any]) -> list[Any]:
        self.batches.append(len(batch))
        if self.delay:
            time.sleep(self.delay)
        return super()._commit(batch)


def test_entries_appended_during_a_failed_write_get_their_own_attempt(tmp_path: Path) -> None:
    """An entry is chained (given its index and `prev`) only when its batch is written, so
    one that arrives while a write fails is not dragged down with it."""
    path = tmp_path / "audit.log"
    _write_entries(path, 2)
    before = path.read_bytes()

    class _FailingOnce(_CountingLog):
        def _commit(self, batch: list[Any]) -> list[Any]:
            if not self.batches:
                self.batches.append(len(batch))
                time.sleep(self.delay)
                raise AuditError("No space left on device")
            return super()._commit(batch)

    async def run() -> list[str]:
        log = _FailingOnce(path, delay=0.05)
        first = asyncio.ensure_future(log.append(_record(2)))
        await asyncio.sleep(0.01)  # entry 2 is being written to a full disk
        late = asyncio.ensure_future(log.append(_record(3)))
        with pytest.raises(AuditError, match="No space left"):
            await first
        written = await late
        assert log.batches == [1, 1]
        assert log.size == 3
        await log.close()
        return [written]

    ids = asyncio.run(run())
    assert path.read_bytes().startswith(before)
    assert verify_log(path) == 3
    assert _lines(path)[2]["id"] == ids[0]
    assert _lines(path)[2]["nonce"] == "n3"


def test_an_entry_that_cannot_be_encoded_refuses_its_batch_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """Whatever goes wrong while a batch is written, every request in it is refused (with
    no personal value in the message) and the log goes on: none is left waiting for ever."""
    path = tmp_path / "audit.log"
    _write_entries(path, 2)
    before = path.read_bytes()
    bad = "CASE-\udc80"  # a lone surrogate: not UTF-8, so not an entry

    async def run() -> list[str]:
        log = AuditLog(path)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    log.append(_record(2, case_reference=bad)),
                    log.append(_record(3)),
                    return_exceptions=True,
                ),
                timeout=10,
            )
            assert all(isinstance(r, AuditError) for r in results), results
            assert "nothing was disclosed" in str(results[0])
            assert "CASE-" not in str(results[0])
            assert path.read_bytes() == before and log.size == 2
            return [await log.append(_record(4))]
        finally:
            await log.close()

    ids = asyncio.run(run())
    assert verify_log(path) == 3
    assert _lines(path)[2]["id"] == ids[0]


def test_step_two_facts_are_written_only_when_a_call_has_them(tmp_path: Path) -> None:
    """A ticket, withheld field names, the deciding operator and their reason are in the
    entries that have them; every other entry keeps the keys (and leaf) it always had, and
    the operator's free-text reason reaches an overseer only as a salted digest."""

    async def run() -> None:
        log = AuditLog(tmp_path / "audit.log")
        await log.append(_record(1))
        await log.append(
            _record(
                2,
                method="TicketApprove",
                ticket="tkt_abc",
                withheld=("address", "phone"),
                operator="alice",
                note="MLAT 2026/17 checked by the duty officer",
            )
        )
        await log.close()

    asyncio.run(run())
    plain, step_two = _lines(tmp_path / "audit.log")
    assert not {"ticket", "withheld", "operator", "note"} & set(plain)
    assert (step_two["ticket"], step_two["withheld"], step_two["operator"]) == (
        "tkt_abc",
        ["address", "phone"],
        "alice",
    )
    assert verify_log(tmp_path / "audit.log") == 2
    seen = redact(step_two)
    assert "note" not in seen and seen["note_sha256"] == personal_digest(
        step_two["salt"], "MLAT 2026/17 checked by the duty officer"
    )
    assert seen["withheld"] == ["address", "phone"] and "note_sha256" not in redact(plain)
