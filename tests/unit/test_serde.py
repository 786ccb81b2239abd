"""Wire <-> domain conversion through real protobuf bytes, and rich error statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from federation.errors import ERROR_DOMAIN
from federation.model import (
    DisclosedRecord,
    Envelope,
    FetchAnswer,
    FetchQuery,
    Identifier,
    MatchAnswer,
    MatchQuery,
    TicketQuery,
    TicketStatus,
    WithdrawAnswer,
)
from federation.serde import (
    WireError,
    envelope_from_proto,
    envelope_to_proto,
    fetch_answer_from_bytes,
    fetch_answer_to_bytes,
    fetch_query_from_bytes,
    fetch_query_to_bytes,
    get_ticket_request_from_bytes,
    get_ticket_request_to_bytes,
    match_answer_from_proto,
    match_answer_to_proto,
    match_query_from_proto,
    match_query_to_proto,
    refusal_from_status,
    rich_status,
    ticket_status_from_bytes,
    ticket_status_to_bytes,
)
from federation.serde_tickets import (
    ticket_status_body,
    ticket_status_from_body,
    watch_frame,
    watch_frame_from_bytes,
    watch_query_from_bytes,
    watch_query_to_bytes,
    withdraw_answer_from_bytes,
    withdraw_answer_to_bytes,
    withdraw_query_from_bytes,
    withdraw_query_to_bytes,
)
from federation.vocabulary import LegalBasis
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb

ISSUED = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _query(**envelope: object) -> MatchQuery:
    fields: dict[str, Any] = {
        "requester": "FR-PN",
        "purpose": "criminal_investigation",
        "legal_basis": LegalBasis.BILATERAL_AGREEMENT,
        "legal_reference": "FR-DE 2019/4",
        "case_reference": "PN-2026-0042",
        "nonce": bytes(range(16)),
        "issued_at": ISSUED,
    }
    fields.update(envelope)
    return MatchQuery(
        envelope=Envelope(**fields),
        category="vehicle",
        identifiers=(
            Identifier("vin", "WVWZZZ1JZXW000001"),
            Identifier("registration_number", "B-XY 123"),
        ),
    )


def _through_bytes(msg: pb.MatchRequest) -> pb.MatchRequest:
    return pb.MatchRequest.FromString(msg.SerializeToString())


def test_match_query_round_trips_through_bytes() -> None:
    query = _query()
    assert match_query_from_proto(_through_bytes(match_query_to_proto(query))) == query


@pytest.mark.parametrize("basis", list(LegalBasis))
def test_every_legal_basis_round_trips(basis: LegalBasis) -> None:
    query = _query(legal_basis=basis)
    back = match_query_from_proto(_through_bytes(match_query_to_proto(query)))
    assert back.envelope.legal_basis is basis


def test_issued_at_in_another_zone_comes_back_as_the_same_instant_in_utc() -> None:
    cet = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    back = envelope_from_proto(envelope_to_proto(Envelope("FR-PN", "x", issued_at=cet)))
    assert back.issued_at == cet
    assert back.issued_at is not None and back.issued_at.utcoffset() == timedelta(0)


def test_an_envelope_without_issue_time_stays_without_one() -> None:
    msg = envelope_to_proto(Envelope(requester="FR-PN", purpose="border_control"))
    assert not msg.HasField("issued_at")
    back = envelope_from_proto(pb.Envelope.FromString(msg.SerializeToString()))
    assert back.issued_at is None  # never 1970-01-01, which a freshness check might misread


def test_wire_fields_carry_the_domain_values() -> None:
    msg = match_query_to_proto(_query())
    assert msg.envelope.requester == "FR-PN"
    assert msg.envelope.legal_basis.kind == pb.LEGAL_BASIS_KIND_BILATERAL_AGREEMENT
    assert msg.envelope.legal_basis.reference == "FR-DE 2019/4"
    assert msg.envelope.nonce == bytes(range(16))
    assert [(i.kind, i.value) for i in msg.identifiers] == [
        ("vin", "WVWZZZ1JZXW000001"),
        ("registration_number", "B-XY 123"),
    ]


def test_missing_envelope_is_a_wire_error_naming_the_field() -> None:
    msg = pb.MatchRequest(category="vehicle", identifiers=[pb.Identifier(kind="vin", value="x")])
    with pytest.raises(WireError, match=r"^envelope: missing: every request carries") as info:
        match_query_from_proto(_through_bytes(msg))
    assert info.value.field == "envelope"


def test_unspecified_legal_basis_reads_as_none() -> None:
    msg = pb.MatchRequest(
        envelope=pb.Envelope(requester="FR-PN", purpose="border_control"), category="vehicle"
    )
    assert match_query_from_proto(msg).envelope.legal_basis is LegalBasis.NONE


def test_unknown_legal_basis_kind_is_a_wire_error() -> None:
    # An enum value from a newer contract arrives as its bare number in proto3.
    msg = pb.Envelope(requester="FR-PN", purpose="x")
    msg.legal_basis.kind = pb.LegalBasisKind.ValueType(99)
    back = pb.Envelope.FromString(msg.SerializeToString())
    with pytest.raises(WireError, match="unknown legal basis kind 99") as info:
        envelope_from_proto(back)
    assert info.value.field == "envelope.legal_basis.kind"


@pytest.mark.parametrize(
    "answer",
    [
        MatchAnswer(
            responder="DE-BKA",
            hit=True,
            record_refs=("r-1", "r-2"),
            policy_revision="sha256:abc",
            audit_entry="41",
        ),
        MatchAnswer(responder="DE-BKA", hit=False),
    ],
)
def test_match_answer_round_trips_through_bytes(answer: MatchAnswer) -> None:
    msg = pb.MatchResponse.FromString(match_answer_to_proto(answer).SerializeToString())
    assert msg.audit_entry_id == answer.audit_entry
    assert match_answer_from_proto(msg) == answer


# --- rich statuses -----------------------------------------------------------------------------


def test_rich_status_round_trips_reasons_through_bytes() -> None:
    status = rich_status(
        grpc.StatusCode.PERMISSION_DENIED,
        "refused by policy",
        ["no_agreement", "purpose_not_agreed"],
        {"peer": "DE-BKA"},
    )
    assert status.code == 7
    assert status.message == "refused by policy"
    back = status_pb2.Status.FromString(status.SerializeToString())
    assert refusal_from_status(back)[0] == ("no_agreement", "purpose_not_agreed")
    info = error_details_pb2.ErrorInfo()
    assert back.details[0].Unpack(info)
    assert info.domain == ERROR_DOMAIN
    assert dict(info.metadata) == {"peer": "DE-BKA"}


def test_rich_status_without_reasons() -> None:
    status = rich_status(grpc.StatusCode.UNAVAILABLE, "policy engine down", [])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert list(status.details) == []
    assert refusal_from_status(status)[0] == ()


def test_reasons_from_no_status() -> None:
    assert refusal_from_status(None)[0] == ()


def test_error_info_of_another_domain_and_other_details_are_ignored() -> None:
    status = rich_status(grpc.StatusCode.PERMISSION_DENIED, "no", ["ours"])
    foreign = any_pb2.Any()
    foreign.Pack(error_details_pb2.ErrorInfo(reason="theirs", domain="googleapis.com"))
    other = any_pb2.Any()
    other.Pack(error_details_pb2.RetryInfo())
    status.details.extend([foreign, other])
    back = status_pb2.Status.FromString(status.SerializeToString())
    assert refusal_from_status(back)[0] == ("ours",)


# --- Fetch and GetTicket


def _env() -> Envelope:
    return Envelope(
        "DE-BKA",
        "criminal_investigation",
        LegalBasis.MLAT,
        "MLAT-7",
        "C-1",
        b"n" * 16,
        datetime(2026, 12, 5, 9, 0, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "query",
    [FetchQuery(_env(), record_ref="ref_abc"), FetchQuery(_env(), ticket_id="tkt_abc")],
)
def test_fetch_request_round_trips(query: FetchQuery) -> None:
    assert fetch_query_from_bytes(fetch_query_to_bytes(query)) == query


def test_fetch_request_without_envelope_or_target_is_malformed() -> None:
    with pytest.raises(WireError, match="envelope"):
        fetch_query_from_bytes(pb.FetchRequest(record_ref="ref_abc").SerializeToString())
    no_target = pb.FetchRequest(envelope=pb.Envelope(requester="DE-BKA"))
    with pytest.raises(WireError, match="target"):
        fetch_query_from_bytes(no_target.SerializeToString())
    with pytest.raises(WireError):
        fetch_query_from_bytes(b"\xff\xff")


T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
STATUSES = [
    TicketStatus("tkt_1", "pending", T0, T0 + timedelta(hours=48)),
    TicketStatus("tkt_2", "refused", T0, T0 + timedelta(hours=48), T0, "refused_by_operator"),
    TicketStatus("tkt_3", "approved", T0, T0 + timedelta(hours=1), T0, "", T0),
]


@pytest.mark.parametrize("status", STATUSES)
def test_ticket_status_round_trips(status: TicketStatus) -> None:
    assert ticket_status_from_bytes(ticket_status_to_bytes(status)) == status
    answer = FetchAnswer("FR-DGPN", ticket=status, policy_revision="r", audit_entry="e")
    assert fetch_answer_from_bytes(fetch_answer_to_bytes(answer)) == answer


def test_a_disclosed_record_round_trips_byte_for_byte() -> None:
    record = DisclosedRecord(
        "ref_x", "travel_document", "H2", ("NL",), "FR", '{"a":"é"}', ("status",), 30
    )
    answer = FetchAnswer("FR-DGPN", record=record, policy_revision="r", audit_entry="e")
    assert fetch_answer_from_bytes(fetch_answer_to_bytes(answer)) == answer
    with pytest.raises(WireError, match="neither"):
        fetch_answer_from_bytes(pb.FetchResponse(responder="FR-DGPN").SerializeToString())
    assert get_ticket_request_from_bytes(get_ticket_request_to_bytes("tkt_1")) == "tkt_1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("category", "recipe"),
        ("handling_code", "H9"),
        ("origin_country", "fr"),
        ("origin_country", "FRA"),
        ("payload_json", "[1, 2]"),
        ("payload_json", "{not json"),
    ],
)
def test_a_disclosed_record_the_receiver_could_not_keep_is_malformed(
    field: str, value: str
) -> None:
    """The receiver keeps a record under its markings: markings it does not know, or a
    payload that is no JSON object, are the sender's error, told as such."""
    record = pb.DisclosedRecord(
        record_ref="ref_x",
        category="vehicle",
        handling_code="H0",
        origin_country="FR",
        payload_json='{"vin": "X"}',
        retention_days=30,
    )
    setattr(record, field, value)
    raw = pb.FetchResponse(responder="FR-DGPN", record=record).SerializeToString()
    with pytest.raises(WireError, match=f"record.{field}"):
        fetch_answer_from_bytes(raw)


