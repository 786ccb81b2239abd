"""`liaison data import`: load a file of records into the node's store, all of it or none."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.shared import Subparsers, command, group


def _data_import(args: argparse.Namespace) -> int:
    from node.config import load_config
    from node.importer import import_file
    from node.notice_hits import NoticeAlerts
    from node.notices import NoticeStore
    from node.schema import create_if_empty
    from node.store import RecordStore

    config = load_config(args.config)
    # Setting a node up: an empty database gets its schema; any other must be current.
    create_if_empty(config)
    store = RecordStore(config.store.url)
    notices = NoticeStore(config.store.url)
    try:
        report = import_file(args.file, store, alerts=NoticeAlerts(notices))
    finally:
        notices.close()
        store.close()
    by_category = ", ".join(f"{n} {c}" for c, n in sorted(report.counts.items()))
    print(f"imported {report.total} record(s) from {args.file}: {by_category or 'none'}")
    if report.notice_hits:
        print(
            f"ALERT: the records hit {report.notice_hits} active notice(s): "
            f"see `liaison notices hits --config {args.config}`"
        )
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison data` and its subcommands."""
    data = group(sub, "data", "record data tasks")
    p = command(
        data,
        "import",
        "validate a JSONL or CSV file and import it (nothing is written unless every row is valid)",
        _data_import,
        config=True,
    )
    p.add_argument("file", type=Path, help="records file (.jsonl or .csv)")
