"""The policy data schema: what it accepts, what it refuses, and where it says the problem is.

Every refusal must name the file, the JSON path, the line and column where the bad value
starts, and what was expected; all problems come at once, sorted by line.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from federation.vocabulary import CATEGORIES, PURPOSES, LegalBasis
from node.policy.data import (
    MAX_REPORTED,
    SCHEMA_PATH,
    JsonPath,
    PolicyDataError,
    check_policy_data,
    load_policy_data,
    load_schema,
    locate,
    render_path,
)

REPO = Path(__file__).resolve().parents[2]

VALID: dict[str, Any] = {
    "agreements": {
        "FR-DGPN": {
            "categories": ["travel_document", "vehicle"],
            "purposes": ["criminal_investigation", "border_control"],
            "methods": ["Match", "Fetch"],
            "legal_bases": ["none", "mlat"],
            "valid_from": "2025-01-01",
            "valid_until": "2027-12-31",
            "max_results": 5,
        }
    },
    "jits": {
        "JIT-2026-017": {
            "members": ["DE", "FR"],
            "case_reference": "JIT-2026-017",
            "valid_from": "2026-01-01",
            "valid_until": "2026-12-31",
        }
    },
    "restrictions": {"blocked_countries": ["RU"], "approval_categories": ["wanted_person"]},
    "settings": {"max_match_results": 10, "retention_days": 90},
}


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "agreements.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _problems(doc: object) -> list[tuple[str, str]]:
    text = json.dumps(doc, indent=2)
    return [(render_path(p.path), p.message) for p in check_policy_data(json.loads(text), text)]


def _refusal(tmp_path: Path, text: str) -> PolicyDataError:
    path = tmp_path / "agreements.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    return info.value


def _mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    change(doc)
    return doc


def _agreement(doc: dict[str, Any]) -> dict[str, Any]:
    agreement: dict[str, Any] = doc["agreements"]["FR-DGPN"]
    return agreement


# --- the schema itself ---------------------------------------------------------------------


def test_the_schema_is_valid_json_schema_2020_12() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert SCHEMA_PATH == REPO / "policies" / "schema" / "data.schema.json"


def _enum(name: str) -> list[str]:
    values: list[str] = load_schema()["$defs"][name]["enum"]
    assert len(values) == len(set(values)), f"{name}: repeated values"
    return values


def test_the_schema_enums_are_the_federation_vocabulary() -> None:
    """The schema file is static; this keeps it in step with federation/vocabulary.py."""
    assert set(_enum("category")) == CATEGORIES
    assert set(_enum("purpose")) == PURPOSES
    assert set(_enum("legal_basis")) == {basis.value for basis in LegalBasis}
    assert set(_enum("method")) == {"Match", "Fetch", "PublishNotice"}


def test_the_country_codes_are_the_249_iso_3166_alpha_2_codes() -> None:
    codes = _enum("country")
    assert len(codes) == 249
    assert codes == sorted(codes)
    assert all(re.fullmatch("[A-Z]{2}", code) for code in codes)
    assert {"DE", "FR", "NL", "GB", "GR", "US", "SS", "XK"} - set(codes) == {"XK"}
    # Reserved or user-assigned, not countries: a typo, not a silent never-matching rule.
    assert not {"UK", "EL", "EU", "XX", "ZZ", "AA"} & set(codes)


def test_every_object_in_the_schema_is_closed() -> None:
    def objects(node: object) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    found = list(objects(load_schema()))
    assert len(found) >= 6
    for node in found:
        closed = node.get("additionalProperties")
        assert closed is False or (isinstance(closed, dict) and "propertyNames" in node), node


def test_the_contract_example_is_valid() -> None:
    """policies/CONTRACT.md's Data section is what the schema accepts."""
    contract = (REPO / "policies" / "CONTRACT.md").read_text()
    section = contract.split("## Data", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert block, "no JSON example in CONTRACT.md's Data section"
    text = block.group(1)
    assert check_policy_data(json.loads(text), text) == []


def test_a_complete_valid_file_loads_as_written(tmp_path: Path) -> None:
    assert load_policy_data(_write(tmp_path, VALID)) == VALID


@pytest.mark.parametrize("section", ["agreements", "jits", "restrictions", "settings"])
def test_every_section_is_optional(tmp_path: Path, section: str) -> None:
    doc = {section: VALID[section]}
    assert load_policy_data(_write(tmp_path, doc)) == doc


def test_optional_fields_may_be_left_out() -> None:
    def trim(doc: dict[str, Any]) -> None:
        del _agreement(doc)["max_results"]
        doc["restrictions"] = {}
        doc["settings"] = {}

    assert _problems(_mutated(trim)) == []


def test_a_one_day_window_is_valid() -> None:
    def one_day(doc: dict[str, Any]) -> None:
        _agreement(doc)["valid_from"] = _agreement(doc)["valid_until"] = "2026-02-28"

    assert _problems(_mutated(one_day)) == []


# --- each kind of refusal ------------------------------------------------------------------


def _set(path: JsonPath, value: object) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


CATEGORY_LIST = "['firearm', 'missing_person', 'travel_document', 'vehicle', 'wanted_person']"
COUNTRY = "is not an ISO 3166-1 alpha-2 country code (upper case, e.g. DE)"
A = ("agreements", "FR-DGPN")
J = ("jits", "JIT-2026-017")


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            _set((*A, "categories"), ["vehicle", "travle_document"]),
            "agreements.FR-DGPN.categories[1]",
            f"'travle_document' is not one of {CATEGORY_LIST} (did you mean 'travel_document'?)",
        ),
        (
            _set((*A, "categories"), ["Vehicle"]),
            "agreements.FR-DGPN.categories[0]",
            f"'Vehicle' is not one of {CATEGORY_LIST} (did you mean 'vehicle'?)",
        ),
        (
            _set((*A, "categories"), ["passport"]),
            "agreements.FR-DGPN.categories[0]",
            f"'passport' is not one of {CATEGORY_LIST}",
        ),
        (
            _set((*A, "purposes"), ["criminal_investigations"]),
            "agreements.FR-DGPN.purposes[0]",
            "(did you mean 'criminal_investigation'?)",
        ),
        (
            _set((*A, "methods"), ["match"]),
            "agreements.FR-DGPN.methods[0]",
            "'match' is not one of ['Fetch', 'Match', 'PublishNotice'] (did you mean 'Match'?)",
        ),
        (
            _set((*A, "legal_bases"), ["MLAT"]),
            "agreements.FR-DGPN.legal_bases[0]",
            "'MLAT' is not one of ['bilateral_agreement', 'jit', 'mlat', 'none', 'treaty'] "
            "(did you mean 'mlat'?)",
        ),
        (
            _set((*A, "categories"), []),
            "agreements.FR-DGPN.categories",
            "needs at least 1 item, has 0",
        ),
        (
            _set((*A, "categories"), ["vehicle", "firearm", "vehicle"]),
            "agreements.FR-DGPN.categories[2]",
            "'vehicle' is listed twice",
        ),
        (
            _set((*A, "categories"), "vehicle"),
            "agreements.FR-DGPN.categories",
            "expected an array, got the string 'vehicle'",
        ),
        (
            _set((*A, "valid_from"), "2026/01/01"),
            "agreements.FR-DGPN.valid_from",
            "'2026/01/01' is not an ISO date YYYY-MM-DD",
        ),
        (
            _set((*A, "valid_from"), "2026-1-1"),
            "agreements.FR-DGPN.valid_from",
            "'2026-1-1' is not an ISO date YYYY-MM-DD",
        ),
        (
            _set((*A, "valid_from"), "2026-01-01T00:00:00Z"),
            "agreements.FR-DGPN.valid_from",
            "'2026-01-01T00:00:00Z' is not an ISO date YYYY-MM-DD",
        ),
        (
            _set((*A, "valid_until"), "2027-02-29"),
            "agreements.FR-DGPN.valid_until",
            "'2027-02-29' is not a real calendar date",
        ),
        (
            _set((*A, "valid_until"), 20271231),
            "agreements.FR-DGPN.valid_until",
            "expected a string, got the number 20271231",
        ),
        (
            _set((*A, "valid_until"), "2024-12-31"),
            "agreements.FR-DGPN.valid_until",
            "'2024-12-31' is before valid_from '2025-01-01'",
        ),
        (
            _set((*A, "max_results"), 0),
            "agreements.FR-DGPN.max_results",
            "must be at least 1, got 0",
        ),
        (
            _set((*A, "max_results"), 5.0),
            "agreements.FR-DGPN.max_results",
            "expected an integer, got the number 5.0",
        ),
        (
            _set((*A, "max_results"), True),
            "agreements.FR-DGPN.max_results",
            "expected an integer, got true",
        ),
        (
            _set((*A, "max_results"), "5"),
            "agreements.FR-DGPN.max_results",
            "expected an integer, got the string '5'",
        ),
        (
            _set((*A, "max_result"), 5),
            "agreements.FR-DGPN.max_result",
            "unknown key 'max_result' (did you mean 'max_results'?)",
        ),
        (
            _set((*A, "note"), "x"),
            "agreements.FR-DGPN.note",
            "unknown key 'note'; expected one of: approval_deadline_hours, categories, "
            "legal_bases, max_results, methods, notice_handling_codes, purposes, redact, "
            "valid_from, valid_until",
        ),
        (
            _set(("agreements", "FR-DGPN "), VALID["agreements"]["FR-DGPN"]),
            'agreements["FR-DGPN "]',
            "key 'FR-DGPN ' is not a node id: <ISO-3166 alpha-2>-<agency>, upper case, "
            "e.g. DE-BKA (did you mean 'FR-DGPN'?)",
        ),
        (
            _set(("agreements", "FR-DGPN\n"), VALID["agreements"]["FR-DGPN"]),
            'agreements["FR-DGPN\\n"]',
            "key 'FR-DGPN\\n' is not a node id",
        ),
        (
            _set(("agreements", "F-DGPN"), VALID["agreements"]["FR-DGPN"]),
            "agreements.F-DGPN",
            "key 'F-DGPN' is not a node id",
        ),
        (_set(("agreements",), []), "agreements", "expected an object, got an array"),
        (
            _set((*J, "members"), ["DE"]),
            "jits.JIT-2026-017.members",
            "needs at least 2 items, has 1",
        ),
        (
            _set((*J, "members"), ["DE", "DE"]),
            "jits.JIT-2026-017.members[1]",
            "'DE' is listed twice",
        ),
        (
            _set((*J, "members"), ["DE", "FE"]),
            "jits.JIT-2026-017.members[1]",
            f"'FE' {COUNTRY}",
        ),
        (
            _set((*J, "members"), ["DE", "fr"]),
            "jits.JIT-2026-017.members[1]",
            f"'fr' {COUNTRY} (did you mean 'FR'?)",
        ),
        (
            _set((*J, "members"), ["DE", "UK"]),
            "jits.JIT-2026-017.members[1]",
            f"'UK' {COUNTRY} (did you mean 'GB'?)",
        ),
        (
            _set((*J, "members"), ["DE", "EL"]),
            "jits.JIT-2026-017.members[1]",
            f"'EL' {COUNTRY} (did you mean 'GR'?)",
        ),
        (
            _set((*J, "members"), ["DE", "FRA"]),
            "jits.JIT-2026-017.members[1]",
            f"'FRA' {COUNTRY}",
        ),
        (
            _set((*J, "case_reference"), ""),
            "jits.JIT-2026-017.case_reference",
            "must not be empty",
        ),
        (
            _set((*J, "case_reference"), "x" * 129),
            "jits.JIT-2026-017.case_reference",
            "is longer than 128 characters",
        ),
        (
            _set((*J, "valid_until"), "2025-12-31"),
            "jits.JIT-2026-017.valid_until",
            "'2025-12-31' is before valid_from '2026-01-01'",
        ),
        (
            _set(("jits", "JIT 17"), VALID["jits"]["JIT-2026-017"]),
            'jits["JIT 17"]',
            "key 'JIT 17' is not a JIT id",
        ),
        (
            _set(("restrictions", "blocked_countries"), ["XX"]),
            "restrictions.blocked_countries[0]",
            f"'XX' {COUNTRY}",
        ),
        (
            _set(("restrictions", "blocked_countries"), "RU"),
            "restrictions.blocked_countries",
            "expected an array, got the string 'RU'",
        ),
        (
            _set(("restrictions", "approval_categories"), ["wanted_persons"]),
            "restrictions.approval_categories[0]",
            "(did you mean 'wanted_person'?)",
        ),
        (
            _set(("restrictions", "blocked"), []),
            "restrictions.blocked",
            "unknown key 'blocked'",
        ),
        (
            _set(("settings", "retention_days"), 0),
            "settings.retention_days",
            "must be at least 1, got 0",
        ),
        (
            _set(("settings", "approval_deadline_hours"), 0),
            "settings.approval_deadline_hours",
            "must be at least 1, got 0",
        ),
        (
            _set(("settings", "approval_deadline_hours"), "48"),
            "settings.approval_deadline_hours",
            "expected an integer, got the string '48'",
        ),
        (
            _set((*A, "approval_deadline_hours"), 1.5),
            "agreements.FR-DGPN.approval_deadline_hours",
            "expected an integer, got the number 1.5",
        ),
        (
            _set(("settings", "max_match_results"), None),
            "settings.max_match_results",
            "expected an integer, got null",
        ),
        (
            _set(("settings", "retention"), 90),
            "settings.retention",
            "unknown key 'retention' (did you mean 'retention_days'?)",
        ),
    ],
)
def test_each_problem_is_named_by_path_with_what_was_expected(
    change: Callable[[dict[str, Any]], None], where: str, message: str
) -> None:
    problems = _problems(_mutated(change))
    assert len(problems) == 1, problems
    assert problems[0][0] == where
    assert message in problems[0][1], problems[0][1]


