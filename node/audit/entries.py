"""Audit entries: what one entry records, its canonical encoding (version 1), the hash
chain that links it to the one before, its redacted form and its Merkle leaf; and the
errors of the audit log.

An entry is a line of canonical JSON (sorted keys, no spaces, UTF-8) with `"v": 1`, its
index `seq`, a random `id`, `prev` (the previous entry's hash) and `hash` (SHA-256 over
`prev` and the entry). Its Merkle leaf (RFC 9162) hashes its *redacted* form (`redact`):
without the chain fields, each personal field replaced by a salted SHA-256 of its value.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from federation import merkle

GENESIS = "0" * 64
# The entry encoding: canonical JSON (sorted keys, no spaces, UTF-8), this version in `v`.
ENTRY_VERSION = 1
# Fields that may carry personal data (free text an investigator typed): an overseer gets
# their salted digests, never their values.
PERSONAL_FIELDS = ("case_reference",)
# Step-2 facts, written only when a call has them, so that every other entry keeps exactly
# the bytes (and Merkle leaf) it had before they existed: the ticket a call opened or acted
# on, the payload fields withheld from a disclosed record (names only, never values), the
# operator who decided a ticket, the operator's free-text reason (personal: digested for
# overseers like `case_reference`), and what an allowed exchange achieved (`outcome`:
# `hit` for a Match that matched, `delivered` for a Fetch that disclosed a record,
# `ticket_opened` for one that sent it to a person first), which the compliance indicators
# count (federation/indicators.py).
# Notices add the notice a call received, withdrew or published (`<id>@<version>`) and how
# many identifiers it carried (a count, never a value).
OPTIONAL_FIELDS = ("ticket", "withheld", "operator", "note", "outcome", "notice", "identifiers")
OPTIONAL_PERSONAL_FIELDS = ("note",)
# Fields of the local hash chain, not part of the Merkle leaf: `salt` would unmask the
# personal digests, and `prev`/`hash` are over the unredacted entry.
_CHAIN_FIELDS = frozenset({"prev", "hash", "salt"})


class AuditError(Exception):
    """The log could not record an entry: the request it belongs to must not be answered."""


class AuditCorrupt(AuditError):
    def __init__(self, path: Path | str, index: int, why: str) -> None:
        super().__init__(
            f"{path}: audit entry {index} is invalid ({why}); the log has been "
            "altered or damaged: keep a copy and run `liaison audit verify --full`"
        )
        self.index = index
        self.why = why


class AuditReplay(AuditError):
    """Another replica of this node already audited a request with this requester and
    nonce: the request is a replay, and its entry was not written."""


class CheckpointInvalid(AuditError):
    """A signed checkpoint that is false, forged, torn, or out of order.

    `index` is the checkpoint's position in the checkpoints file (0 is the first) or -1 when
    the file as a whole is at fault; `size` is the tree size it states, if it could be read.
    """

    def __init__(self, path: Path | str, index: int, size: int | None, why: str) -> None:
        where = f"checkpoint {index}" if index >= 0 else "the checkpoints file"
        at = f" (tree size {size})" if size is not None else ""
        super().__init__(f"{path}: {where}{at} is invalid: {why}")
        self.index = index
        self.size = size
        self.why = why


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What is recorded of one exchange: no identifier values, only their digests."""

    time: str
    peer: str
    method: str
    purpose: str
    legal_basis: str
    decision: str
    reasons: tuple[str, ...]
    policy_revision: str
    request_sha256: str
    response_sha256: str
    category: str = ""
    case_reference: str = ""
    nonce: str = ""
    # Ed25519 signatures (hex) of the exact request and response bytes: proof, later, of
    # who asked what and what this node answered.
    request_signature: str = ""
    response_signature: str = ""
    # A random id, chosen before the entry is written so the answer can carry it (the
    # entry's index is known only once it is written); `append` draws one if empty.
    entry_id: str = ""
    # OPTIONAL_FIELDS: in the entry only when not empty.
    ticket: str = ""
    withheld: tuple[str, ...] = ()
    operator: str = ""
    note: str = ""
    notice: str = ""
    identifiers: int = 0
    outcome: str = ""


RECORD_FIELDS = tuple(
    f.name for f in fields(AuditRecord) if f.name != "entry_id" and f.name not in OPTIONAL_FIELDS
)


def new_entry_id() -> str:
    """A fresh audit entry id: 128 random bits, hex."""
    return secrets.token_hex(16)


