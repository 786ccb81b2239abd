"""Checking a node's audit log from outside: the OversightService client and audit exports.

`OversightClient` calls one node's OversightService over mTLS and returns plain, verified
values, never protobuf: every checkpoint is verified with the node's signing key (from the
directory) for the origin `checkpoints.audit_origin(federation, node)`, every proof against it. What
does not verify raises `ProofFailed`; refusals and transport failures raise the other
`federation.errors` (the node's machine-readable reasons in `.reasons`).

An **audit export** (`AuditExport`, JSON) lets an overseer check a range of entries [start,
end) against the node's signed root without the rest of the log:

    {"format": "liaison-audit-export/v1",
     "origin": "<federation>/<node>/audit",
     "verifier_key": "<signed-note vkey of the node's key>",
     "checkpoint": "<the signed checkpoint note, tree size N>",
     "start": A, "end": B,
     "left_hashes": [hex, ...],        # the compact range of leaves [0, A): one per set bit
     "entries": ["<entry>", ...],      # entries A..B-1, redacted, the exact leaf bytes
     "leaf_hashes": [hex, ...],        # their leaf hashes, to name an altered entry
     "consistency_proof": [hex, ...]}  # RFC 9162 proof from size B to size N

`verify_export` checks the checkpoint's signature, that each entry's `seq` is its index,
rebuilds root(B) from the left hashes and the entries' leaves, and verifies the consistency
proof from B to the signed root. When the listed leaf hashes lead to the signed root but an
entry's own leaf differs, that entry was altered and its index is named.

The operator writes one with `liaison audit export` (from the log), an overseer with
`liaison oversight export` (over the OversightService, the left hashes derived from the
inclusion proof of entry A-1 in the tree of size A); `liaison audit verify --export` checks
either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc

from federation import checkpoints, merkle, serde, serde_indicators
from federation.client import ClientIdentity, secure_channel, translate
from federation.directory import Member
from federation.errors import InvalidRequest, PeerError, ProofFailed
from federation.indicators import Indicators, IndicatorsQuery
from federation.model import ProvenEntry
from federation.pki import public_key_from_text

EXPORT_FORMAT = "liaison-audit-export/v1"
# Entries per GetEntries call, at most (the wire contract's limit, which the node enforces).
MAX_ENTRIES_PER_CALL = 1000
_SERVICE = "/liaison.exchange.v1.OversightService/"

_Resp = TypeVar("_Resp")


class ExportInvalid(ValueError):
    """An audit export that does not verify; `index` is the entry at fault, if known."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


# --- pure helpers ------------------------------------------------------------------------------


def left_from_inclusion(size: int, last_leaf: bytes, proof: Sequence[bytes]) -> list[bytes]:
    """The compact range of leaves [0, size) (largest subtree first, as
    `merkle.CompactRange.hashes`), from the inclusion proof of leaf size-1 in the tree of
    `size`: its first elements are inside the lowest complete subtree, the rest are the
    other subtrees' roots, smallest first. Unverified: a wrong proof gives a wrong range,
    which the root it leads to then exposes. ProofError if its shape is wrong."""
    if size == 0:
        if proof:
            raise merkle.ProofError("an empty tree has no inclusion proof")
        return []
    inner = (size & -size).bit_length() - 1  # levels inside the lowest complete subtree
    if len(proof) != inner + size.bit_count() - 1:
        raise merkle.ProofError(
            f"an inclusion proof of leaf {size - 1} in tree {size} has the wrong length"
        )
    h = last_leaf
    for sibling in proof[:inner]:
        h = merkle.node_hash(sibling, h)
    return [*reversed(proof[inner:]), h]


def check_consistency(
    old: checkpoints.Checkpoint, new: checkpoints.Checkpoint, proof: Sequence[bytes]
) -> None:
    """That checkpoint `new` extends `old` (same origin); ProofError if not."""
    if old.origin != new.origin:
        raise merkle.ProofError(f"checkpoints of {old.origin!r} and {new.origin!r}")
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)


