"""The `liaison` command: every operator task, each subcommand with its own --help.

Errors reach the operator as one line that says what was wrong and what to do, and exit 2;
a traceback is a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation.directory import DirectoryError
from federation.errors import LiaisonError
from federation.identity import InvalidIdentity
from federation.pki import PkiError
from node.audit.entries import AuditError
from node.audit.storage import AuditStorage
from node.audit.witness_state import WitnessStateError
from node.config import ConfigError, NodeConfig
from node.importer import ImportFailed
from node.policy.data import PolicyDataError
from node.policy.decision import PolicyUnavailable
from node.policy.embedded import PolicyLoadError
from node.rpc.server import StartupError

# Errors that are the operator's to fix: printed as one line, never as a traceback.
OPERATOR_ERRORS = (
    PolicyUnavailable,
    ConfigError,
    DirectoryError,
    PkiError,
    InvalidIdentity,
    ImportFailed,
    PolicyDataError,
    PolicyLoadError,
    StartupError,
    AuditError,
    WitnessStateError,
    LiaisonError,
    FileNotFoundError,
    PermissionError,
)


def _federation_init(args: argparse.Namespace) -> int:
    from federation.identity import check_federation
    from federation.pki import create_authority

    out: Path = args.dir
    if (out / "ca.key").exists():
        raise PkiError(f"{out} already holds a federation authority; refusing to overwrite it")
    create_authority(out, check_federation(args.federation))
    print(
        f"federation {args.federation!r}: authority written to {out}\n"
        f"  ca.crt         give to every node (trust anchor for mTLS)\n"
        f"  authority.pub  give to every node (pins the directory signer)\n"
        f"  ca.key, authority.key  keep offline"
    )
    return 0


def _node_enroll(args: argparse.Namespace) -> int:
    from node.enrol import enrol_node

    member = enrol_node(
        args.authority,
        args.node_id,
        args.out,
        endpoint=args.endpoint,
        hosts=tuple(args.host or ("localhost", "127.0.0.1")),
        metrics=args.metrics,
        policy_dir=args.policy_dir,
    )
    print(
        f"{args.node_id}: keys, certificate and node.toml written to {args.out}\n"
        f"  member entry for the directory: {args.out / 'member.json'}\n"
        f"  certificate sha256: {member.certificate_sha256}"
    )
    return 0


def _oversight_enroll(args: argparse.Namespace) -> int:
    from node.enrol import enrol_overseer

    member = enrol_overseer(args.authority, args.overseer_id, args.out)
    print(
        f"{args.overseer_id}: overseer keys and certificate written to {args.out}\n"
        f"  member entry for the directory: {args.out / 'member.json'} (role overseer)\n"
        f"  certificate sha256: {member.certificate_sha256}"
    )
    return 0


def _directory_sign(args: argparse.Namespace) -> int:
    from node.enrol import sign_members

    directory = sign_members(
        args.authority, args.members, args.out, serial=args.serial, valid_days=args.valid_days
    )
    print(
        f"directory serial {directory.serial} with {len(directory.members)} member(s), "
        f"valid until {directory.expires_at:%Y-%m-%d %H:%M}Z, written to {args.out}"
    )
    return 0


def _directory_add(args: argparse.Namespace) -> int:
    from node.enrol import add_member

    member, action = add_member(
        args.authority, args.members, args.member, replace_keys=args.replace
    )
    print(
        f"{member.node_id} {action} in {args.members} ({member.status.value}, "
        f"{member.endpoint if member.is_node else ', '.join(member.roles)}); "
        "sign the directory to publish it"
        if action != "unchanged"
        else f"{member.node_id} is already listed as given in {args.members}; nothing to do"
    )
    return 0


def _directory_set_status(args: argparse.Namespace) -> int:
    from federation.directory import MemberStatus
    from node.enrol import set_member_status

    status = MemberStatus(args.status)
    member, changed = set_member_status(args.members, args.node_id, status)
    if changed:
        print(
            f"{member.node_id} is now {status.value} in {args.members}; sign the directory "
            "to publish it"
        )
    else:
        print(f"{member.node_id} is already {status.value} in {args.members}; nothing to do")
    return 0


def _directory_show(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from federation.directory import verify_directory
    from federation.pki import public_key_from_text

    key = public_key_from_text(args.authority_key.read_text())
    directory = verify_directory(
        args.file.read_bytes(), key, source=str(args.file), allow_expired=True
    )
    expired = directory.expired(datetime.now(UTC))
    if args.json:
        print(
            json.dumps(
                {
                    "federation": directory.federation,
                    "serial": directory.serial,
                    "issued_at": f"{directory.issued_at:%Y-%m-%dT%H:%M:%SZ}",
                    "expires_at": f"{directory.expires_at:%Y-%m-%dT%H:%M:%SZ}",
                    "expired": expired,
                    "sha256": directory.digest(),
                    "members": [
                        m.to_json() for m in sorted(directory.members, key=lambda m: m.node_id)
                    ],
                },
                indent=2,
            )
        )
    else:
        state = "EXPIRED" if expired else "valid"
        print(
            f"directory serial {directory.serial} of federation {directory.federation} "
            f"(signature verified, {state})\n"
            f"  issued   {directory.issued_at:%Y-%m-%d %H:%M:%S}Z\n"
            f"  expires  {directory.expires_at:%Y-%m-%d %H:%M:%S}Z\n"
            f"  sha256   {directory.digest()}\n"
        )
        rows = [("NODE", "COUNTRY", "STATUS", "ROLES", "ENDPOINT", "CERTIFICATE", "SIGNING KEY")]
        rows += [
            (
                m.node_id,
                m.country,
                m.status.value,
                ",".join(m.roles),
                m.endpoint or "-",
                m.certificate_sha256[:16],
                m.signing_public_key[:16],
            )
            for m in sorted(directory.members, key=lambda m: m.node_id)
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if expired:
        print(
            f"liaison: directory serial {directory.serial} expired at "
            f"{directory.expires_at:%Y-%m-%d %H:%M}Z: nodes refuse it",
            file=sys.stderr,
        )
        return 1
    return 0


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
    from node.audit.entries import AuditCorrupt, CheckpointInvalid
    from node.audit.file_store import FileStorage
    from node.audit.storage import StorageError
    from node.audit.verify import verify_log, verify_storage
    from node.config import load_config

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
    try:
        if public_key is None or origin is None:
            count = verify_log(args.log, workers=args.workers)
        else:
            verifier = checkpoints.Verifier.for_log(origin, public_key)
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
    print(f"{where}: {count} entries, the chain is intact from entry 0")
    if checked is not None:
        print(
            f"{where}: {checked} checkpoint(s) of {origin} verified with the node's key, "
            "each matching the log's root at its size"
        )
    return 0


def _audit_checkpoint(args: argparse.Namespace) -> int:
    from federation.checkpoints import audit_origin
    from federation.merkle import TreeHasher
    from federation.pki import load_ed25519_private
    from node.audit.checkpoints import issue_checkpoint
    from node.audit.log import AuditLog
    from node.audit.verify import load_tree
    from node.config import load_config

    config = load_config(args.config)
    key = load_ed25519_private(config.trust.signing_key)
    origin = audit_origin(config.node.federation, config.node.id)
    storage = _audit_storage(config)
    if config.audit.store == "database":
        # Under the log's lock, as a replica would: after every entry durable so far.
        log = AuditLog(storage)
        try:
            note = log.checkpoint(key, origin)
        finally:
            storage.close()
    else:
        # Read only, so safe beside a running node: its torn last line is left alone.
        path = config.audit.path
        note = issue_checkpoint(path, TreeHasher(load_tree(path)), key, origin)
    sys.stdout.write(note)
    return 0


ENTRY_HELP = "the entry: its index (from 0), or the 32-hex id an answer or refusal named"


def _entry(text: str) -> int | str:
    """An audit entry as a command names it: an index or an entry id."""
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
        return text  # an id, even if all its digits are decimal (no log has 10^31 entries)
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither an entry index (0, 1, ...) nor an entry id (32 hex digits)"
    )


def _audit_prove(args: argparse.Namespace) -> int:
    from federation import checkpoints, merkle
    from node.audit.entries import leaf_input
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


def _write_out(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


def _audit_export(args: argparse.Namespace) -> int:
    from node.cli.oversight import export_from_log
    from node.config import load_config

    export = export_from_log(load_config(args.config), args.start, args.end)
    _write_out(export.to_json(), args.out)
    if args.out is not None:
        print(
            f"entries [{export.start}, {export.end}) of {export.origin} written to {args.out}; "
            "check it with `liaison audit verify --export` and the node's public key"
        )
    return 0


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _witness_status(args: argparse.Namespace) -> int:
    from node.audit.witness_state import read_state, state_path, witness_name
    from node.config import load_config

    config = load_config(args.config)
    path = state_path(config.audit.path)
    state = read_state(path, config.node.federation, config.node.id)
    if args.json:
        name = witness_name(config.node.federation, config.node.id)
        sys.stdout.write(state.to_bytes(name).decode())
        return 0
    print(f"witness state {path}: {len(state.views)} log(s) witnessed")
    for log_id, view in sorted(state.views.items()):
        root = base64.b64encode(view.checkpoint.root).decode()
        print(
            f"  {log_id:<12} size {view.checkpoint.size:>10}  root {root}  "
            f"last verified {_utc(view.witnessed_at)}"
        )
    print(f"split views: {len(state.evidence)} unresolved, {len(state.resolved)} resolved")
    for e in state.evidence:
        print(f"  UNRESOLVED {e.log}: {e.reason.value} seen {_utc(e.detected_at)} via {e.via}")
    for r in state.resolved:
        e = r.evidence
        print(
            f"  resolved   {e.log}: {e.reason.value} seen {_utc(e.detected_at)}; "
            f"resolved {_utc(r.resolved_at)}: {r.resolution}"
        )
    return 0


def _witness_forget(args: argparse.Namespace) -> int:
    from node.audit.witness_state import forget, state_path
    from node.config import load_config

    config = load_config(args.config)
    path = state_path(config.audit.path)
    view, resolved = forget(
        path,
        config.node.federation,
        config.node.id,
        args.log,
        args.resolution,
        int(time.time()),
    )
    if view is not None:
        print(
            f"{args.log}: the view of its log at size {view.checkpoint.size} is dropped; its "
            "next checkpoint is trusted afresh when the node starts"
        )
    print(f"{args.log}: {len(resolved)} split view(s) marked resolved in {path} (kept there)")
    return 0


def _oversight_export(args: argparse.Namespace) -> int:
    from node.cli.oversight import load_overseer

    overseer = load_overseer(args.identity, args.directory, args.authority_key)

    async def run() -> str:
        async with overseer.client(args.node, args.endpoint) as client:
            return (await client.export(args.start, args.end)).to_json()

    _write_out(asyncio.run(run()), args.out)
    if args.out is not None:
        print(
            f"entries [{args.start}, {args.end}) of {args.node}'s audit log verified against "
            f"its latest checkpoint and written to {args.out}"
        )
    return 0


def _oversight_checkpoint(args: argparse.Namespace) -> int:
    from node.cli.oversight import load_overseer

    overseer = load_overseer(args.identity, args.directory, args.authority_key)

    async def run() -> str:
        async with overseer.client(args.node, args.endpoint) as client:
            return (await client.get_checkpoint())[1]

    sys.stdout.write(asyncio.run(run()))
    return 0


def _oversight_prove(args: argparse.Namespace) -> int:
    from node.cli.oversight import load_overseer

    overseer = load_overseer(args.identity, args.directory, args.authority_key)
    entry: int | str = args.entry

    async def run() -> dict[str, Any]:
        async with overseer.client(args.node, args.endpoint) as client:
            checkpoint, note = await client.get_checkpoint()
            proven = await client.get_inclusion_proof(entry, checkpoint)
            return {
                "origin": client.origin,
                "verifier_key": client.vkey,
                "index": proven.index,
                "entry": proven.entry.decode(),
                "tree_size": proven.tree_size,
                "checkpoint": note,
                "inclusion_proof": [h.hex() for h in proven.proof],
            }

    print(json.dumps(asyncio.run(run()), indent=2, ensure_ascii=False))
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from node.config import load_config
    from node.importer import import_file
    from node.store import RecordStore

    config = load_config(args.config)
    store = RecordStore(config.store.url)
    try:
        store.create_schema()
        report = import_file(args.file, store)
    finally:
        store.close()
    by_category = ", ".join(f"{n} {c}" for c, n in sorted(report.counts.items()))
    print(f"imported {report.total} record(s) from {args.file}: {by_category or 'none'}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from node.config import load_config
    from node.rpc.server import serve

    config = load_config(args.config)
    asyncio.run(serve(config))
    return 0


def _query_match(args: argparse.Namespace) -> int:
    from node.cli.query import run_match_command

    return asyncio.run(run_match_command(args))


def _policy_target(args: argparse.Namespace) -> tuple[Any, Path, Path]:
    """(policy section or None, policy dir, data file) from --config or the explicit flags."""
    from node.config import load_config

    if args.config is not None:
        policy = load_config(args.config).policy
        return policy, policy.policy_dir, policy.data
    if args.policy_dir is None or args.data is None:
        raise ConfigError("give --config node.toml, or both --policy-dir and --data")
    return None, args.policy_dir, args.data


def _print_steps(steps: list[Any]) -> int:
    for step in steps:
        print(step.line())
    return 0 if all(step.ok for step in steps) else 2


def _policy_check(args: argparse.Namespace) -> int:
    from node.cli.policy import check

    _, policy_dir, data = _policy_target(args)
    return _print_steps(check(policy_dir, data))


def _policy_test(args: argparse.Namespace) -> int:
    from node.cli.policy import test

    _, policy_dir, _ = _policy_target(args)
    return _print_steps(test(policy_dir, args.corpus))


def _policy_explain(args: argparse.Namespace) -> int:
    from node.cli.policy import explain
    from node.policy.data import load_policy_data
    from node.policy.embedded import EmbeddedEngine
    from node.policy.engines import build_engine

    policy, policy_dir, data_path = _policy_target(args)
    try:
        policy_input = json.loads(args.input.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{args.input}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    data = load_policy_data(data_path)
    engine = build_engine(policy, data) if policy else EmbeddedEngine(policy_dir, data)
    try:
        print(json.dumps(explain(engine, policy_input), indent=2))
    finally:
        engine.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from node.local.demo import run_demo

    return run_demo(args.dir, keep=args.keep, records=args.records)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liaison", description=("Liaison: a federated, policy-governed data-exchange node.")
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def group(name: str, help_: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        p = sub.add_parser(name, help=help_, description=help_)
        return p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_: str,
        run: Callable[[argparse.Namespace], int],
        *,
        config: bool = False,
    ) -> argparse.ArgumentParser:
        """A subcommand; with `config`, one that acts on a node and takes its node.toml."""
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(run=run)
        if config:
            p.add_argument("--config", type=Path, required=True, help="the node's node.toml")
        return p

    fed = group("federation", "federation authority tasks")
    p = command(
        fed,
        "init",
        "create the federation authority: its CA and directory-signing key",
        _federation_init,
    )
    p.add_argument("--dir", type=Path, required=True, help="folder to write the authority to")
    p.add_argument("--federation", required=True, help="federation name, e.g. liaison.example")

    nodes = group("node", "node tasks")
    p = command(
        nodes,
        "enroll",
        "issue a node's TLS certificate and signing key, "
        "write its member entry and a starter node.toml",
        _node_enroll,
    )
    p.add_argument("node_id", help="<ISO-3166 alpha-2>-<agency>, e.g. DE-BKA")
    p.add_argument("--authority", type=Path, required=True, help="the authority folder")
    p.add_argument("--out", type=Path, required=True, help="the node's folder")
    p.add_argument("--endpoint", required=True, help="host:port peers will reach it at")
    p.add_argument(
        "--host",
        action="append",
        help="extra DNS name or IP for the TLS "
        "certificate (repeatable; default localhost and 127.0.0.1)",
    )
    p.add_argument("--metrics", default="127.0.0.1:9464", help="host:port for /metrics")
    p.add_argument(
        "--policy-dir",
        type=Path,
        default=None,
        help="Rego policy folder (default: the policies/ shipped with Liaison)",
    )

    oversight = group(
        "oversight",
        "oversight tasks: enrol an overseer; as an overseer, fetch and check a node's audit log",
    )
    p = command(
        oversight,
        "enroll",
        "issue an overseer's TLS client certificate and signing key and write its member "
        "entry (role overseer, no endpoint) for `directory add`",
        _oversight_enroll,
    )
    p.add_argument("overseer_id", help="<ISO-3166 alpha-2>-<body>, e.g. DE-BFDI or EU-EDPS")
    p.add_argument("--authority", type=Path, required=True, help="the authority folder")
    p.add_argument("--out", type=Path, required=True, help="the overseer's folder")

    def overseer_command(
        name: str, help_: str, run: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = command(oversight, name, help_, run)
        p.add_argument(
            "--identity", type=Path, required=True, help="the overseer's folder (from enroll)"
        )
        p.add_argument("--directory", type=Path, required=True, help="the signed directory.json")
        p.add_argument(
            "--authority-key",
            type=Path,
            help="the authority.pub to verify the directory with (default: the identity's)",
        )
        p.add_argument("--node", required=True, help="the node whose log to check, e.g. DE-BKA")
        p.add_argument("--endpoint", help="host:port (default: the directory's)")
        return p

    p = overseer_command(
        "export",
        "fetch entries [FROM, TO) of a node's audit log over its OversightService, verify "
        "them against its latest checkpoint and write them as an audit export",
        _oversight_export,
    )
    p.add_argument("--from", dest="start", type=int, required=True, help="first entry (index)")
    p.add_argument("--to", dest="end", type=int, required=True, help="entry after the last")
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    overseer_command(
        "checkpoint",
        "fetch a node's latest audit checkpoint, verify it with its key and print it",
        _oversight_checkpoint,
    )
    p = overseer_command(
        "prove",
        "fetch one entry of a node's audit log with its inclusion proof in the latest "
        "checkpoint, verify both and print them as JSON",
        _oversight_prove,
    )
    p.add_argument("entry", type=_entry, help=ENTRY_HELP)

    dirs = group("directory", "federation directory tasks")
    p = command(dirs, "sign", "sign a members file into a federation directory", _directory_sign)
    p.add_argument("--authority", type=Path, required=True, help="the authority folder")
    p.add_argument(
        "--members",
        type=Path,
        required=True,
        help="JSON list of member entries (as written by `node enroll`)",
    )
    p.add_argument("--out", type=Path, required=True, help="where to write directory.json")
    p.add_argument(
        "--serial",
        type=int,
        default=None,
        help="serial (default: one above the highest this authority signed); must grow",
    )
    p.add_argument("--valid-days", type=int, default=30, help="days until it expires")
    p = command(
        dirs,
        "add",
        "add a node's member entry to the members file, or update its endpoint",
        _directory_add,
    )
    p.add_argument("--authority", type=Path, required=True, help="the authority folder")
    p.add_argument("--members", type=Path, required=True, help="the members file (JSON list)")
    p.add_argument(
        "--member",
        type=Path,
        required=True,
        help="the node's member.json (from `node enroll`; its tls.crt beside it is checked)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a listed entry that has other keys (the node was enrolled again)",
    )
    for name, status, help_ in (
        ("suspend", "suspended", "suspend a member: peers refuse it by policy until reinstated"),
        ("reinstate", "active", "make a suspended member active again"),
        ("revoke", "revoked", "revoke a member for good: every node refuses it"),
    ):
        p = command(dirs, name, help_, _directory_set_status)
        p.set_defaults(status=status)
        p.add_argument("node_id", help="the member's node id, e.g. DE-BKA")
        p.add_argument("--members", type=Path, required=True, help="the members file")
    p = command(
        dirs,
        "show",
        "verify a directory file and print its serial, validity and members",
        _directory_show,
    )
    p.add_argument("file", type=Path, help="a signed directory.json")
    p.add_argument(
        "--authority-key", type=Path, required=True, help="the pinned authority.pub to verify with"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    audit = group("audit", "audit log tasks (for operators and overseers)")
    p = command(
        audit,
        "verify",
        "check an audit log from entry 0: every entry chains onto the one before; reports "
        "the index of the first bad entry",
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
    p.add_argument("entry", type=_entry, help=ENTRY_HELP)
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

    witness = group(
        "witness", "this node as a witness of its peers' audit logs: its views, split views"
    )
    p = command(
        witness,
        "status",
        "print the newest checkpoint this node verified of each peer's log, and any split-view "
        "evidence (safe beside a running node)",
        _witness_status,
        config=True,
    )
    p.add_argument("--json", action="store_true", help="print the state file's JSON")
    p = command(
        witness,
        "forget",
        "after a split view of LOG was investigated: drop this node's view of that log (its "
        "next checkpoint is then trusted afresh) and mark its evidence resolved; the node "
        "must be stopped",
        _witness_forget,
        config=True,
    )
    p.add_argument("log", help="the peer whose log, e.g. DE-BKA")
    p.add_argument(
        "--resolution",
        required=True,
        help="what the investigation found and who decided (kept with the evidence)",
    )

    data = group("data", "record data tasks")
    p = command(
        data,
        "import",
        "validate a JSONL or CSV file and import it (nothing is written unless every row is valid)",
        _data_import,
        config=True,
    )
    p.add_argument("file", type=Path, help="records file (.jsonl or .csv)")

    p = sub.add_parser("serve", help="serve the node", description="serve the node over mTLS")
    p.set_defaults(run=_serve)
    p.add_argument("--config", type=Path, required=True, help="the node's node.toml")

    query = group("query", "ask peer nodes")
    p = command(query, "match", "hit/no-hit query to one peer or all peers", _query_match)
    p.add_argument("--config", type=Path, required=True, help="your node's node.toml")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--peer", action="append", help="peer node id (repeatable)")
    target.add_argument("--all", action="store_true", help="every active peer in the directory")
    p.add_argument("--category", required=True)
    p.add_argument("--purpose", required=True)
    p.add_argument(
        "--legal-basis",
        default="none",
        choices=["none", "bilateral_agreement", "mlat", "jit", "treaty"],
    )
    p.add_argument("--legal-reference", default="")
    p.add_argument("--case", default="", help="your case file reference")
    for flag in (
        "document-number",
        "vin",
        "registration-number",
        "serial-number",
        "family-name",
        "given-names",
        "date-of-birth",
    ):
        p.add_argument(f"--{flag}")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds for all peers")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    pol = group("policy", "policy tasks: check, test and explain the node's Rego")

    def policy_command(
        name: str, help_: str, run: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = command(pol, name, help_, run)
        p.add_argument("--config", type=Path, help="the node's node.toml (policy, data, engine)")
        p.add_argument("--policy-dir", type=Path, help="Rego folder (instead of --config)")
        p.add_argument("--data", type=Path, help="policy data file (instead of --config)")
        return p

    policy_command(
        "check",
        "validate the policy data against its schema, compile the Rego, "
        "and run opa check --strict and opa fmt",
        _policy_check,
    )
    p = policy_command(
        "test",
        "run the Rego unit tests (opa test) and the conformance corpus on both engines",
        _policy_test,
    )
    p.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="conformance corpus folder (default: the repository's tests/conformance)",
    )
    p = policy_command(
        "explain",
        "decide one input and show why: reasons, obligations, and the rules that fired "
        "(OPA's explanation when the node's engine is OPA)",
        _policy_explain,
    )
    p.add_argument("--input", type=Path, required=True, help="a policy input JSON file")

    p = sub.add_parser(
        "demo",
        help="build and run a three-country federation on loopback",
        description="build and run a three-country federation on loopback",
    )
    p.set_defaults(run=_demo)
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("demo-federation"),
        help="folder to build it in (default ./demo-federation)",
    )
    p.add_argument("--records", type=int, default=3000, help="synthetic records per node")
    p.add_argument("--keep", action="store_true", help="keep the nodes up until Ctrl-C")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except OPERATOR_ERRORS as exc:
        print(f"liaison: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
