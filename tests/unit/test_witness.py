"""Witnessing: real audit logs, real Ed25519 keys and notes, and logs that lie.

Each log is a `node.audit.log.AuditLog` writing a real tree; a lying log is two AuditLogs with
the same key and origin (two histories, each validly signed), one shown to each witness.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from prometheus_client import CollectorRegistry

from federation import checkpoints
from federation.checkpoints import audit_origin
from federation.directory import Directory, Member
from federation.pki import public_key_text
from node.atomic_write import write_atomically
from node.audit import witness as witness_module
from node.audit.log import AuditLog
from node.audit.witness import ProofRefused, Witness
from node.audit.witness_state import (
    FAILURES,
    Outcome,
    WitnessStateError,
    forget,
    read_state,
    state_path,
    witness_name,
)
from node.metrics import NodeMetrics
from tests.unit.test_audit import _append_many

FED = "liaison.example"
NODES = ("DE-BKA", "FR-DGPN", "NL-KLPD", "IT-CC")
KEYS = {node: ed25519.Ed25519PrivateKey.generate() for node in NODES}
NOW = 1_800_000_000
T = TypeVar("T")


def _directory(keys: dict[str, ed25519.Ed25519PrivateKey] = KEYS) -> Directory:
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    return Directory(
        federation=FED,
        serial=1,
        issued_at=issued,
        expires_at=issued + timedelta(days=3650),
        members=tuple(
            Member(node, f"{node.lower()}.example:7001", "0" * 64, public_key_text(k.public_key()))
            for node, k in keys.items()
        ),
    )


DIRECTORY = _directory()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Log:
    """A node's real audit log, signing checkpoints with its key (or any key given)."""

    def __init__(
        self, path: Path, node: str = "DE-BKA", key: ed25519.Ed25519PrivateKey | None = None
    ):
        self.audit = AuditLog(path)
        self.node = node
        self.key = key or KEYS[node]

    async def grow(self, count: int) -> str:
        await _append_many(self.audit, self.audit.size, count)
        return self.audit.checkpoint(self.key, audit_origin(FED, self.node))

    async def proof(self, old: int, new: int) -> list[bytes]:
        return self.audit.consistency_proof(old, new)

    async def log_proof(self, log_id: str, old: int, new: int) -> list[bytes]:
        """As the log's server answers: it refuses a size beyond its latest checkpoint."""
        assert log_id == self.node
        if new > self.audit.size:
            raise ProofRefused(f"tree size {new} is beyond the latest checkpoint")
        return await self.proof(old, new)


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def _witness(
    folder: Path, node: str = "FR-DGPN", *, registry: CollectorRegistry | None = None
) -> tuple[Witness, CollectorRegistry, Clock]:
    registry = registry or CollectorRegistry()
    clock = Clock()
    witness = Witness(
        node,
        FED,
        KEYS[node],
        lambda: DIRECTORY,
        state_path(folder / "audit.log"),
        metrics=NodeMetrics(registry),
        clock=clock,
    )
    return witness, registry, clock


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _cosigner(node: str) -> checkpoints.Verifier:
    return checkpoints.Verifier.for_witness(witness_name(FED, node), KEYS[node].public_key())


def _log_verifier(node: str = "DE-BKA") -> checkpoints.Verifier:
    return checkpoints.Verifier.for_log(audit_origin(FED, node), KEYS[node].public_key())


async def _no_proof(old: int, new: int) -> list[bytes]:
    raise AssertionError(f"no proof should be needed ({old} -> {new})")


def _proofs(*hashes: bytes) -> Callable[[int, int], Awaitable[Sequence[bytes]]]:
    async def fetch(old: int, new: int) -> list[bytes]:
        return list(hashes)

    return fetch


# --- observe: honest growth -------------------------------------------------------------------


