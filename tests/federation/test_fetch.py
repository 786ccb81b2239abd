"""Fetch and GetTicket across real node processes over real mTLS, through the real client:
hit -> record with redactions; hit -> ticket -> approved -> delivered once; refused and
expired tickets; references bound to their requester; the legal basis; both engines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from federation.client import ClientIdentity, PeerClient, new_envelope
from federation.errors import InvalidRequest, PeerRefused
from federation.model import FetchAnswer, FetchQuery, TicketStatus
from federation.vocabulary import LegalBasis
from node.local.demo import WINDOW
from node.local.federation import Federation, NodeHandle, build_federation
from node.policy.opa_process import start_opa
from node.tickets import TicketStore
from tests.federation.helpers import ask, audit_entry, clone_node, scrape

OWNER, ASKER, OTHER = "FR-DGPN", "DE-BKA", "NL-KLPD"
# Each owner's agreements: DE-BKA may fetch from FR-DGPN, travel documents without their
# `status`; NL-KLPD may match and fetch travel documents too.
AGREEMENTS: dict[str, dict[str, Any]] = {
    OWNER: {
        ASKER: {
            "categories": ["travel_document", "wanted_person"],
            "purposes": ["criminal_investigation"],
            "methods": ["Match", "Fetch"],
            "legal_bases": ["none", "bilateral_agreement", "mlat"],
            "redact": {"travel_document": ["status"]},
            **WINDOW,
        },
        OTHER: {
            "categories": ["travel_document"],
            "purposes": ["criminal_investigation"],
            "methods": ["Match", "Fetch"],
            "legal_bases": ["none", "bilateral_agreement"],
            **WINDOW,
        },
    },
}
# FR-DGPN's operators approve every Fetch of a wanted person, within 24 hours.
RESTRICTIONS = {"blocked_countries": [], "approval_categories": ["wanted_person"]}
SETTINGS = {"approval_deadline_hours": 24}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("fetch-federation")
    federation = build_federation(root, (ASKER, OWNER, OTHER), AGREEMENTS, records=200)
    data = {
        "agreements": AGREEMENTS[OWNER],
        "restrictions": RESTRICTIONS,
        "settings": SETTINGS,
    }
    (federation.nodes[OWNER].folder / "agreements.json").write_text(json.dumps(data, indent=2))
    federation.start()
    yield federation
    federation.stop()


def _plain(fed: Federation, category: str) -> dict[str, Any]:
    """An FR record of `category` anyone may be shown, that no marking sends to a person."""
    return next(
        r
        for r in fed.nodes[OWNER].rows
        if r["category"] == category
        and r.get("handling_code", "H0") in ("H0", "H1")
        and not r.get("source_restrictions")
    )


def _hit(fed: Federation, who: ClientIdentity, row: dict[str, Any]) -> str:
    if row["category"] == "travel_document":
        idents = [("document_number", str(row["document_number"]))]
    else:
        idents = [("name_dob", f"{row['family_name']}|{row['given_names']}|{row['date_of_birth']}")]
    answer = ask(who, fed, OWNER, str(row["category"]), idents)
    assert answer.hit and len(answer.record_refs) >= 1
    return answer.record_refs[0]


def fetch(
    who: ClientIdentity,
    fed: Federation,
    *,
    record_ref: str = "",
    ticket_id: str = "",
    basis: LegalBasis = LegalBasis.BILATERAL_AGREEMENT,
    reference: str = "",
    case: str = "CASE-2026-0042",
    endpoint: str | None = None,
) -> FetchAnswer:
    async def run() -> FetchAnswer:
        client = PeerClient.for_member(who, fed.member(OWNER), endpoint=endpoint)
        try:
            env = new_envelope(
                who.node_id,
                "criminal_investigation",
                legal_basis=basis,
                legal_reference=reference,
                case_reference=case,
            )
            query = FetchQuery(env, record_ref=record_ref, ticket_id=ticket_id)
            return await client.fetch(query, timeout=10.0)
        finally:
            await client.close()

    return asyncio.run(run())


def get_ticket(who: ClientIdentity, fed: Federation, ticket_id: str) -> TicketStatus:
    async def run() -> TicketStatus:
        client = PeerClient.for_member(who, fed.member(OWNER))
        try:
            return await client.get_ticket(ticket_id, timeout=10.0)
        finally:
            await client.close()

    return asyncio.run(run())


def _tickets(node: NodeHandle) -> TicketStore:
    return TicketStore(node.config().store.url)


@pytest.fixture(scope="module")
def de(fed: Federation) -> ClientIdentity:
    return fed.nodes[ASKER].identity()


@pytest.fixture(scope="module")
def nl(fed: Federation) -> ClientIdentity:
    return fed.nodes[OTHER].identity()


def _assert_redacted(fed: Federation, answer: FetchAnswer, row: dict[str, Any]) -> None:
    record = answer.record
    assert record is not None and answer.ticket is None
    payload = json.loads(record.payload_json)
    assert "status" not in payload and record.withheld_fields == ("status",)
    assert payload["document_number"] == row["document_number"]
    assert record.handling_code == row.get("handling_code", "H0")
    assert record.origin_country == "FR" and record.source_restrictions == ()
    assert record.retention_days == 90 and record.category == "travel_document"
    # Canonical JSON: the exact text the owner signed.
    assert record.payload_json == json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_hit_then_fetch_discloses_the_record_without_its_redacted_fields(
    fed: Federation, de: ClientIdentity
) -> None:
    row = _plain(fed, "travel_document")
    owner = fed.nodes[OWNER]
    answer = fetch(de, fed, record_ref=_hit(fed, de, row))
    _assert_redacted(fed, answer, row)
    assert answer.responder == OWNER and answer.policy_revision.startswith("sha256:")
    entry = audit_entry(owner, answer.audit_entry)
    assert (entry["method"], entry["decision"]) == ("Fetch", "allow")
    assert entry["withheld"] == ["status"] and entry["category"] == "travel_document"
    assert "ticket" not in entry
    # The withheld value is in neither the audit log nor the metrics; only the count.
    status = str(row["status"])
    assert f'"{status}"' not in (owner.folder / "audit.log").read_text()
    assert scrape(owner, "liaison_fetch_withheld_fields_total", {"peer": ASKER}) == 1
    labels = {"peer": ASKER, "method": "Fetch", "decision": "allow"}
    assert scrape(owner, "liaison_requests_total", labels) == 1


def test_a_reference_presented_by_another_node_is_unknown(
    fed: Federation, de: ClientIdentity, nl: ClientIdentity
) -> None:
    ref = _hit(fed, de, _plain(fed, "travel_document"))
    for who, presented in ((nl, ref), (de, "ref_" + "a" * 60), (de, "rec_notarealref")):
        with pytest.raises(InvalidRequest) as err:
            fetch(who, fed, record_ref=presented)
        assert err.value.reasons == ("unknown_reference",)
        assert err.value.status == "NOT_FOUND"
        entry = audit_entry(fed.nodes[OWNER], err.value.metadata["audit_entry"])
        assert (entry["method"], entry["reasons"]) == ("Fetch", ["unknown_reference"])


@pytest.mark.parametrize(
    ("basis", "reference", "reason"),
    [
        (LegalBasis.MLAT, "", "legal_reference_missing"),
        (LegalBasis.TREATY, "Art. 12", "legal_basis_not_agreed"),
        (LegalBasis.NONE, "", "legal_basis_insufficient"),
    ],
)
def test_the_legal_basis_is_the_policys_to_judge(
    fed: Federation, de: ClientIdentity, basis: LegalBasis, reference: str, reason: str
) -> None:
    ref = _hit(fed, de, _plain(fed, "travel_document"))
    with pytest.raises(PeerRefused) as err:
        fetch(de, fed, record_ref=ref, basis=basis, reference=reference)
    assert reason in err.value.reasons
    entry = audit_entry(fed.nodes[OWNER], err.value.metadata["audit_entry"])
    assert entry["decision"] == "deny" and entry["category"] == "travel_document"
    # With the reference an MLAT cites, the same record is disclosed.
    if basis is LegalBasis.MLAT:
        assert fetch(de, fed, record_ref=ref, basis=basis, reference="MLAT-7").record


def test_a_ticket_is_approved_then_delivered_once(
    fed: Federation, de: ClientIdentity, nl: ClientIdentity
) -> None:
    owner = fed.nodes[OWNER]
    row = _plain(fed, "wanted_person")
    answer = fetch(de, fed, record_ref=_hit(fed, de, row))
    ticket = answer.ticket
    assert ticket is not None and answer.record is None
    assert ticket.state == "pending" and ticket.decided_at is None
    assert ticket.deadline_at - ticket.created_at == timedelta(hours=24)
    entry = audit_entry(owner, answer.audit_entry)
    assert entry["ticket"] == ticket.ticket_id and entry["decision"] == "allow"
    assert get_ticket(de, fed, ticket.ticket_id).state == "pending"
    # Still pending: collecting answers with its status.
    assert fetch(de, fed, ticket_id=ticket.ticket_id).ticket == get_ticket(
        de, fed, ticket.ticket_id
    )
    # Another node's ticket is as unknown as one that never existed.
    for who, ticket_id in ((nl, ticket.ticket_id), (de, "tkt_doesnotexist")):
        with pytest.raises(InvalidRequest) as err:
            get_ticket(who, fed, ticket_id)
        assert err.value.reasons == ("unknown_ticket",)
        with pytest.raises(InvalidRequest) as err:
            fetch(who, fed, ticket_id=ticket_id)
        assert err.value.reasons == ("unknown_ticket",)

    store = _tickets(owner)
    try:  # as FR's operator, withholding the nationality on top
        store.approve(
            ticket.ticket_id,
            "officer-7",
            datetime.now(UTC),
            extra_redact=["nationality"],
            fields=tuple(k for k in row if k != "category"),
        )
    finally:
        store.close()
    assert get_ticket(de, fed, ticket.ticket_id).state == "approved"
    delivered = fetch(de, fed, ticket_id=ticket.ticket_id)
    record = delivered.record
    assert record is not None and record.category == "wanted_person"
    payload = json.loads(record.payload_json)
    assert "nationality" not in payload and record.withheld_fields == ("nationality",)
    assert payload["family_name"] == row["family_name"]
    assert record.record_ref.startswith("ref_")
    entry = audit_entry(owner, delivered.audit_entry)
    assert entry["ticket"] == ticket.ticket_id and entry["withheld"] == ["nationality"]
    assert get_ticket(de, fed, ticket.ticket_id).delivered_at is not None

    with pytest.raises(InvalidRequest) as err:
        fetch(de, fed, ticket_id=ticket.ticket_id)
    assert err.value.reasons == ("already_delivered",)
    assert err.value.status == "FAILED_PRECONDITION"
    entry = audit_entry(owner, err.value.metadata["audit_entry"])
    assert entry["ticket"] == ticket.ticket_id and entry["reasons"] == ["already_delivered"]


def test_a_refused_ticket_says_so(fed: Federation, de: ClientIdentity) -> None:
    ticket = fetch(de, fed, record_ref=_hit(fed, de, _plain(fed, "wanted_person"))).ticket
    assert ticket is not None
    store = _tickets(fed.nodes[OWNER])
    try:
        store.refuse(ticket.ticket_id, "officer-7", "not proportionate", datetime.now(UTC))
    finally:
        store.close()
    status = fetch(de, fed, ticket_id=ticket.ticket_id).ticket
    assert status is not None
    assert (status.state, status.reason) == ("refused", "refused_by_operator")
    assert status.decided_at is not None
    assert get_ticket(de, fed, ticket.ticket_id) == status


def test_an_expired_ticket_says_so(fed: Federation, de: ClientIdentity) -> None:
    """A ticket opened two days ago with a day to decide: past its deadline, before the
    expiry job ran (told as expired) and after it moved it."""
    record_ref = _plain(fed, "wanted_person")["reference"]
    store = _tickets(fed.nodes[OWNER])
    then = datetime.now(UTC) - timedelta(days=2)
    try:
        ticket = store.open(
            requester=ASKER,
            record_ref=str(record_ref)[:32],
            category="wanted_person",
            purpose="criminal_investigation",
            legal_basis=LegalBasis.BILATERAL_AGREEMENT,
            legal_reference="",
            case_reference="CASE-2026-0042",
            handling_code="H0",
            redact=(),
            retention_days=90,
            deadline_at=then + timedelta(days=1),
            request_entry="0" * 32,
            now=then,
        )
        told = get_ticket(de, fed, ticket.id)
        assert (told.state, told.reason) == ("expired", "ticket_expired")
        store.expire_due(datetime.now(UTC))
    finally:
        store.close()
    status = fetch(de, fed, ticket_id=ticket.id).ticket
    assert status is not None and status.decided_at is not None
    assert (status.state, status.reason) == ("expired", "ticket_expired")


def test_fetch_on_opa_and_a_replica_opens_the_owners_references(
    fed: Federation, de: ClientIdentity, tmp_path: Path
) -> None:
    """The same Fetch decided by an OPA sidecar; the clone shares FR's signing key, so it
    opens references FR handed out (as replicas do)."""
    row = _plain(fed, "travel_document")
    ref = _hit(fed, de, row)
    opa = start_opa()
    try:
        fr = clone_node(
            fed, OWNER, tmp_path / OWNER, engine='"opa"', opa_url=f'"{opa.url}"', watch="false"
        )
        fr.start()
        try:
            fr.wait_ready()
            answer = fetch(de, fed, record_ref=ref, endpoint=fr.endpoint)
            _assert_redacted(fed, answer, row)
            labels = {"engine": "opa", "result": "allow"}
            assert scrape(fr, "liaison_policy_decisions_total", labels) == 1
            ticket = fetch(
                de,
                fed,
                record_ref=_hit(fed, de, _plain(fed, "wanted_person")),
                endpoint=fr.endpoint,
            ).ticket
            assert ticket is not None and ticket.state == "pending"
        finally:
            fr.stop()
    finally:
        opa.stop()
