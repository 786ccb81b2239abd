"""``liaison data import``: load an owner's records from JSON Lines or CSV, all or nothing.

An operator fixing a file wants every mistake at once, and a half-imported file is worse
than none, so every row is checked before anything is written, and the write is one
transaction. Errors name the line (1-based; a CSV header is line 1) and the field, and say
what was expected; they do not repeat the value.

Exceptions::

    ImportFailed            rows were wrong; .errors lists them; nothing was written
     └── UnreadableFile     the file itself could not be read (missing, format, encoding)

Fields: ``category`` (required), ``handling_code`` (default H0), ``source_restrictions``
(JSON list, or ``;``-separated in CSV, of ISO 3166 alpha-2 codes) and the identifier fields
of the category. Everything except the first three, raw identifier spellings included, is
kept in the payload. Empty CSV cells are left out: CSV has no other way to say "absent".
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

from federation.vocabulary import CATEGORIES, HANDLING_CODES
from node.normalise import record_identifiers
from node.notice_hits import NoticeAlerts
from node.records import NewRecord
from node.store import RecordStore, new_ref

SHOWN_ERRORS: Final = 20
_COLUMNS: Final = frozenset({"category", "handling_code", "source_restrictions"})
_COUNTRY: Final = re.compile(r"[A-Z]{2}", re.ASCII)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int  # 1-based; 0 for the file as a whole
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}, {self.field}: {self.message}"


class ImportFailed(Exception):
    """The file had errors; nothing was imported."""

    def __init__(self, path: Path, errors: list[RowError]) -> None:
        self.path = path
        self.errors = errors
        shown = "\n".join(f"  {e}" for e in errors[:SHOWN_ERRORS])
        more = len(errors) - SHOWN_ERRORS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{path}: {len(errors)} error(s), nothing was imported:\n{shown}{tail}")


class UnreadableFile(ImportFailed):
    """The file could not be read as records at all."""

    def __init__(self, path: Path, message: str, line: int = 0, field: str = "file") -> None:
        super().__init__(path, [RowError(line, field, message)])


@dataclass(frozen=True, slots=True)
class ImportReport:
    counts: Mapping[str, int] = field(default_factory=dict)
    # Accepted notices the imported records hit (each a local alert: node/notice_hits.py).
    notice_hits: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def import_file(
    path: Path,
    store: RecordStore,
    *,
    today: date | None = None,
    alerts: NoticeAlerts | None = None,
) -> ImportReport:
    """Validate every row of ``path``, then write them all in one transaction; with
    ``alerts``, check the records written against the notices the node accepted."""
    errors: list[RowError] = []
    records: list[NewRecord] = []
    first_seen: dict[str, int] = {}  # travel document number -> line
    for line, row in _rows(path):
        if isinstance(row, RowError):
            errors.append(row)
            continue
        record, row_errors = _record(line, row, today)
        errors.extend(row_errors)
        if record is None:
            continue
        if record.category == "travel_document":
            number = record.identifiers[0].value
            if number in first_seen:
                message = f"duplicate travel document number, also on line {first_seen[number]}"
                errors.append(RowError(line, "document_number", message))
            first_seen.setdefault(number, line)
        records.append(record)
    if errors:
        raise ImportFailed(path, errors)
    store.add_records(records)
    counts: dict[str, int] = {}
    for record in records:
        counts[record.category] = counts.get(record.category, 0) + 1
    hits = alerts.imported(records) if alerts is not None else []
    return ImportReport(dict(sorted(counts.items())), len(hits))


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    suffix = path.suffix.lower()
    if suffix not in {".jsonl", ".csv"}:
        raise UnreadableFile(path, "unknown file type; expected a .jsonl or .csv file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableFile(path, "file not found") from None
    except OSError as exc:
        raise UnreadableFile(path, f"cannot be read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableFile(path, "is not valid UTF-8", line, "encoding") from None
    return _jsonl_rows(text) if suffix == ".jsonl" else _csv_rows(path, text)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("an object has the same field twice")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    # Split on "\n" only: str.splitlines would also split on U+2028, valid inside a string.
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            yield line, RowError(line, "json", f"not valid JSON: {exc.msg} at column {exc.colno}")
            continue
        except ValueError as exc:
            yield line, RowError(line, "json", str(exc))
            continue
        if not isinstance(value, dict):
            got = type(value).__name__
            yield line, RowError(line, "json", f"expected a JSON object, got {got}")
            continue
        yield line, value


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        raise UnreadableFile(path, f"CSV header cannot be parsed ({exc})", 1, "header") from None
    if "category" not in header:
        raise UnreadableFile(path, "the header has no 'category' column", 1, "header")
    if "" in header or len(set(header)) != len(header):
        raise UnreadableFile(path, "every column needs its own non-empty name", 1, "header")
    return _csv_body(path, reader, header)


def _csv_body(
    path: Path, reader: Any, header: list[str]
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader, None)
        except csv.Error as exc:
            raise UnreadableFile(path, f"CSV cannot be parsed ({exc})", start, "csv") from None
        if values is None:
            return
        line, start = start, reader.line_num + 1  # a quoted cell may span lines
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            message = f"has {len(values)} values; the header has {len(header)} columns"
            yield line, RowError(line, "csv", message)
            continue
        row: dict[str, Any] = {k: v for k, v in zip(header, values, strict=True) if v.strip()}
        if "source_restrictions" in row:
            codes = row["source_restrictions"].split(";")
            row["source_restrictions"] = [code for code in codes if code.strip()]
        yield line, row


def _record(
    line: int, row: dict[str, Any], today: date | None
) -> tuple[NewRecord | None, list[RowError]]:
    errors: list[RowError] = []

    def fail(name: str, message: str) -> None:
        errors.append(RowError(line, name, message))

    category = row.get("category")
    if not isinstance(category, str) or category not in CATEGORIES:
        fail("category", f"expected one of {', '.join(sorted(CATEGORIES))}")
        return None, errors
    handling = row.get("handling_code") or "H0"
    if not isinstance(handling, str) or handling not in HANDLING_CODES:
        fail("handling_code", f"expected one of {', '.join(sorted(HANDLING_CODES))}")
    restrictions = _restrictions(row.get("source_restrictions"), fail)

    identifiers, problems = record_identifiers(category, row, today)
    for problem in problems:
        fail(problem.field, problem.message)
    if errors:
        return None, errors
    payload = {k: v for k, v in row.items() if k not in _COLUMNS}
    record = NewRecord(new_ref(), category, handling, restrictions, identifiers, payload)
    return record, errors


def _restrictions(value: Any, fail: Callable[[str, str], None]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        fail("source_restrictions", "expected a list of ISO 3166 alpha-2 country codes")
        return ()
    if not all(isinstance(c, str) and _COUNTRY.fullmatch(c.strip().upper()) for c in value):
        fail("source_restrictions", "expected ISO 3166 alpha-2 country codes such as 'FR'")
        return ()
    return tuple(sorted({c.strip().upper() for c in value}))
