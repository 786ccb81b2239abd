"""`liaison db upgrade|current|history|backup|restore`: the node's database schema
(node/schema.py, Alembic revisions in node/migrations) and its backups (node/backup.py).

`upgrade` is the one command that changes a schema; `liaison serve` refuses a database that
is not at this code's revision and names this command. Back up first (`db backup`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.shared import Subparsers, command, group


def _upgrade(args: argparse.Namespace) -> int:
    from node.config import load_config
    from node.schema import node_databases, upgrade

    config = load_config(args.config)
    for url in node_databases(config):
        for line in upgrade(url, args.revision):
            print(line)
    return 0


def _current(args: argparse.Namespace) -> int:
    from node.config import load_config
    from node.schema import current, describe, head, node_databases

    config = load_config(args.config)
    states = [current(url) for url in node_databases(config)]
    for state in states:
        print(describe(state))
    return 0 if all(s.revision == head() for s in states) else 1


def _history(args: argparse.Namespace) -> int:
    from node.schema import head, history

    for h in history():
        mark = " (head)" if h.revision == head() else ""
        print(f"{h.down_revision or '<base>'} -> {h.revision}{mark}: {h.title}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from node.backup import back_up
    from node.config import load_config

    for line in back_up(load_config(args.config), args.out):
        print(line)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from node.backup import restore

    for line in restore(args.source, args.into):
        print(line)
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison db` and its subcommands."""
    db = group(sub, "db", "the node's database: schema revisions, backup and restore")
    p = command(
        db,
        "upgrade",
        "bring the node's database(s) to this code's schema revision (back up first); "
        "a database made before migrations is recognised and recorded, never recreated",
        _upgrade,
        config=True,
    )
    p.add_argument(
        "--revision", default="head", help="the revision to reach (default: head, the newest)"
    )
    command(
        db,
        "current",
        "print each database's schema revision (exit 1 unless all are at this code's head)",
        _current,
        config=True,
    )
    command(db, "history", "list the schema revisions this code knows, newest first", _history)
    p = command(
        db,
        "backup",
        "write one archive of the node: its SQLite database(s) (an online, consistent copy), "
        "its file audit log, keys, certificates, directory and config; safe while it runs",
        _backup,
        config=True,
    )
    p.add_argument("--out", type=Path, required=True, help="the archive to write (.tar)")
    p = command(
        db,
        "restore",
        "unpack a `db backup` archive into an empty folder (every file checked against the "
        "archive's manifest); then start the node",
        _restore,
    )
    p.add_argument(
        "--from", dest="source", type=Path, required=True, help="the archive `db backup` wrote"
    )
    p.add_argument("--into", type=Path, required=True, help="the node's folder (absent or empty)")
