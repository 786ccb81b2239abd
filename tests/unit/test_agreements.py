"""Loading the node's policy data: errors name the file and line, never a silent default.

The schema's own checks (every keyword, line tracking, reporting) are in test_policy_data.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from node.policy.data import PolicyDataError, load_policy_data

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "data" / "agreements.example.json"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agreements.json"
    path.write_text(text)
    return path


def test_the_shipped_example_loads() -> None:
    doc = load_policy_data(EXAMPLE)
    assert set(doc) <= {"agreements", "jits", "restrictions", "settings"}
    assert doc["agreements"]
    assert doc == json.loads(EXAMPLE.read_text())


def test_a_valid_file_is_returned_as_written(tmp_path: Path) -> None:
    doc = {
        "agreements": {
            "FR-PN": {
                "categories": ["vehicle"],
                "purposes": ["border_control"],
                "methods": ["Match"],
                "legal_bases": ["none"],
                "valid_from": "2026-01-01",
                "valid_until": "2026-12-31",
            }
        },
        "settings": {"max_match_results": 3},
    }
    assert load_policy_data(_write(tmp_path, json.dumps(doc))) == doc


def test_no_agreements_at_all_is_allowed(tmp_path: Path) -> None:
    assert load_policy_data(_write(tmp_path, "{}")) == {}


def test_bad_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '{\n  "agreements": {\n    "FR-PN": {"categories": ["vehicle",]}\n  }\n}\n'
    )
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    message = str(info.value)
    assert re.match(rf"^{re.escape(str(path))}:3:\d+: not valid JSON: ", message), message
    assert "Expecting value" in message


def test_truncated_file_names_its_last_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '{\n  "agreements": {\n')
    with pytest.raises(PolicyDataError, match=rf"^{re.escape(str(path))}:3:1: not valid JSON"):
        load_policy_data(path)


def test_unknown_top_level_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"agreements": {}, "agrements": {}}')
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    assert str(info.value) == (
        f"{path}:1:20: agrements: unknown key 'agrements' (did you mean 'agreements'?)"
    )


def test_unknown_top_level_key_lists_the_known_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"peers": {}}')
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    assert str(info.value) == (
        f"{path}:1:2: peers: unknown key 'peers'; "
        "expected one of: agreements, jits, restrictions, settings"
    )


@pytest.mark.parametrize("peer", ["fr-pn", "FRANCE", "FR_PN", "", "FR-PN "])
def test_bad_peer_id_is_named(tmp_path: Path, peer: str) -> None:
    path = _write(tmp_path, json.dumps({"agreements": {peer: {}}}))
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    named = [p for p in info.value.problems if p.message.startswith("key ")]
    assert len(named) == 1, info.value.problems
    assert named[0].path == ("agreements", peer)
    assert named[0].message.startswith(f"key {peer!r} is not a node id: <ISO-3166 alpha-2>-")
    assert (named[0].line, named[0].column) == (1, 17)  # the key itself


def test_agreement_must_be_an_object(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps({"agreements": {"FR-PN": ["vehicle"]}}))
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    assert str(info.value) == (f"{path}:1:26: agreements.FR-PN: expected an object, got an array")


@pytest.mark.parametrize("agreements", [[], "FR-PN", None, 1])
def test_agreements_must_be_an_object(tmp_path: Path, agreements: object) -> None:
    path = _write(tmp_path, json.dumps({"agreements": agreements}))
    with pytest.raises(PolicyDataError, match=r":1:16: agreements: expected an object, got "):
        load_policy_data(path)


@pytest.mark.parametrize("text", ["[]", '"agreements"', "null", "42"])
def test_top_level_must_be_an_object(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(
        PolicyDataError, match=rf"^{re.escape(str(path))}:1:1: \(top level\): expected an object"
    ):
        load_policy_data(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyDataError, match=r"policy data file .*absent\.json not found"):
        load_policy_data(tmp_path / "absent.json")


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "agreements.json"
    path.write_bytes(b'{"agreements": {"FR-PN": {"note": "\xff"}}}')
    with pytest.raises(PolicyDataError, match=rf"^{re.escape(str(path))}: not UTF-8 text"):
        load_policy_data(path)


def test_non_ascii_utf8_is_read_whatever_the_locale(tmp_path: Path) -> None:
    path = tmp_path / "agreements.json"
    jit = {
        "members": ["DE", "FR"],
        "case_reference": "Zoll Köln Straße 17",
        "valid_from": "2026-01-01",
        "valid_until": "2026-12-31",
    }
    path.write_bytes(json.dumps({"jits": {"JIT-1": jit}}, ensure_ascii=False).encode())
    assert load_policy_data(path) == {"jits": {"JIT-1": jit}}


def test_a_peer_listed_twice_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"agreements": {"FR-PN": {"categories": ["vehicle"]}, "FR-PN": {}}}')
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    assert (
        f"{path}:1:55: agreements.FR-PN: key 'FR-PN' appears twice in one object; keep one"
        in str(info.value)
    )
