"""The federation directory: who the members are, signed by the federation authority.

The file holds the payload as the exact bytes that were signed (a JSON string inside the
outer JSON), so verification never depends on re-serialising anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation.identity import InvalidIdentity, check_federation, check_node_id, country_of

FORMAT = "liaison-directory/v1"

# How far a directory's issue time may lie ahead of our clock: clocks drift a little, but a
# directory "issued" hours from now was made on a wrong clock or to outlive its expiry.
MAX_CLOCK_SKEW = timedelta(minutes=5)

# Machine-readable reasons a directory is refused: a fixed vocabulary, so they can be
# metric labels and refusal reasons a peer or an operator can act on.
BAD_SIGNATURE = "directory_bad_signature"
UNSIGNED = "directory_unsigned"
MALFORMED = "directory_malformed"
EXPIRED = "directory_expired"
NOT_YET_VALID = "directory_not_yet_valid"
ROLLBACK = "directory_rollback"
CONFLICT = "directory_conflict"
WRONG_FEDERATION = "directory_wrong_federation"
UNAVAILABLE = "directory_unavailable"
REASONS = frozenset(
    {
        BAD_SIGNATURE,
        UNSIGNED,
        MALFORMED,
        EXPIRED,
        NOT_YET_VALID,
        ROLLBACK,
        CONFLICT,
        WRONG_FEDERATION,
        UNAVAILABLE,
    }
)


class DirectoryError(ValueError):
    """The directory cannot be trusted; the message says why and what to do, `reason` says
    it in one stable word (one of REASONS) for metrics and refusals."""

    def __init__(self, message: str, reason: str = MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


# What a member may do. A "node" serves and calls the ExchangeService (it has an endpoint);
# an "overseer" (a data-protection authority, a court's inspector) calls only the
# OversightService and may have no endpoint. A member with no `roles` in the directory is a
# node, so directories signed before roles existed keep their exact bytes.
NODE = "node"
OVERSEER = "overseer"
ROLES = (NODE, OVERSEER)
DEFAULT_ROLES = (NODE,)


def check_roles(raw: Any, where: str) -> tuple[str, ...]:
    """A member's roles: a non-empty list of known roles, each once (DirectoryError if not),
    in the canonical order of ROLES."""
    if not isinstance(raw, list | tuple) or not raw:
        raise DirectoryError(f'{where}: roles must be a non-empty list, e.g. ["overseer"]')
    unknown = [r for r in raw if r not in ROLES]
    if unknown:
        raise DirectoryError(
            f"{where}: unknown role {unknown[0]!r}; a member's roles are among {', '.join(ROLES)}"
        )
    if len(set(raw)) != len(raw):
        raise DirectoryError(f"{where}: roles list a role twice")
    return tuple(r for r in ROLES if r in raw)


class MemberStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    endpoint: str
    certificate_sha256: str
    signing_public_key: str
    status: MemberStatus = MemberStatus.ACTIVE
    roles: tuple[str, ...] = DEFAULT_ROLES

    def __post_init__(self) -> None:
        # Canonical order, so one set of roles always signs to the same bytes.
        object.__setattr__(self, "roles", check_roles(list(self.roles), self.node_id))

    @property
    def country(self) -> str:
        return country_of(self.node_id)

    @property
    def is_node(self) -> bool:
        """Whether it serves and calls the ExchangeService."""
        return NODE in self.roles

    @property
    def is_overseer(self) -> bool:
        """Whether it may read the audit logs' entries through the OversightService."""
        return OVERSEER in self.roles

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Member:
        if not isinstance(obj, dict):
            raise DirectoryError(f"{where}: a member must be an object")
        roles = check_roles(obj["roles"], where) if "roles" in obj else DEFAULT_ROLES
        required = {"node_id", "certificate_sha256", "signing_public_key"}
        if NODE in roles:  # an overseer need not be reachable: it only calls
            required.add("endpoint")
        allowed = required | {"status", "country", "endpoint", "roles"}
        if missing := required - obj.keys():
            raise DirectoryError(f"{where}: member lacks {sorted(missing)}")
        if unknown := obj.keys() - allowed:
            raise DirectoryError(f"{where}: unknown member field(s) {sorted(unknown)}")
        try:
            node_id = check_node_id(str(obj["node_id"]))
            status = MemberStatus(obj.get("status", "active"))
        except (InvalidIdentity, ValueError) as exc:
            raise DirectoryError(f"{where}: {exc}") from None
        fp = str(obj["certificate_sha256"]).lower()
        if not _is_hex(fp, 64):
            raise DirectoryError(f"{where}: certificate_sha256 must be 64 hex characters")
        # Checked here, once, not by each user: a member whose key cannot be read would
        # otherwise fail later, e.g. a witnessing round that reaches it.
        signing_key = str(obj["signing_public_key"])
        if not _is_hex(signing_key.lower(), 64):
            raise DirectoryError(
                f"{where}: signing_public_key must be 64 hex characters (an Ed25519 key)"
            )
        return cls(
            node_id=node_id,
            endpoint=str(obj.get("endpoint", "")),
            certificate_sha256=fp,
            signing_public_key=signing_key,
            status=status,
            roles=roles,
        )

    def to_json(self) -> dict[str, Any]:
        """The member as the signed payload holds it: `roles` only when not the default
        (a node), and no `endpoint` for a member that has none and is no node."""
        out = asdict(self)
        out["status"] = self.status.value
        out["country"] = self.country
        if self.roles == DEFAULT_ROLES:
            del out["roles"]
        else:
            out["roles"] = list(self.roles)
        if not self.endpoint and not self.is_node:
            del out["endpoint"]
        return out


