"""A client for one peer node: one long-lived mTLS channel, errors translated at this edge.

The channel verifies the peer against the DNS name that binds its certificate to its node id
(`identity.tls_name`), so whatever the endpoint's host, only that node can answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from federation.directory import Member
from federation.errors import (
    InvalidRequest,
    LiaisonError,
    PeerError,
    PeerRefused,
    PeerUnavailable,
)
from federation.identity import tls_name
from federation.methods import (
    EXCHANGE_SERVICE,
    FETCH_METHOD,
    MATCH_METHOD,
    PUBLISH_NOTICE_METHOD,
    WITHDRAW_NOTICE_METHOD,
    full_method,
)
from federation.model import (
    Envelope,
    FetchAnswer,
    FetchQuery,
    Identifier,
    MatchAnswer,
    MatchQuery,
    TicketQuery,
    TicketStatus,
    WithdrawAnswer,
)
from federation.notices_model import NoticeReceipt, PublishNoticeQuery, WithdrawNoticeQuery
from federation.pki import load_signing_key, public_key_from_text
from federation.serde import (
    STATUS_TRAILER,
    WireError,
    fetch_answer_from_bytes,
    fetch_query_to_bytes,
    get_directory_request_to_bytes,
    get_ticket_request_to_bytes,
    health_check_request_to_bytes,
    match_answer_from_bytes,
    match_query_to_bytes,
    refusal_from_status,
    serving_from_bytes,
    signed_directory_from_bytes,
    status_from_trailers,
    ticket_status_from_bytes,
    utc_now,
)
from federation.serde_notices import (
    publish_notice_request_to_bytes,
    publish_receipt_from_bytes,
    withdraw_notice_request_to_bytes,
    withdraw_receipt_from_bytes,
)
from federation.serde_tickets import (
    ticket_status_from_body,
    watch_frame_from_bytes,
    watch_query_to_bytes,
    withdraw_answer_from_bytes,
    withdraw_query_to_bytes,
)
from federation.signing import (
    SERIAL_METADATA,
    SIGNATURE_METADATA,
    BadSignature,
    request_message,
    response_message,
    sign,
    verify,
)
from federation.vocabulary import LegalBasis

_REFUSED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_INVALID = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
}

# A peer's channel lives as long as its client and may sit idle for hours between queries.
# Keepalive pings every 30 s, with or without calls in flight, keep it open through
# stateful firewalls and NAT that drop an idle connection (commonly after 60 s to 5 min),
# and find a dead one within 10 s more instead of at the next query; a node permits pings
# that often (`node/rpc/server.py`). gRPC's own retries are off: a request is never sent
# twice with the same bytes (its nonce would be refused as a replay, or worse, audited
# twice); `federation.retry` retries with a new request instead.
PEER_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
)


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Our own node's credentials, as used when calling peers."""

    node_id: str
    federation: str
    certificate: bytes
    private_key: bytes = b""
    ca: bytes = b""
    # The node's Ed25519 request-signing key (PEM); every request is signed with it.
    signing_key: bytes = b""

    @classmethod
    def from_files(
        cls,
        node_id: str,
        federation: str,
        certificate: Path,
        key: Path,
        ca: Path,
        signing_key: Path,
    ) -> ClientIdentity:
        return cls(
            node_id=node_id,
            federation=federation,
            certificate=certificate.read_bytes(),
            private_key=key.read_bytes(),
            ca=ca.read_bytes(),
            signing_key=signing_key.read_bytes(),
        )

    def __repr__(self) -> str:  # never let the private key reach a log
        return f"ClientIdentity(node_id={self.node_id!r}, federation={self.federation!r})"


def _mtls_to(
    identity: ClientIdentity, peer: str, options: Sequence[tuple[str, Any]]
) -> tuple[grpc.ChannelCredentials, list[tuple[str, Any]]]:
    """The credentials and options of a channel to `peer`, for either kind of channel."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=identity.ca,
        private_key=identity.private_key,
        certificate_chain=identity.certificate,
    )
    target = ("grpc.ssl_target_name_override", tls_name(identity.federation, peer))
    return creds, [target, *options]


def secure_channel(
    identity: ClientIdentity,
    peer: str,
    endpoint: str,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An mTLS channel with our certificate that accepts only `peer`'s: its certificate
    must hold the DNS name binding it to that node id, whatever the endpoint's host."""
    creds, all_options = _mtls_to(identity, peer, options)
    return grpc.aio.secure_channel(endpoint, creds, options=all_options)


