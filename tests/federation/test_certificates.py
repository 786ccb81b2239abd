"""The certificate refusal matrix and rotation, against real node processes over real mTLS.

What refuses what (grpcio 1.85's BoringSSL, server side, `require_client_auth`):
* at the handshake — expired, not yet valid, an extendedKeyUsage without clientAuth, a
  keyUsage without digitalSignature: the client sees UNAVAILABLE, the node's RPC code never
  runs (so nothing to audit), and the node keeps serving everyone else;
* in `node.rpc.auth`, with a machine-readable reason, audited and counted — what TLS lets
  through: no extendedKeyUsage at all (`certificate_wrong_usage`), and a certificate the
  genuine authority issued for a node id whose directory entry lists another certificate
  (`certificate_not_in_directory`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Unpack

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from federation.client import ClientIdentity, PeerClient, match_query, new_envelope
from federation.errors import PeerRefused, PeerUnavailable
from federation.identity import tls_name
from federation.pki import fingerprint, issue_node_certificate
from node.local.federation import Federation, NodeHandle
from tests.certificate_examples import NO_DIGITAL_SIGNATURE, IssueOptions
from tests.federation.helpers import ask, audit_entry, clone_node, scrape

FED = "liaison.example"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def de(fed: Federation) -> ClientIdentity:
    return fed.nodes["DE-BKA"].identity()


def _issue(
    fed: Federation, folder: Path, node_id: str, **options: Unpack[IssueOptions]
) -> x509.Certificate:
    """A certificate from the federation's genuine authority."""
    return issue_node_certificate(
        fed.root / "authority",
        FED,
        node_id,
        folder,
        hosts=("localhost", "127.0.0.1"),
        **options,
    )


def _wearing(identity: ClientIdentity, folder: Path) -> ClientIdentity:
    """The same node (and request-signing key), presenting another TLS certificate."""
    return dataclasses.replace(
        identity,
        certificate=(folder / "tls.crt").read_bytes(),
        private_key=(folder / "tls.key").read_bytes(),
    )


def _still_serves(fed: Federation, de: ClientIdentity, node: str = "FR-DGPN") -> None:
    """DE-BKA, with its genuine certificate, gets an answer (both peers agreed to that)."""
    category, kind, value = {
        "FR-DGPN": ("travel_document", "document_number", "AB12"),
        "NL-KLPD": ("vehicle", "vin", "1HGCM82633A004352"),
    }[node]
    answer = ask(de, fed, node, category, [(kind, value)])
    assert answer.responder == node


def _audit_lines(node: NodeHandle) -> list[str]:
    return (node.folder / "audit.log").read_text().splitlines()


def _denials(node: NodeHandle, reason: str, peer: str = "unidentified") -> float:
    labels = {"peer": peer, "reason": reason}
    return scrape(node, "liaison_denials_total", labels) or 0.0


# --- refused at the handshake -----------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"not_before": NOW - timedelta(days=30), "not_after": NOW - timedelta(days=1)},
        {"not_before": NOW + timedelta(days=1), "not_after": NOW + timedelta(days=30)},
        {"usages": (ExtendedKeyUsageOID.SERVER_AUTH,)},
        {"usages": (ExtendedKeyUsageOID.CODE_SIGNING,)},
    ],
    ids=["expired", "not-yet-valid", "server-auth-only", "code-signing"],
)
def test_refused_at_the_handshake_and_the_node_keeps_serving(
    fed: Federation, de: ClientIdentity, tmp_path: Path, options: IssueOptions
) -> None:
    _issue(fed, tmp_path / "bad", "DE-BKA", **options)
    fr = fed.nodes["FR-DGPN"]
    before = len(_audit_lines(fr))
    with pytest.raises(PeerUnavailable) as err:
        ask(_wearing(de, tmp_path / "bad"), fed, "FR-DGPN", "vehicle", [("vin", "X1")])
    assert err.value.status == "UNAVAILABLE"
    assert err.value.reasons == ("unreachable",)
    # No RPC reached the node, so there is nothing it could audit.
    assert len(_audit_lines(fr)) == before
    _still_serves(fed, de)


