"""Nodes witnessing each other's audit logs: real node processes over mTLS on loopback.

Each test builds its own small federation with `[witness] interval_s = 1`, so the session
federation (whose nodes do not witness) is not disturbed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from federation import checkpoints
from federation.checkpoints import audit_origin
from federation.client import ClientIdentity
from federation.oversight import OversightClient
from federation.pki import public_key_from_text
from node.audit.witness_state import SPLIT_VIEWS, state_path, witness_name
from node.local.demo import AGREEMENTS
from node.local.federation import Federation, NodeHandle, build_federation
from tests.federation.helpers import clone_node, scrape, set_keys
from tests.federation.test_cli import liaison

NODES = ("DE-BKA", "FR-DGPN", "NL-KLPD")
FEDERATION = "liaison.example"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
T = TypeVar("T")


def until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.25)


def oversee(identity: ClientIdentity, fed: Federation, node: str, what: str) -> Any:
    async def run() -> Any:
        async with OversightClient.for_member(identity, fed.member(node)) as client:
            if what == "checkpoint":
                return (await client.get_checkpoint())[1]
            return await client.get_witnessed_checkpoints()

    return asyncio.run(run())


def log_verifier(fed: Federation, node: str) -> checkpoints.Verifier:
    key = public_key_from_text(fed.member(node).signing_public_key)
    return checkpoints.Verifier.for_log(audit_origin(FEDERATION, node), key)


def witness_verifier(fed: Federation, node: str) -> checkpoints.Verifier:
    key = public_key_from_text(fed.member(node).signing_public_key)
    return checkpoints.Verifier.for_witness(witness_name(FEDERATION, node), key)


def cosigners(fed: Federation, log: str, note: str) -> set[str]:
    """The other nodes whose cosignature on `note` (a checkpoint of `log`) verifies."""
    found = set()
    for witness in NODES:
        if witness == log:
            continue
        try:
            checkpoints.verify_cosignature(
                note, witness_verifier(fed, witness), origin=audit_origin(FEDERATION, log)
            )
        except checkpoints.NoteError:
            continue
        found.add(witness)
    return found


def witnessed(node: NodeHandle, log: str) -> float:
    return scrape(node, "liaison_witness_checkpoint_size", {"log": log}) or 0.0


@pytest.fixture
def wfed(tmp_path: Path) -> Iterator[Federation]:
    fed = build_federation(tmp_path / "fed", NODES, AGREEMENTS, records=20, witness_interval_s=1)
    yield fed
    fed.stop()


def test_three_nodes_witness_and_cosign_each_other(wfed: Federation) -> None:
    wfed.start()
    pairs = [(n, log) for n in NODES for log in NODES if log != n]
    until(
        lambda: all(witnessed(wfed.nodes[n], log) > 0 for n, log in pairs),
        30,
        "every node witnessed both of its peers' logs",
    )
    asker = wfed.nodes["DE-BKA"].identity()
    for log in NODES:
        # The checkpoint a node serves carries its peers' cosignatures, once they have seen
        # it and the node has collected them (its log does not move while only watched).
        def cosigned(log: str = log) -> str | None:
            note: str = oversee(asker, wfed, log, "checkpoint")
            return note if cosigners(wfed, log, note) == set(NODES) - {log} else None

        note = until(cosigned, 30, f"{log} serves its checkpoint cosigned by both peers")
        checkpoints.verify_checkpoint(note, audit_origin(FEDERATION, log), log_verifier(wfed, log))

    for node in NODES:
        views = dict(oversee(asker, wfed, node, "views"))
        assert sorted(views) == sorted(set(NODES) - {node})
        for log, note in views.items():
            checkpoints.verify_checkpoint(
                note, audit_origin(FEDERATION, log), log_verifier(wfed, log)
            )
            assert node in cosigners(wfed, log, note)
        folder = wfed.nodes[node].folder
        state = json.loads(state_path(folder / "audit.log").read_text())
        assert sorted(state["logs"]) == sorted(set(NODES) - {node})
        assert state["split_views"] == []
        assert scrape(wfed.nodes[node], "liaison_witness_split_view") is None
    # A graceful stop ends the schedule too (else SIGKILL after 10 s: not 0).
    assert [wfed.nodes[n].stop(timeout=10) for n in NODES] == [0, 0, 0]


def test_a_log_showing_two_histories_is_caught(wfed: Federation, tmp_path: Path) -> None:
    """A second process holds NL-KLPD's identity and keys but its own audit log (another
    history, signed with NL-KLPD's key). DE-BKA is pointed at it, FR-DGPN at the real node:
    when they compare views, the two signed trees cannot both be NL-KLPD's."""
    forger = clone_node(wfed, "NL-KLPD", tmp_path / "forger", witness={"interval_s": "0"})
    de = wfed.nodes["DE-BKA"]
    de.config_path.write_text(
        set_keys(
            de.config_path.read_text(),
            "witness",
            {"endpoints": f'{{ "NL-KLPD" = "{forger.endpoint}" }}'},
        )
    )
    forger.start()
    try:
        wfed.start()
        forger.wait_ready()
        witnesses = [de, wfed.nodes["FR-DGPN"]]

        def caught() -> list[NodeHandle]:
            return [
                w
                for w in witnesses
                if scrape(w, "liaison_witness_split_view", {"log": "NL-KLPD"}) == 1
            ]

        detectors = until(caught, 30, "a witness caught NL-KLPD's split view")
        # What the alert LiaisonAuditSplitView would see.
        rule = re.search(
            r"alert: LiaisonAuditSplitView\n\s+expr: (\w+) > (\d+)\n", RULES.read_text()
        )
        assert rule is not None, "the alert's expression changed: update this test"
        metric, threshold = rule.groups()
        assert metric == "liaison_witness_split_view"
        assert (scrape(detectors[0], metric, {"log": "NL-KLPD"}) or 0) > float(threshold)

        for detector in detectors:
            state = json.loads(state_path(detector.folder / "audit.log").read_text())
            evidence = [e for e in state["split_views"] if e["log"] == "NL-KLPD"]
            assert evidence, f"{detector.node_id} keeps no evidence"
            for item in evidence:
                assert item["reason"] in SPLIT_VIEWS
                ours, theirs = item["notes"]
                # Both verify with NL-KLPD's key from the directory: proof an overseer can check.
                verifier = log_verifier(wfed, "NL-KLPD")
                origin = audit_origin(FEDERATION, "NL-KLPD")
                a = checkpoints.verify_checkpoint(ours, origin, verifier)
                b = checkpoints.verify_checkpoint(theirs, origin, verifier)
                assert a != b
                if a.size == b.size:
                    assert item["reason"] == "fork" and a.root != b.root
                # The note passed on by the other witness carries its cosignature.
                other = "FR-DGPN" if detector.node_id == "DE-BKA" else "DE-BKA"
                assert item["via"] in ("observe", other)
                if item["via"] == other:
                    assert other in cosigners(wfed, "NL-KLPD", theirs)
        # The honest witnesses of the other logs saw nothing wrong.
        for w in witnesses:
            for log in NODES:
                if log not in (w.node_id, "NL-KLPD"):
                    assert scrape(w, "liaison_witness_split_view", {"log": log}) is None
        # DE-BKA, shown the forged tree, finds out through FR-DGPN's view of the real one.
        until(lambda: de in caught(), 30, "DE-BKA caught the split view too")
    finally:
        forger.stop()
    _resolve_the_split_view(de)


