"""The node's TLS server credentials, rotated without downtime.

gRPC calls a *fetcher* before every new TLS handshake; ours re-reads the certificate, key
and CA files only when their stat signature (inode, size, mtime_ns) changed, so the common
case costs three `stat` calls against a ~3 ms handshake. A changed set is validated before
it is used (certificate and key belong together, the certificate chains to the CA bundle,
is within its validity window and names this node); anything wrong is logged once and the
node keeps serving with the configuration it had. Connections that are already open keep
the session they negotiated, so calls in flight are never affected by a rotation.

Operators rotate by writing the new files beside the old and renaming them into place
(key first, then certificate): a half-written file only delays the switch to the next
handshake after the write completes, because a torn read fails validation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from federation.identity import InvalidIdentity
from federation.pki import PkiError, fingerprint, issued_by, peer_of

log = logging.getLogger("liaison.tls")

# (inode, size, mtime_ns) of each of the three files, in order; None for a missing file.
_StatSignature = tuple[tuple[int, int, int] | None, ...]


class CertificateError(ValueError):
    """The TLS files cannot be served; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    certificate: Path
    key: Path
    ca: Path

    def signature(self) -> _StatSignature:
        """Cheap change detector: a rename-into-place changes the inode, a rewrite the
        size or mtime."""
        out: list[tuple[int, int, int] | None] = []
        for path in (self.certificate, self.key, self.ca):
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
            else:
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ServingCertificate:
    """A validated certificate, key and CA bundle, as served."""

    certificate_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    sha256: str
    not_before: datetime
    not_after: datetime
    node_id: str

    def __repr__(self) -> str:  # never let the private key reach a log
        return (
            f"ServingCertificate(sha256={self.sha256[:16]}..., node_id={self.node_id!r}, "
            f"not_after={self.not_after:%Y-%m-%dT%H:%M}Z)"
        )


def _public_bytes(key: object) -> bytes:
    if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    raise CertificateError(f"unsupported key type {type(key).__name__}")


