from __future__ import annotations

import time
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.vocabulary import IDENTIFIER_KINDS, MAX_IDENTIFIER_LENGTH
from node.normalise import (
    KNOWN_KINDS,
    NormalisationError,
    name_dob,
    normalise_date,
    normalise_dob,
    normalise_identifier,
    normalise_name,
    normalise_number,
)

TODAY = date(2026, 11, 29)


@pytest.mark.parametrize(
    ("spellings", "expected"),
    [
        (("Müller", "MULLER", "muller", "Muller", "MÜLLER", "Mu\u0308ller"), "muller"),
        (("Dvořák", "Dvorak", "DVOŘÁK"), "dvorak"),
        (("Łukasz", "Lukasz", "ŁUKASZ"), "lukasz"),
        (("Straße", "STRASSE", "Strasse", "STRAẞE"), "strasse"),
        (("Øvergaard", "Overgaard"), "overgaard"),
        (
            ("O'Brien-Smith", "o brien smith", "O\u2019Brien  Smith", " O--Brien\tSmith "),
            "o brien smith",
        ),
        (("Ærø", "AERO"), "aero"),
        (("García-Núñez", "Garcia Nunez"), "garcia nunez"),
        (("Şahin", "SAHIN"), "sahin"),
    ],
)
def test_names_fold_to_one_spelling(spellings: tuple[str, ...], expected: str) -> None:
    assert {normalise_name(s) for s in spellings} == {expected}


@pytest.mark.parametrize("name", ["Владимир", "李小龍", "김민준", "देवनागरी", "محمد"])
def test_non_latin_names_are_kept_not_refused(name: str) -> None:
    folded = normalise_name(name)
    assert folded
    assert normalise_name(folded) == folded


def test_cyrillic_case_folds() -> None:
    assert normalise_name("ВЛАДИМИР") == normalise_name("владимир")


@pytest.mark.parametrize("value", ["", "   ", "--", "'.'"])
def test_empty_name_is_refused(value: str) -> None:
    with pytest.raises(NormalisationError) as err:
        normalise_name(value, "family_name")
    assert err.value.field == "family_name"
    assert "empty" in str(err.value)


@given(st.text(max_size=60))
def test_name_normalisation_is_idempotent(value: str) -> None:
    try:
        once = normalise_name(value)
    except NormalisationError:
        return
    assert normalise_name(once) == once
    assert "|" not in once


@pytest.mark.parametrize(
    "spelling",
    [
        "AB123456",
        "ab123456",
        "AB 123 456",
        "AB-123-456",
        "ab.123/456",
        "\uff21\uff22\uff11\uff12\uff13\uff14\uff15\uff16",
    ],
)
def test_document_numbers_fold(spelling: str) -> None:
    assert normalise_number(spelling) == "AB123456"


def test_unicode_dashes_and_spaces_are_separators() -> None:
    assert normalise_number("AB\u2013123\u00a0456") == "AB123456"


@pytest.mark.parametrize("value", ["AB#123", "ÄB123", "AB_123", "12€"])
def test_document_number_with_other_characters_is_refused(value: str) -> None:
    with pytest.raises(NormalisationError) as err:
        normalise_number(value, "vin")
    assert err.value.field == "vin"
    assert "A-Z" in err.value.message
    assert value not in str(err.value)  # the value itself is never echoed


@pytest.mark.parametrize("value", ["", " - ", "./"])
def test_empty_document_number_is_refused(value: str) -> None:
    with pytest.raises(NormalisationError, match="empty"):
        normalise_number(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1980-12-31", "1980-12-31"), ("19801231", "1980-12-31"), (" 2000-02-29 ", "2000-02-29")],
)
def test_iso_dates(value: str, expected: str) -> None:
    assert normalise_date(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "31.12.1980",
        "12/31/1980",
        "1980-1231",
        "80-12-31",
        "1980-12-31T00:00",
        "\uff11\uff19\uff18\uff10-12-31",
        "",
    ],
)
def test_other_date_formats_are_refused_with_the_expected_format(value: str) -> None:
    with pytest.raises(NormalisationError) as err:
        normalise_date(value, "date_of_birth")
    assert err.value.field == "date_of_birth"
    assert "YYYY-MM-DD" in err.value.message


