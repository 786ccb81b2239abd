"""Signing a checkpoint of the audit log onto its backend, under the backend's lock, and
refusing to sign one that would fork the log (`node.audit.verify` checks them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import checkpoints, merkle
from node.audit.anchor import encode_anchor
from node.audit.entries import AuditError, CheckpointInvalid
from node.audit.file_store import FileStorage, checkpoints_path
from node.audit.storage import Locked, StorageError
from node.audit.verify import check_chain, stated_checkpoint


def sign_onto(
    held: Locked,
    where: Path | str,
    size: int,
    root_at: Callable[[int], bytes],
    key: ed25519.Ed25519PrivateKey,
    origin: str,
) -> str:
    """Sign the head of the tree of `size` leaves (`root_at(n)`: its root at size n) and
    append it to the checkpoints of a backend held locked.

    Refuses (CheckpointInvalid) to sign a tree smaller than the last checkpoint, or one
    whose root at that size differs from it: that would publish a fork of the log.
    """
    note = checkpoints.sign_checkpoint(
        checkpoints.Checkpoint(origin, size, root_at(size)), origin, key
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
        if root_at(last.size) != last.root:
            raise CheckpointInvalid(
                where,
                index,
                last.size,
                "the log's root at that size differs: the log was rewritten; refusing to sign",
            )
    held.add_checkpoint(size, note)
    return note


def issue_checkpoint(
    log_path: Path,
    tree: merkle.TreeHasher,
    key: ed25519.Ed25519PrivateKey,
    origin: str,
    anchor: Callable[[str], bytes | None] | None = None,
) -> str:
    """Sign the head of `tree` (the file log's durable entries) and append it, durably, to
    its checkpoints file, under an exclusive lock so two signers never interleave (see
    `sign_onto` for what it refuses to sign); then save `anchor(note)` beside it, if any
    (`node.audit.anchor`)."""
    storage = FileStorage(log_path)
    try:
        with storage.locked() as held:
            note = sign_onto(held, checkpoints_path(log_path), tree.size, tree.root, key, origin)
            data = anchor(note) if anchor is not None else None
            if data is not None:
                held.save_anchor(data)
            return note
    except StorageError as exc:
        raise AuditError(f"could not write a checkpoint: {exc}") from exc


def checkpoint_file_log(log_path: Path, key: ed25519.Ed25519PrivateKey, origin: str) -> str:
    """Read the file log (its chain checked from entry 0; a torn last line, an entry being
    written, left out and left alone, so it is safe beside a running node), sign its
    tree's head and save the checkpoint's anchor with it (`issue_checkpoint`)."""
    storage = FileStorage(log_path)
    store = merkle.MemoryHashStore()
    head, count = check_chain(storage.scan(), storage.where, store, torn_ok=True)

    def anchor(note: str) -> bytes | None:
        if not count:
            return None
        before = tuple(store.frontier(count - 1))
        return encode_anchor(note, head, before, storage.position(count - 1))

    return issue_checkpoint(log_path, merkle.TreeHasher(store), key, origin, anchor)
