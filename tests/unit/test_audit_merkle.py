"""The audit log as a Merkle tree: leaves, proofs, signed checkpoints, and their checks."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from node.audit.entries import (
    GENESIS,
    AuditCorrupt,
    CheckpointInvalid,
    canonical,
    chain_digest,
    leaf_input,
)
from node.audit.file_store import FileStorage, checkpoints_path
from node.audit.log import AuditLog
from node.audit.verify import storage_checkpoints, verify_log, verify_log_and_checkpoints
from tests.unit.test_audit import _append_many

ORIGIN = audit_origin("liaison.example", "DE-BKA")
KEY = ed25519.Ed25519PrivateKey.generate()
VERIFIER = checkpoints.Verifier.for_log(ORIGIN, KEY.public_key())


def _redacted(line: bytes) -> bytes:
    """What an overseer sees of an entry, written out here from the documented rule (not
    with node.audit's own code): chain fields gone, the case reference a salted digest."""
    entry = json.loads(line)
    salt = bytes.fromhex(entry.pop("salt"))
    del entry["prev"], entry["hash"]
    value = entry.pop("case_reference")
    entry["case_reference_sha256"] = (
        hashlib.sha256(salt + value.encode()).hexdigest() if value else ""
    )
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _leaves(path: Path) -> list[bytes]:
    return [merkle.leaf_hash(_redacted(line)) for line in path.read_bytes().splitlines()]


def _grow(
    target: Path | Callable[[], AuditLog], count: int, *, checkpoint_at: tuple[int, ...] = ()
) -> list[str]:
    """Append `count` entries to the log at `target` (a file, or a way to open any log),
    signing a checkpoint after each size in `checkpoint_at` (and none otherwise); the
    checkpoint notes, in order."""
    opener = target if callable(target) else lambda: AuditLog(target)

    async def run() -> list[str]:
        log = opener()
        signed: list[str] = []
        done = log.size
        for stop in sorted({*checkpoint_at, done + count}):
            await _append_many(log, done, stop - done)
            done = stop
            if stop in checkpoint_at:
                signed.append(log.checkpoint(KEY, ORIGIN))
        await log.close()
        return signed

    return asyncio.run(run())


def test_origin_is_a_valid_note_key_name() -> None:
    assert ORIGIN == "liaison.example/DE-BKA/audit"
    assert checkpoints.valid_name(ORIGIN)


def test_leaves_are_the_lines_and_the_root_matches(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"

    async def run() -> tuple[int, bytes, list[bytes]]:
        log = AuditLog(path)
        await _append_many(log, 0, 37)
        result = (log.size, log.root(), [log.root(n) for n in range(38)])
        await log.close()
        return result

    size, root, roots = asyncio.run(run())
    leaves = _leaves(path)
    assert size == len(leaves) == 37
    assert root == merkle.root(leaves)
    assert roots == [merkle.root(leaves[:n]) for n in range(38)]


def test_every_entry_of_50_has_an_inclusion_proof_in_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    [note] = _grow(path, 50, checkpoint_at=(50,))
    checkpoint = checkpoints.verify_checkpoint(note, ORIGIN, VERIFIER)
    assert checkpoint.size == 50
    assert storage_checkpoints(FileStorage(path)) == [note]

    async def proofs() -> list[list[bytes]]:
        log = AuditLog(path)
        result = [log.inclusion_proof(i) for i in range(50)]
        await log.close()
        return result

    lines = path.read_bytes().splitlines()
    for index, proof in enumerate(asyncio.run(proofs())):
        leaf = merkle.leaf_hash(_redacted(lines[index]))
        merkle.verify_inclusion(leaf, index, 50, proof, checkpoint.root)
    wrong = merkle.leaf_hash(_redacted(lines[1]))  # another entry's leaf does not verify at index 0
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(
            wrong, 0, 50, merkle.inclusion_proof(0, 50, _leaves(path)), checkpoint.root
        )
    assert verify_log_and_checkpoints(path, VERIFIER) == (50, 1)


def test_consistency_between_two_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    old_note, new_note = _grow(path, 30, checkpoint_at=(13, 30))
    old = checkpoints.verify_checkpoint(old_note, ORIGIN, VERIFIER)
    new = checkpoints.verify_checkpoint(new_note, ORIGIN, VERIFIER)
    assert (old.size, new.size) == (13, 30)

    async def proof() -> list[bytes]:
        log = AuditLog(path)
        result = log.consistency_proof(old.size, new.size)
        await log.close()
        return result

    merkle.verify_consistency(old.size, new.size, old.root, new.root, asyncio.run(proof()))
    assert verify_log_and_checkpoints(path, VERIFIER) == (30, 2)
    # The file is notes, each followed by a blank line.
    assert checkpoints_path(path).read_text() == old_note + "\n" + new_note + "\n"


def _rechain(path: Path, index: int, peer: str) -> None:
    """Edit entry `index` and recompute every hash after it: the chain is intact again."""
    out, prev = [], GENESIS
    for i, raw in enumerate(path.read_bytes().splitlines()):
        doc = json.loads(raw)
        doc.pop("hash")
        if i == index:
            doc["peer"] = peer
        doc["prev"] = prev
        encoded = canonical(doc)
        prev = chain_digest(prev, encoded)
        out.append(encoded[:-1] + b',"hash":"' + prev.encode() + b'"}\n')
    path.write_bytes(b"".join(out))


def test_a_rewritten_log_fails_the_first_checkpoint_covering_the_edit(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 40, checkpoint_at=(10, 25, 40))
    _rechain(path, 17, "XX-FORGED")
    assert verify_log(path) == 40  # the chain alone cannot tell
    with pytest.raises(CheckpointInvalid) as err:
        verify_log_and_checkpoints(path, VERIFIER)
    assert (err.value.index, err.value.size) == (1, 25)
    assert "checkpoint 1 (tree size 25)" in str(err.value)
    assert "the log was altered" in str(err.value)


def test_an_edited_entry_is_named_by_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 12, checkpoint_at=(12,))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"peer":"', b'"peer":"X', 1)
    path.write_bytes(b"".join(lines))
    with pytest.raises(AuditCorrupt) as err:
        verify_log_and_checkpoints(path, VERIFIER)
    assert err.value.index == 3


def test_removed_entries_fail_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 12, checkpoint_at=(5, 12))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:9]))
    with pytest.raises(CheckpointInvalid, match=r"checkpoint 1 \(tree size 12\).*only 9 entries"):
        verify_log_and_checkpoints(path, VERIFIER)


