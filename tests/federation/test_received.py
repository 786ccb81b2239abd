"""The investigator's side of Fetch as people run it (real node processes, real mTLS, the
real `liaison` command): DE-BKA's investigator matches, fetches, waits on a ticket FR-DGPN's
operator approves, collects the record once, and finds it in DE's received records with the
restrictions and retention that follow it; the running node deletes a record whose retention
ended, audited and counted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from federation.vocabulary import LegalBasis
from node.local.federation import Federation, NodeHandle, build_federation
from node.received import ReceivedStore
from tests.federation.helpers import audit_entry, scrape, set_keys
from tests.federation.test_fetch import AGREEMENTS, ASKER, OTHER, OWNER, RESTRICTIONS, SETTINGS

MLAT = ("--legal-basis", "mlat", "--legal-reference", "MLAT-2026-17")


def liaison(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """test_fetch.py's federation (FR-DGPN's operators approve every wanted person), DE-BKA
    purging its received records every second."""
    root = tmp_path_factory.mktemp("received-federation")
    federation = build_federation(root, (ASKER, OWNER, OTHER), AGREEMENTS, records=200)
    data = {"agreements": AGREEMENTS[OWNER], "restrictions": RESTRICTIONS, "settings": SETTINGS}
    (federation.nodes[OWNER].folder / "agreements.json").write_text(json.dumps(data, indent=2))
    toml = federation.nodes[ASKER].config_path
    toml.write_text(set_keys(toml.read_text(), "received", {"purge_interval_s": "1"}))
    federation.start()
    yield federation
    federation.stop()


def _received(node: NodeHandle) -> ReceivedStore:
    return ReceivedStore(node.config().store.url)


def _wanted(fed: Federation) -> dict[str, Any]:
    return next(
        r
        for r in fed.nodes[OWNER].rows
        if r["category"] == "wanted_person"
        and r.get("handling_code", "H0") in ("H0", "H1")
        and not r.get("source_restrictions")
    )


def _match(fed: Federation, row: dict[str, Any]) -> str:
    de = str(fed.nodes[ASKER].config_path)
    found = liaison(
        "query", "match", "--config", de, "--peer", OWNER, "--category", "wanted_person",
        "--purpose", "criminal_investigation", "--case", "CASE-2026-0042",
        "--family-name", str(row["family_name"]), "--given-names", str(row["given_names"]),
        "--date-of-birth", str(row["date_of_birth"]), "--json",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    [answer] = json.loads(found.stdout)
    assert answer["outcome"] == "hit", answer
    return str(answer["record_refs"][0])


def _fetch(fed: Federation, *target: str) -> subprocess.CompletedProcess[str]:
    return liaison(
        "query", "fetch", "--config", str(fed.nodes[ASKER].config_path), "--peer", OWNER,
        *target, "--purpose", "criminal_investigation", *MLAT,
        "--case-reference", "CASE-2026-0042", "--json",
    )  # fmt: skip


def test_match_fetch_ticket_approve_collect_once_and_keep(fed: Federation) -> None:
    de, fr = fed.nodes[ASKER], fed.nodes[OWNER]
    row = _wanted(fed)
    ref = _match(fed, row)

    asked = _fetch(fed, "--ref", ref)
    assert asked.returncode == 0, asked.stderr
    opened = json.loads(asked.stdout)
    assert opened["outcome"] == "ticket" and opened["peer"] == OWNER
    ticket = opened["ticket"]
    assert ticket["state"] == "pending" and ticket["deadline_at"]
    plain = liaison(
        "query", "ticket", "--config", str(de.config_path), "--peer", OWNER,
        "--ticket", ticket["id"],
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert "pending" in plain.stdout and ticket["id"] in plain.stdout
    assert _received_ids(de) == set()  # nothing disclosed, nothing kept

    approved = liaison(
        "tickets", "approve", ticket["id"], "--config", str(fr.config_path),
        "--operator", "officer-7", "--reason", "MLAT-2026-17 checked",
        "--redact", "nationality",
    )  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    polled = liaison(
        "query", "ticket", "--config", str(de.config_path), "--peer", OWNER,
        "--ticket", ticket["id"], "--json",
    )  # fmt: skip
    assert json.loads(polled.stdout)["state"] == "approved"

    collected = _fetch(fed, "--ticket", ticket["id"])
    assert collected.returncode == 0, collected.stderr
    got = json.loads(collected.stdout)
    assert got["outcome"] == "record"
    record = got["record"]
    assert record["category"] == "wanted_person" and record["withheld_fields"] == ["nationality"]
    assert "nationality" not in record["payload"]
    assert record["payload"]["family_name"] == row["family_name"]
    assert record["handling_code"] == row.get("handling_code", "H0")
    assert record["origin_country"] == "FR" and record["retention_days"] >= 1
    entry = audit_entry(fr, got["audit_entry"])
    assert entry["ticket"] == ticket["id"] and entry["peer"] == ASKER

    store = _received(de)
    try:
        kept = store.get(got["received_id"])
    finally:
        store.close()
    assert kept is not None
    assert (kept.from_node, kept.record_ref) == (OWNER, record["record_ref"])
    assert kept.handling_code == record["handling_code"] and kept.origin_country == "FR"
    assert kept.source_restrictions == () and kept.ticket_id == ticket["id"]
    assert kept.legal_basis is LegalBasis.MLAT and kept.legal_reference == "MLAT-2026-17"
    assert kept.purpose == "criminal_investigation" and kept.case_reference == "CASE-2026-0042"
    assert kept.payload == record["payload"]
    assert kept.retain_until - kept.received_at == timedelta(days=record["retention_days"])
    assert got["retain_until"] == kept.retain_until.isoformat(timespec="seconds")

    listed = liaison("received", "list", "--config", str(de.config_path), "--json")
    assert listed.returncode == 0, listed.stderr
    [mine] = [r for r in json.loads(listed.stdout) if r["id"] == kept.id]
    assert mine == {
        "id": kept.id,
        "from": OWNER,
        "category": "wanted_person",
        "handling_code": kept.handling_code,
        "received_at": kept.received_at.isoformat(timespec="seconds"),
        "retain_until": kept.retain_until.isoformat(timespec="seconds"),
    }
    table = liaison("received", "list", "--config", str(de.config_path))
    assert kept.id in table.stdout and str(row["family_name"]) not in table.stdout
    shown = liaison("received", "show", kept.id, "--config", str(de.config_path))
    assert shown.returncode == 0, shown.stderr
    assert str(row["family_name"]) in shown.stdout and "MLAT-2026-17" in shown.stdout
    assert ticket["id"] in shown.stdout and "WARNING" not in shown.stdout  # H0/H1, no source

    again = _fetch(fed, "--ticket", ticket["id"])
    assert again.returncode == 1, again.stderr
    refused = json.loads(again.stdout)
    assert refused["outcome"] == "refused" and refused["reasons"] == ["already_delivered"]
    assert audit_entry(fr, refused["audit_entry"])["reasons"] == ["already_delivered"]
    plain_again = liaison(
        "query", "fetch", "--config", str(de.config_path), "--peer", OWNER,
        "--ticket", ticket["id"], "--purpose", "criminal_investigation", *MLAT,
    )  # fmt: skip
    assert plain_again.returncode == 1, plain_again.stderr
    assert plain_again.stdout.startswith(f"refused by {OWNER}\n")
    assert "reasons: already_delivered" in " ".join(plain_again.stdout.split())
    assert _received_ids(de) == {kept.id}


def _received_ids(node: NodeHandle) -> set[str]:
    store = _received(node)
    try:
        store.create_schema()
        return {r.id for r in store.list(limit=1000)}
    finally:
        store.close()


def _inject(node: NodeHandle, *, age: timedelta, days: int, code: str, source: list[str]) -> str:
    """A received record written straight into the node's table, received `age` ago."""
    store = _received(node)
    try:
        return store.add(
            from_node=OTHER,
            record_ref="ref_injected",
            category="travel_document",
            payload={"document_number": "INJ-0001"},
            handling_code=code,
            source_restrictions=source,
            origin_country="NL",
            purpose="criminal_investigation",
            legal_basis=LegalBasis.BILATERAL_AGREEMENT,
            legal_reference="",
            case_reference="CASE-PURGE",
            retention_days=days,
            received_at=datetime.now(UTC) - age,
        ).id
    finally:
        store.close()


