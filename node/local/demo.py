"""`liaison demo`: three countries on loopback, a scripted set of federated queries, a table.

DE-BKA's investigator asks FR-DGPN and NL-KLPD. The agreements are chosen so that one run
shows a hit, a no-hit, and refusals by policy with their reasons. Then DE-BKA fetches the
record behind its first hit under an MLAT: FR-DGPN's policy wants a person to approve it, so
FR's operator does, over FR's admin socket, and the record arrives without what FR's
agreement withholds. Then an oversight body
checks every node's audit log as an overseer would: the node's signed checkpoint, the
cosignatures of the peers that witness it, and a proof that the first question's entry is
in the log, with nothing but public keys from the directory. Last, FR-DGPN's operator
writes the compliance report of its node (`liaison report`) from its verified audit log.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from federation import checkpoints
from federation.client import MatchTransport, PeerClient, match_query, new_envelope
from federation.errors import LiaisonError
from federation.fanout import match_all
from federation.model import FetchQuery, MatchQuery
from federation.pki import public_key_from_text
from federation.vocabulary import LegalBasis
from node.atomic_write import write_atomically
from node.audit.witness_state import witness_name
from node.cli.oversight import load_overseer
from node.cli.query_match import format_table, result_row
from node.local.federation import Federation, build_federation
from node.report.html import to_html
from node.report.source import indicators_from_log
from node.rpc.admin_client import AdminClient

ASKER = "DE-BKA"
PEERS = ("FR-DGPN", "NL-KLPD")
OVERSEER = "EU-EDPS"
# How often the demo's nodes witness each other, and how long the overseer waits for a
# checkpoint cosigned by every peer (a witnessing round or two).
WITNESS_INTERVAL_S = 1
COSIGNED_WITHIN_S = 20.0
WINDOW = {"valid_from": "2025-01-01", "valid_until": "2030-12-31"}
# Each owner's agreements with the peers that may ask it.
AGREEMENTS: dict[str, dict[str, Any]] = {
    "FR-DGPN": {
        "DE-BKA": {
            "categories": ["travel_document", "vehicle", "wanted_person"],
            "purposes": ["criminal_investigation", "border_control"],
            "methods": ["Match", "Fetch"],
            "legal_bases": ["none", "bilateral_agreement", "mlat"],
            # FR's own file number for the record stays in France.
            "redact": {"travel_document": ["reference"]},
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

# FR-DGPN's operators approve every travel document it discloses (its policy data's
# `restrictions`), so question 5 opens a ticket.
POLICY_DATA: dict[str, dict[str, Any]] = {
    "FR-DGPN": {
        "restrictions": {"blocked_countries": [], "approval_categories": ["travel_document"]}
    }
}
OWNER = "FR-DGPN"
MLAT_REFERENCE = "MLAT-DE-FR-2026-0042"
OPERATOR = "fr-duty-officer"


def _first(rows: list[dict[str, Any]], category: str) -> dict[str, Any]:
    return next(r for r in rows if r["category"] == category)


def _passport(fed: Federation) -> dict[str, Any]:
    """A French passport that question 5 may fetch: no source restriction, and a marking
    (H0 or H1) that does not itself send it to a person, so that FR's own rule does."""
    return next(
        r
        for r in fed.nodes[OWNER].rows
        if r.get("document_type") == "passport"
        and not r.get("source_restrictions")
        and r.get("handling_code", "H0") in ("H0", "H1")
    )


def scenarios(fed: Federation) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(title, purpose, category, identifiers): chosen from the records each node holds."""
    fr_doc = _passport(fed)["document_number"]
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


async def _ask(fed: Federation) -> tuple[dict[str, str], list[str]]:
    """Ask the scripted questions: the audit entry each peer named for the first one, and
    the references FR-DGPN's hit returned."""
    asker = fed.nodes[ASKER]
    identity = asker.identity()
    clients = [PeerClient.for_member(identity, fed.member(p)) for p in PEERS]
    named: dict[str, str] = {}
    refs: list[str] = []
    try:
        for n, (title, purpose, category, identifiers) in enumerate(scenarios(fed), 1):
            results = await match_all(
                clients, _query_maker(purpose, category, identifiers, f"DEMO-{n}"), timeout=5.0
            )
            print(f"\n{n}. {ASKER} asks: {title}\n   purpose={purpose} category={category}")
            rows = [result_row(r) for r in results]
            print("   " + format_table(rows).replace("\n", "\n   "))
            if n == 1:
                named = {str(r["peer"]): str(r.get("audit_entry") or "") for r in rows}
                refs = next(list(r.get("record_refs", [])) for r in rows if r["peer"] == OWNER)
    finally:
        for c in clients:
            await c.close()
    return named, refs


