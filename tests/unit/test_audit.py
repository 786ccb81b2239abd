"""The hash-chained audit log: group commit, recovery, tampering, and a real full disk."""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from node.audit import GENESIS, AuditCorrupt, AuditError, AuditLog, AuditRecord, verify_log


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

    async def run() -> tuple[list[str], int, int]:
        log = AuditLog(path)
        ids = await _append_many(log, 0, 200)
        size, next_seq = log.size, log.next_seq
        await log.close()
        return ids, size, next_seq

    ids, size, next_seq = asyncio.run(run())
    assert sorted(ids, key=int) == [str(i) for i in range(200)]
    assert len(set(ids)) == 200
    assert size == next_seq == 200
    assert verify_log(path) == 200
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = _lines(path)
    assert [e["seq"] for e in entries] == list(range(200))
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
    by_seq = {e["seq"]: e for e in _lines(path)}
    for i, entry_id in enumerate(ids):
        entry = by_seq[int(entry_id)]
        assert entry["request_sha256"] == f"{i:064x}"
        assert entry["nonce"] == f"n{i}"
        assert entry["reasons"] == ([] if i % 2 else ["no_agreement"])


def test_reopen_after_close_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 5)
    head = _lines(path)[-1]["hash"]

    async def run() -> list[str]:
        log = AuditLog(path)
        assert log.size == log.next_seq == 5
        ids = [await log.append(_record(5)), await log.append(_record(6))]
        await log.close()
        return ids

    assert asyncio.run(run()) == ["5", "6"]
    assert verify_log(path) == 7
    assert _lines(path)[5]["prev"] == head


def test_torn_tail_is_cut_on_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 3)
    good_size = path.stat().st_size
    with path.open("ab") as fh:
        fh.write(b'{"seq":3,"prev":"abc","hash":"de')
    with pytest.raises(AuditCorrupt, match=r"audit entry 3 is invalid \(torn final line\)"):
        verify_log(path)

    async def run() -> tuple[int, str]:
        log = AuditLog(path)
        assert path.stat().st_size == good_size
        assert log.size == 3
        entry = await log.append(_record(3))
        await log.close()
        return log.size, entry

    assert asyncio.run(run()) == (4, "3")
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


def _flip_byte_in_entry(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    lines = bytes(data).splitlines(keepends=True)
    start = sum(len(line) for line in lines[:index])
    at = start + lines[index].index(b'"peer":"FR-PN"') + len(b'"peer":"')
    data[at] = ord("G")  # FR-PN becomes GR-PN: same size, still valid JSON
    path.write_bytes(bytes(data))


def test_one_edited_byte_mid_file_is_named_at_open_and_by_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 10)
    before = path.stat().st_size
    _flip_byte_in_entry(path, 4)
    assert path.stat().st_size == before
    with pytest.raises(
        AuditCorrupt,
        match=r"audit entry 4 is invalid \(hash does not match "
        r"its content\).*liaison audit verify",
    ) as info:
        verify_log(path)
    assert info.value.index == 4
    with pytest.raises(AuditCorrupt) as opened:
        AuditLog(path)
    assert opened.value.index == 4
    assert str(path) in str(opened.value)
    # Nothing was cut or rewritten by the failed open.
    assert path.stat().st_size == before


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
        log = AuditLog(path)
        good_fd = log._fd
        log._fd = os.open("/dev/full", os.O_WRONLY)
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
            assert log.next_seq == log.size == 3
            with pytest.raises(AuditError, match="No space left"):
                await log.append(_record(9))
            assert log.next_seq == 3
        finally:
            os.close(log._fd)
            log._fd = good_fd
        os.close(good_fd)
        log._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        assert await log.append(_record(3)) == "3"
        assert await log.append(_record(4)) == "4"
        await log.close()

    asyncio.run(run())
    assert verify_log(path) == 5
    assert path.read_bytes().startswith(before)


class _CountingLog(AuditLog):
    """The real log, counting its write+fsync batches and optionally slowing them."""

    def __init__(self, path: Path, delay: float = 0.0) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.delay = delay

    def _write(self, data: bytes) -> None:
        self.batches.append(data.count(b"\n"))
        if self.delay:
            import time

            time.sleep(self.delay)
        super()._write(data)


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    async def run() -> list[int]:
        log = _CountingLog(path, delay=0.01)
        first = asyncio.ensure_future(log.append(_record(0)))
        await asyncio.sleep(0)  # the flusher has started
        await _append_many(log, 1, 199)
        await first
        await log.close()
        return log.batches

    batches = asyncio.run(run())
    assert sum(batches) == 200
    assert len(batches) < 10  # appends made while a write is under way go out together
    assert verify_log(path) == 200


def test_entries_chained_onto_a_failed_write_fail_too(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, 2)
    before = path.read_bytes()

    async def run() -> None:
        log = _CountingLog(path, delay=0.05)
        good_fd, log._fd = log._fd, os.open("/dev/full", os.O_WRONLY)
        first = asyncio.ensure_future(log.append(_record(2)))
        await asyncio.sleep(0.01)  # entry 2 is being written to the full disk
        assert log.next_seq == 3
        late = asyncio.ensure_future(log.append(_record(3)))  # chained onto entry 2
        for fut in (first, late):
            with pytest.raises(AuditError, match="No space left"):
                await fut
        assert log.batches == [1]  # the late entry was never written after its parent failed
        assert log.next_seq == log.size == 2
        os.close(log._fd)
        log._fd = good_fd
        assert await log.append(_record(2)) == "2"
        await log.close()

    asyncio.run(run())
    assert path.read_bytes().startswith(before)
    assert verify_log(path) == 3
