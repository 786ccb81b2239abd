"""`liaison report`: the compliance report of a node, from its own audit log, once the log
verifies (chain from entry 0 and every signed checkpoint): HTML (one self-contained
file), JSON or CSV, written atomically. Over a log that does not verify it writes nothing
and exits 2, naming the first bad entry or checkpoint."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from node.cli.shared import Subparsers, add_window

FORMATS = ("html", "json", "csv")


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = args.out.suffix.lstrip(".").lower()
    return suffix if suffix in FORMATS else "html"


def _report(args: argparse.Namespace) -> int:
    from node.atomic_write import write_atomically
    from node.audit.entries import AuditCorrupt, CheckpointInvalid
    from node.config import load_config
    from node.report.files import to_csv, to_json
    from node.report.html import to_html
    from node.report.source import indicators_from_log

    until: datetime = args.until or datetime.now(UTC)
    if not args.since < until:
        print(
            f"liaison: error: --since {args.since} is not before --until {until}", file=sys.stderr
        )
        return 2
    config = load_config(args.config)
    try:
        ind, verified = indicators_from_log(config, args.since, until, args.granularity)
    except (AuditCorrupt, CheckpointInvalid) as exc:
        print(f"liaison: error: BAD: {exc}. No report was written.", file=sys.stderr)
        return 2
    statement = (
        f"{verified.entries} entries of {verified.where}, the chain intact from entry 0; "
        f"{verified.checkpoints} checkpoint(s) of {verified.origin} verified with the node's "
        f"key (latest: tree size {verified.latest_checkpoint})"
    )
    facts = {
        "entries": verified.entries,
        "checkpoints": verified.checkpoints,
        "latest_checkpoint": verified.latest_checkpoint,
        "origin": verified.origin,
        "statement": statement,
    }
    kind = _format(args)
    text = {"html": to_html, "json": to_json}.get(kind, lambda i, _v: to_csv(i))(ind, facts)
    write_atomically(args.out, text.encode())
    print(f"{statement}\n{kind} report of {ind.node} written to {args.out}")
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison report`."""
    help_ = (
        "write the compliance report of a node (the oversight indicators per peer and "
        "month, small counts suppressed) from its own audit log, once the log verifies"
    )
    p = sub.add_parser("report", help=help_, description=help_)
    p.set_defaults(run=_report)
    p.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    add_window(p)
    p.add_argument(
        "--format", choices=FORMATS, help="html, json or csv (default: from --out, else html)"
    )
    p.add_argument("--out", type=Path, required=True, help="the file to write")
