"""A node process deciding through a real OPA server sidecar, and failing closed without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation.errors import PeerUnavailable
from node.local.federation import Federation
from node.policy.opa_process import start_opa
from tests.federation.helpers import ask, clone_node, first, scrape


def test_opa_engine_decides_and_fails_closed_when_opa_is_gone(
    fed: Federation, tmp_path: Path
) -> None:
    opa = start_opa()
    try:
        fr = clone_node(
            fed,
            "FR-DGPN",
            tmp_path / "FR-DGPN",
            engine='"opa"',
            opa_url=f'"{opa.url}"',
            watch="false",
        )
        fr.start()
        try:
            fr.wait_ready()
            de = fed.nodes["DE-BKA"].identity()
            doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"])
            answer = ask(
                de,
                fed,
                "FR-DGPN",
                "travel_document",
                [("document_number", doc)],
                endpoint=fr.endpoint,
            )
            assert answer.hit
            labels = {"engine": "opa", "result": "allow"}
            assert scrape(fr, "liaison_policy_decisions_total", labels) == 1

            opa.stop()
            vin = str(first(fed, "FR-DGPN", "vehicle")["vin"])  # not a cached decision
            with pytest.raises(PeerUnavailable) as err:
                ask(de, fed, "FR-DGPN", "vehicle", [("vin", vin)], endpoint=fr.endpoint)
            assert err.value.reasons == ("policy_unavailable",)
            labels = {"engine": "opa", "result": "unavailable"}
            assert scrape(fr, "liaison_policy_decisions_total", labels) == 1
            assert scrape(fr, "liaison_denials_total", {"reason": "policy_unavailable"}) == 1
            last = json.loads((fr.folder / "audit.log").read_text().splitlines()[-1])
            assert (last["decision"], last["reasons"]) == ("error", ["policy_unavailable"])
        finally:
            fr.stop()
    finally:
        opa.stop()


def test_a_node_whose_opa_is_down_at_start_says_so(fed: Federation, tmp_path: Path) -> None:
    from tests.federation.test_cli import liaison

    fr = clone_node(
        fed, "FR-DGPN", tmp_path / "FR-DGPN", engine='"opa"', opa_url='"http://127.0.0.1:9"'
    )
    result = liaison("serve", "--config", str(fr.config_path), timeout=60)
    assert result.returncode == 2
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr
