"""Authority-side tooling: enrol a node (certificate, signing key, member entry, starter
config) and sign the members list into a directory."""

from __future__ import annotations

import json
from pathlib import Path

from federation.directory import Directory, DirectoryError, Member, new_directory, sign_directory
from federation.identity import check_node_id
from federation.pki import (
    PkiError,
    create_signing_key,
    fingerprint,
    issue_node_certificate,
    load_ed25519_private,
    public_key_text,
)

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
    check_node_id(node_id)
    federation = _federation_of(authority)
    if (out / "tls.key").exists():
        raise PkiError(f"{out} already holds a node's keys; refusing to overwrite them")
    cert = issue_node_certificate(authority, federation, node_id, out, hosts=hosts)
    signing = create_signing_key(out / "signing.key")
    (out / "authority.pub").write_bytes((authority / "authority.pub").read_bytes())
    member = Member(
        node_id=node_id,
        endpoint=endpoint,
        certificate_sha256=fingerprint(cert),
        signing_public_key=public_key_text(signing),
    )
    (out / "member.json").write_text(json.dumps(member.to_json(), indent=2) + "\n")
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


def sign_members(
    authority: Path, members_file: Path, out: Path, *, serial: int, valid_days: int
) -> Directory:
    try:
        raw = json.loads(members_file.read_text())
    except json.JSONDecodeError as exc:
        raise DirectoryError(f"{members_file}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(raw, list):
        raise DirectoryError(f"{members_file}: must hold a JSON list of member entries")
    members = [Member.from_json(m, f"{members_file}: entry {i}") for i, m in enumerate(raw)]
    directory = new_directory(_federation_of(authority), serial, members, valid_days=valid_days)
    key = load_ed25519_private(authority / "authority.key")
    out.write_bytes(sign_directory(directory, key))
    return directory
