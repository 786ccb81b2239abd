"""Small helpers for the federation tests."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from federation.client import ClientIdentity, PeerClient, match_query, new_envelope
from federation.model import MatchAnswer
from node.local.federation import Federation, NodeHandle, free_port


def ask(
    identity: ClientIdentity,
    fed: Federation,
    peer: str,
    category: str,
    identifiers: list[tuple[str, str]],
    purpose: str = "criminal_investigation",
    requester: str | None = None,
    endpoint: str | None = None,
) -> MatchAnswer:
    async def run() -> MatchAnswer:
        client = PeerClient.for_member(identity, fed.member(peer), endpoint=endpoint)
        try:
            env = new_envelope(requester or identity.node_id, purpose, case_reference="T-1")
            return await client.match(match_query(env, category, identifiers), timeout=10.0)
        finally:
            await client.close()

    return asyncio.run(run())


def first(fed: Federation, node: str, category: str) -> dict[str, object]:
    return next(r for r in fed.nodes[node].rows if r["category"] == category)


def set_keys(text: str, section: str, keys: dict[str, str]) -> str:
    """`text` (a node.toml) with `keys` (TOML literals) set in `[section]`."""
    head, _, rest = text.partition(f"[{section}]\n")
    body, _, tail = rest.partition("\n[")
    lines = [line for line in body.splitlines() if line.split(" = ")[0] not in keys]
    lines += [f"{key} = {value}" for key, value in keys.items()]
    return head + f"[{section}]\n" + "\n".join(lines) + ("\n[" + tail if tail else "\n")


def clone_node(
    fed: Federation,
    node_id: str,
    folder: Path,
    trust: dict[str, str] | None = None,
    audit: dict[str, str] | None = None,
    witness: dict[str, str] | None = None,
    **policy: str,
) -> NodeHandle:
    """A copy of a federation node (same keys, records and agreements) on fresh ports, with
    an empty audit log (and no witness state); `policy`, `trust`, `audit` and `witness` set
    keys of those sections (TOML literals)."""
    source = fed.nodes[node_id]
    shutil.copytree(
        source.folder,
        folder,
        ignore=shutil.ignore_patterns(
            "audit.log", "*.log", "*.checkpoints", "*.witness.json", "directory.state", "*.sock"
        ),
    )
    endpoint, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    toml = folder / "node.toml"
    text = toml.read_text()
    text = text.replace(f'listen = "{source.endpoint}"', f'listen = "{endpoint}"')
    text = text.replace(f'metrics = "{source.metrics}"', f'metrics = "{metrics}"')
    text = set_keys(text, "policy", policy)
    text = set_keys(text, "audit", audit or {})
    text = set_keys(text, "witness", witness or {})
    toml.write_text(set_keys(text, "trust", trust or {}))
    return NodeHandle(node_id, folder, endpoint, metrics, source.rows)


def scrape(node: NodeHandle, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The sum of a metric's samples on a node's /metrics (read over TLS with the node's own
    certificate) that carry `labels`, or None if none does. A sum, because the indicators'
    series exist at zero for every directory member: `{"outcome": "accepted"}` matches one
    sample per peer."""
    wanted = (labels or {}).items()
    found = [
        float(sample.value)
        for family in text_string_to_metric_families(node.read_metrics())
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted)
    ]
    return sum(found) if found else None


def audit_entry(node: NodeHandle, entry_id: str) -> dict[str, object]:
    """The entry a node's answer or refusal names, from its audit log (durable before the
    answer was sent, so it is there)."""
    for line in (node.folder / "audit.log").read_text().splitlines():
        entry: dict[str, object] = json.loads(line)
        if entry["id"] == entry_id:
            return entry
    raise AssertionError(f"no audit entry {entry_id} in {node.node_id}'s log")
