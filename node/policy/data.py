"""The node's policy data (agreements with peers, JITs, restrictions, settings), read from one
JSON file and validated against ``policies/schema/data.schema.json``.

Errors name the file, the line and column, the JSON path of the bad value and what was
expected: an operator editing agreements by hand must learn exactly where the file went
wrong. Every problem is reported at once (sorted by line), so one edit fixes the file. A
broken file must never become a silent deny-all or allow, so a misspelt key, an unknown
category or a country code that does not exist is an error, not an ignored rule.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import jsonschema.validators
from jsonschema import Draft202012Validator, ValidationError

# The schema ships beside the code (like the policy library, node.enrol.DEFAULT_POLICY_DIR):
# it is the contract this code enforces, not an operator setting.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "policies" / "schema" / "data.schema.json"

# Problems listed in one message; the rest are counted (all are on PolicyDataError.problems).
MAX_REPORTED = 20

# Enums longer than this are described (schema "description") rather than listed in full.
_LISTED_ENUM = 12

JsonPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the data file, where it starts and what was expected."""

    path: JsonPath
    line: int
    column: int
    message: str

    def render(self, file: Path) -> str:
        return f"{file}:{self.line}:{self.column}: {render_path(self.path)}: {self.message}"


class PolicyDataError(ValueError):
    """The policy data file cannot be used; the message is meant for the operator."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


def render_path(path: JsonPath) -> str:
    """``agreements.FR-DGPN.categories[1]``; keys that are not plain words are quoted."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out) or "(top level)"


