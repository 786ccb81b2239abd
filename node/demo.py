"""`liaison demo`: three countries on loopback, a scripted set of federated queries, a table.

DE-BKA's investigator asks FR-DGPN and NL-KLPD. The agreements are chosen so that one run
shows a hit, a no-hit, and refusals by policy with their reasons.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federation.client import MatchTransport, PeerClient, match_query, new_envelope
from federation.fanout import match_all
from federation.model import MatchQuery
from node.federation_kit import Federation, build_federation
from node.querying import format_table, result_row

ASKER = "DE-BKA"
PEERS = ("FR-DGPN", "NL-KLPD")
WINDOW = {"valid_from": "2025-01-01", "valid_until": "2030-12-31"}
# Each owner's agreements with the peers that may ask it.
AGREEMENTS: dict[str, dict[str, Any]] = {
    "FR-DGPN": {
        "DE-BKA": {
            "categories": ["travel_document", "vehicle", "wanted_person"],
            "purposes": ["criminal_investigation", "border_control"],
            "methods": ["Match"],
            "legal_bases": ["none", "bilateral_agreement"],
            **WINDOW,
        }
    },
    "NL-KLPD": {
        "DE-BKA": {
            "categories": ["vehicle"],
            "purposes": ["criminal_investigation"],
            "methods": ["Match"],
            "legal_bases": ["none"],
            **WINDOW,
        }
    },
    "DE-BKA": {
        "FR-DGPN": {
            "categories": ["travel_document"],
            "purposes": ["border_control"],
            "methods": ["Match"],
            "legal_bases": ["none"],
            **WINDOW,
        }
    },
}


def _first(rows: list[dict[str, Any]], category: str) -> dict[str, Any]:
    return next(r for r in rows if r["category"] == category)


def scenarios(fed: Federation) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(title, purpose, category, identifiers): chosen from the records each node holds."""
    fr_doc = _first(fed.nodes["FR-DGPN"].rows, "travel_document")["document_number"]
    nl_vin = _first(fed.nodes["NL-KLPD"].rows, "vehicle")["vin"]
    return [
        (
            "a French passport, asked of all peers (written with spaces, lower case)",
            "criminal_investigation",
            "travel_document",
            [
                (
                    "document_number",
                    " ".join(fr_doc.lower()[i : i + 3] for i in range(0, len(fr_doc), 3)),
                )
            ],
        ),
        (
            "a document number nobody holds",
            "criminal_investigation",
            "travel_document",
            [("document_number", "ZZ0000000FAKE")],
        ),
        ("a Dutch vehicle by VIN", "criminal_investigation", "vehicle", [("vin", nl_vin)]),
        (
            "the same VIN, for a purpose no agreement covers",
            "counter_terrorism",
            "vehicle",
            [("vin", nl_vin)],
        ),
    ]


def _query_maker(
    purpose: str, category: str, identifiers: list[tuple[str, str]], case: str
) -> Callable[[MatchTransport], MatchQuery]:
    """Each peer gets its own envelope, so no two requests share a nonce."""

    def make(_peer: MatchTransport) -> MatchQuery:
        return match_query(new_envelope(ASKER, purpose, case_reference=case), category, identifiers)

    return make


async def _ask(fed: Federation) -> None:
    asker = fed.nodes[ASKER]
    identity = asker.identity()
    clients = [PeerClient.for_member(identity, fed.member(p)) for p in PEERS]
    try:
        for n, (title, purpose, category, identifiers) in enumerate(scenarios(fed), 1):
            results = await match_all(
                clients, _query_maker(purpose, category, identifiers, f"DEMO-{n}"), timeout=5.0
            )
            print(f"\n{n}. {ASKER} asks: {title}\n   purpose={purpose} category={category}")
            print("   " + format_table([result_row(r) for r in results]).replace("\n", "\n   "))
    finally:
        for c in clients:
            await c.close()


def run_demo(root: Path, *, keep: bool = False, records: int = 3000) -> int:
    root = root.resolve()
    print(f"Building a three-country federation in {root} ({records} synthetic records each)")
    fed = build_federation(root, (ASKER, *PEERS), AGREEMENTS, records=records)
    fed.start()
    try:
        for n in fed.nodes.values():
            print(f"  {n.node_id:<8} gRPC+mTLS {n.endpoint}   metrics http://{n.metrics}/metrics")
        asyncio.run(_ask(fed))
        print(f"\nAudit logs: {root}/<node>/audit.log   Node logs: {root}/<node>/node.log")
        if keep:
            print("Nodes stay up; press Ctrl-C to stop them.")
            stops = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stops)
            signal.sigwait(stops)
    finally:
        fed.stop()
    print("All nodes stopped.")
    return 0
