"""Loading the node's policy data: errors name the file and line, never a silent default."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from node.agreements import PolicyDataError, load_policy_data

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "data" / "agreements.example.json"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agreements.json"
    path.write_text(text)
    return path


def test_the_shipped_example_loads() -> None:
    doc = load_policy_data(EXAMPLE)
    assert set(doc) <= {"agreements", "settings"}
    assert doc["agreements"]
    assert doc == json.loads(EXAMPLE.read_text())


def test_a_valid_file_is_returned_as_written(tmp_path: Path) -> None:
    doc = {
        "agreements": {"FR-PN": {"categories": ["vehicle"], "purposes": ["border_control"]}},
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


def test_unknown_top_level_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"agreements": {}, "agrements": {}}')
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    assert str(info.value) == (
        f"{path}: unknown top-level key(s) ['agrements']; known: ['agreements', 'settings']"
    )


@pytest.mark.parametrize("peer", ["fr-pn", "FRANCE", "FR_PN", "", "FR-PN "])
def test_bad_peer_id_is_named(tmp_path: Path, peer: str) -> None:
    path = _write(tmp_path, json.dumps({"agreements": {peer: {}}}))
    with pytest.raises(PolicyDataError) as info:
        load_policy_data(path)
    assert str(info.value).startswith(f"{path}: agreements: invalid node id {peer!r}")


def test_agreement_must_be_an_object(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps({"agreements": {"FR-PN": ["vehicle"]}}))
    with pytest.raises(PolicyDataError, match=r"agreements\.FR-PN must be an object"):
        load_policy_data(path)


@pytest.mark.parametrize("agreements", [[], "FR-PN", None, 1])
def test_agreements_must_be_an_object(tmp_path: Path, agreements: object) -> None:
    path = _write(tmp_path, json.dumps({"agreements": agreements}))
    with pytest.raises(PolicyDataError, match="'agreements' must be an object keyed by peer"):
        load_policy_data(path)


@pytest.mark.parametrize("text", ["[]", '"agreements"', "null", "42"])
def test_top_level_must_be_an_object(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PolicyDataError, match=rf"^{re.escape(str(path))}: must hold a JSON object"):
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
    path.write_bytes('{"settings": {"note": "Zoll Köln Straße"}}'.encode())
    assert load_policy_data(path) == {"settings": {"note": "Zoll Köln Straße"}}


def test_a_peer_listed_twice_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"agreements": {"FR-PN": {"categories": ["vehicle"]}, "FR-PN": {}}}')
    with pytest.raises(PolicyDataError, match="FR-PN"):
        load_policy_data(path)
