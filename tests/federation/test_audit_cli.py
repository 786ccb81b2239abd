"""`liaison audit checkpoint / prove / verify` on a running node's audit log."""

from __future__ import annotations

import json
import time
from pathlib import Path

from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from federation.pki import load_ed25519_private
from node.audit.file_store import FileStorage, checkpoints_path
from node.audit.verify import storage_checkpoints, verify_log_and_checkpoints
from node.local.federation import Federation
from tests.federation.helpers import ask, clone_node
from tests.federation.test_cli import liaison


def test_checkpoint_prove_and_verify_a_live_log(fed: Federation, tmp_path: Path) -> None:
    de = fed.nodes["DE-BKA"].identity()
    # A node of its own, that signs no checkpoint by itself during the test.
    fr = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN", audit={"checkpoint_interval_s": "3600"})
    fr.start()
    fr.wait_ready()
    config = fr.config()
    for _ in range(3):
        ask(
            de,
            fed,
            "FR-DGPN",
            "travel_document",
            [("document_number", "NOPE0001")],
            endpoint=fr.endpoint,
        )
    toml = str(fr.config_path)
    checkpoints_file = checkpoints_path(config.audit.path)
    assert not checkpoints_file.exists()
    try:
        made = liaison("audit", "checkpoint", "--config", toml)
        assert made.returncode == 0, made.stdout + made.stderr
        origin = audit_origin(config.node.federation, config.node.id)
        public = load_ed25519_private(config.trust.signing_key).public_key()
        verifier = checkpoints.Verifier.for_log(origin, public)
        checkpoint = checkpoints.verify_checkpoint(made.stdout, origin, verifier)
        assert checkpoint.size >= 3
        assert checkpoints_file.read_text() == made.stdout + "\n"

        proved = liaison("audit", "prove", "--config", toml, "0")
        assert proved.returncode == 0, proved.stdout + proved.stderr
        doc = json.loads(proved.stdout)
        # What an overseer does with the node's public key alone.
        assert checkpoints.Verifier.from_vkey(doc["verifier_key"]) == verifier
        shown = checkpoints.verify_checkpoint(doc["checkpoint"], origin, verifier)
        assert shown == checkpoint and doc["tree_size"] == checkpoint.size
        leaf = merkle.leaf_hash(doc["entry"].encode())
        assert leaf.hex() == doc["leaf_hash"] and doc["index"] == 0
        proof = [bytes.fromhex(h) for h in doc["inclusion_proof"]]
        merkle.verify_inclusion(leaf, 0, shown.size, proof, shown.root)
        assert json.loads(doc["entry"])["seq"] == 0

        beyond = liaison("audit", "prove", "--config", toml, str(10**6))
        assert beyond.returncode == 2 and "has no entry" in beyond.stderr
        # By the id an answer named, as well as by index.
        entry_id = json.loads(doc["entry"])["id"]
        by_id = liaison("audit", "prove", "--config", toml, entry_id)
        assert by_id.returncode == 0, by_id.stdout + by_id.stderr
        assert json.loads(by_id.stdout)["entry"] == doc["entry"]
        unknown = liaison("audit", "prove", "--config", toml, "f" * 32)
        assert unknown.returncode == 2 and "no entry with id" in unknown.stderr
        garbled = liaison("audit", "prove", "--config", toml, "entry-7")
        assert garbled.returncode == 2 and "neither an entry index" in garbled.stderr

        ok = liaison("audit", "verify", "--config", toml)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "1 checkpoint(s)" in ok.stdout

        hexkey = public.public_bytes_raw().hex()
        by_key = liaison(
            "audit",
            "verify",
            "--log",
            str(config.audit.path),
            "--public-key",
            hexkey,
            "--origin",
            origin,
        )
        assert by_key.returncode == 0, by_key.stdout + by_key.stderr
        stranger = load_ed25519_private(fed.nodes["DE-BKA"].config().trust.signing_key)
        wrong = liaison(
            "audit",
            "verify",
            "--config",
            toml,
            "--public-key",
            stranger.public_key().public_bytes_raw().hex(),
        )
        assert wrong.returncode == 2
        assert "checkpoint 0" in wrong.stdout and "does not verify" in wrong.stdout
    finally:
        fr.stop()


def test_the_running_node_signs_checkpoints_by_itself(fed: Federation, tmp_path: Path) -> None:
    fr = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN", audit={"checkpoint_interval_s": "1"})
    fr.start()
    try:
        fr.wait_ready()
        for _ in range(3):
            ask(
                fed.nodes["DE-BKA"].identity(),
                fed,
                "FR-DGPN",
                "vehicle",
                [("vin", "NOPE0000000000001")],
                endpoint=fr.endpoint,
            )
        config = fr.config()
        origin = audit_origin(config.node.federation, config.node.id)
        public = load_ed25519_private(config.trust.signing_key).public_key()
        verifier = checkpoints.Verifier.for_log(origin, public)
        stored = FileStorage(config.audit.path)

        def signed_size() -> int:
            signed = storage_checkpoints(stored)
            return checkpoints.verify_checkpoint(signed[-1], origin, verifier).size if signed else 0

        # A tick may fall between the calls and sign 1 or 2 entries first: wait for the
        # checkpoint of all three (the clone's log holds nothing else).
        deadline = time.monotonic() + 15
        while signed_size() < 3:
            assert time.monotonic() < deadline, "the node signed no checkpoint of its 3 entries"
            time.sleep(0.1)
        assert signed_size() == 3
    finally:
        fr.stop()
    # Stopped, it has signed its log to the end, and everything verifies from entry 0.
    entries, count = verify_log_and_checkpoints(config.audit.path, verifier, origin)
    last = checkpoints.verify_checkpoint(storage_checkpoints(stored)[-1], origin, verifier)
    assert last.size == entries and count >= 1
