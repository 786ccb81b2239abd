"""Re-sharing across real node processes over real mTLS: what a node received stays under its
owner's rules when a third country asks for it.

DE-BKA owns four travel documents (H2; H0; H0 its source keeps from NL; H1 its source keeps
from BE). FR-DGPN matches and fetches all four from DE-BKA with the real `liaison query`
command, which keeps each in FR's received records. Then NL-KLPD asks FR-DGPN: the H2
record and the source-restricted one are hits (existence is not what they restrict) but
are refused on Fetch; the H0 record is delivered with its origin DE and kept by NL as
DE's; the record whose source keeps it from NL is not even a hit. DE-BKA asking FR-DGPN gets
no hit for its own records. Purging FR's received records takes the hits away.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from federation.client import ClientIdentity, PeerClient, new_envelope
from federation.errors import InvalidRequest, PeerRefused
from federation.model import FetchAnswer, FetchQuery
from federation.vocabulary import LegalBasis
from node.local.demo import WINDOW
from node.local.federation import Federation, NodeHandle, build_federation
from node.normalise import record_identifiers
from node.received import ReceivedRecord, ReceivedStore
from node.records import NewRecord
from node.store import RecordStore, new_ref
from tests.federation.helpers import ask, audit_entry

DE, FR, NL = "DE-BKA", "FR-DGPN", "NL-KLPD"
CATEGORY = "travel_document"
CASE = "CASE-2026-0815"
BASIS = ("--legal-basis", "bilateral_agreement")
# Each owner's agreements: FR-DGPN may match and fetch DE-BKA's travel documents; NL-KLPD
# may match and fetch FR-DGPN's, and DE-BKA may match them.
TRAVEL = {
    "categories": [CATEGORY],
    "purposes": ["criminal_investigation"],
    "legal_bases": ["none", "bilateral_agreement"],
    **WINDOW,
}
AGREEMENTS: dict[str, dict[str, Any]] = {
    DE: {FR: {**TRAVEL, "methods": ["Match", "Fetch"]}},
    FR: {
        NL: {**TRAVEL, "methods": ["Match", "Fetch"]},
        DE: {**TRAVEL, "methods": ["Match"]},
    },
}
# DE-BKA's records this test is about: document number -> (handling code, restrictions).
RECORDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "RS-H2-0001": ("H2", ()),
    "RS-H0-0002": ("H0", ()),
    "RS-NL-0003": ("H0", ("NL",)),
    "RS-BE-0004": ("H1", ("BE",)),
}
H2, H0, KEPT_FROM_NL, KEPT_FROM_BE = RECORDS


def liaison(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _own_records(node: NodeHandle) -> None:
    """DE-BKA's four records, imported before it starts; identifiers derived as the
    importer derives them."""
    records = []
    for number, (code, restrictions) in RECORDS.items():
        payload = {"document_number": number, "status": "valid", "issuing_country": "DE"}
        identifiers, problems = record_identifiers(CATEGORY, payload)
        assert problems == ()
        records.append(NewRecord(new_ref(), CATEGORY, code, restrictions, identifiers, payload))
    store = RecordStore(node.config().store.url)
    try:
        store.add_records(records)
    finally:
        store.close()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("reshare-federation")
    federation = build_federation(root, (DE, FR, NL), AGREEMENTS, records=50)
    _own_records(federation.nodes[DE])
    federation.start()
    yield federation
    federation.stop()


def _match(fed: Federation, asker: str, peer: str, number: str) -> list[str]:
    answer = ask(fed.nodes[asker].identity(), fed, peer, CATEGORY, [("document_number", number)])
    assert answer.responder == peer
    return list(answer.record_refs)


def _fetch_and_keep(fed: Federation, asker: str, peer: str, ref: str) -> dict[str, Any]:
    """`liaison query fetch` as the asker's investigator runs it: the record is kept in the
    asker's received records."""
    done = liaison(
        "query", "fetch", "--config", str(fed.nodes[asker].config_path), "--peer", peer,
        "--ref", ref, "--purpose", "criminal_investigation", *BASIS,
        "--case-reference", CASE, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    got: dict[str, Any] = json.loads(done.stdout)
    assert got["outcome"] == "record", got
    return got


def _fetch(who: ClientIdentity, fed: Federation, peer: str, ref: str) -> FetchAnswer:
    async def run() -> FetchAnswer:
        client = PeerClient.for_member(who, fed.member(peer))
        try:
            env = new_envelope(
                who.node_id,
                "criminal_investigation",
                legal_basis=LegalBasis.BILATERAL_AGREEMENT,
                case_reference=CASE,
            )
            return await client.fetch(FetchQuery(env, record_ref=ref), timeout=10.0)
        finally:
            await client.close()

    return asyncio.run(run())


def _received(node: NodeHandle) -> ReceivedStore:
    return ReceivedStore(node.config().store.url)


def _kept(node: NodeHandle, received_id: str) -> ReceivedRecord:
    store = _received(node)
    try:
        kept = store.get(received_id)
    finally:
        store.close()
    assert kept is not None
    return kept


@pytest.fixture(scope="module")
def at_fr(fed: Federation) -> dict[str, ReceivedRecord]:
    """FR-DGPN matches and fetches each of DE-BKA's four records and keeps them."""
    kept = {}
    for number, (code, restrictions) in RECORDS.items():
        [ref] = _match(fed, FR, DE, number)
        got = _fetch_and_keep(fed, FR, DE, ref)
        record = got["record"]
        assert (record["handling_code"], record["origin_country"]) == (code, "DE")
        assert tuple(record["source_restrictions"]) == restrictions
        kept[number] = _kept(fed.nodes[FR], got["received_id"])
    return kept


def test_fr_keeps_what_it_received_under_des_rules(at_fr: dict[str, ReceivedRecord]) -> None:
    for number, (code, restrictions) in RECORDS.items():
        kept = at_fr[number]
        assert (kept.from_node, kept.origin_country) == (DE, "DE")
        assert (kept.handling_code, kept.source_restrictions) == (code, restrictions)
        assert kept.legal_basis is LegalBasis.BILATERAL_AGREEMENT and kept.case_reference == CASE
        assert [i.kind for i in kept.identifiers] == ["document_number"]
        assert kept.retain_until - kept.received_at == timedelta(days=90)


def test_the_owner_gets_no_hit_for_its_own_records_at_fr(
    fed: Federation, at_fr: dict[str, ReceivedRecord]
) -> None:
    for number in RECORDS:
        assert _match(fed, DE, FR, number) == []


def test_a_record_its_source_keeps_from_nl_is_no_hit_for_nl(
    fed: Federation, at_fr: dict[str, ReceivedRecord]
) -> None:
    assert _match(fed, NL, FR, KEPT_FROM_NL) == []
    assert len(_match(fed, NL, FR, KEPT_FROM_BE)) == 1  # existence is not what BE's restricts


def test_h2_record_received_by_fr_is_refused_when_nl_asks_fr_for_it(
    fed: Federation, at_fr: dict[str, ReceivedRecord]
) -> None:
    [ref] = _match(fed, NL, FR, H2)
    with pytest.raises(PeerRefused) as err:
        _fetch(fed.nodes[NL].identity(), fed, FR, ref)
    assert err.value.reasons == ("handling_code_forbids_resharing",)
    assert err.value.status == "PERMISSION_DENIED"
    entry = audit_entry(fed.nodes[FR], err.value.metadata["audit_entry"])
    assert (entry["peer"], entry["method"], entry["decision"]) == (NL, "Fetch", "deny")
    assert entry["reasons"] == ["handling_code_forbids_resharing"]
    assert H2 not in (fed.nodes[FR].folder / "audit.log").read_text()


def test_a_source_restricted_record_is_not_passed_on(
    fed: Federation, at_fr: dict[str, ReceivedRecord]
) -> None:
    [ref] = _match(fed, NL, FR, KEPT_FROM_BE)
    with pytest.raises(PeerRefused) as err:
        _fetch(fed.nodes[NL].identity(), fed, FR, ref)
    assert err.value.reasons == ("source_restriction_forbids_resharing",)


def test_an_h0_record_is_passed_on_as_des_and_kept_by_nl_as_des(
    fed: Federation, at_fr: dict[str, ReceivedRecord]
) -> None:
    [ref] = _match(fed, NL, FR, H0)
    got = _fetch_and_keep(fed, NL, FR, ref)
    record = got["record"]
    assert got["peer"] == FR
    assert (record["origin_country"], record["handling_code"]) == ("DE", "H0")
    assert record["source_restrictions"] == [] and record["withheld_fields"] == []
    assert record["payload"] == at_fr[H0].payload
    # Never granted past the day FR itself must delete it (DE granted FR 90 days).
    assert record["retention_days"] == 89
    entry = audit_entry(fed.nodes[FR], got["audit_entry"])
    assert (entry["peer"], entry["decision"]) == (NL, "allow")
    kept = _kept(fed.nodes[NL], got["received_id"])
    assert (kept.from_node, kept.origin_country, kept.handling_code) == (FR, "DE", "H0")
    assert kept.retain_until <= at_fr[H0].retain_until
    # FR's hit references are NL's alone: DE cannot present one.
    with pytest.raises(InvalidRequest) as unknown:
        _fetch(fed.nodes[DE].identity(), fed, FR, ref)
    assert unknown.value.reasons == ("unknown_reference",)


def test_purged_records_are_no_hits(fed: Federation, at_fr: dict[str, ReceivedRecord]) -> None:
    """Last: FR's retention of DE's records ends (the purge job's own statement, on a clock
    past it)."""
    assert len(_match(fed, NL, FR, H0)) == 1
    store = _received(fed.nodes[FR])
    try:
        gone = store.purge_due(datetime.now(UTC) + timedelta(days=91))
    finally:
        store.close()
    assert {r.id for r in gone} == {r.id for r in at_fr.values()}
    for number in RECORDS:
        assert _match(fed, NL, FR, number) == []