def _handshake(endpoint: str, folder: Path) -> bytes:
    """Connect with Python's OpenSSL (which, unlike gRPC's client, will present any
    certificate), speak the HTTP/2 preface, and return what the node answers: its
    SETTINGS frame if it accepted the client certificate, nothing if it hung up."""
    host, _, port = endpoint.rpartition(":")
    ctx = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    ctx.load_cert_chain(str(folder / "tls.crt"), str(folder / "tls.key"))
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, int(port)), timeout=5) as sock,
            ctx.wrap_socket(sock, server_hostname=tls_name(FED, "FR-DGPN")) as tls,
        ):
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
            return tls.recv(1024)
    except (ssl.SSLError, ConnectionError):
        return b""


def test_key_usage_without_digital_signature_is_refused_at_the_handshake(
    fed: Federation, de: ClientIdentity, tmp_path: Path
) -> None:
    """gRPC's own client will not even send such a certificate; OpenSSL will, and the node
    hangs up on it."""
    _issue(fed, tmp_path / "bad", "DE-BKA", key_usage=NO_DIGITAL_SIGNATURE)
    endpoint = fed.nodes["FR-DGPN"].endpoint
    assert _handshake(endpoint, fed.nodes["DE-BKA"].folder) != b""  # control: accepted
    assert _handshake(endpoint, tmp_path / "bad") == b""
    with pytest.raises(PeerUnavailable):
        ask(_wearing(de, tmp_path / "bad"), fed, "FR-DGPN", "vehicle", [("vin", "X1")])
    _still_serves(fed, de)


# --- through TLS, refused by the node with a reason --------------------------------------


def _refused_in_auth(
    fed: Federation,
    who: ClientIdentity,
    node: str,
    reason: str,
    status: str,
    peer: str = "unidentified",
) -> PeerRefused:
    target = fed.nodes[node]
    counted = _denials(target, reason, peer)
    with pytest.raises(PeerRefused) as err:
        ask(who, fed, node, "travel_document", [("document_number", "X1")])
    refusal = err.value
    assert refusal.reasons == (reason,)
    assert refusal.status == status
    # Audited: the entry the refusal names records the reason, against the directory
    # member the certificate claims when there is one, else no identified peer.
    entry = audit_entry(target, refusal.metadata["audit_entry"])
    assert entry["reasons"] == [reason]
    assert entry["peer"] == peer
    # Counted.
    assert _denials(target, reason, peer) == counted + 1
    return refusal


def test_certificate_without_extended_key_usage_is_refused_with_reason(
    fed: Federation, de: ClientIdentity, tmp_path: Path
) -> None:
    """BoringSSL reads a missing extendedKeyUsage as "any use"; the federation does not."""
    _issue(fed, tmp_path / "no-eku", "DE-BKA", usages=None)
    _refused_in_auth(
        fed,
        _wearing(de, tmp_path / "no-eku"),
        "FR-DGPN",
        "certificate_wrong_usage",
        "UNAUTHENTICATED",
    )
    _still_serves(fed, de)


def test_certificate_naming_another_node_is_refused_with_reason(
    fed: Federation, de: ClientIdentity, tmp_path: Path
) -> None:
    """A second certificate for FR-DGPN's node id, issued by the genuine authority: it
    passes TLS, but the directory lists FR-DGPN's first certificate."""
    second = _issue(fed, tmp_path / "second", "FR-DGPN", days=3)
    fr = fed.nodes["FR-DGPN"].identity()
    assert fingerprint(second) != fed.member("FR-DGPN").certificate_sha256
    refusal = _refused_in_auth(
        fed,
        _wearing(fr, tmp_path / "second"),
        "NL-KLPD",
        "certificate_not_in_directory",
        "PERMISSION_DENIED",
        peer="FR-DGPN",
    )
    assert "FR-DGPN" in str(refusal)
    # The second certificate never became NL-KLPD's view of FR-DGPN's expiry.
    seen = scrape(
        fed.nodes["NL-KLPD"], "liaison_certificate_expiry_timestamp_seconds", {"node": "FR-DGPN"}
    )
    assert seen != second.not_valid_after_utc.timestamp()
    _still_serves(fed, de, "NL-KLPD")


# --- certificate expiry as metrics -------------------------------------------------------


