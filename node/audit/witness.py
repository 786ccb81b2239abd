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

The state file (`<audit log>.witness.json`) is written atomically; a restart reads it and
so still refuses a rollback. One that cannot be read stops the node: starting afresh would
forget both the rollback floor and the evidence. The running node holds an exclusive lock
(`<audit log>.witness.lock`) for as long as its witness runs, since it keeps the state in
memory and would write over any other writer's.

A split view keeps that log from being witnessed (each new checkpoint conflicts with the
view kept) until an operator, having investigated, runs `liaison witness forget LOG` on the
stopped node (`forget`): the view is dropped, so the log's next checkpoint is trusted
afresh, and the evidence is kept, marked resolved with the operator's words.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from federation.directory import Directory
from federation.identity import InvalidIdentity, check_node_id
from federation.pki import PkiError, public_key_from_text
from node.atomic_write import write_atomically
from node.metrics import NodeMetrics

log = logging.getLogger("liaison.witness")

STATE_FORMAT: Final = "liaison-witness-state/v1"
STATE_SUFFIX: Final = ".witness.json"
LOCK_SUFFIX: Final = ".witness.lock"
# Split-view evidence kept per log: the first ones prove the case; more add nothing.
MAX_EVIDENCE_PER_LOG: Final = 16

# fetch(old_size, new_size) -> the log's RFC 9162 consistency proof
ProofFetcher = Callable[[int, int], Awaitable[Sequence[bytes]]]
# fetch(log node id, old_size, new_size), for gossip about several logs
LogProofFetcher = Callable[[str, int, int], Awaitable[Sequence[bytes]]]


class Outcome(StrEnum):
    """What one check found. The failures are the `reason` label vocabulary."""

    COSIGNED = "cosigned"  # observe: verified, consistent with what we saw, cosigned
    CONSISTENT = "consistent"  # compare: the other witness's view is in our tree
    NOT_WITNESSED = "not_witnessed"  # compare: we hold no view of that log to compare
    UNKNOWN_LOG = "unknown_log"  # not a member of the directory: never a metric label
    UNREACHABLE = "unreachable"  # the caller could not fetch the checkpoint or views
    BAD_NOTE = "bad_note"  # the log's signature or the checkpoint does not verify
    BAD_COSIGNATURE = "bad_cosignature"  # a witness's cosignature does not verify
    ROLLBACK = "rollback"  # a smaller tree than one the log signed before
    PROOF_UNAVAILABLE = "proof_unavailable"  # the proof could not be fetched
    STATE_UNWRITABLE = "state_unwritable"  # our state file could not be written
    FORK = "fork"  # split view: same size, different roots
    INCONSISTENT = "inconsistent"  # split view: the consistency proof does not verify
    PROOF_REFUSED = "proof_refused"  # split view: the log refused to prove consistency


_GOOD: Final = frozenset({Outcome.COSIGNED, Outcome.CONSISTENT, Outcome.NOT_WITNESSED})
FAILURES: Final = frozenset(o.value for o in Outcome if o not in _GOOD)
SPLIT_VIEWS: Final = frozenset({Outcome.FORK, Outcome.INCONSISTENT, Outcome.PROOF_REFUSED})


class ProofRefused(Exception):
    """A proof fetcher raises this when the log answered but refused to prove consistency
    between two sizes it signed. An honest log always can, so it is a split view; any other
    exception from a fetcher counts as `proof_unavailable` (the network, a timeout)."""


class WitnessStateError(Exception):
    """The witness state file cannot be read or written; the message says what to do."""


def witness_name(federation: str, node_id: str) -> str:
    """The key name under which a node cosigns checkpoints (its witness's name)."""
    return f"{federation}/{node_id}/witness"


def state_path(audit_path: Path) -> Path:
    """Where the witness state of the node whose audit log is at `audit_path` is kept."""
    return audit_path.with_name(audit_path.name + STATE_SUFFIX)


def _body(note: str) -> str:
    """A note's text (before the blank line), signatures unchecked; ValueError if none."""
    split = note.rfind("\n\n")
    if split < 0:
        raise ValueError("not a signed note")
    return note[: split + 1]


@dataclass(frozen=True, slots=True)
class View:
    """The newest checkpoint of one log that this node verified, and its cosignature."""

    note: str  # the log's note with only the log's own signature line
    checkpoint: checkpoints.Checkpoint
    cosigned: str  # `note` with this node's cosignature
    witnessed_at: int  # when it was last verified (Unix seconds)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two notes a log signed that cannot both be heads of one tree."""

    log: str
    reason: Outcome  # one of SPLIT_VIEWS
    detected_at: int
    via: str  # "observe", or the node id of the witness whose view conflicted with ours
    notes: tuple[str, str]  # ours (what the log showed this node) first, then the other
    proof: tuple[bytes, ...] = ()  # the consistency proof that failed, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "reason": self.reason.value,
            "detected_at": self.detected_at,
            "via": self.via,
            "notes": list(self.notes),
            "proof": [base64.b64encode(h).decode() for h in self.proof],
        }


@dataclass(frozen=True, slots=True)
class Resolved:
    """Split-view evidence an operator marked resolved (`forget`): kept, never deleted."""

    evidence: Evidence
    resolved_at: int
    resolution: str  # the operator's words: what was found, who decided

    def to_json(self) -> dict[str, Any]:
        return {
            **self.evidence.to_json(),
            "resolved_at": self.resolved_at,
            "resolution": self.resolution,
        }


