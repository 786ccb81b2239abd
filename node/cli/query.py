"""`liaison query match|fetch|ticket`: this node asks its peers. `match` prints one row per
peer (node/cli/query_match.py; its batch mode, node/cli/query_batch.py); `fetch` asks one
peer for one record (by a hit's reference or an approved ticket), keeps a disclosed record
in this node's received records (node/received.py) with the restrictions that follow it,
and prints it; `ticket` asks where a ticket stands, or with `--watch` follows it until it
is decided, or with `--withdraw` withdraws it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.query_match import BASES, register_match
from node.cli.shared import Subparsers, command, group

if TYPE_CHECKING:
    from federation.client import PeerClient
    from federation.model import FetchAnswer, TicketStatus
    from node.config import NodeConfig
    from node.received import ReceivedRecord


def _peer_client(config: NodeConfig, peer_id: str) -> PeerClient:
    """A client for one peer of the directory the node itself would use."""
    from federation.client import PeerClient
    from federation.errors import InvalidRequest
    from federation.pki import public_key_from_text
    from node.directory_state import for_node as directory_for_node

    authority = public_key_from_text(config.trust.authority_public_key.read_text())
    directory = directory_for_node(config, authority).load()
    member = directory.member(peer_id)
    if member is None:
        raise InvalidRequest(peer_id, f"not in directory serial {directory.serial}")
    if not member.is_node:
        raise InvalidRequest(peer_id, "is an overseer, not a node: it answers no queries")
    identity = config.client_identity()
    return PeerClient.for_member(identity, member, serial=lambda: directory.serial)


def _when(moment: Any) -> str:
    return "" if moment is None else moment.isoformat(timespec="seconds")


def ticket_doc(t: TicketStatus) -> dict[str, Any]:
    return {
        "id": t.ticket_id,
        "state": t.state,
        "created_at": _when(t.created_at),
        "deadline_at": _when(t.deadline_at),
        "decided_at": _when(t.decided_at),
        "reason": t.reason,
        "delivered_at": _when(t.delivered_at),
    }


def resharing_warning(handling_code: str, source_restrictions: Any) -> str:
    """The line an investigator must see before passing a received record on; empty when
    neither its handling code nor its source restricts it."""
    why = []
    if handling_code in ("H2", "H3"):
        why.append(f"handling code {handling_code}")
    if source_restrictions:
        why.append(f"restricted by its source ({', '.join(source_restrictions)})")
    if not why:
        return ""
    return f"WARNING: this record may not be passed on: {' and '.join(why)}"


def _keep(config: NodeConfig, args: argparse.Namespace, answer: FetchAnswer) -> ReceivedRecord:
    """The disclosed record, in this node's received records, with what follows it."""
    from datetime import UTC, datetime

    from federation.vocabulary import LegalBasis
    from node.received import ReceivedStore
    from node.schema import require_current

    record = answer.record
    assert record is not None
    require_current(config.store.url, config.source)
    store = ReceivedStore(config.store.url)
    try:
        return store.add(
            from_node=answer.responder,
            record_ref=record.record_ref,
            category=record.category,
            payload=json.loads(record.payload_json),
            handling_code=record.handling_code,
            source_restrictions=record.source_restrictions,
            origin_country=record.origin_country,
            purpose=args.purpose,
            legal_basis=LegalBasis(args.legal_basis),
            legal_reference=args.legal_reference,
            case_reference=args.case_reference,
            retention_days=record.retention_days,
            received_at=datetime.now(UTC),
            ticket_id=args.ticket or None,
        )
    finally:
        store.close()


def _print_doc(doc: dict[str, Any]) -> None:
    for key, value in doc.items():
        if isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key + ':':<21} {value}")