@dataclass(frozen=True, slots=True)
class AuditExport:
    origin: str
    verifier_key: str
    checkpoint: str
    start: int
    end: int
    left_hashes: tuple[bytes, ...]
    entries: tuple[bytes, ...]
    leaf_hashes: tuple[bytes, ...]
    consistency_proof: tuple[bytes, ...]

    @classmethod
    def build(
        cls,
        origin: str,
        verifier_key: str,
        checkpoint: str,
        start: int,
        left_hashes: Sequence[bytes],
        entries: Sequence[bytes],
        consistency_proof: Sequence[bytes],
    ) -> AuditExport:
        return cls(
            origin,
            verifier_key,
            checkpoint,
            start,
            start + len(entries),
            tuple(left_hashes),
            tuple(entries),
            tuple(merkle.leaf_hash(e) for e in entries),
            tuple(consistency_proof),
        )

    def to_json(self) -> str:
        doc = {
            "format": EXPORT_FORMAT,
            "origin": self.origin,
            "verifier_key": self.verifier_key,
            "checkpoint": self.checkpoint,
            "start": self.start,
            "end": self.end,
            "left_hashes": [h.hex() for h in self.left_hashes],
            "entries": [e.decode() for e in self.entries],
            "leaf_hashes": [h.hex() for h in self.leaf_hashes],
            "consistency_proof": [h.hex() for h in self.consistency_proof],
        }
        return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> AuditExport:
        """Parse an export's shape (ExportInvalid if malformed); nothing is verified."""
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
                raise ExportInvalid(f"not an audit export ({EXPORT_FORMAT})")

            def ints(name: str) -> int:
                value = doc[name]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ExportInvalid(f"{name} is not a non-negative integer")
                return value

            def hashes(name: str) -> tuple[bytes, ...]:
                return tuple(bytes.fromhex(h) for h in _strings(doc[name], name))

            return cls(
                origin=str(doc["origin"]),
                verifier_key=str(doc["verifier_key"]),
                checkpoint=str(doc["checkpoint"]),
                start=ints("start"),
                end=ints("end"),
                left_hashes=hashes("left_hashes"),
                entries=tuple(e.encode() for e in _strings(doc["entries"], "entries")),
                leaf_hashes=hashes("leaf_hashes"),
                consistency_proof=hashes("consistency_proof"),
            )
        except ExportInvalid:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ExportInvalid(f"not a well-formed audit export: {exc}") from None


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ExportInvalid(f"{name} is not a list of strings")
    return value


def _root_of(export: AuditExport, leaves: Sequence[bytes]) -> bytes:
    frontier = merkle.CompactRange.from_state(export.start, export.left_hashes)
    frontier.extend(leaves)
    return frontier.root()


def verify_export(
    export: AuditExport, verifier: checkpoints.Verifier, origin: str | None = None
) -> checkpoints.Checkpoint:
    """The signed checkpoint the export's entries verify against, or ExportInvalid.

    `verifier` is the node's key as the overseer knows it (never the export's own
    `verifier_key`); `origin` defaults to the export's.
    """
    expected = origin or export.origin
    try:
        checkpoint = checkpoints.verify_checkpoint(export.checkpoint, expected, verifier)
    except checkpoints.NoteError as exc:
        raise ExportInvalid(f"the checkpoint does not verify with the node's key: {exc}") from None
    start, end, size = export.start, export.end, checkpoint.size
    if not start <= end <= size:
        raise ExportInvalid(f"range [{start}, {end}) is not within the checkpoint's {size}")
    if len(export.entries) != end - start or len(export.leaf_hashes) != end - start:
        raise ExportInvalid(f"range [{start}, {end}) but {len(export.entries)} entries")
    for offset, raw in enumerate(export.entries):
        try:
            seq = json.loads(raw).get("seq")
        except (ValueError, AttributeError):
            raise ExportInvalid(
                f"entry {start + offset} is not a JSON object", start + offset
            ) from None
        if seq != start + offset:
            raise ExportInvalid(
                f"entry {start + offset} states seq {seq!r}: entries were removed, added "
                "or reordered",
                start + offset,
            )
    leaves = [merkle.leaf_hash(e) for e in export.entries]
    try:
        merkle.CompactRange.from_state(start, export.left_hashes)
    except merkle.ProofError as exc:
        raise ExportInvalid(f"left_hashes: {exc}") from None

    def leads_to_signed_root(candidate: Sequence[bytes]) -> bool:
        try:
            root = _root_of(export, candidate)
            merkle.verify_consistency(end, size, root, checkpoint.root, export.consistency_proof)
        except merkle.ProofError:
            return False
        return True

    if leads_to_signed_root(leaves):
        for offset, (own, listed) in enumerate(zip(leaves, export.leaf_hashes, strict=True)):
            if own != listed:
                raise ExportInvalid(
                    f"entry {start + offset}: the leaf hash listed for it was altered",
                    start + offset,
                )
        return checkpoint
    if leads_to_signed_root(export.leaf_hashes):
        # The listed leaves are the signed tree's: the entry whose own leaf differs was altered.
        for offset, (own, listed) in enumerate(zip(leaves, export.leaf_hashes, strict=True)):
            if own != listed:
                raise ExportInvalid(
                    f"entry {start + offset} was altered: its leaf is not the one the node signed",
                    start + offset,
                )
    raise ExportInvalid(
        f"entries [{start}, {end}) do not lead to the root the node signed at size {size}: "
        "the export was altered (an entry, the left hashes or the consistency proof)"
    )