# --- where each value starts -----------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<ws>[ \t\r\n]+)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<punct>[{}\[\]:,])
    | (?P<scalar>[^ \t\r\n{}\[\]:,"]+)
    """,
    re.VERBOSE,
)


@dataclass
class Positions:
    """Line and column (1-based, as :class:`json.JSONDecodeError` counts) of each value and
    each object key in a JSON text, by JSON path; and every key repeated within one object."""

    values: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[tuple[JsonPath, tuple[int, int]]] = field(default_factory=list)

    def of_value(self, path: JsonPath) -> tuple[int, int]:
        """Where the value at ``path`` starts (or its nearest located ancestor)."""
        for end in range(len(path), -1, -1):
            if (found := self.values.get(path[:end])) is not None:
                return found
        return (1, 1)

    def of_key(self, path: JsonPath) -> tuple[int, int]:
        """Where the key naming ``path`` is written (the value's start if not a member)."""
        return self.keys.get(path) or self.of_value(path)


@dataclass
class _Frame:
    path: JsonPath
    is_object: bool
    index: int = 0
    key: str = ""
    seen: set[str] = field(default_factory=set)


def locate(text: str) -> Positions:
    """Map JSON paths to positions in ``text``, which must already parse as JSON.

    The standard decoder keeps no positions, so this is a second, iterative pass over the
    tokens (no recursion limit), tracking the path of every value as it goes. Repeated keys
    resolve as :func:`json.loads` does: the last one wins.
    """
    positions = Positions()
    stack: list[_Frame] = []
    expect_key = False
    line, line_start = 1, 0
    for match in _TOKEN.finditer(text):
        kind, token, start = match.lastgroup, match.group(), match.start()
        if kind == "ws":
            if newlines := token.count("\n"):
                line += newlines
                line_start = start + token.rindex("\n") + 1
            continue
        where = (line, start - line_start + 1)
        if kind == "punct" and token in ":,":
            expect_key = token == "," and bool(stack) and stack[-1].is_object
            continue
        if kind == "punct" and token in "}]":
            stack.pop()
            expect_key = False
            continue
        if expect_key:  # a member name: only strings get here in valid JSON
            frame = stack[-1]
            frame.key = json.loads(token)
            member = (*frame.path, frame.key)
            if frame.key in frame.seen:
                positions.duplicates.append((member, where))
            frame.seen.add(frame.key)
            positions.keys[member] = where
            expect_key = False
            continue
        if not stack:
            path: JsonPath = ()
        elif stack[-1].is_object:
            path = (*stack[-1].path, stack[-1].key)
        else:
            path = (*stack[-1].path, stack[-1].index)
            stack[-1].index += 1
        positions.values[path] = where
        if token in ("{", "["):
            stack.append(_Frame(path, is_object=token == "{"))
            expect_key = token == "{"
    return positions


# --- the schema ------------------------------------------------------------------------------


def _python_pattern(pattern: str) -> re.Pattern[str]:
    """JSON Schema patterns are ECMA-262, where ``$`` is the end of the string; in Python it
    also matches before a final newline, which would let ``"FR-PN\\n"`` pass as a node id."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


_compiled_pattern = functools.lru_cache(maxsize=64)(_python_pattern)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_integer(checker: Any, instance: object) -> bool:
    """JSON Schema counts ``5.0`` as an integer; the node would then slice with a float."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


@functools.cache
def load_schema() -> dict[str, Any]:
    """The shipped schema, checked once per process (a bad schema is a bug, not bad data)."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@functools.cache
def _validator() -> Any:
    return _Validator(load_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


# --- turning schema errors into problems -----------------------------------------------------

_JSON_TYPES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the number {json.dumps(value)}"


# Codes people write that ISO 3166 spells otherwise (the EU's own usage, mostly).
_ALIASES = {"UK": "GB", "EL": "GR"}


def _near_miss(word: str, choices: Sequence[object]) -> str | None:
    """The one choice ``word`` was most likely meant to be, if any."""
    options = [c for c in choices if isinstance(c, str)]
    if _ALIASES.get(word) in options:
        return _ALIASES[word]
    folded = [c for c in options if c.casefold() == word.casefold()]
    close = folded or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(word: object, choices: Sequence[object]) -> str:
    """`` (did you mean 'x'?)`` when one choice is a near miss of ``word``."""
    guess = _near_miss(word, choices) if isinstance(word, str) else None
    return f" (did you mean {guess!r}?)" if guess else ""


def _not_allowed(value: object, schema: Mapping[str, Any]) -> str:
    """What a value that failed an enum or pattern should have been."""
    description = schema.get("description")
    if "enum" in schema:
        allowed = list(schema["enum"])
        if len(allowed) > _LISTED_ENUM and description:
            return f"{value!r} is not {description}{_suggest(value, allowed)}"
        listed = ", ".join(repr(v) for v in allowed)
        return f"{value!r} is not one of [{listed}]{_suggest(value, allowed)}"
    pattern = schema.get("pattern")
    hint = ""
    if isinstance(value, str) and isinstance(pattern, str):
        fixed = value.strip().upper()
        if fixed != value and _compiled_pattern(pattern).search(fixed):
            hint = f" (did you mean {fixed!r}?)"
    if description:
        return f"{value!r} is not {description}{hint}"
    return f"{value!r} does not match {pattern!r}{hint}"


def _problems(error: ValidationError, at: Positions) -> Iterator[Problem]:
    path = cast(JsonPath, tuple(error.absolute_path))
    kind = error.validator
    instance: Any = error.instance
    expected: Any = error.validator_value
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}

    def problem(where: tuple[int, int], message: str, of: JsonPath = path) -> Problem:
        return Problem(of, where[0], where[1], message)

    if "propertyNames" in error.absolute_schema_path:
        # The key itself is wrong: point at it, not at the object holding it.
        member = (*path, instance)
        yield problem(at.of_key(member), f"key {_not_allowed(instance, schema)}", member)
    elif kind == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        for key in instance:
            if key in known:
                continue
            member = (*path, key)
            hint = _suggest(key, known) or (
                f"; expected one of: {', '.join(known)}" if known else ""
            )
            yield problem(at.of_key(member), f"unknown key {key!r}{hint}", member)
    elif kind == "required":
        # A key that is only misspelt is reported once, as the unknown key it became.
        known = list(schema.get("properties", {}))
        meant = {_near_miss(key, known) for key in instance if key not in known}
        missing = [key for key in expected if key not in instance and key not in meant]
        if not missing:
            return
        names = ", ".join(repr(key) for key in missing)
        plural = "s" if len(missing) > 1 else ""
        yield problem(at.of_value(path), f"missing required key{plural} {names}")
    elif kind == "uniqueItems":
        seen: list[object] = []
        for index, item in enumerate(instance):
            if item in seen:
                member = (*path, index)
                yield problem(at.of_value(member), f"{item!r} is listed twice", member)
            else:
                seen.append(item)
    elif kind == "type":
        wanted = [expected] if isinstance(expected, str) else list(expected)
        names = " or ".join(_JSON_TYPES.get(t, t) for t in wanted)
        yield problem(at.of_value(path), f"expected {names}, got {_describe(instance)}")
    elif kind in ("enum", "pattern"):
        yield problem(at.of_value(path), _not_allowed(instance, schema))
    elif kind == "format":
        yield problem(at.of_value(path), f"{instance!r} is not a real calendar date")
    elif kind == "minItems":
        items = "item" if expected == 1 else "items"
        yield problem(at.of_value(path), f"needs at least {expected} {items}, has {len(instance)}")
    elif kind == "minimum":
        yield problem(at.of_value(path), f"must be at least {expected}, got {instance}")
    elif kind == "minLength":
        yield problem(at.of_value(path), "must not be empty")
    elif kind == "maxLength":
        yield problem(at.of_value(path), f"is longer than {expected} characters")
    else:  # pragma: no cover - every keyword the schema uses is handled above
        yield problem(at.of_value(path), error.message)


def _window_problems(doc: Mapping[str, Any], at: Positions) -> Iterator[Problem]:
    """``valid_from <= valid_until``: a window that closes before it opens is a typo."""
    for section in ("agreements", "jits"):
        entries = doc.get(section)
        if not isinstance(entries, Mapping):
            continue
        for name, entry in entries.items():
            if not isinstance(entry, Mapping):
                continue
            start, end = entry.get("valid_from"), entry.get("valid_until")
            if not isinstance(start, str) or not isinstance(end, str):
                continue  # reported by the schema
            try:
                opens, closes = datetime.date.fromisoformat(start), datetime.date.fromisoformat(end)
            except ValueError:
                continue  # reported by the schema
            if closes < opens:
                path: JsonPath = (section, name, "valid_until")
                line, column = at.of_value(path)
                yield Problem(path, line, column, f"{end!r} is before valid_from {start!r}")


def check_policy_data(doc: object, text: str) -> list[Problem]:
    """Every problem in ``doc`` (parsed from ``text``), sorted by where it is in the file."""
    at = locate(text)
    problems = [
        Problem(
            path,
            line,
            column,
            f"key {path[-1]!r} appears twice in one object; "
            "keep one (JSON would silently drop the other)",
        )
        for path, (line, column) in at.duplicates
    ]
    errors = list(_validator().iter_errors(doc))
    # A date like 2026/01/01 fails both its pattern and its format: say it once.
    shaped = {tuple(e.absolute_path) for e in errors if e.validator == "pattern"}
    for error in errors:
        if error.validator == "format" and tuple(error.absolute_path) in shaped:
            continue
        problems.extend(_problems(error, at))
    if isinstance(doc, Mapping):
        problems.extend(_window_problems(doc, at))
    # dict.fromkeys: `required` fails once per missing key, but is reported once per object.
    unique = dict.fromkeys(problems)
    return sorted(unique, key=lambda p: (p.line, p.column, render_path(p.path), p.message))


def _report(path: Path, problems: Sequence[Problem]) -> str:
    lines = [p.render(path) for p in problems[:MAX_REPORTED]]
    if len(problems) > MAX_REPORTED:
        lines.append(f"... and {len(problems) - MAX_REPORTED} more")
    if len(problems) == 1:
        return lines[0]
    return "\n".join([f"{path}: {len(problems)} problems in the policy data:", *lines])


def load_policy_data(path: Path) -> dict[str, Any]:
    """Read and validate the policy data file; raise :class:`PolicyDataError` naming every
    problem (file:line:column: json.path: what was expected)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyDataError(f"policy data file {path} not found") from None
    except UnicodeDecodeError as exc:
        raise PolicyDataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        # A repeated key is reported (with its line) by check_policy_data, through locate().
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyDataError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    except RecursionError:
        raise PolicyDataError(f"{path}: nested too deeply to be policy data") from None
    if problems := check_policy_data(doc, text):
        raise PolicyDataError(_report(path, problems), problems)
    if not isinstance(doc, dict):  # pragma: no cover - the schema's top-level "type"
        raise PolicyDataError(f"{path}: must hold a JSON object")
    return doc