@pytest.mark.parametrize("key", ["categories", "valid_until"])
def test_a_missing_required_key_is_named_at_its_object(key: str) -> None:
    def drop(doc: dict[str, Any]) -> None:
        del _agreement(doc)[key]

    assert _problems(_mutated(drop)) == [("agreements.FR-DGPN", f"missing required key {key!r}")]


def test_several_missing_keys_are_named_together() -> None:
    problems = _problems({"jits": {"J-1": {"members": ["DE", "FR"]}}})
    assert problems == [
        ("jits.J-1", "missing required keys 'case_reference', 'valid_from', 'valid_until'")
    ]


def test_a_misspelt_required_key_is_reported_once_as_unknown() -> None:
    def misspell(doc: dict[str, Any]) -> None:
        _agreement(doc)["purpsoes"] = _agreement(doc).pop("purposes")

    assert _problems(_mutated(misspell)) == [
        ("agreements.FR-DGPN.purpsoes", "unknown key 'purpsoes' (did you mean 'purposes'?)")
    ]


def test_not_a_number_is_refused(tmp_path: Path) -> None:
    error = _refusal(tmp_path, '{"settings": {"retention_days": NaN}}')
    assert str(error).endswith("settings.retention_days: expected an integer, got the number NaN")


def test_a_huge_number_is_refused(tmp_path: Path) -> None:
    error = _refusal(tmp_path, '{"settings": {"retention_days": 1e999}}')
    assert "settings.retention_days: expected an integer" in str(error)


