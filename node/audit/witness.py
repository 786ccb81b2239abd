"""Witnessing peers' audit logs: verify, prove consistent, cosign; catch split views.

Every node's audit log is a Merkle tree whose head it signs (`node.audit.log`). A node could
still show one peer one tree and another peer another (a *split view*), each validly
signed. Nodes therefore watch each other, as C2SP tlog-witness witnesses do:

- `Witness.observe`: a peer's latest checkpoint must verify with the peer's key from the
  directory (origin ``<federation>/<node>/audit``) and extend the newest one this node
  verified of that log: a larger tree needs a valid RFC 9162 consistency proof, an equal
  size the same root. Then it is stored durably and only then cosigned (c2sp.org/
  tlog-cosignature, key name `witness_name`, the node's signing key), as the witness spec
  asks: a witness that forgot what it cosigned could later cosign a fork.
- `Witness.compare` (gossip): another witness's cosigned views of third logs are checked
  against ours; a log that showed the two witnesses trees that are not one tree is caught.
- `Witness.collect` / `extra_cosignatures`: as a log, this node gathers the cosignatures
  peers made on its own latest checkpoint and serves them with it.

Proof of equivocation is two notes the log signed that cannot both be heads of one tree:
the same size with different roots (`fork`), a consistency proof between them that does
not verify (`inconsistent`), or one the log refuses to give (`proof_refused`). Such a
*split view* is kept as evidence in the state file (anyone holding the log's public key can
check the notes), sets `liaison_witness_split_view{log}` to 1 for good, and is logged as an
error. Other failures (a bad signature, a smaller tree than before, a proof that could not
be fetched) are counted in `liaison_witness_failures_total{log,reason}` and leave the state
as it was. Logs are named by node id; only members of the directory are witnessed, so the
metric labels stay bounded.

What a witness keeps (views, evidence), its state file and lock, and `forget`:
`node.audit.witness_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from federation.directory import Directory
from federation.pki import PkiError, public_key_from_text
from node.atomic_write import write_atomically
from node.audit.witness_state import (
    Evidence,
    Outcome,
    View,
    _body,
    _hold_lock,
    read_state,
    witness_name,
)
from node.metrics import NodeMetrics

log = logging.getLogger("liaison.witness")

# Split-view evidence kept per log: the first ones prove the case; more add nothing.
MAX_EVIDENCE_PER_LOG: Final = 16

# fetch(old_size, new_size) -> the log's RFC 9162 consistency proof
ProofFetcher = Callable[[int, int], Awaitable[Sequence[bytes]]]
# fetch(log node id, old_size, new_size), for gossip about several logs
LogProofFetcher = Callable[[str, int, int], Awaitable[Sequence[bytes]]]


class ProofRefused(Exception):
    """A proof fetcher raises this when the log answered but refused to prove consistency
    between two sizes it signed. An honest log always can, so it is a split view; any other
    exception from a fetcher counts as `proof_unavailable` (the network, a timeout)."""


class Witness:
    """This node as a witness of its peers' logs, and as a log collecting cosignatures.

    `directory` returns the directory in force (its members' `signing_public_key` verify
    their logs and their cosignatures); `key` is this node's signing key.
    """

    def __init__(
        self,
        node_id: str,
        federation: str,
        key: ed25519.Ed25519PrivateKey,
        directory: Callable[[], Directory],
        path: Path,
        *,
        metrics: NodeMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.federation = federation
        self.name = witness_name(federation, node_id)
        self.origin = audit_origin(federation, node_id)
        self.path = path
        self._key = key
        self._directory = directory
        self._metrics = metrics
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._save_lock = asyncio.Lock()
        # Views being written (each under its log's lock): saved with the others, not served.
        self._pending: dict[str, View] = {}
        # As a log: witness node id -> (our checkpoint text it cosigned, its cosignature line)
        self._collected: dict[str, tuple[str, str]] = {}
        self._lock_fd = _hold_lock(path)
        try:
            self._state = read_state(path, federation, node_id)
        except BaseException:
            self.close()
            raise
        if metrics is not None:
            for log_id, view in self._state.views.items():
                metrics.witness_checkpoint_size.labels(log_id).set(view.checkpoint.size)
                metrics.witness_last_success.labels(log_id).set(view.witnessed_at)
            for evidence in self._state.evidence:
                metrics.witness_split_view.labels(evidence.log).set(1)

    # --- what others read ----------------------------------------------------------------

    def view(self, log_id: str) -> View | None:
        return self._state.views.get(log_id)

    @property
    def evidence(self) -> tuple[Evidence, ...]:
        return tuple(self._state.evidence)

    def cosigned(self) -> list[tuple[str, str]]:
        """(log node id, its newest verified checkpoint cosigned by this node), per log:
        what GetWitnessedCheckpoints serves."""
        return [
            (log_id, self._state.views[log_id].cosigned) for log_id in sorted(self._state.views)
        ]

    # --- witnessing a peer ---------------------------------------------------------------

    async def observe(self, log_id: str, note: str, fetch_proof: ProofFetcher) -> Outcome:
        """Check a peer's latest checkpoint against what this node saw of its log; cosign
        it if it verifies and extends it. Never raises for what the peer sent."""
        verifier = self._log_verifier(log_id)
        if verifier is None:
            log.warning("not witnessing %s: it is not a member of the directory", log_id)
            return Outcome.UNKNOWN_LOG
        async with self._lock(log_id):
            try:
                kept = checkpoints.keep_verified(note, [verifier])
                checkpoint = checkpoints.verify_checkpoint(kept, verifier.name, verifier)
            except checkpoints.NoteError as exc:
                return self.fail(log_id, Outcome.BAD_NOTE, f"its checkpoint is refused: {exc}")
            old = self._state.views.get(log_id)
            if old is not None:
                outcome = await self._extends(log_id, old, kept, checkpoint, fetch_proof)
                if outcome is not None:
                    return outcome
            now = int(self._clock())
            view = View(kept, checkpoint, checkpoints.cosign(kept, self.name, self._key, now), now)
            if old is None or old.checkpoint.size != checkpoint.size:
                # Durable before it is cosigned for anyone to see (c2sp.org/tlog-witness):
                # written as pending, and only then one of the views `cosigned` serves.
                self._pending[log_id] = view
                try:
                    await self._save()
                except OSError as exc:
                    return self.fail(
                        log_id, Outcome.STATE_UNWRITABLE, f"cannot write {self.path}: {exc}"
                    )
                finally:
                    del self._pending[log_id]
            self._state.views[log_id] = view
            if self._metrics is not None:
                self._metrics.witness_checkpoint_size.labels(log_id).set(checkpoint.size)
                self._metrics.witness_last_success.labels(log_id).set(now)
            return Outcome.COSIGNED

    async def _extends(
        self,
        log_id: str,
        old: View,
        note: str,
        new: checkpoints.Checkpoint,
        fetch_proof: ProofFetcher,
    ) -> Outcome | None:
        """None if `new` extends `old` (or is it); else the failure, counted and recorded."""
        was = old.checkpoint
        if new.size < was.size:
            return self.fail(
                log_id,
                Outcome.ROLLBACK,
                f"it shows a tree of {new.size} entries after signing one of {was.size}",
            )
        return await self._one_tree(log_id, "observe", old.note, note, was, new, fetch_proof)

    async def _one_tree(
        self,
        log_id: str,
        via: str,
        ours: str,
        theirs: str,
        mine: checkpoints.Checkpoint,
        other: checkpoints.Checkpoint,
        fetch_proof: ProofFetcher,
    ) -> Outcome | None:
        """None if two checkpoints of a log (`mine` from note `ours`, `other` from `theirs`)
        are heads of one tree: the same root at one size, or a consistency proof from the
        smaller to the larger. Else a split view (see `_split`), or `proof_unavailable`."""
        if mine.size == other.size:
            if mine.root == other.root:
                return None
            return await self._split(log_id, Outcome.FORK, via, ours, theirs)
        small, large = sorted((mine, other), key=lambda c: c.size)
        try:
            proof = tuple(await fetch_proof(small.size, large.size))
        except ProofRefused:
            return await self._split(log_id, Outcome.PROOF_REFUSED, via, ours, theirs)
        except Exception as exc:  # whatever the transport raises: not the log's proof
            return self.fail(
                log_id,
                Outcome.PROOF_UNAVAILABLE,
                f"no consistency proof {small.size} -> {large.size}: {exc}",
            )
        try:
            merkle.verify_consistency(small.size, large.size, small.root, large.root, proof)
        except merkle.ProofError:
            return await self._split(log_id, Outcome.INCONSISTENT, via, ours, theirs, proof)
        return None

    # --- gossip: another witness's views -------------------------------------------------

    async def compare(
        self,
        witness_id: str,
        views: Iterable[tuple[str, str]],
        fetch_proof: LogProofFetcher,
    ) -> dict[str, Outcome]:
        """Check another witness's cosigned views (GetWitnessedCheckpoints) against ours.

        For each log of the directory (other than this node and that witness): the log's
        signature and the witness's cosignature must verify; the same size must have the
        same root, and different sizes a valid consistency proof fetched from the log
        (`fetch_proof(log, smaller, larger)`), or the log showed a split view.
        """
        witness = self._cosignature_verifier(witness_id)
        if witness is None:
            log.warning("ignoring the views of %s: it is not a member of the directory", witness_id)
            return {}
        results: dict[str, Outcome] = {}
        for log_id, note in views:
            if log_id in (self.node_id, witness_id) or log_id in results:
                continue
            verifier = self._log_verifier(log_id)
            if verifier is None:
                continue
            results[log_id] = await self._compare_one(
                witness_id, witness, log_id, verifier, note, fetch_proof
            )
        return results

    async def _compare_one(
        self,
        witness_id: str,
        witness: checkpoints.Verifier,
        log_id: str,
        verifier: checkpoints.Verifier,
        note: str,
        fetch_proof: LogProofFetcher,
    ) -> Outcome:
        try:
            theirs = checkpoints.verify_checkpoint(note, verifier.name, verifier)
        except checkpoints.NoteError as exc:
            return self.fail(
                log_id, Outcome.BAD_NOTE, f"{witness_id} passed on a checkpoint refused: {exc}"
            )
        try:
            checkpoints.verify_cosignature(note, witness, origin=verifier.name)
            kept = checkpoints.keep_verified(note, [verifier, witness])
        except checkpoints.NoteError as exc:
            return self.fail(
                log_id, Outcome.BAD_COSIGNATURE, f"{witness_id}'s cosignature is refused: {exc}"
            )
        async with self._lock(log_id):
            ours = self._state.views.get(log_id)
            if ours is None:
                return Outcome.NOT_WITNESSED
            outcome = await self._one_tree(
                log_id,
                witness_id,
                ours.note,
                kept,
                ours.checkpoint,
                theirs,
                lambda old, new: fetch_proof(log_id, old, new),
            )
            return Outcome.CONSISTENT if outcome is None else outcome

    # --- as a log: cosignatures on our own checkpoint ------------------------------------

    def collect(self, witness_id: str, views: Iterable[tuple[str, str]], current: str) -> bool:
        """Keep `witness_id`'s cosignature on our current checkpoint note, if its views hold
        one that verifies; True if it did. Cosignatures of older checkpoints are dropped."""
        body = _body(current)
        self._collected = {w: c for w, c in self._collected.items() if c[0] == body}
        witness = self._cosignature_verifier(witness_id)
        found = False
        if witness is not None:
            for log_id, note in views:
                if log_id != self.node_id:
                    continue
                try:
                    checkpoints.verify_cosignature(note, witness, origin=self.origin)
                    kept = checkpoints.keep_verified(note, [witness])
                except checkpoints.NoteError as exc:
                    self.fail(
                        self.node_id,
                        Outcome.BAD_COSIGNATURE,
                        f"{witness_id}'s cosignature on our checkpoint is refused: {exc}",
                    )
                    continue
                if _body(kept) == body:
                    self._collected[witness_id] = (body, kept[len(body) + 1 :])
                    found = True
                    break
        if not found:
            self._collected.pop(witness_id, None)
        if self._metrics is not None:
            self._metrics.audit_cosignatures.set(len(self._collected))
        return found

    def extra_cosignatures(self, note: str) -> str:
        """`note` with the collected cosignatures over its text added (for GetCheckpoint)."""
        try:
            body = _body(note)
        except ValueError:
            return note
        lines = [line for w, (b, line) in sorted(self._collected.items()) if b == body]
        return checkpoints.add_signature_lines(note, lines) if lines else note

    # --- keys from the directory ---------------------------------------------------------

    def _member_key(self, node_id: str) -> ed25519.Ed25519PublicKey | None:
        member = self._directory().member(node_id)
        if member is None:
            return None
        try:
            return public_key_from_text(member.signing_public_key)
        except PkiError:
            return None

    def _log_verifier(self, log_id: str) -> checkpoints.Verifier | None:
        key = self._member_key(log_id)
        if key is None:
            return None
        return checkpoints.Verifier.for_log(audit_origin(self.federation, log_id), key)

    def _cosignature_verifier(self, witness_id: str) -> checkpoints.Verifier | None:
        key = self._member_key(witness_id)
        if key is None:
            return None
        return checkpoints.Verifier.for_witness(witness_name(self.federation, witness_id), key)

    # --- failures, split views, state ----------------------------------------------------

    def _lock(self, log_id: str) -> asyncio.Lock:
        return self._locks.setdefault(log_id, asyncio.Lock())

    def fail(self, log_id: str, outcome: Outcome, why: str) -> Outcome:
        """Log and count a failure to witness `log_id` (not a split view: `_split`)."""
        log.warning("witnessing %s: %s (%s)", log_id, why, outcome.value)
        if self._metrics is not None:
            self._metrics.witness_failures.labels(log_id, outcome.value).inc()
        return outcome

    async def _split(
        self,
        log_id: str,
        outcome: Outcome,
        via: str,
        ours: str,
        theirs: str,
        proof: tuple[bytes, ...] = (),
    ) -> Outcome:
        seen_by = "this node" if via == "observe" else f"this node and {via}"
        log.error(
            "SPLIT VIEW: the audit log of %s showed %s two trees that are not one (%s); "
            "the two signed notes are kept as evidence in %s",
            log_id,
            seen_by,
            outcome.value,
            self.path,
        )
        if self._metrics is not None:
            self._metrics.witness_failures.labels(log_id, outcome.value).inc()
            self._metrics.witness_split_view.labels(log_id).set(1)
        pair = {_body(ours), _body(theirs)}
        known = [e for e in self._state.evidence if e.log == log_id]
        if len(known) >= MAX_EVIDENCE_PER_LOG or any(
            {_body(n) for n in e.notes} == pair for e in known
        ):
            return outcome
        now = int(self._clock())
        self._state.evidence.append(Evidence(log_id, outcome, now, via, (ours, theirs), proof))
        try:
            await self._save()
        except OSError as exc:
            log.error("cannot write the split-view evidence to %s: %s", self.path, exc)
        return outcome

    async def _save(self) -> None:
        async with self._save_lock:  # each write holds the state as of its turn
            views = {**self._state.views, **self._pending}
            data = replace(self._state, views=views).to_bytes(self.name)
            await asyncio.to_thread(write_atomically, self.path, data, 0o600)

    def close(self) -> None:
        """Let go of the state (`liaison witness forget` may then change it)."""
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1
