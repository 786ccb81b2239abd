"""The Fetch logic on plain objects (node/fetching.py): real stores on SQLite, a policy twin
that answers one fixed decision, an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from federation.directory import Member, MemberStatus
from federation.model import Envelope, FetchAnswer, FetchQuery
from federation.vocabulary import LegalBasis
from node.errors import Kind, Refusal
from node.fetching import FetchService, Seen, fetch_duties
from node.policy import Decision
from node.records import NewRecord
from node.references import References
from node.service import NodeIdentity
from node.store import RecordStore
from node.tickets import TicketStore

NODE = NodeIdentity("FR-DGPN", "FR", "bilateral")
NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
DE = Member("DE-BKA", "de:1", "a" * 64, "b" * 64, MemberStatus.ACTIVE)
NL = Member("NL-KLPD", "nl:1", "c" * 64, "d" * 64, MemberStatus.ACTIVE)
PAYLOAD = {"document_number": "FRFAKE1", "status": "stolen", "holder_phone": "+33 1"}
ALLOW = {"handling_code": "H1", "redact": ["status"], "require_approval": False}


class Policy:
    """Answers `obligations` (allow) or `reasons` (deny); remembers what it was asked."""

    def __init__(self) -> None:
        self.decision = Decision(True, (), {**ALLOW, "retention_days": 30}, "rev-1")
        self.inputs: list[Mapping[str, Any]] = []

    async def __call__(self, policy_input: Mapping[str, Any]) -> Decision:
        self.inputs.append(policy_input)
        return self.decision


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Node:
    def __init__(self, tmp: Path) -> None:
        url = f"sqlite:///{tmp / 'node.db'}"
        self.records, self.tickets = RecordStore(url), TicketStore(url)
        self.records.create_schema()
        self.tickets.create_schema()
        self.records.add_records(
            [NewRecord("rec_1", "travel_document", "H1", ("XX",), (), dict(PAYLOAD))]
        )
        self.refs = References(bytes(32), timedelta(days=30))
        self.policy, self.clock = Policy(), Clock()
        self.service = FetchService(
            NODE, self.records, self.tickets, self.refs, self.policy, self.clock
        )

    def fetch(
        self, who: Member = DE, *, ref: str = "", ticket: str = "", **env: Any
    ) -> tuple[FetchAnswer, Seen]:
        envelope = Envelope(
            **{
                "requester": who.node_id,
                "purpose": "criminal_investigation",
                "legal_basis": LegalBasis.BILATERAL_AGREEMENT,
                "case_reference": "C-1",
                **env,
            }
        )
        seen = Seen()
        query = FetchQuery(envelope, record_ref=ref, ticket_id=ticket)
        answer = asyncio.run(self.service.fetch(who, query, "e" * 32, seen))
        return answer, seen


@pytest.fixture
def n(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    yield node
    node.tickets.close()
    node.records.close()


def test_allowed_fetch_removes_the_redacted_fields_and_names_them(n: Node) -> None:
    answer, seen = n.fetch(ref=n.refs.seal("DE-BKA", "rec_1", NOW))
    record = answer.record
    assert record is not None and answer.ticket is None
    assert json.loads(record.payload_json) == {
        "document_number": "FRFAKE1",
        "holder_phone": "+33 1",
    }
    assert record.payload_json == '{"document_number":"FRFAKE1","holder_phone":"+33 1"}'
    assert record.withheld_fields == ("status",) and seen.withheld == ("status",)
    assert (record.handling_code, record.source_restrictions) == ("H1", ("XX",))
    assert (record.origin_country, record.retention_days) == ("FR", 30)
    assert answer.policy_revision == "rev-1" and seen.category == "travel_document"
    asked = n.policy.inputs[0]
    assert asked["request"]["method"] == "Fetch"
    assert asked["record"] == {
        "category": "travel_document",
        "handling_code": "H1",
        "source_restrictions": ["XX"],
        "origin_country": "FR",
    }
    assert "FRFAKE1" not in json.dumps(asked) and "stolen" not in json.dumps(asked)


def test_a_redaction_naming_a_field_the_record_lacks_withholds_nothing(n: Node) -> None:
    n.policy.decision = Decision(True, (), {**ALLOW, "redact": ["health"], "retention_days": 1})
    answer, _ = n.fetch(ref=n.refs.seal("DE-BKA", "rec_1", NOW))
    assert answer.record is not None and answer.record.withheld_fields == ()


@pytest.mark.parametrize(
    ("obligations", "reason"),
    [
        ({**ALLOW, "retention_days": 30, "require_approval": True}, "policy_error"),
        ({**ALLOW, "retention_days": 30, "approval_deadline_hours": 4}, "policy_error"),
        (ALLOW, "policy_error"),
        ({**ALLOW, "retention_days": 30, "max_results": 1}, "policy_error"),
        ({**ALLOW, "retention_days": "30"}, "policy_error"),
        ({**ALLOW, "retention_days": 30, "watermark": True}, "unknown_obligation"),
    ],
)
def test_obligations_outside_the_contract_are_a_deny(
    obligations: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Refusal) as err:
        fetch_duties(Decision(True, (), obligations, "rev-2"))
    assert err.value.reasons == (reason,) and err.value.kind is Kind.DENIED
    assert err.value.policy_revision == "rev-2"


def test_a_deny_is_refused_with_the_policy_reasons_and_nothing_opened(n: Node) -> None:
    n.policy.decision = Decision(False, ("legal_reference_missing",), {}, "rev-3")
    with pytest.raises(Refusal) as err:
        n.fetch(ref=n.refs.seal("DE-BKA", "rec_1", NOW), legal_basis=LegalBasis.MLAT)
    assert err.value.reasons == ("legal_reference_missing",)
    assert err.value.policy_revision == "rev-3"
    assert n.tickets.list() == []


@pytest.mark.parametrize("who", ["NL-KLPD", "garbage", "expired", "deleted"])
def test_references_that_name_nothing_for_this_requester(n: Node, who: str) -> None:
    ref = n.refs.seal("NL-KLPD" if who == "NL-KLPD" else "DE-BKA", "rec_1", NOW)
    if who == "garbage":
        ref = "ref_" + "b" * 70
    if who == "deleted":
        ref = n.refs.seal("DE-BKA", "rec_gone", NOW)
    if who == "expired":
        n.clock.now = NOW + timedelta(days=31)
    with pytest.raises(Refusal) as err:
        n.fetch(ref=ref)
    reason = "reference_expired" if who == "expired" else "unknown_reference"
    assert err.value.reasons == (reason,)
    assert err.value.kind is (Kind.NOT_YET if who == "expired" else Kind.NOT_FOUND)
    assert n.policy.inputs == []


def test_approval_opens_a_ticket_with_the_policys_deadline(n: Node) -> None:
    n.policy.decision = Decision(
        True,
        (),
        {**ALLOW, "require_approval": True, "approval_deadline_hours": 48, "retention_days": 7},
        "rev-4",
    )
    answer, seen = n.fetch(ref=n.refs.seal("DE-BKA", "rec_1", NOW))
    ticket = answer.ticket
    assert answer.record is None and ticket is not None and seen.ticket == ticket.ticket_id
    assert (ticket.state, ticket.deadline_at) == ("pending", NOW + timedelta(hours=48))
    stored = n.tickets.get(ticket.ticket_id)
    assert (stored.record_ref, stored.redact, stored.retention_days) == ("rec_1", ("status",), 7)
    assert stored.request_entry == "e" * 32

    with pytest.raises(Refusal) as err:  # another requester: as if it never existed
        n.fetch(NL, ticket=ticket.ticket_id)
    assert err.value.reasons == ("unknown_ticket",)
    with pytest.raises(Refusal) as err:
        asyncio.run(n.service.ticket(NL, ticket.ticket_id, Seen()))
    assert err.value.reasons == ("unknown_ticket",)

    n.tickets.approve(
        ticket.ticket_id, "op", NOW, extra_redact=["holder_phone"], fields=tuple(PAYLOAD)
    )
    delivered, seen = n.fetch(ticket=ticket.ticket_id)
    record = delivered.record
    assert record is not None
    assert json.loads(record.payload_json) == {"document_number": "FRFAKE1"}
    assert record.withheld_fields == ("holder_phone", "status") == seen.withheld
    assert record.retention_days == 7
    assert n.refs.open("DE-BKA", record.record_ref, NOW).stored_ref == "rec_1"
    with pytest.raises(Refusal) as err:
        n.fetch(ticket=ticket.ticket_id)
    assert err.value.reasons == ("already_delivered",) and err.value.kind is Kind.NOT_YET


def test_a_pending_ticket_past_its_deadline_is_told_as_expired(n: Node) -> None:
    ticket = n.tickets.open(
        requester="DE-BKA",
        record_ref="rec_1",
        category="travel_document",
        purpose="criminal_investigation",
        legal_basis=LegalBasis.BILATERAL_AGREEMENT,
        legal_reference="",
        case_reference="C-1",
        handling_code="H1",
        redact=(),
        retention_days=30,
        deadline_at=NOW + timedelta(hours=1),
        request_entry="",
        now=NOW,
    )
    n.clock.now = NOW + timedelta(hours=2)
    status = asyncio.run(n.service.ticket(DE, ticket.id, Seen()))
    assert (status.state, status.reason) == ("expired", "ticket_expired")
    answer, _ = n.fetch(ticket=ticket.id)
    assert answer.ticket == status and answer.record is None


def test_the_envelope_is_checked_before_anything_is_read(n: Node) -> None:
    with pytest.raises(Refusal) as err:
        n.fetch(ref=n.refs.seal("DE-BKA", "rec_1", NOW), requester="NL-KLPD")
    assert err.value.reasons == ("requester_mismatch",)
    with pytest.raises(Refusal) as err:
        n.fetch(ref=n.refs.seal("DE-BKA", "rec_1", NOW), purpose="")
    assert err.value.reasons == ("purpose_missing",)
    assert n.policy.inputs == []


def _approved_ticket(n: Node) -> str:
    n.policy.decision = Decision(
        True,
        (),
        {**ALLOW, "require_approval": True, "approval_deadline_hours": 48, "retention_days": 7},
        "rev-4",
    )
    ticket = n.fetch(ref=n.refs.seal("DE-BKA", "rec_1", NOW), legal_reference="MLAT-1")[0].ticket
    assert ticket is not None
    n.tickets.approve(ticket.ticket_id, "op", NOW, fields=tuple(PAYLOAD))
    return ticket.ticket_id


def test_collection_asks_the_policy_again_on_the_tickets_own_ground(n: Node) -> None:
    """An agreement withdrawn after the approval stops the record; the ticket stays
    undelivered, so it can be collected once the policy allows it again."""
    ticket_id = _approved_ticket(n)
    n.policy.decision = Decision(False, ("method_not_permitted",), {}, "rev-5")
    with pytest.raises(Refusal) as err:
        # The collecting request's own envelope is not the ground the ticket was opened on.
        n.fetch(ticket=ticket_id, legal_basis=LegalBasis.NONE, case_reference="")
    assert err.value.reasons == ("method_not_permitted",) and err.value.policy_revision == "rev-5"
    envelope = n.policy.inputs[-1]["envelope"]
    assert (envelope["purpose"], envelope["legal_basis"]) == (
        "criminal_investigation",
        "bilateral_agreement",
    )
    assert envelope["has_legal_reference"] and envelope["has_case_reference"]
    assert n.tickets.get(ticket_id).delivered_at is None

    # Allowed again, now withholding one more field than when it was approved.
    n.policy.decision = Decision(
        True, (), {**ALLOW, "redact": ["holder_phone"], "retention_days": 3}, "rev-6"
    )
    answer, seen = n.fetch(ticket=ticket_id)
    record = answer.record
    assert record is not None and answer.policy_revision == "rev-6"
    assert record.withheld_fields == ("holder_phone", "status") == seen.withheld
    assert json.loads(record.payload_json) == {"document_number": "FRFAKE1"}
    assert record.retention_days == 3
    assert n.tickets.get(ticket_id).delivered_at is not None


def test_a_delivery_whose_answer_is_not_sent_is_put_back(n: Node) -> None:
    """The call path runs `if_unsent` when the answer's audit entry cannot be written: the
    ticket is collectable again, once, and a second put-back changes nothing."""
    ticket_id = _approved_ticket(n)
    _, seen = n.fetch(ticket=ticket_id)
    assert n.tickets.get(ticket_id).delivered_at is not None and seen.if_unsent is not None
    undo = seen.if_unsent
    asyncio.run(_run(undo))
    assert n.tickets.get(ticket_id).delivered_at is None
    n.clock.now += timedelta(seconds=1)
    answer, _ = n.fetch(ticket=ticket_id)
    assert answer.record is not None
    delivered = n.tickets.get(ticket_id).delivered_at
    asyncio.run(_run(undo))  # the first delivery's put-back, late: the second stands
    assert n.tickets.get(ticket_id).delivered_at == delivered is not None
    with pytest.raises(Refusal) as err:
        n.fetch(ticket=ticket_id)
    assert err.value.reasons == ("already_delivered",)


async def _run(work: Callable[[], Awaitable[None]]) -> None:
    await work()


def test_the_requester_withdraws_a_pending_ticket_once(n: Node) -> None:
    n.policy.decision = Decision(
        True,
        (),
        {**ALLOW, "require_approval": True, "approval_deadline_hours": 48, "retention_days": 7},
        "rev-4",
    )
    ticket = n.fetch(ref=n.refs.seal("DE-BKA", "rec_1", NOW), legal_reference="MLAT-1")[0].ticket
    assert ticket is not None
    with pytest.raises(Refusal) as err:  # another node: as if it never existed
        asyncio.run(n.service.withdraw(NL, ticket.ticket_id, Seen()))
    assert err.value.reasons == ("unknown_ticket",)
    seen = Seen()
    status = asyncio.run(n.service.withdraw(DE, ticket.ticket_id, seen))
    assert (status.state, status.reason) == ("withdrawn", "withdrawn")
    assert (seen.ticket, seen.category) == (ticket.ticket_id, "travel_document")
    assert seen.if_unsent is not None
    asyncio.run(_run(seen.if_unsent))  # its answer was not sent: pending again
    assert n.tickets.get(ticket.ticket_id).state.value == "pending"
    asyncio.run(n.service.withdraw(DE, ticket.ticket_id, Seen()))
    with pytest.raises(Refusal) as err:
        asyncio.run(n.service.withdraw(DE, ticket.ticket_id, Seen()))
    assert err.value.reasons == ("ticket_not_pending",)
    assert "only a pending ticket can be withdrawn" in err.value.message
