"""A bug in a handler is a refusal like any other: audited, counted, and told to the peer as
INTERNAL with a reason, never grpc's bare UNKNOWN carrying the exception's text.

The node runs in this process (so a fault can be injected into it) and is called by a real
peer client over real mTLS.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NoReturn

import pytest
from prometheus_client import CollectorRegistry

from federation.client import PeerClient, match_query, new_envelope
from federation.errors import PeerError
from federation.oversight import OversightClient
from node.config import load_config
from node.local.demo import AGREEMENTS
from node.local.federation import build_federation
from node.rpc.oversight import OversightHandlers
from node.rpc.server import start_node
from node.service import MatchService
from tests.federation.helpers import audit_entry


def _bug(*_: Any, **__: Any) -> NoReturn:
    raise RuntimeError("a bug, with a value that must not reach the peer: SECRET-42")


@pytest.mark.parametrize("call", ["Match", "GetCheckpoint"])
def test_a_handler_bug_is_refused_audited_and_counted(
    call: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = build_federation(tmp_path, ("DE-BKA", "FR-DGPN"), AGREEMENTS, records=5)
    fr, de = fed.nodes["FR-DGPN"], fed.nodes["DE-BKA"].identity()
    if call == "Match":
        monkeypatch.setattr(MatchService, "match", _bug)
    else:
        monkeypatch.setattr(OversightHandlers, "_get_checkpoint", _bug)
    registry = CollectorRegistry()

    async def scenario() -> PeerError:
        node = await start_node(load_config(fr.config_path), registry)
        try:
            with pytest.raises(PeerError) as err:
                if call == "Match":
                    client = PeerClient.for_member(de, fed.member("FR-DGPN"))
                    envelope = new_envelope("DE-BKA", "criminal_investigation")
                    query = match_query(envelope, "vehicle", [("vin", "WVWZZZ1JZXW000001")])
                    try:
                        await client.match(query, timeout=10.0)
                    finally:
                        await client.close()
                else:
                    async with OversightClient.for_member(de, fed.member("FR-DGPN")) as oversight:
                        await oversight.get_checkpoint(timeout=10.0)
            return err.value
        finally:
            await node.stop(0)

    error = asyncio.run(scenario())
    assert error.status == "INTERNAL"
    assert error.reasons == ("internal_error",)
    assert "SECRET-42" not in str(error)
    entry = audit_entry(fr, error.metadata["audit_entry"])
    assert (entry["peer"], entry["method"]) == ("DE-BKA", call)
    assert (entry["decision"], entry["reasons"]) == ("error", ["internal_error"])
    requests = registry.get_sample_value(
        "liaison_requests_total", {"peer": "DE-BKA", "method": call, "decision": "error"}
    )
    assert requests == 1
    denials = {"peer": "DE-BKA", "reason": "internal_error"}
    assert registry.get_sample_value("liaison_denials_total", denials) == 1
