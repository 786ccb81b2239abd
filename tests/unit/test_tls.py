"""TLS for the node: rotating server credentials, and the client-certificate checks that
sit on top of the handshake. Real certificates throughout; the rotation tests run a real
grpc.aio server on loopback and look at the certificate a client actually receives."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Unpack

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from federation.directory import Directory, Member, new_directory
from federation.identity import tls_name
from federation.pki import (
    PeerCertificate,
    create_authority,
    fingerprint,
    issue_node_certificate,
    peer_certificate,
)
from node.errors import Kind, Refusal
from node.rpc.auth import PeerAuthenticator
from node.rpc.tls import (
    CertificateError,
    RotatingServerCredentials,
    ServingCertificate,
    TlsFiles,
    validate,
)
from tests.certificate_examples import NO_DIGITAL_SIGNATURE, IssueOptions

FED = "liaison.example"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("authority")
    create_authority(out, FED)
    return out


@pytest.fixture(scope="module")
def other_authority(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("other-authority")
    create_authority(out, FED)
    return out


def _issue(
    authority: Path, folder: Path, node_id: str = "FR-DGPN", **options: Unpack[IssueOptions]
) -> Path:
    """Issued on the module's clock, NOW, so validation at NOW holds however late it runs.

    On the wall clock a certificate issued minutes after NOW (a long suite reaches this file
    late) would not yet be valid at NOW.
    """
    options.setdefault("now", NOW)
    issue_node_certificate(authority, FED, node_id, folder, **options)
    return folder


def _files(folder: Path) -> TlsFiles:
    return TlsFiles(folder / "tls.crt", folder / "tls.key", folder / "ca.crt")


def _pems(folder: Path) -> tuple[bytes, bytes, bytes]:
    return (
        (folder / "tls.crt").read_bytes(),
        (folder / "tls.key").read_bytes(),
        (folder / "ca.crt").read_bytes(),
    )


def _sha(folder: Path) -> str:
    return fingerprint(x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes()))


def _swap(source: Path, live: Path) -> None:
    """How an operator rotates: rename into place, key first, then certificate."""
    for name in ("tls.key", "tls.crt"):
        shutil.copy(source / name, live / f".{name}.new")
        os.replace(live / f".{name}.new", live / name)


# --- validate -------------------------------------------------------------------------


def test_validate_accepts_a_good_set(authority: Path, tmp_path: Path) -> None:
    folder = _issue(authority, tmp_path / "n")
    serving = validate(*_pems(folder), now=NOW, federation=FED, node_id="FR-DGPN")
    assert serving.sha256 == _sha(folder)
    assert serving.node_id == "FR-DGPN"
    assert serving.not_after > NOW + timedelta(days=300)
    assert "PRIVATE" not in repr(serving)


def test_validate_refuses_a_key_of_another_certificate(authority: Path, tmp_path: Path) -> None:
    a = _issue(authority, tmp_path / "a")
    b = _issue(authority, tmp_path / "b")
    cert, _, ca = _pems(a)
    with pytest.raises(CertificateError, match="key does not belong"):
        validate(cert, (b / "tls.key").read_bytes(), ca, now=NOW, federation=FED, node_id="FR-DGPN")


def test_validate_refuses_a_certificate_of_another_ca(
    authority: Path, other_authority: Path, tmp_path: Path
) -> None:
    folder = _issue(other_authority, tmp_path / "o")
    cert, key, _ = _pems(folder)
    with pytest.raises(CertificateError, match="not signed by any CA"):
        validate(
            cert,
            key,
            (authority / "ca.crt").read_bytes(),
            now=NOW,
            federation=FED,
            node_id="FR-DGPN",
        )


def test_validate_accepts_a_ca_bundle_during_ca_rotation(
    authority: Path, other_authority: Path, tmp_path: Path
) -> None:
    folder = _issue(other_authority, tmp_path / "o")
    cert, key, _ = _pems(folder)
    bundle = (authority / "ca.crt").read_bytes() + (other_authority / "ca.crt").read_bytes()
    assert validate(cert, key, bundle, now=NOW, federation=FED, node_id="FR-DGPN").sha256 == _sha(
        folder
    )


def test_validate_refuses_expired_and_not_yet_valid(authority: Path, tmp_path: Path) -> None:
    folder = _issue(authority, tmp_path / "n", days=10)
    with pytest.raises(CertificateError, match="expired"):
        validate(*_pems(folder), now=NOW + timedelta(days=11), federation=FED, node_id="FR-DGPN")
    with pytest.raises(CertificateError, match="not valid before"):
        validate(*_pems(folder), now=NOW - timedelta(days=1), federation=FED, node_id="FR-DGPN")


def test_validate_refuses_a_certificate_naming_another_node(
    authority: Path, tmp_path: Path
) -> None:
    folder = _issue(authority, tmp_path / "n", node_id="DE-BKA")
    with pytest.raises(CertificateError, match="names node DE-BKA, this node is FR-DGPN"):
        validate(*_pems(folder), now=NOW, federation=FED, node_id="FR-DGPN")


@pytest.mark.parametrize(
    ("part", "garbage", "message"),
    [(0, b"nope", "not PEM X.509"), (1, b"nope", "not an unencrypted PEM key"), (2, b"x", "CA")],
)
def test_validate_refuses_garbage(
    authority: Path, tmp_path: Path, part: int, garbage: bytes, message: str
) -> None:
    pems = list(_pems(_issue(authority, tmp_path / "n")))
    pems[part] = garbage
    with pytest.raises(CertificateError, match=message):
        validate(pems[0], pems[1], pems[2], now=NOW, federation=FED, node_id="FR-DGPN")


# --- RotatingServerCredentials without a server ---------------------------------------


def test_first_load_failure_raises(authority: Path, tmp_path: Path) -> None:
    folder = _issue(authority, tmp_path / "n")
    (folder / "tls.key").unlink()
    with pytest.raises(CertificateError, match="cannot read"):
        RotatingServerCredentials(_files(folder), federation=FED, node_id="FR-DGPN")


def test_refresh_swaps_only_a_valid_changed_set(
    authority: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = _issue(authority, tmp_path / "live")
    seen: list[ServingCertificate] = []
    rot = RotatingServerCredentials(
        _files(live), federation=FED, node_id="FR-DGPN", on_change=seen.append
    )
    first = rot.current.sha256
    assert [s.sha256 for s in seen] == [first]
    assert rot.refresh() is False  # nothing changed
    os.utime(live / "tls.crt")  # touched, same bytes
    assert rot.refresh() is False and rot.rotations == 0

    # Half a rotation: the new key is in place, the certificate not yet.
    new = _issue(authority, tmp_path / "new")
    shutil.copy(new / "tls.key", live / "tls.key.tmp")
    os.replace(live / "tls.key.tmp", live / "tls.key")
    with caplog.at_level(logging.WARNING, logger="liaison.tls"):
        assert rot.refresh() is False
        assert rot.refresh() is False  # the same broken set is not re-read on every handshake
    assert rot.current.sha256 == first and rot.failures == 1
    assert len([r for r in caplog.records if "key does not belong" in r.message]) == 1

    shutil.copy(new / "tls.crt", live / "tls.crt.tmp")
    os.replace(live / "tls.crt.tmp", live / "tls.crt")
    assert rot.refresh() is True
    assert rot.current.sha256 == _sha(new) and rot.rotations == 1
    assert [s.sha256 for s in seen] == [first, _sha(new)]


def test_a_certificate_for_another_node_is_never_served(authority: Path, tmp_path: Path) -> None:
    live = _issue(authority, tmp_path / "live")
    rot = RotatingServerCredentials(_files(live), federation=FED, node_id="FR-DGPN")
    _swap(_issue(authority, tmp_path / "de", node_id="DE-BKA"), live)
    assert rot.refresh() is False
    assert rot.current.node_id == "FR-DGPN"


def test_an_expired_new_certificate_is_not_served(authority: Path, tmp_path: Path) -> None:
    live = _issue(authority, tmp_path / "live")
    rot = RotatingServerCredentials(_files(live), federation=FED, node_id="FR-DGPN")
    old = rot.current.sha256
    past = NOW - timedelta(days=30)
    _swap(_issue(authority, tmp_path / "old", not_before=past, not_after=past), live)
    assert rot.refresh() is False and rot.current.sha256 == old


def test_a_rejected_set_is_retried_after_a_while(authority: Path, tmp_path: Path) -> None:
    """A certificate that is not valid *yet* becomes servable without touching the files."""
    live = _issue(authority, tmp_path / "live")
    clock = [NOW]
    rot = RotatingServerCredentials(
        _files(live),
        federation=FED,
        node_id="FR-DGPN",
        clock=lambda: clock[0],
        retry_rejected_after=0,
    )
    future = _issue(authority, tmp_path / "f", not_before=NOW + timedelta(hours=1))
    _swap(future, live)
    assert rot.refresh() is False
    clock[0] = NOW + timedelta(hours=2)
    assert rot.refresh() is True and rot.current.sha256 == _sha(future)


def test_the_fetcher_never_raises(authority: Path, tmp_path: Path) -> None:
    live = _issue(authority, tmp_path / "live")

    def broken_hook(_: ServingCertificate) -> None:
        raise RuntimeError("metrics exploded")

    rot = RotatingServerCredentials(
        _files(live), federation=FED, node_id="FR-DGPN", on_change=broken_hook
    )
    _, fetch = rot.fetcher()
    (live / "tls.crt").unlink()  # vanished
    assert fetch() is None
    _swap(_issue(authority, tmp_path / "new"), live)
    assert fetch() is not None  # rotated, and the failing hook did not escape
    assert fetch() is None  # no change since


def test_each_credentials_object_learns_of_a_rotation(authority: Path, tmp_path: Path) -> None:
    """A rotation found by one port's handshake, or by an explicit refresh (say on SIGHUP),
    still reaches every port's credentials at its next handshake."""
    live = _issue(authority, tmp_path / "live")
    rot = RotatingServerCredentials(_files(live), federation=FED, node_id="FR-DGPN")
    _, first = rot.fetcher()
    _, second = rot.fetcher()
    _swap(_issue(authority, tmp_path / "new"), live)
    assert rot.refresh() is True
    assert first() is not None and first() is None
    assert second() is not None and second() is None