@dataclass(frozen=True, slots=True)
class Directory:
    federation: str
    serial: int
    issued_at: datetime
    expires_at: datetime
    members: tuple[Member, ...]
    # Members by node id: every request looks its caller up here.
    _by_id: dict[str, Member] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {m.node_id: m for m in self.members})

    def member(self, node_id: str) -> Member | None:
        return self._by_id.get(node_id)

    def payload(self) -> bytes:
        doc = {
            "format": FORMAT,
            "federation": self.federation,
            "serial": self.serial,
            "issued_at": self.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expires_at": self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "members": [m.to_json() for m in sorted(self.members, key=lambda m: m.node_id)],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        """SHA-256 of the canonical payload: two directories with one serial and different
        digests mean the authority signed two versions of one serial."""
        return hashlib.sha256(self.payload()).hexdigest()

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now


def _parse_time(text: Any, field: str) -> datetime:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise DirectoryError(f"directory {field} {text!r} is not YYYY-MM-DDTHH:MM:SSZ") from None


def _parse_payload(payload: bytes) -> Directory:
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise DirectoryError(f"directory payload is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DirectoryError(f"directory payload is not {FORMAT}")
    members_raw = doc.get("members")
    if not isinstance(members_raw, list):
        raise DirectoryError("directory payload has no members list")
    members = tuple(Member.from_json(m, f"member #{i}") for i, m in enumerate(members_raw))
    ids = [m.node_id for m in members]
    if len(set(ids)) != len(ids):
        raise DirectoryError("directory lists a node id twice")
    serial = doc.get("serial")
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
        raise DirectoryError("directory serial must be a positive integer")
    try:
        federation = check_federation(str(doc.get("federation")))
    except InvalidIdentity as exc:
        raise DirectoryError(str(exc)) from None
    issued_at = _parse_time(doc.get("issued_at"), "issued_at")
    expires_at = _parse_time(doc.get("expires_at"), "expires_at")
    if expires_at <= issued_at:
        raise DirectoryError(
            f"directory serial {serial} expires ({expires_at:%Y-%m-%dT%H:%M:%SZ}) "
            f"before it is issued ({issued_at:%Y-%m-%dT%H:%M:%SZ})"
        )
    return Directory(
        federation=federation,
        serial=serial,
        issued_at=issued_at,
        expires_at=expires_at,
        members=members,
    )


def sign_directory(directory: Directory, key: ed25519.Ed25519PrivateKey) -> bytes:
    """The signed directory file's bytes."""
    payload = directory.payload()
    doc = {
        "payload": payload.decode(),
        "signature": base64.b64encode(key.sign(payload)).decode(),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def verify_directory(
    data: bytes,
    authority: ed25519.Ed25519PublicKey,
    *,
    now: datetime | None = None,
    source: str = "directory",
    federation: str | None = None,
    allow_expired: bool = False,
) -> Directory:
    """Parse and verify a signed directory: raises DirectoryError, never returns it unverified.

    The signature is checked before the payload is parsed, so nothing an attacker wrote is
    interpreted. `federation`, when given, must be the directory's; `allow_expired` is for
    the authority's tooling (showing or superseding an old directory), never for a node.
    """
    now = now or datetime.now(UTC)
    try:
        outer = json.loads(data)
        payload = outer["payload"].encode()
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DirectoryError(
            f"{source} is not a signed directory (expected JSON with 'payload' and "
            "'signature'); make it with `liaison directory sign`",
            UNSIGNED,
        ) from None
    try:
        authority.verify(signature, payload)
    except InvalidSignature:
        raise DirectoryError(
            f"{source}: signature does not verify with the pinned federation authority key; "
            "it was altered or signed by another key: fetch a genuine directory",
            BAD_SIGNATURE,
        ) from None
    try:
        directory = _parse_payload(payload)
    except DirectoryError as exc:
        raise DirectoryError(f"{source}: {exc}", exc.reason) from None
    if federation is not None and directory.federation != federation:
        raise DirectoryError(
            f"{source} is for federation {directory.federation!r}, this node is in {federation!r}",
            WRONG_FEDERATION,
        )
    if directory.issued_at > now + MAX_CLOCK_SKEW:
        raise DirectoryError(
            f"{source} (serial {directory.serial}) is issued in the future, at "
            f"{directory.issued_at:%Y-%m-%dT%H:%M:%SZ}: check this node's clock and the "
            "authority's",
            NOT_YET_VALID,
        )
    if not allow_expired and directory.expired(now):
        raise DirectoryError(
            f"{source} expired at {directory.expires_at:%Y-%m-%dT%H:%M:%SZ} "
            f"(serial {directory.serial}); ask the federation authority for a fresh one",
            EXPIRED,
        )
    return directory


def check_not_older(
    held_serial: int, held_digest: str | None, candidate: Directory, source: str = "directory"
) -> bool:
    """Whether `candidate` is newer than what is held (serial and payload digest).

    False when it is the very directory held; DirectoryError when it is older (a rollback
    would bring back revoked members) or has the held serial with another payload (the
    authority signed two versions of one serial: its key is misused, trust neither).
    """
    if candidate.serial < held_serial:
        raise DirectoryError(
            f"{source} has serial {candidate.serial}, older than serial {held_serial} "
            "already held: refusing to roll back",
            ROLLBACK,
        )
    if candidate.serial == held_serial:
        if held_digest is not None and candidate.digest() != held_digest:
            raise DirectoryError(
                f"{source} has serial {candidate.serial}, the serial already held, but "
                "different contents: the authority signed two directories with one serial; "
                "report it to the federation authority",
                CONFLICT,
            )
        return False
    return True


def load_directory(
    path: Path, authority: ed25519.Ed25519PublicKey, *, now: datetime | None = None
) -> Directory:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DirectoryError(f"directory file {path} not found", UNAVAILABLE) from None
    return verify_directory(data, authority, now=now, source=str(path))


def new_directory(
    federation: str,
    serial: int,
    members: list[Member],
    *,
    now: datetime | None = None,
    valid_days: int = 30,
) -> Directory:
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    return Directory(
        federation=check_federation(federation),
        serial=serial,
        issued_at=now,
        expires_at=now + timedelta(days=valid_days),
        members=tuple(members),
    )