def test_honest_growth_is_verified_with_a_real_proof_and_cosigned(tmp_path: Path) -> None:
    log = Log(tmp_path / "de" / "audit.log")
    witness, registry, clock = _witness(tmp_path / "fr")
    asked: list[tuple[int, int]] = []

    async def fetch(old: int, new: int) -> list[bytes]:
        asked.append((old, new))
        return await log.proof(old, new)

    async def go() -> None:
        first = await log.grow(5)
        assert await witness.observe("DE-BKA", first, _no_proof) == Outcome.COSIGNED
        clock.now += 60
        second = await log.grow(7)
        assert await witness.observe("DE-BKA", second, fetch) == Outcome.COSIGNED
        assert asked == [(5, 12)]
        # The same checkpoint again: no proof, a fresh cosignature.
        clock.now += 60
        assert await witness.observe("DE-BKA", second, _no_proof) == Outcome.COSIGNED
        await log.audit.close()

    run(go())
    [(log_id, cosigned)] = witness.cosigned()
    assert log_id == "DE-BKA"
    checkpoint, when = checkpoints.verify_cosignature(
        cosigned, _cosigner("FR-DGPN"), origin=audit_origin(FED, "DE-BKA"), now=NOW + 120
    )
    assert (checkpoint.size, when) == (12, NOW + 120)
    assert checkpoint.root == log.audit.root(12)
    assert checkpoints.verify_checkpoint(
        cosigned, audit_origin(FED, "DE-BKA"), _log_verifier()
    ) == (checkpoint)
    assert _value(registry, "liaison_witness_checkpoint_size", log="DE-BKA") == 12
    assert _value(registry, "liaison_witness_last_success_timestamp_seconds", log="DE-BKA") == (
        NOW + 120
    )
    for reason in FAILURES:
        assert _value(registry, "liaison_witness_failures_total", log="DE-BKA", reason=reason) in (
            None,
            0,
        )
    assert _value(registry, "liaison_witness_split_view", log="DE-BKA") is None
    state = json.loads(witness.path.read_text())
    assert state["logs"]["DE-BKA"]["note"].startswith(f"{audit_origin(FED, 'DE-BKA')}\n12\n")
    assert state["split_views"] == []
    assert witness.path == tmp_path / "fr" / "audit.log.witness.json"
    assert witness.path.stat().st_mode & 0o777 == 0o600


def test_cosigned_notes_carry_only_the_logs_signature_and_ours(tmp_path: Path) -> None:
    """A line the log appended under another witness's name (unverifiable here) is not
    passed on beside our cosignature: a reader who knows that witness would refuse it."""
    log = Log(tmp_path / "de" / "audit.log")
    witness, _, _ = _witness(tmp_path / "fr")

    async def go() -> str:
        note = await log.grow(3)
        forged = checkpoints.cosign(note, witness_name(FED, "NL-KLPD"), KEYS["IT-CC"], NOW)
        assert await witness.observe("DE-BKA", forged, _no_proof) == Outcome.COSIGNED
        await log.audit.close()
        return note

    note = run(go())
    [(_, cosigned)] = witness.cosigned()
    assert cosigned == checkpoints.cosign(note, witness_name(FED, "FR-DGPN"), KEYS["FR-DGPN"], NOW)
    checkpoints.verify_cosignature(cosigned, _cosigner("FR-DGPN"))


# --- observe: what a witness refuses ----------------------------------------------------------


def test_a_rollback_is_refused_and_the_newer_view_kept(tmp_path: Path) -> None:
    log = Log(tmp_path / "de" / "audit.log")
    witness, registry, _ = _witness(tmp_path / "fr")

    async def go() -> None:
        old = await log.grow(4)
        new = await log.grow(4)
        assert await witness.observe("DE-BKA", new, _no_proof) == Outcome.COSIGNED
        assert await witness.observe("DE-BKA", old, _no_proof) == Outcome.ROLLBACK
        await log.audit.close()

    run(go())
    view = witness.view("DE-BKA")
    assert view is not None and view.checkpoint.size == 8
    assert _value(registry, "liaison_witness_failures_total", log="DE-BKA", reason="rollback") == 1
    assert _value(registry, "liaison_witness_split_view", log="DE-BKA") is None
    assert witness.evidence == ()


