"""`liaison db` on real node folders and real `liaison serve` processes: the node refuses a
schema it does not expect and names the fix; a node backed up while it runs, wiped and
restored comes back as itself (its audit log verifies, a request seen before the backup is
still refused as a replay, peers are answered again)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from federation.client import ClientIdentity
from node.local.federation import Federation
from node.schema import head
from tests.federation.helpers import ask, clone_node, first
from tests.federation.test_cli import liaison
from tests.federation.test_signed_requests import _body, _send, _signed


def _sql(db: Path, statement: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(statement)


def test_serve_refuses_a_schema_it_does_not_expect_and_db_upgrade_fixes_it(
    fed: Federation, tmp_path: Path
) -> None:
    fr = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN")
    config, db = str(fr.config_path), fr.folder / "records.db"

    current = liaison("db", "current", "--config", config)
    assert current.returncode == 0 and f": {head()} (head)" in current.stdout
    history = liaison("db", "history")
    assert history.returncode == 0 and "<base> -> 0001" in history.stdout

    _sql(db, "UPDATE alembic_version SET version_num = 'f00dfeed'")
    served = liaison("serve", "--config", config)
    assert served.returncode == 2
    assert "this node's code is older than its database" in served.stderr
    assert "(revision f00dfeed" in served.stderr and "upgrade the node" in served.stderr
    assert liaison("db", "current", "--config", config).returncode == 1

    # As a database made before migrations: the tables, no revision.
    _sql(db, "DROP TABLE alembic_version")
    served = liaison("serve", "--config", config)
    assert served.returncode == 2
    assert "predates schema migrations" in served.stderr
    assert f"run `liaison db upgrade --config {fr.config_path}`" in served.stderr
    upgraded = liaison("db", "upgrade", "--config", config)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "its tables are those of revision 0001: recorded it at 0001" in upgraded.stdout
    assert liaison("db", "current", "--config", config).returncode == 0
    again = liaison("db", "upgrade", "--config", config)
    assert f"already at {head()}; nothing to do" in again.stdout


def test_a_node_backed_up_while_running_wiped_and_restored_comes_back_as_itself(
    fed: Federation, tmp_path: Path
) -> None:
    fr = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN", watch="false")
    de: ClientIdentity = fed.nodes["DE-BKA"].identity()
    doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"])
    archive = tmp_path / "fr.tar"
    body = _body(fed)
    fr.start()
    try:
        fr.wait_ready()
        [sent] = asyncio.run(_send(de, fr.endpoint, body, _signed(de, body)))
        assert sent[0] == "OK"
        hit = ask(
            de, fed, "FR-DGPN", "travel_document", [("document_number", doc)], endpoint=fr.endpoint
        )
        assert hit.hit
        backed = liaison("db", "backup", "--config", str(fr.config_path), "--out", str(archive))
        assert backed.returncode == 0, backed.stderr
        assert "holds the node's private keys" in backed.stdout
    finally:
        assert fr.stop() == 0
    assert archive.stat().st_mode & 0o777 == 0o600

    shutil.rmtree(fr.folder)  # the disk is lost
    restored = liaison("db", "restore", "--from", str(archive), "--into", str(fr.folder))
    assert restored.returncode == 0, restored.stderr
    assert "database" in restored.stdout and f"schema revision {head()}" in restored.stdout
    refused = liaison("db", "restore", "--from", str(archive), "--into", str(fr.folder))
    assert refused.returncode == 2 and "is not empty" in refused.stderr

    verified = liaison("audit", "verify", "--config", str(fr.config_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    fr.start()
    try:
        fr.wait_ready()
        # The same bytes, the same nonce, sent before the backup: still a replay.
        [again] = asyncio.run(_send(de, fr.endpoint, body, _signed(de, body)))
        assert again[:2] == ("UNAUTHENTICATED", ("replayed",))
        # Peers are answered again (its keys, certificate and records came back).
        answer = ask(
            de, fed, "FR-DGPN", "travel_document", [("document_number", doc)], endpoint=fr.endpoint
        )
        assert answer.hit
        fresh = _body(fed)
        assert asyncio.run(_send(de, fr.endpoint, fresh, _signed(de, fresh)))[0][0] == "OK"
    finally:
        assert fr.stop() == 0
    verified = liaison("audit", "verify", "--config", str(fr.config_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
