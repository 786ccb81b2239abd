"""Directory roles: nodes (the default, unwritten) and overseers (no endpoint needed)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation.directory import (
    Directory,
    DirectoryError,
    Member,
    new_directory,
    sign_directory,
    verify_directory,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "node_id": "EU-EDPS",
        "certificate_sha256": "a" * 64,
        "signing_public_key": "b" * 64,
        "roles": ["overseer"],
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def test_a_node_entry_has_no_roles_field_so_old_directories_keep_their_bytes() -> None:
    node = Member("DE-BKA", "127.0.0.1:1", "a" * 64, "b" * 64)
    assert node.roles == ("node",) and node.is_node and not node.is_overseer
    assert "roles" not in node.to_json()
    payload = new_directory("liaison.example", 1, [node], now=NOW).payload()
    assert b"roles" not in payload
    # An entry written before roles existed reads as a node.
    assert Member.from_json(node.to_json(), "x") == node


def test_an_overseer_needs_no_endpoint_and_round_trips() -> None:
    overseer = Member.from_json(_entry(), "entry")
    assert overseer.is_overseer and not overseer.is_node and overseer.endpoint == ""
    written = overseer.to_json()
    assert written["roles"] == ["overseer"] and "endpoint" not in written
    assert Member.from_json(written, "again") == overseer


def test_roles_are_signed_and_verified(tmp_path: Any) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    members = [
        Member("DE-BKA", "127.0.0.1:1", "a" * 64, "b" * 64),
        Member.from_json(_entry(), "overseer"),
    ]
    directory: Directory = new_directory("liaison.example", 2, members, now=NOW)
    loaded = verify_directory(sign_directory(directory, key), key.public_key(), now=NOW)
    assert loaded.member("EU-EDPS") == members[1]
    assert loaded.payload() == directory.payload()


def test_roles_are_canonical_whatever_order_they_are_given_in() -> None:
    both = Member("EU-EDPS", "x:1", "a" * 64, "b" * 64, roles=("overseer", "node"))
    assert both.roles == ("node", "overseer")
    assert Member.from_json(_entry(roles=["overseer", "node"], endpoint="x:1"), "e") == both


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (["auditor"], "unknown role 'auditor'; a member's roles are among node, overseer"),
        ([], "roles must be a non-empty list"),
        ("overseer", "roles must be a non-empty list"),
        (["overseer", "overseer"], "roles list a role twice"),
    ],
)
def test_bad_roles_are_refused_clearly(roles: Any, message: str) -> None:
    with pytest.raises(DirectoryError, match=message):
        Member.from_json(_entry(roles=roles), "entry 3")


def test_a_node_still_needs_an_endpoint() -> None:
    with pytest.raises(DirectoryError, match="lacks \\['endpoint'\\]"):
        Member.from_json(_entry(roles=["node"]), "entry")
    with pytest.raises(DirectoryError, match="unknown role"):
        Member("DE-BKA", "x:1", "a" * 64, "b" * 64, roles=("judge",))


def test_an_unknown_role_in_a_signed_directory_is_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    directory = new_directory(
        "liaison.example", 1, [Member("DE-BKA", "x:1", "a" * 64, "b" * 64)], now=NOW
    )
    doc = json.loads(directory.payload())
    doc["members"][0]["roles"] = ["root"]
    raw = json.dumps(doc).encode()
    data = json.dumps(
        {"payload": raw.decode(), "signature": base64.b64encode(key.sign(raw)).decode()}
    ).encode()
    with pytest.raises(DirectoryError, match="unknown role 'root'"):
        verify_directory(data, key.public_key(), now=NOW)
