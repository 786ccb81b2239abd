"""The federation's X.509 and key handling, all in one module.

TLS keys are ECDSA P-256 (what every gRPC TLS stack accepts); signing keys for directories
and, later, requests are Ed25519. Functions take the clock as a parameter so expiry can be
tested without waiting.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from federation.identity import node_from_spiffe, spiffe_uri, tls_name


class PkiError(ValueError):
    pass


# What a node certificate is for: it serves TLS and calls peers with the same key pair.
NODE_USAGES: tuple[ObjectIdentifier, ...] = (
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.CLIENT_AUTH,
)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the node needs to know of a peer's client certificate.

    The validity window and usages are kept beside the identity so the node can refuse, with
    a precise reason, what the TLS stack let through (it does not enforce every X.509 rule).
    """

    node_id: str
    sha256: str
    not_after: datetime
    not_before: datetime
    # An extendedKeyUsage that lists clientAuth (the federation's profile requires it).
    client_auth: bool
    # No keyUsage extension, or one that allows digitalSignature (ECDSA in TLS 1.2/1.3).
    digital_signature: bool


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode above applies only to a new file, not one being replaced
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem_private(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` signed `cert` (its issuer name and signature; nothing else)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"certificate file {path} not found") from None
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM X.509 certificate: {exc}") from None


def load_signing_key(pem: bytes, source: str = "the signing key") -> ed25519.Ed25519PrivateKey:
    """An Ed25519 signing key from PEM bytes (as ClientIdentity carries it); errors name
    `source`."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise PkiError(f"{source} is not a PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PkiError(f"{source} is not an Ed25519 private key")
    return key


def load_ed25519_private(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"signing key file {path} not found") from None
    return load_signing_key(pem, str(path))


def public_key_text(key: ed25519.Ed25519PublicKey) -> str:
    """Ed25519 public key as 64 hex characters: short enough for a directory entry."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def public_key_from_text(text: str) -> ed25519.Ed25519PublicKey:
    try:
        raw = bytes.fromhex(text.strip())
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise PkiError(f"not an Ed25519 public key in hex: {exc}") from None


def create_authority(
    out: Path, federation: str, *, now: datetime | None = None, years: int = 10
) -> None:
    """The federation authority: a CA for TLS and an Ed25519 key for the directory."""
    now = now or datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Liaison federation {federation}"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{federation} federation CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    _write_private(out / "ca.key", _pem_private(ca_key))
    (out / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signing = ed25519.Ed25519PrivateKey.generate()
    _write_private(out / "authority.key", _pem_private(signing))
    (out / "authority.pub").write_text(public_key_text(signing.public_key()) + "\n")
    (out / "federation").write_text(federation + "\n")


def _load_ca(authority: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = load_certificate(authority / "ca.crt")
    try:
        key = serialization.load_pem_private_key((authority / "ca.key").read_bytes(), None)
    except FileNotFoundError:
        raise PkiError(
            f"{authority / 'ca.key'} not found: is {authority} an authority "
            "folder made by `liaison federation init`?"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{authority / 'ca.key'} is not an EC private key")
    return cert, key


def issue_node_certificate(
    authority: Path,
    federation: str,
    node_id: str,
    out: Path,
    *,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    now: datetime | None = None,
    days: int = 365,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    usages: tuple[ObjectIdentifier, ...] | None = NODE_USAGES,
    key_usage: x509.KeyUsage | None = None,
) -> x509.Certificate:
    """A node's TLS key and certificate, usable both as gRPC server and as client.

    The validity window defaults to [now - 5 min, now + days]; `not_before`/`not_after`
    override it (an already expired certificate, for tests and drills). `usages` is the
    extendedKeyUsage list (None leaves the extension out) and `key_usage` an optional
    keyUsage extension: both exist so refusal of a wrongly-used certificate can be tested
    with certificates the genuine authority really issued.
    """
    import ipaddress

    now = now or datetime.now(UTC)
    ca_cert, ca_key = _load_ca(authority)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_uri(federation, node_id)),
        x509.DNSName(tls_name(federation, node_id)),
    ]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, node_id),
                    x509.NameAttribute(NameOID.COMMON_NAME, tls_name(federation, node_id)),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    cert = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
    ).sign(ca_key, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    _write_private(out / "tls.key", _pem_private(key))
    (out / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return cert


def create_signing_key(path: Path) -> ed25519.Ed25519PublicKey:
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(path, _pem_private(key))
    return key.public_key()


def peer_certificate(pem: bytes, federation: str) -> PeerCertificate:
    """Identify a TLS peer from its (already chain-verified) certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"unreadable peer certificate: {exc}") from None
    return peer_of(cert, federation)


def peer_of(cert: x509.Certificate, federation: str) -> PeerCertificate:
    """`peer_certificate` for a certificate already parsed."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiError("peer certificate has no subjectAltName") from None
    uris = [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith("spiffe://")
    ]
    if len(uris) != 1:
        raise PkiError(f"peer certificate must carry exactly one spiffe:// URI SAN, has {uris}")
    node_id = node_from_spiffe(uris[0], federation)
    return PeerCertificate(
        node_id=node_id,
        sha256=fingerprint(cert),
        not_after=cert.not_valid_after_utc,
        not_before=cert.not_valid_before_utc,
        client_auth=_allows_client_auth(cert),
        digital_signature=_allows_digital_signature(cert),
    )


def _allows_client_auth(cert: x509.Certificate) -> bool:
    """The federation's profile: extendedKeyUsage present and listing clientAuth.

    RFC 5280 reads an absent extension as "any use", and so does BoringSSL at the handshake;
    every node certificate the authority issues lists clientAuth, so one that does not was
    made for something else and must not act as a node.
    """
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def _allows_digital_signature(cert: x509.Certificate) -> bool:
    """A TLS client proves its key with a signature: keyUsage, if present, must allow it."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.digital_signature
