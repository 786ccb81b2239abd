from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from federation.model import Identifier
from federation.vocabulary import CATEGORIES, HANDLING_CODES
from node.importer import import_file
from node.local.synthetic import generate_rows, write_jsonl
from node.normalise import name_dob
from node.store import RecordStore


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    first = list(generate_rows("DE", 200, seed=7))
    assert first == list(generate_rows("DE", 200, seed=7))
    assert first != list(generate_rows("DE", 200, seed=8))
    assert first != list(generate_rows("FR", 200, seed=7))


def test_rows_are_plainly_fake_and_varied() -> None:
    rows = list(generate_rows("NL", 2_000, seed=1))
    assert len(rows) == 2_000
    assert all(row["synthetic"] is True for row in rows)
    categories = Counter(row["category"] for row in rows)
    assert set(categories) == CATEGORIES
    assert categories.most_common(1)[0][0] == "travel_document"
    assert {row.get("handling_code", "H0") for row in rows} == HANDLING_CODES
    restricted = [row for row in rows if "source_restrictions" in row]
    assert restricted
    assert all("NL" not in row["source_restrictions"] for row in restricted)
    for row in rows:
        for key in ("document_number", "vin", "serial_number", "registration_number"):
            if key in row and key != "registration_number":
                assert "FAKE" in row[key]
        if row["category"] == "vehicle":
            assert len(row["vin"]) == 17
    names = {row.get("family_name") for row in rows}
    assert {"Müller", "Dvořák"} <= names


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ISO 3166"):
        list(generate_rows("Germany", 1, seed=1))
    with pytest.raises(ValueError, match="negative"):
        list(generate_rows("DE", -1, seed=1))


def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    rows = list(generate_rows("PL", 50, seed=3))
    path = tmp_path / "pl.jsonl"
    assert write_jsonl(path, rows) == 50
    text = path.read_text(encoding="utf-8")
    assert [json.loads(line) for line in text.splitlines()] == rows


def test_ten_thousand_rows_import_and_a_known_one_is_found(tmp_path: Path) -> None:
    path = tmp_path / "de.jsonl"
    rows = list(generate_rows("DE", 10_000, seed=42))
    write_jsonl(path, rows)
    store = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    try:
        store.create_schema()
        report = import_file(path, store)
        assert report.total == 10_000
        assert report.counts == dict(sorted(Counter(r["category"] for r in rows).items()))
        assert store.count() == 10_000

        document = next(r for r in rows[5_000:] if r["category"] == "travel_document")
        number = document["document_number"]
        [ref] = store.find("travel_document", [Identifier("document_number", number)], 10)
        stored = store.get(ref)
        assert stored is not None
        assert stored.payload["reference"] == document["reference"]

        person = next(r for r in rows if r["category"] == "wanted_person")
        composite = name_dob(person["family_name"], person["given_names"], person["date_of_birth"])
        found = store.find("wanted_person", [Identifier("name_dob", composite)], 100)
        refs = set()
        for ref in found:
            record = store.get(ref)
            assert record is not None
            refs.add(record.payload["reference"])
        assert person["reference"] in refs
    finally:
        store.close()
