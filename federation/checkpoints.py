"""Signed notes, checkpoints and witness cosignatures: the C2SP formats of the audit log.

A node publishes the head of its audit log (docs/audit.md) as a *checkpoint*, and peers
that watch each other's logs add *cosignatures* to it, so an overseer who trusts a quorum
of witnesses knows every one of them saw the same, append-only log. The formats are the
public ones, so any C2SP or Go sumdb tool can read and check what a node publishes:

- c2sp.org/signed-note: a text that ends in a newline, a blank line, then signature lines
  ``— <key name> base64(key ID (4 bytes) ‖ signature)``. The key ID is
  SHA-256(key name ‖ 0x0A ‖ signature type ‖ public key)[:4]; Ed25519 notes are type 0x01
  and sign the text itself. A verifier key is ``<name>+<hex key ID>+base64(type ‖ key)``.
- c2sp.org/tlog-checkpoint: the text is the log's origin, the tree size in decimal and the
  base64 RFC 6962 root, one per line, then optional extension lines.
- c2sp.org/tlog-cosignature: a witness's Ed25519 cosignature is type 0x04; its signature is
  timestamp (u64 big-endian) ‖ Ed25519 signature over
  ``cosignature/v1\\ntime <timestamp>\\n`` + the whole checkpoint text.

Trust rules (signed-note §Signatures): a signature line whose (name, key ID) matches no
known key is ignored; one from a known key must verify, or the whole note is refused; a
note that no known key verified is refused. Everything that can fail raises `NoteError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

ALG_ED25519: Final = 0x01
ALG_COSIGNATURE_V1: Final = 0x04
KEY_ID_SIZE: Final = 4
MAX_SIGNATURES: Final = 100  # the spec asks for at least 16; Go's sumdb/note stops at 100
MAX_TIMESTAMP: Final = (1 << 63) - 1
_DASH: Final = "\u2014 "
_COSIGNATURE_HEADER: Final = "cosignature/v1\n"
_HEX8: Final = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]*")
_ALGS: Final = frozenset({ALG_ED25519, ALG_COSIGNATURE_V1})


class NoteError(ValueError):
    """A note, key or checkpoint that is malformed, unsigned by a known key, or false."""


def _b64decode(text: str, what: str) -> bytes:
    """Standard base64, strictly: the alphabet, padding, and canonical trailing bits.

    Non-canonical encodings would let two texts carry the same bytes, so a changed character
    could go unnoticed; only the canonical one is accepted.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def valid_name(name: str) -> bool:
    """A key name: non-empty, with no Unicode space and no '+' (signed-note §Format)."""
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() or ord(c) < 0x20 for c in name)
        and _is_utf8(name)
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """SHA-256(name ‖ 0x0A ‖ alg ‖ public key)[:4], as signed-note recommends."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:KEY_ID_SIZE]


def _raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class Verifier:
    """One known key: a log's (type 0x01) or a witness's (type 0x04), under its name."""

    name: str
    alg: int
    public_key: bytes  # 32 raw Ed25519 bytes

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if self.alg not in _ALGS:
            raise NoteError(f"unsupported signature type 0x{self.alg:02x}")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key has 32 bytes")

    @classmethod
    def for_log(cls, name: str, key: ed25519.Ed25519PublicKey) -> Verifier:
        """The verifier of plain Ed25519 note signatures (checkpoints a log signs)."""
        return cls(name, ALG_ED25519, _raw_public(key))

    @classmethod
    def for_witness(cls, name: str, key: ed25519.Ed25519PublicKey) -> Verifier:
        """The verifier of a witness's timestamped cosignatures (tlog-cosignature)."""
        return cls(name, ALG_COSIGNATURE_V1, _raw_public(key))

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<hex key ID>+<base64(type ‖ key)>``; the key ID must match."""
        parts = vkey.split("+", 2)
        if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
            raise NoteError("a verifier key is <name>+<8 hex digits>+<base64 key>")
        name, hash16, key64 = parts
        raw = _b64decode(key64, "the verifier key")
        if len(raw) != 33:
            raise NoteError("the verifier key is not one type byte and 32 key bytes")
        verifier = cls(name, raw[0], raw[1:])
        if verifier.key_id != bytes.fromhex(hash16):
            raise NoteError("the verifier key's ID does not match its name and key")
        return verifier

    def to_vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.alg]) + self.public_key)}"

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.alg, self.public_key)

    def verify(self, text: str, signature: bytes) -> None:
        """Check one signature (key ID stripped) over a note's text; None or NoteError."""
        key = ed25519.Ed25519PublicKey.from_public_bytes(self.public_key)
        if self.alg == ALG_COSIGNATURE_V1:
            if len(signature) != 8 + 64:
                raise NoteError(f"{self.name}: malformed cosignature")
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp > MAX_TIMESTAMP:
                raise NoteError(f"{self.name}: cosignature timestamp out of range")
            message = _cosigned_message(text, timestamp)
            signature = signature[8:]
        else:
            if len(signature) != 64:
                raise NoteError(f"{self.name}: malformed signature")
            message = text.encode()
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise NoteError(f"{self.name}: signature does not verify") from None


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def vkey(name: str, key: ed25519.Ed25519PublicKey, alg: int = ALG_ED25519) -> str:
    """The verifier key string of a public key, to hand to those who will verify."""
    return Verifier(name, alg, _raw_public(key)).to_vkey()


