"""Notices between wire types (generated protobuf) and domain objects: the sibling of
federation/serde.py for PublishNotice and WithdrawNotice (kept apart so that neither module
grows past a readable size). Nothing else imports the generated notice messages."""

from __future__ import annotations

from datetime import UTC
from typing import TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError, Message

from federation.model import Identifier
from federation.notices_model import (
    Notice,
    NoticeReceipt,
    PublishNoticeQuery,
    WithdrawNoticeQuery,
)
from federation.serde import WireError, envelope_from_proto, envelope_to_proto
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb

_M = TypeVar("_M", bound=Message)


def _from_bytes(kind: type[_M], raw: bytes) -> _M:
    """The message `raw` holds; WireError (no field) if it is not one."""
    try:
        return kind.FromString(raw)
    except DecodeError:
        raise WireError("", f"request is not a {kind.__name__}") from None


def _notice_to_proto(n: Notice) -> pb.Notice:
    msg = pb.Notice(
        notice_id=n.notice_id,
        version=n.version,
        category=n.category,
        identifiers=[pb.Identifier(kind=i.kind, value=i.value) for i in n.identifiers],
        summary=n.summary,
        handling_code=n.handling_code,
        to_all_members=n.to_all_members,
        recipients=list(n.recipients),
    )
    if n.expires_at is not None:  # left unset, not 1970, so `HasField` tells the truth
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(n.expires_at.astimezone(UTC))
        msg.expires_at.CopyFrom(stamp)
    return msg


def _notice_from_proto(msg: pb.Notice) -> Notice:
    expires = msg.expires_at.ToDatetime(tzinfo=UTC) if msg.HasField("expires_at") else None
    return Notice(
        notice_id=msg.notice_id,
        version=msg.version,
        category=msg.category,
        identifiers=tuple(Identifier(kind=i.kind, value=i.value) for i in msg.identifiers),
        summary=msg.summary,
        handling_code=msg.handling_code,
        to_all_members=msg.to_all_members,
        recipients=tuple(msg.recipients),
        expires_at=expires,
    )


# --- server side


def publish_notice_request_from_bytes(raw: bytes) -> PublishNoticeQuery:
    """A PublishNoticeRequest's bytes as the node received them (WireError if they are none,
    or if the envelope or the notice is missing)."""
    msg = _from_bytes(pb.PublishNoticeRequest, raw)
    if not msg.HasField("envelope"):
        raise WireError("envelope", "missing: every request carries an envelope")
    if not msg.HasField("notice"):
        raise WireError("notice", "missing: a PublishNoticeRequest carries its notice")
    return PublishNoticeQuery(envelope_from_proto(msg.envelope), _notice_from_proto(msg.notice))


def withdraw_notice_request_from_bytes(raw: bytes) -> WithdrawNoticeQuery:
    msg = _from_bytes(pb.WithdrawNoticeRequest, raw)
    if not msg.HasField("envelope"):
        raise WireError("envelope", "missing: every request carries an envelope")
    return WithdrawNoticeQuery(envelope_from_proto(msg.envelope), msg.notice_id, msg.version)


def publish_receipt_to_bytes(r: NoticeReceipt) -> bytes:
    return pb.PublishNoticeResponse(
        responder=r.responder,
        notice_id=r.notice_id,
        version=r.version,
        policy_revision=r.policy_revision,
        audit_entry_id=r.audit_entry,
    ).SerializeToString()


def withdraw_receipt_to_bytes(r: NoticeReceipt) -> bytes:
    return pb.WithdrawNoticeResponse(
        responder=r.responder,
        notice_id=r.notice_id,
        version=r.version,
        audit_entry_id=r.audit_entry,
    ).SerializeToString()


# --- client side (a malformed answer raises DecodeError, as for the other answers)


def publish_notice_request_to_bytes(q: PublishNoticeQuery) -> bytes:
    return pb.PublishNoticeRequest(
        envelope=envelope_to_proto(q.envelope), notice=_notice_to_proto(q.notice)
    ).SerializeToString()


def withdraw_notice_request_to_bytes(q: WithdrawNoticeQuery) -> bytes:
    return pb.WithdrawNoticeRequest(
        envelope=envelope_to_proto(q.envelope), notice_id=q.notice_id, version=q.version
    ).SerializeToString()


def publish_receipt_from_bytes(raw: bytes) -> NoticeReceipt:
    msg = pb.PublishNoticeResponse.FromString(raw)
    return NoticeReceipt(
        msg.responder, msg.notice_id, msg.version, msg.policy_revision, msg.audit_entry_id
    )


def withdraw_receipt_from_bytes(raw: bytes) -> NoticeReceipt:
    msg = pb.WithdrawNoticeResponse.FromString(raw)
    return NoticeReceipt(msg.responder, msg.notice_id, msg.version, "", msg.audit_entry_id)
