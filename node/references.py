"""Record references as a hit hands them out: bound to the requester, and expiring.

The store's own refs (``rec_...``) are the same for everyone, so handing them out would let
two requesters find out they asked about the same record, and let any node that learned one
present it. A hit instead returns the stored ref *sealed* for its requester: AES-GCM-SIV
under a key derived (HKDF-SHA256, info ``liaison hit reference v1``) from the node's Ed25519
signing key seed, so replicas, which share the signing key, open each other's references.
The requester's node id is the associated data, so a reference opens only for the node it
was given to; the plaintext is the issue time (minutes since the epoch) and the stored ref,
so it expires. A fresh random nonce per reference makes two references to one record
unlinkable, whoever holds them.

Opening fails in exactly two ways a peer can see: :class:`UnknownReference` for anything
that is not a reference this node gave *to that peer* (garbage, tampered, another node's,
another requester's: one answer, so nothing can be probed), and :class:`ReferenceExpired`.
The clock is a parameter (``now``).
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

PREFIX = "ref_"
KEY_INFO = b"liaison hit reference v1"
DEFAULT_TTL = timedelta(days=30)
_NONCE = 12
_TAG = 16
_MINUTES = struct.Struct(">I")  # minutes since the epoch: good until the year 10136
# The longest stored ref a reference may carry: records.ref is at most 32 characters.
_MAX_REF = 32
_MAX_LENGTH = len(PREFIX) + len(base64.b32encode(bytes(_NONCE + _MINUTES.size + _MAX_REF + _TAG)))


class ReferenceRefused(Exception):
    """A presented reference that does not name a record for this requester; ``reason``
    is the machine-readable code."""

    reason = "reference_refused"


class UnknownReference(ReferenceRefused):
    reason = "unknown_reference"


class ReferenceExpired(ReferenceRefused):
    reason = "reference_expired"


@dataclass(frozen=True, slots=True)
class Opened:
    """What a valid reference names: the stored ref, and when the hit handed it out."""

    stored_ref: str
    issued_at: datetime


def reference_key(signing_key: ed25519.Ed25519PrivateKey) -> bytes:
    """The 256-bit sealing key of a node, derived from its signing key's seed."""
    seed = signing_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO).derive(seed)


def _minutes(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("times must carry their zone (UTC); a naive datetime is ambiguous")
    return int(moment.timestamp() // 60)


class References:
    """Seals stored refs for a requester, and opens what requesters present."""

    def __init__(self, key: bytes, ttl: timedelta = DEFAULT_TTL) -> None:
        if ttl <= timedelta(0):
            raise ValueError("a reference's lifetime must be positive")
        self._aead = AESGCMSIV(key)
        self.ttl = ttl

    @classmethod
    def for_signing_key(
        cls, signing_key: ed25519.Ed25519PrivateKey, ttl: timedelta = DEFAULT_TTL
    ) -> References:
        return cls(reference_key(signing_key), ttl)

    def seal(self, requester: str, stored_ref: str, now: datetime) -> str:
        """The reference to ``stored_ref`` that only ``requester`` can present."""
        raw = stored_ref.encode()
        if not raw or len(raw) > _MAX_REF:
            raise ValueError(f"a stored ref is 1 to {_MAX_REF} bytes")
        nonce = os.urandom(_NONCE)
        plain = _MINUTES.pack(_minutes(now)) + raw
        sealed = nonce + self._aead.encrypt(nonce, plain, requester.encode())
        return PREFIX + base64.b32encode(sealed).decode().rstrip("=").lower()

    def open(self, requester: str, reference: str, now: datetime) -> Opened:
        """The stored ref ``reference`` names, if this node sealed it for ``requester`` no
        longer than ``ttl`` ago; else UnknownReference or ReferenceExpired."""
        unknown = UnknownReference("no such reference for this requester")
        if not reference.startswith(PREFIX) or len(reference) > _MAX_LENGTH:
            raise unknown
        text = reference[len(PREFIX) :].upper()
        try:
            sealed = base64.b32decode(text + "=" * (-len(text) % 8))
        except (binascii.Error, ValueError):
            raise unknown from None
        if len(sealed) <= _NONCE + _MINUTES.size + _TAG:
            raise unknown
        nonce, body = sealed[:_NONCE], sealed[_NONCE:]
        try:
            plain = self._aead.decrypt(nonce, body, requester.encode())
        except InvalidTag:
            raise unknown from None
        (minutes,) = _MINUTES.unpack_from(plain)
        issued = datetime.fromtimestamp(minutes * 60, UTC)
        if now - issued > self.ttl:
            raise ReferenceExpired(
                f"the reference was handed out at {issued.isoformat()}, more than "
                f"{self.ttl.days} days ago: ask again (Match) for a new one"
            )
        return Opened(plain[_MINUTES.size :].decode(), issued)