@pytest.mark.parametrize("status", STATUSES)
def test_a_watched_status_round_trips_as_the_bytes_signed(status: TicketStatus) -> None:
    body = ticket_status_body(status)
    frame = watch_frame(body, b"s" * 64)
    assert watch_frame_from_bytes(frame) == (body, b"s" * 64)
    assert ticket_status_from_body(body) == status
    assert status.decided is (status.state != "pending")


def test_a_withdrawal_round_trips_and_needs_its_envelope_and_ticket() -> None:
    env = Envelope("DE-BKA", "", nonce=b"n" * 16, issued_at=T0)
    query = TicketQuery(env, "tkt_1")
    assert withdraw_query_from_bytes(withdraw_query_to_bytes(query)) == query
    with pytest.raises(WireError, match="envelope"):
        withdraw_query_from_bytes(pb.WithdrawTicketRequest(ticket_id="t").SerializeToString())
    answer = WithdrawAnswer(STATUSES[1], "e" * 32)
    assert withdraw_answer_from_bytes(withdraw_answer_to_bytes(answer)) == answer
    with pytest.raises(WireError, match="ticket"):
        withdraw_answer_from_bytes(pb.WithdrawTicketResponse().SerializeToString())


def test_a_watch_request_round_trips_and_needs_its_envelope() -> None:
    env = Envelope("DE-BKA", "", nonce=b"n" * 16, issued_at=T0)
    query = TicketQuery(env, "tkt_1")
    assert watch_query_from_bytes(watch_query_to_bytes(query)) == query
    with pytest.raises(WireError, match="envelope"):
        watch_query_from_bytes(pb.WatchTicketRequest(ticket_id="tkt_1").SerializeToString())
    with pytest.raises(WireError, match="not a WatchTicketRequest"):
        watch_query_from_bytes(b"\xff\xff")
    with pytest.raises(WireError, match="not a WatchTicketResponse"):
        watch_frame_from_bytes(b"\xff\xff")
    with pytest.raises(WireError, match="without its creation time"):
        ticket_status_from_body(pb.TicketStatus(ticket_id="tkt_1").SerializeToString())
