"""`liaison audit verify|checkpoint|prove|export`: an operator's checks of its own audit
log, and what it hands an overseer (the export itself: `node.cli.oversight`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from node.cli.shared import ENTRY_HELP, Subparsers, command, group, parse_entry, write_out

if TYPE_CHECKING:
    from node.audit.storage import AuditStorage
    from node.config import NodeConfig


def _audit_storage(config: NodeConfig) -> AuditStorage:
    from node.audit.log import existing_storage

    return existing_storage(config.audit.store, config.audit.path, config.audit.url)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _audit_verify(args: argparse.Namespace) -> int:
    from federation import checkpoints
    from federation.checkpoints import audit_origin
    from federation.pki import load_ed25519_private, public_key_from_text
    from node.audit.anchor import AnchorRejected, verify_from_anchor
    from node.audit.entries import AuditCorrupt, AuditError, CheckpointInvalid
    from node.audit.file_store import FileStorage
    from node.audit.storage import StorageError
    from node.audit.verify import verify_log, verify_storage
    from node.config import ConfigError, load_config

    if args.export is not None:
        from node.cli.oversight import check_export

        code, line = check_export(args.export, args.public_key, args.vkey, args.origin)
        print(line)
        return code
    origin: str | None = args.origin
    public_key = public_key_from_text(args.public_key) if args.public_key else None
    if args.log is not None:
        if not args.log.exists():
            raise FileNotFoundError(f"audit log {args.log} not found")
        storage: AuditStorage = FileStorage(args.log)
    else:
        config = load_config(args.config)
        origin = origin or audit_origin(config.node.federation, config.node.id)
        if public_key is None:
            public_key = load_ed25519_private(config.trust.signing_key).public_key()
        storage = _audit_storage(config)
    if public_key is not None and origin is None:
        raise ConfigError(
            "--public-key with --log needs --origin, e.g. liaison.example/DE-BKA/audit"
        )
    where = storage.where
    checked: int | None = None
    anchored: int | None = None
    try:
        if public_key is None or origin is None:
            count = verify_log(args.log, workers=args.workers)
        else:
            verifier = checkpoints.Verifier.for_log(origin, public_key)
            if not args.full:
                try:
                    count, checked, anchor = verify_from_anchor(storage, verifier, origin)
                    anchored = anchor.size
                except AnchorRejected as exc:
                    print(f"{where}: {exc}: checking every entry from entry 0")
            if anchored is None:
                count, checked = verify_storage(storage, verifier, origin, workers=args.workers)
    except AuditCorrupt as exc:
        print(f"{where}: BAD at entry {exc.index}: {exc.why}; keep a copy of this log")
        return 2
    except CheckpointInvalid as exc:
        print(f"{where}: BAD: {exc}; keep a copy of the log and its checkpoints")
        return 2
    except StorageError as exc:
        raise AuditError(f"audit log {where} could not be read: {exc}") from exc
    finally:
        storage.close()
    if anchored is not None:
        print(
            f"{where}: {count} entries; from entry {anchored - 1} on, the chain is intact onto "
            f"the head and Merkle frontier saved with the checkpoint at {anchored}, whose "
            "root they give; the entries before it were not read again (--full reads them)"
        )
        print(
            f"{where}: {checked} checkpoint(s) of {origin} verified with the node's key, in "
            f"order; the newest matches the log's root (--full checks each one's root)"
        )
        return 0
    print(f"{where}: {count} entries, the chain is intact from entry 0")
    if checked is not None:
        print(
            f"{where}: {checked} checkpoint(s) of {origin} verified with the node's key, "
            "each matching the log's root at its size"
        )
    return 0


def _audit_checkpoint(args: argparse.Namespace) -> int:
    from federation.checkpoints import Verifier, audit_origin
    from federation.pki import load_ed25519_private
    from node.audit.checkpoints import checkpoint_file_log
    from node.audit.log import AuditLog
    from node.config import load_config

    config = load_config(args.config)
    key = load_ed25519_private(config.trust.signing_key)
    origin = audit_origin(config.node.federation, config.node.id)
    storage = _audit_storage(config)
    if config.audit.store == "database":
        # Under the log's lock, as a replica would: after every entry durable so far.
        verifier = Verifier.for_log(origin, key.public_key())  # an anchor must verify
        log = AuditLog(storage, verifier=verifier, load_history=False)
        try:
            note = log.checkpoint(key, origin)
        finally:
            storage.close()
    else:
        # Read only, so safe beside a running node: its torn last line is left alone.
        storage.close()
        note = checkpoint_file_log(config.audit.path, key, origin)
    sys.stdout.write(note)
    return 0


def _audit_prove(args: argparse.Namespace) -> int:
    from federation import checkpoints, merkle
    from node.audit.entries import AuditError, leaf_input
    from node.audit.storage import StorageError
    from node.audit.verify import load_storage_tree, storage_checkpoints
    from node.cli.oversight import OwnCheckpoint
    from node.config import load_config

    config = load_config(args.config)
    entry: int | str = args.entry
    storage = _audit_storage(config)
    where = storage.where
    try:
        store = load_storage_tree(storage)
        if isinstance(entry, str):
            found_at = storage.find(entry)
            if found_at is None or found_at >= store.size:
                raise AuditError(f"{where} has no entry with id {entry}")
            entry = found_at
        index = entry
        if not 0 <= index < store.size:
            raise AuditError(f"{where} has no entry {index} (it holds {store.size})")
        found = storage_checkpoints(storage)
        # What an overseer may see: the redacted entry, the exact bytes of its leaf.
        line = leaf_input(json.loads(storage.lines(index, index + 1)[0])).decode()
    except StorageError as exc:
        raise AuditError(f"audit log {where} could not be read: {exc}") from exc
    finally:
        storage.close()
    own = OwnCheckpoint.of(config, found, where, store.size)
    checkpoint, origin = own.checkpoint, own.origin
    if index >= checkpoint.size:
        raise AuditError(
            f"entry {index} is not in the latest checkpoint (tree size {checkpoint.size}): "
            "run `liaison audit checkpoint` first"
        )
    leaf = store.leaf(index)
    proof = merkle.inclusion_proof(index, checkpoint.size, merkle.TreeHasher(store))
    try:
        merkle.verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root)
    except merkle.ProofError:
        raise AuditError(
            f"{where} does not match its latest checkpoint: run `liaison audit verify`"
        ) from None
    print(
        json.dumps(
            {
                "origin": origin,
                "verifier_key": checkpoints.vkey(origin, own.public),
                "index": index,
                "entry": line,
                "leaf_hash": leaf.hex(),
                "tree_size": checkpoint.size,
                "checkpoint": own.note,
                "inclusion_proof": [h.hex() for h in proof],
            },
            indent=2,
        )
    )
    return 0


def _audit_export(args: argparse.Namespace) -> int:
    from node.cli.oversight import export_from_log
    from node.config import load_config

    export = export_from_log(load_config(args.config), args.start, args.end)
    write_out(export.to_json(), args.out)
    if args.out is not None:
        print(
            f"entries [{export.start}, {export.end}) of {export.origin} written to {args.out}; "
            "check it with `liaison audit verify --export` and the node's public key"
        )
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison audit` and its subcommands."""
    audit = group(sub, "audit", "audit log tasks (for operators and overseers)")
    p = command(
        audit,
        "verify",
        "check an audit log: the entries after its newest signed checkpoint (every entry "
        "with --full, or without the node's key) chain onto the one before; reports the "
        "index of the first bad entry",
        _audit_verify,
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--config",
        type=Path,
        help="the node's node.toml ([audit] path); its checkpoints are verified too",
    )
    target.add_argument("--log", type=Path, help="an audit log file (e.g. a copy)")
    target.add_argument(
        "--export",
        type=Path,
        help="an audit export (from `audit export` or `oversight export`): checked against "
        "its signed checkpoint with --public-key or --vkey",
    )
    p.add_argument(
        "--public-key",
        help="the node's Ed25519 public key (hex) to verify the checkpoints with "
        "(default with --config: the public part of its signing key)",
    )
    p.add_argument("--vkey", help="with --export: the node's signed-note verifier key")
    p.add_argument(
        "--origin",
        help="the checkpoints' origin, e.g. liaison.example/DE-BKA/audit "
        "(needed with --log and --public-key)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="read and check every entry from entry 0 and every checkpoint's root (default "
        "with the node's key: from the anchor saved with the newest checkpoint on)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="processes checking a large log (default: one per available core; 1: check "
        "in this process only)",
    )
    p = command(
        audit,
        "checkpoint",
        "sign the audit log's Merkle tree head with the node's key, append it to "
        "<audit path>.checkpoints and print it",
        _audit_checkpoint,
        config=True,
    )
    p = command(
        audit,
        "prove",
        "print, as JSON, an entry, its leaf hash, the latest checkpoint and the entry's "
        "inclusion proof in it: what an overseer checks with the node's public key",
        _audit_prove,
        config=True,
    )
    p.add_argument("entry", type=parse_entry, help=ENTRY_HELP)
    p = command(
        audit,
        "export",
        "write entries [FROM, TO) for an overseer, as JSON that verifies against the latest "
        "signed checkpoint without the rest of the log (`audit verify --export`)",
        _audit_export,
        config=True,
    )
    p.add_argument("--from", dest="start", type=int, required=True, help="first entry (index)")
    p.add_argument("--to", dest="end", type=int, required=True, help="entry after the last")
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
