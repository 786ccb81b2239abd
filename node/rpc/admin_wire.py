"""The AdminService's messages <-> plain tickets, for both its ends (node and `liaison
tickets`).

Here, not in federation/serde.py: these messages never cross a border (they travel on the
node's own Unix socket, between its operator and itself), and they carry
:class:`node.tickets.Ticket`, which `federation` may not import. Like serde, nothing else
touches the generated admin code: the servicer (node/rpc/admin.py) and the client
(node/rpc/admin_client.py) go through these functions.
"""

from __future__ import annotations

from datetime import datetime

import grpc

from federation.serde import STATUS_TRAILER, refusal_from_status, rich_status, status_from_trailers
from federation.vocabulary import LegalBasis
from federation.wire.liaison.admin.v1 import admin_pb2 as apb
from federation.wire.liaison.admin.v1 import admin_pb2_grpc
from node.tickets import Ticket, TicketState

SERVICE_NAME = "liaison.admin.v1.AdminService"
AdminServicer = admin_pb2_grpc.AdminServiceServicer
add_admin_servicer = admin_pb2_grpc.add_AdminServiceServicer_to_server
AdminStub = admin_pb2_grpc.AdminServiceStub

_STATES = {
    TicketState.PENDING: apb.TICKET_STATE_PENDING,
    TicketState.APPROVED: apb.TICKET_STATE_APPROVED,
    TicketState.REFUSED: apb.TICKET_STATE_REFUSED,
    TicketState.EXPIRED: apb.TICKET_STATE_EXPIRED,
    TicketState.WITHDRAWN: apb.TICKET_STATE_WITHDRAWN,
}
_FROM_WIRE = {wire: state for state, wire in _STATES.items()}


def state_to_proto(state: TicketState | None) -> apb.TicketState.ValueType:
    return apb.TICKET_STATE_UNSPECIFIED if state is None else _STATES[state]


def state_from_proto(value: apb.TicketState.ValueType) -> TicketState | None:
    """None for UNSPECIFIED (every state); ValueError for a number this side does not know."""
    if value == apb.TICKET_STATE_UNSPECIFIED:
        return None
    try:
        return _FROM_WIRE[value]
    except KeyError:
        raise ValueError(f"unknown ticket state {value}") from None


def _time(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat(timespec="microseconds")


def _when(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def ticket_to_proto(t: Ticket) -> apb.Ticket:
    return apb.Ticket(
        id=t.id,
        requester=t.requester,
        record_ref=t.record_ref,
        category=t.category,
        purpose=t.purpose,
        legal_basis=t.legal_basis.value,
        legal_reference=t.legal_reference,
        case_reference=t.case_reference,
        handling_code=t.handling_code,
        redact=list(t.redact),
        extra_redact=list(t.extra_redact),
        retention_days=t.retention_days,
        created_at=_time(t.created_at),
        deadline_at=_time(t.deadline_at),
        state=_STATES[t.state],
        decided_at=_time(t.decided_at),
        operator=t.operator,
        reason=t.reason,
        delivered_at=_time(t.delivered_at),
        request_entry=t.request_entry,
    )


def ticket_from_proto(m: apb.Ticket) -> Ticket:
    """A ticket as the node sent it (ValueError if it is not one)."""
    state = state_from_proto(m.state)
    created, deadline = _when(m.created_at), _when(m.deadline_at)
    if state is None or created is None or deadline is None:
        raise ValueError(f"ticket {m.id!r} arrived without its state or times")
    return Ticket(
        id=m.id,
        requester=m.requester,
        record_ref=m.record_ref,
        category=m.category,
        purpose=m.purpose,
        legal_basis=LegalBasis(m.legal_basis),
        legal_reference=m.legal_reference,
        case_reference=m.case_reference,
        handling_code=m.handling_code,
        redact=tuple(m.redact),
        extra_redact=tuple(m.extra_redact),
        retention_days=m.retention_days,
        created_at=created,
        deadline_at=deadline,
        state=state,
        decided_at=_when(m.decided_at),
        operator=m.operator,
        reason=m.reason,
        delivered_at=_when(m.delivered_at),
        request_entry=m.request_entry,
    )


def error_trailers(code: grpc.StatusCode, message: str, reason: str) -> tuple[tuple[str, bytes]]:
    """An admin error's machine-readable reason, as every refusal carries it (a
    google.rpc.Status with one ErrorInfo)."""
    return ((STATUS_TRAILER, rich_status(code, message, (reason,)).SerializeToString()),)


def error_reasons(error: grpc.Call) -> tuple[str, ...]:
    """The reasons the node attached to an error (none: the node did not answer at all)."""
    return refusal_from_status(status_from_trailers(error.trailing_metadata() or ()))[0]


__all__ = ["apb"]
