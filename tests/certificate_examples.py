"""Odd certificates the refusal tests issue with the genuine authority (unit and federation
tests alike)."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from cryptography import x509


class IssueOptions(TypedDict, total=False):
    """Keyword options of `issue_node_certificate` that the tests' issuing helpers pass on:
    typed, so that a misspelt or ill-typed option fails the type check, not a run."""

    now: datetime | None
    days: int
    not_before: datetime | None
    not_after: datetime | None
    usages: tuple[x509.ObjectIdentifier, ...] | None
    key_usage: x509.KeyUsage | None


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
