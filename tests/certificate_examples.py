"""Odd certificates the refusal tests issue with the genuine authority (unit and federation
tests alike)."""

from __future__ import annotations

from cryptography import x509

# A keyUsage that forbids digitalSignature: unusable for (EC)DHE TLS client authentication.
NO_DIGITAL_SIGNATURE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
