"""A damaged audit log: torn at every byte of its last entry or checkpoint, or one byte
changed anywhere in an entry.

A crash can stop a write at any byte. Whatever byte that is, the next open must drop the
partial entry (it was never acknowledged) and carry on from the entries before it, and the
next checkpoint must drop a partial note. A byte changed by anyone else must be named, by
entry index, by `verify_log` and by `liaison audit verify`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from federation import merkle
from node.audit.checkpoints import issue_checkpoint
from node.audit.entries import AuditCorrupt, CheckpointInvalid
from node.audit.file_store import FileStorage, checkpoints_path
from node.audit.log import AuditLog
from node.audit.verify import load_tree, storage_checkpoints, verify_log, verify_log_and_checkpoints
from node.cli import main as liaison
from tests.unit.test_audit import _append_many, _record, _write_entries
from tests.unit.test_audit_merkle import KEY, ORIGIN, VERIFIER, _grow, _rechain, _redacted


def _leaves(lines: list[bytes]) -> list[bytes]:
    return [merkle.leaf_hash(_redacted(line)) for line in lines]


@pytest.fixture
def no_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of reopen-and-append cycles per test: what they check is what is in the
    file, not whether it reached the disk (the kill -9 test runs with real syncs)."""
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)
    monkeypatch.setattr(os, "fsync", lambda fd: None)


# --- a torn last entry -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "case_reference"),
    [
        (1, "T-1"),  # the only entry is torn: the log goes back to empty
        (4, "T-1"),
        # Multi-byte UTF-8 in the last line: some cuts fall inside a character.
        (4, "Øresund-Łódź/東京"),
    ],
    ids=["only-entry", "ascii", "utf-8"],
)
@pytest.mark.usefixtures("no_sync")
def test_a_log_torn_at_any_byte_of_its_last_entry_reopens_without_it(
    tmp_path: Path, entries: int, case_reference: str
) -> None:
    source = tmp_path / "whole.log"

    async def write() -> None:
        log = AuditLog(source)
        await _append_many(log, 0, entries - 1)
        await log.append(_record(entries - 1, case_reference=case_reference))
        await log.close()

    asyncio.run(write())
    lines = source.read_bytes().splitlines(keepends=True)
    kept, last = b"".join(lines[:-1]), lines[-1]
    assert case_reference.encode() in last
    durable = entries - 1
    root = merkle.root(_leaves(lines[:-1]))
    path = tmp_path / "audit.log"

    async def reopen_torn_at(cut: int) -> None:
        path.write_bytes(kept + last[:cut])
        if cut:
            with pytest.raises(AuditCorrupt, match="torn final line") as err:
                verify_log(path)
            assert err.value.index == durable
        # A reader of a live log leaves the torn line out, and alone.
        assert load_tree(path).size == durable
        assert path.stat().st_size == len(kept) + cut
        log = AuditLog(path)
        try:
            assert path.read_bytes() == kept, "the partial entry is still in the file"
            assert log.size == durable
            assert log.root() == root
            entry_id = await log.append(_record(99))
            assert json.loads(path.read_bytes().splitlines()[durable])["id"] == entry_id
            assert log.root() == merkle.root(_leaves(path.read_bytes().splitlines()))
        finally:
            await log.close()
        assert verify_log(path) == entries

    async def every_cut() -> None:
        for cut in range(len(last)):  # 0 .. len-1 bytes of the last line kept
            await reopen_torn_at(cut)

    asyncio.run(every_cut())


# --- a torn last checkpoint --------------------------------------------------------------


