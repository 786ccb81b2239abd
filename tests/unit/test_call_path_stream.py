"""The one call path for a server-streaming method (node/rpc/streams.py `Streaming`, run by
node/rpc/call_path.py): the same steps as a unary call up to the first message, which
leaves only once the call's one audit entry is durable; each later message signed and
bound to the request; a refusal before the first message is a unary refusal, one after it
ends the stream signed and unaudited; and the stream's `Updates` are closed however the
stream ends.

The parts are those of tests/unit/test_call_path.py (a real authenticator, admission,
audit log and metrics; a stand-in for grpc's ServicerContext)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry

from federation.client import new_envelope
from federation.directory import Member, new_directory
from federation.methods import EXCHANGE_SERVICE, full_method
from federation.model import TicketQuery
from federation.pki import (
    create_authority,
    issue_node_certificate,
    peer_certificate,
    public_key_text,
)
from federation.serde_tickets import watch_frame, watch_frame_from_bytes, watch_query_from_bytes
from federation.serde_tickets import watch_query_to_bytes as to_bytes
from federation.signing import SIGNATURE_METADATA, request_message, response_message, sign
from federation.signing import verify as verify_signature
from node.audit.file_store import FileStorage
from node.audit.log import AuditLog
from node.errors import Kind, Refusal
from node.metrics import NodeMetrics
from node.rpc.admission import Admission
from node.rpc.auth import PeerAuthenticator
from node.rpc.call_path import Call, CallPath, Facts, Service
from node.rpc.streams import streaming
from tests.unit.test_call_path import FED, REQUESTER, Aborted, Context, Pki

WATCH = full_method(EXCHANGE_SERVICE, "WatchTicket")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The requester's certificate and keys, and the node's signing key (as
    tests/unit/test_call_path.py makes them)."""
    root = tmp_path_factory.mktemp("pki")
    create_authority(root / "authority", FED)
    issue_node_certificate(root / "authority", FED, REQUESTER, root / "de")
    pem = (root / "de" / "tls.crt").read_bytes()
    key = ed25519.Ed25519PrivateKey.generate()
    fingerprint = peer_certificate(pem, FED).sha256
    member = Member(REQUESTER, "", fingerprint, public_key_text(key.public_key()))
    return Pki(pem, key, ed25519.Ed25519PrivateKey.generate(), new_directory(FED, 1, [member]))


class Counted:
    """Updates of plain strings: `first`, then `items`, then `then` (a Refusal or an error
    to raise, or nothing: the stream ends); remembers whether it was closed."""

    def __init__(self, first: str, items: list[str], then: BaseException | None = None) -> None:
        self.first = first
        self._items = items
        self._then = then
        self.closed = 0

    async def rest(self) -> AsyncIterator[str]:
        for item in self._items:
            await asyncio.sleep(0)
            yield item
        if self._then is not None:
            raise self._then

    def close(self) -> None:
        self.closed += 1


class Node:
    def __init__(self, pki: Pki, audit: AuditLog) -> None:
        self.registry = CollectorRegistry()
        self.audit = audit
        self.opened: list[Counted] = []
        self.next: Counted = Counted("pending", [])
        self.path = CallPath(
            PeerAuthenticator(FED, lambda: pki.directory),
            audit,
            NodeMetrics(self.registry),
            admission=Admission(60),
            signing_key=pki.node_key,
        )
        self.method = streaming(
            "WatchTicket",
            watch_query_from_bytes,
            self._open,
            str.encode,
            watch_frame,
            envelope=lambda q: q.envelope,
            nodes_only=True,
            facts=lambda q: Facts(ticket=q.ticket_id),
        )
        self.service = Service(EXCHANGE_SERVICE, [], streams=[self.method])

    async def _open(self, call: Call, query: TicketQuery) -> Counted:
        if query.ticket_id == "tkt_unknown":
            raise Refusal(Kind.NOT_FOUND, ("unknown_ticket",), "no such ticket of yours")
        self.opened.append(self.next)
        return self.next

    def call(self, raw: bytes, context: Context, take: int | None = None) -> list[bytes | Aborted]:
        """The messages the stream sent, then its refusal if it ended with one; `take`
        stops reading (the client cancels) after that many."""

        async def go() -> list[bytes | Aborted]:
            sent: list[bytes | Aborted] = []
            stream = self.path.stream(self.service, self.method, raw, cast(Any, context))
            try:
                async for message in stream:
                    sent.append(message)
                    if take is not None and len(sent) == take:
                        break
            except Aborted as aborted:
                sent.append(aborted)
            finally:
                await stream.aclose()
            return sent

        return asyncio.run(go())

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.audit.entries(0, self.audit.size)]


def request(pki: Pki, ticket_id: str = "tkt_1") -> tuple[bytes, Context]:
    body = to_bytes(TicketQuery(new_envelope(REQUESTER, ""), ticket_id))
    signature = sign(pki.requester_key, request_message(WATCH, body))
    return body, Context(pki.pem, [(SIGNATURE_METADATA, signature)])


