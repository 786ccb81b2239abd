"""What a request must show before the node reads it: the member's own signature over the
exact bytes sent, an issue time within the clock-skew window, and a nonce never seen before.

The replay cache is memory for speed and the audit log for durability: every request's
nonce is in its audit entry, which is durable before any answer leaves, so after a crash
(even kill -9) the cache is rebuilt from the log's recent entries and a replay of anything
that was answered is still refused.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric import ed25519

from federation.directory import Member
from federation.model import Envelope
from federation.pki import PkiError, public_key_from_text
from federation.signing import SIGNATURE_METADATA, BadSignature, request_message, verify
from node.errors import Kind, Refusal

MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64


def _unauthenticated(reason: str, message: str) -> Refusal:
    return Refusal(Kind.UNAUTHENTICATED, (reason,), message)


REPLAYED = "replayed"


def replayed() -> Refusal:
    """The refusal of a request whose nonce was already received (by this node, or by
    another replica of it: `node.audit.entries.AuditReplay`)."""
    return _unauthenticated(
        REPLAYED, "this request (its nonce) was already received: send a new request"
    )


class ReplayCache:
    """(requester, nonce) pairs seen within the freshness window, oldest first."""

    def __init__(self, window: float, clock: Callable[[], float] = time.time) -> None:
        self._window = window
        self._clock = clock
        self._seen: OrderedDict[tuple[str, bytes], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _prune(self, now: float) -> None:
        while self._seen:
            key, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= 2 * self._window:
                break
            del self._seen[key]

    def first_time(self, requester: str, nonce: bytes, now: float | None = None) -> bool:
        """Record the pair; False if it was already there (a replay)."""
        now = self._clock() if now is None else now
        self._prune(now)
        key = (requester, nonce)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True

    def seed(self, entries: Iterable[tuple[str, bytes, float]]) -> int:
        """Pairs recovered from the audit log (requester, nonce, when seen)."""
        count = 0
        for requester, nonce, seen_at in sorted(entries, key=lambda e: e[2]):
            self._seen[(requester, nonce)] = seen_at
            count += 1
        return count


class Admission:
    def __init__(
        self,
        max_skew_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._skew = max_skew_seconds
        self._clock = clock
        self.replay = ReplayCache(max_skew_seconds, clock)
        self._keys: dict[str, tuple[str, ed25519.Ed25519PublicKey]] = {}

    def _key_of(self, member: Member) -> ed25519.Ed25519PublicKey:
        cached = self._keys.get(member.node_id)
        if cached is not None and cached[0] == member.signing_public_key:
            return cached[1]
        try:
            key = public_key_from_text(member.signing_public_key)
        except PkiError:
            raise _unauthenticated(
                "signing_key_unusable",
                f"the directory's signing key for {member.node_id} is unusable",
            ) from None
        self._keys[member.node_id] = (member.signing_public_key, key)
        return key

    def check_signature(
        self, member: Member, method: str, body: bytes, metadata: Mapping[str, object]
    ) -> bytes:
        """The request's signature, verified with the key the directory lists; or refuse."""
        signature = metadata.get(SIGNATURE_METADATA)
        if not isinstance(signature, bytes) or not signature:
            raise _unauthenticated(
                "signature_missing",
                "the request is not signed: sign its bytes with your node's signing key",
            )
        try:
            verify(self._key_of(member), signature, request_message(method, body), "request")
        except BadSignature:
            raise _unauthenticated(
                "signature_invalid",
                f"the request signature does not verify with {member.node_id}'s key in the "
                "federation directory",
            ) from None
        return signature

    def check_fresh(self, member: Member, envelope: Envelope) -> None:
        """Issued within the skew window, with a nonce this requester never used in it."""
        now = self._clock()
        if envelope.issued_at is None:
            raise _unauthenticated("issued_at_missing", "envelope.issued_at is required")
        offset = envelope.issued_at.timestamp() - now
        if abs(offset) > self._skew:
            raise _unauthenticated(
                "request_not_fresh",
                f"envelope.issued_at is {offset:+.0f} s from this node's clock (allowed "
                f"±{self._skew:.0f} s): check your clock and send a new request",
            )
        if not MIN_NONCE_BYTES <= len(envelope.nonce) <= MAX_NONCE_BYTES:
            raise _unauthenticated(
                "nonce_invalid",
                f"envelope.nonce must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} random bytes",
            )
        if not self.replay.first_time(member.node_id, envelope.nonce, now):
            raise replayed()
