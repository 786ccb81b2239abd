"""The OversightService edge: checkpoints, proofs and redacted entries of this node's audit
log, to the members the directory allows.

Who may call what (by the caller's directory role; a suspended member is refused):

| RPC                     | overseer | node                                      |
|-------------------------|----------|-------------------------------------------|
| GetCheckpoint           | yes      | yes                                       |
| GetConsistencyProof     | yes      | yes (witnesses need it)                   |
| GetWitnessedCheckpoints | yes      | yes                                       |
| GetInclusionProof       | yes      | only for entries whose `peer` is itself   |
| GetEntries              | yes      | no (`not_an_overseer`)                    |
| GetIndicators           | yes      | no (`not_an_overseer`)                    |

Everything is bounded by the latest *signed* checkpoint: a proof for a larger tree, or
entries beyond it, are refused (`beyond_checkpoint`, FAILED_PRECONDITION), so whatever is
served can be checked against a root the node has signed. GetCheckpoint answers with a
checkpoint that covers every entry durable when the call arrived: if the log grew since the
last one it signs a new one, at most one every `min_sign_interval_s` (a caller arriving
sooner waits for the next, and concurrent callers share it), so no caller can make the node
sign in a loop. Growth made only of OversightService calls (this service's own entries) does
not count: every call is audited, so otherwise each witness's visit would leave the log grown
for the next, every checkpoint would be replaced before the witnesses' cosignatures on it
could be served, and watching the log would be what keeps it re-signing. Those entries are
covered by the next scheduled checkpoint (`[audit] checkpoint_interval_s`) or by the next
one an exchange entry calls for. With no checkpoint at all (an empty log) the RPCs refuse
with `no_checkpoint`; the refusal is itself an entry, so the next GetCheckpoint signs one.

Every call takes the node's one call path (`node.rpc.call_path`): audited durably before its
answer and counted in `liaison_requests_total{peer,method,decision}`, like the
ExchangeService's. The methods here work on plain objects; `federation.serde` converts them.

A node that witnesses its peers (`node.audit.witness`, given as `witness`) serves its cosigned
views in GetWitnessedCheckpoints, and attaches the cosignatures it collected on its own
checkpoint to the one GetCheckpoint serves; without one, neither.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from federation import checkpoints
from federation.indicators import Indicators, IndicatorsQuery, compute, months
from federation.methods import OVERSIGHT_SERVICE
from federation.model import ConsistencyQuery, EntryRange, InclusionQuery, ProvenEntry
from federation.oversight import MAX_ENTRIES_PER_CALL
from federation.serde import (
    checkpoint_note_to_bytes,
    checkpoint_request_from_bytes,
    consistency_proof_request_from_bytes,
    consistency_proof_to_bytes,
    entries_request_from_bytes,
    entries_to_bytes,
    inclusion_proof_request_from_bytes,
    proven_entry_to_bytes,
    witnessed_checkpoints_request_from_bytes,
    witnessed_checkpoints_to_bytes,
)
from federation.serde_indicators import indicators_request_from_bytes, indicators_to_bytes
from node.audit.log import AuditLog
from node.audit.verify import stated_checkpoint
from node.audit.witness import Witness
from node.errors import Kind, Refusal, denied, invalid
from node.rpc.call_path import Call, Method, Service

SERVICE_NAME = OVERSIGHT_SERVICE
# Entries read at a time when looking back for one that is not an oversight call.
_LOOKBACK_BATCH = 256
# Room left in a response for everything but the entries.
_ENVELOPE_BYTES = 64 * 1024
# Entries read at a time when computing the indicators, and the longest window (in months)
# GetIndicators breaks down by month (ten years: a bounded answer).
_INDICATOR_BATCH = 4096
MAX_INDICATOR_MONTHS = 120


def _beyond(what: str, size: int) -> Refusal:
    return Refusal(
        Kind.NOT_YET,
        ("beyond_checkpoint",),
        f"{what} is beyond the latest signed checkpoint (tree size {size}); fetch a newer "
        "checkpoint (GetCheckpoint) and ask again",
    )


class OversightHandlers:
    def __init__(
        self,
        node_id: str,
        audit: AuditLog,
        *,
        sign_checkpoint: Callable[[], None],
        revision: Callable[[], str] = lambda: "",
        min_sign_interval_s: float = 0.5,
        max_response_bytes: int = 1 << 20,
        monotonic: Callable[[], float] = time.monotonic,
        witness: Witness | None = None,
    ) -> None:
        self._node_id = node_id
        self._audit = audit
        self._revision = revision
        self._sign_checkpoint = sign_checkpoint
        self._min_sign_interval = min_sign_interval_s
        self._last_signed: float | None = None
        self._signing = asyncio.Lock()
        self._max_entry_bytes = max(max_response_bytes - _ENVELOPE_BYTES, 1)
        self._monotonic = monotonic
        self._witness = witness
        # This service's methods: entries of these alone do not make GetCheckpoint sign anew.
        self._methods = frozenset(method.name for method in self.service().methods)

    def service(self) -> Service:
        # Every caller must be active in the directory (a suspended member is refused).
        return Service(
            SERVICE_NAME,
            [
                Method(
                    "GetCheckpoint",
                    checkpoint_request_from_bytes,
                    self._get_checkpoint,
                    checkpoint_note_to_bytes,
                    active_only=True,
                ),
                Method(
                    "GetConsistencyProof",
                    consistency_proof_request_from_bytes,
                    self._get_consistency_proof,
                    consistency_proof_to_bytes,
                    active_only=True,
                ),
                Method(
                    "GetInclusionProof",
                    inclusion_proof_request_from_bytes,
                    self._get_inclusion_proof,
                    proven_entry_to_bytes,
                    active_only=True,
                ),
                Method(
                    "GetEntries",
                    entries_request_from_bytes,
                    self._get_entries,
                    entries_to_bytes,
                    active_only=True,
                ),
                Method(
                    "GetIndicators",
                    indicators_request_from_bytes,
                    self._get_indicators,
                    indicators_to_bytes,
                    active_only=True,
                ),
                Method(
                    "GetWitnessedCheckpoints",
                    witnessed_checkpoints_request_from_bytes,
                    self._get_witnessed_checkpoints,
                    witnessed_checkpoints_to_bytes,
                    active_only=True,
                ),
            ],
            revision=self._revision,
        )

    # --- the checkpoint that bounds everything -----------------------------------------------

    async def _latest(self) -> tuple[checkpoints.Checkpoint, str]:
        note = await asyncio.to_thread(self._audit.latest_checkpoint)
        if note is None:
            raise Refusal(
                Kind.NOT_YET,
                ("no_checkpoint",),
                "the node has signed no audit checkpoint yet: call GetCheckpoint, or ask "
                "again after its next scheduled checkpoint",
            )
        return stated_checkpoint(note), note

    async def _sign_fresh(self) -> None:
        """Sign the log's head unless a checkpoint already covers every entry durable now;
        at most one signature every `min_sign_interval_s`, shared by concurrent callers."""
        wanted = self._audit.size
        async with self._signing:
            if self._audit.last_checkpoint_size >= wanted:
                return
            if await asyncio.to_thread(self._only_oversight_since, wanted):
                return
            if self._last_signed is not None:
                wait = self._last_signed + self._min_sign_interval - self._monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._last_signed = self._monotonic()
            await asyncio.to_thread(self._sign_checkpoint)

    def _only_oversight_since(self, wanted: int) -> bool:
        """Whether a checkpoint exists and every entry after it (below `wanted`) is a call
        of this service. Looks back from the newest entry, so exchange traffic (the usual
        case when there is any) answers at once."""
        signed = self._audit.last_checkpoint_size
        if signed <= 0:  # set from a stored checkpoint: there is one
            return False
        end = wanted
        while end > signed:
            start = max(signed, end - _LOOKBACK_BATCH)
            for raw in reversed(self._audit.entries(start, end)):
                if json.loads(raw).get("method") not in self._methods:
                    return False
            end = start
        return True

    # --- the RPCs ----------------------------------------------------------------------------

    async def _get_checkpoint(self, call: Call, request: None) -> str:
        await self._sign_fresh()
        _, note = await self._latest()
        if self._witness is not None:
            note = self._witness.extra_cosignatures(note)
        return note

    async def _get_consistency_proof(self, call: Call, query: ConsistencyQuery) -> list[bytes]:
        old, new = query.old_size, query.new_size
        if old > new:
            raise invalid("invalid_range", f"old_size {old} is larger than new_size {new}")
        checkpoint, _ = await self._latest()
        if new > checkpoint.size:
            raise _beyond(f"new_size {new}", checkpoint.size)
        return await asyncio.to_thread(self._audit.consistency_proof, old, new)

    async def _get_inclusion_proof(self, call: Call, query: InclusionQuery) -> ProvenEntry:
        member = call.member
        checkpoint, _ = await self._latest()
        size = query.tree_size or checkpoint.size
        if size > checkpoint.size:
            raise _beyond(f"tree_size {size}", checkpoint.size)
        if query.index is not None:
            index = query.index
            if index >= size:
                raise invalid("invalid_range", f"entry {index} is not below tree size {size}")
        elif query.entry_id is not None:
            found = await asyncio.to_thread(self._audit.find, query.entry_id)
            if found is None:
                raise Refusal(
                    Kind.NOT_FOUND,
                    ("unknown_entry",),
                    f"no audit entry has id {query.entry_id[:64]!r}",
                )
            if found >= size:
                raise _beyond(f"entry {found}", size)
            index = found
        else:
            raise invalid("malformed_request", "name the entry by index or by entry_id")
        entry = (await asyncio.to_thread(self._audit.entries, index, index + 1))[0]
        if not member.is_overseer and json.loads(entry).get("peer") != member.node_id:
            raise denied(
                ("not_your_entry",),
                f"a node may prove only the entries of its own requests; entry {index} "
                f"is not one of {member.node_id}'s",
            )
        hashes = await asyncio.to_thread(self._audit.inclusion_proof, index, size)
        return ProvenEntry(index=index, tree_size=size, entry=entry, proof=tuple(hashes))

    async def _get_entries(self, call: Call, wanted: EntryRange) -> list[bytes]:
        member = call.member
        if not member.is_overseer:
            raise denied(
                ("not_an_overseer",),
                f"{member.node_id} is not an overseer: only overseers may read audit entries "
                "(a node may prove its own with GetInclusionProof)",
            )
        start, end = wanted.start, wanted.end
        if start > end:
            raise invalid("invalid_range", f"start {start} is after end {end}")
        if end - start > MAX_ENTRIES_PER_CALL:
            raise invalid(
                "too_many_entries",
                f"at most {MAX_ENTRIES_PER_CALL} entries per call; ask in batches",
            )
        checkpoint, _ = await self._latest()
        if end > checkpoint.size:
            raise _beyond(f"end {end}", checkpoint.size)
        entries: list[bytes] = []
        total = 0
        # A response stays under the message size limit: the node may return a prefix of
        # the range (at least one entry), and the caller asks again from where it stopped.
        for entry in await asyncio.to_thread(self._audit.entries, start, end):
            if entries and total + len(entry) > self._max_entry_bytes:
                break
            entries.append(entry)
            total += len(entry) + 8
        return entries

    async def _get_indicators(self, call: Call, query: IndicatorsQuery) -> Indicators:
        """The compliance indicators over the entries of the latest checkpoint (signed
        first if exchange entries lie beyond it), so the overseer can recompute them from a
        verified export of [0, tree_size)."""
        member = call.member
        if not member.is_overseer:
            raise denied(
                ("not_an_overseer",),
                f"{member.node_id} is not an overseer: only overseers may ask for indicators",
            )
        until = query.until or datetime.now(UTC)
        if not query.since < until:
            raise invalid("invalid_range", f"since {query.since} is not before until {until}")
        if query.granularity == "month" and len(months(query.since, until)) > MAX_INDICATOR_MONTHS:
            raise invalid(
                "window_too_long",
                f"at most {MAX_INDICATOR_MONTHS} months by month; ask for a shorter window "
                "or granularity window",
            )
        await self._sign_fresh()
        checkpoint, _ = await self._latest()
        size = checkpoint.size

        def entries() -> Iterator[dict[str, Any]]:
            for start in range(0, size, _INDICATOR_BATCH):
                for raw in self._audit.entries(start, min(size, start + _INDICATOR_BATCH)):
                    yield json.loads(raw)

        return await asyncio.to_thread(
            lambda: compute(
                entries(),
                node=self._node_id,
                since=query.since,
                until=until,
                granularity=query.granularity,
                entry_count=size,
            )
        )

    async def _get_witnessed_checkpoints(self, call: Call, request: None) -> list[tuple[str, str]]:
        return self._witness.cosigned() if self._witness is not None else []