def parse_signer_key(skey: str) -> tuple[str, ed25519.Ed25519PrivateKey]:
    """Read Go sumdb's ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 ‖ seed)``.

    For interoperability with keys made by Go tools; the node keeps its own keys as PEM
    (`federation.pki`). The key ID is checked against the derived public key.
    """
    parts = skey.split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _HEX8.fullmatch(parts[3]):
        raise NoteError("a signer key is PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>")
    name, hash16, key64 = parts[2:]
    raw = _b64decode(key64, "the signer key")
    if len(raw) != 33 or raw[0] != ALG_ED25519 or not valid_name(name):
        raise NoteError("the signer key is not a named Ed25519 seed")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[1:])
    if key_id(name, ALG_ED25519, _raw_public(key.public_key())) != bytes.fromhex(hash16):
        raise NoteError("the signer key's ID does not match its name and key")
    return name, key


# --- notes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    name: str
    key_id: bytes
    signature: bytes  # without the key ID
    text: str  # the whole line, newline included


def _check_text(text: str) -> None:
    """Valid UTF-8 with no ASCII control character but newline (signed-note §Format)."""
    if not _is_utf8(text) or any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note must be UTF-8 without control characters other than newline")


def _check_body(body: str) -> None:
    if not body.endswith("\n"):
        raise NoteError("a note's text must end with a newline")
    _check_text(body)


def _split(note: str | bytes) -> tuple[str, list[_Line]]:
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note must be UTF-8") from None
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("a note needs a blank line before its signatures")
    body, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("a note must end with signature lines, each ending in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    parsed = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("a signature line starts with an em dash and a space")
        name, sep, b64 = line[len(_DASH) :].partition(" ")
        if not sep or not valid_name(name):
            raise NoteError("a signature line is '— <name> <base64>'")
        raw = _b64decode(b64, "a signature")
        if len(raw) <= KEY_ID_SIZE:
            raise NoteError("a signature is a key ID and at least one more byte")
        parsed.append(_Line(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:], line + "\n"))
    return body, parsed


