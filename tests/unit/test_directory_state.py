"""The directory a node holds: only newer, genuinely signed directories get in, from a file,
a URL or a peer; refusals are counted by reason and the node keeps serving the last good one.

Real Ed25519 keys, real files, a real HTTP server and a real gRPC server on loopback; the
clock is injected so expiry needs no waiting.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry

from federation.directory import (
    DirectoryError,
    Member,
    MemberStatus,
    new_directory,
    sign_directory,
)
from federation.pki import create_authority, issue_node_certificate
from federation.serde import WireError, get_directory_request_from_bytes, signed_directory_to_bytes
from federation.signing import SERIAL_METADATA
from federation.wire.liaison.exchange.v1 import exchange_pb2
from node.directory_sources import MAX_DIRECTORY_BYTES, advertised_serial, fetcher_for, load_from
from node.directory_state import DirectoryState, state_path_for
from node.errors import Kind, Refusal
from node.metrics import NodeMetrics
from node.rpc.auth import PeerAuthenticator

FED = "liaison.example"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = NOW + timedelta(hours=1)) -> None:
        self.now = now
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono


def _member(node_id: str, status: MemberStatus = MemberStatus.ACTIVE, cert: str = "a") -> Member:
    return Member(
        node_id=node_id,
        endpoint=f"{node_id.lower()}.example:7001",
        certificate_sha256=cert * 64 if len(cert) == 1 else cert,
        signing_public_key="b" * 64,
        status=status,
    )


MEMBERS = [_member("DE-BKA"), _member("FR-DGPN")]


@pytest.fixture()
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def metrics() -> NodeMetrics:
    return NodeMetrics(CollectorRegistry())


def signed(
    key: ed25519.Ed25519PrivateKey,
    serial: int,
    members: list[Member] | None = None,
    *,
    issued: datetime = NOW,
    days: int = 30,
    federation: str = FED,
) -> bytes:
    d = new_directory(federation, serial, members or MEMBERS, now=issued, valid_days=days)
    return sign_directory(d, key)


def make_state(
    key: ed25519.Ed25519PrivateKey,
    folder: Path,
    clock: Clock,
    metrics: NodeMetrics | None = None,
    source: str | None = None,
    **kwargs: Any,
) -> DirectoryState:
    return DirectoryState(
        key.public_key(),
        FED,
        source or str(folder / "directory.json"),
        state_path_for(folder / "directory.json"),
        metrics=metrics,
        clock=clock,
        monotonic=clock.monotonic,
        **kwargs,
    )


def sample(metrics: NodeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def refusals(metrics: NodeMetrics, reason: str) -> float:
    return sample(metrics, "liaison_directory_refusals_total", reason=reason) or 0.0


# --- start ------------------------------------------------------------------------------------


def test_load_installs_the_file_and_sets_the_metrics(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> None:
    raw = signed(key, 3)
    (tmp_path / "directory.json").write_bytes(raw)
    state = make_state(key, tmp_path, clock, metrics)
    directory = state.load()
    assert directory.serial == state.serial == state.current.serial == 3
    assert state.raw == raw
    assert not state.is_expired()
    assert state.age_seconds() == 3600.0
    assert sample(metrics, "liaison_directory_serial") == 3
    assert sample(metrics, "liaison_directory_age_seconds") == 3600.0
    clock.now += timedelta(seconds=10)  # the age is read at scrape time
    assert sample(metrics, "liaison_directory_age_seconds") == 3610.0
    expiry = (NOW + timedelta(days=30)).timestamp()
    assert sample(metrics, "liaison_directory_expiry_timestamp_seconds") == expiry
    assert sample(metrics, "liaison_directory_installs_total", via="startup") == 1


def test_load_without_any_directory_fails_with_the_reason(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    state = make_state(key, tmp_path, clock)
    with pytest.raises(DirectoryError, match="not found") as info:
        state.load()
    assert info.value.reason == "directory_unavailable"
    (tmp_path / "directory.json").write_bytes(signed(ed25519.Ed25519PrivateKey.generate(), 1))
    with pytest.raises(DirectoryError) as info:
        state.load()
    assert info.value.reason == "directory_bad_signature"
    with pytest.raises(DirectoryError, match="holds no federation directory"):
        _ = state.current
    assert state.serial == 0 and state.is_expired()


def test_load_refuses_an_expired_file(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 1, days=1))
    clock.now = NOW + timedelta(days=2)
    with pytest.raises(DirectoryError, match="expired") as info:
        make_state(key, tmp_path, clock, metrics).load()
    assert info.value.reason == "directory_expired"
    assert refusals(metrics, "directory_expired") == 1


def test_another_federations_directory_is_refused(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 1, federation="other.example"))
    with pytest.raises(DirectoryError) as info:
        make_state(key, tmp_path, clock).load()
    assert info.value.reason == "directory_wrong_federation"


# --- offers -----------------------------------------------------------------------------------


@pytest.fixture()
def state(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> DirectoryState:
    (tmp_path / "directory.json").write_bytes(signed(key, 3))
    s = make_state(key, tmp_path, clock, metrics)
    s.load()
    return s


def test_a_newer_directory_is_installed(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, metrics: NodeMetrics
) -> None:
    raw = signed(key, 4, [*MEMBERS, _member("NL-KLPD")])
    assert state.offer(raw, "test") is True
    assert state.serial == 4 and state.raw == raw
    assert state.current.member("NL-KLPD") is not None
    assert sample(metrics, "liaison_directory_serial") == 4
    assert sample(metrics, "liaison_directory_installs_total", via="refresh") == 1
    # The same bytes again is not news, and not a refusal.
    assert state.offer(raw, "test") is False
    assert sample(metrics, "liaison_directory_refusals_total", reason="directory_rollback") is None


def test_rollback_is_refused_counted_and_the_node_keeps_serving(
    state: DirectoryState,
    key: ed25519.Ed25519PrivateKey,
    metrics: NodeMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = state.raw
    with caplog.at_level(logging.WARNING, "liaison.directory"):
        assert state.offer(signed(key, 2), "mirror") is False
    assert "directory refused (directory_rollback): mirror has serial 2, older than serial 3" in (
        caplog.text
    )
    assert refusals(metrics, "directory_rollback") == 1
    assert state.serial == 3 and state.raw == held
    assert state.current.serial == 3


def test_bad_signature_is_refused_counted_and_the_node_keeps_serving(
    state: DirectoryState, metrics: NodeMetrics
) -> None:
    forged = signed(ed25519.Ed25519PrivateKey.generate(), 99)
    assert state.offer(forged, "mirror") is False
    assert refusals(metrics, "directory_bad_signature") == 1
    assert state.serial == 3
    tampered = json.loads(state.raw)
    tampered["payload"] = tampered["payload"].replace('"serial":3', '"serial":4')
    assert state.offer(json.dumps(tampered).encode(), "mirror") is False
    assert refusals(metrics, "directory_bad_signature") == 2
    assert state.offer(b"not even json", "mirror") is False
    assert refusals(metrics, "directory_unsigned") == 1
    assert state.current.serial == 3


def test_the_same_refusal_from_one_source_is_counted_once(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, metrics: NodeMetrics
) -> None:
    """A stale file polled every minute is one refusal, not one a minute."""
    old = signed(key, 2)
    for _ in range(5):
        state.offer(old, "file")
    assert refusals(metrics, "directory_rollback") == 1
    state.offer(old, "another source")
    assert refusals(metrics, "directory_rollback") == 2


def test_one_serial_with_two_contents_is_a_conflict(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, metrics: NodeMetrics
) -> None:
    other = signed(key, 3, [_member("DE-BKA")])
    assert state.offer(other, "peer") is False
    assert refusals(metrics, "directory_conflict") == 1
    assert len(state.current.members) == 2
    # The same directory in other bytes (re-indented) is neither news nor a conflict.
    reindented = json.dumps(json.loads(state.raw)).encode()
    assert reindented != state.raw
    assert state.offer(reindented, "peer") is False
    assert refusals(metrics, "directory_conflict") == 1


def test_an_issue_time_in_the_future_is_refused(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> None:
    raw = signed(key, 4, issued=clock.now + timedelta(hours=1))
    assert state.offer(raw, "mirror") is False
    assert refusals(metrics, "directory_not_yet_valid") == 1
    assert state.serial == 3


def test_expiry_makes_current_refuse_and_a_newer_one_lifts_it(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    clock.now = NOW + timedelta(days=30)
    assert state.is_expired()
    with pytest.raises(DirectoryError, match="expired at 2026-03-31T12:00:00Z") as info:
        _ = state.current
    assert info.value.reason == "directory_expired"
    with pytest.raises(Refusal) as refusal:
        state.require()
    assert refusal.value.kind is Kind.UNAVAILABLE
    assert refusal.value.reasons == ("directory_expired",)
    assert state.serial == 3  # still known (and advertised), not trusted
    assert state.offer(signed(key, 4, issued=clock.now), "mirror") is True
    assert state.require().serial == 4


def test_revoked_in_a_newer_directory_is_refused_on_the_next_call(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    """Through the real PeerAuthenticator and a real certificate, as the node wires it."""
    create_authority(tmp_path / "authority", FED)
    cert = issue_node_certificate(tmp_path / "authority", FED, "FR-DGPN", tmp_path / "fr")
    from federation.pki import fingerprint

    fr = _member("FR-DGPN", cert=fingerprint(cert))
    (tmp_path / "directory.json").write_bytes(signed(key, 1, [fr]))
    state = make_state(key, tmp_path, clock)
    state.load()
    auth = PeerAuthenticator(FED, state.require)
    context = {"x509_pem_cert": [(tmp_path / "fr" / "tls.crt").read_bytes()]}
    assert auth.identify(context).node_id == "FR-DGPN"
    revoked = replace(fr, status=MemberStatus.REVOKED)
    assert state.offer(signed(key, 2, [revoked]), "mirror")
    with pytest.raises(Refusal) as info:
        auth.identify(context)
    assert info.value.reasons == ("member_revoked",)
    clock.now = NOW + timedelta(days=31)
    with pytest.raises(Refusal) as info:
        auth.identify(context)
    assert info.value.reasons == ("directory_expired",)


# --- persistence ------------------------------------------------------------------------------


def test_the_highest_serial_survives_a_restart(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> None:
    path = tmp_path / "directory.json"
    path.write_bytes(signed(key, 3))
    first = make_state(key, tmp_path, clock)
    first.load()
    newer = signed(key, 5)
    assert first.offer(newer, "peer DE-BKA", "peer")
    doc = json.loads((tmp_path / "directory.state").read_text())
    assert doc["serial"] == 5 and len(doc["sha256"]) == 64
    # The configured file is still serial 3: the restarted node starts on serial 5 and
    # refuses the file as a rollback.
    second = make_state(key, tmp_path, clock, metrics)
    assert second.load().serial == 5
    assert second.raw == newer
    assert refusals(metrics, "directory_rollback") == 1
    # An operator who "fixes" things by putting the old file back cannot roll it back either.
    assert second.offer(signed(key, 4), str(path)) is False
    assert refusals(metrics, "directory_rollback") == 2


def test_the_state_remembers_the_digest_too(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 3))
    make_state(key, tmp_path, clock).load()
    (tmp_path / "directory.json").write_bytes(signed(key, 3, [_member("DE-BKA")]))
    state = make_state(key, tmp_path, clock, metrics)
    assert len(state.load().members) == 2  # the remembered one
    assert refusals(metrics, "directory_conflict") == 1


def test_a_missing_source_at_start_falls_back_to_the_remembered_directory(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 3))
    make_state(key, tmp_path, clock).load()
    (tmp_path / "directory.json").unlink()
    state = make_state(key, tmp_path, clock, metrics)
    assert state.load().serial == 3
    assert refusals(metrics, "directory_unavailable") == 1


def test_an_expired_remembered_directory_gives_way_to_a_newer_file(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 3, days=1))
    make_state(key, tmp_path, clock).load()
    clock.now = NOW + timedelta(days=2)
    with pytest.raises(DirectoryError) as info:
        make_state(key, tmp_path, clock).load()  # the file is the same expired one
    assert info.value.reason == "directory_expired"
    (tmp_path / "directory.json").write_bytes(signed(key, 4, issued=clock.now))
    assert make_state(key, tmp_path, clock).load().serial == 4


def test_a_state_file_that_cannot_be_read_stops_the_start(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 3))
    (tmp_path / "directory.state").write_text("{ torn")
    with pytest.raises(DirectoryError, match=r"directory\.state is unreadable .*remove it"):
        make_state(key, tmp_path, clock).load()


def test_a_tampered_remembered_directory_is_ignored_but_the_floor_holds(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 3))
    make_state(key, tmp_path, clock).load()
    doc = json.loads((tmp_path / "directory.state").read_text())
    doc["directory"] = "e30="  # "{}"
    (tmp_path / "directory.state").write_text(json.dumps(doc))
    (tmp_path / "directory.json").write_bytes(signed(key, 2))
    with pytest.raises(DirectoryError) as info:
        make_state(key, tmp_path, clock).load()
    assert info.value.reason == "directory_rollback"


def test_without_a_state_path_nothing_is_written(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 3))
    state = DirectoryState(
        key.public_key(), FED, str(tmp_path / "directory.json"), None, clock=clock
    )
    state.load()
    assert not (tmp_path / "directory.state").exists()


# --- sources ----------------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_load_from_a_url(
    http_root: tuple[str, Path], key: ed25519.Ed25519PrivateKey, clock: Clock, tmp_path: Path
) -> None:
    base, root = http_root
    raw = signed(key, 7)
    (root / "directory.json").write_bytes(raw)
    assert load_from(f"{base}/directory.json", timeout=5) == raw
    state = make_state(key, tmp_path, clock, source=f"{base}/directory.json")
    assert state.load().serial == 7
    with pytest.raises(DirectoryError, match="HTTP 404") as info:
        load_from(f"{base}/nothing.json", timeout=5)
    assert info.value.reason == "directory_unavailable"


def test_an_unreachable_url_is_unavailable() -> None:
    with pytest.raises(
        DirectoryError, match=r"cannot fetch the directory from http://127\.0\.0\.1:1/"
    ):
        load_from("http://127.0.0.1:1/directory.json", timeout=2)


@pytest.fixture()
def https_root(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A real HTTPS server whose certificate a private CA issued for 127.0.0.1 only."""
    root = tmp_path / "www"
    root.mkdir()
    create_authority(tmp_path / "mirror-ca", "mirror.example")
    issue_node_certificate(
        tmp_path / "mirror-ca",
        "mirror.example",
        "XX-MIRROR",
        tmp_path / "tls",
        hosts=("127.0.0.1",),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls" / "tls.crt", tmp_path / "tls" / "tls.key")
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", root, tmp_path / "tls" / "ca.crt"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_https_url_is_verified_against_the_configured_ca(
    https_root: tuple[str, Path, Path],
) -> None:
    base, root, ca = https_root
    (root / "directory.json").write_bytes(b'{"signed": true}')
    assert load_from(f"{base}/directory.json", timeout=5, ca_file=ca) == b'{"signed": true}'
    with pytest.raises(DirectoryError, match="HTTP 404"):
        load_from(f"{base}/nothing.json", timeout=5, ca_file=ca)


