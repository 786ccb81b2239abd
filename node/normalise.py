"""One spelling per identifier, so a record matches however a peer or a clerk typed it.

Records are stored normalised and queries are normalised the same way before lookup, so
these functions decide what counts as "the same" document, vehicle, firearm or person.
Every function raises :class:`NormalisationError` (a ``ValueError``) naming the field and
what was expected. Messages never repeat the value: they may reach a log or a peer, and the
value may be personal data.

Choices:

* Document, VIN, registration and serial numbers: NFKC (full-width letters and digits
  count as ASCII), spaces, dashes (any Unicode dash), dots and slashes removed, upper case;
  then only ASCII ``A-Z0-9`` may remain. Those separators are layout that differs between
  forms and systems; no issuer distinguishes two numbers by them. Look-alikes (``O``/``0``)
  are *not* merged: that would be a guess, and a wrong guess is a false hit.
* Names: case-folded (``ß`` -> ``ss``), Latin/Greek/Cyrillic diacritics dropped (NFKD, then
  the marks of the Combining Diacritical Marks block), letters NFKD leaves whole mapped by
  hand (``Ł`` -> ``l``, ``Ø`` -> ``o``, ``Æ`` -> ``ae`` ...), anything that is not a letter,
  digit or mark becomes one space. Marks of other scripts (e.g. Devanagari vowel signs) are
  part of the spelling and kept; the result is NFC so Hangul and such read normally.
* Dates: ISO 8601 calendar dates only (``YYYY-MM-DD`` or ``YYYYMMDD``). ``31.12.1980`` and
  ``12/31/1980`` are ambiguous across countries, so they are refused rather than guessed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

from federation.model import Identifier
from federation.vocabulary import IDENTIFIER_KINDS, MAX_IDENTIFIER_LENGTH

KNOWN_KINDS: Final[frozenset[str]] = frozenset().union(*IDENTIFIER_KINDS.values())
NUMBER_KINDS: Final[frozenset[str]] = frozenset(
    {"document_number", "vin", "registration_number", "serial_number"}
)

# The fields a record of each category is found by: (required numbers, optional numbers);
# a number's field name is its identifier kind. People are found by ``name_dob``, from
# ``_PERSON`` together.
_NUMBERS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "travel_document": (("document_number",), ()),
    "wanted_person": ((), ("document_number",)),
    "missing_person": ((), ("document_number",)),
    "vehicle": (("vin",), ("registration_number",)),
    "firearm": (("serial_number",), ()),
}
_PERSON: Final = ("family_name", "given_names", "date_of_birth")
_PEOPLE: Final = frozenset({"wanted_person", "missing_person"})
_NUMBER_SEPARATORS: Final = re.compile(r"[\s\-./\\\u2010-\u2015\u2212\uFE58\uFE63\uFF0D]+")
_NUMBER_ALLOWED: Final = re.compile(r"[A-Z0-9]+", re.ASCII)
_DATE: Final = re.compile(r"(\d{4})(-?)(\d{2})\2(\d{2})", re.ASCII)
_COMBINING_DIACRITICS: Final = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff]")
# Latin letters that carry their "diacritic" in the base character, so NFKD keeps them whole.
_LATIN_FOLDS: Final = str.maketrans(
    {
        "ł": "l", "ø": "o", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe",
        "ħ": "h", "ŧ": "t", "\u0131": "i", "ŀ": "l", "ĸ": "k", "ŋ": "n",
    }
)  # fmt: skip


class NormalisationError(ValueError):
    """A value that cannot be turned into its one canonical spelling."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _check_length(value: str, field: str) -> None:
    # Before any Unicode work: a hostile 10 MB value must cost microseconds, not seconds.
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise NormalisationError(
            field, f"is {len(value)} characters long; at most {MAX_IDENTIFIER_LENGTH} allowed"
        )


def _check_result(result: str, field: str) -> str:
    # Folding can lengthen a value (``ß`` -> ``ss``); stored values keep the same bound.
    if len(result) > MAX_IDENTIFIER_LENGTH:
        raise NormalisationError(
            field, f"is longer than {MAX_IDENTIFIER_LENGTH} characters once normalised"
        )
    return result


def normalise_number(value: str, field: str = "document_number") -> str:
    """Document, VIN, registration or serial number -> upper-case ASCII letters and digits."""
    _check_length(value, field)
    folded = _NUMBER_SEPARATORS.sub("", unicodedata.normalize("NFKC", value)).upper()
    if not folded:
        raise NormalisationError(field, "is empty; expected letters A-Z and digits 0-9")
    if not _NUMBER_ALLOWED.fullmatch(folded):
        bad = next(i for i, ch in enumerate(folded) if not _NUMBER_ALLOWED.fullmatch(ch))
        raise NormalisationError(
            field,
            f"has a character that is not a letter A-Z or digit 0-9 (position {bad + 1} "
            "after removing spaces, dashes, dots and slashes)",
        )
    return _check_result(folded, field)