def _approve(fed: Federation, ticket_id: str) -> None:
    """As FR-DGPN's operator, on FR's admin socket (what `liaison tickets approve` does)."""
    with AdminClient(fed.nodes[OWNER].config().admin.socket) as admin:
        admin.approve(ticket_id, OPERATOR, f"{MLAT_REFERENCE} checked against the case file")


async def _fetch(fed: Federation, record_ref: str) -> list[dict[str, object]]:
    """Fetch under the MLAT, have FR's operator approve the ticket, collect the record: the
    ticket's and the record's rows, then a row per payload field (withheld ones named), by
    the name an operator's `liaison tickets approve --redact` takes."""
    client = PeerClient.for_member(fed.nodes[ASKER].identity(), fed.member(OWNER))

    def query(**target: str) -> FetchQuery:
        envelope = new_envelope(
            ASKER,
            "criminal_investigation",
            legal_basis=LegalBasis.MLAT,
            legal_reference=MLAT_REFERENCE,
            case_reference="DEMO-1",
        )
        return FetchQuery(envelope, **target)

    try:
        opened = (await client.fetch(query(record_ref=record_ref), timeout=5.0)).ticket
        if opened is None or opened.state != "pending":
            raise RuntimeError(f"{OWNER} was expected to open a ticket, not to answer {opened}")
        hours = (opened.deadline_at - opened.created_at).total_seconds() / 3600
        print(f"   {OWNER} opens ticket {opened.ticket_id}: pending, due within {hours:g} h")
        await asyncio.to_thread(_approve, fed, opened.ticket_id)
        print(f"   {OPERATOR} approves it on {OWNER}'s admin socket")
        status = await client.get_ticket(opened.ticket_id, timeout=5.0)
        record = (await client.fetch(query(ticket_id=opened.ticket_id), timeout=5.0)).record
        if record is None or status.decided_at is None:
            raise RuntimeError(f"the approved ticket {opened.ticket_id} delivered no record")
    finally:
        await client.close()
    decided = (status.decided_at - status.created_at).total_seconds()
    payload = json.loads(record.payload_json)
    rows: list[dict[str, object]] = [
        {"field": "ticket", "value": f"{status.ticket_id} ({status.state})"},
        {"field": "time to decision", "value": f"{decided:.2f} s of the {hours:g} h allowed"},
        {"field": "handling code", "value": record.handling_code},
        {"field": "retention", "value": f"{record.retention_days} days"},
    ]
    rows += [
        {"field": k, "value": v if isinstance(v, str) else json.dumps(v)}
        for k, v in sorted(payload.items())
    ]
    rows += [{"field": k, "value": "(withheld)"} for k in record.withheld_fields]
    return rows


async def _oversee(fed: Federation, entries: Mapping[str, str]) -> list[dict[str, object]]:
    """What the overseer checks of each node's log, all verified with directory keys."""
    overseer = load_overseer(fed.root / OVERSEER, fed.root / "directory.json")
    federation = overseer.directory.federation
    rows: list[dict[str, object]] = []
    for node in (ASKER, *PEERS):
        witnesses = [p for p in (ASKER, *PEERS) if p != node]
        verifiers = {
            w: checkpoints.Verifier.for_witness(
                witness_name(federation, w),
                public_key_from_text(fed.member(w).signing_public_key),
            )
            for w in witnesses
        }
        async with overseer.client(node, None) as client:
            deadline = time.monotonic() + COSIGNED_WITHIN_S
            while True:  # the checkpoint verified with the node's key, then its cosigners
                try:
                    checkpoint, note = await client.get_checkpoint()
                except LiaisonError as exc:
                    # A log no peer has yet called (DE-BKA only asks) has nothing to sign:
                    # the refusal is itself an entry, so asking again gets a checkpoint.
                    if exc.reasons != ("no_checkpoint",) or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
                    continue
                cosigned = [w for w, v in verifiers.items() if _cosigned(note, v)]
                if len(cosigned) == len(witnesses) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            row: dict[str, object] = {
                "node": node,
                "tree size": checkpoint.size,
                "signed by node": "verified",
                "cosigned by": ", ".join(cosigned) or "none yet",
                "question 1 entry": "-",
            }
            if entries.get(node):
                proven = await client.get_inclusion_proof(entries[node], checkpoint)
                row["question 1 entry"] = f"index {proven.index}, proven"
        rows.append(row)
    return rows


