"""kill -9 a real node under load, 20 times: nothing it answered is missing from its audit
log, the log verifies, and every checkpoint it signed is consistent with the next one."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from federation.client import PeerClient, match_query, new_envelope
from federation.directory import Member
from federation.errors import InvalidRequest, PeerRefused, PeerUnavailable
from federation.pki import load_ed25519_private
from node.audit.file_store import FileStorage
from node.audit.verify import load_tree, storage_checkpoints
from node.local.federation import Federation, NodeHandle
from tests.federation.helpers import clone_node, first
from tests.federation.test_cli import liaison

ROUNDS = 20
IN_FLIGHT = 16
# The node signs a checkpoint every second (the shortest interval there is), counted from
# when it starts to serve; the load starts then too. It is killed at a random moment in
# one of these windows, in turn: before its first checkpoint, or around and after it.
INTERVAL_S = 1
KILL_WINDOWS_S = ((0.05, 1.0), (1.0, 1.3))


def _start(node: NodeHandle, timeout: float = 30.0) -> None:
    """Start the node and return once it serves. Its metrics port opens only after its gRPC
    port serves, and polling it avoids the reconnect backoff of a gRPC health check."""
    node.start()
    deadline = time.monotonic() + timeout
    while True:
        assert node.process is not None and node.process.poll() is None, "the node exited"
        try:
            node.read_metrics(timeout=1)
            return
        except OSError:
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.02)


@dataclass
class Outcomes:
    """What the client was told, by request nonce (hex): the decision, as the log names it."""

    decided: dict[str, str] = field(default_factory=dict)
    unanswered: int = 0


def _mix(fed: Federation) -> list[tuple[str, str, list[tuple[str, str]], str]]:
    """(purpose, category, identifiers, expected decision): hits, no-hits, denials, errors."""
    doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"])
    vin = str(first(fed, "FR-DGPN", "vehicle")["vin"])
    crime = "criminal_investigation"
    return [
        (crime, "travel_document", [("document_number", doc)], "allow"),  # a hit
        (crime, "vehicle", [("vin", vin)], "allow"),  # a hit
        (crime, "travel_document", [("document_number", "ZZ0000000NONE")], "allow"),
        ("counter_terrorism", "vehicle", [("vin", vin)], "deny"),  # purpose_not_agreed
        (crime, "firearm", [("serial_number", "SN123")], "deny"),  # category_not_agreed
        (crime, "vehicle", [("vin", "@@@")], "invalid"),  # identifier_invalid
    ]


async def _load_then_kill(
    node: NodeHandle,
    member: Member,
    fed: Federation,
    kill_after: float,
    outcomes: Outcomes,
) -> None:
    identity = fed.nodes["DE-BKA"].identity()
    client = PeerClient.for_member(identity, member, endpoint=node.endpoint)
    process = node.process
    assert process is not None
    mix = _mix(fed)
    killed = False

    async def worker(start: int) -> None:
        n = start
        while not killed:
            purpose, category, identifiers, expected = mix[n % len(mix)]
            n += 1
            env = new_envelope("DE-BKA", purpose, case_reference="CRASH-1")
            nonce = env.nonce.hex()
            try:
                await client.match(match_query(env, category, identifiers), timeout=10)
                decision = "allow"
            except (PeerRefused, InvalidRequest) as exc:
                # A refusal the node made carries its audit entry and was signed (checked by
                # the client); anything else would not be an answer.
                assert "audit_entry" in exc.metadata, exc
                decision = "deny" if isinstance(exc, PeerRefused) else "invalid"
            except PeerUnavailable:
                assert killed, "the node was unavailable before it was killed"
                outcomes.unanswered += 1
                continue
            assert decision == expected, (category, purpose, decision)
            outcomes.decided[nonce] = decision

    tasks = [asyncio.create_task(worker(i)) for i in range(IN_FLIGHT)]
    try:
        await asyncio.sleep(kill_after)
        process.kill()  # SIGKILL: no stop, no last checkpoint, no flush
        killed = True
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await client.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        node.process = None


def test_kill_9_under_load_loses_no_answer_and_keeps_one_consistent_log(
    fed: Federation, tmp_path: Path
) -> None:
    fr = clone_node(
        fed, "FR-DGPN", tmp_path / "FR-DGPN", audit={"checkpoint_interval_s": str(INTERVAL_S)}
    )
    member = fed.member("FR-DGPN")
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    outcomes = Outcomes()
    started = time.monotonic()
    try:
        for round_ in range(ROUNDS):
            _start(fr)
            kill_after = rng.uniform(*KILL_WINDOWS_S[round_ % 2])
            asyncio.run(_load_then_kill(fr, member, fed, kill_after, outcomes))
        # Restarted once more (it cuts a torn tail) and stopped cleanly (a last checkpoint).
        _start(fr)
        assert fr.stop() == 0
    finally:
        fr.stop()
    elapsed = time.monotonic() - started
    context = (
        f"seed {seed}, {len(outcomes.decided)} answered, {outcomes.unanswered} cut off by a "
        f"kill, {elapsed:.1f} s"
    )
    assert len(outcomes.decided) > ROUNDS * IN_FLIGHT, context

    verified = liaison("audit", "verify", "--config", str(fr.config_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr + context

    config = fr.config()
    path = config.audit.path
    logged = {
        entry["nonce"]: entry["decision"]
        for entry in map(json.loads, path.read_bytes().splitlines())
        if entry["method"] == "Match"
    }
    missing = outcomes.decided.keys() - logged.keys()
    assert not missing, f"{len(missing)} answered requests are not in the log ({context})"
    wrong = {n for n, d in outcomes.decided.items() if logged[n] != d}
    assert not wrong, f"{len(wrong)} answers are logged with another decision ({context})"

    # Every checkpoint is the node's, never smaller than the one before, and consistent with
    # the next: proofs from the final log against the roots the signed notes state.
    origin = audit_origin(config.node.federation, config.node.id)
    public = load_ed25519_private(config.trust.signing_key).public_key()
    verifier = checkpoints.Verifier.for_log(origin, public)
    signed = [
        checkpoints.verify_checkpoint(note, origin, verifier)
        for note in storage_checkpoints(FileStorage(path))
    ]
    sizes = [c.size for c in signed]
    assert sizes == sorted(sizes), sizes
    # About every other round signed one (and wrote it, or was killed writing it).
    assert len(set(sizes)) >= ROUNDS // 4, f"too few checkpoints: {sizes} ({context})"
    tree = merkle.TreeHasher(load_tree(path))
    assert sizes[-1] == tree.size  # the clean stop signed the log to its end
    for old, new in itertools.pairwise(signed):
        proof = tree.consistency_proof(old.size, new.size)
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