def normalise_name(value: str, field: str = "name", *, allow_empty: bool = False) -> str:
    """A family or given name -> lower-case letters without diacritics, single spaces."""
    _check_length(value, field)
    # NFKD both sides of casefold, as Unicode's caseless matching asks: compatibility forms
    # like U+1D54A (double-struck S) only become a cased letter after decomposition.
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", value).casefold())
    text = _COMBINING_DIACRITICS.sub("", text).translate(_LATIN_FOLDS)
    text = "".join(ch if unicodedata.category(ch)[0] in "LNM" else " " for ch in text)
    folded = unicodedata.normalize("NFC", " ".join(text.split()))
    if not folded and not allow_empty:
        raise NormalisationError(field, "is empty; expected at least one letter")
    return _check_result(folded, field)


def normalise_date(
    value: str, field: str = "date", *, allow_future: bool = True, today: date | None = None
) -> str:
    """An ISO 8601 calendar date -> ``YYYY-MM-DD``; ``today`` is injectable for tests."""
    _check_length(value, field)
    match = _DATE.fullmatch(value.strip())
    if match is None:
        raise NormalisationError(field, "expected an ISO 8601 date YYYY-MM-DD (or YYYYMMDD)")
    try:
        parsed = date(int(match[1]), int(match[3]), int(match[4]))
    except ValueError:
        raise NormalisationError(field, "is not a real calendar date (YYYY-MM-DD)") from None
    if not allow_future and parsed > (today or datetime.now(UTC).date()):
        raise NormalisationError(field, "is in the future")
    return parsed.isoformat()


def normalise_dob(value: str, today: date | None = None) -> str:
    return normalise_date(value, "date_of_birth", allow_future=False, today=today)


def name_dob(family: str, given: str, dob: str, today: date | None = None) -> str:
    """The composite person identifier ``family|given|YYYY-MM-DD`` from raw parts.

    Given names may be empty: people with a single name exist and must still be findable.
    """
    return "|".join(
        (
            normalise_name(family, "family_name"),
            normalise_name(given, "given_names", allow_empty=True),
            normalise_dob(dob, today),
        )
    )


def normalise_identifier(kind: str, value: str, today: date | None = None) -> str:
    """Normalise ``value`` as an identifier of ``kind`` (``name_dob`` as ``family|given|dob``)."""
    if kind not in KNOWN_KINDS:
        raise NormalisationError("kind", f"expected one of {', '.join(sorted(KNOWN_KINDS))}")
    _check_length(value, kind)
    if kind in NUMBER_KINDS:
        return normalise_number(value, kind)
    parts = value.split("|")
    if len(parts) != 3:
        raise NormalisationError(kind, "expected three parts 'family|given|YYYY-MM-DD'")
    family, given, dob = parts
    return _check_result(name_dob(family, given, dob, today), kind)


def record_identifiers(
    category: str, fields: Mapping[str, Any], today: date | None = None
) -> tuple[tuple[Identifier, ...], tuple[NormalisationError, ...]]:
    """The identifiers a record of ``category`` is found by, derived from its fields, and
    every problem on the way (a required field missing, a value that does not normalise).

    The one derivation: an own record being imported (:mod:`node.importer`, where any
    problem refuses the row) and a record received from a peer (:mod:`node.received`, kept
    with whatever identifiers its disclosed fields still give: the owner may have withheld
    some) are found by the very same spellings. ``name_dob`` comes first."""
    if category not in _NUMBERS:
        raise NormalisationError("category", f"expected one of {', '.join(sorted(_NUMBERS))}")
    identifiers: list[Identifier] = []
    problems: list[NormalisationError] = []
    required, optional = _NUMBERS[category]
    for name in (*required, *optional):
        value = fields.get(name)
        if value is None or (name in optional and value == ""):
            if name in required:
                problems.append(NormalisationError(name, f"is required for {category}"))
            continue
        try:
            identifiers.append(Identifier(name, normalise_number(_text(name, value), name)))
        except NormalisationError as exc:
            problems.append(exc)
    if category in _PEOPLE:
        missing = [name for name in _PERSON if fields.get(name) is None]
        problems.extend(NormalisationError(n, f"is required for {category}") for n in missing)
        try:
            if not missing:
                family, given, dob = (_text(name, fields[name]) for name in _PERSON)
                identifiers.insert(0, Identifier("name_dob", name_dob(family, given, dob, today)))
        except NormalisationError as exc:
            problems.append(exc)
    return tuple(identifiers), tuple(problems)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise NormalisationError(name, f"expected a string, got {type(value).__name__}")
    return value
