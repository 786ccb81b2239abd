"""What the command groups share: declaring a group and its subcommands, the audit-entry
argument, a plain table, and writing a document to a file or standard output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def group(sub: Subparsers, name: str, help_: str) -> Subparsers:
    """A top-level command whose subcommands are its actions."""
    p = sub.add_parser(name, help=help_, description=help_)
    return p.add_subparsers(dest="action", required=True, metavar="ACTION")


def command(
    parent: Subparsers,
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


ENTRY_HELP = "the entry: its index (from 0), or the 32-hex id an answer or refusal named"


def parse_entry(text: str) -> int | str:
    """An audit entry as a command names it: an index or an entry id."""
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
        return text  # an id, even if all its digits are decimal (no log has 10^31 entries)
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither an entry index (0, 1, ...) nor an entry id (32 hex digits)"
    )


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first one the header) in left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def write_out(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


def parse_moment(text: str) -> datetime:
    """A date (YYYY-MM-DD: its midnight) or an ISO 8601 time, UTC unless it says otherwise."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a date (2026-01-01) nor a time (2026-01-01T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_window(p: argparse.ArgumentParser) -> None:
    """--since, --until and --granularity, as `report` and `oversight indicators` take them."""
    p.add_argument(
        "--since", type=parse_moment, required=True, help="first day (or time) counted, UTC"
    )
    p.add_argument(
        "--until", type=parse_moment, help="day (or time) the window ends, excluded (default: now)"
    )
    p.add_argument(
        "--granularity",
        choices=("month", "window"),
        default="month",
        help="periods: each calendar month and the whole window (default), or the window only",
    )
