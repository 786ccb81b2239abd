"""Authority-side tooling: enrol a node (certificate, signing key, member entry, starter
config), keep the members list (add, suspend, revoke, reinstate) and sign it into a
directory whose serial only ever grows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from federation.directory import (
    DEFAULT_ROLES,
    OVERSEER,
    Directory,
    DirectoryError,
    Member,
    MemberStatus,
    new_directory,
    sign_directory,
    verify_directory,
)
from federation.identity import InvalidIdentity, check_node_id
from federation.pki import (
    PkiError,
    create_signing_key,
    fingerprint,
    issue_node_certificate,
    issued_by,
    load_certificate,
    load_ed25519_private,
    peer_of,
    public_key_from_text,
    public_key_text,
)
from node.atomic_write import write_atomically

# The highest serial this authority ever signed, kept in its folder: a directory written to
# a new --out must still outgrow every one before it, or nodes would see two directories
# with one serial (a conflict) or an old one (a rollback) and refuse it.
SERIAL_FILE = "directory-serial"

# The policy library shipped beside the code (the repository's policies/ folder).
DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"

NODE_TOML = """\
# Liaison node configuration. Relative paths are relative to this file.
[node]
id = "{node_id}"
federation = "{federation}"
profile = "bilateral"

[server]
listen = "{endpoint}"
metrics = "{metrics}"

[tls]
certificate = "tls.crt"
key = "tls.key"
ca = "ca.crt"

[trust]
directory = "directory.json"
authority_public_key = "authority.pub"
signing_key = "signing.key"

[store]
url = "sqlite:///records.db"

[policy]
engine = "embedded"
policy_dir = "{policy_dir}"
data = "agreements.json"