@pytest.mark.parametrize(
    "value", ["1980-02-30", "1981-02-29", "1980-13-01", "1980-00-10", "0000-01-01"]
)
def test_impossible_dates_are_refused(value: str) -> None:
    with pytest.raises(NormalisationError, match="real calendar date"):
        normalise_date(value)


def test_future_date_of_birth_is_refused() -> None:
    assert normalise_dob("2026-11-29", today=TODAY) == "2026-11-29"
    with pytest.raises(NormalisationError, match="future"):
        normalise_dob("2026-11-30", today=TODAY)
    assert normalise_date("2999-01-01") == "2999-01-01"  # other dates may lie ahead


def test_name_dob_composite() -> None:
    assert name_dob("Dvořák", "Jan-Łukasz", "19800102", TODAY) == "dvorak|jan lukasz|1980-01-02"
    assert name_dob("Sukarno", "", "1901-06-06", TODAY) == "sukarno||1901-06-06"


def test_normalise_identifier_dispatches_on_kind() -> None:
    assert normalise_identifier("document_number", "ab-12") == "AB12"
    assert normalise_identifier("vin", "fake de 123") == "FAKEDE123"
    assert normalise_identifier("registration_number", "B-AB 123") == "BAB123"
    assert normalise_identifier("serial_number", "sn/42") == "SN42"
    assert (
        normalise_identifier("name_dob", "MÜLLER|Zoë|1970-01-01", TODAY) == "muller|zoe|1970-01-01"
    )


def test_every_vocabulary_kind_is_handled() -> None:
    assert set().union(*IDENTIFIER_KINDS.values()) == KNOWN_KINDS


@pytest.mark.parametrize("value", ["muller|1970-01-01", "a|b|c|1970-01-01"])
def test_name_dob_needs_three_parts(value: str) -> None:
    with pytest.raises(NormalisationError, match="three parts"):
        normalise_identifier("name_dob", value)


def test_name_dob_errors_name_the_part() -> None:
    with pytest.raises(NormalisationError) as err:
        normalise_identifier("name_dob", "Müller|Zoë|01.01.1970")
    assert err.value.field == "date_of_birth"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(NormalisationError) as err:
        normalise_identifier("shoe_size", "42")
    assert err.value.field == "kind"


def test_error_is_a_value_error() -> None:
    assert issubclass(NormalisationError, ValueError)


@pytest.mark.parametrize("kind", sorted(KNOWN_KINDS))
def test_ten_megabyte_value_is_refused_fast(kind: str) -> None:
    huge = "Ä" * 10_000_000
    started = time.perf_counter()
    # Refused on its raw length, before any Unicode work: without that check the same call
    # fails on a character, or on the normalised length, after 0.2-4 s of work. The time
    # bound is slack for a loaded machine, not a speed claim.
    with pytest.raises(NormalisationError, match=r"is 10000000 characters long; at most"):
        normalise_identifier(kind, huge)
    assert time.perf_counter() - started < 1.0


def test_longest_allowed_value_is_accepted() -> None:
    assert len(normalise_number("A" * MAX_IDENTIFIER_LENGTH)) == MAX_IDENTIFIER_LENGTH
    with pytest.raises(NormalisationError):
        normalise_number("A" * (MAX_IDENTIFIER_LENGTH + 1))


def test_value_that_grows_past_the_limit_is_refused() -> None:
    with pytest.raises(NormalisationError, match="once normalised"):
        normalise_name("ß" * MAX_IDENTIFIER_LENGTH)
