"""A client for one peer node: one long-lived mTLS channel, errors translated at this edge.

The channel verifies the peer against the DNS name that binds its certificate to its node id
(`identity.tls_name`), so whatever the endpoint's host, only that node can answer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from federation.errors import (
    InvalidRequest,
    LiaisonError,
    PeerError,
    PeerRefused,
    PeerUnavailable,
)
from federation.identity import tls_name
from federation.model import Envelope, Identifier, MatchAnswer, MatchQuery
from federation.serde import (
    match_answer_from_proto,
    match_query_to_proto,
    refusal_from_status,
    status_from_trailers,
    utc_now,
)
from federation.vocabulary import LegalBasis
from federation.wire.liaison.exchange.v1 import exchange_pb2_grpc

_REFUSED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_INVALID = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Our own node's credentials, as used when calling peers."""

    node_id: str
    federation: str
    certificate: bytes
    private_key: bytes = b""
    ca: bytes = b""

    @classmethod
    def from_files(
        cls, node_id: str, federation: str, certificate: Path, key: Path, ca: Path
    ) -> ClientIdentity:
        return cls(
            node_id=node_id,
            federation=federation,
            certificate=certificate.read_bytes(),
            private_key=key.read_bytes(),
            ca=ca.read_bytes(),
        )

    def __repr__(self) -> str:  # never let the private key reach a log
        return f"ClientIdentity(node_id={self.node_id!r}, federation={self.federation!r})"


class MatchTransport(Protocol):
    """What fan-out needs of a peer; `PeerClient` over gRPC, or an in-memory twin in tests."""

    peer: str

    async def match(self, query: MatchQuery, timeout: float) -> MatchAnswer: ...


def translate(peer: str, exc: grpc.RpcError) -> LiaisonError:
    """Turn a gRPC failure (sync or aio) into the client exception tree, peer attached."""
    code_of = getattr(exc, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details_of = getattr(exc, "details", None)
    details = (details_of() if callable(details_of) else None) or code.name
    trailers_of = getattr(exc, "trailing_metadata", None)
    trailers = trailers_of() if callable(trailers_of) else None
    reasons, metadata = refusal_from_status(status_from_trailers(trailers or ()))
    kind: type[LiaisonError]
    if code in _REFUSED:
        kind = PeerRefused
    elif code in _UNAVAILABLE:
        kind = PeerUnavailable
        if not reasons:
            reasons = (
                ("deadline_exceeded",)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED
                else ("unreachable",)
            )
    elif code in _INVALID:
        kind = InvalidRequest
    else:
        kind = PeerError
    return kind(peer, details, reasons=reasons, status=code.name, metadata=metadata)


class PeerClient:
    def __init__(self, identity: ClientIdentity, peer: str, endpoint: str) -> None:
        self.peer = peer
        self.endpoint = endpoint
        creds = grpc.ssl_channel_credentials(
            root_certificates=identity.ca,
            private_key=identity.private_key,
            certificate_chain=identity.certificate,
        )
        options = [
            ("grpc.ssl_target_name_override", tls_name(identity.federation, peer)),
            ("grpc.keepalive_time_ms", 60_000),
        ]
        self._identity = identity
        self._channel = grpc.aio.secure_channel(endpoint, creds, options=options)
        self._stub = exchange_pb2_grpc.ExchangeServiceStub(self._channel)

    async def match(self, query: MatchQuery, timeout: float) -> MatchAnswer:
        try:
            response = await self._stub.Match(match_query_to_proto(query), timeout=timeout)
        except grpc.RpcError as exc:
            raise translate(self.peer, exc) from None
        answer = match_answer_from_proto(response)
        if answer.responder != self.peer:
            raise PeerError(self.peer, f"answer claims to come from {answer.responder!r}")
        return answer

    async def close(self) -> None:
        await self._channel.close()


def match_query(
    envelope: Envelope, category: str, identifiers: Sequence[tuple[str, str]]
) -> MatchQuery:
    return MatchQuery(
        envelope=envelope,
        category=category,
        identifiers=tuple(Identifier(k, v) for k, v in identifiers),
    )


def new_envelope(
    requester: str,
    purpose: str,
    *,
    legal_basis: LegalBasis = LegalBasis.NONE,
    legal_reference: str = "",
    case_reference: str = "",
) -> Envelope:
    """A fresh envelope: a new nonce and issue time for every request."""
    return Envelope(
        requester=requester,
        purpose=purpose,
        legal_basis=legal_basis,
        legal_reference=legal_reference,
        case_reference=case_reference,
        nonce=os.urandom(16),
        issued_at=utc_now(),
    )
