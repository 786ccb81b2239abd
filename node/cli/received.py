"""`liaison received list|show|purge`: the records this node fetched from peers, with the
restrictions that follow them (node/received.py).

`list` never prints a payload: a list is for finding a record, `show` is for reading one,
with a warning when its handling code or its source forbids passing it on. Deleting
records past their retention is the running node's job (every `[received]
purge_interval_s`, each deletion audited: node/received_purge.py); `purge` does it here only
when no node is running, and the node audits those deletions when it next starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from node.cli.shared import Subparsers, command, format_table, group

if TYPE_CHECKING:
    from datetime import datetime

    from node.received import ReceivedRecord, ReceivedStore


def _store(args: argparse.Namespace) -> ReceivedStore:
    from node.config import load_config
    from node.received import ReceivedStore
    from node.schema import require_current

    config = load_config(args.config)
    require_current(config.store.url, config.source)
    return ReceivedStore(config.store.url)


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _row(r: ReceivedRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "from": r.from_node,
        "category": r.category,
        "handling_code": r.handling_code,
        "received_at": _when(r.received_at),
        "retain_until": _when(r.retain_until),
    }


def _doc(r: ReceivedRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "from": r.from_node,
        "record_ref": r.record_ref,
        "category": r.category,
        "handling_code": r.handling_code,
        "source_restrictions": list(r.source_restrictions),
        "origin_country": r.origin_country,
        "purpose": r.purpose,
        "legal_basis": r.legal_basis.value,
        "legal_reference": r.legal_reference,
        "case_reference": r.case_reference,
        "ticket_id": r.ticket_id or "",
        "received_at": _when(r.received_at),
        "retain_until": _when(r.retain_until),
        "payload": dict(r.payload),
    }


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        found = store.list(from_node=args.peer, case_reference=args.case, limit=args.limit)
    finally:
        store.close()
    rows = [_row(r) for r in found]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no received records")
    else:
        header = ("ID", "FROM", "CATEGORY", "HANDLING", "RECEIVED (UTC)", "RETAIN UNTIL (UTC)")
        print(format_table([header, *(tuple(row.values()) for row in rows)]))
    return 0


def _show(args: argparse.Namespace) -> int:
    from node.cli.query import resharing_warning

    store = _store(args)
    try:
        record = store.get(args.id)
    finally:
        store.close()
    if record is None:
        print(f"liaison: error: no received record {args.id}", file=sys.stderr)
        return 2
    doc = _doc(record)
    warning = resharing_warning(record.handling_code, record.source_restrictions)
    if args.json:
        print(json.dumps(doc | {"warning": warning}, indent=2, ensure_ascii=False))
        return 0
    for key, value in doc.items():
        if isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key + ':':<21} {value}")
    if warning:
        print(warning)
    return 0


def _purge(args: argparse.Namespace) -> int:
    from datetime import UTC
    from datetime import datetime as clock

    from node.config import load_config
    from node.rpc.admin_client import AdminClient, AdminError, NodeNotAnswering

    config = load_config(args.config)
    with AdminClient(config.admin.socket, args.config) as client:
        try:
            client.list(limit=1)
        except NodeNotAnswering:
            pass
        else:
            raise AdminError(
                f"{config.node.id} is running: it deletes records past their retention every "
                f"{config.received.purge_interval_s} s and audits each deletion "
                "([received] purge_interval_s); nothing deleted here",
                "node_running",
            )
    store = _store(args)
    try:
        gone = store.purge_due(clock.now(UTC))
    finally:
        store.close()
    for r in gone:
        print(f"purged {r.id} from {r.from_node} (retained until {_when(r.retain_until)})")
    print(
        f"{len(gone)} received record(s) purged; no node was running, so each deletion is "
        "audited when the node next starts"
    )
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison received`."""
    received = group(sub, "received", "records this node fetched from peers")
    p = command(
        received, "list", "received records, oldest first (no payloads)", _list, config=True
    )
    p.add_argument("--peer", help="only records from this peer")
    p.add_argument("--case", help="only records fetched for this case reference")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(received, "show", "one received record, with its restrictions", _show, config=True)
    p.add_argument("id", help="the received record's id (rcv_...)")
    p.add_argument("--json", action="store_true", help="print JSON")
    command(
        received,
        "purge",
        "delete records past their retention now (only when no node is running)",
        _purge,
        config=True,
    )
