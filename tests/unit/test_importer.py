from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from federation.model import Identifier
from node.importer import ImportFailed, RowError, UnreadableFile, import_file
from node.store import RecordStore

TODAY = date(2026, 11, 29)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    record_store = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    record_store.create_schema()
    yield record_store
    record_store.close()


def jsonl(tmp_path: Path, *rows: Any, name: str = "rows.jsonl") -> Path:
    path = tmp_path / name
    lines = (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def csv_file(tmp_path: Path, text: str, name: str = "rows.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def failure(path: Path, store: RecordStore) -> ImportFailed:
    with pytest.raises(ImportFailed) as err:
        import_file(path, store, today=TODAY)
    assert store.count() == 0
    return err.value


PERSON = {
    "category": "wanted_person",
    "family_name": "Dvořák",
    "given_names": "Jan-Łukasz",
    "date_of_birth": "1980-01-02",
}


def test_jsonl_import_of_every_category(tmp_path: Path, store: RecordStore) -> None:
    path = jsonl(
        tmp_path,
        {"category": "travel_document", "document_number": "ab-123 456", "reference": "X/1"},
        {**PERSON, "document_number": "P 1", "handling_code": "H2"},
        {**PERSON, "category": "missing_person", "source_restrictions": ["fr", "NL", "FR"]},
        {"category": "vehicle", "vin": "fake de 0000000001", "registration_number": "B-AB 12"},
        {"category": "vehicle", "vin": "FAKEDE00000000002"},
        {"category": "firearm", "serial_number": "SN-42", "calibre": "9mm"},
    )
    report = import_file(path, store, today=TODAY)
    assert report.counts == {
        "firearm": 1,
        "missing_person": 1,
        "travel_document": 1,
        "vehicle": 2,
        "wanted_person": 1,
    }
    assert report.total == 6
    assert store.count() == 6
    [ref] = store.find("travel_document", [Identifier("document_number", "AB123456")], 5)
    stored = store.get(ref)
    assert stored is not None
    assert stored.handling_code == "H0"
    assert stored.payload == {"document_number": "ab-123 456", "reference": "X/1"}
    assert ref != "X/1"
    by_name = [Identifier("name_dob", "dvorak|jan lukasz|1980-01-02")]
    [wanted] = store.find("wanted_person", [*by_name, Identifier("document_number", "P1")], 5)
    wanted_record = store.get(wanted)
    assert wanted_record is not None
    assert wanted_record.handling_code == "H2"
    assert wanted_record.payload["family_name"] == "Dvořák"  # raw spelling kept
    [missing] = store.find("missing_person", by_name, 5)
    missing_record = store.get(missing)
    assert missing_record is not None
    assert missing_record.source_restrictions == ("FR", "NL")
    vins = [Identifier("vin", "FAKEDE0000000001"), Identifier("registration_number", "BAB12")]
    assert len(store.find("vehicle", vins, 5)) == 1


def test_csv_import(tmp_path: Path, store: RecordStore) -> None:
    path = csv_file(
        tmp_path,
        "\ufeffcategory,document_number,family_name,given_names,date_of_birth,"
        "source_restrictions,note\n"
        'travel_document,C01X-00T47,,,,,"line one\nline two"\n'
        "missing_person,,Müller,Zoë,19700101,FR; NL;,\n"
        "travel_document,C01X00T48,,,,,\n",
    )
    report = import_file(path, store, today=TODAY)
    assert report.counts == {"missing_person": 1, "travel_document": 2}
    [ref] = store.find("travel_document", [Identifier("document_number", "C01X00T47")], 5)
    stored = store.get(ref)
    assert stored is not None
    assert stored.payload == {"document_number": "C01X-00T47", "note": "line one\nline two"}
    [person] = store.find("missing_person", [Identifier("name_dob", "muller|zoe|1970-01-01")], 5)
    person_record = store.get(person)
    assert person_record is not None
    assert person_record.source_restrictions == ("FR", "NL")
    assert person_record.identifiers == (Identifier("name_dob", "muller|zoe|1970-01-01"),)


def test_malformed_jsonl_reports_every_bad_line_and_writes_nothing(
    tmp_path: Path, store: RecordStore
) -> None:
    path = jsonl(
        tmp_path,
        {"category": "travel_document", "document_number": "OK1"},
        {**PERSON, "date_of_birth": "02.01.1980"},
        "{not json",
        "",
        "[1, 2]",
        {"category": "travel_document"},
        {"category": "spaceship", "document_number": "X"},
        {"category": "firearm", "serial_number": "SN#1", "handling_code": "H9"},
        {"category": "vehicle", "vin": 123},
        {"category": "travel_document", "document_number": "x", "source_restrictions": "FR"},
        '{"category": "travel_document", "category": "vehicle", "document_number": "Z"}',
        '{"category": "travel_document", "document_number": "N", "weight": NaN}',
    )
    errors = failure(path, store).errors
    assert [(e.line, e.field) for e in errors] == [
        (2, "date_of_birth"),
        (3, "json"),
        (5, "json"),
        (6, "document_number"),
        (7, "category"),
        (8, "handling_code"),
        (8, "serial_number"),
        (9, "vin"),
        (10, "source_restrictions"),
        (11, "json"),
        (12, "json"),
    ]
    assert "YYYY-MM-DD" in errors[0].message
    assert "required" in errors[3].message
    assert "object" in errors[2].message


def test_error_message_lists_the_first_twenty(tmp_path: Path, store: RecordStore) -> None:
    path = jsonl(tmp_path, *({"category": "vehicle"} for _ in range(25)))
    error = failure(path, store)
    assert len(error.errors) == 25
    text = str(error)
    assert "25 error(s), nothing was imported" in text
    assert "line 20, vin: is required for vehicle" in text
    assert "line 21" not in text
    assert "... and 5 more" in text


def test_one_bad_row_among_many_writes_nothing(tmp_path: Path, store: RecordStore) -> None:
    rows: list[Any] = [
        {"category": "travel_document", "document_number": f"D{i}"} for i in range(500)
    ]
    rows.append({**PERSON, "date_of_birth": "2999-01-01"})
    error = failure(jsonl(tmp_path, *rows), store)
    assert error.errors == [RowError(501, "date_of_birth", "is in the future")]


def test_duplicate_travel_document_names_both_lines(tmp_path: Path, store: RecordStore) -> None:
    path = jsonl(
        tmp_path,
        {"category": "travel_document", "document_number": "AB-1"},
        {"category": "vehicle", "vin": "AB1"},
        {**PERSON, "document_number": "AB1"},
        {"category": "travel_document", "document_number": "ab 1"},
    )
    [error] = failure(path, store).errors
    assert (error.line, error.field) == (4, "document_number")
    assert "line 1" in error.message


def test_person_with_a_single_name_is_accepted(tmp_path: Path, store: RecordStore) -> None:
    path = jsonl(tmp_path, {**PERSON, "given_names": ""})
    import_file(path, store, today=TODAY)
    assert store.find("wanted_person", [Identifier("name_dob", "dvorak||1980-01-02")], 5)


def test_person_needs_all_name_fields(tmp_path: Path, store: RecordStore) -> None:
    row = {k: v for k, v in PERSON.items() if k not in {"given_names", "date_of_birth"}}
    errors = failure(jsonl(tmp_path, row), store).errors
    assert [(e.field, e.message) for e in errors] == [
        ("given_names", "is required for wanted_person"),
        ("date_of_birth", "is required for wanted_person"),
    ]


def test_csv_errors_count_the_header_as_line_one(tmp_path: Path, store: RecordStore) -> None:
    path = csv_file(
        tmp_path,
        "category,vin,handling_code\nvehicle,V1,\nvehicle,,H1\nvehicle,V3\n\nfirearm,S1,H0\n",
    )
    errors = failure(path, store).errors
    assert [(e.line, e.field) for e in errors] == [
        (3, "vin"),
        (4, "csv"),
        (6, "serial_number"),
    ]


def test_csv_without_category_column(tmp_path: Path, store: RecordStore) -> None:
    path = csv_file(tmp_path, "kategorie,document_number\ntravel_document,X1\n")
    [error] = failure(path, store).errors
    assert (error.line, error.field) == (1, "header")
    assert "'category'" in error.message


def test_csv_with_duplicate_columns(tmp_path: Path, store: RecordStore) -> None:
    path = csv_file(tmp_path, "category,vin,vin\nvehicle,V1,V2\n")
    with pytest.raises(UnreadableFile, match="own non-empty name"):
        import_file(path, store)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rows.txt", b"x", "expected a .jsonl or .csv"),
        ("rows.json", b"[]", "expected a .jsonl or .csv"),
        ("rows.jsonl", b'{"category": "vehicle"}\n{"vin": "\xff"}\n', "not valid UTF-8"),
    ],
)
def test_unreadable_files(
    tmp_path: Path, store: RecordStore, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFile, match=message):
        import_file(path, store)
    assert store.count() == 0