def signed_by_node(pki: Pki, body: bytes, message: bytes) -> str:
    """The status a message carries, once the node's signature over it verified."""
    status, signature = watch_frame_from_bytes(message)
    digest = hashlib.sha256(body).digest()
    wanted = response_message(WATCH, digest, status, ok=True)
    verify_signature(pki.node_key.public_key(), signature, wanted, "message")
    return status.decode()


@pytest.fixture
def node(pki: Pki, tmp_path: Path) -> Node:
    return Node(pki, AuditLog(tmp_path / "audit.log"))


def test_one_entry_for_the_stream_and_every_message_signed(pki: Pki, node: Node) -> None:
    node.next = Counted("pending", ["approved"])
    body, context = request(pki)
    sent = node.call(body, context)
    assert all(isinstance(m, bytes) for m in sent)
    assert [signed_by_node(pki, body, cast(bytes, m)) for m in sent] == ["pending", "approved"]
    [entry] = node.entries()
    assert (entry["method"], entry["decision"]) == ("WatchTicket", "allow")
    assert entry["ticket"] == "tkt_1"
    # The entry holds the first message's digest and signature: what the watch disclosed.
    first_status, first_signature = watch_frame_from_bytes(cast(bytes, sent[0]))
    assert entry["response_sha256"] == hashlib.sha256(first_status).hexdigest()
    assert entry["response_signature"] == first_signature.hex()
    assert entry["nonce"] and entry["request_signature"]
    labels = {"peer": REQUESTER, "method": "WatchTicket", "decision": "allow"}
    assert node.registry.get_sample_value("liaison_requests_total", labels) == 1
    assert node.next.closed == 1


def test_a_refusal_before_the_first_message_is_a_unary_refusal(pki: Pki, node: Node) -> None:
    body, context = request(pki, "tkt_unknown")
    [refused] = node.call(body, context)
    assert isinstance(refused, Aborted) and refused.code == grpc.StatusCode.NOT_FOUND
    assert refused.reasons == ("unknown_ticket",)
    [entry] = node.entries()
    assert entry["decision"] == "invalid" and entry["reasons"] == ["unknown_ticket"]
    sent = refused.trailers["grpc-status-details-bin"]
    digest = hashlib.sha256(body).digest()
    message = response_message(WATCH, digest, sent, ok=False)
    verify_signature(pki.node_key.public_key(), refused.trailers[SIGNATURE_METADATA], message, "")


def test_a_replayed_watch_is_refused(pki: Pki, node: Node) -> None:
    body, context = request(pki)
    assert len(node.call(body, context)) == 1
    [refused] = node.call(body, context)
    assert isinstance(refused, Aborted) and refused.reasons == ("replayed",)
    assert len(node.opened) == 1  # never served


def test_a_refusal_after_the_first_message_ends_the_stream_signed_and_unaudited(
    pki: Pki, node: Node
) -> None:
    stopping = Refusal(Kind.UNAVAILABLE, ("node_stopping",), "the node is stopping")
    node.next = Counted("pending", [], then=stopping)
    body, context = request(pki)
    first, ended = node.call(body, context)
    assert signed_by_node(pki, body, cast(bytes, first)) == "pending"
    assert isinstance(ended, Aborted) and ended.code == grpc.StatusCode.UNAVAILABLE
    assert ended.reasons == ("node_stopping",)
    sent = ended.trailers["grpc-status-details-bin"]
    message = response_message(WATCH, hashlib.sha256(body).digest(), sent, ok=False)
    verify_signature(pki.node_key.public_key(), ended.trailers[SIGNATURE_METADATA], message, "")
    assert [e["decision"] for e in node.entries()] == ["allow"]
    assert node.next.closed == 1


def test_a_bug_mid_stream_ends_it_as_internal_without_its_text(pki: Pki, node: Node) -> None:
    node.next = Counted("pending", [], then=RuntimeError("SECRET-42"))
    body, context = request(pki)
    _, ended = node.call(body, context)
    assert isinstance(ended, Aborted) and ended.code == grpc.StatusCode.INTERNAL
    assert b"SECRET-42" not in ended.trailers["grpc-status-details-bin"]
    assert node.next.closed == 1


def test_a_client_that_stops_reading_closes_the_stream(pki: Pki, node: Node) -> None:
    node.next = Counted("pending", ["a", "b", "c"])
    body, context = request(pki)
    assert len(node.call(body, context, take=2)) == 2
    assert node.next.closed == 1


def test_an_audit_failure_sends_nothing_and_closes_the_stream(pki: Pki, tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "audit.log")
    node = Node(pki, AuditLog(storage))
    good = storage._fd
    storage._fd = os.open("/dev/full", os.O_WRONLY)  # a real ENOSPC
    try:
        body, context = request(pki)
        [refused] = node.call(body, context)
    finally:
        os.close(storage._fd)
        storage._fd = good
    assert isinstance(refused, Aborted) and refused.reasons == ("audit_unavailable",)
    assert node.next.closed == 1 and node.audit.size == 0
