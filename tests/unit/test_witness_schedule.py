"""The witnessing schedule against fake OversightService clients: who is witnessed, what a
refusal or a network error means, and that a peer down never stops the round."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from federation import checkpoints
from federation.client import ClientIdentity
from federation.directory import Directory, Member, MemberStatus
from federation.errors import InvalidRequest, PeerUnavailable
from federation.oversight import OversightClient
from node.audit.verify import stated_checkpoint
from node.audit.witness import Witness
from node.audit.witness_schedule import Witnessing
from node.audit.witness_state import Outcome, state_path
from node.metrics import NodeMetrics
from tests.unit.test_witness import DIRECTORY, FED, KEYS, Log

ME = "FR-DGPN"
IDENTITY = ClientIdentity(ME, FED, b"")


class FakeClient:
    """One peer's OversightService as `OversightClient` presents it."""

    def __init__(self, peer: str, log: Log | None) -> None:
        self.peer = peer
        self.log = log
        self.endpoint = ""
        self.down = False
        self.refuse_proofs = False
        self.proofs_fail = False
        self.empty_once = False
        self.views: list[tuple[str, str]] = []
        self.closed = False

    async def get_checkpoint(self, timeout: float) -> tuple[checkpoints.Checkpoint, str]:
        if self.down or self.log is None:
            raise PeerUnavailable(self.peer, "connection refused", reasons=("unreachable",))
        if self.empty_once:
            self.empty_once = False
            raise InvalidRequest(self.peer, "no checkpoint yet", reasons=("no_checkpoint",))
        note = self.log.audit.latest_checkpoint()
        assert note is not None
        return stated_checkpoint(note), note

    async def get_consistency_proof(self, old: int, new: int, timeout: float) -> list[bytes]:
        if self.refuse_proofs:
            raise InvalidRequest(self.peer, "beyond", reasons=("beyond_checkpoint",))
        if self.proofs_fail:
            raise PeerUnavailable(self.peer, "deadline", reasons=("deadline_exceeded",))
        assert self.log is not None
        return self.log.audit.consistency_proof(old, new)

    async def get_witnessed_checkpoints(self, timeout: float) -> list[tuple[str, str]]:
        if self.down:
            raise PeerUnavailable(self.peer, "connection refused", reasons=("unreachable",))
        return self.views

    async def close(self) -> None:
        self.closed = True


class Setup:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, directory: Directory):
        self.registry = CollectorRegistry()
        self.metrics = NodeMetrics(self.registry)
        self.logs = {
            node: Log(tmp_path / node / "audit.log", node) for node in ("DE-BKA", "NL-KLPD")
        }
        self.own = Log(tmp_path / ME / "audit.log", ME)
        self.clients: dict[str, FakeClient] = {}
        self.knobs: dict[str, dict[str, Any]] = {}
        self.opened: list[tuple[str, str | None]] = []
        self.witness = Witness(
            ME, FED, KEYS[ME], lambda: directory, state_path(tmp_path / "audit.log"),
            metrics=self.metrics,
        )  # fmt: skip

        def for_member(identity: Any, member: Member, endpoint: str | None = None) -> Any:
            self.opened.append((member.node_id, endpoint))
            client = FakeClient(member.node_id, self.logs.get(member.node_id))
            for knob, value in self.knobs.get(member.node_id, {}).items():
                setattr(client, knob, value)
            self.clients[member.node_id] = client
            return client

        monkeypatch.setattr(OversightClient, "for_member", for_member)
        self.runner = Witnessing(
            self.witness,
            lambda: directory,
            lambda: IDENTITY,
            self.own.audit.latest_checkpoint,
            1,
            endpoints={"NL-KLPD": "127.0.0.1:7999"},
            metrics=self.metrics,
        )

    def set(self, peer: str, **knobs: Any) -> None:
        """How the peer's next client behaves (FakeClient's attributes)."""
        self.knobs[peer] = knobs

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def _directory(**changes: dict[str, Any]) -> Directory:
    members = tuple(dataclasses.replace(m, **changes.get(m.node_id, {})) for m in DIRECTORY.members)
    return dataclasses.replace(DIRECTORY, members=members)