# --- where: file, line, column ---------------------------------------------------------------

BAD = """\
{
  "agreements": {
    "FR-DGPN": {
      "categories": ["vehicle", "travle_document"],
      "purposes": ["criminal_investigation"],
      "methods": ["Match"],
      "legal_bases": ["none"],
      "valid_from": "2026-01-01",
      "valid_until": "2025-12-31",
      "purpsoes": []
    }
  },
  "restrictions": {"blocked_countries": ["DE", "XX"]}
}
"""


def test_the_message_names_file_line_column_path_and_expectation(tmp_path: Path) -> None:
    error = _refusal(tmp_path, BAD)
    path = tmp_path / "agreements.json"
    assert str(error).splitlines() == [
        f"{path}: 4 problems in the policy data:",
        f"{path}:4:33: agreements.FR-DGPN.categories[1]: 'travle_document' is not one of "
        f"{CATEGORY_LIST} (did you mean 'travel_document'?)",
        f"{path}:9:22: agreements.FR-DGPN.valid_until: '2025-12-31' is before valid_from "
        "'2026-01-01'",
        f"{path}:10:7: agreements.FR-DGPN.purpsoes: unknown key 'purpsoes' "
        "(did you mean 'purposes'?)",
        f"{path}:13:48: restrictions.blocked_countries[1]: 'XX' {COUNTRY}",
    ]
    assert [(p.line, p.column) for p in error.problems] == [(4, 33), (9, 22), (10, 7), (13, 48)]