def entry_timestamp(text: str) -> float | None:
    """An entry's `time` as Unix time; None if unreadable."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# One encoder and one decoder for every entry: `json.dumps` with these options builds a new
# encoder on each call, and `json.loads` of bytes first guesses their encoding (UTF-16,
# UTF-32, a UTF-8 byte-order mark), where an entry is UTF-8 and nothing else.
_encode_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_decode_json = json.JSONDecoder().decode


def canonical(body: Mapping[str, Any]) -> bytes:
    return _encode_json(body).encode()


def chain_digest(prev: str, canonical: bytes) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + canonical).hexdigest()


NOT_CHAINED = "does not chain onto the entry before it"


def parse_line(line: bytes, index: int, path: Path | str) -> tuple[str, dict[str, Any]]:
    """The hash an entry states and its body (without `hash`), if it is entry `index`."""
    try:
        doc = _decode_json(line.decode())  # entries are UTF-8: no encoding is guessed
        stated = doc.pop("hash")
    except (ValueError, KeyError, AttributeError, TypeError):
        raise AuditCorrupt(path, index, "not a JSON entry with a hash") from None
    if doc.get("seq") != index:
        raise AuditCorrupt(path, index, f"sequence {doc.get('seq')!r} where {index} was due")
    return stated, doc


def check_content(
    doc: dict[str, Any], prev: str, stated: Any, index: int, path: Path | str
) -> bytes:
    """An entry chained on `prev` (its `prev` checked already) hashes to what it states;
    returns its canonical encoding (for `leaf_of_canonical`)."""
    encoded = canonical(doc)
    if chain_digest(prev, encoded) != stated:
        raise AuditCorrupt(path, index, "hash does not match its content")
    if doc.get("v") != ENTRY_VERSION:
        raise AuditCorrupt(path, index, f"entry version {doc.get('v')!r}, not {ENTRY_VERSION}")
    return encoded


def check_line(line: bytes, index: int, prev: str, path: Path | str) -> tuple[str, dict[str, Any]]:
    """The entry's hash and body (without `hash`), if it is entry `index` chained on `prev`."""
    stated, doc, _ = check_line_leaf(line, index, prev, path)
    return stated, doc


def check_line_leaf(
    line: bytes, index: int, prev: str, path: Path | str
) -> tuple[str, dict[str, Any], bytes]:
    """As `check_line`, and the entry's Merkle leaf hash."""
    stated, doc = parse_line(line, index, path)
    if doc.get("prev") != prev:
        raise AuditCorrupt(path, index, NOT_CHAINED)
    encoded = check_content(doc, prev, stated, index, path)
    return str(stated), doc, leaf_of_canonical(doc, encoded)


def personal_digest(salt: str, value: str) -> str:
    """The salted digest standing for a personal value ("" for no value): the salt (128
    random bits per entry) makes guessing a short value from its digest hopeless."""
    if not value:
        return ""
    return hashlib.sha256(bytes.fromhex(salt) + value.encode()).hexdigest()


