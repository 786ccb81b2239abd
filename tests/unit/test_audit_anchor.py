"""The anchor saved with each checkpoint: a log opens from it (reading only the entries
from its last one on) when it verifies, falls back to a full scan (and says why) when it
does not, and its history is checked afterwards; the fast leaf path equals the writer's."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import checkpoints, merkle
from node.audit.anchor import AnchorRejected, verify_from_anchor
from node.audit.entries import (
    AuditCorrupt,
    canonical,
    entry_body,
    leaf_of,
    leaf_of_canonical,
)
from node.audit.file_store import FileStorage, anchor_path
from node.audit.log import AuditLog
from node.audit.verify import load_tree
from node.cli import main as liaison
from tests.unit.test_audit import _append_many, _record
from tests.unit.test_audit_backends import Backend, _grow, backend, pytest_generate_tests
from tests.unit.test_audit_merkle import KEY, ORIGIN, VERIFIER
from tests.unit.test_audit_merkle import _grow as grow

__all__ = ["backend", "pytest_generate_tests"]  # each test taking `backend`: every backend


def _full_root(path: Path) -> bytes:
    return merkle.TreeHasher(load_tree(path)).root()


def _opened(backend: Backend, **options: object) -> AuditLog:
    return AuditLog(backend.storage(), verifier=VERIFIER, **options)  # type: ignore[arg-type]


def _close(log: AuditLog) -> None:
    asyncio.run(log.close())


def test_a_log_opens_from_its_anchor_and_loads_its_history(backend: Backend) -> None:
    _grow(backend, 30, checkpoint_at=(20,))
    log = _opened(backend, load_history=False)
    try:
        assert not log.history_loaded and log.size == 30
        fast_root = log.root()
        # Proofs need the history: it is read, checked and loaded when first needed.
        proof = log.inclusion_proof(3)
        assert log.history_loaded and not log.history_damaged()
        merkle.verify_inclusion(log._hasher().leaf(3), 3, 30, proof, fast_root)
        assert log.consistency_proof(20) and log.entries(0, 2)
    finally:
        _close(log)
    full = AuditLog(backend.storage())  # the same log, from entry 0 (no verifier: same anchor)
    try:
        assert full.root() == fast_root and full.root(20) == log.root(20)
    finally:
        _close(full)


def test_appends_after_a_fast_open_chain_on_and_the_next_anchor_follows(
    backend: Backend,
) -> None:
    _grow(backend, 12, checkpoint_at=(12,))

    async def more() -> None:
        log = _opened(backend)
        try:
            await _append_many(log, 12, 5)
            log.checkpoint(KEY, ORIGIN)
        finally:
            await log.close()

    asyncio.run(more())
    log = _opened(backend, load_history=False)
    try:
        assert log.size == 17 and not log.history_loaded
    finally:
        _close(log)
    storage = backend.storage()
    try:
        assert verify_from_anchor(storage, VERIFIER)[:2] == (17, 2)
    finally:
        storage.close()
    assert backend.verify() == (17, 2)


def _anchor_doc(path: Path) -> dict[str, object]:
    return dict(json.loads(anchor_path(path).read_bytes()))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("frontier", "do not give the signed root"),
        ("head", "does not state the saved chain head"),
        ("position", "is not the one the anchor saved"),
        ("garbage", "cannot be read"),
    ],
)
def test_a_damaged_anchor_falls_back_to_a_full_scan_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, why: str
) -> None:
    path = tmp_path / "audit.log"
    grow(path, 20, checkpoint_at=(20,))
    doc = _anchor_doc(path)
    if damage == "frontier":
        frontier = list(doc["frontier"])  # type: ignore[call-overload]
        frontier[0] = "00" * 32
        doc["frontier"] = frontier
    elif damage == "head":
        doc["head"] = "11" * 32
    elif damage == "position":
        doc["position"] = int(doc["position"]) - 5  # type: ignore[call-overload]
    if damage == "garbage":
        anchor_path(path).write_bytes(b"{not json")
    else:
        anchor_path(path).write_text(json.dumps(doc))
    caplog.set_level(logging.INFO, "liaison.node")
    log = AuditLog(path, verifier=VERIFIER, load_history=False)
    try:
        assert log.history_loaded and log.size == 20  # the full scan loaded every leaf
        assert log.root() == _full_root(path)
    finally:
        _close(log)
    assert any(why in r.getMessage() and "from entry 0" in r.getMessage() for r in caplog.records)
    with pytest.raises(AnchorRejected, match=why):
        verify_from_anchor(FileStorage(path), VERIFIER)


def test_an_anchor_of_an_older_checkpoint_or_another_key_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    grow(path, 10, checkpoint_at=(10,))
    stranger = checkpoints.Verifier.for_log(
        ORIGIN, ed25519.Ed25519PrivateKey.generate().public_key()
    )
    with pytest.raises(AnchorRejected, match="does not verify"):
        verify_from_anchor(FileStorage(path), stranger)
    log = AuditLog(path, verifier=stranger, load_history=False)
    try:
        assert log.history_loaded  # opened by a full scan
    finally:
        _close(log)
    saved = anchor_path(path).read_bytes()
    grow(path, 2, checkpoint_at=(12,))
    anchor_path(path).write_bytes(saved)  # the anchor of checkpoint 0, checkpoint 1 is newer
    with pytest.raises(AnchorRejected, match="not of the newest checkpoint"):
        verify_from_anchor(FileStorage(path), VERIFIER)


def test_entries_after_the_anchor_are_checked_at_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    grow(path, 15, checkpoint_at=(10,))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:12] + lines[13:]))  # entry 12 removed
    with pytest.raises(AuditCorrupt) as removed:
        AuditLog(path, verifier=VERIFIER)
    assert removed.value.index == 12
    path.write_bytes(b"".join([*lines[:11], lines[12], lines[11], *lines[13:]]))  # reordered
    with pytest.raises(AuditCorrupt) as reordered:
        AuditLog(path, verifier=VERIFIER)
    assert reordered.value.index == 11
    with pytest.raises(AuditCorrupt) as verified:
        verify_from_anchor(FileStorage(path), VERIFIER)
    assert verified.value.index == 11


def test_a_torn_tail_after_the_anchor_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    grow(path, 8, checkpoint_at=(6,))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"case_reference":"CASE-8","categ')  # a crash mid-write
    log = AuditLog(path, verifier=VERIFIER, load_history=False)
    try:
        assert log.size == 8 and not log.history_loaded
        assert path.read_bytes() == whole
    finally:
        _close(log)

    async def append() -> None:
        log = AuditLog(path, verifier=VERIFIER)
        try:
            await _append_many(log, 8, 2)
            assert log.size == 10 and log.inclusion_proof(9)
        finally:
            await log.close()

    asyncio.run(append())
    assert verify_from_anchor(FileStorage(path), VERIFIER)[0] == 10


def test_the_fast_leaf_path_is_the_writers_leaf() -> None:
    """Cut out of the canonical bytes, the redacted form hashes as `leaf_of` does, for
    entries with and without notes, quotes, escapes and non-ASCII text."""
    notes = ["", 'a "quoted", note', "ünï\\cödé \u2028", "x" * 50, "\n\t", ',"prev":"x']
    for i in range(300):
        changes: dict[str, object] = {}
        if i % 2:
            changes["note"] = notes[i % len(notes)]
        if i % 3 == 0:
            changes["case_reference"] = notes[(i // 3) % len(notes)]
        if i % 5 == 0:
            changes["withheld"] = ("name", "prev", "salt")
        body = entry_body(_record(i, **changes))
        body["seq"], body["prev"] = i, f"{i:064x}"
        if i % 7 == 0:
            del body["salt"]
        if i % 11 == 0:
            del body["case_reference"]
        assert leaf_of_canonical(body, canonical(body)) == leaf_of(body), body


def test_verify_checks_from_the_anchor_by_default_and_everything_with_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry edited before the anchor (same length, so the anchor's offset holds) is
    not read by the default check, which says so; `--full` names it."""
    path = tmp_path / "audit.log"
    grow(path, 30, checkpoint_at=(10, 25))
    public = KEY.public_key().public_bytes_raw().hex()
    signed = ["audit", "verify", "--log", str(path), "--public-key", public, "--origin", ORIGIN]
    capsys.readouterr()
    assert liaison(signed) == 0
    out = capsys.readouterr().out
    assert "30 entries; from entry 24 on, the chain is intact" in out
    assert "not read again (--full reads them)" in out and "2 checkpoint(s)" in out

    lines = path.read_bytes().splitlines(keepends=True)
    lines[7] = lines[7].replace(b'"peer":"FR-PN"', b'"peer":"GR-PN"')
    path.write_bytes(b"".join(lines))
    assert liaison(signed) == 0
    capsys.readouterr()
    assert liaison([*signed, "--full"]) == 2
    assert "BAD at entry 7: hash does not match its content" in capsys.readouterr().out
    # Without the key there is no anchor to trust: every entry, as --full.
    assert liaison(["audit", "verify", "--log", str(path)]) == 2


def test_verify_without_a_usable_anchor_checks_everything_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.log"
    grow(path, 12, checkpoint_at=(12,))
    anchor_path(path).unlink()
    public = KEY.public_key().public_bytes_raw().hex()
    capsys.readouterr()
    signed = ["audit", "verify", "--log", str(path), "--public-key", public, "--origin", ORIGIN]
    assert liaison(signed) == 0
    out = capsys.readouterr().out
    assert "no anchor was saved with a checkpoint: checking every entry from entry 0" in out
    assert "12 entries, the chain is intact from entry 0" in out
