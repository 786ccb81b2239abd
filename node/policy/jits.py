"""Editing the joint investigation team (JIT) grants in a node's policy data file while the
node runs (`liaison policy jit add|revoke|list`).

A running node reloads the file as soon as it changes (node/policy/reload.py), so an edit
must never leave a half-written or invalid file for it to read, and two operators editing at
once must not lose one's change. Hence: an exclusive lock beside the file around the whole
read-modify-write, the WHOLE new document checked with the node's own validator
(node/policy/data.py) before anything is written, and an atomic replace
(node/atomic_write.py). The rest of the file is kept byte for byte: the new text is spliced
into the old one, and only if the splice does not parse back to exactly the intended document
is the file re-serialised (in the indentation the file already uses).

A grant is matched by its case reference, not its id (policies/liaison/base/legal_basis.rego):
two grants for one case are allowed when one renews the other, but not when their windows
overlap, where which members may fetch on a given day would depend on both at once.

Each change is also appended to a journal beside the file (``<data file>.changes.jsonl``):
who, when, the grant, the operator's reason and the policy revision before and after. The
policy data itself has no place for a reason (its schema is closed), and the revision alone
says *that* the policy changed, not why.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import getpass
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.atomic_write import write_atomically
from node.policy.data import (
    JsonPath,
    check_policy_data,
    load_policy_data,
    locate,
    render_path,
)
from node.policy.revision import policy_revision

IN_FORCE, NOT_YET, ENDED = "in force", "not yet", "ended"


class JitEditError(ValueError):
    """A JIT edit refused; nothing was written. The message is meant for the operator."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One JIT grant as the policy data holds it."""

    jit_id: str
    members: tuple[str, ...]
    case_reference: str
    valid_from: str
    valid_until: str

    def status(self, today: datetime.date) -> str:
        """As the policy judges the window: both days included, by the UTC date."""
        day = today.isoformat()
        if day < self.valid_from:
            return NOT_YET
        return ENDED if day > self.valid_until else IN_FORCE

    def as_json(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "case_reference": self.case_reference,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """What an edit did, for the operator's output."""

    action: str  # "added", "ended" (window closed yesterday) or "removed"
    grant: Grant  # as it is now ("removed": as it was)
    revision_before: str
    revision_after: str


def utc_today() -> datetime.date:
    """The day the policy compares windows with (its input's ``now`` is UTC)."""
    return datetime.datetime.now(datetime.UTC).date()


def grants(doc: Mapping[str, Any]) -> list[Grant]:
    """The grants of a validated document, in file order."""
    return [
        Grant(
            jit_id,
            tuple(g["members"]),
            g["case_reference"],
            g["valid_from"],
            g["valid_until"],
        )
        for jit_id, g in (doc.get("jits") or {}).items()
    ]


def read_grants(data_path: Path) -> list[Grant]:
    return grants(load_policy_data(data_path))


# --- the edits ------------------------------------------------------------------------------


def add_grant(
    data_path: Path,
    policy_dir: Path,
    grant: Grant,
) -> Change:
    """Add ``grant``; refuse (JitEditError, file untouched) whatever the node would refuse,
    an id already in use, or a grant overlapping another for the same case."""
    if not grant.members:
        raise JitEditError(
            "a JIT needs its member countries: give --member for each (at least two)"
        )
    with _locked(data_path):
        text, doc = _read(data_path)
        jits: dict[str, Any] = doc.get("jits") or {}
        if grant.jit_id in jits:
            old = next(g for g in grants(doc) if g.jit_id == grant.jit_id)
            hint = (
                "use another id (a revoked grant stays as the record of what it allowed)"
                if old.status(utc_today()) == ENDED
                else "`liaison policy jit revoke` it first, or use another id"
            )
            raise JitEditError(
                f"JIT {grant.jit_id} already exists ({old.valid_from} to {old.valid_until}): "
                + hint
            )
        for other in grants(doc):
            if other.case_reference == grant.case_reference and _overlap(other, grant):
                raise JitEditError(
                    f"JIT {other.jit_id} already grants case {grant.case_reference!r} from "
                    f"{other.valid_from} to {other.valid_until}, overlapping "
                    f"{grant.valid_from} to {grant.valid_until}: a case may have several "
                    "grants only one after another (a renewal); revoke the other first"
                )
        new_doc = dict(doc)
        if "jits" in doc:
            new_doc["jits"] = {**jits, grant.jit_id: grant.as_json()}
            new_text = _insert_member(text, ("jits",), grant.jit_id, grant.as_json())
        else:
            new_doc["jits"] = {grant.jit_id: grant.as_json()}
            new_text = _insert_member(text, (), "jits", new_doc["jits"])
        return _commit(data_path, policy_dir, text, doc, new_text, new_doc, "added", grant, "")


def revoke_grant(
    data_path: Path,
    policy_dir: Path,
    jit_id: str,
    reason: str,
    *,
    today: datetime.date | None = None,
) -> Change:
    """End grant ``jit_id`` now: its window is closed at yesterday (windows are whole days,
    both included), so it no longer counts from today and stays in the data as the record of
    what it allowed. A grant not begun before today cannot be closed that way (a window
    cannot end before it opens) and is removed; the journal keeps it."""
    if not reason.strip():
        raise JitEditError("give --reason: why the grant ends (it goes into the journal)")
    today = today or utc_today()
    with _locked(data_path):
        text, doc = _read(data_path)
        jits: dict[str, Any] = doc.get("jits") or {}
        if jit_id not in jits:
            known = ", ".join(jits) or "none"
            raise JitEditError(f"no JIT {jit_id!r} in {data_path} (JITs there: {known})")
        grant = next(g for g in grants(doc) if g.jit_id == jit_id)
        if grant.status(today) == ENDED:
            raise JitEditError(
                f"JIT {jit_id} already ended on {grant.valid_until}; nothing to revoke"
            )
        yesterday = (today - datetime.timedelta(days=1)).isoformat()
        new_doc = dict(doc)
        if grant.valid_from <= yesterday:
            ended = Grant(jit_id, grant.members, grant.case_reference, grant.valid_from, yesterday)
            new_doc["jits"] = {**jits, jit_id: ended.as_json()}
            new_text = _replace_value(text, ("jits", jit_id, "valid_until"), yesterday)
            return _commit(
                data_path, policy_dir, text, doc, new_text, new_doc, "ended", ended, reason
            )
        new_doc["jits"] = {k: v for k, v in jits.items() if k != jit_id}
        new_text = _remove_member(text, ("jits",), jit_id)
        return _commit(
            data_path, policy_dir, text, doc, new_text, new_doc, "removed", grant, reason
        )


def _overlap(a: Grant, b: Grant) -> bool:
    return a.valid_from <= b.valid_until and b.valid_from <= a.valid_until


@contextlib.contextmanager
def _locked(data_path: Path) -> Iterator[None]:
    """An exclusive lock on ``.<data file>.lock`` beside the data file, held for the whole
    read-modify-write (the data file itself is replaced by rename, so it cannot hold one)."""
    lock = data_path.with_name(f".{data_path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read(data_path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and document; a file the node itself would refuse is not edited."""
    doc = load_policy_data(data_path)  # PolicyDataError names every problem
    return data_path.read_text(encoding="utf-8"), doc


def _commit(
    data_path: Path,
    policy_dir: Path,
    text: str,
    doc: dict[str, Any],
    new_text: str,
    new_doc: dict[str, Any],
    action: str,
    grant: Grant,
    reason: str,
) -> Change:
    """Check the whole new document as the node would, write it atomically, journal it."""
    if _ordered(_parse(new_text)) != _ordered(new_doc):
        new_text = _serialise(text, new_doc)  # the splice went wrong: re-serialise instead
    if problems := check_policy_data(new_doc, new_text):
        said = "; ".join(f"{render_path(p.path)}: {p.message}" for p in problems)
        raise JitEditError(f"the policy data would be invalid, nothing written: {said}")
    before, after = policy_revision(policy_dir, doc), policy_revision(policy_dir, new_doc)
    mode = stat.S_IMODE(data_path.stat().st_mode)
    write_atomically(data_path, new_text.encode("utf-8"), mode=mode)
    _journal(data_path, action, grant, reason, before, after)
    return Change(action, grant, before, after)


def journal_path(data_path: Path) -> Path:
    return data_path.with_name(f"{data_path.name}.changes.jsonl")


def _journal(
    data_path: Path, action: str, grant: Grant, reason: str, before: str, after: str
) -> None:
    entry = {
        "at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "by": getpass.getuser(),
        "action": f"jit {action}",
        "jit_id": grant.jit_id,
        "grant": grant.as_json(),
        "reason": reason,
        "revision_before": before,
        "revision_after": after,
    }
    line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(journal_path(data_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- editing the text in place --------------------------------------------------------------


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def _ordered(value: Any) -> str:
    """Order-sensitive spelling: equal only if the keys are in the same order too."""
    return json.dumps(value, ensure_ascii=False)


def _span(text: str, path: JsonPath) -> tuple[int, int]:
    """Start and end offsets of the value at ``path`` in ``text``."""
    line, column = locate(text).values[path]
    start = _line_starts(text)[line - 1] + column - 1
    _, end = json.JSONDecoder().raw_decode(text, start)
    return start, end


def _line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer("\n", text)]


def _indentation(text: str, offset: int) -> str | None:
    """The whitespace before ``offset`` on its line, or None if anything else precedes it
    there (the file is written compactly)."""
    start = text.rfind("\n", 0, offset) + 1
    lead = text[start:offset]
    return lead if not lead.strip() else None


def _unit(text: str) -> str:
    """One level of the file's indentation (the first indented line's whitespace)."""
    found = re.search(r"\n([ \t]+)\S", text)
    return found.group(1) if found else "  "


def _render(value: Any, indent: str, unit: str | None, inline_arrays: bool) -> str:
    """``value`` as the file writes values: an object one key a line, arrays inline if the
    file's are; everything on one line if ``unit`` is None (a compact file)."""
    if unit is not None and isinstance(value, dict) and value:
        inner = indent + unit
        members = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_render(v, inner, unit, inline_arrays)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(members) + "\n" + indent + "}"
    if unit is not None and isinstance(value, list) and value and not inline_arrays:
        inner = indent + unit
        items = [inner + _render(v, inner, unit, inline_arrays) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def _value_at(doc: Any, path: JsonPath) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _insert_member(text: str, path: JsonPath, key: str, value: Any) -> str:
    """``text`` with ``key: value`` appended to the object at ``path``."""
    doc = _parse(text)
    obj = _value_at(doc, path)
    start, end = _span(text, path)
    inline_arrays = re.search(r"\[[ \t]*\n", text) is None
    if obj:
        last = (*path, list(obj)[-1])
        key_line, key_column = locate(text).keys[last]
        key_at = _line_starts(text)[key_line - 1] + key_column - 1
        indent = _indentation(text, key_at)
        unit = None if indent is None else _unit(text)
        rendered = _render(value, indent or "", unit, inline_arrays)
        member = f"{json.dumps(key, ensure_ascii=False)}: {rendered}"
        _, value_end = _span(text, last)
        glue = ", " if indent is None else ",\n" + indent
        return text[:value_end] + glue + member + text[value_end:]
    if "\n" not in text.strip():
        member = f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}"
        return text[:start] + "{" + member + "}" + text[end:]
    line_start = text.rfind("\n", 0, start) + 1
    outer = re.match(r"[ \t]*", text[line_start:]).group()  # type: ignore[union-attr]
    unit = _unit(text)
    inner = outer + unit
    rendered = _render(value, inner, unit, inline_arrays)
    body = f"{{\n{inner}{json.dumps(key, ensure_ascii=False)}: {rendered}\n{outer}}}"
    return text[:start] + body + text[end:]


def _remove_member(text: str, path: JsonPath, key: str) -> str:
    """``text`` without member ``key`` of the object at ``path`` (and its separator)."""
    keys = list(_value_at(_parse(text), path))
    index = keys.index(key)
    at = locate(text)
    starts = _line_starts(text)

    def key_offset(name: str) -> int:
        line, column = at.keys[(*path, name)]
        return starts[line - 1] + column - 1

    _, value_end = _span(text, (*path, key))
    if index > 0:
        _, previous_end = _span(text, (*path, keys[index - 1]))
        return text[:previous_end] + text[value_end:]
    if len(keys) > 1:
        return text[: key_offset(key)] + text[key_offset(keys[1]) :]
    start, end = _span(text, path)
    return text[:start] + "{}" + text[end:]


def _replace_value(text: str, path: JsonPath, value: Any) -> str:
    start, end = _span(text, path)
    return text[:start] + json.dumps(value, ensure_ascii=False) + text[end:]


def _serialise(text: str, doc: Mapping[str, Any]) -> str:
    """The whole document in the file's own indentation (the fallback of a failed splice)."""
    compact = "\n" not in text.strip()
    out = json.dumps(doc, ensure_ascii=False, indent=None if compact else _unit(text))
    return out + ("\n" if text.endswith("\n") else "")
