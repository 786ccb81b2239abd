"""Signing a checkpoint of the audit log onto its backend, under the backend's lock, and
refusing to sign one that would fork the log (`node.audit.verify` checks them)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import checkpoints, merkle
from node.audit.entries import AuditError, CheckpointInvalid
from node.audit.file_store import FileStorage, checkpoints_path
from node.audit.storage import Locked, StorageError
from node.audit.verify import stated_checkpoint


def sign_onto(
    held: Locked,
    where: Path | str,
    tree: merkle.TreeHasher,
    key: ed25519.Ed25519PrivateKey,
    origin: str,
) -> str:
    """Sign the head of `tree` and append it to the checkpoints of a backend held locked.

    Refuses (CheckpointInvalid) to sign a tree smaller than the last checkpoint, or one
    whose root at that size differs from it: that would publish a fork of the log.
    """
    size = tree.size
    note = checkpoints.sign_checkpoint(
        checkpoints.Checkpoint(origin, size, tree.root(size)), origin, key
    )
    found = held.checkpoints()
    if found:
        index = len(found) - 1
        try:
            last = stated_checkpoint(found[-1])
        except ValueError:
            raise CheckpointInvalid(where, index, None, "not a checkpoint note") from None
        if last.size > size:
            raise CheckpointInvalid(
                where,
                index,
                last.size,
                f"the log holds only {size} durable entries; refusing to sign a smaller tree",
            )
        if tree.root(last.size) != last.root:
            raise CheckpointInvalid(
                where,
                index,
                last.size,
                "the log's root at that size differs: the log was rewritten; refusing to sign",
            )
    held.add_checkpoint(size, note)
    return note


def issue_checkpoint(
    log_path: Path, tree: merkle.TreeHasher, key: ed25519.Ed25519PrivateKey, origin: str
) -> str:
    """Sign the head of `tree` (the file log's durable entries) and append it, durably, to
    its checkpoints file, under an exclusive lock so two signers never interleave (see
    `sign_onto` for what it refuses to sign)."""
    storage = FileStorage(log_path)
    try:
        with storage.locked() as held:
            return sign_onto(held, checkpoints_path(log_path), tree, key, origin)
    except StorageError as exc:
        raise AuditError(f"could not write a checkpoint: {exc}") from exc