# --- a real server on loopback ----------------------------------------------------------

_SERVICE = "liaison.test.Tick"


def _handler() -> grpc.GenericRpcHandler:
    async def echo(raw: bytes, _: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return raw

    async def ticks(raw: bytes, _: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        for i in range(int(raw.decode())):
            await asyncio.sleep(0.02)
            yield str(i).encode()

    return grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
        },
    )


def _presented(port: int, client: Path) -> str:
    """The fingerprint of the certificate the server presents to a new TLS connection."""
    ctx = ssl.create_default_context(cafile=str(client / "ca.crt"))
    ctx.load_cert_chain(str(client / "tls.crt"), str(client / "tls.key"))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=tls_name(FED, "FR-DGPN")) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _channel(port: int, client: Path) -> grpc.aio.Channel:
    cert, key, ca = _pems(client)
    creds = grpc.ssl_channel_credentials(ca, key, cert)
    options = [("grpc.ssl_target_name_override", tls_name(FED, "FR-DGPN"))]
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options)


async def _serve(rot: RotatingServerCredentials) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_handler()])
    port = server.add_secure_port("127.0.0.1:0", rot.server_credentials())
    await server.start()
    return server, port


def test_rotation_while_serving(authority: Path, tmp_path: Path) -> None:
    live = _issue(authority, tmp_path / "live")
    client = _issue(authority, tmp_path / "client", node_id="DE-BKA")
    new = _issue(authority, tmp_path / "new")
    rotated: list[str] = []
    rot = RotatingServerCredentials(
        _files(live),
        federation=FED,
        node_id="FR-DGPN",
        on_change=lambda s: rotated.append(s.sha256),
    )
    old_sha = rot.current.sha256

    async def run() -> None:
        server, port = await _serve(rot)
        try:
            assert await asyncio.to_thread(_presented, port, client) == old_sha
            async with _channel(port, client) as open_channel:
                echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
                echo = open_channel.unary_unary(f"/{_SERVICE}/Echo")
                assert await echo(b"before", timeout=5) == b"before"
                ticks: grpc.aio.UnaryStreamMultiCallable[bytes, bytes]
                ticks = open_channel.unary_stream(f"/{_SERVICE}/Ticks")
                stream = ticks(b"40", timeout=10)
                got = [await stream.read() for _ in range(3)]
                # The files change under the running server, mid-stream.
                _swap(new, live)
                assert await asyncio.to_thread(_presented, port, client) == _sha(new)
                while (tick := await stream.read()) is not grpc.aio.EOF:
                    got.append(tick)
                assert got == [str(i).encode() for i in range(40)]  # in flight: unaffected
                assert await echo(b"after", timeout=5) == b"after"  # open channel: unaffected
            async with _channel(port, client) as fresh:  # a new connection, new certificate
                echo = fresh.unary_unary(f"/{_SERVICE}/Echo")
                assert await echo(b"new", timeout=5) == b"new"
            # A broken set written next is ignored: handshakes keep the new certificate.
            (live / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n")
            assert await asyncio.to_thread(_presented, port, client) == _sha(new)
        finally:
            await server.stop(0)

    asyncio.run(run())
    assert rotated == [old_sha, _sha(new)]
    assert rot.failures == 1


# --- client-certificate checks in PeerAuthenticator -------------------------------------


def _member(node_id: str, folder: Path) -> Member:
    return Member(
        node_id=node_id,
        endpoint="127.0.0.1:1",
        certificate_sha256=_sha(folder),
        signing_public_key="00" * 32,
    )


def _authenticator(
    directory: Directory,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    hook: Callable[[PeerCertificate], None] | None = None,
) -> PeerAuthenticator:
    return PeerAuthenticator(FED, lambda: directory, on_peer_certificate=hook, clock=clock)


def _refusal(auth: PeerAuthenticator, folder: Path) -> Refusal:
    with pytest.raises(Refusal) as err:
        auth.identify({"x509_pem_cert": [(folder / "tls.crt").read_bytes()]})
    return err.value


@pytest.mark.parametrize(
    "options",
    [
        {"usages": None},
        {"usages": (ExtendedKeyUsageOID.SERVER_AUTH,)},
        {"usages": (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)},
        {"key_usage": NO_DIGITAL_SIGNATURE},
    ],
    ids=["no-eku", "server-auth-only", "any-eku", "no-digital-signature"],
)
def test_wrong_usage_is_refused(authority: Path, tmp_path: Path, options: IssueOptions) -> None:
    folder = _issue(authority, tmp_path / "d", node_id="DE-BKA", **options)
    # Even when the directory lists this very certificate: its usage comes first.
    auth = _authenticator(new_directory(FED, 1, [_member("DE-BKA", folder)]))
    refusal = _refusal(auth, folder)
    assert refusal.reasons == ("certificate_wrong_usage",)
    assert refusal.kind is Kind.UNAUTHENTICATED


def test_certificate_expiring_on_a_live_connection_is_refused(
    authority: Path, tmp_path: Path
) -> None:
    """TLS checked validity once, at the handshake; the node checks it on every call."""
    folder = _issue(authority, tmp_path / "d", node_id="DE-BKA", days=1)
    clock = [datetime.now(UTC)]
    auth = _authenticator(new_directory(FED, 1, [_member("DE-BKA", folder)]), lambda: clock[0])
    context = {"x509_pem_cert": [(folder / "tls.crt").read_bytes()]}
    assert auth.identify(context).node_id == "DE-BKA"
    clock[0] += timedelta(days=2)
    refusal = _refusal(auth, folder)
    assert refusal.reasons == ("certificate_expired",)
    assert "expired at" in refusal.message
    clock[0] -= timedelta(days=5)
    assert _refusal(auth, folder).reasons == ("certificate_not_yet_valid",)


def test_second_certificate_for_a_listed_node_is_not_in_directory(
    authority: Path, tmp_path: Path
) -> None:
    """Signed by our CA and naming FR-DGPN, but not the certificate the directory lists."""
    listed = _issue(authority, tmp_path / "listed")
    impostor = _issue(authority, tmp_path / "impostor")
    auth = _authenticator(new_directory(FED, 1, [_member("FR-DGPN", listed)]))
    refusal = _refusal(auth, impostor)
    assert refusal.reasons == ("certificate_not_in_directory",)
    assert refusal.kind is Kind.DENIED


def test_peer_expiry_hook_once_per_certificate_and_only_when_accepted(
    authority: Path, tmp_path: Path
) -> None:
    listed = _issue(authority, tmp_path / "listed", days=40)
    impostor = _issue(authority, tmp_path / "impostor", days=5)
    seen: list[PeerCertificate] = []
    auth = _authenticator(new_directory(FED, 1, [_member("FR-DGPN", listed)]), hook=seen.append)
    for _ in range(3):
        auth.identify({"x509_pem_cert": [(listed / "tls.crt").read_bytes()]})
    _refusal(auth, impostor)
    assert [(p.node_id, p.sha256) for p in seen] == [("FR-DGPN", _sha(listed))]
    assert seen[0].not_after == peer_certificate((listed / "tls.crt").read_bytes(), FED).not_after


def test_a_failing_hook_does_not_refuse_the_caller(authority: Path, tmp_path: Path) -> None:
    listed = _issue(authority, tmp_path / "listed")

    def hook(_: PeerCertificate) -> None:
        raise RuntimeError("gauge gone")

    auth = _authenticator(new_directory(FED, 1, [_member("FR-DGPN", listed)]), hook=hook)
    member = auth.identify({"x509_pem_cert": [(listed / "tls.crt").read_bytes()]})
    assert member.node_id == "FR-DGPN"


def test_default_node_certificate_passes_the_usage_checks(authority: Path, tmp_path: Path) -> None:
    pem = (_issue(authority, tmp_path / "n") / "tls.crt").read_bytes()
    cert = peer_certificate(pem, FED)
    assert cert.client_auth and cert.digital_signature
    assert cert.not_before < datetime.now(UTC)
