"""Signed, non-repudiable exchanges: what is signed, by whom, and how it is checked.

A signature covers the exact bytes that crossed the wire (protobuf serialisation is not
canonical, so nothing is ever re-serialised to be checked), behind a context string that
says what the bytes are, so a request signature can never pass for a response's:

- request:  Ed25519 by the requester over  "liaison/v1 request" 0x00 method 0x00 body
- response: Ed25519 by the responder over  "liaison/v1 response" 0x00 method 0x00
                                           SHA-256(request body) status 0x00 body

where `body` is the serialised response message for an answer and the serialised
google.rpc.Status for a refusal, and `status` is b"ok" or b"refused". Binding the request's
digest makes every response provably the answer to that one request.

Signatures travel in gRPC metadata (`liaison-signature-bin`: request metadata, and the
response's trailing metadata), so the messages themselves stay unchanged.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

SIGNATURE_METADATA = "liaison-signature-bin"
SERIAL_METADATA = "liaison-directory-serial"
_REQUEST = b"liaison/v1 request\x00"
_RESPONSE = b"liaison/v1 response\x00"


class BadSignature(ValueError):
    """A signature that is missing, malformed, or does not verify."""


def request_message(method: str, body: bytes) -> bytes:
    return _REQUEST + method.encode() + b"\x00" + body


def response_message(method: str, request_sha256: bytes, body: bytes, ok: bool) -> bytes:
    """What a node signs to answer (or refuse) a request: bound to the request by its
    SHA-256, which the caller has already computed (the node audits it too)."""
    return (
        _RESPONSE
        + method.encode()
        + b"\x00"
        + request_sha256
        + (b"ok" if ok else b"refused")
        + b"\x00"
        + body
    )


def sign(key: ed25519.Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def verify(
    public_key: ed25519.Ed25519PublicKey, signature: bytes | None, message: bytes, what: str
) -> None:
    """Return nothing or raise BadSignature; never says which check failed beyond `what`."""
    if not signature or len(signature) != 64:
        raise BadSignature(f"{what}: missing or malformed signature")
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        raise BadSignature(f"{what}: signature does not verify") from None
