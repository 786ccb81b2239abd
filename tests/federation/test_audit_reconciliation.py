"""10,000 mixed requests to a real node: its audit log, its metrics and what the client was
told all agree, request by request and counter by counter."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from federation.client import PeerClient, match_query, new_envelope
from federation.errors import InvalidRequest, PeerRefused
from federation.vocabulary import LegalBasis
from node.local.federation import Federation, NodeHandle
from tests.federation.helpers import clone_node, first

REQUESTS = 10_000
IN_FLIGHT = 32
ASKER = "DE-BKA"


@dataclass(frozen=True)
class Ask:
    purpose: str
    category: str
    identifiers: tuple[tuple[str, str], ...]
    decision: str  # as the audit log and the metrics name it
    reason: str = ""  # the one reason of a refusal
    hit: bool = False
    legal_basis: LegalBasis = LegalBasis.NONE


def _mix(fed: Federation) -> list[Ask]:
    """What DE-BKA asks FR-DGPN: allowed hits and no-hits, policy denials, invalid requests."""
    doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"])
    vin = str(first(fed, "FR-DGPN", "vehicle")["vin"])
    crime = "criminal_investigation"
    return [
        Ask(crime, "travel_document", (("document_number", doc),), "allow", hit=True),
        Ask(crime, "vehicle", (("vin", vin),), "allow", hit=True),
        Ask(
            "border_control",
            "vehicle",
            (("vin", vin),),
            "allow",
            hit=True,
            legal_basis=LegalBasis.BILATERAL_AGREEMENT,
        ),
        Ask(crime, "travel_document", (("document_number", "ZZ0000000NONE"),), "allow"),
        Ask(crime, "vehicle", (("vin", "ZZZZZZZZZZZZZZZZZ"),), "allow"),
        Ask("counter_terrorism", "vehicle", (("vin", vin),), "deny", "purpose_not_agreed"),
        Ask(crime, "firearm", (("serial_number", "SN123"),), "deny", "category_not_agreed"),
        Ask(crime, "missing_person", (("document_number", doc),), "deny", "category_not_agreed"),
        Ask(
            crime,
            "vehicle",
            (("vin", vin),),
            "deny",
            "legal_basis_not_agreed",
            legal_basis=LegalBasis.TREATY,
        ),
        Ask(crime, "spaceship", (("vin", vin),), "invalid", "category_unknown"),
        Ask(crime, "vehicle", (("vin", "@@@"),), "invalid", "identifier_invalid"),
        Ask(crime, "vehicle", (("document_number", doc),), "invalid", "identifier_kind_unknown"),
        Ask("curiosity", "vehicle", (("vin", vin),), "invalid", "purpose_unknown"),
    ]


@dataclass
class Told:
    """What the client was told: request nonces by decision, reasons, hits by category."""

    nonces: dict[str, set[str]] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)


async def _ask_all(fed: Federation, node: NodeHandle) -> Told:
    identity = fed.nodes[ASKER].identity()
    client = PeerClient.for_member(identity, fed.member("FR-DGPN"), endpoint=node.endpoint)
    mix = _mix(fed)
    told = Told()
    queue = iter(range(REQUESTS))

    async def worker() -> None:
        reasons: tuple[str, ...]
        for n in queue:
            ask = mix[n % len(mix)]
            env = new_envelope(ASKER, ask.purpose, legal_basis=ask.legal_basis)
            query = match_query(env, ask.category, ask.identifiers)
            try:
                answer = await client.match(query, timeout=30)
                decision, reasons = "allow", ()
                if answer.hit:
                    told.hits[ask.category] += 1
                assert answer.hit == ask.hit, ask
            except PeerRefused as exc:
                assert exc.status == "PERMISSION_DENIED", exc
                decision, reasons = "deny", exc.reasons
            except InvalidRequest as exc:
                assert exc.status == "INVALID_ARGUMENT", exc
                decision, reasons = "invalid", exc.reasons
            assert (decision, reasons) == (ask.decision, (ask.reason,) if ask.reason else ())
            told.nonces.setdefault(decision, set()).add(env.nonce.hex())
            told.reasons.update(reasons)

    try:
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    finally:
        await client.close()
    return told


def _samples(node: NodeHandle, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of one metric on the node's /metrics that counted something, by its
    labels (the series created at zero for each directory member say nothing happened)."""
    text = node.read_metrics()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and (sample.value or not sample.labels)
    }


def _by(entries: list[dict[str, object]], *keys: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Entries counted by some of their fields, keyed like `_samples`."""
    counts = Counter(tuple(sorted((k, str(e[k])) for k in keys)) for e in entries)
    return {labels: float(n) for labels, n in counts.items()}


def test_10000_requests_reconcile_client_audit_log_and_metrics(
    fed: Federation, tmp_path: Path
) -> None:
    fr = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN")
    fr.start()
    try:
        fr.wait_ready()
        told = asyncio.run(_ask_all(fed, fr))
        # Counted and audited before each answer was sent: final now.
        requests = _samples(fr, "liaison_requests_total")
        denials = _samples(fr, "liaison_denials_total")
        hits = _samples(fr, "liaison_hits_total")
        legal_bases = _samples(fr, "liaison_legal_basis_use_total")
        audited = _samples(fr, "liaison_audit_entries_total")
        tree_size = _samples(fr, "liaison_audit_tree_size")
        failures = _samples(fr, "liaison_audit_failures_total")
        entries = [json.loads(line) for line in fr.config().audit.path.read_bytes().splitlines()]
    finally:
        fr.stop()

    counts = {d: len(n) for d, n in told.nonces.items()}
    assert sum(counts.values()) == REQUESTS
    assert set(counts) == {"allow", "deny", "invalid"}, counts

    # The log: every Match the client was told about, under the decision it was told, and
    # nothing else but what other methods (GetDirectory from peers) account for.
    matches = [e for e in entries if e["method"] == "Match"]
    logged: dict[str, set[str]] = {}
    for e in matches:
        logged.setdefault(e["decision"], set()).add(e["nonce"])
    assert {d: len(n) for d, n in logged.items()} == counts
    assert logged == told.nonces
    assert len(matches) == REQUESTS
    others = Counter(e["method"] for e in entries if e["method"] != "Match")
    assert set(others) <= {"GetDirectory"}, others
    assert len(entries) == REQUESTS + others["GetDirectory"]
    assert Counter(r for e in matches for r in e["reasons"]) == told.reasons
    assert {e["peer"] for e in matches} == {ASKER}

    # The metrics: the same counts, by peer, method and decision, and by reason.
    assert requests == _by(entries, "peer", "method", "decision")
    assert {labels: v for labels, v in requests.items() if ("method", "Match") in labels} == {
        (("decision", d), ("method", "Match"), ("peer", ASKER)): float(n) for d, n in counts.items()
    }
    reasons = Counter((e["peer"], r) for e in entries for r in e["reasons"])
    assert denials == {
        (("peer", peer), ("reason", r)): float(n) for (peer, r), n in reasons.items()
    }
    assert hits == {(("category", c), ("peer", ASKER)): float(n) for c, n in told.hits.items()}
    assert legal_bases == _by(matches, "peer", "legal_basis")
    assert audited == {(): float(len(entries))}
    assert tree_size == {(): float(len(entries))}
    assert failures == {(): 0.0}
