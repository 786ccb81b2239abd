"""What a witness keeps of its peers' logs: the newest view of each, split-view evidence,
and the state file that holds them (`node.audit.witness` does the witnessing).

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

import base64
import fcntl
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from federation import checkpoints
from federation.checkpoints import audit_origin
from federation.identity import InvalidIdentity, check_node_id
from node.atomic_write import write_atomically

STATE_FORMAT: Final = "liaison-witness-state/v1"
STATE_SUFFIX: Final = ".witness.json"
LOCK_SUFFIX: Final = ".witness.lock"


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