def test_an_https_url_without_a_configured_ca_needs_the_system_trust_store(
    https_root: tuple[str, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The private CA is in no system store; nor may the environment slip it in (as
    REQUESTS_CA_BUNDLE would for requests' own verification)."""
    base, root, ca = https_root
    (root / "directory.json").write_bytes(b"{}")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(ca))
    with pytest.raises(DirectoryError, match=r"cannot fetch the directory from https://.*certif"):
        load_from(f"{base}/directory.json", timeout=5)


def test_an_https_server_named_otherwise_is_refused(
    https_root: tuple[str, Path, Path],
) -> None:
    base, root, ca = https_root
    (root / "directory.json").write_bytes(b"{}")
    other = base.replace("127.0.0.1", "localhost")  # the certificate names 127.0.0.1 only
    with pytest.raises(DirectoryError, match=r"cannot fetch the directory from https://localhost"):
        load_from(f"{other}/directory.json", timeout=5, ca_file=ca)


def test_an_unreadable_ca_file_is_named(https_root: tuple[str, Path, Path], tmp_path: Path) -> None:
    base, _, _ = https_root
    with pytest.raises(DirectoryError, match=r"CA file .*absent\.pem: No such file") as info:
        load_from(f"{base}/directory.json", timeout=5, ca_file=tmp_path / "absent.pem")
    assert info.value.reason == "directory_unavailable"


def test_a_directory_larger_than_the_limit_is_not_read_whole(
    http_root: tuple[str, Path],
) -> None:
    base, root = http_root
    (root / "big.json").write_bytes(b" " * (MAX_DIRECTORY_BYTES + 1))
    with pytest.raises(DirectoryError, match="larger than") as info:
        load_from(f"{base}/big.json", timeout=5)
    assert info.value.reason == "directory_malformed"


def test_load_from_files_and_limits(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_bytes(b"abc")
    assert load_from(str(tmp_path / "d.json")) == b"abc"
    assert load_from(f"file://{tmp_path / 'd.json'}") == b"abc"
    (tmp_path / "big.json").write_bytes(b" " * (MAX_DIRECTORY_BYTES + 1))
    with pytest.raises(DirectoryError, match="larger than") as info:
        load_from(str(tmp_path / "big.json"))
    assert info.value.reason == "directory_malformed"
    with pytest.raises(DirectoryError, match="cannot read directory file"):
        load_from(str(tmp_path))  # a folder


# --- refresh ----------------------------------------------------------------------------------


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_the_refresh_loop_picks_up_a_newer_file_and_survives_failures(
    state: DirectoryState,
    tmp_path: Path,
    key: ed25519.Ed25519PrivateKey,
    metrics: NodeMetrics,
) -> None:
    path = tmp_path / "directory.json"

    async def run() -> None:
        task = state.start_refresh(0.01)
        try:
            path.unlink()  # the file goes away: keep serving, count it once
            await _until(lambda: refusals(metrics, "directory_unavailable") == 1)
            assert state.current.serial == 3
            path.write_bytes(signed(ed25519.Ed25519PrivateKey.generate(), 9))  # forged
            await _until(lambda: refusals(metrics, "directory_bad_signature") == 1)
            assert state.current.serial == 3
            path.write_bytes(signed(key, 4))
            await _until(lambda: state.serial == 4)
            assert not task.done()
        finally:
            await state.close()
        assert task.cancelled()

    asyncio.run(run())
    assert sample(metrics, "liaison_directory_installs_total", via="refresh") == 1


def test_refresh_from_a_url(
    http_root: tuple[str, Path], key: ed25519.Ed25519PrivateKey, clock: Clock, tmp_path: Path
) -> None:
    base, root = http_root
    (root / "directory.json").write_bytes(signed(key, 1))
    state = make_state(key, tmp_path, clock, source=f"{base}/directory.json")
    state.load()
    (root / "directory.json").write_bytes(signed(key, 2))
    assert asyncio.run(state.refresh()) is True
    assert state.serial == 2
    assert asyncio.run(state.refresh()) is False


# --- learning from peers ----------------------------------------------------------------------


def _serving(raw: bytes, calls: list[str]) -> Callable[[], Awaitable[bytes]]:
    async def fetch() -> bytes:
        calls.append("fetch")
        return raw

    return fetch


def test_a_peer_with_a_newer_serial_is_fetched_from(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, metrics: NodeMetrics
) -> None:
    calls: list[str] = []

    async def run() -> None:
        assert state.learn_from_peer("FR-DGPN", 3, _serving(b"", calls)) is None  # not newer
        assert state.learn_from_peer("FR-DGPN", 2, _serving(b"", calls)) is None
        task = state.learn_from_peer("FR-DGPN", 4, _serving(signed(key, 4), calls))
        assert task is not None
        assert await task is True

    asyncio.run(run())
    assert calls == ["fetch"]
    assert state.serial == 4
    assert sample(metrics, "liaison_directory_installs_total", via="peer") == 1


def test_peer_fetches_are_rate_limited_and_one_at_a_time(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def slow() -> bytes:
        await release.wait()
        return signed(key, 2)  # the peer lied: it holds an older one

    async def run() -> None:
        first = state.learn_from_peer("FR-DGPN", 5, slow)
        assert first is not None
        # One fetch in flight at a time, whoever asks.
        assert state.learn_from_peer("NL-KLPD", 5, _serving(signed(key, 5), calls)) is None
        release.set()
        assert await first is False  # the older directory was refused
        # The same peer again, too soon: nothing.
        assert state.learn_from_peer("FR-DGPN", 5, _serving(signed(key, 5), calls)) is None
        # Another peer may be asked at once.
        task = state.learn_from_peer("NL-KLPD", 5, _serving(signed(key, 5), calls))
        assert task is not None and await task is True
        # After the interval the first peer may be asked again.
        clock.mono += 30
        assert state.learn_from_peer("FR-DGPN", 6, _serving(signed(key, 6), calls)) is not None
        await state.close()

    asyncio.run(run())
    assert state.serial == 5


def test_a_peer_can_neither_forge_nor_roll_back(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> None:
    calls: list[str] = []
    forged = signed(ed25519.Ed25519PrivateKey.generate(), 10)

    async def run() -> None:
        task = state.learn_from_peer("FR-DGPN", 10, _serving(forged, calls))
        assert task is not None and await task is False
        clock.mono += 60
        task = state.learn_from_peer("FR-DGPN", 10, _serving(signed(key, 1), calls))
        assert task is not None and await task is False

    asyncio.run(run())
    assert state.serial == 3
    assert refusals(metrics, "directory_bad_signature") == 1
    assert refusals(metrics, "directory_rollback") == 1


def test_a_failing_or_hanging_peer_is_counted_and_harmless(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock, metrics: NodeMetrics
) -> None:
    (tmp_path / "directory.json").write_bytes(signed(key, 3))
    state = make_state(key, tmp_path, clock, metrics, fetch_timeout=0.05)
    state.load()

    async def broken() -> bytes:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
        )

    async def hanging() -> bytes:
        await asyncio.sleep(10)
        return b""

    async def run() -> None:
        task = state.learn_from_peer("FR-DGPN", 4, broken)
        assert task is not None and await task is False
        task = state.learn_from_peer("NL-KLPD", 4, hanging)
        assert task is not None and await task is False

    asyncio.run(run())
    assert refusals(metrics, "directory_unavailable") == 2
    assert state.current.serial == 3


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([(SERIAL_METADATA, "7")], 7),
        ([("other", "1"), (SERIAL_METADATA, b"12")], 12),
        ([(SERIAL_METADATA, "-1")], None),
        ([(SERIAL_METADATA, "1e3")], None),
        ([(SERIAL_METADATA, "9" * 21)], None),
        ([(SERIAL_METADATA, "")], None),
        ([], None),
    ],
)
def test_advertised_serial(metadata: list[tuple[str, str | bytes]], expected: int) -> None:
    assert advertised_serial(dict(metadata)) == expected  # as the handler holds it


# --- GetDirectory -----------------------------------------------------------------------------


def test_signed(state: DirectoryState) -> None:
    for known in (0, 1, 99):  # whatever the caller holds: it verifies and decides
        request = exchange_pb2.GetDirectoryRequest(known_serial=known).SerializeToString()
        assert get_directory_request_from_bytes(request) == known
        response = exchange_pb2.GetDirectoryResponse.FromString(
            signed_directory_to_bytes(*state.signed())
        )
        assert response.serial == 3 and response.signed_directory == state.raw
    with pytest.raises(WireError):
        get_directory_request_from_bytes(b"\xff\xff\xff")


def test_signed_without_a_directory_is_unavailable(key: ed25519.Ed25519PrivateKey) -> None:
    empty = DirectoryState(key.public_key(), FED, "/nowhere", None)
    with pytest.raises(Refusal) as info:
        empty.signed()
    assert info.value.reasons == ("directory_unavailable",)


def test_new_members_and_status_changes_are_logged(
    state: DirectoryState, key: ed25519.Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    members = [
        _member("DE-BKA", MemberStatus.REVOKED),
        _member("NL-KLPD"),
    ]
    with caplog.at_level(logging.INFO, "liaison.directory"):
        assert state.offer(signed(key, 4, members), "file")
    assert "directory serial 4 installed from file (was 3), 2 member(s)" in caplog.text
    assert "DE-BKA is now revoked (was active)" in caplog.text
    assert "FR-DGPN left the directory" in caplog.text
    assert "NL-KLPD joined (active)" in caplog.text


def test_a_node_learns_a_directory_from_a_peer_over_mtls(
    state: DirectoryState, tmp_path: Path, key: ed25519.Ed25519PrivateKey, clock: Clock
) -> None:
    """The fetch the node hands to learn_from_peer, against a GetDirectory served by
    `signed` on loopback: its own client certificate, the peer's TLS name checked against
    the federation CA, its serial in the request metadata."""
    from federation.client import ClientIdentity

    authority = tmp_path / "authority"
    create_authority(authority, FED)
    issue_node_certificate(authority, FED, "DE-BKA", tmp_path / "de")
    issue_node_certificate(authority, FED, "FR-DGPN", tmp_path / "fr")
    me = ClientIdentity(
        node_id="FR-DGPN",
        federation=FED,
        certificate=(tmp_path / "fr" / "tls.crt").read_bytes(),
        private_key=(tmp_path / "fr" / "tls.key").read_bytes(),
        ca=(tmp_path / "fr" / "ca.crt").read_bytes(),
    )
    # A node at serial 1 learns serial 3 from the peer that holds `state`.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "directory.json").write_bytes(signed(key, 1))
    behind = make_state(key, tmp_path / "b", clock)
    behind.load()
    peers: list[bytes] = []
    seen: list[int | None] = []
    read: list[str] = []

    def identity() -> ClientIdentity:
        read.append(me.node_id)
        return me

    async def get_directory(raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        peers.extend(context.auth_context().get("x509_pem_cert", ()))
        seen.append(advertised_serial(dict(context.invocation_metadata() or ())))
        get_directory_request_from_bytes(raw)
        return signed_directory_to_bytes(*state.signed())

    async def run() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "liaison.exchange.v1.ExchangeService",
                    {"GetDirectory": grpc.unary_unary_rpc_method_handler(get_directory)},
                )
            ]
        )
        credentials = grpc.ssl_server_credentials(
            [
                (
                    (tmp_path / "de" / "tls.key").read_bytes(),
                    (tmp_path / "de" / "tls.crt").read_bytes(),
                )
            ],
            root_certificates=(tmp_path / "de" / "ca.crt").read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        try:
            fetch = fetcher_for(
                identity, "DE-BKA", f"127.0.0.1:{port}", lambda: behind.serial, timeout=5
            )
            assert read == []  # making a fetch reads no credentials: most are never run
            assert await fetch() == state.raw
            task = behind.learn_from_peer("DE-BKA", 3, fetch)
            assert task is not None and await task is True
            assert behind.serial == 3
        finally:
            await server.stop(0)

    asyncio.run(run())
    assert seen == [1, 1]
    assert read == ["FR-DGPN", "FR-DGPN"]
    assert peers == [(tmp_path / "fr" / "tls.crt").read_bytes()] * 2
