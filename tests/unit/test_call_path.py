"""The one call path (node/rpc/call_path.py), step by step: which step refuses what, and that
whatever happens the call has exactly one audit entry, is counted, and discloses nothing
unaudited.

Real parts: the authenticator (a certificate the test authority issued, listed in a
directory), admission, serde, the audit log (a file, or SQLite shared by two replicas), the
metrics registry. The one stand-in is what grpc hands a handler, its ServicerContext (the
certificate it read from the TLS session, the metadata, abort): tests/federation drives the
same path over real gRPC and mTLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.rpc import status_pb2
from prometheus_client import CollectorRegistry

from federation.client import match_query, new_envelope
from federation.directory import Directory, Member, new_directory
from federation.methods import EXCHANGE_SERVICE, MATCH_METHOD, OVERSIGHT_SERVICE
from federation.model import MatchAnswer, MatchQuery
from federation.pki import (
    create_authority,
    issue_node_certificate,
    peer_certificate,
    public_key_text,
)
from federation.serde import (
    get_directory_request_from_bytes,
    match_answer_to_bytes,
    match_query_from_bytes,
    match_query_to_proto,
    refusal_from_status,
)
from federation.signing import (
    SIGNATURE_METADATA,
    request_message,
    response_message,
    sign,
    verify,
)
from federation.wire.liaison.exchange.v1 import exchange_pb2, oversight_pb2
from node.audit.database_store import DatabaseStorage
from node.audit.entries import AuditRecord
from node.audit.file_store import FileStorage
from node.audit.log import AuditLog
from node.metrics import NodeMetrics
from node.rpc.admission import Admission
from node.rpc.auth import PeerAuthenticator
from node.rpc.call_path import Call, CallPath, Facts, Method, Service, audit_time

FED = "liaison.example"
REQUESTER = "DE-BKA"
SECRET = "SECRET-42"


@dataclass
class Pki:
    pem: bytes
    requester_key: ed25519.Ed25519PrivateKey
    node_key: ed25519.Ed25519PrivateKey
    directory: Directory


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    create_authority(root / "authority", FED)
    issue_node_certificate(root / "authority", FED, REQUESTER, root / "de")
    pem = (root / "de" / "tls.crt").read_bytes()
    key = ed25519.Ed25519PrivateKey.generate()
    member = Member(
        REQUESTER,
        "",
        peer_certificate(pem, FED).sha256,
        public_key_text(key.public_key()),
    )
    return Pki(pem, key, ed25519.Ed25519PrivateKey.generate(), new_directory(FED, 1, [member]))


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: Sequence[Any]) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailers = dict(trailers)

    @property
    def status(self) -> status_pb2.Status:
        return status_pb2.Status.FromString(self.trailers["grpc-status-details-bin"])

    @property
    def reasons(self) -> tuple[str, ...]:
        return refusal_from_status(self.status)[0]


@dataclass
class Context:
    """What grpc.aio hands a handler, reduced to what the path reads and calls."""

    pem: bytes | None
    metadata: Sequence[tuple[str, str | bytes]] = ()
    trailers: dict[str, Any] = field(default_factory=dict)

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.pem]} if self.pem else {}

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return self.metadata

    async def abort(
        self, code: grpc.StatusCode, details: str, trailing_metadata: Sequence[Any] = ()
    ) -> None:
        raise Aborted(code, details, trailing_metadata)

    def set_trailing_metadata(self, trailers: Sequence[Any]) -> None:
        self.trailers = dict(trailers)


class Node:
    """One call path, with a Match-like signed method and an unsigned one whose steps are
    recorded; `fail` makes serve raise (a bug)."""

    def __init__(self, pki: Pki, audit: AuditLog) -> None:
        self.registry = CollectorRegistry()
        self.audit = audit
        self.steps: list[str] = []
        self.fail = False
        self.put_back: list[str] = []
        self.path = CallPath(
            PeerAuthenticator(FED, lambda: pki.directory),
            audit,
            NodeMetrics(self.registry),
            admission=Admission(60),
            signing_key=pki.node_key,
        )
        self.match = Method(
            "Match",
            self._parsed(match_query_from_bytes),
            self._match,
            match_answer_to_bytes,
            envelope=lambda query: query.envelope,
            nodes_only=True,
            facts=lambda query: Facts(category=query.category),
        )
        self.plain = Method(
            "GetDirectory",
            self._parsed(get_directory_request_from_bytes),
            self._plain,
            lambda serial: exchange_pb2.GetDirectoryResponse(serial=serial).SerializeToString(),
        )
        self.service = Service(EXCHANGE_SERVICE, [self.match, self.plain], lambda: "rev-0")

    def _parsed(self, parse: Any) -> Any:
        def recorded(raw: bytes) -> Any:
            self.steps.append("parse")
            return parse(raw)

        return recorded

    async def _match(self, call: Call, query: MatchQuery) -> MatchAnswer:
        self.steps.append("serve")

        async def put_back() -> None:
            self.put_back.append(call.entry_id)

        call.if_unsent = put_back
        if self.fail:
            raise RuntimeError(f"a bug, with a value that must not reach the peer: {SECRET}")
        call.revision = "rev-1"
        return MatchAnswer(REQUESTER, True, (SECRET,), "rev-1", call.entry_id)

    async def _plain(self, call: Call, known: int) -> int:
        self.steps.append("serve")
        if self.fail:
            raise RuntimeError(SECRET)
        return 7

    def call(self, method: Method[Any, Any], raw: bytes, context: Context) -> bytes | Aborted:
        async def go() -> bytes | Aborted:
            try:
                return await self.path.run(self.service, method, raw, cast(Any, context))
            except Aborted as aborted:
                return aborted

        return asyncio.run(go())

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.audit.entries(0, self.audit.size)]

    def count(self, peer: str, method: str, decision: str) -> float | None:
        labels = {"peer": peer, "method": method, "decision": decision}
        return self.registry.get_sample_value("liaison_requests_total", labels)


def _signed_match(pki: Pki, nonce: bytes | None = None) -> tuple[bytes, bytes]:
    envelope = new_envelope(REQUESTER, "criminal_investigation", case_reference="C-1")
    if nonce is not None:
        envelope = replace(envelope, nonce=nonce)
    query = match_query(envelope, "vehicle", [("vin", "WVWZZZ1JZXW000001")])
    body = match_query_to_proto(query).SerializeToString()
    return body, sign(pki.requester_key, request_message(MATCH_METHOD, body))


@pytest.fixture
def node(pki: Pki, tmp_path: Path) -> Node:
    return Node(pki, AuditLog(tmp_path / "audit.log"))


def test_method_names_are_the_wire_names() -> None:
    assert exchange_pb2.DESCRIPTOR.services_by_name["ExchangeService"].full_name == EXCHANGE_SERVICE
    assert (
        oversight_pb2.DESCRIPTOR.services_by_name["OversightService"].full_name
    ) == OVERSIGHT_SERVICE
    assert MATCH_METHOD == "/liaison.exchange.v1.ExchangeService/Match"


def test_an_answer_is_audited_counted_and_signed(pki: Pki, node: Node) -> None:
    body, signature = _signed_match(pki)
    context = Context(pki.pem, [(SIGNATURE_METADATA, signature)])
    response = node.call(node.match, body, context)
    assert isinstance(response, bytes)
    assert node.steps == ["parse", "serve"]
    (entry,) = node.entries()
    assert (entry["peer"], entry["method"], entry["decision"]) == (REQUESTER, "Match", "allow")
    assert (entry["category"], entry["policy_revision"]) == ("vehicle", "rev-1")
    assert entry["request_signature"] == signature.hex()
    assert entry["response_sha256"] == hashlib.sha256(response).hexdigest()
    answer_signature = context.trailers[SIGNATURE_METADATA]
    assert entry["response_signature"] == answer_signature.hex()
    digest = hashlib.sha256(body).digest()
    message = response_message(MATCH_METHOD, digest, response, ok=True)
    verify(pki.node_key.public_key(), answer_signature, message, "response")
    assert node.count(REQUESTER, "Match", "allow") == 1
    assert node.put_back == []  # sent: nothing put back


def test_an_unidentified_caller_is_refused_before_its_request_is_read(pki: Pki, node: Node) -> None:
    refused = node.call(node.plain, b"\xff\xff\xff", Context(pem=None))
    assert isinstance(refused, Aborted)
    assert (refused.code, refused.reasons) == (
        grpc.StatusCode.UNAUTHENTICATED,
        ("no_client_certificate",),
    )
    assert node.steps == []
    (entry,) = node.entries()
    assert (entry["peer"], entry["reasons"]) == ("unidentified", ["no_client_certificate"])
    assert node.count("unidentified", "GetDirectory", "unauthenticated") == 1


def test_a_bad_signature_is_refused_before_parsing(pki: Pki, node: Node) -> None:
    for raw in (_signed_match(pki)[0], b"\xff\xff\xff"):  # well formed or not: not read
        refused = node.call(node.match, raw, Context(pki.pem, [(SIGNATURE_METADATA, bytes(64))]))
        assert isinstance(refused, Aborted)
        assert refused.reasons == ("signature_invalid",)
        assert SIGNATURE_METADATA in refused.trailers  # the refusal is signed too
    assert node.steps == []
    assert [(e["peer"], e["purpose"], e["nonce"]) for e in node.entries()] == [
        (REQUESTER, "", "")
    ] * 2


def test_a_malformed_body_is_refused_after_identification(pki: Pki, node: Node) -> None:
    refused = node.call(node.plain, b"\xff\xff\xff", Context(pki.pem))
    assert isinstance(refused, Aborted)
    assert (refused.code, refused.reasons) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ("malformed_request",),
    )
    assert node.steps == ["parse"]
    (entry,) = node.entries()
    assert (entry["peer"], entry["decision"]) == (REQUESTER, "invalid")
    assert node.count(REQUESTER, "GetDirectory", "invalid") == 1


@pytest.mark.parametrize("signed", [True, False])
def test_a_bug_in_serve_is_refused_as_internal_audited_and_counted(
    pki: Pki, node: Node, signed: bool
) -> None:
    node.fail = True
    if signed:
        body, signature = _signed_match(pki)
        refused = node.call(node.match, body, Context(pki.pem, [(SIGNATURE_METADATA, signature)]))
    else:
        refused = node.call(node.plain, b"", Context(pki.pem))
    assert isinstance(refused, Aborted)
    assert (refused.code, refused.reasons) == (grpc.StatusCode.INTERNAL, ("internal_error",))
    assert (
        SECRET not in refused.details and SECRET.encode() not in refused.status.SerializeToString()
    )
    assert node.steps == ["parse", "serve"]
    (entry,) = node.entries()
    assert (entry["decision"], entry["reasons"]) == ("error", ["internal_error"])
    method = "Match" if signed else "GetDirectory"
    assert node.count(REQUESTER, method, "error") == 1
    denials = {"peer": REQUESTER, "reason": "internal_error"}
    assert node.registry.get_sample_value("liaison_denials_total", denials) == 1


def test_an_audit_failure_refuses_and_discloses_nothing(pki: Pki, tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "audit.log")
    node = Node(pki, AuditLog(storage))
    good_fd = storage._fd
    storage._fd = os.open("/dev/full", os.O_WRONLY)  # a real ENOSPC
    try:
        body, signature = _signed_match(pki)
        context = Context(pki.pem, [(SIGNATURE_METADATA, signature)])
        refused = node.call(node.match, body, context)
    finally:
        os.close(storage._fd)
        storage._fd = good_fd
    assert isinstance(refused, Aborted)
    assert (refused.code, refused.reasons) == (
        grpc.StatusCode.UNAVAILABLE,
        ("audit_unavailable",),
    )
    assert SECRET.encode() not in refused.trailers["grpc-status-details-bin"]
    # The refusal is what the node signed, not the answer it could not audit.
    digest = hashlib.sha256(body).digest()
    sent = refused.trailers["grpc-status-details-bin"]
    message = response_message(MATCH_METHOD, digest, sent, ok=False)
    verify(pki.node_key.public_key(), refused.trailers[SIGNATURE_METADATA], message, "response")
    assert node.registry.get_sample_value("liaison_audit_failures_total") == 1
    assert node.count(REQUESTER, "Match", "error") == 1
    assert node.audit.size == 0
    # What serve changed for the answer is put back: the answer never left.
    assert len(node.put_back) == 1


def test_a_replay_found_at_audit_time_is_one_refused_entry(pki: Pki, tmp_path: Path) -> None:
    """Replica A answered a request; its copy reaches replica B, whose replay cache never saw
    it. B's log finds A's entry under its write lock and writes the refusal in the answer's
    place: one append, one entry, and the refusal is what B signs and sends."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    nonce = os.urandom(16)
    body, signature = _signed_match(pki, nonce)

    async def replica_a_answers() -> None:
        a = AuditLog(DatabaseStorage(url), replay_window_s=600)
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        await a.append(
            AuditRecord(
                time=now,
                peer=REQUESTER,
                method="Match",
                purpose="criminal_investigation",
                legal_basis="none",
                decision="allow",
                reasons=(),
                policy_revision="rev-1",
                request_sha256=hashlib.sha256(body).hexdigest(),
                response_sha256="",
                nonce=nonce.hex(),
            )
        )
        await a.close()

    b = AuditLog(DatabaseStorage(url), replay_window_s=600)  # open before A writes
    asyncio.run(replica_a_answers())
    node = Node(pki, b)
    refused = node.call(node.match, body, Context(pki.pem, [(SIGNATURE_METADATA, signature)]))
    assert isinstance(refused, Aborted)
    assert (refused.code, refused.reasons) == (grpc.StatusCode.UNAUTHENTICATED, ("replayed",))
    sent = refused.trailers["grpc-status-details-bin"]
    assert SECRET.encode() not in sent
    entries = node.entries()
    assert [(e["nonce"], e["decision"]) for e in entries] == [
        (nonce.hex(), "allow"),
        (nonce.hex(), "unauthenticated"),
    ]
    ours = entries[1]
    assert ours["reasons"] == ["replayed"]
    assert node.put_back == [ours["id"]]
    assert refusal_from_status(refused.status)[1]["audit_entry"] == ours["id"]
    assert ours["response_sha256"] == hashlib.sha256(sent).hexdigest()
    assert ours["response_signature"] == refused.trailers[SIGNATURE_METADATA].hex()
    digest = hashlib.sha256(body).digest()
    message = response_message(MATCH_METHOD, digest, sent, ok=False)
    verify(pki.node_key.public_key(), refused.trailers[SIGNATURE_METADATA], message, "response")
    assert node.registry.get_sample_value("liaison_audit_entries_total") == 1
    assert node.registry.get_sample_value("liaison_audit_failures_total") == 0
    assert node.count(REQUESTER, "Match", "unauthenticated") == 1
    asyncio.run(b.close())


def test_audit_time_writes_now_as_isoformat_does() -> None:
    """The entry's time, written from a per-second prefix: the very text
    `datetime.isoformat(timespec="microseconds")` gives, in UTC with `Z`, and now."""
    for _ in range(2000):
        before = datetime.now(UTC)
        text = audit_time()
        after = datetime.now(UTC)
        assert text.endswith("Z") and len(text) == len("2026-01-01T00:00:00.000000Z")
        when = datetime.fromisoformat(text[:-1] + "+00:00")
        assert when.isoformat(timespec="microseconds").replace("+00:00", "Z") == text
        assert before - timedelta(microseconds=1) <= when <= after
