"""The commands behind `liaison audit export|verify --export` and `liaison oversight ...`.

`audit export` is the operator's: a range of its own log, read from its file or database. `oversight
export|checkpoint|prove` are an overseer's: the same over the node's OversightService, with
the overseer's identity (from `liaison oversight enroll`) and the signed directory. Both
write the one export format of `federation.oversight`, which `audit verify --export` checks
with the node's public key alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.shared import (
    ENTRY_HELP,
    Subparsers,
    add_window,
    command,
    format_table,
    group,
    parse_entry,
    write_out,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from federation import checkpoints
    from federation.client import ClientIdentity
    from federation.directory import Directory
    from federation.indicators import Indicators
    from federation.oversight import AuditExport, OversightClient
    from node.config import NodeConfig


@dataclass(frozen=True)
class OwnCheckpoint:
    """A node's newest checkpoint, verified with its own key, over a log that holds it."""

    origin: str
    public: ed25519.Ed25519PublicKey
    verifier: checkpoints.Verifier
    note: str
    checkpoint: checkpoints.Checkpoint

    @classmethod
    def of(cls, config: NodeConfig, found: list[str], where: str, size: int) -> OwnCheckpoint:
        """From the log's checkpoint notes (`found`) and its size; AuditError, saying what
        to do, if there is none, it does not verify, or the log is smaller than it."""
        from federation import checkpoints
        from federation.checkpoints import audit_origin
        from federation.pki import load_ed25519_private
        from node.audit.entries import AuditError

        if not found:
            raise AuditError(f"{where} has no checkpoint yet: run `liaison audit checkpoint` first")
        origin = audit_origin(config.node.federation, config.node.id)
        public = load_ed25519_private(config.trust.signing_key).public_key()
        verifier = checkpoints.Verifier.for_log(origin, public)
        try:
            checkpoint = checkpoints.verify_checkpoint(found[-1], origin, verifier)
        except checkpoints.NoteError as exc:
            raise AuditError(
                f"the latest checkpoint does not verify ({exc}): run `liaison audit verify`"
            ) from None
        if checkpoint.size > size:
            raise AuditError(
                f"{where} holds {size} entries, fewer than its latest checkpoint "
                f"({checkpoint.size}): run `liaison audit verify`"
            )
        return cls(origin, public, verifier, found[-1], checkpoint)


def export_from_log(config: NodeConfig, start: int, end: int) -> AuditExport:
    """Entries [start, end) of the node's own log, against its latest checkpoint (read
    only: safe on the log of a running node, on either store). Verified before it is
    returned."""
    from federation import checkpoints, merkle
    from federation.oversight import AuditExport, ExportInvalid, verify_export
    from node.audit.entries import AuditError, leaf_input
    from node.audit.log import existing_storage
    from node.audit.storage import StorageError
    from node.audit.verify import load_storage_tree, storage_checkpoints

    if start > end:
        raise AuditError(f"--from {start} is after --to {end}")
    storage = existing_storage(config.audit.store, config.audit.path, config.audit.url)
    where = storage.where
    try:
        store = load_storage_tree(storage)
        found = storage_checkpoints(storage)
        lines = storage.lines(start, min(end, store.size))
    except StorageError as exc:
        raise AuditError(f"audit log {where} could not be read: {exc}") from exc
    finally:
        storage.close()
    own = OwnCheckpoint.of(config, found, where, store.size)
    checkpoint, origin, verifier = own.checkpoint, own.origin, own.verifier
    if end > checkpoint.size:
        raise AuditError(
            f"--to {end} is beyond the latest checkpoint (tree size {checkpoint.size}): "
            "run `liaison audit checkpoint` first"
        )
    left = merkle.CompactRange()
    left.extend(store.leaf(i) for i in range(start))
    entries = [leaf_input(json.loads(line)) for line in lines]
    proof = merkle.TreeHasher(store).consistency_proof(end, checkpoint.size)
    export = AuditExport.build(
        origin, checkpoints.vkey(origin, own.public), own.note, start, left.hashes, entries, proof
    )
    try:
        verify_export(export, verifier)
    except ExportInvalid as exc:
        raise AuditError(f"{where} does not match its latest checkpoint ({exc})") from None
    return export


def check_export(
    path: Path, public_key: str | None, vkey: str | None, origin: str | None
) -> tuple[int, str]:
    """(exit code, report line) for `audit verify --export`."""
    from federation import checkpoints
    from federation.oversight import AuditExport, ExportInvalid, verify_export
    from federation.pki import public_key_from_text
    from node.config import ConfigError

    if public_key is None and vkey is None:
        raise ConfigError(
            "--export needs the node's key: --public-key HEX (or --vkey, its signed-note "
            "verifier key); never trust the key inside the export"
        )
    try:
        export = AuditExport.from_json(path.read_bytes())
        if vkey is not None:
            verifier = checkpoints.Verifier.from_vkey(vkey)
            origin = origin or verifier.name
        else:
            assert public_key is not None
            origin = origin or export.origin
            verifier = checkpoints.Verifier.for_log(origin, public_key_from_text(public_key))
        checkpoint = verify_export(export, verifier, origin)
    except ExportInvalid as exc:
        where = f" at entry {exc.index}" if exc.index is not None else ""
        return 2, f"{path}: BAD{where}: {exc}; keep a copy of this file"
    except checkpoints.NoteError as exc:
        raise ConfigError(f"--vkey: {exc}") from None
    return 0, (
        f"{path}: entries [{export.start}, {export.end}) of {origin} verified against its "
        f"checkpoint of tree size {checkpoint.size}, signed by the given key"
    )