@dataclass(slots=True)
class WitnessState:
    """What the state file holds: the newest verified view of each log, and split views."""

    views: dict[str, View]
    evidence: list[Evidence]
    resolved: list[Resolved]

    def to_bytes(self, witness: str) -> bytes:
        doc = {
            "format": STATE_FORMAT,
            "witness": witness,
            "logs": {
                log_id: {
                    "note": view.note,
                    "cosigned": view.cosigned,
                    "witnessed_at": view.witnessed_at,
                }
                for log_id, view in sorted(self.views.items())
            },
            "split_views": [e.to_json() for e in self.evidence],
            "resolved_split_views": [r.to_json() for r in self.resolved],
        }
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def read_state(path: Path, federation: str, node_id: str) -> WitnessState:
    """The state file of witness `node_id` (empty if there is none); WitnessStateError,
    saying what to do, if it cannot be read. Reading needs no lock: it is replaced whole."""
    state = WitnessState({}, [], [])
    if not path.exists():
        return state
    name = witness_name(federation, node_id)
    try:
        try:
            doc = json.loads(path.read_bytes().decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError
            raise ValueError(f"not JSON, torn or damaged: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not {STATE_FORMAT}")
        if doc.get("witness") != name:
            raise ValueError(f"it is the state of witness {doc.get('witness')!r}")
        for log_id, raw in dict(doc["logs"]).items():
            state.views[log_id] = _read_view(federation, log_id, raw)
        state.evidence = [_read_evidence(raw) for raw in list(doc["split_views"])]
        for raw in list(doc.get("resolved_split_views", [])):
            at, words = raw["resolved_at"], raw["resolution"]
            if type(at) is not int or not isinstance(words, str):
                raise ValueError("a resolved split view has a wrong time or resolution")
            state.resolved.append(Resolved(_read_evidence(raw), at, words))
    except (OSError, ValueError, KeyError, TypeError, InvalidIdentity) as exc:
        raise WitnessStateError(
            f"witness state file {path} is unreadable ({exc}). It holds the newest "
            "checkpoint this node verified of each peer's audit log (its guard against "
            "a rollback) and any split-view evidence: restore it from a backup; if there "
            "is none, move it aside (keep it: it may hold evidence) and restart, and "
            "this node will trust each peer's next checkpoint afresh"
        ) from None
    return state


def _read_view(federation: str, log_id: str, raw: Any) -> View:
    check_node_id(log_id)
    note, cosigned, at = raw["note"], raw["cosigned"], raw["witnessed_at"]
    if not isinstance(note, str) or not isinstance(cosigned, str) or type(at) is not int:
        raise ValueError(f"the view of {log_id} has fields of the wrong type")
    checkpoint = checkpoints.Checkpoint.from_note_body(_body(note))
    if checkpoint.origin != audit_origin(federation, log_id):
        raise ValueError(f"the view of {log_id} is a checkpoint of {checkpoint.origin!r}")
    if _body(cosigned) != _body(note):
        raise ValueError(f"the cosigned view of {log_id} is not its checkpoint")
    return View(note, checkpoint, cosigned, at)


def _read_evidence(raw: Any) -> Evidence:
    check_node_id(str(raw["log"]))
    pair = tuple(raw["notes"])
    if len(pair) != 2 or not all(isinstance(n, str) for n in pair):
        raise ValueError("split-view evidence must hold two notes")
    for n in pair:
        checkpoints.Checkpoint.from_note_body(_body(n))
    proof = tuple(base64.b64decode(h, validate=True) for h in raw["proof"])
    outcome = Outcome(raw["reason"])
    if outcome not in SPLIT_VIEWS or type(raw["detected_at"]) is not int:
        raise ValueError("split-view evidence has a wrong reason or time")
    return Evidence(
        str(raw["log"]), outcome, raw["detected_at"], str(raw["via"]), (pair[0], pair[1]), proof
    )


def _hold_lock(path: Path) -> int:
    """An exclusive lock on the witness whose state is at `path`, held in a file beside it
    (the state file itself is replaced whole, so a lock on it would not last)."""
    lock = path.with_name(path.name.removesuffix(STATE_SUFFIX) + LOCK_SUFFIX)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise WitnessStateError(
            f"cannot create the witness lock {lock} ({exc}): fix that folder (the audit "
            "log's) so this node can write there"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WitnessStateError(
            f"the witness state {path} is in use: the node is running (it holds {lock}); "
            "stop it first"
        ) from None
    return fd


def forget(
    path: Path, federation: str, node_id: str, log_id: str, resolution: str, now: int
) -> tuple[View | None, list[Evidence]]:
    """After a split view of `log_id` was investigated: drop the view kept of it, so its
    next checkpoint is trusted afresh, and mark its evidence resolved (kept, with the
    operator's `resolution`). The node must be stopped. Returns what was dropped."""
    if not resolution.strip():
        raise WitnessStateError("say why the split view is resolved (--resolution)")
    fd = _hold_lock(path)
    try:
        state = read_state(path, federation, node_id)
        view = state.views.pop(log_id, None)
        dropped = [e for e in state.evidence if e.log == log_id]
        if view is None and not dropped:
            raise WitnessStateError(
                f"this node holds no view and no split-view evidence of {log_id}'s log "
                f"(see `liaison witness status`)"
            )
        state.evidence = [e for e in state.evidence if e.log != log_id]
        state.resolved.extend(Resolved(e, now, resolution.strip()) for e in dropped)
        write_atomically(path, state.to_bytes(witness_name(federation, node_id)), 0o600)
    finally:
        os.close(fd)
    return view, dropped


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
