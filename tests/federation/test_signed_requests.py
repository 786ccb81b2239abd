"""Signed, fresh, replay-proof requests and signed answers, against real node processes."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation.client import (
    ClientIdentity,
    PeerClient,
    match_query,
    new_envelope,
    secure_channel,
    translate,
)
from federation.errors import LiaisonError, PeerError, PeerRefused
from federation.methods import MATCH_METHOD
from federation.pki import (
    create_signing_key,
    load_signing_key,
    public_key_from_text,
    public_key_text,
)
from federation.serde import match_answer_from_proto, match_query_to_proto
from federation.signing import (
    SIGNATURE_METADATA,
    request_message,
    response_message,
    sign,
    verify,
)
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb
from node.local.federation import Federation, NodeHandle
from tests.federation.helpers import clone_node, first, scrape


def _sha256(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def _body(fed: Federation, issued_at: datetime | None = None, hit: bool = True) -> bytes:
    doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"]) if hit else "ZZ1"
    env = new_envelope("DE-BKA", "criminal_investigation", case_reference="SIG-1")
    if issued_at is not None:
        env = dataclasses.replace(env, issued_at=issued_at)
    query = match_query(env, "travel_document", [("document_number", doc)])
    return match_query_to_proto(query).SerializeToString()


def _binary(trailers: grpc.aio.Metadata | None, key: str) -> bytes:
    """A binary (-bin) trailer, b"" when absent: grpc types every value as str | bytes."""
    value = dict(trailers or ()).get(key, b"")
    assert isinstance(value, bytes), (key, value)
    return value


async def _send(
    identity: ClientIdentity, endpoint: str, body: bytes, signature: bytes | None, n: int = 1
) -> list[tuple[str, tuple[str, ...], bytes, bytes]]:
    """Send the same bytes n times (at most 32 at once): (status, reasons, body, signature)."""
    metadata = ((SIGNATURE_METADATA, signature),) if signature is not None else ()
    gate = asyncio.Semaphore(32)
    async with secure_channel(identity, "FR-DGPN", endpoint) as channel:
        call_of: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
        call_of = channel.unary_unary(MATCH_METHOD)

        async def one() -> tuple[str, tuple[str, ...], bytes, bytes]:
            async with gate:
                call = call_of(body, timeout=20, metadata=metadata)
                try:
                    raw = await call
                except grpc.aio.AioRpcError as exc:
                    error = translate("FR-DGPN", exc)
                    trailers = exc.trailing_metadata()
                    status = _binary(trailers, "grpc-status-details-bin")
                    return (
                        error.status,
                        error.reasons,
                        status,
                        _binary(trailers, SIGNATURE_METADATA),
                    )
                trailers = await call.trailing_metadata()
                return "OK", (), raw, _binary(trailers, SIGNATURE_METADATA)

        return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.fixture(scope="module")
def de(fed: Federation) -> ClientIdentity:
    return fed.nodes["DE-BKA"].identity()


@pytest.fixture(scope="module")
def fr_key(fed: Federation) -> ed25519.Ed25519PublicKey:
    return public_key_from_text(fed.member("FR-DGPN").signing_public_key)


def _signed(de: ClientIdentity, body: bytes) -> bytes:
    return sign(load_signing_key(de.signing_key), request_message(MATCH_METHOD, body))


def test_answer_is_signed_and_bound_to_the_request(
    fed: Federation, de: ClientIdentity, fr_key: ed25519.Ed25519PublicKey
) -> None:
    body = _body(fed)
    [(status, _, raw, signature)] = asyncio.run(
        _send(de, fed.nodes["FR-DGPN"].endpoint, body, _signed(de, body))
    )
    assert status == "OK"
    assert match_answer_from_proto(pb.MatchResponse.FromString(raw)).hit
    verify(fr_key, signature, response_message(MATCH_METHOD, _sha256(body), raw, ok=True), "answer")
    with pytest.raises(ValueError):  # bound to this request: not valid for another one
        verify(
            fr_key,
            signature,
            response_message(MATCH_METHOD, _sha256(body + b"x"), raw, ok=True),
            "a",
        )
    audit = (fed.nodes["FR-DGPN"].folder / "audit.log").read_text().splitlines()
    entry = json.loads(next(line for line in reversed(audit) if signature.hex() in line))
    assert entry["request_signature"] == _signed(de, body).hex()
    assert entry["response_signature"] == signature.hex()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "signature_missing"),
        ("wrong key", "signature_invalid"),
        ("flipped byte", "signature_invalid"),
        ("ten minutes early", "request_not_fresh"),
        ("ten minutes late", "request_not_fresh"),
    ],
)
def test_refusals_are_specific_signed_audited_and_counted(
    fed: Federation,
    de: ClientIdentity,
    fr_key: ed25519.Ed25519PublicKey,
    tmp_path: Path,
    case: str,
    reason: str,
) -> None:
    now = datetime.now(UTC)
    body = _body(fed)
    signature: bytes | None = _signed(de, body)
    if case == "unsigned":
        signature = None
    elif case == "wrong key":
        create_signing_key(tmp_path / "other.key")
        other = load_signing_key((tmp_path / "other.key").read_bytes())
        signature = sign(other, request_message(MATCH_METHOD, body))
    elif case == "flipped byte":
        flipped = bytearray(body)
        flipped[-3] ^= 0x01
        body = bytes(flipped)
    else:
        minutes = -10 if case == "ten minutes early" else 10
        body = _body(fed, issued_at=now + timedelta(minutes=minutes))
        signature = _signed(de, body)
    fr = fed.nodes["FR-DGPN"]
    before = scrape(fr, "liaison_denials_total", {"peer": "DE-BKA", "reason": reason}) or 0
    [(status, reasons, status_bytes, answer_signature)] = asyncio.run(
        _send(de, fr.endpoint, body, signature)
    )
    assert (status, reasons) == ("UNAUTHENTICATED", (reason,))
    verify(
        fr_key,
        answer_signature,
        response_message(MATCH_METHOD, _sha256(body), status_bytes, ok=False),
        "refusal",
    )
    assert scrape(fr, "liaison_denials_total", {"peer": "DE-BKA", "reason": reason}) == before + 1
    last = json.loads((fr.folder / "audit.log").read_text().splitlines()[-1])
    assert last["reasons"] == [reason] and last["peer"] == "DE-BKA"
    # The node keeps serving.
    good = _body(fed)
    assert asyncio.run(_send(de, fr.endpoint, good, _signed(de, good)))[0][0] == "OK"


def _kill_and_restart(node: NodeHandle) -> None:
    assert node.process is not None
    node.process.kill()  # kill -9: no graceful stop, nothing flushed on the way out
    node.process.wait()
    node.process = None
    node.start()
    node.wait_ready()


def test_a_replayed_request_is_answered_exactly_once_even_across_kill_9(
    fed: Federation, de: ClientIdentity, tmp_path: Path
) -> None:
    fr = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN", watch="false")
    fr.start()
    try:
        fr.wait_ready()
        body = _body(fed)
        results = asyncio.run(_send(de, fr.endpoint, body, _signed(de, body), n=1000))
        statuses = [r[0] for r in results]
        assert statuses.count("OK") == 1
        assert {r[1] for r in results if r[0] != "OK"} == {("replayed",)}
        _kill_and_restart(fr)
        [again] = asyncio.run(_send(de, fr.endpoint, body, _signed(de, body)))
        assert again[:2] == ("UNAUTHENTICATED", ("replayed",))
        fresh = _body(fed)
        assert asyncio.run(_send(de, fr.endpoint, fresh, _signed(de, fresh)))[0][0] == "OK"
    finally:
        fr.stop()


def test_client_rejects_an_answer_not_signed_by_the_peer(
    fed: Federation, de: ClientIdentity, tmp_path: Path
) -> None:
    """A directory entry with another signing key: the genuine node's answers fail."""
    create_signing_key(tmp_path / "impostor.key")
    impostor = load_signing_key((tmp_path / "impostor.key").read_bytes()).public_key()

    member = dataclasses.replace(
        fed.member("FR-DGPN"), signing_public_key=public_key_text(impostor)
    )

    async def run() -> LiaisonError | None:
        client = PeerClient.for_member(de, member)
        try:
            env = new_envelope("DE-BKA", "criminal_investigation")
            await client.match(match_query(env, "travel_document", [("vin", "X")]), 10)
        except LiaisonError as exc:
            return exc
        finally:
            await client.close()
        return None

    error = asyncio.run(run())
    assert isinstance(error, PeerError) and not isinstance(error, PeerRefused)
    assert error.reasons == ("response_signature_invalid",)