@dataclass(frozen=True)
class Overseer:
    identity: ClientIdentity
    directory: Directory

    def client(self, node_id: str, endpoint: str | None = None) -> OversightClient:
        from federation.errors import InvalidRequest
        from federation.oversight import OversightClient

        member = self.directory.member(node_id)
        if member is None:
            raise InvalidRequest(node_id, f"not in directory serial {self.directory.serial}")
        if not member.is_node:
            raise InvalidRequest(node_id, "is not a node: it keeps no audit log to oversee")
        return OversightClient.for_member(self.identity, member, endpoint)


def load_overseer(folder: Path, directory: Path, authority_key: Path | None = None) -> Overseer:
    """An overseer's identity (the folder `oversight enroll` wrote) and the signed
    directory, verified with the authority key (default: the folder's authority.pub)."""
    from federation.client import ClientIdentity
    from federation.directory import DirectoryError, load_directory
    from federation.pki import public_key_from_text
    from node.config import ConfigError

    try:
        member = json.loads((folder / "member.json").read_text())
        node_id = str(member["node_id"])
    except FileNotFoundError:
        raise ConfigError(
            f"{folder} holds no member.json: is it an identity from `liaison oversight enroll`?"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{folder / 'member.json'} is not a member entry") from None
    key = public_key_from_text((authority_key or folder / "authority.pub").read_text())
    signed = load_directory(directory, key)
    if signed.member(node_id) is None:
        raise DirectoryError(
            f"{node_id} is not in directory serial {signed.serial}: nodes will refuse it"
        )
    identity = ClientIdentity.from_files(
        node_id,
        signed.federation,
        folder / "tls.crt",
        folder / "tls.key",
        folder / "ca.crt",
        folder / "signing.key",
    )
    return Overseer(identity, signed)


# --- `liaison oversight` -----------------------------------------------------------------------


def _oversight_enroll(args: argparse.Namespace) -> int:
    from node.enrol import enrol_overseer

    member = enrol_overseer(args.authority, args.overseer_id, args.out)
    print(
        f"{args.overseer_id}: overseer keys and certificate written to {args.out}\n"
        f"  member entry for the directory: {args.out / 'member.json'} (role overseer)\n"
        f"  certificate sha256: {member.certificate_sha256}"
    )
    return 0


def _oversight_export(args: argparse.Namespace) -> int:
    import asyncio

    overseer = load_overseer(args.identity, args.directory, args.authority_key)

    async def run() -> str:
        async with overseer.client(args.node, args.endpoint) as client:
            return (await client.export(args.start, args.end)).to_json()

    write_out(asyncio.run(run()), args.out)
    if args.out is not None:
        print(
            f"entries [{args.start}, {args.end}) of {args.node}'s audit log verified against "
            f"its latest checkpoint and written to {args.out}"
        )
    return 0


def _oversight_checkpoint(args: argparse.Namespace) -> int:
    import asyncio

    overseer = load_overseer(args.identity, args.directory, args.authority_key)

    async def run() -> str:
        async with overseer.client(args.node, args.endpoint) as client:
            return (await client.get_checkpoint())[1]

    sys.stdout.write(asyncio.run(run()))
    return 0


def _oversight_prove(args: argparse.Namespace) -> int:
    import asyncio

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


def _oversight_indicators(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import UTC, datetime

    from federation.indicators import IndicatorsQuery
    from node.report.files import to_csv, to_json

    overseer = load_overseer(args.identity, args.directory, args.authority_key)
    query = IndicatorsQuery(args.since, args.until or datetime.now(UTC), args.granularity)

    async def run() -> Indicators:
        async with overseer.client(args.node, args.endpoint) as client:
            return await client.get_indicators(query)

    ind = asyncio.run(run())
    if args.format == "json":
        text = to_json(ind)
    elif args.format == "csv":
        text = to_csv(ind)
    else:
        text = indicators_table(ind)
    write_out(text, args.out)
    if args.out is not None:
        print(
            f"{args.node}'s indicators over its audit entries [0, {ind.entries}) written "
            f"to {args.out}"
        )
    return 0


def indicators_table(ind: Indicators) -> str:
    """The figures as text: one table per period, a row per figure, a column per peer."""
    from federation.indicators import SPECS

    blocks = [
        f"{ind.node}: indicators over its audit entries [0, {ind.entries}) (its latest signed "
        f"checkpoint), {ind.since.isoformat()} to {ind.until.isoformat()}; counts of 1 to 4 "
        "read <5, x hides what would reveal one"
    ]
    for period in ind.periods:
        rows = [["PERIOD " + period, *ind.peers]]
        for spec in SPECS:
            for key in ind.keys_of(spec):
                label = f"{spec.name} {key}".strip()
                rows.append(
                    [
                        label,
                        *(ind.figure(period, p, spec.name, key).text(spec.kind) for p in ind.peers),
                    ]
                )
        blocks.append(format_table(rows))
    return "\n\n".join(blocks) + "\n"


def register(sub: Subparsers) -> None:
    """Declare `liaison oversight` and its subcommands."""
    oversight = group(
        sub,
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
    p.add_argument("entry", type=parse_entry, help=ENTRY_HELP)
    p = overseer_command(
        "indicators",
        "fetch a node's compliance indicators (what `liaison report` shows, small counts "
        "suppressed) over its OversightService, computed from its latest signed checkpoint",
        _oversight_indicators,
    )
    add_window(p)
    p.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="default: table"
    )
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