def test_a_fork_at_the_same_size_is_a_split_view_with_evidence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    honest = Log(tmp_path / "de" / "audit.log")
    rewritten = Log(tmp_path / "de-forged" / "audit.log")  # same key, same origin
    witness, registry, _ = _witness(tmp_path / "fr")

    async def go() -> tuple[str, str]:
        a = await honest.grow(6)
        b = await rewritten.grow(6)
        assert await witness.observe("DE-BKA", a, _no_proof) == Outcome.COSIGNED
        with caplog.at_level(logging.ERROR, logger="liaison.witness"):
            assert await witness.observe("DE-BKA", b, _no_proof) == Outcome.FORK
            # Seen again next interval: counted again, but the evidence is not repeated.
            assert await witness.observe("DE-BKA", b, _no_proof) == Outcome.FORK
        await honest.audit.close()
        await rewritten.audit.close()
        return a, b

    a, b = run(go())
    view = witness.view("DE-BKA")
    assert view is not None and view.note == a
    assert _value(registry, "liaison_witness_split_view", log="DE-BKA") == 1
    assert _value(registry, "liaison_witness_failures_total", log="DE-BKA", reason="fork") == 2
    assert "SPLIT VIEW" in caplog.text and "DE-BKA" in caplog.text
    [evidence] = json.loads(witness.path.read_text())["split_views"]
    assert evidence["log"] == "DE-BKA"
    assert evidence["reason"] == "fork"
    assert evidence["via"] == "observe"
    assert evidence["notes"] == [a, b]
    # Proof an overseer can check with the log's public key alone.
    first, second = (
        checkpoints.verify_checkpoint(n, audit_origin(FED, "DE-BKA"), _log_verifier())
        for n in evidence["notes"]
    )
    assert first.size == second.size and first.root != second.root


def test_a_bad_consistency_proof_is_a_split_view(tmp_path: Path) -> None:
    honest = Log(tmp_path / "de" / "audit.log")
    rewritten = Log(tmp_path / "de-forged" / "audit.log")
    witness, registry, _ = _witness(tmp_path / "fr")

    async def go() -> None:
        assert await witness.observe("DE-BKA", await honest.grow(5), _no_proof) == (
            Outcome.COSIGNED
        )
        # A larger tree of another history: the only proof the log has is of that history.
        forged = await rewritten.grow(9)
        assert await witness.observe("DE-BKA", forged, rewritten.proof) == Outcome.INCONSISTENT
        # A real proof with one hash changed.
        grown = await honest.grow(4)
        proof = await honest.proof(5, 9)
        proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
        assert await witness.observe("DE-BKA", grown, _proofs(*proof)) == Outcome.INCONSISTENT
        # The honest proof still goes through afterwards.
        assert await witness.observe("DE-BKA", grown, honest.proof) == Outcome.COSIGNED
        await honest.audit.close()
        await rewritten.audit.close()

    run(go())
    assert (
        _value(registry, "liaison_witness_failures_total", log="DE-BKA", reason="inconsistent") == 2
    )
    assert _value(registry, "liaison_witness_split_view", log="DE-BKA") == 1
    reasons = [(e.reason, len(e.proof) > 0) for e in witness.evidence]
    assert reasons == [(Outcome.INCONSISTENT, True), (Outcome.INCONSISTENT, True)]