@pytest.mark.parametrize("torn", [0, 1])
@pytest.mark.usefixtures("no_sync")
def test_a_checkpoints_file_torn_at_any_byte_of_its_last_note_is_named_and_cut(
    tmp_path: Path, torn: int
) -> None:
    path = tmp_path / "audit.log"
    signed = _grow(path, 5, checkpoint_at=(3, 5)[: torn + 1])
    records = [(note + "\n").encode() for note in signed]
    kept, last = b"".join(records[:-1]), records[-1]
    assert "—".encode() in last  # the signature line's em dash: 3 bytes in UTF-8
    cp_file = checkpoints_path(path)
    tree = merkle.TreeHasher(load_tree(path))
    for cut in range(len(last)):  # 0 .. len-1 bytes of the last note kept
        cp_file.write_bytes(kept + last[:cut])
        if cut == 0:
            assert storage_checkpoints(FileStorage(path)) == signed[:-1]
        else:
            # Named, by the reader and by the verifier: checkpoint `torn` is torn.
            for read in (
                lambda: storage_checkpoints(FileStorage(path)),
                lambda: verify_log_and_checkpoints(path, VERIFIER),
            ):
                with pytest.raises(CheckpointInvalid) as err:
                    read()
                assert err.value.index == torn, f"cut at byte {cut}: {err.value}"
                assert f"checkpoint {torn} is invalid: torn" in str(err.value)
        note = issue_checkpoint(path, tree, KEY, ORIGIN)
        assert cp_file.read_bytes() == kept + (note + "\n").encode(), f"cut at byte {cut}"
        assert storage_checkpoints(FileStorage(path)) == [*signed[:-1], note]
        assert verify_log_and_checkpoints(path, VERIFIER) == (5, torn + 1)


# --- one byte changed --------------------------------------------------------------------

ENTRIES = 7
# Each kind of damage: where the byte is, and why the entry then fails.
DAMAGE = {
    "digit in seq": ('"seq":', 0, "sequence"),
    "digit in time": ('"time":"', 3, "hash does not match its content"),  # the year
    "quote": ('"peer"', -len('"peer"'), "not a JSON entry"),
    "byte of prev": ('"prev":"', 17, "does not chain onto the entry before it"),
    "byte of hash": ('"hash":"', 40, "hash does not match its content"),
    "newline": ("", -1, "not a JSON entry"),  # mid-line: the entry is split in two
}


def _damage(line: bytes, kind: str) -> bytes:
    """`line` with one byte changed (same length) as `kind` says."""
    anchor, offset, _ = DAMAGE[kind]
    if kind == "newline":
        at, new = len(line) // 2, b"\n"
    else:
        at = line.index(anchor.encode()) + len(anchor) + offset
        new = {b'"': b"'", b"0": b"1"}.get(line[at : at + 1], b"0")
    assert line[at : at + 1] != new
    return line[:at] + new + line[at + 1 :]


@pytest.mark.parametrize("index", [0, ENTRIES // 2, ENTRIES - 1], ids=["first", "mid", "last"])
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_one_changed_byte_is_named_by_its_entry_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], index: int, kind: str
) -> None:
    path = tmp_path / "audit.log"
    _write_entries(path, ENTRIES)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[index] = _damage(lines[index], kind)
    damaged = b"".join(lines)
    path.write_bytes(damaged)
    why = DAMAGE[kind][2]

    with pytest.raises(AuditCorrupt) as err:
        verify_log(path)
    assert err.value.index == index, str(err.value)
    assert why in err.value.why
    assert f"audit entry {index} is invalid" in str(err.value)

    capsys.readouterr()
    assert liaison(["audit", "verify", "--log", str(path)]) == 2
    out = capsys.readouterr().out
    assert re.findall(r"entry (\d+)", out) == [str(index)], out
    assert why in out

    # A node does not start on it, and names the same entry; nothing is cut or rewritten.
    with pytest.raises(AuditCorrupt) as opened:
        AuditLog(path)
    assert opened.value.index == index
    assert str(path) in str(opened.value) and "liaison audit verify" in str(opened.value)
    assert path.read_bytes() == damaged


def test_a_consistently_rechained_log_passes_the_chain_but_not_its_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An attacker with write access edits entry 17 and recomputes every hash after it."""
    path = tmp_path / "audit.log"
    _grow(path, 40, checkpoint_at=(10, 25, 40))
    _rechain(path, 17, "XX-FORGED")
    public = KEY.public_key().public_bytes_raw().hex()
    capsys.readouterr()

    assert liaison(["audit", "verify", "--log", str(path)]) == 0
    assert "40 entries, the chain is intact" in capsys.readouterr().out

    signed = ["audit", "verify", "--log", str(path), "--public-key", public, "--origin", ORIGIN]
    assert liaison(signed) == 2
    out = capsys.readouterr().out
    # The first checkpoint whose tree holds entry 17: checkpoint 1, of size 25.
    assert "BAD" in out and "checkpoint 1 (tree size 25)" in out, out
    assert "the log was altered" in out