def validate(
    certificate_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    *,
    now: datetime,
    federation: str,
    node_id: str,
    where: str = "TLS",
) -> ServingCertificate:
    """Everything that must hold before a certificate is served, or CertificateError.

    gRPC would accept a key that does not match its certificate and fail every handshake
    after it; a certificate from another CA or an expired one would make every peer hang
    up. Checking here turns an outage into a log line and an unchanged node.
    """
    try:
        chain = x509.load_pem_x509_certificates(certificate_pem)
    except ValueError as exc:
        raise CertificateError(f"{where} certificate is not PEM X.509: {exc}") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{where} key is not an unencrypted PEM key: {exc}") from None
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        raise CertificateError(f"{where} key does not belong to the certificate")
    try:
        authorities = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise CertificateError(f"{where} CA bundle is not PEM X.509: {exc}") from None
    if not any(issued_by(leaf, ca) for ca in authorities):
        raise CertificateError(
            f"{where} certificate (issuer {leaf.issuer.rfc4514_string()}) is not signed by "
            "any CA in the bundle"
        )
    if now < leaf.not_valid_before_utc:
        raise CertificateError(
            f"{where} certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
        )
    if now >= leaf.not_valid_after_utc:
        raise CertificateError(
            f"{where} certificate expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
        )
    try:
        named = peer_of(leaf, federation)
    except (PkiError, InvalidIdentity) as exc:
        raise CertificateError(f"{where} certificate has no node identity: {exc}") from None
    if named.node_id != node_id:
        raise CertificateError(
            f"{where} certificate names node {named.node_id}, this node is {node_id}"
        )
    return ServingCertificate(
        certificate_pem=certificate_pem,
        key_pem=key_pem,
        ca_pem=ca_pem,
        sha256=fingerprint(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        node_id=named.node_id,
    )


def _read(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    try:
        return files.certificate.read_bytes(), files.key.read_bytes(), files.ca.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {exc.filename}: {exc.strerror}") from None


class RotatingServerCredentials:
    """Server credentials that pick up new certificate files between handshakes.

    `on_change` is called with the first certificate and after every rotation (from the
    thread gRPC handshakes on; it must be quick and must not raise — a metric update).
    """

    def __init__(
        self,
        files: TlsFiles,
        *,
        federation: str,
        node_id: str,
        on_change: Callable[[ServingCertificate], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_rejected_after: float = 60.0,
    ) -> None:
        self._files = files
        self._federation = federation
        self._node_id = node_id
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._signature = files.signature()
        # A rejected set is not re-read on every handshake (that would log on each one) but
        # is tried again after a while: a certificate "not valid before" becomes valid.
        self._rejected: _StatSignature | None = None
        self._rejected_until = 0.0
        self._retry_rejected_after = retry_rejected_after
        # Bumped on every rotation; each credentials object remembers the one it last gave
        # gRPC, so a rotation found by `refresh()` outside a handshake still reaches it.
        self._epoch = 0
        self.rotations = 0
        self.failures = 0
        # The first load raises: a node that cannot serve its certificate must not start.
        self._current = self._load()
        self._notify(self._current)

    @property
    def current(self) -> ServingCertificate:
        return self._current

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for `add_secure_port`; client certificates are required. Call it
        once per port: each keeps track of the certificate it serves."""
        initial, fetch = self.fetcher()
        # The stubs type the fetcher as never returning None; gRPC documents None as
        # "no change", which is what it returns between rotations.
        fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], fetch)
        return grpc.dynamic_ssl_server_credentials(
            initial, fetcher, require_client_authentication=True
        )

    def fetcher(
        self,
    ) -> tuple[
        grpc.ServerCertificateConfiguration,
        Callable[[], grpc.ServerCertificateConfiguration | None],
    ]:
        """The initial configuration and gRPC's per-handshake hook for one credentials
        object: it returns a new configuration when the served one changed, else None."""
        with self._lock:
            served = [self._epoch]
            initial = self._configuration(self._current)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            try:
                self.refresh()
                with self._lock:
                    if served[0] == self._epoch:
                        return None
                    served[0] = self._epoch
                    current = self._current
                return self._configuration(current)
            except Exception:  # runs inside gRPC's handshake: never let it fail
                log.exception("TLS certificate fetcher failed; keeping the current certificate")
                return None

        return initial, fetch

    def refresh(self) -> bool:
        """Load the files if they changed since the last look; True if a new certificate
        is now served. Never raises: a broken set is logged once and left aside."""
        signature = self._files.signature()
        if signature == self._signature or self._still_rejected(signature):
            return False
        with self._lock:
            if signature == self._signature or self._still_rejected(signature):
                return False
            try:
                loaded = self._load()
            except CertificateError as exc:
                self._reject(signature)
                self.failures += 1
                # A warning: halfway through a rotation (key renamed, certificate not yet)
                # the pair does not match, and that is expected.
                log.warning(
                    "new TLS files not used, still serving certificate %s: %s",
                    self._current.sha256[:16],
                    exc,
                )
                return False
            except Exception:  # the fetcher runs inside gRPC's handshake: never let it fail
                self._reject(signature)
                self.failures += 1
                log.exception("unexpected error reading the TLS files; keeping the old ones")
                return False
            # Files can change between the stat and the read: a later stat sees the change
            # again and re-validates, so remembering the earlier signature is safe.
            self._signature = signature
            self._rejected = None
            if loaded.certificate_pem == self._current.certificate_pem and (
                loaded.key_pem == self._current.key_pem and loaded.ca_pem == self._current.ca_pem
            ):
                return False  # touched, not changed
            previous, self._current = self._current, loaded
            self._epoch += 1
            self.rotations += 1
        log.info(
            "TLS certificate rotated: %s -> %s (valid until %s)",
            previous.sha256[:16],
            loaded.sha256[:16],
            loaded.not_after.isoformat(),
        )
        self._notify(loaded)
        return True

    def _still_rejected(self, signature: _StatSignature) -> bool:
        return signature == self._rejected and time.monotonic() < self._rejected_until

    def _reject(self, signature: _StatSignature) -> None:
        self._rejected = signature
        self._rejected_until = time.monotonic() + self._retry_rejected_after

    def _load(self) -> ServingCertificate:
        cert, key, ca = _read(self._files)
        return validate(
            cert,
            key,
            ca,
            now=self._clock(),
            federation=self._federation,
            node_id=self._node_id,
            where=str(self._files.certificate),
        )

    def _notify(self, serving: ServingCertificate) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(serving)
        except Exception:
            log.exception("certificate change hook failed")

    @staticmethod
    def _configuration(serving: ServingCertificate) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(serving.key_pem, serving.certificate_pem)], root_certificates=serving.ca_pem
        )
