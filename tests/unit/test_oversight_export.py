"""Audit exports: a range of entries that verifies against the node's signed root alone."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from federation.oversight import (
    AuditExport,
    ExportInvalid,
    left_from_inclusion,
    verify_export,
)

ORIGIN = audit_origin("liaison.example", "DE-BKA")
KEY = ed25519.Ed25519PrivateKey.generate()
VERIFIER = checkpoints.Verifier.for_log(ORIGIN, KEY.public_key())
ENTRIES = [
    json.dumps({"seq": i, "peer": "FR-DGPN", "decision": "allow", "v": 1}, sort_keys=True).encode()
    for i in range(37)
]


def _export(start: int, end: int, size: int = len(ENTRIES)) -> AuditExport:
    """What `liaison audit export` writes: from the node's own tree."""
    leaves = [merkle.leaf_hash(e) for e in ENTRIES[:size]]
    tree = merkle.TreeHasher(merkle.MemoryHashStore(leaves))
    note = checkpoints.sign_checkpoint(
        checkpoints.Checkpoint(ORIGIN, size, tree.root(size)), ORIGIN, KEY
    )
    left = merkle.CompactRange()
    left.extend(leaves[:start])
    return AuditExport.build(
        ORIGIN,
        checkpoints.vkey(ORIGIN, KEY.public_key()),
        note,
        start,
        left.hashes,
        ENTRIES[start:end],
        tree.consistency_proof(end, size),
    )


def _tamper_entry(export: AuditExport, offset: int) -> AuditExport:
    entries = list(export.entries)
    entries[offset] = entries[offset].replace(b'"allow"', b'"deny"')
    return replace(export, entries=tuple(entries))


@pytest.mark.parametrize(
    ("start", "end", "size"),
    [(0, 0, 37), (0, 37, 37), (0, 5, 37), (5, 12, 37), (16, 32, 37), (36, 37, 37), (7, 7, 9)],
)
def test_a_range_verifies_against_the_signed_root(start: int, end: int, size: int) -> None:
    export = _export(start, end, size)
    again = AuditExport.from_json(export.to_json())
    assert again == export
    checkpoint = verify_export(again, VERIFIER)
    assert checkpoint.size == size
    assert checkpoints.Verifier.from_vkey(again.verifier_key) == VERIFIER


@pytest.mark.parametrize("offset", [0, 3, 6])
def test_an_altered_entry_is_named(offset: int) -> None:
    export = _tamper_entry(_export(10, 17), offset)
    with pytest.raises(ExportInvalid, match=f"entry {10 + offset} was altered") as err:
        verify_export(export, VERIFIER)
    assert err.value.index == 10 + offset


def test_an_entry_altered_with_its_listed_leaf_still_fails() -> None:
    export = _tamper_entry(_export(10, 17), 2)
    leaves = list(export.leaf_hashes)
    leaves[2] = merkle.leaf_hash(export.entries[2])
    with pytest.raises(ExportInvalid, match="do not lead to the root the node signed"):
        verify_export(replace(export, leaf_hashes=tuple(leaves)), VERIFIER)


def test_a_removed_or_reordered_entry_is_named_by_its_seq() -> None:
    export = _export(10, 17)
    entries = list(export.entries)
    entries[3], entries[4] = entries[4], entries[3]
    with pytest.raises(ExportInvalid, match="entry 13 states seq 14") as err:
        verify_export(replace(export, entries=tuple(entries)), VERIFIER)
    assert err.value.index == 13


@pytest.mark.parametrize("field", ["left_hashes", "consistency_proof", "leaf_hashes"])
def test_an_altered_hash_fails(field: str) -> None:
    export = _export(12, 20)
    hashes = list(getattr(export, field))
    hashes[0] = bytes(32)
    altered: dict[str, Any] = {field: tuple(hashes)}  # one of several fields, chosen by name
    with pytest.raises(ExportInvalid):
        verify_export(replace(export, **altered), VERIFIER)


def test_an_altered_or_foreign_signature_fails() -> None:
    export = _export(0, 5)
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ExportInvalid, match="does not verify with the node's key"):
        verify_export(export, checkpoints.Verifier.for_log(ORIGIN, other.public_key()))
    forged = export.checkpoint.replace("\n37\n", "\n36\n")
    with pytest.raises(ExportInvalid, match="does not verify"):
        verify_export(replace(export, checkpoint=forged), VERIFIER)
    with pytest.raises(ExportInvalid, match="does not verify"):
        verify_export(export, VERIFIER, origin=audit_origin("liaison.example", "FR-DGPN"))


def test_a_range_beyond_the_checkpoint_or_short_of_entries_fails() -> None:
    export = _export(3, 9)
    with pytest.raises(ExportInvalid, match="but 5 entries"):
        verify_export(replace(export, entries=export.entries[:5]), VERIFIER)
    with pytest.raises(ExportInvalid, match="not within the checkpoint"):
        verify_export(replace(export, end=40), VERIFIER)


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "[]",
        "not json",
        json.dumps({"format": "liaison-audit-export/v1", "start": 0}),
        _export(0, 1).to_json().replace('"start": 0', '"start": -1'),
        _export(0, 1).to_json().replace('"start": 0', '"start": true'),
    ],
)
def test_malformed_exports_are_refused(text: str) -> None:
    with pytest.raises(ExportInvalid):
        AuditExport.from_json(text)


@pytest.mark.parametrize("size", range(1, 70))
def test_the_left_hashes_come_from_the_last_leafs_inclusion_proof(size: int) -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(size)]
    tree = merkle.TreeHasher(merkle.MemoryHashStore(leaves))
    expected = merkle.CompactRange()
    expected.extend(leaves)
    proof = tree.inclusion_proof(size - 1, size)
    assert left_from_inclusion(size, leaves[-1], proof) == list(expected.hashes)
    with pytest.raises(merkle.ProofError):
        left_from_inclusion(size, leaves[-1], [*proof, bytes(32)])
