"""`liaison directory add|suspend|reinstate|revoke|sign|show` as the authority's operator meets
them: real subprocesses, a real authority, real enrolled nodes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from federation.directory import new_directory, sign_directory, verify_directory
from federation.pki import create_authority, load_ed25519_private, public_key_from_text
from node.enrol import enrol_node, read_members

FED = "liaison.example"


def liaison(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """An operator error: exit 2, one line on stderr that starts `liaison: error:`."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liaison: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def enrol(authority: Path, node_id: str, folder: Path) -> Path:
    enrol_node(
        authority,
        node_id,
        folder,
        endpoint=f"127.0.0.1:{7000 + len(node_id)}",
        hosts=("127.0.0.1",),
        metrics="",
        policy_dir=None,
    )
    return folder / "member.json"


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Path]:
    authority = tmp_path / "authority"
    create_authority(authority, FED)
    return {
        "authority": authority,
        "members": tmp_path / "members.json",
        "out": tmp_path / "directory.json",
        "DE": enrol(authority, "DE-BKA", tmp_path / "DE-BKA"),
        "FR": enrol(authority, "FR-DGPN", tmp_path / "FR-DGPN"),
    }


@pytest.mark.parametrize("action", ["add", "suspend", "reinstate", "revoke", "sign", "show"])
def test_every_directory_command_has_help(action: str) -> None:
    result = liaison("directory", action, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: liaison directory" in result.stdout


def test_the_authority_workflow(world: dict[str, Path]) -> None:
    a, members, out = world["authority"], world["members"], world["out"]
    result = liaison(
        "directory", "add", "--authority", a, "--members", members, "--member", world["DE"]
    )
    assert result.returncode == 0, result.stderr
    assert "DE-BKA added" in result.stdout
    assert (
        liaison(
            "directory", "add", "--authority", a, "--members", members, "--member", world["FR"]
        ).returncode
        == 0
    )
    again = liaison(
        "directory", "add", "--authority", a, "--members", members, "--member", world["DE"]
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert [m.node_id for m in read_members(members)] == ["DE-BKA", "FR-DGPN"]

    # The serial starts at 1 and grows by itself.
    first = liaison("directory", "sign", "--authority", a, "--members", members, "--out", out)
    assert first.returncode == 0, first.stderr
    assert "directory serial 1 with 2 member(s)" in first.stdout
    second = liaison("directory", "sign", "--authority", a, "--members", members, "--out", out)
    assert "directory serial 2 " in second.stdout
    # A serial that does not grow is refused: every node would refuse it.
    for serial in ("2", "1"):
        refused(
            liaison(
                "directory", "sign", "--authority", a, "--members", members, "--out", out,
                "--serial", serial,
            ),
            f"serial {serial} is not above 2",
            "use 3",
        )  # fmt: skip
    explicit = liaison(
        "directory", "sign", "--authority", a, "--members", members, "--out", out, "--serial", "10"
    )
    assert "directory serial 10 " in explicit.stdout

    # Suspend, sign, show.
    result = liaison("directory", "suspend", "FR-DGPN", "--members", members)
    assert result.returncode == 0 and "FR-DGPN is now suspended" in result.stdout
    assert (
        "already suspended"
        in liaison("directory", "suspend", "FR-DGPN", "--members", members).stdout
    )
    liaison("directory", "sign", "--authority", a, "--members", members, "--out", out)
    shown = liaison("directory", "show", out, "--authority-key", a / "authority.pub")
    assert shown.returncode == 0, shown.stderr
    assert "directory serial 11 of federation liaison.example (signature verified, valid)" in (
        shown.stdout
    )
    rows = {line.split()[0]: line.split() for line in shown.stdout.splitlines() if "-" in line[:8]}
    assert rows["DE-BKA"][1:3] == ["DE", "active"]
    assert rows["FR-DGPN"][1:3] == ["FR", "suspended"]
    doc = json.loads(
        liaison("directory", "show", out, "--authority-key", a / "authority.pub", "--json").stdout
    )
    assert doc["serial"] == 11 and doc["expired"] is False
    assert {m["node_id"]: m["status"] for m in doc["members"]} == {
        "DE-BKA": "active",
        "FR-DGPN": "suspended",
    }
    key = public_key_from_text((a / "authority.pub").read_text())
    assert doc["sha256"] == verify_directory(out.read_bytes(), key).digest()

    # Reinstate; then revoke, which is final.
    assert (
        "FR-DGPN is now active"
        in liaison("directory", "reinstate", "FR-DGPN", "--members", members).stdout
    )
    assert (
        "FR-DGPN is now revoked"
        in liaison("directory", "revoke", "FR-DGPN", "--members", members).stdout
    )
    for action in ("reinstate", "suspend"):
        refused(
            liaison("directory", action, "FR-DGPN", "--members", members),
            "FR-DGPN is revoked and revocation is final",
        )
    refused(
        liaison(
            "directory", "add", "--authority", a, "--members", members, "--member", world["FR"]
        ),
        "FR-DGPN is revoked",
        "--replace",
    )
    refused(
        liaison(
            "directory", "add", "--authority", a, "--members", members, "--member", world["FR"],
            "--replace",
        ),
        "reuses a revoked key",
    )  # fmt: skip
    # Enrolled again with new keys, the node may come back.
    new_fr = enrol(a, "FR-DGPN", world["FR"].parent.parent / "FR-DGPN-2")
    back = liaison(
        "directory", "add", "--authority", a, "--members", members, "--member", new_fr, "--replace"
    )
    assert back.returncode == 0, back.stderr
    assert "FR-DGPN replaced" in back.stdout and "(active," in back.stdout
    refused(liaison("directory", "revoke", "IT-CC", "--members", members), "IT-CC is not in")


def test_other_keys_replace_an_entry_only_when_asked(
    world: dict[str, Path], tmp_path: Path
) -> None:
    a, members = world["authority"], world["members"]
    liaison("directory", "add", "--authority", a, "--members", members, "--member", world["DE"])
    liaison("directory", "suspend", "DE-BKA", "--members", members)
    re_enrolled = enrol(a, "DE-BKA", tmp_path / "DE-BKA-2")
    refused(
        liaison(
            "directory", "add", "--authority", a, "--members", members, "--member", re_enrolled
        ),
        "DE-BKA is already listed with other keys",
        "--replace",
    )
    result = liaison(
        "directory", "add", "--authority", a, "--members", members, "--member", re_enrolled,
        "--replace",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (member,) = read_members(members)
    assert member.certificate_sha256 == json.loads(re_enrolled.read_text())["certificate_sha256"]
    assert member.status.value == "suspended"  # a re-enrolment does not lift a suspension
    # Only the endpoint changed: an update, no --replace needed.
    entry = json.loads(re_enrolled.read_text()) | {"endpoint": "10.0.0.1:7001"}
    re_enrolled.write_text(json.dumps(entry))
    result = liaison(
        "directory", "add", "--authority", a, "--members", members, "--member", re_enrolled
    )
    assert "DE-BKA updated" in result.stdout
    assert read_members(members)[0].endpoint == "10.0.0.1:7001"


def test_add_checks_the_entry_against_the_certificate_beside_it(
    world: dict[str, Path], tmp_path: Path
) -> None:
    a, members = world["authority"], world["members"]
    entry = json.loads(world["DE"].read_text())
    world["DE"].write_text(json.dumps(entry | {"certificate_sha256": "0" * 64}))
    refused(
        liaison(
            "directory", "add", "--authority", a, "--members", members, "--member", world["DE"]
        ),
        "is not the fingerprint of",
    )
    world["DE"].write_text(json.dumps(entry | {"node_id": "FR-DGPN"}))
    refused(
        liaison(
            "directory", "add", "--authority", a, "--members", members, "--member", world["DE"]
        ),
        "is for DE-BKA, the member entry for FR-DGPN",
    )
    # Enrolled by another federation authority: not ours to list.
    create_authority(tmp_path / "other", FED)
    foreign = enrol(tmp_path / "other", "NL-KLPD", tmp_path / "NL-KLPD")
    refused(
        liaison("directory", "add", "--authority", a, "--members", members, "--member", foreign),
        "was not issued by the authority in",
    )
    refused(
        liaison(
            "directory",
            "add",
            "--authority",
            a,
            "--members",
            members,
            "--member",
            tmp_path / "none.json",
        ),
        "member file",
        "not found",
    )
    assert not members.exists()


def test_sign_outgrows_every_serial_the_authority_signed(
    world: dict[str, Path], tmp_path: Path
) -> None:
    a, members, out = world["authority"], world["members"], world["out"]
    liaison("directory", "add", "--authority", a, "--members", members, "--member", world["DE"])
    liaison(
        "directory", "sign", "--authority", a, "--members", members, "--out", out, "--serial", "5"
    )
    elsewhere = tmp_path / "elsewhere" / "directory.json"
    result = liaison(
        "directory", "sign", "--authority", a, "--members", members, "--out", elsewhere
    )
    assert result.returncode == 0, result.stderr
    assert "directory serial 6 " in result.stdout
    refused(
        liaison(
            "directory", "sign", "--authority", a, "--members", members,
            "--out", tmp_path / "third.json", "--serial", "6",
        ),
        "serial 6 is not above 6",
    )  # fmt: skip


def test_sign_refuses_to_overwrite_a_foreign_file_and_bad_members(
    world: dict[str, Path], tmp_path: Path
) -> None:
    a, members, out = world["authority"], world["members"], world["out"]
    out.write_text("not a directory")
    liaison("directory", "add", "--authority", a, "--members", members, "--member", world["DE"])
    refused(
        liaison("directory", "sign", "--authority", a, "--members", members, "--out", out),
        "exists but is not a directory signed by this authority",
    )
    assert out.read_text() == "not a directory"
    twice = json.loads(members.read_text()) * 2
    members.write_text(json.dumps(twice))
    refused(
        liaison(
            "directory",
            "sign",
            "--authority",
            a,
            "--members",
            members,
            "--out",
            tmp_path / "d.json",
        ),
        "DE-BKA is listed twice",
    )
    refused(
        liaison(
            "directory", "sign", "--authority", a, "--members", tmp_path / "none.json",
            "--out", tmp_path / "d.json",
        ),
        "members file",
        "not found",
    )  # fmt: skip


def test_show_verifies_and_flags_expiry(world: dict[str, Path], tmp_path: Path) -> None:
    a = world["authority"]
    key = load_ed25519_private(a / "authority.key")
    past = datetime.now(UTC) - timedelta(days=10)
    old = tmp_path / "old.json"
    old.write_bytes(sign_directory(new_directory(FED, 3, [], now=past, valid_days=1), key))
    result = liaison("directory", "show", old, "--authority-key", a / "authority.pub")
    assert result.returncode == 1
    assert "(signature verified, EXPIRED)" in result.stdout
    assert "expired at" in result.stderr and "nodes refuse it" in result.stderr
    doc = json.loads(
        liaison("directory", "show", old, "--authority-key", a / "authority.pub", "--json").stdout
    )
    assert doc["expired"] is True and doc["members"] == []
    create_authority(tmp_path / "other", FED)
    refused(
        liaison("directory", "show", old, "--authority-key", tmp_path / "other" / "authority.pub"),
        "signature does not verify",
    )
    refused(
        liaison(
            "directory", "show", tmp_path / "none.json", "--authority-key", a / "authority.pub"
        ),
        "none.json",
    )
