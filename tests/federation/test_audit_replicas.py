"""Two replicas of one node (two real processes, one identity, two ports) keeping one audit
log in one real PostgreSQL: one chain, one tree, checkpoints from both that agree."""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from federation import checkpoints, merkle
from federation.checkpoints import audit_origin
from federation.client import PeerClient, match_query, new_envelope
from federation.errors import PeerUnavailable
from federation.model import MatchQuery
from federation.pki import load_ed25519_private
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb
from node.audit.database_store import DatabaseStorage
from node.audit.log import AuditLog
from node.audit.verify import load_storage_tree, verify_storage
from node.config import load_config
from node.local.federation import Federation, NodeHandle
from node.rpc.server import start_node
from tests.conftest import DatabaseAway
from tests.federation.helpers import ask, clone_node, set_keys
from tests.federation.test_cli import liaison
from tests.federation.test_signed_requests import _body, _send, _signed

pytestmark = pytest.mark.skipif(
    not os.environ.get("LIAISON_TEST_POSTGRES_URL"),
    reason="no PostgreSQL: set LIAISON_TEST_POSTGRES_URL (make test does)",
)


def _replica(fed: Federation, folder: Path, url: str) -> NodeHandle:
    """A copy of FR-DGPN whose audit log is in the database at `url`."""
    node = clone_node(fed, "FR-DGPN", folder, audit={"checkpoint_interval_s": "1"})
    toml = node.config_path.read_text().replace('path = "audit.log"\n', "")
    node.config_path.write_text(
        set_keys(toml, "audit", {"store": '"database"', "url": json.dumps(url)})
    )
    # A database of its own for the log: its schema is made as an operator makes it.
    upgraded = liaison("db", "upgrade", "--config", str(node.config_path))
    assert upgraded.returncode == 0, upgraded.stderr
    return node


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query))]
    finally:
        engine.dispose()


