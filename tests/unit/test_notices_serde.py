"""The notice serde pairs (federation.serde_notices): what a client sends is what the node
parses, and bytes that are not the message are a WireError (refused as malformed_request)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from federation.model import Envelope, Identifier
from federation.notices_model import (
    Notice,
    NoticeReceipt,
    PublishNoticeQuery,
    WithdrawNoticeQuery,
)
from federation.serde import WireError
from federation.serde_notices import (
    publish_notice_request_from_bytes,
    publish_notice_request_to_bytes,
    publish_receipt_from_bytes,
    publish_receipt_to_bytes,
    withdraw_notice_request_from_bytes,
    withdraw_notice_request_to_bytes,
    withdraw_receipt_from_bytes,
    withdraw_receipt_to_bytes,
)
from federation.vocabulary import LegalBasis
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
ENV = Envelope("DE-BKA", "criminal_investigation", LegalBasis.MLAT, "M-1", "C-1", b"n" * 16, NOW)
NOTICE = Notice(
    "ntc_one",
    1,
    "wanted_person",
    (Identifier("name_dob", "Doe|John|1980-01-02"), Identifier("document_number", "X1")),
    "armed\nand dangerous",
    "H2",
    False,
    ("FR-DGPN", "NL-KLPD"),
    datetime(2027, 1, 5, tzinfo=UTC),
)


def test_a_publication_and_a_withdrawal_round_trip() -> None:
    query = PublishNoticeQuery(ENV, NOTICE)
    assert publish_notice_request_from_bytes(publish_notice_request_to_bytes(query)) == query
    withdrawal = WithdrawNoticeQuery(ENV, "ntc_one", 2)
    raw = withdraw_notice_request_to_bytes(withdrawal)
    assert withdraw_notice_request_from_bytes(raw) == withdrawal
    receipt = NoticeReceipt("FR-DGPN", "ntc_one", 2, "rev", "e" * 32)
    assert publish_receipt_from_bytes(publish_receipt_to_bytes(receipt)) == receipt
    no_revision = NoticeReceipt("FR-DGPN", "ntc_one", 2, "", "e" * 32)
    assert withdraw_receipt_from_bytes(withdraw_receipt_to_bytes(receipt)) == no_revision


def test_a_notice_without_expiry_stays_without_one() -> None:
    query = PublishNoticeQuery(ENV, NOTICE)
    raw = pb.PublishNoticeRequest.FromString(publish_notice_request_to_bytes(query))
    raw.notice.ClearField("expires_at")
    assert publish_notice_request_from_bytes(raw.SerializeToString()).notice.expires_at is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"\xff\xff", ""),
        (pb.PublishNoticeRequest(notice=pb.Notice(notice_id="x")).SerializeToString(), "envelope"),
        (pb.PublishNoticeRequest(envelope=pb.Envelope()).SerializeToString(), "notice"),
    ],
)
def test_what_is_not_a_publication_is_a_wire_error(raw: bytes, field: str) -> None:
    with pytest.raises(WireError) as error:
        publish_notice_request_from_bytes(raw)
    assert error.value.field == field


def test_a_withdrawal_without_envelope_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        withdraw_notice_request_from_bytes(
            pb.WithdrawNoticeRequest(notice_id="x").SerializeToString()
        )
