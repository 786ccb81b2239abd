"""Small helpers for the federation tests."""

from __future__ import annotations

import asyncio

from federation.client import ClientIdentity, PeerClient, match_query, new_envelope
from federation.model import MatchAnswer
from node.federation_kit import Federation


def ask(
    identity: ClientIdentity,
    fed: Federation,
    peer: str,
    category: str,
    identifiers: list[tuple[str, str]],
    purpose: str = "criminal_investigation",
    requester: str | None = None,
) -> MatchAnswer:
    async def run() -> MatchAnswer:
        client = PeerClient(identity, peer, fed.nodes[peer].endpoint)
        try:
            env = new_envelope(requester or identity.node_id, purpose, case_reference="T-1")
            return await client.match(match_query(env, category, identifiers), timeout=10.0)
        finally:
            await client.close()

    return asyncio.run(run())


def first(fed: Federation, node: str, category: str) -> dict[str, object]:
    return next(r for r in fed.nodes[node].rows if r["category"] == category)