def test_a_single_problem_is_one_line(tmp_path: Path) -> None:
    error = _refusal(tmp_path, '{\n  "settings": {\n    "retention_days": 0\n  }\n}\n')
    path = tmp_path / "agreements.json"
    assert str(error) == f"{path}:3:23: settings.retention_days: must be at least 1, got 0"


def test_all_problems_are_reported_sorted_by_line_and_capped(tmp_path: Path) -> None:
    peers = {
        f"FR-P{i:02d}": {**VALID["agreements"]["FR-DGPN"], "max_results": 0} for i in range(25)
    }
    # Written in reverse so that the file's order differs from the dict's sorted order.
    text = json.dumps({"agreements": dict(reversed(peers.items()))}, indent=2)
    error = _refusal(tmp_path, text)
    assert len(error.problems) == 25
    lines = [p.line for p in error.problems]
    assert lines == sorted(lines)
    assert error.problems[0].path == ("agreements", "FR-P24", "max_results")
    message = str(error).splitlines()
    assert message[0].endswith(": 25 problems in the policy data:")
    assert len(message) == 1 + MAX_REPORTED + 1
    assert message[-1] == f"... and {25 - MAX_REPORTED} more"


def test_a_repeated_key_is_named_where_it_is_repeated(tmp_path: Path) -> None:
    text = '{\n  "settings": {\n    "retention_days": 90,\n    "retention_days": 30\n  }\n}\n'
    error = _refusal(tmp_path, text)
    assert str(error) == (
        f"{tmp_path / 'agreements.json'}:4:5: settings.retention_days: key 'retention_days' "
        "appears twice in one object; keep one (JSON would silently drop the other)"
    )


