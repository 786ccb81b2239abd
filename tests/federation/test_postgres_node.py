"""A real node process keeping its records in a real PostgreSQL (``make test`` starts one)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from federation.model import Identifier
from federation.pki import load_ed25519_private
from node.local.federation import Federation
from node.references import References
from node.store import RecordStore
from tests.federation.helpers import ask, clone_node, set_keys
from tests.federation.test_cli import liaison

# Checked before the session-wide federation starts; `make test` always sets it (and a
# session that requires PostgreSQL fails at its start without it).
pytestmark = pytest.mark.skipif(
    not os.environ.get("LIAISON_TEST_POSTGRES_URL"),
    reason="no PostgreSQL: set LIAISON_TEST_POSTGRES_URL (make test does)",
)


def session_states(url: str) -> list[str]:
    """The state of every other session on the database at ``url``."""
    store = RecordStore(url)
    try:
        with store.engine.connect() as conn:
            query = (
                "SELECT state FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [str(state) for state in conn.execute(text(query)).scalars()]
    finally:
        store.close()


def test_a_node_on_postgresql_answers_and_sees_later_imports(
    fed: Federation, postgres_url: str, tmp_path: Path
) -> None:
    fr = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN")
    (fr.folder / "records.db").unlink()  # the copied SQLite store must play no part
    fr.config_path.write_text(
        set_keys(fr.config_path.read_text(), "store", {"url": json.dumps(postgres_url)})
    )
    assert fr.config().store.url == postgres_url

    # Loaded the way an operator would: `liaison data import`, into PostgreSQL.
    imported = liaison(
        "data", "import", str(fr.folder / "records.jsonl"), "--config", str(fr.config_path)
    )
    assert imported.returncode == 0, imported.stderr
    store = RecordStore(postgres_url)
    try:
        assert store.engine.dialect.name == "postgresql"
        assert store.count() == len(fr.rows)
    finally:
        store.close()

    # A record DE-BKA may see (no source restriction), asked for with its owner's spelling.
    row = next(
        r
        for r in fr.rows
        if r["category"] == "travel_document" and not r.get("source_restrictions")
    )
    number = str(row["document_number"])
    late_number = "FRLATEFAKE0000001"
    fr.start()
    try:
        fr.wait_ready()
        de = fed.nodes["DE-BKA"].identity()

        def match(value: str) -> tuple[bool, tuple[str, ...]]:
            answer = ask(
                de,
                fed,
                "FR-DGPN",
                "travel_document",
                [("document_number", value)],
                endpoint=fr.endpoint,
            )
            return answer.hit, answer.record_refs

        hit, refs = match(number)
        assert hit and len(refs) == 1
        assert match("FRNOTHELD0000000") == (False, ())
        assert match(late_number) == (False, ())
        # The node's kept lookup connection is open now, in autocommit: a lookup leaves no
        # transaction open (it would hold locks and, under REPEATABLE READ, an old snapshot).
        states = session_states(postgres_url)
        assert states and "idle in transaction" not in states, states

        # Imported while the node runs, by another process: the next lookup must see it (the
        # kept lookup connection is in autocommit, so it holds no old snapshot).
        late = tmp_path / "late.jsonl"
        late.write_text(
            json.dumps(
                {
                    "category": "travel_document",
                    "document_number": late_number,
                    "document_type": "passport",
                    "status": "stolen",
                }
            )
            + "\n"
        )
        imported = liaison("data", "import", str(late), "--config", str(fr.config_path))
        assert imported.returncode == 0, imported.stderr
        hit, late_refs = match(late_number)
        assert hit and len(late_refs) == 1
        store = RecordStore(postgres_url)
        try:
            ident = [Identifier("document_number", late_number)]
            # The hit's reference is the stored ref, sealed for DE-BKA (node/references.py).
            sealing = References.for_signing_key(
                load_ed25519_private(fr.config().trust.signing_key)
            )
            now = datetime.now(UTC)
            opened = [sealing.open("DE-BKA", ref, now).stored_ref for ref in late_refs]
            assert store.find("travel_document", ident, 10) == opened
        finally:
            store.close()
    finally:
        assert fr.stop() == 0
