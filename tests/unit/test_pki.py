"""The federation's X.509 and keys: real certificates, real files, an injected clock."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.identity import InvalidIdentity
from federation.pki import (
    PkiError,
    create_authority,
    create_signing_key,
    fingerprint,
    issue_node_certificate,
    load_certificate,
    load_ed25519_private,
    peer_certificate,
    public_key_from_text,
    public_key_text,
)

FED = "liaison.example"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("authority")
    create_authority(out, FED, now=NOW, years=2)
    return out


@pytest.fixture(scope="module")
def node_dir(authority: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("node") / "DE-BKA"
    issue_node_certificate(
        authority,
        FED,
        "DE-BKA",
        out,
        now=NOW,
        days=90,
        hosts=("localhost", "127.0.0.1", "node.de.example"),
    )
    return out


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _other_ca_cert(federation: str, uris: list[str]) -> bytes:
    """A self-signed leaf with chosen URI SANs, to feed peer_certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"leaf.{federation}")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# --- the authority ----------------------------------------------------------------------------


def test_authority_writes_its_files(authority: Path) -> None:
    names = {p.name for p in authority.iterdir()}
    assert names == {"ca.key", "ca.crt", "authority.key", "authority.pub", "federation"}
    assert (authority / "federation").read_text() == FED + "\n"


def test_authority_private_keys_are_owner_only(authority: Path) -> None:
    assert _mode(authority / "ca.key") == 0o600
    assert _mode(authority / "authority.key") == 0o600


def test_authority_ca_is_a_ca_with_injected_validity(authority: Path) -> None:
    ca = _cert(authority / "ca.crt")
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert ca.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert ca.not_valid_after_utc == NOW + timedelta(days=365 * 2)
    assert ca.subject == ca.issuer
    assert FED in ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_authority_public_key_matches_its_private_key(authority: Path) -> None:
    private = load_ed25519_private(authority / "authority.key")
    public = public_key_from_text((authority / "authority.pub").read_text())
    signature = private.sign(b"directory bytes")
    public.verify(signature, b"directory bytes")
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"directory bytez")


# --- node certificates ------------------------------------------------------------------------


def test_node_certificate_has_spiffe_uri_and_tls_name(node_dir: Path) -> None:
    cert = _cert(node_dir / "tls.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://liaison.example/node/DE-BKA"
    ]
    dns = san.get_values_for_type(x509.DNSName)
    assert "de-bka.node.liaison.example" in dns
    assert {"localhost", "node.de.example"} <= set(dns)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "de-bka.node.liaison.example"


def test_node_certificate_is_server_and_client_and_not_a_ca(node_dir: Path) -> None:
    cert = _cert(node_dir / "tls.crt")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_node_certificate_chains_to_the_ca(authority: Path, node_dir: Path) -> None:
    ca = _cert(authority / "ca.crt")
    cert = _cert(node_dir / "tls.crt")
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    ca_public = ca.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    hash_algorithm = cert.signature_hash_algorithm
    assert hash_algorithm is not None
    ca_public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # The copy of the CA beside the node certificate is the authority's own.
    assert (node_dir / "ca.crt").read_bytes() == (authority / "ca.crt").read_bytes()


def test_node_certificate_does_not_chain_to_another_ca(node_dir: Path, tmp_path: Path) -> None:
    create_authority(tmp_path / "other", FED, now=NOW)
    other = _cert(tmp_path / "other" / "ca.crt")
    with pytest.raises((InvalidSignature, ValueError)):
        _cert(node_dir / "tls.crt").verify_directly_issued_by(other)


