"""Made-up records for demos and benchmarks, so no real person's data is ever needed.

Every row says ``"synthetic": true`` and every number carries ``FAKE``, so a row that leaks
into a real system is recognisable at a glance. Names come from short invented lists with
diacritics, so demos exercise the same normalisation as real data. Rows are a pure function
of (country, count, seed): a benchmark can be rerun on exactly the same data.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

_CATEGORY_WEIGHTS: Final = (
    ("travel_document", 70),
    ("wanted_person", 8),
    ("missing_person", 7),
    ("vehicle", 10),
    ("firearm", 5),
)
_HANDLING_WEIGHTS: Final = (("H0", 80), ("H1", 10), ("H2", 7), ("H3", 3))
_FAMILY: Final = (
    "Müller", "Dvořák", "Kowalczyk", "Ó Briain", "García-Núñez", "Øvergaard", "Nagy",
    "Papadopoulos", "Strauß", "Jansen", "Lefèvre", "Novák", "Rossi", "Şahin", "Åberg",
)  # fmt: skip
_GIVEN: Final = (
    "Łukasz", "Zoë", "José", "Anaïs", "Jiří", "Søren", "Małgorzata", "Ioana", "Björn",
    "Élodie", "Tomás", "Agnė", "Mateo", "Greta", "Jan Pieter",
)  # fmt: skip
_COUNTRIES: Final = ("AT", "BE", "CZ", "DE", "ES", "FR", "IT", "NL", "PL", "SE")
_MAKES: Final = ("Fakewagen", "Mockauto", "Stubmobil", "Dummy Motors")
_COLOURS: Final = ("black", "white", "silver", "blue", "red")
_CALIBRES: Final = ("9mm", ".22 LR", "7.62x39mm", "12 gauge")
_EPOCH: Final = date(1940, 1, 1)
_COUNTRY: Final = re.compile(r"[A-Z]{2}", re.ASCII)


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def generate_rows(country: str, count: int, seed: int) -> Iterator[dict[str, Any]]:
    """``count`` fake importable rows for ``country``; the same seed gives the same rows."""
    if not _COUNTRY.fullmatch(country):
        raise ValueError("country must be an ISO 3166 alpha-2 code in upper case, e.g. 'DE'")
    if count < 0:
        raise ValueError("count must not be negative")
    rng = random.Random(f"{country}:{seed}")
    others = [c for c in _COUNTRIES if c != country]
    for n in range(count):
        category = _pick(rng, _CATEGORY_WEIGHTS)
        row: dict[str, Any] = {
            "category": category,
            "reference": f"SYN-{country}-{n:07d}",
            "synthetic": True,
        }
        handling = _pick(rng, _HANDLING_WEIGHTS)
        if handling != "H0":
            row["handling_code"] = handling
        if rng.random() < 0.1:
            row["source_restrictions"] = sorted(rng.sample(others, rng.randint(1, 2)))
        # The row number makes every fake number unique within one country's file.
        if category == "travel_document":
            row["document_number"] = f"{country}FAKE{n:07d}"
            row["document_type"] = rng.choice(("passport", "identity_card"))
            row["status"] = rng.choice(("stolen", "lost", "invalidated"))
        elif category in {"wanted_person", "missing_person"}:
            row["family_name"] = rng.choice(_FAMILY)
            row["given_names"] = rng.choice(_GIVEN)
            row["date_of_birth"] = (_EPOCH + timedelta(days=rng.randrange(25_000))).isoformat()
            row["nationality"] = rng.choice((country, *others))
            if rng.random() < 0.5:
                row["document_number"] = f"{country}-FAKE-P{n:07d}"
        elif category == "vehicle":
            row["vin"] = f"FAKE{country}{n:011d}"
            if rng.random() < 0.7:
                row["registration_number"] = f"{country} FK-{n:06d}"
            row["make"] = rng.choice(_MAKES)
            row["colour"] = rng.choice(_COLOURS)
        else:
            row["serial_number"] = f"SN-FAKE-{country}{n:08d}"
            row["calibre"] = rng.choice(_CALIBRES)
        yield row


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSON Lines (UTF-8, names unescaped so they stay readable)."""
    written = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    return written
