"""`liaison query match`: this node asks its peers, and prints one row per peer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.shared import Subparsers, command, group

if TYPE_CHECKING:
    from federation.fanout import PeerResult

_FLAGS = {
    "document_number": "document_number",
    "vin": "vin",
    "registration_number": "registration_number",
    "serial_number": "serial_number",
}


def identifiers_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    from federation.errors import InvalidRequest

    out = [(kind, getattr(args, attr)) for attr, kind in _FLAGS.items() if getattr(args, attr)]
    person = (args.family_name, args.given_names, args.date_of_birth)
    if any(person):
        if not all(person):
            raise InvalidRequest(
                "",
                "a person is matched on --family-name, --given-names and --date-of-birth together",
            )
        out.append(("name_dob", "|".join(person)))
    if not out:
        raise InvalidRequest("", "give at least one identifier (e.g. --document-number)")
    return out


def result_row(r: PeerResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "peer": r.peer,
        "outcome": r.outcome.value,
        "elapsed_ms": round(r.elapsed_ms, 1),
    }
    if r.answer is not None:
        row["record_refs"] = list(r.answer.record_refs)
        row["policy_revision"] = r.answer.policy_revision
        row["audit_entry"] = r.answer.audit_entry
    if r.reasons:
        row["reasons"] = list(r.reasons)
    if r.message and r.answer is None:
        row["message"] = r.message
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("PEER", "OUTCOME", "DETAIL", "MS")
    lines = [header]
    for row in rows:
        if "record_refs" in row:
            detail = ", ".join(row["record_refs"]) or "-"
        else:
            detail = ", ".join(row.get("reasons", [])) or row.get("message", "")
        lines.append((row["peer"], row["outcome"], detail, f"{row['elapsed_ms']:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d:>7}" for a, b, c, d in lines
    )


async def run_match_command(args: argparse.Namespace) -> int:
    from federation.client import PeerClient, match_query, new_envelope
    from federation.directory import MemberStatus
    from federation.errors import InvalidRequest
    from federation.fanout import match_all
    from federation.pki import public_key_from_text
    from federation.vocabulary import LegalBasis
    from node.config import load_config
    from node.directory_state import for_node as directory_for_node

    config = load_config(args.config)
    authority = public_key_from_text(config.trust.authority_public_key.read_text())
    # The directory the node itself would use: its file, or a newer one it learned from a
    # peer (remembered in directory.state), never an older one.
    directory = directory_for_node(config, authority).load()
    identity = config.client_identity()
    if args.all:
        peers = [
            m
            for m in directory.members
            if m.node_id != config.node.id and m.status is MemberStatus.ACTIVE and m.is_node
        ]
    else:
        peers = []
        for peer_id in args.peer:
            member = directory.member(peer_id)
            if member is None:
                raise InvalidRequest(peer_id, f"not in directory serial {directory.serial}")
            if not member.is_node:
                raise InvalidRequest(peer_id, "is an overseer, not a node: it answers no queries")
            peers.append(member)
    identifiers = identifiers_from_args(args)
    clients = [PeerClient.for_member(identity, m, serial=lambda: directory.serial) for m in peers]
    try:
        results = await match_all(
            clients,
            lambda _peer: match_query(
                new_envelope(
                    config.node.id,
                    args.purpose,
                    legal_basis=LegalBasis(args.legal_basis),
                    legal_reference=args.legal_reference,
                    case_reference=args.case,
                ),
                args.category,
                identifiers,
            ),
            timeout=args.timeout,
        )
    finally:
        for c in clients:
            await c.close()
    rows = [result_row(r) for r in results]
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


# --- `liaison query` ---------------------------------------------------------------------------


def _query_match(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(run_match_command(args))


def register(sub: Subparsers) -> None:
    """Declare `liaison query` and its subcommands."""
    query = group(sub, "query", "ask peer nodes")
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
