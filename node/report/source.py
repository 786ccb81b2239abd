"""The indicators of a node's own audit log, computed only over a log that verifies.

One pass reads the log from entry 0 (file or database, safe beside the running node: a
torn last line, an entry being written, is left out): each entry is checked against the
chain before the indicators count it and its Merkle leaf is kept; then every signed
checkpoint is checked against that tree with the node's key. A log that fails either
check raises AuditCorrupt or CheckpointInvalid, and the caller renders nothing: figures
from a log that was altered would be worse than none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from federation.indicators import Granularity, Indicators, compute
from federation.pki import load_ed25519_private
from node.audit.entries import GENESIS, AuditError, check_line, leaf_input
from node.audit.log import existing_storage
from node.audit.storage import StorageError
from node.audit.verify import check_checkpoints, stated_checkpoint, storage_checkpoints
from node.config import NodeConfig


@dataclass(frozen=True, slots=True)
class Verified:
    """What was checked before the figures were computed: the entries (all of them, from
    entry 0), the checkpoints and the size of the latest one, and where the log lives."""

    where: str
    entries: int
    checkpoints: int
    latest_checkpoint: int
    origin: str


def indicators_from_log(
    config: NodeConfig, since: datetime, until: datetime, granularity: Granularity
) -> tuple[Indicators, Verified]:
    """The node's indicators over [since, until), from its own log once it verifies."""
    origin = audit_origin(config.node.federation, config.node.id)
    public = load_ed25519_private(config.trust.signing_key).public_key()
    verifier = checkpoints.Verifier.for_log(origin, public)
    storage = existing_storage(config.audit.store, config.audit.path, config.audit.url)
    where = storage.where
    store = merkle.MemoryHashStore()

    def checked() -> Iterator[dict[str, Any]]:
        head = GENESIS
        for index, raw in enumerate(storage.scan()):
            if not raw.endswith(b"\n"):
                return  # an entry being written: never acknowledged, not counted
            head, doc = check_line(raw, index, head, where)
            store.append(merkle.leaf_hash(leaf_input(doc)))
            yield doc

    try:
        found = compute(
            checked(), node=config.node.id, since=since, until=until, granularity=granularity
        )
        count = store.size
        signed = check_checkpoints(storage, store, count, verifier, origin)
        notes = storage_checkpoints(storage)
    except StorageError as exc:
        raise AuditError(f"audit log {where} could not be read: {exc}") from exc
    finally:
        storage.close()
    size = stated_checkpoint(notes[-1]).size if notes else 0
    return found, Verified(where, count, signed, size, origin)
