"""`liaison notices publish|withdraw|list|status|hits`: the operator broadcasts alerts to
chosen countries, follows their delivery, and sees the local alerts notices raised.

Each command asks the running node over its admin socket (`[admin] socket` in node.toml):
the node stores and audits a publication or withdrawal, and its courier delivers it to each
recipient, retrying until delivered, refused by the recipient's policy, or expired
(node/notice_delivery.py). A node that is not running is one line, and exit 2.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.shared import Subparsers, command, format_table, group

if TYPE_CHECKING:
    from node.notice_model import Delivery, NoticeHit, StoredNotice
    from node.rpc.admin_client import AdminClient

CATEGORIES = ("wanted_person", "missing_person", "travel_document", "vehicle")
HANDLING = ("H0", "H1", "H2", "H3")
LEGAL_BASES = ("none", "bilateral_agreement", "mlat", "jit", "treaty")


def _client(args: argparse.Namespace) -> AdminClient:
    from node.config import load_config
    from node.rpc.admin_client import AdminClient

    return AdminClient(load_config(args.config).admin.socket, args.config)


def _operator(args: argparse.Namespace) -> str:
    if args.operator:
        return str(args.operator)
    import getpass

    return getpass.getuser()


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _identifier(text: str) -> tuple[str, str]:
    kind, sep, value = text.partition("=")
    if not sep or not kind or not value:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not KIND=VALUE (e.g. document_number=X1234567, "
            "name_dob='Doe|John|1980-01-02')"
        )
    return kind.strip(), value


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} lacks its zone (add Z or +01:00)")
    return moment


def _notice_doc(n: StoredNotice) -> dict[str, Any]:
    return {
        "notice_id": n.notice_id,
        "version": n.version,
        "publisher": n.publisher,
        "state": n.state.value,
        "category": n.category,
        "identifiers": [[i.kind, i.value] for i in n.identifiers],
        "summary": n.summary,
        "handling_code": n.handling_code,
        "to_all_members": n.to_all_members,
        "recipients": list(n.recipients),
        "expires_at": _when(n.expires_at),
        "created_at": _when(n.created_at),
        "purpose": n.purpose,
        "legal_basis": n.legal_basis.value,
    }


def _delivery_doc(d: Delivery) -> dict[str, Any]:
    return {
        "recipient": d.recipient,
        "version": d.version,
        "action": d.action.value,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": _when(d.next_attempt_at) if d.state.value == "pending" else "",
        "updated_at": _when(d.updated_at),
    }


def _deliveries_table(deliveries: list[Delivery]) -> str:
    rows = [["RECIPIENT", "VERSION", "ACTION", "STATUS", "ATTEMPTS", "NEXT ATTEMPT (UTC)"]]
    for d in deliveries:
        doc = _delivery_doc(d)
        attempts, when = str(d.attempts), doc["next_attempt_at"]
        rows.append([d.recipient, str(d.version), d.action.value, d.status, attempts, when])
    return format_table(rows)


def _publish(args: argparse.Namespace) -> int:
    from federation.model import Identifier
    from federation.vocabulary import LegalBasis
    from node.notice_model import NoticeDraft

    summary = args.summary
    if args.summary_file is not None:
        summary = args.summary_file.read_text(encoding="utf-8")
    expires = args.expires_at or datetime.now(UTC) + timedelta(days=args.expires_in_days)
    draft = NoticeDraft(
        category=args.category,
        identifiers=tuple(Identifier(kind, value) for kind, value in args.identifier),
        summary=summary or "",
        handling_code=args.handling_code,
        to_all_members=args.all_members,
        recipients=tuple(args.to or ()),
        expires_at=expires,
        purpose=args.purpose,
        legal_basis=LegalBasis(args.legal_basis),
        legal_reference=args.legal_reference,
        case_reference=args.case_reference,
    )
    with _client(args) as client:
        done = client.publish_notice(draft, _operator(args))
    n = done.notice
    print(f"notice {n.notice_id} published (version {n.version}), expires {_when(n.expires_at)}")
    print(f"audit entry {done.audit_entry}")
    print(_deliveries_table(done.deliveries))
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    with _client(args) as client:
        done = client.withdraw_notice(args.id, _operator(args))
    print(f"notice {done.notice.notice_id} withdrawn (version {done.notice.version})")
    print(f"audit entry {done.audit_entry}")
    print(_deliveries_table(done.deliveries))
    return 0


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.notices(args.published, args.limit)
    if args.json:
        print(json.dumps([_notice_doc(n) for n in found], indent=2))
        return 0
    if not found:
        print("no notices " + ("published" if args.published else "received"))
        return 0
    rows = [["NOTICE", "VERSION", "PUBLISHER", "STATE", "CATEGORY", "HANDLING", "EXPIRES (UTC)"]]
    for n in found:
        state, expires = n.state.value, _when(n.expires_at)
        rows.append(
            [n.notice_id, str(n.version), n.publisher, state, n.category, n.handling_code, expires]
        )
    print(format_table(rows))
    return 0


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        notice, deliveries = client.notice_status(args.id)
    if args.json:
        doc = _notice_doc(notice) | {"deliveries": [_delivery_doc(d) for d in deliveries]}
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"notice {notice.notice_id} version {notice.version}: {notice.state.value}, "
        f"{notice.category}, expires {_when(notice.expires_at)}"
    )
    print(_deliveries_table(deliveries) if deliveries else "no recipients")
    return 0


def _hits_doc(h: NoticeHit) -> dict[str, str]:
    return {
        "id": h.id,
        "at": _when(h.at),
        "notice_id": h.notice_id,
        "publisher": h.publisher,
        "category": h.category,
        "trigger": h.trigger,
    }


def _hits(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.notice_hits(args.limit)
    if args.json:
        print(json.dumps([_hits_doc(h) for h in found], indent=2))
        return 0
    if not found:
        print("no notice hits")
        return 0
    rows = [["AT (UTC)", "NOTICE", "PUBLISHER", "CATEGORY", "TRIGGER"]]
    rows += [[_when(h.at), h.notice_id, h.publisher, h.category, h.trigger] for h in found]
    print(format_table(rows))
    return 0


def _operator_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operator", help="your name, as the audit entry records it (default: login)")


def register(sub: Subparsers) -> None:
    """Declare `liaison notices`."""
    notices = group(sub, "notices", "broadcast alerts to chosen countries and see their hits")
    p = command(notices, "publish", "publish a notice to all members or named ones", _publish,
                config=True)  # fmt: skip
    p.add_argument("--category", required=True, choices=CATEGORIES)
    p.add_argument(
        "--identifier",
        required=True,
        action="append",
        type=_identifier,
        metavar="KIND=VALUE",
        help="repeatable; name_dob is 'family|given|YYYY-MM-DD'",
    )
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--summary", help="free text for the receiving officers (≤ 1000 chars)")
    text.add_argument("--summary-file", type=Path, help="read it from a file")
    p.add_argument("--handling-code", required=True, choices=HANDLING)
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", nargs="+", metavar="NODE", help="the recipients' node ids")
    to.add_argument("--all-members", action="store_true", help="every other active node")
    until = p.add_mutually_exclusive_group()
    until.add_argument("--expires-at", type=_moment, help="ISO 8601 time with its zone")
    until.add_argument("--expires-in-days", type=int, default=30, help="days from now (default 30)")
    p.add_argument("--purpose", default="criminal_investigation", help="the envelope's purpose")
    p.add_argument("--legal-basis", default="none", choices=LEGAL_BASES)
    p.add_argument("--legal-reference", default="", help="treaty article, MLAT or JIT reference")
    p.add_argument("--case-reference", default="", help="your own case file reference")
    _operator_arg(p)
    p = command(notices, "withdraw", "withdraw one of this node's notices", _withdraw, config=True)
    p.add_argument("id", help="the notice's id (ntc_...)")
    _operator_arg(p)
    p = command(notices, "list", "notices received (or, with --published, this node's)", _list,
                config=True)  # fmt: skip
    p.add_argument("--published", action="store_true", help="this node's own notices")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(notices, "status", "one published notice and its delivery to each recipient",
                _status, config=True)  # fmt: skip
    p.add_argument("id", help="the notice's id (ntc_...)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(notices, "hits", "local alerts: what hit an accepted notice", _hits, config=True)
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")