def test_bad_encoding_names_the_line(tmp_path: Path, store: RecordStore) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"category": "vehicle"}\n{"vin": "\xff"}\n')
    [error] = failure(path, store).errors
    assert error.line == 2


def test_missing_file(tmp_path: Path, store: RecordStore) -> None:
    with pytest.raises(UnreadableFile, match="file not found"):
        import_file(tmp_path / "absent.jsonl", store)


def test_unknown_fields_are_kept_in_payload(tmp_path: Path, store: RecordStore) -> None:
    path = jsonl(
        tmp_path,
        {"category": "firearm", "serial_number": "S1", "serail": "typo", "extra": {"a": [1]}},
    )
    import_file(path, store)
    [ref] = store.find("firearm", [Identifier("serial_number", "S1")], 1)
    stored = store.get(ref)
    assert stored is not None
    assert stored.payload == {"serial_number": "S1", "serail": "typo", "extra": {"a": [1]}}


def test_empty_file_imports_nothing(tmp_path: Path, store: RecordStore) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    assert import_file(path, store).total == 0


def test_line_separator_inside_a_json_string_is_not_a_new_line(
    tmp_path: Path, store: RecordStore
) -> None:
    path = jsonl(tmp_path, {"category": "firearm", "serial_number": "S1", "note": "a\u2028b"})
    assert import_file(path, store).total == 1