def test_a_restricted_record_is_shown_with_its_warning(fed: Federation) -> None:
    de = fed.nodes[ASKER]
    kept = _inject(de, age=timedelta(0), days=30, code="H2", source=["NL"])
    shown = liaison("received", "show", kept, "--config", str(de.config_path))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == (
        "WARNING: this record may not be passed on: handling code H2 and restricted by its "
        "source (NL)"
    )
    missing = liaison("received", "show", "rcv_nothing", "--config", str(de.config_path))
    assert missing.returncode == 2
    assert missing.stderr.strip() == "liaison: error: no received record rcv_nothing"


def test_the_running_node_purges_audits_and_counts(fed: Federation) -> None:
    de = fed.nodes[ASKER]
    before = scrape(de, "liaison_received_purged_total", {"peer": OTHER}) or 0.0
    keep = _inject(de, age=timedelta(0), days=30, code="H1", source=[])
    gone = _inject(de, age=timedelta(days=2), days=1, code="H1", source=[])
    deadline = time.monotonic() + 15
    while gone in _received_ids(de):
        assert time.monotonic() < deadline, "the purge job did not delete the record"
        time.sleep(0.2)
    assert keep in _received_ids(de)
    deadline = time.monotonic() + 15
    while not (entries := _purged(de)):
        assert time.monotonic() < deadline, "the purge was not audited"
        time.sleep(0.2)
    [entry] = [e for e in entries if e["case_reference"] == "CASE-PURGE"]
    assert (entry["peer"], entry["decision"], entry["reasons"]) == (OTHER, "allow", [])
    assert entry["category"] == "travel_document" and entry["legal_basis"] == "bilateral_agreement"
    assert "INJ-0001" not in (de.folder / "audit.log").read_text()
    assert scrape(de, "liaison_received_purged_total", {"peer": OTHER}) == before + 1

    # With the node running, the command leaves the purge to it.
    refused = liaison("received", "purge", "--config", str(de.config_path))
    assert refused.returncode == 2
    assert "is running: it deletes records past their retention every 1 s" in refused.stderr


def _purged(node: NodeHandle) -> list[dict[str, Any]]:
    lines = (node.folder / "audit.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("method") == "ReceivedPurge"]


def test_a_purge_with_no_node_running_is_audited_when_the_node_starts(fed: Federation) -> None:
    """Last: it stops DE-BKA and starts it again."""
    de = fed.nodes[ASKER]
    de.stop()
    before = len(_purged(de))
    gone = _inject(de, age=timedelta(days=3), days=1, code="H1", source=[])
    done = liaison("received", "purge", "--config", str(de.config_path))
    assert done.returncode == 0, done.stderr
    assert f"purged {gone} from {OTHER}" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == (
        "1 received record(s) purged; no node was running, so each deletion is audited when "
        "the node next starts"
    )
    assert gone not in _received_ids(de)
    assert len(_purged(de)) == before
    de.start()
    try:
        de.wait_ready()
        deadline = time.monotonic() + 15
        while len(entries := _purged(de)) == before:
            assert time.monotonic() < deadline, "the purge was not audited at start"
            time.sleep(0.2)
        assert len(entries) == before + 1 and entries[-1]["peer"] == OTHER
    finally:
        de.stop()
    verified = liaison("audit", "verify", "--config", str(de.config_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