[audit]
path = "audit.log"
"""


def _federation_of(authority: Path) -> str:
    try:
        return (authority / "federation").read_text().strip()
    except FileNotFoundError:
        raise PkiError(
            f"{authority} is not an authority folder (run `liaison federation init`)"
        ) from None


def _enrol(
    authority: Path,
    member_id: str,
    out: Path,
    *,
    endpoint: str,
    hosts: tuple[str, ...],
    roles: tuple[str, ...] = DEFAULT_ROLES,
) -> tuple[Member, str]:
    """What every member gets in its folder: a TLS certificate from the authority's CA, an
    Ed25519 signing key, the authority's public key, and its member entry (member.json).
    Returns the entry and the federation."""
    check_node_id(member_id)
    federation = _federation_of(authority)
    if (out / "tls.key").exists():
        raise PkiError(f"{out} already holds a member's keys; refusing to overwrite them")
    cert = issue_node_certificate(authority, federation, member_id, out, hosts=hosts)
    signing = create_signing_key(out / "signing.key")
    (out / "authority.pub").write_bytes((authority / "authority.pub").read_bytes())
    member = Member(
        node_id=member_id,
        endpoint=endpoint,
        certificate_sha256=fingerprint(cert),
        signing_public_key=public_key_text(signing),
        roles=roles,
    )
    (out / "member.json").write_text(json.dumps(member.to_json(), indent=2) + "\n")
    return member, federation


def enrol_node(
    authority: Path,
    node_id: str,
    out: Path,
    *,
    endpoint: str,
    hosts: tuple[str, ...],
    metrics: str,
    policy_dir: Path | None,
) -> Member:
    """A node's folder: its identity (see `_enrol`), a starter node.toml and an empty
    agreements file (neither overwritten)."""
    member, federation = _enrol(authority, node_id, out, endpoint=endpoint, hosts=hosts)
    config = out / "node.toml"
    if not config.exists():
        config.write_text(
            NODE_TOML.format(
                node_id=node_id,
                federation=federation,
                endpoint=endpoint,
                metrics=metrics,
                policy_dir=(policy_dir or DEFAULT_POLICY_DIR).resolve(),
            )
        )
    agreements = out / "agreements.json"
    if not agreements.exists():  # no agreement with anyone: every peer is refused
        agreements.write_text(json.dumps({"agreements": {}}, indent=2) + "\n")
    return member


def enrol_overseer(authority: Path, overseer_id: str, out: Path) -> Member:
    """An overseer's identity: the same kind of mTLS client certificate as a node's (so the
    same checks identify it) and signing key, and a member entry with `roles: ["overseer"]`
    and no endpoint: it only calls nodes."""
    member, _ = _enrol(authority, overseer_id, out, endpoint="", hosts=(), roles=(OVERSEER,))
    return member


def read_members(members_file: Path, *, missing_ok: bool = False) -> list[Member]:
    """The authority's members list: a JSON list of entries as `node enroll` writes them."""
    try:
        raw = json.loads(members_file.read_text())
    except FileNotFoundError:
        if missing_ok:
            return []
        raise DirectoryError(f"members file {members_file} not found") from None
    except json.JSONDecodeError as exc:
        raise DirectoryError(f"{members_file}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(raw, list):
        raise DirectoryError(f"{members_file}: must hold a JSON list of member entries")
    members = [Member.from_json(m, f"{members_file}: entry {i}") for i, m in enumerate(raw)]
    seen: set[str] = set()
    for m in members:
        if m.node_id in seen:
            raise DirectoryError(f"{members_file}: {m.node_id} is listed twice; keep one entry")
        seen.add(m.node_id)
    return members


def write_members(members_file: Path, members: list[Member]) -> None:
    """Sorted by node id, so the file diffs cleanly under version control."""
    entries = [m.to_json() for m in sorted(members, key=lambda m: m.node_id)]
    write_atomically(members_file, (json.dumps(entries, indent=2) + "\n").encode())


def _check_member_certificate(authority: Path, federation: str, member: Member, cert: Path) -> None:
    """When the node's certificate lies beside its member entry, check the entry against it:
    issued by this authority's CA, for this node id, with the fingerprint the entry states."""
    issued = load_certificate(cert)
    if not issued_by(issued, load_certificate(authority / "ca.crt")):
        raise PkiError(f"{cert} was not issued by the authority in {authority}")
    try:
        identity = peer_of(issued, federation)
    except InvalidIdentity as exc:
        raise PkiError(f"{cert}: {exc}") from None
    if identity.node_id != member.node_id:
        raise PkiError(f"{cert} is for {identity.node_id}, the member entry for {member.node_id}")
    if identity.sha256 != member.certificate_sha256:
        raise PkiError(
            f"the member entry's certificate_sha256 is not the fingerprint of {cert}: "
            "was the entry edited, or the node enrolled again?"
        )


def add_member(
    authority: Path, members_file: Path, member_file: Path, *, replace_keys: bool = False
) -> tuple[Member, str]:
    """Add a node's entry (from its member.json) to the members list, or update it.

    An entry with other keys than the one listed replaces it only with `replace_keys`
    (a re-enrolment must be deliberate), and a revoked node comes back only with new keys:
    the keys that were revoked stay revoked. The listed status is kept (adding the same
    entry again does not lift a suspension). Returns the entry and what was done.
    """
    federation = _federation_of(authority)
    try:
        raw = json.loads(member_file.read_text())
    except FileNotFoundError:
        raise DirectoryError(f"member file {member_file} not found") from None
    except json.JSONDecodeError as exc:
        raise DirectoryError(f"{member_file}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    member = Member.from_json(raw, str(member_file))
    cert = member_file.parent / "tls.crt"
    if cert.exists():
        _check_member_certificate(authority, federation, member, cert)
    members = read_members(members_file, missing_ok=True)
    listed = next((m for m in members if m.node_id == member.node_id), None)
    if listed is None:
        action = "added"
        member = replace(member, status=MemberStatus.ACTIVE)
    else:
        same_keys = (
            listed.certificate_sha256 == member.certificate_sha256
            and listed.signing_public_key == member.signing_public_key
        )
        if listed.status is MemberStatus.REVOKED:
            if not replace_keys:
                raise DirectoryError(
                    f"{member.node_id} is revoked; it can only return with new keys, "
                    "enrolled again and added with --replace"
                )
            if (
                listed.certificate_sha256 == member.certificate_sha256
                or listed.signing_public_key == member.signing_public_key
            ):
                raise DirectoryError(
                    f"{member.node_id} is revoked and this entry reuses a revoked key: "
                    "revocation is final; enrol the node again for new keys"
                )
            member, action = replace(member, status=MemberStatus.ACTIVE), "replaced"
        elif same_keys:
            member = replace(member, status=listed.status)
            action = "unchanged" if member == listed else "updated"
        elif not replace_keys:
            raise DirectoryError(
                f"{member.node_id} is already listed with other keys; if the node was "
                "enrolled again, add it with --replace"
            )
        else:
            member, action = replace(member, status=listed.status), "replaced"
        members = [m for m in members if m.node_id != member.node_id]
    members.append(member)
    write_members(members_file, members)
    return member, action


def set_member_status(
    members_file: Path, node_id: str, status: MemberStatus
) -> tuple[Member, bool]:
    """Suspend, revoke or reinstate a member; (the entry, whether it changed).

    Revocation is final: a revoked member is never reinstated nor suspended (its keys are
    compromised or withdrawn); a node that returns is enrolled again with new keys.
    """
    check_node_id(node_id)
    members = read_members(members_file)
    listed = next((m for m in members if m.node_id == node_id), None)
    if listed is None:
        raise DirectoryError(f"{node_id} is not in {members_file}")
    if listed.status is status:
        return listed, False
    if listed.status is MemberStatus.REVOKED:
        raise DirectoryError(
            f"{node_id} is revoked and revocation is final; to let the node back, enrol it "
            "again and `liaison directory add --replace` its new member.json"
        )
    updated = replace(listed, status=status)
    write_members(members_file, [updated if m.node_id == node_id else m for m in members])
    return updated, True


def _authority_serial(authority: Path) -> int:
    try:
        text = (authority / SERIAL_FILE).read_text().strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        raise DirectoryError(f"{authority / SERIAL_FILE} does not hold a serial: {text!r}")
    return int(text)


def _existing_serial(out: Path, authority: Path) -> int:
    """The serial of the directory already at `out` (0 if none): the next must be higher."""
    try:
        data = out.read_bytes()
    except FileNotFoundError:
        return 0
    key = public_key_from_text((authority / "authority.pub").read_text())
    try:
        existing = verify_directory(data, key, source=str(out), allow_expired=True)
    except DirectoryError as exc:
        raise DirectoryError(
            f"{out} exists but is not a directory signed by this authority ({exc.reason}); "
            "move it away or choose another --out"
        ) from None
    return existing.serial


def sign_members(
    authority: Path,
    members_file: Path,
    out: Path,
    *,
    serial: int | None = None,
    valid_days: int = 30,
) -> Directory:
    """Sign the members list into a directory at `out`.

    The serial defaults to one more than the highest this authority signed (or the one
    already at `out`); a serial that does not grow is refused, because every node would
    refuse it (a rollback, or two directories with one serial).
    """
    members = read_members(members_file)
    if valid_days < 1:
        raise DirectoryError("--valid-days must be at least 1")
    highest = max(_existing_serial(out, authority), _authority_serial(authority))
    if serial is None:
        serial = highest + 1
    elif serial <= highest:
        raise DirectoryError(
            f"serial {serial} is not above {highest}, the highest this authority signed: "
            f"nodes would refuse it; use {highest + 1} or omit --serial"
        )
    directory = new_directory(_federation_of(authority), serial, members, valid_days=valid_days)
    key = load_ed25519_private(authority / "authority.key")
    data = sign_directory(directory, key)
    # Never hand out what a node would refuse: verify it as a node will.
    verify_directory(data, key.public_key(), source=str(out))
    write_atomically(out, data)
    write_atomically(authority / SERIAL_FILE, f"{serial}\n".encode())
    return directory