def _resolve_the_split_view(detector: NodeHandle) -> None:
    """What an operator does once the split view is investigated and the forger gone: the
    detector, whose view is the forged tree, is told to forget it."""
    config = str(detector.config_path)
    shown = liaison("witness", "status", "--config", config)
    assert shown.returncode == 0, shown.stderr
    assert "UNRESOLVED NL-KLPD: " in shown.stdout
    running = liaison("witness", "forget", "NL-KLPD", "--config", config, "--resolution", "x")
    assert running.returncode == 2 and "the node is running" in running.stderr
    assert detector.stop(timeout=10) == 0
    why = "forger's host seized (case 2026/117); NL-KLPD's own log is the real one"
    done = liaison("witness", "forget", "NL-KLPD", "--config", config, "--resolution", why)
    assert done.returncode == 0, done.stderr
    assert "split view(s) marked resolved" in done.stdout
    shown = liaison("witness", "status", "--config", config)
    assert "UNRESOLVED" not in shown.stdout
    assert "resolved   NL-KLPD: " in shown.stdout and why in shown.stdout
    state = json.loads(state_path(detector.folder / "audit.log").read_text())
    assert "NL-KLPD" not in state["logs"] and state["split_views"] == []
    assert {e["log"] for e in state["resolved_split_views"]} == {"NL-KLPD"}
    # Pointed at the real NL-KLPD again, it witnesses that log afresh, and no alert stands.
    detector.config_path.write_text(
        set_keys(detector.config_path.read_text(), "witness", {"endpoints": "{}"})
    )
    detector.start()
    detector.wait_ready()
    until(lambda: witnessed(detector, "NL-KLPD") > 0, 30, "NL-KLPD witnessed afresh")
    assert scrape(detector, "liaison_witness_split_view", {"log": "NL-KLPD"}) is None
