"""A node whose audit log cannot be written refuses to answer, and recovers when it can."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from federation.client import PeerClient, match_query, new_envelope
from federation.errors import PeerUnavailable
from federation.model import MatchQuery
from node.audit.file_store import FileStorage
from node.audit.verify import verify_log
from node.config import load_config
from node.local.federation import Federation
from node.rpc.server import start_node
from tests.federation.helpers import clone_node, first


def test_full_disk_refuses_with_audit_unavailable_and_discloses_nothing(
    fed: Federation, tmp_path: Path
) -> None:
    fr = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN", watch="false")
    folder, toml = fr.folder, fr.config_path
    doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"])
    identity = fed.nodes["DE-BKA"].identity()

    async def scenario() -> None:
        node = await start_node(load_config(toml))
        client = PeerClient.for_member(identity, fed.member("FR-DGPN"), endpoint=fr.endpoint)

        def query() -> MatchQuery:
            env = new_envelope("DE-BKA", "criminal_investigation")
            return match_query(env, "travel_document", [("document_number", doc)])

        try:
            assert (await client.match(query(), timeout=10)).hit
            storage = node.audit._storage
            assert isinstance(storage, FileStorage)
            good_fd = storage._fd
            storage._fd = os.open("/dev/full", os.O_WRONLY)  # a real ENOSPC
            with pytest.raises(PeerUnavailable) as err:
                await client.match(query(), timeout=10)
            assert err.value.reasons == ("audit_unavailable",)
            os.close(storage._fd)
            storage._fd = good_fd
            answer = await client.match(query(), timeout=10)
            assert node.audit.path is not None
            assert answer.hit and answer.audit_entry == _last_entry_id(node.audit.path)
            failures = node.metrics.registry.get_sample_value("liaison_audit_failures_total")
            assert failures == 1
        finally:
            await client.close()
            await node.stop(0)

    asyncio.run(scenario())
    assert verify_log(folder / "audit.log") == 2


def _last_entry_id(path: Path) -> str:
    return str(json.loads(path.read_bytes().splitlines()[-1])["id"])