def test_two_replicas_answer_into_one_tree(
    fed: Federation, postgres_url: str, tmp_path: Path
) -> None:
    replicas = [_replica(fed, tmp_path / f"FR-{n}", postgres_url) for n in (1, 2)]
    config = replicas[0].config()
    assert config.audit.store == "database" and config.audit.url == postgres_url
    de = fed.nodes["DE-BKA"].identity()

    def ask_many(node: NodeHandle) -> list[str]:
        out = []
        for i in range(15):
            answer = ask(
                de,
                fed,
                "FR-DGPN",
                "vehicle",
                [("vin", f"NOPE{i:013d}")],
                endpoint=node.endpoint,
            )
            out.append(answer.audit_entry)
        return out

    for node in replicas:
        node.start(args=["--workers", "1"])  # each replica one process
    try:
        for node in replicas:
            node.wait_ready()
        with ThreadPoolExecutor(8) as pool:
            # Four callers per replica, all at once.
            answered = [
                entry
                for entries in pool.map(ask_many, [r for r in replicas for _ in range(4)])
                for entry in entries
            ]
        time.sleep(1.5)  # each replica signs a checkpoint of what it has seen
    finally:
        codes = [node.stop() for node in replicas]
    assert codes == [0, 0]

    lines = [str(r[0]) for r in _rows(postgres_url, "SELECT line FROM audit_entries ORDER BY seq")]
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    ids = [e["id"] for e in entries]
    assert len(set(ids)) == len(ids)
    assert len(answered) == 120 and set(answered) <= set(ids)

    origin = audit_origin(config.node.federation, config.node.id)
    public = load_ed25519_private(config.trust.signing_key).public_key()
    verifier = checkpoints.Verifier.for_log(origin, public)
    storage = DatabaseStorage(postgres_url, create=False)
    try:
        count, checked = verify_storage(storage, verifier, origin)
    finally:
        storage.close()
    assert count == len(entries) and checked >= 2
    signed = [
        checkpoints.verify_checkpoint(str(r[0]), origin, verifier)
        for r in _rows(postgres_url, "SELECT note FROM audit_checkpoints ORDER BY seq")
    ]
    assert signed[-1].size == count  # a stopping replica signs the log to its end
    log = AuditLog(DatabaseStorage(postgres_url))
    try:
        for old in signed:
            for new in signed:
                if old.size <= new.size:
                    proof = log.consistency_proof(old.size, new.size)
                    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    finally:
        asyncio.run(log.close())

    # The CLI on a replica's config: verify, prove an entry, sign by hand.
    toml = str(replicas[1].config_path)
    ok = liaison("audit", "verify", "--config", toml)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{count} entries" in ok.stdout and f"{checked} checkpoint(s)" in ok.stdout
    proved = liaison("audit", "prove", "--config", toml, str(count - 1))
    assert proved.returncode == 0, proved.stdout + proved.stderr
    doc = json.loads(proved.stdout)
    shown = checkpoints.verify_checkpoint(doc["checkpoint"], origin, verifier)
    proof = [bytes.fromhex(h) for h in doc["inclusion_proof"]]
    merkle.verify_inclusion(
        merkle.leaf_hash(doc["entry"].encode()), count - 1, shown.size, proof, shown.root
    )
    made = liaison("audit", "checkpoint", "--config", toml)
    assert made.returncode == 0, made.stdout + made.stderr
    assert checkpoints.verify_checkpoint(made.stdout, origin, verifier).size == count
    # An export of a range, for an overseer, checked with the node's public key alone.
    out = tmp_path / "export.json"
    exported = liaison(
        "audit", "export", "--config", toml, "--from", "10", "--to", "30", "--out", str(out)
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert [json.loads(e)["seq"] for e in json.loads(out.read_text())["entries"]] == list(
        range(10, 30)
    )
    key = public.public_bytes_raw().hex()
    checked_export = liaison("audit", "verify", "--export", str(out), "--public-key", key)
    assert checked_export.returncode == 0, checked_export.stdout + checked_export.stderr


def test_a_node_refuses_while_its_audit_database_is_away_and_recovers(
    fed: Federation, postgres_url: str, tmp_path: Path, database_away: DatabaseAway
) -> None:
    node_handle = _replica(fed, tmp_path / "FR", postgres_url)

    async def scenario() -> None:
        node = await start_node(load_config(node_handle.config_path))
        member = fed.member("FR-DGPN")
        client = PeerClient.for_member(
            fed.nodes["DE-BKA"].identity(), member, endpoint=node_handle.endpoint
        )

        def query() -> MatchQuery:
            env = new_envelope("DE-BKA", "criminal_investigation")
            return match_query(env, "vehicle", [("vin", "NOPE0000000000009")])

        try:
            first = await client.match(query(), timeout=10)
            # The database goes away: its sessions are cut and no new one is let in.
            with database_away(postgres_url), pytest.raises(PeerUnavailable) as err:
                await client.match(query(), timeout=10)
            assert err.value.reasons == ("audit_unavailable",)
            again = await client.match(query(), timeout=10)
            assert node.audit.find(again.audit_entry) == 1
            assert node.audit.find(first.audit_entry) == 0
            failures = node.metrics.registry.get_sample_value("liaison_audit_failures_total")
            assert failures == 1
        finally:
            await client.close()
            await node.stop(0)

    asyncio.run(scenario())
    storage = DatabaseStorage(postgres_url, create=False)
    try:
        assert load_storage_tree(storage).size == 2  # the chain checked from entry 0
    finally:
        storage.close()


def test_a_request_is_answered_once_across_replicas(
    fed: Federation, postgres_url: str, tmp_path: Path
) -> None:
    """The same signed request sent to both replicas at once, and again later: one answer
    in all; every other copy is refused as a replay, and every copy is audited."""
    replicas = [_replica(fed, tmp_path / f"FR-{n}", postgres_url) for n in (1, 2)]
    de = fed.nodes["DE-BKA"].identity()
    body = _body(fed)
    signature = _signed(de, body)
    nonce = pb.MatchRequest.FromString(body).envelope.nonce.hex()

    async def both(n: int) -> list[tuple[str, tuple[str, ...], bytes, bytes]]:
        sent = [_send(de, node.endpoint, body, signature, n=n) for node in replicas]
        return [r for results in await asyncio.gather(*sent) for r in results]

    for node in replicas:
        node.start(args=["--workers", "1"])  # each replica one process
    try:
        for node in replicas:
            node.wait_ready()
        results = asyncio.run(both(20)) + asyncio.run(both(1))
    finally:
        for node in replicas:
            node.stop()
    outcomes = [r[:2] for r in results]
    assert outcomes.count(("OK", ())) == 1, outcomes
    assert set(outcomes) == {("OK", ()), ("UNAUTHENTICATED", ("replayed",))}
    audited = [
        json.loads(str(line))
        for (line,) in _rows(postgres_url, "SELECT line FROM audit_entries ORDER BY seq")
    ]
    copies = [e for e in audited if e["nonce"] == nonce]
    assert len(copies) == len(results)  # every copy, answered or refused, is audited
    assert [e["decision"] for e in copies].count("allow") == 1
    assert all(e["reasons"] == ["replayed"] for e in copies if e["decision"] != "allow")