# --- the client --------------------------------------------------------------------------------


class OversightClient:
    """One node's OversightService, over one mTLS channel."""

    def __init__(
        self,
        identity: ClientIdentity,
        node_id: str,
        endpoint: str,
        signing_public_key: str,
    ) -> None:
        self.peer = node_id
        self.endpoint = endpoint
        self.origin = checkpoints.audit_origin(identity.federation, node_id)
        key = public_key_from_text(signing_public_key)
        self.verifier = checkpoints.Verifier.for_log(self.origin, key)
        self.vkey = checkpoints.vkey(self.origin, key)
        self._channel = secure_channel(
            identity, node_id, endpoint, [("grpc.max_receive_message_length", 16 << 20)]
        )

    @classmethod
    def for_member(
        cls, identity: ClientIdentity, member: Member, endpoint: str | None = None
    ) -> OversightClient:
        if not (endpoint or member.endpoint):
            raise InvalidRequest(member.node_id, "has no endpoint: it is not a node")
        return cls(identity, member.node_id, endpoint or member.endpoint, member.signing_public_key)

    async def __aenter__(self) -> OversightClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self, method: str, request: bytes, response: Callable[[bytes], _Resp], timeout: float
    ) -> _Resp:
        """One call: the request's wire bytes and the parser of its answer come from
        `federation.serde`, which alone knows the generated messages."""
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, _Resp] = self._channel.unary_unary(
            _SERVICE + method, response_deserializer=response
        )
        try:
            result: _Resp = await call(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise translate(self.peer, exc) from None
        return result

    def _failed(self, message: str, reason: str = "proof_invalid") -> ProofFailed:
        return ProofFailed(self.peer, message, reasons=(reason,))

    async def get_checkpoint(self, timeout: float = 10.0) -> tuple[checkpoints.Checkpoint, str]:
        """The node's latest checkpoint, verified with its key, and the note as served (the
        node's signature, then any witness cosignatures: `checkpoints.verify_cosignature`)."""
        note = await self._call(
            "GetCheckpoint",
            serde.checkpoint_request_to_bytes(),
            serde.checkpoint_note_from_bytes,
            timeout,
        )
        try:
            return checkpoints.verify_checkpoint(note, self.origin, self.verifier), note
        except checkpoints.NoteError as exc:
            raise self._failed(f"checkpoint does not verify: {exc}", "checkpoint_invalid") from None

    async def get_consistency_proof(
        self, old_size: int, new_size: int, timeout: float = 10.0
    ) -> list[bytes]:
        """The node's proof that the tree of `new_size` extends that of `old_size`
        (unverified: `verify_consistency` checks it against two checkpoints)."""
        return await self._call(
            "GetConsistencyProof",
            serde.consistency_proof_request_to_bytes(old_size, new_size),
            serde.consistency_proof_from_bytes,
            timeout,
        )

    async def verify_consistency(
        self, old: checkpoints.Checkpoint, new: checkpoints.Checkpoint, timeout: float = 10.0
    ) -> list[bytes]:
        """Fetch and check the proof that checkpoint `new` extends `old`; returns it.
        ProofFailed if it does not: the node forked its log (keep both notes)."""
        proof = await self.get_consistency_proof(old.size, new.size, timeout)
        try:
            check_consistency(old, new, proof)
        except merkle.ProofError as exc:
            raise self._failed(
                f"tree {new.size} does not extend tree {old.size}: {exc}", "log_forked"
            ) from None
        return proof

    async def _inclusion(self, entry: int | str, tree_size: int, timeout: float) -> ProvenEntry:
        """Entry `entry` and its proof as the node sent them (unverified)."""
        return await self._call(
            "GetInclusionProof",
            serde.inclusion_proof_request_to_bytes(entry, tree_size),
            serde.proven_entry_from_bytes,
            timeout,
        )

    async def get_inclusion_proof(
        self, entry: int | str, checkpoint: checkpoints.Checkpoint, timeout: float = 10.0
    ) -> ProvenEntry:
        """Entry `entry` (its index, or the entry id an answer named) with its proof in the
        tree of `checkpoint` (one `get_checkpoint` returned), verified against its root."""
        got = await self._inclusion(entry, checkpoint.size, timeout)
        if got.tree_size != checkpoint.size or (isinstance(entry, int) and got.index != entry):
            raise self._failed(f"proved entry {got.index} in tree {got.tree_size} instead")
        if isinstance(entry, str):
            try:
                stated = json.loads(got.entry).get("id")
            except (ValueError, AttributeError):
                stated = None
            if stated != entry:
                raise self._failed(f"proved an entry whose id is {stated!r}, not {entry!r}")
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(got.entry), got.index, got.tree_size, got.proof, checkpoint.root
            )
        except merkle.ProofError as exc:
            raise self._failed(f"entry {got.index} is not in the signed tree: {exc}") from None
        return got

    async def get_entries(self, start: int, end: int, timeout: float = 30.0) -> list[bytes]:
        """Entries [start, end), redacted (overseers only), asked in batches of at most
        MAX_ENTRIES_PER_CALL. Unverified alone: `export` checks a range against the signed root."""
        entries: list[bytes] = []
        position = start
        while position < end:
            stop = min(position + MAX_ENTRIES_PER_CALL, end)
            got = await self._call(
                "GetEntries",
                serde.entries_request_to_bytes(position, stop),
                serde.entries_from_bytes,
                timeout,
            )
            if not got or len(got) > stop - position:
                raise PeerError(self.peer, f"answered {len(got)} entries for [{position}, {stop})")
            entries.extend(got)
            position += len(got)
        return entries

    async def get_witnessed_checkpoints(self, timeout: float = 10.0) -> list[tuple[str, str]]:
        """(log node id, note) for each peer log this node witnesses. Unverified: check
        each with that log's key and this node's witness key (`checkpoints.verify_cosignature`)."""
        return await self._call(
            "GetWitnessedCheckpoints",
            serde.witnessed_checkpoints_request_to_bytes(),
            serde.witnessed_checkpoints_from_bytes,
            timeout,
        )

    async def get_indicators(self, query: IndicatorsQuery, timeout: float = 30.0) -> Indicators:
        """The node's compliance indicators (overseers only), as the node computed and
        suppressed them over entries [0, `.entries`) of its latest checkpoint: an export of
        that range, verified, recomputes them (`federation.indicators.compute`)."""
        return await self._call(
            "GetIndicators",
            serde_indicators.indicators_request_to_bytes(query),
            serde_indicators.indicators_from_bytes,
            timeout,
        )

    async def export(self, start: int, end: int, timeout: float = 30.0) -> AuditExport:
        """Entries [start, end) as an audit export, verified against the node's latest
        checkpoint before it is returned (ProofFailed if it does not verify)."""
        if start > end:
            raise InvalidRequest(self.peer, f"--from {start} is after --to {end}")
        checkpoint, note = await self.get_checkpoint(timeout)
        if end > checkpoint.size:
            raise InvalidRequest(
                self.peer,
                f"the latest checkpoint covers {checkpoint.size} entries; {end} asked",
                reasons=("beyond_checkpoint",),
            )
        left: list[bytes] = []
        if start > 0:
            last = await self._inclusion(start - 1, start, timeout)
            try:
                left = left_from_inclusion(start, merkle.leaf_hash(last.entry), last.proof)
            except merkle.ProofError as exc:
                raise self._failed(str(exc)) from None
        entries = await self.get_entries(start, end, timeout)
        proof = await self.get_consistency_proof(end, checkpoint.size, timeout)
        export = AuditExport.build(self.origin, self.vkey, note, start, left, entries, proof)
        try:
            verify_export(export, self.verifier)
        except ExportInvalid as exc:
            raise self._failed(f"the entries do not verify: {exc}") from None
        return export