def test_repeated_keys_and_schema_problems_come_together(tmp_path: Path) -> None:
    text = '{"settings": {"retention_days": 90, "retention_days": 0}, "jits": []}'
    problems = _refusal(tmp_path, text).problems
    assert [(render_path(p.path), p.column) for p in problems] == [
        ("settings.retention_days", 37),  # the repeated key
        ("settings.retention_days", 55),  # the value that won: 0
        ("jits", 67),
    ]


def test_bad_json_is_reported_before_the_schema(tmp_path: Path) -> None:
    error = _refusal(tmp_path, '{"agreements": {"FR-PN": ["vehicle",]}, "x": 1}')
    assert re.search(r":1:\d+: not valid JSON: Expecting value", str(error))
    assert error.problems == ()


def test_crlf_line_endings_count_lines_once(tmp_path: Path) -> None:
    error = _refusal(tmp_path, '{\r\n  "settings": {\r\n    "retention_days": 0\r\n  }\r\n}\r\n')
    assert (error.problems[0].line, error.problems[0].column) == (3, 23)


def test_columns_count_characters_not_bytes(tmp_path: Path) -> None:
    text = '{"jits": {"J-1": {"case_reference": "Köln", "members": ["DE"], "x": 1}}}'
    problems = _refusal(tmp_path, text).problems
    members = next(p for p in problems if p.path == ("jits", "J-1", "members"))
    assert members.column == text.index('["DE"]') + 1


