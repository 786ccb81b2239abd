"""WatchTicket's and WithdrawTicket's wire conversions, beside federation/serde.py (which
they would grow past its size): the signed requests, WithdrawTicket's answer, and
WatchTicket's streamed messages, each a TicketStatus's exact bytes with the node's
signature over them.

A stream has one trailer for all its messages, so the signature of each status travels in
the message itself, beside the bytes it covers (never a re-serialised message).
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from federation.model import TicketQuery, TicketStatus, WithdrawAnswer
from federation.serde import (
    WireError,
    envelope_from_proto,
    envelope_to_proto,
    ticket_status_from_proto,
    ticket_status_to_proto,
)
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb


def watch_query_to_bytes(q: TicketQuery) -> bytes:
    return pb.WatchTicketRequest(
        envelope=envelope_to_proto(q.envelope), ticket_id=q.ticket_id
    ).SerializeToString()


def watch_query_from_bytes(raw: bytes) -> TicketQuery:
    """A WatchTicketRequest's bytes as the node received them (WireError if they are none)."""
    try:
        msg = pb.WatchTicketRequest.FromString(raw)
    except DecodeError:
        raise WireError("", "request is not a WatchTicketRequest") from None
    if not msg.HasField("envelope"):
        raise WireError("envelope", "missing: every signed request carries an envelope")
    return TicketQuery(envelope=envelope_from_proto(msg.envelope), ticket_id=msg.ticket_id)


def ticket_status_body(t: TicketStatus) -> bytes:
    """A status as the node signs it: the serialised TicketStatus."""
    body: bytes = ticket_status_to_proto(t).SerializeToString()
    return body


def watch_frame(body: bytes, signature: bytes) -> bytes:
    """One streamed message: a status's signed bytes and the signature over them."""
    return pb.WatchTicketResponse(ticket_status=body, signature=signature).SerializeToString()


def watch_frame_from_bytes(raw: bytes) -> tuple[bytes, bytes]:
    """(the status's bytes, the node's signature over them), both unverified."""
    try:
        msg = pb.WatchTicketResponse.FromString(raw)
    except DecodeError:
        raise WireError("", "a streamed message that is not a WatchTicketResponse") from None
    return msg.ticket_status, msg.signature


def ticket_status_from_body(body: bytes) -> TicketStatus:
    """The status in a streamed message, once its signature verified."""
    try:
        msg = pb.TicketStatus.FromString(body)
    except DecodeError:
        raise WireError("ticket_status", "not a TicketStatus") from None
    return ticket_status_from_proto(msg)


def withdraw_query_to_bytes(q: TicketQuery) -> bytes:
    return pb.WithdrawTicketRequest(
        envelope=envelope_to_proto(q.envelope), ticket_id=q.ticket_id
    ).SerializeToString()


def withdraw_query_from_bytes(raw: bytes) -> TicketQuery:
    """A WithdrawTicketRequest's bytes as the node received them (WireError if none)."""
    try:
        msg = pb.WithdrawTicketRequest.FromString(raw)
    except DecodeError:
        raise WireError("", "request is not a WithdrawTicketRequest") from None
    if not msg.HasField("envelope"):
        raise WireError("envelope", "missing: every signed request carries an envelope")
    return TicketQuery(envelope=envelope_from_proto(msg.envelope), ticket_id=msg.ticket_id)


def withdraw_answer_to_bytes(a: WithdrawAnswer) -> bytes:
    return pb.WithdrawTicketResponse(
        ticket=ticket_status_to_proto(a.ticket), audit_entry_id=a.audit_entry
    ).SerializeToString()


def withdraw_answer_from_bytes(raw: bytes) -> WithdrawAnswer:
    try:
        msg = pb.WithdrawTicketResponse.FromString(raw)
    except DecodeError:
        raise WireError("", "answer is not a WithdrawTicketResponse") from None
    if not msg.HasField("ticket"):
        raise WireError("ticket", "missing: a withdrawal answers with the ticket's status")
    return WithdrawAnswer(ticket_status_from_proto(msg.ticket), msg.audit_entry_id)