def test_only_active_nodes_other_than_itself_are_witnessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes: dict[str, dict[str, Any]] = {
        "IT-CC": {"status": MemberStatus.SUSPENDED},
        "DE-BKA": {"roles": ("node", "overseer")},
    }
    directory = _directory(**changes)
    s = Setup(tmp_path, monkeypatch, directory)
    assert [m.node_id for m in s.runner.peers(directory)] == ["DE-BKA", "NL-KLPD"]
    overseer_only = _directory(**{"DE-BKA": {"roles": ("overseer",), "endpoint": ""}})
    assert [m.node_id for m in s.runner.peers(overseer_only)] == ["NL-KLPD", "IT-CC"]


def test_a_round_cosigns_reachable_peers_and_counts_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Setup(tmp_path, monkeypatch, _directory(**{"IT-CC": {"status": MemberStatus.REVOKED}}))
    for log in s.logs.values():
        asyncio.run(log.grow(3))
    s.set("DE-BKA", down=True)
    s.set("NL-KLPD", empty_once=True)  # an empty log's refusal: asked again at once
    assert asyncio.run(s.runner.round()) == {
        "DE-BKA": Outcome.UNREACHABLE,
        "NL-KLPD": Outcome.COSIGNED,
    }
    assert sorted(s.opened) == [("DE-BKA", None), ("NL-KLPD", "127.0.0.1:7999")]
    assert all(c.closed for c in s.clients.values())
    failures = "liaison_witness_failures_total"
    assert s.value(failures, log="DE-BKA", reason="unreachable") == 1
    assert s.value("liaison_witness_checkpoint_size", log="NL-KLPD") == 3


def test_a_refused_proof_is_a_split_view_and_a_failed_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Setup(tmp_path, monkeypatch, _directory(**{"IT-CC": {"status": MemberStatus.REVOKED}}))
    for log in s.logs.values():
        asyncio.run(log.grow(2))
    asyncio.run(s.runner.round())
    for log in s.logs.values():
        asyncio.run(log.grow(3))
    s.set("DE-BKA", refuse_proofs=True)
    s.set("NL-KLPD", proofs_fail=True)
    assert asyncio.run(s.runner.round()) == {
        "DE-BKA": Outcome.PROOF_REFUSED,
        "NL-KLPD": Outcome.PROOF_UNAVAILABLE,
    }
    assert s.value("liaison_witness_split_view", log="DE-BKA") == 1
    assert s.value("liaison_witness_split_view", log="NL-KLPD") is None
    assert [e.log for e in s.witness.evidence] == ["DE-BKA"]


def test_the_peers_cosignatures_on_our_checkpoint_are_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Setup(tmp_path, monkeypatch, _directory(**{"IT-CC": {"status": MemberStatus.REVOKED}}))
    for log in s.logs.values():
        asyncio.run(log.grow(1))
    ours = asyncio.run(s.own.grow(4))
    theirs = checkpoints.cosign(
        ours, "liaison.example/DE-BKA/witness", KEYS["DE-BKA"], 1_800_000_000
    )
    views: Sequence[tuple[str, str]] = [(ME, theirs)]
    s.set("DE-BKA", views=views)
    asyncio.run(s.runner.round())
    assert s.value("liaison_audit_cosignatures") == 1
    served = s.witness.extra_cosignatures(ours)
    checkpoints.verify_cosignature(served, checkpoints.Verifier.for_witness(
        "liaison.example/DE-BKA/witness", KEYS["DE-BKA"].public_key()
    ))  # fmt: skip


def test_a_log_no_longer_witnessed_stops_exporting_its_freshness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer suspended or removed is no longer witnessed: its freshness gauges go, or
    LiaisonWitnessStale would fire for it for ever."""
    revoked = {"IT-CC": {"status": MemberStatus.REVOKED}}
    s = Setup(tmp_path, monkeypatch, _directory(**revoked))
    for log in s.logs.values():
        asyncio.run(log.grow(3))
    current = [_directory(**revoked)]
    s.runner._directory = lambda: current[0]
    asyncio.run(s.runner.round())
    last = "liaison_witness_last_success_timestamp_seconds"
    assert s.value(last, log="NL-KLPD") is not None
    current[0] = _directory(**revoked, **{"NL-KLPD": {"status": MemberStatus.SUSPENDED}})
    assert asyncio.run(s.runner.round()) == {"DE-BKA": Outcome.COSIGNED}
    assert s.value(last, log="NL-KLPD") is None
    assert s.value("liaison_witness_checkpoint_size", log="NL-KLPD") is None
    assert s.value(last, log="DE-BKA") is not None
