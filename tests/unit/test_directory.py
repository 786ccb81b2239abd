"""The signed federation directory: real Ed25519 signatures, real files, an injected clock."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation.directory import (
    FORMAT,
    MAX_CLOCK_SKEW,
    REASONS,
    Directory,
    DirectoryError,
    Member,
    MemberStatus,
    check_not_older,
    load_directory,
    new_directory,
    sign_directory,
    verify_directory,
)
from federation.identity import InvalidIdentity

FED = "liaison.example"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _member(node_id: str, **changes: Any) -> Member:
    base = Member(
        node_id=node_id,
        endpoint=f"{node_id.lower()}.example:7001",
        certificate_sha256="a" * 64,
        signing_public_key="b" * 64,
        status=MemberStatus.ACTIVE,
    )
    return replace(base, **changes)


@pytest.fixture()
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture()
def directory() -> Directory:
    return new_directory(
        FED,
        3,
        [
            _member("FR-PN"),
            _member("DE-BKA", certificate_sha256="c" * 64),
            _member("NL-KMAR", status=MemberStatus.SUSPENDED),
        ],
        now=NOW,
        valid_days=30,
    )


def _resign(payload: dict[str, Any], key: ed25519.Ed25519PrivateKey) -> bytes:
    """A file signed by the genuine key over a hand-made payload."""
    raw = json.dumps(payload).encode()
    return json.dumps(
        {"payload": raw.decode(), "signature": base64.b64encode(key.sign(raw)).decode()}
    ).encode()


def _payload(directory: Directory) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(directory.payload())
    return result


# --- round trip -------------------------------------------------------------------------------


def test_round_trip_through_a_file(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    path = tmp_path / "directory.json"
    path.write_bytes(sign_directory(directory, key))
    loaded = load_directory(path, key.public_key(), now=NOW + timedelta(days=1))
    assert loaded.federation == FED
    assert loaded.serial == 3
    assert loaded.issued_at == NOW
    assert loaded.expires_at == NOW + timedelta(days=30)
    assert {m.node_id for m in loaded.members} == {"DE-BKA", "FR-PN", "NL-KMAR"}
    assert loaded.member("DE-BKA") == directory.member("DE-BKA")
    kmar = loaded.member("NL-KMAR")
    assert kmar is not None
    assert kmar.status is MemberStatus.SUSPENDED
    assert loaded.member("IT-CC") is None
    # Re-serialising the loaded directory gives the bytes that were signed.
    assert loaded.payload() == directory.payload()


def test_payload_is_canonical_and_sorted(directory: Directory) -> None:
    doc = _payload(directory)
    assert doc["format"] == FORMAT
    assert [m["node_id"] for m in doc["members"]] == ["DE-BKA", "FR-PN", "NL-KMAR"]
    assert doc["members"][0]["country"] == "DE"
    assert doc["members"][2]["status"] == "suspended"
    assert doc["issued_at"] == "2026-03-01T12:00:00Z"
    shuffled = replace(directory, members=tuple(reversed(directory.members)))
    assert shuffled.payload() == directory.payload()


def test_new_directory_drops_microseconds_and_checks_the_federation() -> None:
    d = new_directory(FED, 1, [], now=NOW.replace(microsecond=123456), valid_days=1)
    assert d.issued_at == NOW and d.expires_at == NOW + timedelta(days=1)
    with pytest.raises(InvalidIdentity):
        new_directory("Not A Name", 1, [], now=NOW)


def test_member_country_comes_from_the_node_id() -> None:
    assert _member("DE-BKA").country == "DE"


# --- signatures -------------------------------------------------------------------------------


def test_one_flipped_byte_in_the_payload_is_refused(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    outer = json.loads(sign_directory(directory, key))
    payload = outer["payload"]
    at = payload.index('"serial":3') + len('"serial":')
    outer["payload"] = payload[:at] + "4" + payload[at + 1 :]
    with pytest.raises(
        DirectoryError,
        match=r"directory: signature does not verify with the "
        r"pinned federation authority key.*fetch a genuine directory",
    ):
        verify_directory(json.dumps(outer).encode(), key.public_key(), now=NOW)


def test_one_flipped_bit_in_the_signature_is_refused(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    outer = json.loads(sign_directory(directory, key))
    sig = bytearray(base64.b64decode(outer["signature"]))
    sig[10] ^= 0x01
    outer["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(DirectoryError, match="signature does not verify"):
        verify_directory(json.dumps(outer).encode(), key.public_key(), now=NOW)


def test_a_directory_signed_by_another_key_is_refused(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    path = tmp_path / "directory.json"
    path.write_bytes(sign_directory(directory, ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(DirectoryError) as info:
        load_directory(path, key.public_key(), now=NOW)
    assert str(info.value).startswith(f"{path}: signature does not verify")
    assert "signed by another key" in str(info.value)


def test_signature_is_checked_before_the_payload_is_parsed(key: ed25519.Ed25519PrivateKey) -> None:
    data = json.dumps(
        {"payload": "{not json", "signature": base64.b64encode(b"x" * 64).decode()}
    ).encode()
    with pytest.raises(DirectoryError, match="signature does not verify"):
        verify_directory(data, key.public_key(), now=NOW)


# --- expiry -----------------------------------------------------------------------------------


def test_expired_directory_is_refused_with_the_date_and_serial(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    data = sign_directory(directory, key)
    expiry = NOW + timedelta(days=30)
    verify_directory(data, key.public_key(), now=expiry - timedelta(seconds=1))
    for later in (expiry, expiry + timedelta(days=400)):
        with pytest.raises(
            DirectoryError,
            match=r"expired at 2026-03-31T12:00:00Z \(serial 3\); ask the "
            r"federation authority for a fresh one",
        ):
            verify_directory(data, key.public_key(), now=later)


# --- unsigned and garbage files ---------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\xff garbage",
        b"[]",
        b'"just a string"',
        b"{}",
        b'{"payload": "{}"}',
        b'{"signature": "AAAA"}',
        b'{"payload": 1, "signature": "AAAA"}',
        b'{"payload": "{}", "signature": "not base64!"}',
        b'{"payload": "{}", "signature": 5}',
    ],
)
def test_unsigned_or_garbage_is_not_a_signed_directory(
    data: bytes, key: ed25519.Ed25519PrivateKey
) -> None:
    with pytest.raises(
        DirectoryError,
        match=r"^directory is not a signed directory .*"
        r"liaison directory sign",
    ):
        verify_directory(data, key.public_key(), now=NOW)


def test_a_bare_payload_without_signature_is_refused(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    path = tmp_path / "directory.json"
    path.write_bytes(directory.payload())
    with pytest.raises(DirectoryError, match=rf"^{path} is not a signed directory"):
        load_directory(path, key.public_key(), now=NOW)


def test_missing_file_is_named(tmp_path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(DirectoryError, match=r"directory file .*nowhere\.json not found"):
        load_directory(tmp_path / "nowhere.json", key.public_key(), now=NOW)


# --- well signed, badly formed payloads -------------------------------------------------------


def test_duplicate_node_ids_are_refused(key: ed25519.Ed25519PrivateKey) -> None:
    d = new_directory(FED, 1, [_member("DE-BKA"), _member("DE-BKA", endpoint="x:1")], now=NOW)
    with pytest.raises(DirectoryError, match="lists a node id twice"):
        verify_directory(sign_directory(d, key), key.public_key(), now=NOW)


def test_unknown_member_fields_are_refused(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    doc = _payload(directory)
    doc["members"][1]["role"] = "admin"
    with pytest.raises(DirectoryError, match=r"member #1: unknown member field\(s\) \['role'\]"):
        verify_directory(_resign(doc, key), key.public_key(), now=NOW)


def test_missing_member_fields_are_named(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    doc = _payload(directory)
    del doc["members"][0]["endpoint"]
    with pytest.raises(DirectoryError, match=r"member #0: member lacks \['endpoint'\]"):
        verify_directory(_resign(doc, key), key.public_key(), now=NOW)


@pytest.mark.parametrize("fp", ["a" * 63, "a" * 65, "g" * 64, "", "a" * 62 + "  "])
def test_bad_fingerprint_is_refused(fp: str, key: ed25519.Ed25519PrivateKey) -> None:
    d = new_directory(FED, 1, [_member("DE-BKA", certificate_sha256=fp)], now=NOW)
    with pytest.raises(DirectoryError, match="member #0: certificate_sha256 must be 64 hex"):
        verify_directory(sign_directory(d, key), key.public_key(), now=NOW)


@pytest.mark.parametrize("text", ["b" * 63, "b" * 66, "z" * 64, "", "b" * 62 + "  "])
def test_bad_signing_key_is_refused(text: str, key: ed25519.Ed25519PrivateKey) -> None:
    d = new_directory(FED, 1, [_member("DE-BKA", signing_public_key=text)], now=NOW)
    with pytest.raises(DirectoryError, match="member #0: signing_public_key must be 64 hex"):
        verify_directory(sign_directory(d, key), key.public_key(), now=NOW)


def test_upper_case_fingerprint_is_normalised(key: ed25519.Ed25519PrivateKey) -> None:
    d = new_directory(FED, 1, [_member("DE-BKA", certificate_sha256="AB" * 32)], now=NOW)
    loaded = verify_directory(sign_directory(d, key), key.public_key(), now=NOW)
    assert loaded.members[0].certificate_sha256 == "ab" * 32


@pytest.mark.parametrize("serial", [0, -1])
def test_serial_below_one_is_refused(serial: int, key: ed25519.Ed25519PrivateKey) -> None:
    d = new_directory(FED, serial, [_member("DE-BKA")], now=NOW)
    with pytest.raises(DirectoryError, match="serial must be a positive integer"):
        verify_directory(sign_directory(d, key), key.public_key(), now=NOW)


@pytest.mark.parametrize("serial", ["3", 3.0, None, True])
def test_serial_must_be_an_integer(
    serial: object, key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    doc = _payload(directory)
    doc["serial"] = serial
    with pytest.raises(DirectoryError, match="serial must be a positive integer"):
        verify_directory(_resign(doc, key), key.public_key(), now=NOW)


def test_bad_member_node_id_and_status(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    doc = _payload(directory)
    doc["members"][0]["node_id"] = "de-bka"
    with pytest.raises(DirectoryError, match=r"member #0: invalid node id 'de-bka'"):
        verify_directory(_resign(doc, key), key.public_key(), now=NOW)
    doc = _payload(directory)
    doc["members"][2]["status"] = "banned"
    with pytest.raises(DirectoryError, match=r"member #2: 'banned' is not a valid MemberStatus"):
        verify_directory(_resign(doc, key), key.public_key(), now=NOW)


def test_member_must_be_an_object(key: ed25519.Ed25519PrivateKey, directory: Directory) -> None:
    doc = _payload(directory)
    doc["members"].append("IT-CC")
    with pytest.raises(DirectoryError, match="member #3: a member must be an object"):
        verify_directory(_resign(doc, key), key.public_key(), now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "liaison-directory/v0"}, "payload is not liaison-directory/v1"),
        ({"members": None}, "has no members list"),
        ({"federation": "Bad Name"}, "invalid federation name 'Bad Name'"),
        ({"expires_at": "2026-04-01"}, r"expires_at '2026-04-01' is not YYYY-MM-DDTHH:MM:SSZ"),
        ({"issued_at": None}, r"issued_at None is not YYYY-MM-DDTHH:MM:SSZ"),
    ],
)
def test_payload_fields_are_checked(
    change: dict[str, Any], message: str, key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    doc = _payload(directory) | change
    with pytest.raises(DirectoryError, match=message):
        verify_directory(_resign(doc, key), key.public_key(), now=NOW)


def test_signed_payload_that_is_not_json(key: ed25519.Ed25519PrivateKey) -> None:
    raw = b"not json at all"
    data = json.dumps(
        {"payload": raw.decode(), "signature": base64.b64encode(key.sign(raw)).decode()}
    ).encode()
    with pytest.raises(DirectoryError, match="directory payload is not JSON"):
        verify_directory(data, key.public_key(), now=NOW)


def test_member_country_field_is_recomputed_not_trusted(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    doc = _payload(directory)
    doc["members"][0]["country"] = "FR"  # DE-BKA
    loaded = verify_directory(_resign(doc, key), key.public_key(), now=NOW)
    bka = loaded.member("DE-BKA")
    assert bka is not None
    assert bka.country == "DE"


# --- machine-readable reasons -----------------------------------------------------------------


def _reason(data: bytes, key: ed25519.Ed25519PublicKey, **kwargs: Any) -> str:
    with pytest.raises(DirectoryError) as info:
        verify_directory(data, key, **kwargs)
    return info.value.reason


def test_every_refusal_names_its_reason(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    pub = key.public_key()
    good = sign_directory(directory, key)
    assert _reason(b"{}", pub, now=NOW) == "directory_unsigned"
    assert _reason(good, ed25519.Ed25519PrivateKey.generate().public_key(), now=NOW) == (
        "directory_bad_signature"
    )
    later = NOW + timedelta(days=31)
    assert _reason(good, pub, now=later) == "directory_expired"
    bad = _payload(directory) | {"format": "other"}
    assert _reason(_resign(bad, key), pub, now=NOW) == "directory_malformed"
    assert _reason(good, pub, now=NOW, federation="other.example") == "directory_wrong_federation"
    assert set(REASONS) >= {
        "directory_unsigned",
        "directory_bad_signature",
        "directory_expired",
        "directory_malformed",
        "directory_wrong_federation",
        "directory_not_yet_valid",
        "directory_rollback",
        "directory_conflict",
    }


def test_a_plain_directory_error_is_malformed() -> None:
    assert DirectoryError("x").reason == "directory_malformed"


def test_wrong_federation_is_refused_only_when_asked(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    data = sign_directory(directory, key)
    assert verify_directory(data, key.public_key(), now=NOW, federation=FED).serial == 3
    with pytest.raises(DirectoryError, match=r"is for federation 'liaison.example'"):
        verify_directory(data, key.public_key(), now=NOW, federation="other.example")


# --- issue time -------------------------------------------------------------------------------


def test_issue_time_in_the_future_is_refused_beyond_the_skew(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    data = sign_directory(directory, key)
    # A few minutes of clock drift are tolerated ...
    verify_directory(data, key.public_key(), now=NOW - MAX_CLOCK_SKEW)
    # ... more is a wrong clock or a directory made to outlive its expiry.
    with pytest.raises(DirectoryError, match="issued in the future") as info:
        verify_directory(data, key.public_key(), now=NOW - MAX_CLOCK_SKEW - timedelta(seconds=1))
    assert info.value.reason == "directory_not_yet_valid"


def test_expiry_before_issue_is_malformed(
    key: ed25519.Ed25519PrivateKey, directory: Directory
) -> None:
    doc = _payload(directory) | {"expires_at": "2026-03-01T11:59:59Z"}
    with pytest.raises(DirectoryError, match=r"expires .* before it is issued") as info:
        verify_directory(_resign(doc, key), key.public_key(), now=NOW)
    assert info.value.reason == "directory_malformed"


def test_allow_expired_is_for_tooling(key: ed25519.Ed25519PrivateKey, directory: Directory) -> None:
    data = sign_directory(directory, key)
    later = NOW + timedelta(days=400)
    assert verify_directory(data, key.public_key(), now=later, allow_expired=True).serial == 3
    # ... but never a bad signature.
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(DirectoryError, match="signature does not verify"):
        verify_directory(data, other, now=later, allow_expired=True)


def test_expired_helper(directory: Directory) -> None:
    assert not directory.expired(NOW)
    assert directory.expired(directory.expires_at)


# --- accepting only newer ---------------------------------------------------------------------


def test_check_not_older_takes_a_newer_serial(directory: Directory) -> None:
    newer = replace(directory, serial=4)
    assert check_not_older(directory.serial, directory.digest(), newer) is True


def test_check_not_older_refuses_a_rollback(directory: Directory) -> None:
    older = replace(directory, serial=2)
    with pytest.raises(DirectoryError, match="serial 2, older than serial 3") as info:
        check_not_older(directory.serial, directory.digest(), older, "peer FR-PN")
    assert info.value.reason == "directory_rollback"
    assert str(info.value).startswith("peer FR-PN has serial 2")


def test_check_not_older_knows_the_same_directory(directory: Directory) -> None:
    same = replace(directory, members=tuple(reversed(directory.members)))
    assert check_not_older(directory.serial, directory.digest(), same) is False


def test_check_not_older_refuses_two_directories_with_one_serial(directory: Directory) -> None:
    other = replace(directory, members=directory.members[:1])
    with pytest.raises(DirectoryError, match="two directories with one serial") as info:
        check_not_older(directory.serial, directory.digest(), other)
    assert info.value.reason == "directory_conflict"
    reissued = replace(directory, issued_at=NOW + timedelta(seconds=1))
    with pytest.raises(DirectoryError, match="different contents"):
        check_not_older(directory.serial, directory.digest(), reissued)


def test_check_not_older_against_a_remembered_floor(directory: Directory) -> None:
    assert check_not_older(0, None, directory) is True
    assert check_not_older(3, directory.digest(), directory) is False
    assert check_not_older(3, None, directory) is False
    with pytest.raises(DirectoryError, match="roll back"):
        check_not_older(4, "0" * 64, directory)
    with pytest.raises(DirectoryError, match="different contents"):
        check_not_older(3, "0" * 64, directory)


def test_digest_is_of_the_canonical_payload(directory: Directory) -> None:
    import hashlib

    assert directory.digest() == hashlib.sha256(directory.payload()).hexdigest()
    assert replace(directory, serial=4).digest() != directory.digest()


def test_missing_file_is_unavailable(tmp_path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(DirectoryError) as info:
        load_directory(tmp_path / "nowhere.json", key.public_key(), now=NOW)
    assert info.value.reason == "directory_unavailable"
