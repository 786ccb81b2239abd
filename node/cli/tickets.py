"""`liaison tickets list|show|approve|refuse`: the operator works the step-2 requests that
policy sent to a human.

Each command asks the running node over its admin socket (`[admin] socket` in node.toml):
the node makes the transition and writes its audit entry, since it is the audit log's one
writer (node/rpc/admin.py). A node that is not running is one line, and exit 2.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from node.cli.shared import Subparsers, command, group

if TYPE_CHECKING:
    from node.rpc.admin_client import AdminClient
    from node.tickets import Ticket

STATES = ("pending", "approved", "refused", "expired", "withdrawn")


def _client(args: argparse.Namespace) -> AdminClient:
    from node.config import load_config
    from node.rpc.admin_client import AdminClient

    return AdminClient(load_config(args.config).admin.socket, args.config)


def _operator(args: argparse.Namespace) -> str:
    """`--operator`, or the OS login name of whoever runs the command."""
    if args.operator:
        return str(args.operator)
    import getpass

    return getpass.getuser()


def _doc(t: Ticket) -> dict[str, Any]:
    def when(moment: Any) -> str:
        return "" if moment is None else moment.isoformat(timespec="seconds")

    return {
        "id": t.id,
        "state": t.state.value,
        "requester": t.requester,
        "record_ref": t.record_ref,
        "category": t.category,
        "purpose": t.purpose,
        "legal_basis": t.legal_basis.value,
        "legal_reference": t.legal_reference,
        "case_reference": t.case_reference,
        "handling_code": t.handling_code,
        "redact": list(t.redact),
        "extra_redact": list(t.extra_redact),
        "retention_days": t.retention_days,
        "created_at": when(t.created_at),
        "deadline_at": when(t.deadline_at),
        "decided_at": when(t.decided_at),
        "operator": t.operator,
        "reason": t.reason,
        "delivered_at": when(t.delivered_at),
        "request_entry": t.request_entry,
    }


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        from node.tickets import TicketState

        found = client.list(TicketState(args.state) if args.state else None, args.limit)
    if args.json:
        print(json.dumps([_doc(t) for t in found], indent=2))
        return 0
    if not found:
        print(f"no {args.state or ''} tickets".replace("  ", " "))
        return 0
    print(f"{'ticket':<36} {'state':<9} {'requester':<12} {'category':<16} deadline (UTC)")
    for t in found:
        deadline = t.deadline_at.isoformat(timespec="seconds")
        print(f"{t.id:<36} {t.state.value:<9} {t.requester:<12} {t.category:<16} {deadline}")
    return 0


def _show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ticket = client.get(args.id)
    doc = _doc(ticket)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    for key, value in doc.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key + ':':<17} {shown}")
    return 0


def _approve(args: argparse.Namespace) -> int:
    with _client(args) as client:
        done = client.approve(args.id, _operator(args), args.reason or "", args.redact)
    t = done.ticket
    withheld = ", ".join(t.withheld) or "nothing"
    print(f"ticket {t.id} approved by {t.operator}; withheld: {withheld}")
    print(f"audit entry {done.audit_entry}")
    return 0


def _refuse(args: argparse.Namespace) -> int:
    with _client(args) as client:
        done = client.refuse(args.id, _operator(args), args.reason)
    print(f"ticket {done.ticket.id} refused by {done.ticket.operator}")
    print(f"audit entry {done.audit_entry}")
    return 0


def _operator_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operator", help="your name, as the audit entry records it (default: login)")


def register(sub: Subparsers) -> None:
    """Declare `liaison tickets`."""
    tickets = group(sub, "tickets", "work the step-2 requests awaiting a human decision")
    p = command(tickets, "list", "tickets, oldest first", _list, config=True)
    p.add_argument("--state", choices=STATES, help="only tickets in this state")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(tickets, "show", "one ticket", _show, config=True)
    p.add_argument("id", help="the ticket's id (tkt_...)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(tickets, "approve", "approve a pending ticket", _approve, config=True)
    p.add_argument("id", help="the ticket's id (tkt_...)")
    _operator_arg(p)
    p.add_argument("--reason", help="why (optional; audited)")
    p.add_argument(
        "--redact",
        nargs="+",
        default=[],
        metavar="FIELD",
        help="payload fields to withhold beyond the policy's redactions",
    )
    p = command(tickets, "refuse", "refuse a pending ticket", _refuse, config=True)
    p.add_argument("id", help="the ticket's id (tkt_...)")
    _operator_arg(p)
    # Not required by the parser: the node refuses an empty reason (`reason_required`), in
    # one line, as it does for any other client.
    p.add_argument("--reason", default="", help="why (required: the requester is owed one)")