def redact(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry as an overseer sees it (and as its Merkle leaf commits to it)."""
    out = dict(entry)
    for name in _CHAIN_FIELDS:
        out.pop(name, None)
    salt = str(entry.get("salt", ""))
    for name in PERSONAL_FIELDS:
        value = out.pop(name, "")
        out[f"{name}_sha256"] = personal_digest(salt, str(value)) if salt else ""
    for name in OPTIONAL_PERSONAL_FIELDS:
        if name in out:
            out[f"{name}_sha256"] = personal_digest(salt, str(out.pop(name))) if salt else ""
    return out


def leaf_input(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's Merkle leaf hashes: its redacted form, canonical JSON."""
    return canonical(redact(entry))


def entry_leaf(line: bytes) -> bytes:
    """An entry's Merkle leaf hash, from its line in the log."""
    return merkle.leaf_hash(leaf_input(json.loads(line)))


def leaf_of(doc: Mapping[str, Any]) -> bytes:
    """An entry's Merkle leaf hash, from the entry."""
    return merkle.leaf_hash(leaf_input(doc))


def leaf_of_canonical(doc: Mapping[str, Any], encoded: bytes) -> bytes:
    """`leaf_of(doc)`, given `encoded` = `canonical(doc)` (what the chain's hash is
    checked against): the redacted form is cut out of those bytes rather than built and
    encoded again, which saves a dict copy and a second encoding per entry.

    Canonical JSON sorts its members, so dropping the chain fields and putting
    `<field>_sha256` (which sorts where `<field>` did) in place of a personal field gives
    exactly `canonical(redact(doc))` (tested against it). A member is found by its key,
    quoted, followed by a colon and preceded by a comma or the opening brace: inside a
    string every quote is escaped, and an entry holds no nested object, so that is the
    member and nothing else; its value's length is its encoding's. Any entry this does not
    fit (a chain or personal field that is not a string, a personal field missing, no salt,
    a `hash`) takes `leaf_of`."""
    salt = doc.get("salt")
    if type(salt) is not str or not salt or "hash" in doc:
        return leaf_of(doc)
    pieces: list[bytes] = []
    cursor = 0
    # The personal fields first: their keys sort before `prev` and `salt` (one that did
    # not would leave `prev` behind the cursor, unfound: `leaf_of`, slower but right).
    for name, key, digest_key in _PERSONAL_KEYS:
        value = doc.get(name)
        if value is None and name in OPTIONAL_PERSONAL_FIELDS and name not in doc:
            continue
        if type(value) is not str:
            return leaf_of(doc)
        at = encoded.find(key, cursor)
        if at < 1 or encoded[at - 1] not in _BEFORE_MEMBER:
            return leaf_of(doc)
        end = at + len(key) + len(_encode_string(value).encode())
        if encoded[end] not in _AFTER_MEMBER:
            return leaf_of(doc)
        digest = _sha256(bytes.fromhex(salt) + value.encode()).hexdigest() if value else ""
        pieces += (encoded[cursor:at], digest_key, digest.encode(), b'"')
        cursor = end
    # Then the chain fields, each dropped with the comma before it (never the first key).
    for name, key in _CHAIN_KEYS:
        value = doc.get(name)
        if value is None and name not in doc:
            continue
        if type(value) is not str:
            return leaf_of(doc)
        at = encoded.find(key, cursor)
        end = at + len(key) + len(_encode_string(value).encode())
        if at < 0 or encoded[end] not in _AFTER_MEMBER:
            return leaf_of(doc)
        pieces.append(encoded[cursor:at])
        cursor = end
    pieces.append(encoded[cursor:])
    return merkle.leaf_hash(b"".join(pieces))


_encode_string = json.encoder.encode_basestring  # as the canonical encoder writes a string
_sha256 = hashlib.sha256
_BEFORE_MEMBER = b",{"
_AFTER_MEMBER = b",}"
_PERSONAL_KEYS = tuple(
    (name, b'"' + name.encode() + b'":', b'"' + name.encode() + b'_sha256":"')
    for name in sorted((*PERSONAL_FIELDS, *OPTIONAL_PERSONAL_FIELDS))
)
_CHAIN_KEYS = tuple((name, b',"' + name.encode() + b'":') for name in ("prev", "salt"))


def encode_entries(
    bodies: list[dict[str, Any]], first: int, head: str
) -> tuple[list[bytes], list[bytes], list[str]]:
    """The lines of entries `first`, `first + 1`, ... chained onto `head` (their `seq` and
    `prev` are set in `bodies`), with their leaves and hashes: what the log writes."""
    lines, leaves, heads = [], [], []
    for seq, body in enumerate(bodies, start=first):
        body["seq"], body["prev"] = seq, head
        encoded = canonical(body)
        head = chain_digest(head, encoded)
        # The line is the canonical body with its hash appended as the last member.
        lines.append(encoded[:-1] + b',"hash":"' + head.encode() + b'"}\n')
        # The leaf from the encoding just made (no redacted copy encoded again).
        leaves.append(leaf_of_canonical(body, encoded))
        heads.append(head)
    return lines, leaves, heads


def entry_body(record: AuditRecord) -> dict[str, Any]:
    """An entry's body, before the log gives it its place (`seq`) and chain (`prev`)."""
    body: dict[str, Any] = {name: getattr(record, name) for name in RECORD_FIELDS}
    body["reasons"] = list(record.reasons)
    for name in OPTIONAL_FIELDS:
        value = getattr(record, name)
        if value:
            body[name] = list(value) if isinstance(value, tuple) else value
    body["v"], body["id"] = ENTRY_VERSION, record.entry_id or new_entry_id()
    body["salt"] = secrets.token_hex(16)
    return body