async def run_fetch_command(args: argparse.Namespace) -> int:
    """Fetch one record; 0 with a record or a ticket, 1 when the peer refused."""
    from federation.client import new_envelope
    from federation.errors import InvalidRequest, PeerRefused
    from federation.model import FetchQuery
    from federation.vocabulary import LegalBasis
    from node.config import load_config

    config = load_config(args.config)
    client = _peer_client(config, args.peer)
    envelope = new_envelope(
        config.node.id,
        args.purpose,
        legal_basis=LegalBasis(args.legal_basis),
        legal_reference=args.legal_reference,
        case_reference=args.case_reference,
    )
    query = FetchQuery(envelope, record_ref=args.ref or "", ticket_id=args.ticket or "")
    try:
        answer = await client.fetch(query, timeout=args.timeout)
    except (PeerRefused, InvalidRequest) as exc:
        if not exc.reasons:
            raise
        doc: dict[str, Any] = {"peer": args.peer, "outcome": "refused"}
        doc |= {"reasons": list(exc.reasons), "message": exc.message}
        doc["audit_entry"] = exc.metadata.get("audit_entry", "")
        print(json.dumps(doc, indent=2) if args.json else f"refused by {args.peer}")
        if not args.json:
            _print_doc({k: v for k, v in doc.items() if k not in ("peer", "outcome")})
        return 1
    finally:
        await client.close()
    doc = {"peer": answer.responder}
    warning = ""
    if answer.ticket is not None:
        doc |= {"outcome": "ticket", "ticket": ticket_doc(answer.ticket)}
    else:
        record = answer.record
        assert record is not None
        doc["outcome"] = "record"
        if record.retention_days >= 1:
            kept = _keep(config, args, answer)
            doc |= {"received_id": kept.id, "retain_until": _when(kept.retain_until)}
        else:  # the owner granted no time to keep it: shown once, not kept
            doc |= {"received_id": "", "retain_until": ""}
        doc["record"] = {
            "record_ref": record.record_ref,
            "category": record.category,
            "handling_code": record.handling_code,
            "source_restrictions": list(record.source_restrictions),
            "origin_country": record.origin_country,
            "withheld_fields": list(record.withheld_fields),
            "retention_days": record.retention_days,
            "payload": json.loads(record.payload_json),
        }
        warning = resharing_warning(record.handling_code, record.source_restrictions)
    doc |= {"policy_revision": answer.policy_revision, "audit_entry": answer.audit_entry}
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    if answer.ticket is not None:
        t = doc.pop("ticket")
        print(f"{args.peer} opened ticket {t['id']}: {t['state']}, deadline {t['deadline_at']}")
        print(f"collect it once approved: liaison query fetch ... --ticket {t['id']}")
    else:
        flat = doc.pop("record")
        kept_id = doc["received_id"]
        print(
            f"record {flat['record_ref']} from {args.peer}, "
            + (f"kept as {kept_id} until {doc['retain_until']}" if kept_id else "not kept")
        )
        _print_doc({**flat, "received_id": kept_id or "-"})
    if warning:
        print(warning)
    _print_doc({k: v for k, v in doc.items() if k in ("policy_revision", "audit_entry")})
    return 0


async def run_ticket_command(args: argparse.Namespace) -> int:
    from node.config import load_config

    config = load_config(args.config)
    client = _peer_client(config, args.peer)
    if args.watch:
        try:
            return await _watch_ticket(client, args)
        finally:
            await client.close()
    entry = ""
    try:
        if args.withdraw:
            withdrawn = await client.withdraw_ticket(args.ticket, timeout=args.timeout)
            status, entry = withdrawn.ticket, withdrawn.audit_entry
        else:
            status = await client.get_ticket(args.ticket, timeout=args.timeout)
    finally:
        await client.close()
    doc = ticket_doc(status) | ({"audit_entry": entry} if entry else {})
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_doc(doc)
    return 0


async def _watch_ticket(client: PeerClient, args: argparse.Namespace) -> int:
    """Each status as it comes (with --json one object a line), until the ticket is
    decided: then 0. A refusal, or the owner unavailable for longer than --timeout, raises
    (the command's usual error line)."""
    import contextlib
    import sys

    watch = client.watch_ticket(args.ticket, resubscribe_for=args.timeout)
    async with contextlib.aclosing(watch) as statuses:
        first = True
        async for status in statuses:
            doc = ticket_doc(status)
            if args.json:
                print(json.dumps(doc), flush=True)
                continue
            if not first:
                print()
            first = False
            _print_doc(doc)
            sys.stdout.flush()
    return 0


# --- `liaison query` ---------------------------------------------------------------------------


def _query_fetch(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(run_fetch_command(args))


def _query_ticket(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(run_ticket_command(args))


def register(sub: Subparsers) -> None:
    """Declare `liaison query` and its subcommands."""
    query = group(sub, "query", "ask peer nodes")
    register_match(query)

    p = command(
        query, "fetch", "one record from one peer (a hit's reference or a ticket)", _query_fetch
    )
    p.add_argument("--config", type=Path, required=True, help="your node's node.toml")
    p.add_argument("--peer", required=True, help="the peer node id that owns the record")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--ref", help="the record reference a hit returned")
    target.add_argument("--ticket", help="an approved ticket's id, to collect its record")
    p.add_argument("--purpose", required=True)
    p.add_argument("--legal-basis", default="none", choices=BASES)
    p.add_argument("--legal-reference", default="", help="e.g. the MLAT request's reference")
    p.add_argument("--case-reference", default="", help="your case file reference")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(query, "ticket", "where a ticket a peer opened for us stands", _query_ticket)
    p.add_argument("--config", type=Path, required=True, help="your node's node.toml")
    p.add_argument("--peer", required=True, help="the peer node id that opened the ticket")
    p.add_argument("--ticket", required=True, help="the ticket's id")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--watch",
        action="store_true",
        help="print each status as it comes until the ticket is decided (WatchTicket)",
    )
    how.add_argument(
        "--withdraw",
        action="store_true",
        help="withdraw the pending ticket: we no longer need its record (WithdrawTicket)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds; with --watch, how long to keep subscribing again while the peer is "
        "unavailable (the watch itself lasts until the decision)",
    )
    p.add_argument(
        "--json", action="store_true", help="print JSON (with --watch, one object a line)"
    )
