"""`liaison query match --file identifiers.csv --out results.jsonl`: a batch of matches,
one row of the file at a time (a few rows in flight), every result appended to --out as
soon as it is known, as one JSON line: the row's key (its `id` column, or its number among
the data rows from 1), its category and identifiers, and the peer's result.

Resumable: each line is written whole and flushed, so after Ctrl-C (or a crash) --out
holds exactly the results received, and the same command asks only the (row, peer) pairs
it lacks. A last line cut short by a crash is dropped and asked again. A result already
written is never asked again, whatever it was: to ask an unavailable peer again, remove
its lines. The file is checked whole before anything is asked.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from node.cli.query_match import (
    EXIT_ALL_ANSWERED,
    EXIT_SOME_UNANSWERED,
    IDENTIFIER_FIELDS,
    PERSON_FIELDS,
    identifiers_from,
    named_peers,
    open_client,
    query_template,
    result_row,
)

if TYPE_CHECKING:
    from federation.fanout import PeerResult
    from federation.fanout_client import FanoutClient

COLUMNS = (*IDENTIFIER_FIELDS, *PERSON_FIELDS, "id", "category")
# Rows asked at once; the client's --concurrency bounds the calls in flight over them all.
ROWS_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    category: str
    identifiers: tuple[tuple[str, str], ...]

    def identifiers_doc(self) -> dict[str, str]:
        return dict(self.identifiers)


def _bad(message: str) -> Exception:
    from federation.errors import BadQuery

    return BadQuery("", message)


def read_rows(path: Path, default_category: str | None) -> list[Row]:
    """Every row of the CSV, checked: a usage error names the line and what to change."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise _bad(f"{path} is empty: its first line names the columns ({', '.join(COLUMNS)})")
        unknown = [c for c in reader.fieldnames if c not in COLUMNS]
        if unknown:
            raise _bad(f"{path}: unknown column(s) {unknown}; the columns are {list(COLUMNS)}")
        rows: list[Row] = []
        keys: set[str] = set()
        for record in reader:
            where = f"{path}, line {reader.line_num}: "
            if None in record:
                raise _bad(f"{where}more values than the header has columns")
            values = {k: (v or "").strip() for k, v in record.items()}
            if not any(values.values()):
                continue
            identifiers = identifiers_from(values, where)
            category = values.get("category") or default_category
            if not category:
                raise _bad(f"{where}no category: give --category, or a category column")
            key = values.get("id") or str(len(rows) + 1)
            if key in keys:
                raise _bad(f"{where}id {key!r} is used twice: each row needs its own")
            keys.add(key)
            rows.append(Row(key, category, tuple(identifiers)))
    if not rows:
        raise _bad(f"{path} has no rows to ask")
    return rows


def written(out: Path, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The results --out already holds (a last line cut short is removed: asked again);
    a usage error if it was written for another file."""
    if not out.exists():
        return []
    data = out.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        with out.open("r+b") as f:
            f.truncate(whole)
    by_key = {row.key: row for row in rows}
    docs = []
    for number, line in enumerate(data[:whole].splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            key, _peer, ids = str(doc["row"]), str(doc["peer"]), doc["identifiers"]
        except (ValueError, KeyError, TypeError):
            raise _bad(
                f"{out}, line {number}: not a result of liaison query match --file; "
                "choose another --out"
            ) from None
        row = by_key.get(key)
        if row is None or ids != row.identifiers_doc():
            raise _bad(
                f"{out} holds row {key} for identifiers this file does not have there: it "
                "was written for another file; choose another --out"
            )
        docs.append(doc)
    return docs


class _Results:
    """Appends each result to --out as one whole, flushed line."""

    def __init__(self, f: IO[str]) -> None:
        self._f = f
        self.written = 0
        self.unanswered = 0

    def add(self, row: Row, result: PeerResult) -> None:
        if self._f.closed:  # a result that came in while the batch was being stopped
            return
        doc = {"row": row.key, "category": row.category, "identifiers": row.identifiers_doc()}
        self._f.write(json.dumps(doc | result_row(result), ensure_ascii=False) + "\n")
        self._f.flush()
        self.written += 1
        self.unanswered += not result.outcome.answered


async def _ask_all(
    client: FanoutClient,
    args: argparse.Namespace,
    me: str,
    todo: list[tuple[Row, list[str]]],
    results: _Results,
    advance: Any,
) -> None:
    pending = iter(todo)

    async def worker() -> None:
        for row, peers in pending:  # shared: each row is taken by one worker
            query = query_template(args, me, row.category)(row.identifiers)

            def on_result(r: PeerResult, row: Row = row) -> None:
                results.add(row, r)
                advance()

            await client.match(query, peers, args.timeout, on_result)

    await asyncio.gather(*(worker() for _ in range(min(ROWS_IN_FLIGHT, len(todo)))))


async def run_batch(args: argparse.Namespace) -> int:
    from federation.fanout_client import ALL
    from node.cli.progress import progress_for

    if args.out is None:
        raise _bad("--file needs --out: the JSON lines file the results are appended to")
    given = [f for f in (*IDENTIFIER_FIELDS, *PERSON_FIELDS) if getattr(args, f)]
    if given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise _bad(f"--file takes the identifiers from the file: drop {flags}")
    if args.json or args.jsonl:
        raise _bad("--file writes JSON lines to --out: drop --json/--jsonl")
    rows = read_rows(args.file, args.category)
    before = written(args.out, rows)
    done = {(str(d["row"]), str(d["peer"])) for d in before}
    unanswered_before = sum(d["outcome"] in ("unavailable", "timed-out", "error") for d in before)
    client, me = open_client(args)
    try:
        named = named_peers(args)
        peers = client.resolve(ALL if named is None else named)
        todo = [(row, [p for p in peers if (row.key, p) not in done]) for row in rows]
        todo = [(row, missing) for row, missing in todo if missing]
        total = sum(len(missing) for _, missing in todo)
        with (
            args.out.open("a", encoding="utf-8") as f,
            progress_for(f"{len(todo)} rows, {len(peers)} peers each", total, echo=False) as bar,
        ):
            results = _Results(f)
            try:
                await _ask_all(client, args, me, todo, results, bar.advance)
            except (asyncio.CancelledError, KeyboardInterrupt):
                print(
                    f"interrupted: {results.written} new results in {args.out}; run the same "
                    "command again to ask the rest",
                    file=sys.stderr,
                )
                raise
            finally:
                f.flush()
                os.fsync(f.fileno())
    finally:
        await client.close()
    unanswered = unanswered_before + results.unanswered
    print(
        f"{results.written} results added to {args.out} ({len(done)} were there already); "
        f"{unanswered} without an answer",
        file=sys.stderr,
    )
    return EXIT_SOME_UNANSWERED if unanswered else EXIT_ALL_ANSWERED