# --- locate() ------------------------------------------------------------------------------


def test_locate_finds_values_and_keys() -> None:
    text = '{\n  "a": [1, {"b": "x"}, []],\n  "c\\"d": {},\n  "e": null\n}'
    at = locate(text)
    assert at.values == {
        (): (1, 1),
        ("a",): (2, 8),
        ("a", 0): (2, 9),
        ("a", 1): (2, 12),
        ("a", 1, "b"): (2, 18),
        ("a", 2): (2, 24),
        ('c"d',): (3, 11),
        ("e",): (4, 8),
    }
    assert at.keys == {
        ("a",): (2, 3),
        ("a", 1, "b"): (2, 13),
        ('c"d',): (3, 3),
        ("e",): (4, 3),
    }
    assert at.duplicates == []


def test_locate_records_repeats_and_keeps_the_last() -> None:
    at = locate('{"a": {"x": 1}, "b": 2, "a": {"y": 3}}')
    assert at.duplicates == [(("a",), (1, 25))]
    assert at.values[("a",)] == (1, 30)
    assert at.values[("a", "y")] == (1, 36)


def test_locate_keeps_repeats_apart_in_different_objects() -> None:
    assert locate('[{"a": 1}, {"a": 2}]').duplicates == []


def test_locate_a_scalar_document() -> None:
    assert locate('  "x"').values == {(): (1, 3)}


def test_locate_falls_back_to_the_nearest_ancestor() -> None:
    at = locate('{"a": {"b": 1}}')
    assert at.of_value(("a", "missing", 3)) == (1, 7)
    assert at.of_key(("a", "b")) == (1, 8)
    assert at.of_key(("a", "missing")) == (1, 7)


def test_locate_handles_deep_nesting_without_recursion() -> None:
    depth = 5000
    at = locate("[" * depth + "]" * depth)
    assert at.values[(0,) * (depth - 1)] == (1, depth)


def test_render_path() -> None:
    assert render_path(()) == "(top level)"
    assert render_path(("agreements", "FR-DGPN", "categories", 1)) == (
        "agreements.FR-DGPN.categories[1]"
    )
    assert render_path(("jits", "a.b", 0, "k y")) == 'jits["a.b"][0]["k y"]'


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=25,
)


def _walk(value: Any, path: JsonPath = ()) -> Iterator[tuple[JsonPath, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index))


@settings(max_examples=200, deadline=None)
@given(
    value=JSON,
    indent=st.sampled_from([None, 0, 2, "\t"]),
    ascii_only=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_locate_points_at_every_value_in_any_document(
    value: Any, indent: int | str | None, ascii_only: bool, newline: str
) -> None:
    """Decoding from the reported position yields exactly the value at that path."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only).replace("\n", newline)
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    at = locate(text)
    decoder = json.JSONDecoder()
    for path, expected in _walk(value):
        line, column = at.values[path]
        found, _ = decoder.raw_decode(text, starts[line - 1] + column - 1)
        assert found == expected, (path, text)
        if path and isinstance(path[-1], str):
            line, column = at.keys[path]
            key, _ = decoder.raw_decode(text, starts[line - 1] + column - 1)
            assert key == path[-1]


def test_an_agreement_may_name_fields_to_redact_per_category(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(VALID))
    doc["agreements"]["FR-DGPN"]["redact"] = {"wanted_person": ["nickname", "tattoos"]}
    path = tmp_path / "agreements.json"
    path.write_text(json.dumps(doc, indent=2))
    assert load_policy_data(path)["agreements"]["FR-DGPN"]["redact"] == {
        "wanted_person": ["nickname", "tattoos"]
    }
    doc["agreements"]["FR-DGPN"]["redact"] = {"spaceship": ["x"]}
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(PolicyDataError, match=r"redact\.spaceship"):
        load_policy_data(path)
