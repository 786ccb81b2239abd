"""Hit references: bound to their requester, expiring, tamper-evident, unlinkable."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.references import (
    PREFIX,
    ReferenceExpired,
    References,
    UnknownReference,
    reference_key,
)

NOW = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
REF = "rec_abcdefghijklmnopqrst"


@pytest.fixture
def refs() -> References:
    return References.for_signing_key(KEY, timedelta(days=30))


def test_a_reference_opens_for_its_requester(refs: References) -> None:
    sealed = refs.seal("DE-BKA", REF, NOW)
    assert sealed.startswith(PREFIX) and REF not in sealed and sealed == sealed.lower()
    opened = refs.open("DE-BKA", sealed, NOW + timedelta(days=1))
    assert opened.stored_ref == REF
    assert opened.issued_at == NOW.replace(second=0)


def test_another_requester_gets_unknown_reference(refs: References) -> None:
    sealed = refs.seal("DE-BKA", REF, NOW)
    with pytest.raises(UnknownReference):
        refs.open("NL-KLPD", sealed, NOW)


def test_the_same_record_to_two_requesters_or_twice_is_unlinkable(refs: References) -> None:
    seen = {refs.seal("DE-BKA", REF, NOW), refs.seal("NL-KLPD", REF, NOW)}
    seen.add(refs.seal("DE-BKA", REF, NOW))
    assert len(seen) == 3


def test_replicas_sharing_the_signing_key_open_each_others_references(refs: References) -> None:
    replica = References(reference_key(KEY))
    assert replica.open("DE-BKA", refs.seal("DE-BKA", REF, NOW), NOW).stored_ref == REF
    other_node = References.for_signing_key(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(UnknownReference):
        other_node.open("DE-BKA", refs.seal("DE-BKA", REF, NOW), NOW)


def test_a_reference_expires_after_its_lifetime(refs: References) -> None:
    sealed = refs.seal("DE-BKA", REF, NOW)
    assert refs.open("DE-BKA", sealed, NOW + timedelta(days=30)).stored_ref == REF
    with pytest.raises(ReferenceExpired):
        refs.open("DE-BKA", sealed, NOW + timedelta(days=30, minutes=1))


def test_every_flipped_bit_is_an_unknown_reference(refs: References) -> None:
    sealed = refs.seal("DE-BKA", REF, NOW)
    raw = base64.b32decode(sealed[len(PREFIX) :].upper() + "=" * (-len(sealed[4:]) % 8))
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 1 << (i % 8)
        text = PREFIX + base64.b32encode(bytes(flipped)).decode().rstrip("=").lower()
        with pytest.raises(UnknownReference):
            refs.open("DE-BKA", text, NOW)


@pytest.mark.parametrize(
    "garbage",
    ["", "rec_abcdefghijklmnopqrst", "ref_", "ref_!!!!", "ref_aaaa", PREFIX + "a" * 500, "ref_0"],
)
def test_garbage_is_an_unknown_reference(refs: References, garbage: str) -> None:
    with pytest.raises(UnknownReference):
        refs.open("DE-BKA", garbage, NOW)


def test_seal_refuses_what_no_record_ref_is(refs: References) -> None:
    with pytest.raises(ValueError):
        refs.seal("DE-BKA", "", NOW)
    with pytest.raises(ValueError):
        refs.seal("DE-BKA", "r" * 33, NOW)
    with pytest.raises(ValueError):
        refs.seal("DE-BKA", REF, NOW.replace(tzinfo=None))