def blocking_secure_channel(
    identity: ClientIdentity,
    peer: str,
    endpoint: str,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """`secure_channel` for synchronous code: the same channel, with blocking calls."""
    creds, all_options = _mtls_to(identity, peer, options)
    return grpc.secure_channel(endpoint, creds, options=all_options)


class MatchTransport(Protocol):
    """What fan-out needs of a peer; `PeerClient` over gRPC, or an in-memory twin in tests."""

    peer: str

    async def match(self, query: MatchQuery, timeout: float) -> MatchAnswer: ...


def _trailers(exc: grpc.RpcError) -> Any:
    """The trailing metadata of a failed call, () when it has none."""
    trailers_of = getattr(exc, "trailing_metadata", None)
    return (trailers_of() if callable(trailers_of) else None) or ()


def translate(peer: str, exc: grpc.RpcError) -> LiaisonError:
    """Turn a gRPC failure (sync or aio) into the client exception tree, peer attached."""
    code_of = getattr(exc, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details_of = getattr(exc, "details", None)
    details = (details_of() if callable(details_of) else None) or code.name
    reasons, metadata = refusal_from_status(status_from_trailers(_trailers(exc)))
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


GET_DIRECTORY_METHOD = "/liaison.exchange.v1.ExchangeService/GetDirectory"
GET_TICKET_METHOD = full_method(EXCHANGE_SERVICE, "GetTicket")
WATCH_TICKET_METHOD = full_method(EXCHANGE_SERVICE, "WatchTicket")
WITHDRAW_TICKET_METHOD = full_method(EXCHANGE_SERVICE, "WithdrawTicket")
# Between two subscriptions of a watch while the owner is unavailable: doubling from the
# first, up to the last.
WATCH_BACKOFF_S = (0.25, 4.0)
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"


class PeerClient:
    """One peer: requests signed with our key, answers checked against the peer's key.

    The request is serialised once and those very bytes are signed and sent; the answer's
    bytes are verified before they are parsed. An answer whose signature does not verify
    is an error, never a result.
    """

    def __init__(
        self,
        identity: ClientIdentity,
        peer: str,
        endpoint: str,
        peer_signing_key: str,
        serial: Callable[[], int] = lambda: 0,
    ) -> None:
        self.peer = peer
        self.endpoint = endpoint
        self._requester = identity.node_id
        self._key = load_signing_key(identity.signing_key)
        self._peer_key = public_key_from_text(peer_signing_key)
        self._serial = serial
        self._channel = secure_channel(identity, peer, endpoint, PEER_CHANNEL_OPTIONS)
        # No (de)serialisers: we sign the bytes we send and verify the bytes we receive.
        self._match: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            MATCH_METHOD
        )
        self._fetch: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            FETCH_METHOD
        )
        self._get_ticket: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = (
            self._channel.unary_unary(GET_TICKET_METHOD)
        )
        self._watch: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = self._channel.unary_stream(
            WATCH_TICKET_METHOD
        )
        self._withdraw_ticket: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = (
            self._channel.unary_unary(WITHDRAW_TICKET_METHOD)
        )
        self._publish: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            PUBLISH_NOTICE_METHOD
        )
        self._withdraw_notice: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = (
            self._channel.unary_unary(WITHDRAW_NOTICE_METHOD)
        )

    @classmethod
    def for_member(
        cls,
        identity: ClientIdentity,
        member: Member,
        endpoint: str | None = None,
        serial: Callable[[], int] = lambda: 0,
    ) -> PeerClient:
        return cls(
            identity, member.node_id, endpoint or member.endpoint, member.signing_public_key, serial
        )

    async def match(self, query: MatchQuery, timeout: float) -> MatchAnswer:
        """Hit or no-hit, and a reference per record (bound to us) for a later Fetch."""
        raw = await self._signed(self._match, MATCH_METHOD, match_query_to_bytes(query), timeout)
        answer = match_answer_from_bytes(raw)
        if answer.responder != self.peer:
            raise PeerError(self.peer, f"answer claims to come from {answer.responder!r}")
        return answer

    async def fetch(self, query: FetchQuery, timeout: float) -> FetchAnswer:
        """One record, by a reference one of our hits returned or by an approved ticket:
        the record (`answer.record`, its payload the exact JSON text the peer signed) or a
        ticket's status (`answer.ticket`: pending, or refused/expired with its reason).
        A refusal raises the exception tree (`unknown_reference`, `reference_expired`,
        `unknown_ticket`, `already_delivered`, the policy's reasons...)."""
        raw = await self._signed(self._fetch, FETCH_METHOD, fetch_query_to_bytes(query), timeout)
        try:
            answer = fetch_answer_from_bytes(raw)
        except WireError as exc:
            raise PeerError(self.peer, f"malformed Fetch answer: {exc}") from None
        if answer.responder != self.peer:
            raise PeerError(self.peer, f"answer claims to come from {answer.responder!r}")
        return answer

    async def get_ticket(self, ticket_id: str, timeout: float) -> TicketStatus:
        """Where a ticket we opened stands (`unknown_ticket` for any other). The answer is
        not signed (it discloses nothing); the mTLS channel binds it to the peer."""
        try:
            raw = await self._get_ticket(get_ticket_request_to_bytes(ticket_id), timeout=timeout)
        except grpc.RpcError as exc:
            raise translate(self.peer, exc) from None
        try:
            return ticket_status_from_bytes(raw)
        except WireError as exc:
            raise PeerError(self.peer, f"malformed ticket status: {exc}") from None

    async def withdraw_ticket(
        self, ticket_id: str, timeout: float, *, purpose: str = ""
    ) -> WithdrawAnswer:
        """Withdraw a pending ticket we opened: we no longer need its record. A decided one
        is refused `ticket_not_pending`, any other node's `unknown_ticket`. Not idempotent:
        never retried (a second withdrawal is `ticket_not_pending`)."""
        query = TicketQuery(new_envelope(self._requester, purpose), ticket_id)
        body = withdraw_query_to_bytes(query)
        raw = await self._signed(self._withdraw_ticket, WITHDRAW_TICKET_METHOD, body, timeout)
        try:
            answer = withdraw_answer_from_bytes(raw)
        except WireError as exc:
            raise PeerError(self.peer, f"malformed WithdrawTicket answer: {exc}") from None
        if answer.ticket.ticket_id != ticket_id:
            raise PeerError(self.peer, f"answer names ticket {answer.ticket.ticket_id!r}")
        return answer

    async def watch_ticket(
        self, ticket_id: str, *, resubscribe_for: float = 30.0, purpose: str = ""
    ) -> AsyncGenerator[TicketStatus, None]:
        """Where a ticket we opened stands, now and at each change, until it is decided
        (approved, refused, expired or withdrawn): then the iteration ends. Each status's
        signature is verified before it is read.

        When the owner is unavailable (restarting: it ends its watches with UNAVAILABLE;
        or unreachable), the watch subscribes again with a new signed request (a fresh
        nonce) after a short, growing pause, for up to `resubscribe_for` seconds of
        unavailability in a row; then its PeerUnavailable is raised. A status equal to the
        last one yielded (the first of a new subscription, when nothing changed meanwhile)
        is not yielded again. Any refusal (`unknown_ticket`, `too_many_watches`, ...)
        raises the exception tree at once."""
        loop = asyncio.get_running_loop()
        last: TicketStatus | None = None
        pause, unavailable_since = WATCH_BACKOFF_S[0], None
        while True:
            query = TicketQuery(new_envelope(self._requester, purpose), ticket_id)
            try:
                async with contextlib.aclosing(
                    self._watch_once(watch_query_to_bytes(query))
                ) as statuses:
                    async for status in statuses:
                        pause, unavailable_since = WATCH_BACKOFF_S[0], None
                        if status != last:
                            last = status
                            yield status
                        if status.decided:
                            return
            except PeerUnavailable:
                now = loop.time()
                unavailable_since = now if unavailable_since is None else unavailable_since
                if now + pause - unavailable_since > resubscribe_for:
                    raise
                await asyncio.sleep(pause)
                pause = min(2 * pause, WATCH_BACKOFF_S[1])
                continue
            raise PeerError(self.peer, f"the watch of ticket {ticket_id} ended undecided")

    async def _watch_once(self, body: bytes) -> AsyncGenerator[TicketStatus, None]:
        """One WatchTicket subscription: each status as it comes, verified."""
        signature = sign(self._key, request_message(WATCH_TICKET_METHOD, body))
        metadata = ((SIGNATURE_METADATA, signature), (SERIAL_METADATA, str(self._serial())))
        call = self._watch(body, metadata=metadata)  # no deadline: it lasts until decided
        try:
            async for frame in call:
                try:
                    status, signed_by = watch_frame_from_bytes(frame)
                except WireError as exc:
                    raise PeerError(self.peer, f"malformed WatchTicket message: {exc}") from None
                self._verify_signature(WATCH_TICKET_METHOD, body, status, signed_by, ok=True)
                try:
                    yield ticket_status_from_body(status)
                except WireError as exc:
                    raise PeerError(self.peer, f"malformed ticket status: {exc}") from None
        except grpc.RpcError as exc:
            self._check_refusal(WATCH_TICKET_METHOD, body, exc)
            raise translate(self.peer, exc) from None
        finally:
            call.cancel()  # nothing if it ended; else the peer frees the watch's slot

    async def publish_notice(self, query: PublishNoticeQuery, timeout: float) -> NoticeReceipt:
        """Deliver a notice; the receipt names the version the peer holds now. A refusal by
        the peer's policy raises PeerRefused with its reasons."""
        body = publish_notice_request_to_bytes(query)
        raw = await self._signed(self._publish, PUBLISH_NOTICE_METHOD, body, timeout)
        return self._receipt(publish_receipt_from_bytes(raw))

    async def withdraw_notice(self, query: WithdrawNoticeQuery, timeout: float) -> NoticeReceipt:
        """Tell the peer one of our notices is withdrawn (only its publisher may)."""
        body = withdraw_notice_request_to_bytes(query)
        raw = await self._signed(self._withdraw_notice, WITHDRAW_NOTICE_METHOD, body, timeout)
        return self._receipt(withdraw_receipt_from_bytes(raw))

    def _receipt(self, receipt: NoticeReceipt) -> NoticeReceipt:
        if receipt.responder != self.peer:
            raise PeerError(self.peer, f"answer claims to come from {receipt.responder!r}")
        return receipt

    async def _signed(
        self,
        stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        method: str,
        body: bytes,
        timeout: float,
    ) -> bytes:
        """Send `body` signed for `method`; the answer's bytes once its signature verifies
        (a refusal's signature is checked before it is translated)."""
        signature = sign(self._key, request_message(method, body))
        metadata = ((SIGNATURE_METADATA, signature), (SERIAL_METADATA, str(self._serial())))
        call = stub(body, timeout=timeout, metadata=metadata)
        try:
            raw = await call
        except grpc.RpcError as exc:
            self._check_refusal(method, body, exc)
            raise translate(self.peer, exc) from None
        self._verify(method, body, raw, await call.trailing_metadata(), ok=True)
        return raw

    def _verify(self, method: str, request: bytes, body: bytes, trailers: Any, ok: bool) -> None:
        signature = next((v for k, v in trailers or () if k == SIGNATURE_METADATA), None)
        signed = signature if isinstance(signature, bytes) else None
        self._verify_signature(method, request, body, signed, ok)

    def _verify_signature(
        self, method: str, request: bytes, body: bytes, signature: bytes | None, ok: bool
    ) -> None:
        try:
            verify(
                self._peer_key,
                signature,
                response_message(method, hashlib.sha256(request).digest(), body, ok),
                f"answer from {self.peer}",
            )
        except BadSignature as exc:
            raise PeerError(self.peer, str(exc), reasons=("response_signature_invalid",)) from None

    def _check_refusal(self, method: str, request: bytes, exc: grpc.RpcError) -> None:
        """A refusal the node made is signed like an answer; transport failures are not."""
        trailers = _trailers(exc)
        status = next((v for k, v in trailers if k == STATUS_TRAILER), None)
        if isinstance(status, bytes):
            self._verify(method, request, status, trailers, ok=False)

    async def close(self) -> None:
        await self._channel.close()


async def fetch_directory(
    identity: ClientIdentity, peer: str, endpoint: str, known_serial: int, timeout: float
) -> bytes:
    """The signed directory `peer` serves (GetDirectory), over one short-lived channel: only
    bytes, for the caller to verify. The serial we know goes in the request and in the
    metadata, like on every call; a failed call raises its grpc.RpcError untranslated."""
    async with secure_channel(identity, peer, endpoint) as channel:
        get: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            GET_DIRECTORY_METHOD, response_deserializer=signed_directory_from_bytes
        )
        return await get(
            get_directory_request_to_bytes(known_serial),
            timeout=timeout,
            metadata=((SERIAL_METADATA, str(known_serial)),),
        )


def blocking_is_serving(channel: grpc.Channel, timeout: float) -> bool:
    """Whether the server behind `channel` says it is SERVING (grpc.health.v1, the whole
    server); grpc.RpcError when it does not answer."""
    check: grpc.UnaryUnaryMultiCallable[bytes, bool] = channel.unary_unary(
        HEALTH_CHECK_METHOD, response_deserializer=serving_from_bytes
    )
    return check(health_check_request_to_bytes(), timeout=timeout)


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