def test_own_and_peer_certificate_expiry_are_exported(fed: Federation, de: ClientIdentity) -> None:
    _still_serves(fed, de)
    fr = fed.nodes["FR-DGPN"]
    own = x509.load_pem_x509_certificate((fr.folder / "tls.crt").read_bytes())
    peer = x509.load_pem_x509_certificate(de.certificate)
    gauge = "liaison_certificate_expiry_timestamp_seconds"
    assert scrape(fr, gauge, {"node": "FR-DGPN"}) == own.not_valid_after_utc.timestamp()
    assert scrape(fr, gauge, {"node": "DE-BKA"}) == peer.not_valid_after_utc.timestamp()


# --- rotation without downtime ------------------------------------------------------------


def _presented(endpoint: str, client: Path) -> str:
    host, _, port = endpoint.rpartition(":")
    ctx = ssl.create_default_context(cafile=str(client / "ca.crt"))
    ctx.load_cert_chain(str(client / "tls.crt"), str(client / "tls.key"))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=tls_name(FED, "FR-DGPN")) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _swap(source: Path, live: Path) -> None:
    """Rename into place, key first: the node serves the old pair until both are new."""
    for name in ("tls.key", "tls.crt"):
        shutil.copy(source / name, live / f".{name}.new")
        os.replace(live / f".{name}.new", live / name)


def test_rotation_without_downtime(fed: Federation, de: ClientIdentity, tmp_path: Path) -> None:
    """Swap a running node's certificate: in-flight calls on an open channel and calls on
    fresh connections all succeed, and new handshakes present the new certificate.

    The directory pins a node's *client* certificate only; clients check a server against
    the CA and the node's tls_name. So a node that rotates the certificate it serves needs
    no new directory for that, until it also calls peers with it.
    """
    clone = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN")
    new = _issue(fed, tmp_path / "new", "FR-DGPN", days=200)
    clone.start()
    try:
        clone.wait_ready()
        old_sha = _presented(clone.endpoint, fed.nodes["DE-BKA"].folder)
        assert old_sha == fed.member("FR-DGPN").certificate_sha256

        async def run() -> tuple[list[bool], list[bool]]:
            member = fed.member("FR-DGPN")
            kept = PeerClient.for_member(de, member, endpoint=clone.endpoint)
            swapped = asyncio.Event()

            async def one(client: PeerClient) -> bool:
                env = new_envelope("DE-BKA", "criminal_investigation", case_reference="T-1")
                query = match_query(env, "travel_document", [("document_number", "AB12")])
                answer = await client.match(query, timeout=10.0)
                return answer.responder == "FR-DGPN"

            async def on_open_channel() -> list[bool]:
                results = []
                for i in range(200):
                    if i == 60:
                        await asyncio.to_thread(_swap, tmp_path / "new", clone.folder)
                        swapped.set()
                    # Eight calls in flight at a time on the one channel.
                    batch = [one(kept) for _ in range(8)] if i % 25 == 0 else [one(kept)]
                    results += await asyncio.gather(*batch)
                return results

            async def on_fresh_connections() -> list[bool]:
                results = []
                for _ in range(20):
                    client = PeerClient.for_member(de, member, endpoint=clone.endpoint)
                    try:
                        results.append(await one(client))
                    finally:
                        await client.close()
                    if swapped.is_set() and len(results) >= 10:
                        break
                    await asyncio.sleep(0.02)
                await swapped.wait()
                client = PeerClient.for_member(de, member, endpoint=clone.endpoint)
                try:
                    results.append(await one(client))
                finally:
                    await client.close()
                return results

            try:
                return await asyncio.gather(on_open_channel(), on_fresh_connections())
            finally:
                await kept.close()

        open_channel, fresh = asyncio.run(run())
        assert len(open_channel) >= 200 and all(open_channel)
        assert fresh and all(fresh)
        assert _presented(clone.endpoint, fed.nodes["DE-BKA"].folder) == fingerprint(new)
        assert scrape(
            clone, "liaison_certificate_expiry_timestamp_seconds", {"node": "FR-DGPN"}
        ) == pytest.approx(new.not_valid_after_utc.timestamp())

        # A broken file written next is ignored: the node keeps serving the new certificate.
        (clone.folder / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n")
        assert _presented(clone.endpoint, fed.nodes["DE-BKA"].folder) == fingerprint(new)
        answer = ask(
            de,
            fed,
            "FR-DGPN",
            "travel_document",
            [("document_number", "AB12")],
            endpoint=clone.endpoint,
        )
        assert answer.responder == "FR-DGPN"
        assert "TLS certificate rotated" in (clone.folder / "node.log").read_text()
    finally:
        clone.stop()