def test_node_private_key_is_owner_only_and_matches_the_certificate(node_dir: Path) -> None:
    assert _mode(node_dir / "tls.key") == 0o600
    key = serialization.load_pem_private_key((node_dir / "tls.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    cert_public = _cert(node_dir / "tls.crt").public_key()
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert_public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_node_certificate_expiry_follows_the_injected_clock(
    authority: Path, tmp_path: Path
) -> None:
    when = datetime(2027, 1, 15, 8, 30, tzinfo=UTC)
    cert = issue_node_certificate(authority, FED, "FR-PN", tmp_path, now=when, days=7)
    assert cert.not_valid_before_utc == when - timedelta(minutes=5)
    assert cert.not_valid_after_utc == when + timedelta(days=7)
    assert peer_certificate(cert.public_bytes(serialization.Encoding.PEM), FED).not_after == (
        when + timedelta(days=7)
    )


def test_issue_returns_what_it_wrote(authority: Path, tmp_path: Path) -> None:
    cert = issue_node_certificate(authority, FED, "NL-KMAR", tmp_path, now=NOW)
    assert fingerprint(cert) == fingerprint(_cert(tmp_path / "tls.crt"))


def test_issue_without_a_ca_key_says_what_folder_is_expected(
    tmp_path: Path, authority: Path
) -> None:
    half = tmp_path / "half"
    half.mkdir()
    (half / "ca.crt").write_bytes((authority / "ca.crt").read_bytes())
    with pytest.raises(PkiError, match=r"ca\.key not found.*liaison federation init"):
        issue_node_certificate(half, FED, "DE-BKA", tmp_path / "out", now=NOW)


def test_issue_without_a_ca_certificate(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"certificate file .*ca\.crt not found"):
        issue_node_certificate(tmp_path, FED, "DE-BKA", tmp_path / "out", now=NOW)


# --- peer certificates ------------------------------------------------------------------------


def test_peer_certificate_extracts_node_id_and_fingerprint(node_dir: Path) -> None:
    pem = (node_dir / "tls.crt").read_bytes()
    peer = peer_certificate(pem, FED)
    assert peer.node_id == "DE-BKA"
    cert = _cert(node_dir / "tls.crt")
    assert peer.sha256 == fingerprint(cert)
    assert len(peer.sha256) == 64 and peer.sha256 == peer.sha256.lower()
    assert peer.not_after == NOW + timedelta(days=90)


def test_fingerprint_is_sha256_of_der(node_dir: Path) -> None:
    import hashlib

    cert = _cert(node_dir / "tls.crt")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint(cert) == hashlib.sha256(der).hexdigest()
    assert fingerprint(cert) == cert.fingerprint(hashes.SHA256()).hex()


def test_peer_certificate_of_another_federation_is_refused(node_dir: Path) -> None:
    pem = (node_dir / "tls.crt").read_bytes()
    with pytest.raises(InvalidIdentity, match=r"is not a node of federation 'other\.example'"):
        peer_certificate(pem, "other.example")


def test_peer_certificate_with_two_spiffe_uris_is_refused() -> None:
    pem = _other_ca_cert(FED, [f"spiffe://{FED}/node/DE-BKA", f"spiffe://{FED}/node/FR-PN"])
    with pytest.raises(PkiError, match="exactly one spiffe:// URI SAN"):
        peer_certificate(pem, FED)


def test_peer_certificate_without_spiffe_uri_is_refused() -> None:
    pem = _other_ca_cert(FED, ["https://example.org/"])
    with pytest.raises(PkiError, match=r"exactly one spiffe:// URI SAN, has \[\]"):
        peer_certificate(pem, FED)


def test_peer_certificate_without_san_is_refused() -> None:
    with pytest.raises(PkiError, match="no subjectAltName"):
        peer_certificate(_other_ca_cert(FED, []), FED)


def test_peer_certificate_ignores_non_spiffe_uris() -> None:
    pem = _other_ca_cert(FED, ["https://example.org/", f"spiffe://{FED}/node/IT-CC"])
    assert peer_certificate(pem, FED).node_id == "IT-CC"


def test_peer_certificate_with_a_bad_node_id_is_refused() -> None:
    pem = _other_ca_cert(FED, [f"spiffe://{FED}/node/it-cc"])
    with pytest.raises(InvalidIdentity, match="invalid node id"):
        peer_certificate(pem, FED)


def test_peer_certificate_garbage_is_refused() -> None:
    with pytest.raises(PkiError, match="unreadable peer certificate"):
        peer_certificate(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", FED)


# --- files and signing keys -------------------------------------------------------------------


def test_load_certificate_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"missing\.crt not found"):
        load_certificate(tmp_path / "missing.crt")
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate")
    with pytest.raises(PkiError, match=r"bad\.crt is not a PEM X\.509 certificate"):
        load_certificate(bad)


def test_signing_key_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.key"
    public = create_signing_key(path)
    assert _mode(path) == 0o600
    private = load_ed25519_private(path)
    assert public_key_text(private.public_key()) == public_key_text(public)
    public.verify(private.sign(b"envelope"), b"envelope")


def test_load_ed25519_private_refuses_other_keys(tmp_path: Path, node_dir: Path) -> None:
    with pytest.raises(PkiError, match=r"tls\.key is not an Ed25519 private key"):
        load_ed25519_private(node_dir / "tls.key")
    with pytest.raises(PkiError, match=r"absent\.key not found"):
        load_ed25519_private(tmp_path / "absent.key")
    junk = tmp_path / "junk.key"
    junk.write_text("junk")
    with pytest.raises(PkiError, match=r"junk\.key is not a PEM private key"):
        load_ed25519_private(junk)


def test_public_key_text_is_64_hex_and_round_trips() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    text = public_key_text(key)
    assert len(text) == 64 and all(c in "0123456789abcdef" for c in text)
    assert public_key_text(public_key_from_text(f"  {text.upper()}\n")) == text


@pytest.mark.parametrize("text", ["", "zz" * 32, "ab" * 31, "ab" * 33])
def test_public_key_from_text_refuses_non_keys(text: str) -> None:
    with pytest.raises(PkiError, match="not an Ed25519 public key in hex"):
        public_key_from_text(text)


def test_rewriting_a_key_file_with_a_loose_mode_tightens_it(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_text("old key")
    path.chmod(0o644)
    create_signing_key(path)
    assert _mode(path) == 0o600
    load_ed25519_private(path)