def test_a_forged_checkpoint_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 8, checkpoint_at=(4,))
    forger = ed25519.Ed25519PrivateKey.generate()
    body = checkpoints.Checkpoint(ORIGIN, 8, merkle.root(_leaves(path)))
    forged = checkpoints.sign_checkpoint(body, ORIGIN, forger)
    with checkpoints_path(path).open("a") as fh:
        fh.write(forged + "\n")
    with pytest.raises(CheckpointInvalid) as err:
        verify_log_and_checkpoints(path, VERIFIER)
    assert (err.value.index, err.value.size) == (1, 8)
    assert "does not verify with the node's key" in str(err.value)
    # And a checkpoint of another log, signed by this key, is not this log's.
    other = checkpoints.Verifier.for_log(
        audit_origin("liaison.example", "FR-DGPN"), KEY.public_key()
    )
    with pytest.raises(CheckpointInvalid, match="checkpoint 0"):
        verify_log_and_checkpoints(path, other)


def test_a_smaller_checkpoint_is_refused_when_signed_and_when_verified(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 20, checkpoint_at=(20,))
    cp_file = checkpoints_path(path)
    before = cp_file.read_bytes()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:15]))  # the log lost its tail

    async def sign() -> None:
        log = AuditLog(path)
        try:
            log.checkpoint(KEY, ORIGIN)
        finally:
            await log.close()

    with pytest.raises(CheckpointInvalid, match="refusing to sign a smaller tree"):
        asyncio.run(sign())
    assert cp_file.read_bytes() == before  # nothing was appended

    # A shrinking pair of checkpoints written by someone else is caught by verification.
    path.write_bytes(b"".join(lines))
    small = checkpoints.sign_checkpoint(
        checkpoints.Checkpoint(ORIGIN, 15, merkle.root(_leaves(path)[:15])), ORIGIN, KEY
    )
    with cp_file.open("a") as fh:
        fh.write(small + "\n")
    with pytest.raises(CheckpointInvalid, match=r"checkpoint 1 \(tree size 15\).*smaller"):
        verify_log_and_checkpoints(path, VERIFIER)


def test_a_rewritten_log_is_not_signed(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 10, checkpoint_at=(10,))
    _rechain(path, 2, "XX-FORGED")
    with pytest.raises(CheckpointInvalid, match="the log was rewritten"):
        _grow(path, 2, checkpoint_at=(11,))


def test_no_checkpoint_file_verifies_the_chain_only(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 3)
    assert verify_log_and_checkpoints(path, VERIFIER) == (3, 0)


def test_the_leaf_commits_to_personal_values_without_showing_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 6)
    lines = path.read_bytes().splitlines()
    with_case = [line for line in lines if json.loads(line)["case_reference"]]
    assert with_case
    for line in with_case:
        entry = json.loads(line)
        shown = _redacted(line)
        assert entry["case_reference"].encode() not in shown
        assert entry["salt"].encode() not in shown
        # Another value under the same salt gives another leaf: the digest binds the value.
        entry["case_reference"] += "x"
        assert merkle.leaf_hash(leaf_input(entry)) != merkle.leaf_hash(shown)
        entry["case_reference"] = entry["case_reference"][:-1]
        assert leaf_input(entry) == shown


def test_entries_and_find_give_overseers_the_redacted_leaves(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _grow(path, 40)
    lines = path.read_bytes().splitlines()

    async def run() -> None:
        log = AuditLog(path)
        ids = await _append_many(log, 40, 5)  # entries written by this very process too
        all_lines = path.read_bytes().splitlines()
        assert log.entries(0, 45) == [_redacted(line) for line in all_lines]
        assert log.entries(38, 42) == [_redacted(line) for line in all_lines[38:42]]
        assert log.entries(7, 7) == []
        for index in (0, 17, 39):
            assert log.find(json.loads(lines[index])["id"]) == index
        assert [log.find(i) for i in ids] == [
            next(n for n, line in enumerate(all_lines) if json.loads(line)["id"] == i) for i in ids
        ]
        assert log.find("0" * 32) is None
        assert log.find("not an id") is None
        with pytest.raises(ValueError, match="not within"):
            log.entries(40, 46)
        assert log.latest_checkpoint() is None
        log.checkpoint(KEY, ORIGIN)
        note = log.latest_checkpoint()
        assert note is not None and checkpoints.verify_checkpoint(note, ORIGIN, VERIFIER).size == 45
        await log.close()

    asyncio.run(run())
