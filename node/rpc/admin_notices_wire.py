"""The AdminService's notice messages <-> plain notices, deliveries and hits, for both its
ends (node and `liaison notices`). Beside node/rpc/admin_wire.py (tickets), for the same
reason: these never cross a border and carry node types `federation` may not import."""

from __future__ import annotations

from datetime import datetime

from federation.model import Identifier
from federation.vocabulary import LegalBasis
from federation.wire.liaison.admin.v1 import admin_pb2 as apb
from node.notice_model import (
    Delivery,
    DeliveryAction,
    DeliveryState,
    NoticeDraft,
    NoticeHit,
    NoticeState,
    StoredNotice,
)


def _time(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat(timespec="microseconds")


def _when(text: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text[:40]!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{what} must carry its zone (e.g. Z or +01:00)")
    return moment


def notice_to_proto(n: StoredNotice) -> apb.Notice:
    return apb.Notice(
        notice_id=n.notice_id,
        version=n.version,
        publisher=n.publisher,
        category=n.category,
        identifiers=[apb.NoticeIdentifier(kind=i.kind, value=i.value) for i in n.identifiers],
        summary=n.summary,
        handling_code=n.handling_code,
        to_all_members=n.to_all_members,
        recipients=list(n.recipients),
        expires_at=_time(n.expires_at),
        state=n.state.value,
        created_at=_time(n.created_at),
        purpose=n.purpose,
        legal_basis=n.legal_basis.value,
    )


def notice_from_proto(m: apb.Notice) -> StoredNotice:
    expires = _when(m.expires_at, "expires_at")
    created = _when(m.created_at, "created_at")
    return StoredNotice(
        publisher=m.publisher,
        notice_id=m.notice_id,
        version=m.version,
        category=m.category,
        identifiers=tuple(Identifier(i.kind, i.value) for i in m.identifiers),
        summary=m.summary,
        handling_code=m.handling_code,
        to_all_members=m.to_all_members,
        recipients=tuple(m.recipients),
        expires_at=expires,
        active_until=expires,
        state=NoticeState(m.state),
        created_at=created,
        updated_at=created,
        purpose=m.purpose,
        legal_basis=LegalBasis(m.legal_basis),
    )


def delivery_to_proto(d: Delivery) -> apb.NoticeDelivery:
    return apb.NoticeDelivery(
        recipient=d.recipient,
        version=d.version,
        action=d.action.value,
        state=d.state.value,
        reason=d.last_reason,
        attempts=d.attempts,
        next_attempt_at=_time(d.next_attempt_at),
        updated_at=_time(d.updated_at),
    )


def delivery_from_proto(notice_id: str, m: apb.NoticeDelivery) -> Delivery:
    return Delivery(
        notice_id=notice_id,
        recipient=m.recipient,
        version=m.version,
        action=DeliveryAction(m.action),
        state=DeliveryState(m.state),
        attempts=m.attempts,
        next_attempt_at=_when(m.next_attempt_at, "next_attempt_at"),
        last_reason=m.reason,
        updated_at=_when(m.updated_at, "updated_at"),
    )


def hit_to_proto(h: NoticeHit) -> apb.NoticeHit:
    return apb.NoticeHit(
        id=h.id,
        notice_id=h.notice_id,
        publisher=h.publisher,
        category=h.category,
        trigger=h.trigger,
        at=_time(h.at),
    )


def hit_from_proto(m: apb.NoticeHit) -> NoticeHit:
    return NoticeHit(m.id, m.publisher, m.notice_id, m.category, m.trigger, _when(m.at, "at"))


def draft_to_proto(d: NoticeDraft, operator: str) -> apb.PublishNoticeRequest:
    return apb.PublishNoticeRequest(
        operator=operator,
        category=d.category,
        identifiers=[apb.NoticeIdentifier(kind=i.kind, value=i.value) for i in d.identifiers],
        summary=d.summary,
        handling_code=d.handling_code,
        to_all_members=d.to_all_members,
        recipients=list(d.recipients),
        expires_at=_time(d.expires_at),
        purpose=d.purpose,
        legal_basis=d.legal_basis.value,
        legal_reference=d.legal_reference,
        case_reference=d.case_reference,
    )


def draft_from_proto(m: apb.PublishNoticeRequest) -> NoticeDraft:
    """ValueError for a time or legal basis that is not one."""
    try:
        basis = LegalBasis(m.legal_basis or "none")
    except ValueError:
        raise ValueError(
            f"legal_basis {m.legal_basis[:40]!r} is not one of "
            f"{', '.join(b.value for b in LegalBasis)}"
        ) from None
    return NoticeDraft(
        category=m.category,
        identifiers=tuple(Identifier(i.kind, i.value) for i in m.identifiers),
        summary=m.summary,
        handling_code=m.handling_code,
        to_all_members=m.to_all_members,
        recipients=tuple(m.recipients),
        expires_at=_when(m.expires_at, "expires_at"),
        purpose=m.purpose,
        legal_basis=basis,
        legal_reference=m.legal_reference,
        case_reference=m.case_reference,
    )