def test_a_refused_proof_is_a_split_view_but_an_unreachable_log_is_not(tmp_path: Path) -> None:
    log = Log(tmp_path / "de" / "audit.log")
    witness, registry, _ = _witness(tmp_path / "fr")

    async def refused(old: int, new: int) -> list[bytes]:
        raise ProofRefused(f"will not prove {old} -> {new}")

    async def down(old: int, new: int) -> list[bytes]:
        raise ConnectionError("connection reset")

    async def go() -> None:
        await witness.observe("DE-BKA", await log.grow(3), _no_proof)
        grown = await log.grow(3)
        assert await witness.observe("DE-BKA", grown, down) == Outcome.PROOF_UNAVAILABLE
        assert _value(registry, "liaison_witness_split_view", log="DE-BKA") is None
        assert await witness.observe("DE-BKA", grown, refused) == Outcome.PROOF_REFUSED
        await log.audit.close()

    run(go())
    view = witness.view("DE-BKA")
    assert view is not None and view.checkpoint.size == 3
    assert _value(registry, "liaison_witness_split_view", log="DE-BKA") == 1
    failures = "liaison_witness_failures_total"
    assert _value(registry, failures, log="DE-BKA", reason="proof_unavailable") == 1
    assert _value(registry, failures, log="DE-BKA", reason="proof_refused") == 1


def test_notes_signed_by_the_wrong_key_or_for_the_wrong_log_are_refused(tmp_path: Path) -> None:
    impostor = Log(tmp_path / "x" / "audit.log", "DE-BKA", key=KEYS["IT-CC"])
    other = Log(tmp_path / "it" / "audit.log", "IT-CC")
    witness, registry, _ = _witness(tmp_path / "fr")

    async def go() -> None:
        assert await witness.observe("DE-BKA", await impostor.grow(2), _no_proof) == (
            Outcome.BAD_NOTE
        )
        # IT-CC's own valid checkpoint presented as DE-BKA's.
        assert await witness.observe("DE-BKA", await other.grow(2), _no_proof) == (Outcome.BAD_NOTE)
        assert await witness.observe("DE-BKA", "not a note", _no_proof) == Outcome.BAD_NOTE
        assert await witness.observe("XX-NOBODY", await other.grow(1), _no_proof) == (
            Outcome.UNKNOWN_LOG
        )
        await impostor.audit.close()
        await other.audit.close()

    run(go())
    assert witness.cosigned() == []
    assert _value(registry, "liaison_witness_failures_total", log="DE-BKA", reason="bad_note") == 3
    assert _value(registry, "liaison_witness_checkpoint_size", log="XX-NOBODY") is None


def test_nothing_is_cosigned_that_could_not_be_made_durable(tmp_path: Path) -> None:
    log = Log(tmp_path / "de" / "audit.log")
    witness, registry, _ = _witness(tmp_path / "fr")
    state_path(tmp_path / "fr" / "audit.log").mkdir()  # a folder where the file should be

    async def go() -> None:
        outcome = await witness.observe("DE-BKA", await log.grow(2), _no_proof)
        assert outcome == Outcome.STATE_UNWRITABLE
        await log.audit.close()

    run(go())
    assert witness.cosigned() == []
    assert witness.view("DE-BKA") is None
    failures = "liaison_witness_failures_total"
    assert _value(registry, failures, log="DE-BKA", reason="state_unwritable") == 1


