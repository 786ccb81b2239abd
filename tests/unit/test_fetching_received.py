"""Fetch of a record this node received (node/fetching.py with node/received.py): the policy
sees the record's own facts (origin: its first owner), what goes out keeps the owner's
markings and never outlives this node's own retention; tickets name received records too.
Real stores on SQLite, the policy twin of test_fetching.py, an injected clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from federation.vocabulary import LegalBasis
from node.errors import Kind, Refusal
from node.fetching import FetchService
from node.policy import Decision
from node.received import ReceivedRecord, ReceivedStore
from tests.unit.test_fetching import ALLOW, NL, NODE, NOW, Node

PERSON = {
    "family_name": "Dvořák",
    "given_names": "Jana",
    "date_of_birth": "1980-02-29",
    "document_number": "C01X00T47",
    "nationality": "CZ",
}


class Resharing(Node):
    """test_fetching's FR-DGPN node, holding one wanted person received from DE-BKA ten
    days before the end of the retention DE granted."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.received = ReceivedStore(f"sqlite:///{tmp / 'node.db'}")
        self.received.create_schema()
        self.kept: ReceivedRecord = self.received.add(
            from_node="DE-BKA",
            record_ref="ref_from_de",
            category="wanted_person",
            payload=PERSON,
            handling_code="H1",
            source_restrictions=[],
            origin_country="DE",
            purpose="criminal_investigation",
            legal_basis=LegalBasis.BILATERAL_AGREEMENT,
            legal_reference="",
            case_reference="CASE-DE",
            retention_days=20,
            received_at=NOW - timedelta(days=10, hours=1),
        )
        self.service = FetchService(
            NODE,
            self.records,
            self.tickets,
            self.refs,
            self.policy,
            self.clock,
            received=self.received,
        )

    def ref(self) -> str:
        return self.refs.seal(NL.node_id, self.kept.id, NOW)


@pytest.fixture
def n(tmp_path: Path) -> Iterator[Resharing]:
    node = Resharing(tmp_path)
    yield node
    node.received.close()
    node.tickets.close()
    node.records.close()


def test_the_policy_sees_the_received_records_own_facts(n: Resharing) -> None:
    answer, seen = n.fetch(NL, ref=n.ref())
    asked = n.policy.inputs[0]
    assert asked["record"] == n.kept.policy_facts()
    assert asked["record"]["origin_country"] == "DE" and asked["node"]["country"] == "FR"
    assert asked["request"]["identifier_kinds"] == ["document_number", "name_dob"]
    assert "Dvořák" not in json.dumps(asked, ensure_ascii=False)
    record = answer.record
    assert record is not None and seen.category == "wanted_person"
    assert (record.origin_country, record.handling_code) == ("DE", "H1")
    assert record.source_restrictions == ()
    # The policy grants 30 days; this node may keep it 9 more whole days, so 9.
    assert record.retention_days == 9
    assert json.loads(record.payload_json)["family_name"] == "Dvořák"


def test_a_refusal_is_the_policys(n: Resharing) -> None:
    n.policy.decision = Decision(False, ("handling_code_forbids_resharing",), {}, "rev-1")
    with pytest.raises(Refusal) as err:
        n.fetch(NL, ref=n.ref())
    assert err.value.kind is Kind.DENIED
    assert err.value.reasons == ("handling_code_forbids_resharing",)


def test_a_record_past_this_nodes_retention_is_shown_not_kept(n: Resharing) -> None:
    n.clock.now = NOW + timedelta(days=9, hours=12)
    answer, _ = n.fetch(NL, ref=n.ref())
    assert answer.record is not None and answer.record.retention_days == 0


def test_a_ticket_names_the_received_record_and_delivers_it_as_des(n: Resharing) -> None:
    n.policy.decision = Decision(
        True,
        (),
        {**ALLOW, "require_approval": True, "approval_deadline_hours": 24, "retention_days": 30},
        "rev-1",
    )
    opened, _ = n.fetch(NL, ref=n.ref())
    assert opened.ticket is not None
    ticket = n.tickets.get(opened.ticket.ticket_id)
    assert ticket.record_ref == n.kept.id
    n.tickets.approve(ticket.id, "op", NOW, fields=tuple(PERSON), extra_redact=["nationality"])
    n.policy.decision = Decision(True, (), {**ALLOW, "retention_days": 30}, "rev-1")
    collected, seen = n.fetch(NL, ticket=ticket.id)
    record = collected.record
    assert record is not None and record.origin_country == "DE"
    assert set(record.withheld_fields) == {"nationality"} and seen.category == "wanted_person"
    assert record.retention_days == 9
    assert n.policy.inputs[-1]["record"] == n.kept.policy_facts()


def test_a_purged_record_is_an_unknown_reference(n: Resharing) -> None:
    ref = n.ref()
    assert n.received.purge_due(NOW + timedelta(days=10)) != []
    with pytest.raises(Refusal) as err:
        n.fetch(NL, ref=ref)
    assert err.value.reasons == ("unknown_reference",) and err.value.kind is Kind.NOT_FOUND