def _table(rows: list[dict[str, object]]) -> str:
    """Rows as aligned columns, headed by their keys."""
    lines = [[key.upper() for key in rows[0]], *([str(v) for v in row.values()] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _cosigned(note: str, witness: checkpoints.Verifier) -> bool:
    try:
        checkpoints.verify_cosignature(note, witness)
    except checkpoints.NoteError:
        return False
    return True


def _report(fed: Federation) -> Path:
    """FR-DGPN's compliance report for this month, as `liaison report` writes it."""
    now = datetime.now(UTC)
    since = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ind, verified = indicators_from_log(
        fed.nodes[OWNER].config(), since, now + timedelta(seconds=1), "month"
    )
    statement = (
        f"{verified.entries} entries, the chain intact from entry 0; {verified.checkpoints} "
        f"checkpoint(s) of {verified.origin} verified with the node's key"
    )
    path = fed.root / f"{OWNER}-report.html"
    write_atomically(path, to_html(ind, {"statement": statement}).encode())
    print("   " + statement.replace("; ", ";\n   ", 1))
    return path


def run_demo(root: Path, *, keep: bool = False, records: int = 3000) -> int:
    root = root.resolve()
    print(f"Building a three-country federation in {root} ({records} synthetic records each)")
    fed = build_federation(
        root,
        (ASKER, *PEERS),
        AGREEMENTS,
        records=records,
        overseers=(OVERSEER,),
        witness_interval_s=WITNESS_INTERVAL_S,
        policy_data=POLICY_DATA,
    )
    fed.start()
    try:
        for n in fed.nodes.values():
            print(f"  {n.node_id:<8} gRPC+mTLS {n.endpoint}   metrics https://{n.metrics}/metrics")
        who = fed.root / OVERSEER
        print(
            f"  /metrics answers overseers (and the node itself) over TLS, e.g.\n"
            f"    curl --cacert {who}/ca.crt --cert {who}/tls.crt --key {who}/tls.key "
            f"https://{fed.nodes[ASKER].metrics}/metrics"
        )
        entries, refs = asyncio.run(_ask(fed))
        print(
            f"\n5. {ASKER} fetches the French passport of question 1 under {MLAT_REFERENCE};\n"
            f"   {OWNER}'s policy requires a person's approval first"
        )
        record_rows = asyncio.run(_fetch(fed, refs[0]))
        print("   " + _table(record_rows).replace("\n", "\n   "))
        print(
            f"\n6. {OVERSEER} (an overseer) checks each node's audit log: its signed "
            "checkpoint,\n   the peers' cosignatures, and the entry of question 1"
        )
        rows = asyncio.run(_oversee(fed, entries))
        print("   " + _table(rows).replace("\n", "\n   "))
        print(f"\n7. {OWNER}'s operator writes the compliance report of its node (liaison report)")
        print(f"   report: {_report(fed)} (open it in a browser, or print it)")
        print(f"\nAudit logs: {root}/<node>/audit.log   Node logs: {root}/<node>/node.log")
        if keep:
            # Flushed: printed into a pipe or a file, the lines above would otherwise wait
            # for the exit, and the person running it would not see the nodes are up.
            print("Nodes stay up; press Ctrl-C to stop them.", flush=True)
            stops = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stops)
            signal.sigwait(stops)
    finally:
        fed.stop()
    print("All nodes stopped.")
    return 0