def test_a_cosignature_is_served_only_once_its_view_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the state file is being written (in a thread, the event loop serving calls),
    GetWitnessedCheckpoints still gets the view written before, not the one being written."""
    log = Log(tmp_path / "de" / "audit.log")
    witness, _, _ = _witness(tmp_path / "fr")
    writing, release = threading.Event(), threading.Event()

    def slow_write(path: Path, data: bytes, mode: int) -> None:
        writing.set()
        assert release.wait(10)
        write_atomically(path, data, mode)

    async def go() -> tuple[list[int], list[int], Outcome]:
        assert await witness.observe("DE-BKA", await log.grow(3), _no_proof) == Outcome.COSIGNED
        monkeypatch.setattr(witness_module, "write_atomically", slow_write)
        observing = asyncio.create_task(witness.observe("DE-BKA", await log.grow(2), log.proof))
        await asyncio.to_thread(writing.wait, 10)
        during = [_cosigned_size(note) for _, note in witness.cosigned()]
        release.set()
        outcome = await observing
        await log.audit.close()
        return during, [_cosigned_size(note) for _, note in witness.cosigned()], outcome

    during, after, outcome = run(go())
    assert (during, after, outcome) == ([3], [5], Outcome.COSIGNED)
    assert read_state(witness.path, FED, "FR-DGPN").views["DE-BKA"].checkpoint.size == 5


def _cosigned_size(note: str) -> int:
    return checkpoints.verify_cosignature(note, _cosigner("FR-DGPN"))[0].size


# --- restart ----------------------------------------------------------------------------------


def test_a_restarted_witness_remembers_its_views_and_evidence(tmp_path: Path) -> None:
    honest = Log(tmp_path / "de" / "audit.log")
    rewritten = Log(tmp_path / "de-forged" / "audit.log")
    witness, _, _ = _witness(tmp_path / "fr")
    held: dict[str, str] = {}

    async def before() -> None:
        held["old"] = await honest.grow(3)
        held["forged"] = await rewritten.grow(7)
        await witness.observe("DE-BKA", held["old"], _no_proof)
        held["new"] = await honest.grow(4)
        assert await witness.observe("DE-BKA", held["new"], honest.proof) == Outcome.COSIGNED
        assert await witness.observe("DE-BKA", held["forged"], _no_proof) == Outcome.FORK

    run(before())
    with pytest.raises(WitnessStateError, match="in use: the node is running"):
        _witness(tmp_path / "fr")  # a second witness would write over the first one's state
    witness.close()
    again, registry, _ = _witness(tmp_path / "fr")
    assert again.cosigned() == witness.cosigned()
    assert again.evidence == witness.evidence
    assert _value(registry, "liaison_witness_checkpoint_size", log="DE-BKA") == 7
    assert _value(registry, "liaison_witness_split_view", log="DE-BKA") == 1
    assert _value(registry, "liaison_witness_last_success_timestamp_seconds", log="DE-BKA") == NOW

    async def after() -> None:
        assert await again.observe("DE-BKA", held["old"], _no_proof) == Outcome.ROLLBACK
        assert await again.observe("DE-BKA", held["forged"], _no_proof) == Outcome.FORK
        assert await again.observe("DE-BKA", await honest.grow(1), honest.proof) == (
            Outcome.COSIGNED
        )
        await honest.audit.close()
        await rewritten.audit.close()

    run(after())
    assert len(again.evidence) == 1  # the same fork, not recorded twice


def test_forget_lets_the_other_tree_be_witnessed_and_keeps_the_evidence(tmp_path: Path) -> None:
    """After an investigation: the split view stops being an alert, the log's next head is
    trusted afresh, and the evidence stays (resolved) through later saves."""
    honest = Log(tmp_path / "de" / "audit.log")
    rewritten = Log(tmp_path / "de-forged" / "audit.log")
    witness, _, _ = _witness(tmp_path / "fr")
    path = witness.path
    held: dict[str, str] = {}

    async def before() -> None:
        held["honest"] = await honest.grow(3)
        held["forged"] = await rewritten.grow(3)
        await witness.observe("DE-BKA", held["honest"], _no_proof)
        assert await witness.observe("DE-BKA", held["forged"], _no_proof) == Outcome.FORK

    run(before())
    with pytest.raises(WitnessStateError, match=r"in use: the node is running .* stop it first"):
        forget(path, FED, "FR-DGPN", "DE-BKA", "checked", NOW)
    witness.close()
    with pytest.raises(WitnessStateError, match="say why"):
        forget(path, FED, "FR-DGPN", "DE-BKA", "  ", NOW)
    with pytest.raises(WitnessStateError, match="no view and no split-view evidence of NL-KLPD"):
        forget(path, FED, "FR-DGPN", "NL-KLPD", "checked", NOW)
    kept = witness.view("DE-BKA")
    view, resolved = forget(path, FED, "FR-DGPN", "DE-BKA", "DE restored its backup", NOW + 9)
    assert view is not None and kept is not None and view.note == kept.note
    assert resolved == list(witness.evidence)

    again, registry, _ = _witness(tmp_path / "fr")
    assert again.view("DE-BKA") is None and again.evidence == ()
    assert _value(registry, "liaison_witness_split_view", log="DE-BKA") is None

    async def after() -> None:
        assert await again.observe("DE-BKA", held["forged"], _no_proof) == Outcome.COSIGNED
        await honest.audit.close()
        await rewritten.audit.close()

    run(after())
    again.close()
    state = read_state(path, FED, "FR-DGPN")
    assert [r.evidence for r in state.resolved] == resolved
    assert [(r.resolved_at, r.resolution) for r in state.resolved] == [
        (NOW + 9, "DE restored its backup")
    ]
    assert state.views["DE-BKA"].note == held["forged"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"format": "liaison-witness-state/v1", "witness": "liai', "not JSON, torn or damaged"),
        (b"\x00\x01garbage", "not JSON, torn or damaged"),
        (b"\xff\xfe{}", "not JSON, torn or damaged"),
        (b'{"format": "something-else"}', "not liaison-witness-state/v1"),
        (
            b'{"format": "liaison-witness-state/v1", "witness": "liaison.example/NL-KLPD/witness",'
            b' "logs": {}, "split_views": []}',
            "it is the state of witness 'liaison.example/NL-KLPD/witness'",
        ),
        (
            b'{"format": "liaison-witness-state/v1", "witness": "liaison.example/FR-DGPN/witness",'
            b' "logs": {"DE-BKA": {"note": "x\\n\\n", "cosigned": "x\\n\\n", "witnessed_at": 1}},'
            b' "split_views": []}',
            "checkpoint has an origin",
        ),
    ],
)
def test_a_torn_or_corrupt_state_file_stops_the_witness_and_says_what_to_do(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = state_path(tmp_path / "fr" / "audit.log")
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(WitnessStateError) as info:
        _witness(tmp_path / "fr")
    message = str(info.value)
    assert message.startswith(f"witness state file {path} is unreadable (")
    assert why in message
    assert "restore it from a backup" in message
    assert "move it aside (keep it: it may hold evidence)" in message


# --- gossip: a log that shows two witnesses two trees -----------------------------------------


def test_gossip_catches_a_log_showing_two_witnesses_two_histories(tmp_path: Path) -> None:
    """DE-BKA's key signs two histories; FR-DGPN sees one, NL-KLPD the other. Each alone is
    content; comparing their cosigned views catches the log, at equal and unequal sizes."""
    shown_to_fr = Log(tmp_path / "de-a" / "audit.log")
    shown_to_nl = Log(tmp_path / "de-b" / "audit.log")
    fr, fr_registry, _ = _witness(tmp_path / "fr")
    nl, nl_registry, _ = _witness(tmp_path / "nl", "NL-KLPD")
    it, it_registry, _ = _witness(tmp_path / "it", "IT-CC")

    async def go() -> dict[str, dict[str, Outcome]]:
        assert await fr.observe("DE-BKA", await shown_to_fr.grow(5), _no_proof) == (
            Outcome.COSIGNED
        )
        assert await nl.observe("DE-BKA", await shown_to_nl.grow(5), _no_proof) == (
            Outcome.COSIGNED
        )
        nl_at_5 = nl.cosigned()
        found = {
            "same size, at fr": await fr.compare("NL-KLPD", nl_at_5, shown_to_fr.log_proof),
            "same size, at nl": await nl.compare("FR-DGPN", fr.cosigned(), shown_to_nl.log_proof),
        }
        # NL-KLPD is shown a larger tree of its history. Asked by FR-DGPN, the log cannot
        # prove that size from the history FR-DGPN sees, and refuses.
        await nl.observe("DE-BKA", await shown_to_nl.grow(4), shown_to_nl.proof)
        found["nl larger"] = await fr.compare("NL-KLPD", nl.cosigned(), shown_to_fr.log_proof)
        # IT-CC is shown a larger tree of FR-DGPN's history: the log proves it, but from its
        # own root at 5, not the one NL-KLPD was shown.
        await it.observe("DE-BKA", await shown_to_fr.grow(4), _no_proof)
        found["it larger"] = await it.compare("NL-KLPD", nl_at_5, shown_to_fr.log_proof)
        await shown_to_fr.audit.close()
        await shown_to_nl.audit.close()
        return found

    found = run(go())
    assert found == {
        "same size, at fr": {"DE-BKA": Outcome.FORK},
        "same size, at nl": {"DE-BKA": Outcome.FORK},
        "nl larger": {"DE-BKA": Outcome.PROOF_REFUSED},
        "it larger": {"DE-BKA": Outcome.INCONSISTENT},
    }
    for registry in (fr_registry, nl_registry, it_registry):
        assert _value(registry, "liaison_witness_split_view", log="DE-BKA") == 1
    fork, refused = fr.evidence
    assert (fork.reason, fork.via, refused.reason) == (
        Outcome.FORK,
        "NL-KLPD",
        Outcome.PROOF_REFUSED,
    )
    ours, theirs = fork.notes
    origin = audit_origin(FED, "DE-BKA")
    # The other note carries the log's signature and NL-KLPD's cosignature: both check.
    assert checkpoints.verify_checkpoint(ours, origin, _log_verifier()).size == 5
    assert checkpoints.verify_checkpoint(theirs, origin, _log_verifier()).size == 5
    checkpoints.verify_cosignature(theirs, _cosigner("NL-KLPD"), origin=origin)
    [inconsistent] = it.evidence
    assert inconsistent.proof
    sizes = [
        checkpoints.verify_checkpoint(n, origin, _log_verifier()).size for n in inconsistent.notes
    ]
    assert sizes == [9, 5]


def test_gossip_between_honest_witnesses_finds_one_tree(tmp_path: Path) -> None:
    log = Log(tmp_path / "de" / "audit.log")
    it_log = Log(tmp_path / "it" / "audit.log", "IT-CC")
    fr, registry, _ = _witness(tmp_path / "fr")
    nl, _, _ = _witness(tmp_path / "nl", "NL-KLPD")
    asked: list[tuple[str, int, int]] = []

    async def fetch(log_id: str, old: int, new: int) -> list[bytes]:
        asked.append((log_id, old, new))
        return await log.proof(old, new)

    async def go() -> list[dict[str, Outcome]]:
        await fr.observe("DE-BKA", await log.grow(4), _no_proof)
        await nl.observe("DE-BKA", log.audit.latest_checkpoint() or "", _no_proof)
        same = await fr.compare("NL-KLPD", nl.cosigned(), fetch)
        await nl.observe("DE-BKA", await log.grow(6), log.proof)
        await nl.observe("IT-CC", await it_log.grow(2), _no_proof)  # FR-DGPN holds no view
        # NL-KLPD's views include FR-DGPN's own log and NL-KLPD's: neither is compared.
        views = [*nl.cosigned(), ("FR-DGPN", "x"), ("NL-KLPD", "y"), ("XX-NOBODY", "z")]
        later = await fr.compare("NL-KLPD", views, fetch)
        back = await nl.compare("FR-DGPN", fr.cosigned(), fetch)
        await log.audit.close()
        await it_log.audit.close()
        return [same, later, back]

    assert run(go()) == [
        {"DE-BKA": Outcome.CONSISTENT},
        {"DE-BKA": Outcome.CONSISTENT, "IT-CC": Outcome.NOT_WITNESSED},
        {"DE-BKA": Outcome.CONSISTENT},
    ]
    assert asked == [("DE-BKA", 4, 10), ("DE-BKA", 4, 10)]
    assert fr.evidence == () and nl.evidence == ()
    assert _value(registry, "liaison_witness_split_view", log="DE-BKA") is None


def test_gossip_refuses_views_the_log_or_the_witness_did_not_sign(tmp_path: Path) -> None:
    log = Log(tmp_path / "de" / "audit.log")
    impostor = Log(tmp_path / "x" / "audit.log", "DE-BKA", key=KEYS["IT-CC"])
    fr, registry, _ = _witness(tmp_path / "fr")

    async def go() -> list[dict[str, Outcome]]:
        note = await log.grow(3)
        await fr.observe("DE-BKA", note, _no_proof)
        # Cosigned under NL-KLPD's name with IT-CC's key.
        wrong_witness = checkpoints.cosign(note, witness_name(FED, "NL-KLPD"), KEYS["IT-CC"], NOW)
        # The log's note replaced by one the log's key never signed.
        forged = checkpoints.cosign(
            await impostor.grow(3), witness_name(FED, "NL-KLPD"), KEYS["NL-KLPD"], NOW
        )
        found = [
            await fr.compare("NL-KLPD", [("DE-BKA", wrong_witness)], log.log_proof),
            await fr.compare("NL-KLPD", [("DE-BKA", forged)], log.log_proof),
            await fr.compare("XX-NOBODY", [("DE-BKA", note)], log.log_proof),
        ]
        await log.audit.close()
        await impostor.audit.close()
        return found

    assert run(go()) == [
        {"DE-BKA": Outcome.BAD_COSIGNATURE},
        {"DE-BKA": Outcome.BAD_NOTE},
        {},
    ]
    assert fr.evidence == ()
    failures = "liaison_witness_failures_total"
    assert _value(registry, failures, log="DE-BKA", reason="bad_cosignature") == 1
    assert _value(registry, failures, log="DE-BKA", reason="bad_note") == 1


# --- collecting cosignatures on our own checkpoint --------------------------------------------


def test_a_log_collects_its_witnesses_cosignatures_and_serves_them(tmp_path: Path) -> None:
    own = Log(tmp_path / "de" / "audit.log")
    de, registry, _ = _witness(tmp_path / "de", "DE-BKA")
    fr, _, _ = _witness(tmp_path / "fr")
    nl, _, _ = _witness(tmp_path / "nl", "NL-KLPD")
    origin = audit_origin(FED, "DE-BKA")

    async def go() -> tuple[str, str]:
        note = await own.grow(4)
        await fr.observe("DE-BKA", note, _no_proof)
        await nl.observe("DE-BKA", note, _no_proof)
        assert de.collect("FR-DGPN", fr.cosigned(), note)
        assert de.collect("NL-KLPD", nl.cosigned(), note)
        # A cosignature under IT-CC's name made with another key: refused, not collected.
        fake = checkpoints.cosign(note, witness_name(FED, "IT-CC"), KEYS["FR-DGPN"], NOW)
        assert not de.collect("IT-CC", [("DE-BKA", fake)], note)
        served = de.extra_cosignatures(note)
        newer = await own.grow(1)
        await own.audit.close()
        return served, newer

    served, newer = run(go())
    assert checkpoints.verify_checkpoint(served, origin, _log_verifier()).size == 4
    for node in ("FR-DGPN", "NL-KLPD"):
        checkpoint, _ = checkpoints.verify_cosignature(served, _cosigner(node), origin=origin)
        assert checkpoint.size == 4
    assert served.count("\n\u2014 ") == 3  # the log's line and two cosignatures
    assert _value(registry, "liaison_audit_cosignatures") == 2
    # A newer checkpoint gets none of the old cosignatures; collecting drops them.
    assert de.extra_cosignatures(newer) == newer
    assert not de.collect("FR-DGPN", fr.cosigned(), newer)
    assert _value(registry, "liaison_audit_cosignatures") == 0
    assert de.extra_cosignatures("garbage") == "garbage"