def _index(verifiers: Sequence[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        ident = (v.name, v.key_id)
        if ident in known and known[ident] != v:
            raise NoteError(f"two known keys share the name and key ID {v.name}+{v.key_id.hex()}")
        known[ident] = v
    return known


def _open(note: str | bytes, verifiers: Sequence[Verifier]) -> tuple[str, list[_Line]]:
    """The body and the lines that known keys verified; raises unless at least one did."""
    body, lines = _split(note)
    known = _index(verifiers)
    verified: list[_Line] = []
    seen: set[tuple[str, bytes]] = set()
    for line in lines:
        ident = (line.name, line.key_id)
        verifier = known.get(ident)
        if verifier is None or ident in seen:
            continue  # unknown keys are ignored; a known key's later lines too (as Go does)
        seen.add(ident)
        verifier.verify(body, line.signature)
        verified.append(line)
    if not verified:
        raise NoteError("no known key signed this note")
    return body, verified


def open_note(note: str | bytes, verifiers: Sequence[Verifier]) -> tuple[str, tuple[str, ...]]:
    """Verify a signed note: its text and the names of the known keys that signed it.

    Raises NoteError if the note is malformed, a known key's signature fails, or no known
    key signed it.
    """
    body, verified = _open(note, verifiers)
    return body, tuple(line.name for line in verified)


def keep_verified(note: str | bytes, verifiers: Sequence[Verifier]) -> str:
    """The note with only the signature lines that known keys verified, as `open_note`
    verifies them (NoteError if it would refuse the note).

    What a witness keeps and serves again: lines it could not check (another witness's, or
    garbage a log put there) never travel on beside its own cosignature.
    """
    body, verified = _open(note, verifiers)
    return body + "\n" + "".join(line.text for line in verified)


def _signature_line(name: str, ident: bytes, signature: bytes) -> str:
    return f"{_DASH}{name} {_b64(ident + signature)}\n"


def sign_note(body: str, name: str, key: ed25519.Ed25519PrivateKey) -> str:
    """A note with one Ed25519 signature (type 0x01) by `key` under `name`."""
    _check_body(body)
    if not valid_name(name):
        raise NoteError(f"invalid key name {name!r}")
    ident = key_id(name, ALG_ED25519, _raw_public(key.public_key()))
    return body + "\n" + _signature_line(name, ident, key.sign(body.encode()))


def add_signature_lines(note: str, lines: Sequence[str]) -> str:
    """Append signature lines (e.g. witnesses' cosignatures) to a signed note.

    A line from the same (name, key ID) as one already present replaces it, as Go's
    note.Sign does, so re-cosigning a checkpoint never piles up lines. Nothing is verified.
    """
    body, existing = _split(note)
    new: list[_Line] = []
    for line in lines:
        parsed = _split("x\n\n" + line)[1]
        if len(parsed) != 1:
            raise NoteError("each signature line is one line ending in a newline")
        new.append(parsed[0])
    replaced = {(n.name, n.key_id) for n in new}
    kept = [line for line in existing if (line.name, line.key_id) not in replaced]
    if len(kept) + len(new) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    return body + "\n" + "".join(line.text for line in kept + new)


# --- checkpoints ------------------------------------------------------------------------------


def audit_origin(federation: str, node_id: str) -> str:
    """The origin of a Liaison node's audit log checkpoints, and the name of the key
    signing them."""
    return f"{federation}/{node_id}/audit"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head as c2sp.org/tlog-checkpoint writes it."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("a checkpoint's origin is one non-empty line")
        if isinstance(self.size, bool) or not 0 <= self.size < 1 << 64:
            raise NoteError("a checkpoint's tree size is in [0, 2**64)")
        if len(self.root) != 32:
            raise NoteError("a checkpoint's root is a 32-byte hash")
        if any(not line or "\n" in line for line in self.extensions):
            raise NoteError("a checkpoint's extension lines are non-empty lines")

    def to_note_body(self) -> str:
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        body = "\n".join(lines) + "\n"
        _check_body(body)
        return body

    @classmethod
    def from_note_body(cls, body: str) -> Checkpoint:
        """Parse a checkpoint's text strictly: decimal size, canonical base64 root."""
        _check_body(body)
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a tree size and a root hash")
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise NoteError("a checkpoint's tree size is a decimal with no leading zeroes")
        raw = _b64decode(root, "a checkpoint's root hash")
        return cls(origin, int(size), raw, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, name: str, key: ed25519.Ed25519PrivateKey) -> str:
    """The checkpoint as a note signed by the log's key (its name SHOULD be the origin)."""
    return sign_note(checkpoint.to_note_body(), name, key)


def _as_list(verifiers: Verifier | Sequence[Verifier]) -> Sequence[Verifier]:
    return [verifiers] if isinstance(verifiers, Verifier) else verifiers


def verify_checkpoint(
    note: str | bytes, origin: str, verifier: Verifier | Sequence[Verifier]
) -> Checkpoint:
    """A checkpoint signed by the log's key(s) and of the expected origin, or NoteError.

    The origin is checked because a log's key could sign for more than one log: a
    checkpoint of another log must never be taken for this one's.
    """
    body, _ = _open(note, _as_list(verifier))
    checkpoint = Checkpoint.from_note_body(body)
    if checkpoint.origin != origin:
        raise NoteError(f"the checkpoint is of {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


# --- witness cosignatures ---------------------------------------------------------------------


def cosignature_line(
    checkpoint_body: str, name: str, key: ed25519.Ed25519PrivateKey, timestamp: int
) -> str:
    """One witness's cosignature line (type 0x04) over a checkpoint's text."""
    Checkpoint.from_note_body(checkpoint_body)  # a witness signs checkpoints and nothing else
    if not valid_name(name):
        raise NoteError(f"invalid key name {name!r}")
    if isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError("a cosignature's timestamp is in [0, 2**63)")
    ident = key_id(name, ALG_COSIGNATURE_V1, _raw_public(key.public_key()))
    signature = key.sign(_cosigned_message(checkpoint_body, timestamp))
    return _signature_line(name, ident, timestamp.to_bytes(8, "big") + signature)


def cosign(
    checkpoint_note: str, witness_name: str, key: ed25519.Ed25519PrivateKey, timestamp: int
) -> str:
    """The signed checkpoint with this witness's cosignature added (or replaced).

    It does not check the log's signature nor the log's consistency: a witness does both
    (`verify_checkpoint`, `federation.merkle.verify_consistency`) before it cosigns.
    """
    body, _ = _split(checkpoint_note)
    line = cosignature_line(body, witness_name, key, timestamp)
    return add_signature_lines(checkpoint_note, [line])


def verify_cosignature(
    note: str | bytes,
    witness: Verifier,
    *,
    origin: str | None = None,
    now: int | None = None,
) -> tuple[Checkpoint, int]:
    """The checkpoint a witness cosigned and the time it did, or NoteError.

    `witness` must be a type 0x04 verifier. With `origin`, a checkpoint of another log is
    refused; with `now` (Unix seconds), so is a cosignature dated after it.
    """
    if witness.alg != ALG_COSIGNATURE_V1:
        raise NoteError(f"{witness.name} is not a witness cosignature key")
    body, verified = _open(note, [witness])
    checkpoint = Checkpoint.from_note_body(body)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"the checkpoint is of {checkpoint.origin!r}, not {origin!r}")
    timestamp = int.from_bytes(verified[0].signature[:8], "big")
    if now is not None and timestamp > now:
        raise NoteError(f"{witness.name}: cosignature dated in the future")
    return checkpoint, timestamp
