"""The one module that converts between wire types (generated protobuf) and domain objects."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from federation.errors import ERROR_DOMAIN
from federation.model import (
    ConsistencyQuery,
    DisclosedRecord,
    EntryRange,
    Envelope,
    FetchAnswer,
    FetchQuery,
    Identifier,
    InclusionQuery,
    MatchAnswer,
    MatchQuery,
    ProvenEntry,
    TicketStatus,
)
from federation.vocabulary import CATEGORIES, HANDLING_CODES, LegalBasis
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb
from federation.wire.liaison.exchange.v1 import oversight_pb2 as opb

_BASIS_TO_PB = {
    LegalBasis.NONE: pb.LEGAL_BASIS_KIND_NONE,
    LegalBasis.BILATERAL_AGREEMENT: pb.LEGAL_BASIS_KIND_BILATERAL_AGREEMENT,
    LegalBasis.MLAT: pb.LEGAL_BASIS_KIND_MLAT,
    LegalBasis.JIT: pb.LEGAL_BASIS_KIND_JIT,
    LegalBasis.TREATY: pb.LEGAL_BASIS_KIND_TREATY,
}
_BASIS_FROM_PB = {v: k for k, v in _BASIS_TO_PB.items()}


class WireError(ValueError):
    """A message that cannot become a domain object; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def envelope_to_proto(env: Envelope) -> pb.Envelope:
    msg = pb.Envelope(
        requester=env.requester,
        purpose=env.purpose,
        legal_basis=pb.LegalBasis(
            kind=_BASIS_TO_PB[env.legal_basis], reference=env.legal_reference
        ),
        case_reference=env.case_reference,
        nonce=env.nonce,
    )
    if env.issued_at is not None:  # left unset, not 1970, so `HasField` tells the truth
        issued = timestamp_pb2.Timestamp()
        issued.FromDatetime(env.issued_at)
        msg.issued_at.CopyFrom(issued)
    return msg


def envelope_from_proto(msg: pb.Envelope) -> Envelope:
    kind = msg.legal_basis.kind
    if kind == pb.LEGAL_BASIS_KIND_UNSPECIFIED:
        basis = LegalBasis.NONE
    elif kind in _BASIS_FROM_PB:
        basis = _BASIS_FROM_PB[kind]
    else:
        raise WireError("envelope.legal_basis.kind", f"unknown legal basis kind {kind}")
    issued = msg.issued_at.ToDatetime(tzinfo=UTC) if msg.HasField("issued_at") else None
    return Envelope(
        requester=msg.requester,
        purpose=msg.purpose,
        legal_basis=basis,
        legal_reference=msg.legal_basis.reference,
        case_reference=msg.case_reference,
        nonce=msg.nonce,
        issued_at=issued,
    )


def match_query_to_proto(q: MatchQuery) -> pb.MatchRequest:
    return pb.MatchRequest(
        envelope=envelope_to_proto(q.envelope),
        category=q.category,
        identifiers=[pb.Identifier(kind=i.kind, value=i.value) for i in q.identifiers],
    )


def match_query_from_proto(msg: pb.MatchRequest) -> MatchQuery:
    if not msg.HasField("envelope"):
        raise WireError("envelope", "missing: every request carries an envelope")
    return MatchQuery(
        envelope=envelope_from_proto(msg.envelope),
        category=msg.category,
        identifiers=tuple(Identifier(kind=i.kind, value=i.value) for i in msg.identifiers),
    )


def match_query_from_bytes(raw: bytes) -> MatchQuery:
    """A MatchRequest's bytes as the node received them (WireError if they are none)."""
    return match_query_from_proto(_from_bytes(pb.MatchRequest, raw))


def match_answer_to_proto(a: MatchAnswer) -> pb.MatchResponse:
    return pb.MatchResponse(
        responder=a.responder,
        hit=a.hit,
        record_refs=list(a.record_refs),
        policy_revision=a.policy_revision,
        audit_entry_id=a.audit_entry,
    )


def match_answer_from_proto(msg: pb.MatchResponse) -> MatchAnswer:
    return MatchAnswer(
        responder=msg.responder,
        hit=msg.hit,
        record_refs=tuple(msg.record_refs),
        policy_revision=msg.policy_revision,
        audit_entry=msg.audit_entry_id,
    )


def match_answer_to_bytes(a: MatchAnswer) -> bytes:
    return match_answer_to_proto(a).SerializeToString()


_TICKET_STATES = {
    "pending": pb.TICKET_STATE_PENDING,
    "approved": pb.TICKET_STATE_APPROVED,
    "refused": pb.TICKET_STATE_REFUSED,
    "expired": pb.TICKET_STATE_EXPIRED,
    "withdrawn": pb.TICKET_STATE_WITHDRAWN,
}
_TICKET_STATE_NAMES = {v: k for k, v in _TICKET_STATES.items()}


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A set Timestamp, or None to leave the field unset (so `HasField` tells the truth)."""
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def _moment(msg: Message, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(msg, name)
    return stamp.ToDatetime(tzinfo=UTC)


def fetch_query_to_proto(q: FetchQuery) -> pb.FetchRequest:
    msg = pb.FetchRequest(envelope=envelope_to_proto(q.envelope))
    if q.ticket_id:
        msg.ticket_id = q.ticket_id
    else:
        msg.record_ref = q.record_ref
    return msg


def fetch_query_from_bytes(raw: bytes) -> FetchQuery:
    """A FetchRequest's bytes as the node received them (WireError if they are none)."""
    msg = _from_bytes(pb.FetchRequest, raw)
    if not msg.HasField("envelope"):
        raise WireError("envelope", "missing: every request carries an envelope")
    target = msg.WhichOneof("target")
    if target is None:
        raise WireError("target", "missing: name a record_ref or a ticket_id")
    return FetchQuery(
        envelope=envelope_from_proto(msg.envelope),
        record_ref=msg.record_ref if target == "record_ref" else "",
        ticket_id=msg.ticket_id if target == "ticket_id" else "",
    )


def ticket_status_to_proto(t: TicketStatus) -> pb.TicketStatus:
    return pb.TicketStatus(
        ticket_id=t.ticket_id,
        state=_TICKET_STATES[t.state],
        created_at=_timestamp(t.created_at),
        deadline_at=_timestamp(t.deadline_at),
        decided_at=_timestamp(t.decided_at),
        reason=t.reason,
        delivered_at=_timestamp(t.delivered_at),
    )


def ticket_status_from_proto(msg: pb.TicketStatus) -> TicketStatus:
    created, deadline = _moment(msg, "created_at"), _moment(msg, "deadline_at")
    if created is None or deadline is None:
        raise WireError("ticket", "a ticket status without its creation time or deadline")
    return TicketStatus(
        ticket_id=msg.ticket_id,
        state=_TICKET_STATE_NAMES.get(msg.state, "unspecified"),
        created_at=created,
        deadline_at=deadline,
        decided_at=_moment(msg, "decided_at"),
        reason=msg.reason,
        delivered_at=_moment(msg, "delivered_at"),
    )


def fetch_answer_to_bytes(a: FetchAnswer) -> bytes:
    msg = pb.FetchResponse(
        responder=a.responder, policy_revision=a.policy_revision, audit_entry_id=a.audit_entry
    )
    if a.record is not None:
        r = a.record
        msg.record.CopyFrom(
            pb.DisclosedRecord(
                record_ref=r.record_ref,
                category=r.category,
                handling_code=r.handling_code,
                source_restrictions=list(r.source_restrictions),
                origin_country=r.origin_country,
                payload_json=r.payload_json,
                withheld_fields=list(r.withheld_fields),
                retention_days=r.retention_days,
            )
        )
    elif a.ticket is not None:
        msg.ticket.CopyFrom(ticket_status_to_proto(a.ticket))
    else:
        raise ValueError("a FetchAnswer carries a record or a ticket")
    return msg.SerializeToString()


def fetch_answer_from_bytes(raw: bytes) -> FetchAnswer:
    """A FetchResponse's bytes (DecodeError if they are none, WireError if it holds neither
    a record nor a ticket)."""
    msg = pb.FetchResponse.FromString(raw)
    outcome = msg.WhichOneof("outcome")
    record = ticket = None
    if outcome == "record":
        record = _disclosed(msg.record)
    elif outcome == "ticket":
        ticket = ticket_status_from_proto(msg.ticket)
    else:
        raise WireError("outcome", "a FetchResponse with neither a record nor a ticket")
    return FetchAnswer(
        responder=msg.responder,
        record=record,
        ticket=ticket,
        policy_revision=msg.policy_revision,
        audit_entry=msg.audit_entry_id,
    )


def _disclosed(r: pb.DisclosedRecord) -> DisclosedRecord:
    """A disclosed record, checked as the receiver will keep it: the markings that decide
    what it may do with the record must be ones it knows, and the payload a JSON object."""
    if r.category not in CATEGORIES:
        raise WireError("record.category", f"{r.category[:40]!r} is not a category")
    if r.handling_code not in HANDLING_CODES:
        raise WireError("record.handling_code", f"{r.handling_code[:8]!r} is not H0-H3")
    if not (
        len(r.origin_country) == 2 and r.origin_country.isascii() and r.origin_country.isupper()
    ):
        raise WireError("record.origin_country", "not a two-letter country code")
    try:
        payload = json.loads(r.payload_json)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise WireError("record.payload_json", "not a JSON object")
    return DisclosedRecord(
        record_ref=r.record_ref,
        category=r.category,
        handling_code=r.handling_code,
        source_restrictions=tuple(r.source_restrictions),
        origin_country=r.origin_country,
        payload_json=r.payload_json,
        withheld_fields=tuple(r.withheld_fields),
        retention_days=r.retention_days,
    )


def get_ticket_request_from_bytes(raw: bytes) -> str:
    """The ticket id asked about."""
    return _from_bytes(pb.GetTicketRequest, raw).ticket_id


def get_ticket_request_to_bytes(ticket_id: str) -> bytes:
    return pb.GetTicketRequest(ticket_id=ticket_id).SerializeToString()


def ticket_status_to_bytes(t: TicketStatus) -> bytes:
    return pb.GetTicketResponse(ticket=ticket_status_to_proto(t)).SerializeToString()


def ticket_status_from_bytes(raw: bytes) -> TicketStatus:
    msg = pb.GetTicketResponse.FromString(raw)
    if not msg.HasField("ticket"):
        raise WireError("ticket", "a GetTicketResponse without a ticket")
    return ticket_status_from_proto(msg.ticket)


def fetch_query_to_bytes(q: FetchQuery) -> bytes:
    return fetch_query_to_proto(q).SerializeToString()


_M = TypeVar("_M", bound=Message)


def _from_bytes(kind: type[_M], raw: bytes) -> _M:
    """The message `raw` holds; WireError (no field) if it is not one."""
    try:
        return kind.FromString(raw)
    except DecodeError:
        raise WireError("", f"request is not a {kind.__name__}") from None


# --- GetDirectory, server side


def get_directory_request_from_bytes(raw: bytes) -> int:
    """The serial the caller says it holds (it gets ours whatever it holds)."""
    return int(_from_bytes(pb.GetDirectoryRequest, raw).known_serial)


def signed_directory_to_bytes(serial: int, signed_directory: bytes) -> bytes:
    return pb.GetDirectoryResponse(
        serial=serial, signed_directory=signed_directory
    ).SerializeToString()


# --- OversightService, server side


def checkpoint_request_from_bytes(raw: bytes) -> None:
    _from_bytes(opb.GetCheckpointRequest, raw)


def checkpoint_note_to_bytes(note: str) -> bytes:
    return opb.GetCheckpointResponse(note=note).SerializeToString()


def consistency_proof_request_from_bytes(raw: bytes) -> ConsistencyQuery:
    msg = _from_bytes(opb.GetConsistencyProofRequest, raw)
    return ConsistencyQuery(old_size=msg.old_size, new_size=msg.new_size)


def consistency_proof_to_bytes(hashes: Sequence[bytes]) -> bytes:
    return opb.GetConsistencyProofResponse(hashes=hashes).SerializeToString()


def inclusion_proof_request_from_bytes(raw: bytes) -> InclusionQuery:
    msg = _from_bytes(opb.GetInclusionProofRequest, raw)
    which = msg.WhichOneof("entry")
    return InclusionQuery(
        tree_size=msg.tree_size,
        index=msg.index if which == "index" else None,
        entry_id=msg.entry_id if which == "entry_id" else None,
    )


def proven_entry_to_bytes(proven: ProvenEntry) -> bytes:
    return opb.GetInclusionProofResponse(
        index=proven.index, tree_size=proven.tree_size, entry=proven.entry, hashes=proven.proof
    ).SerializeToString()


def entries_request_from_bytes(raw: bytes) -> EntryRange:
    msg = _from_bytes(opb.GetEntriesRequest, raw)
    return EntryRange(start=msg.start, end=msg.end)


def entries_to_bytes(entries: Sequence[bytes]) -> bytes:
    return opb.GetEntriesResponse(entries=entries).SerializeToString()


def witnessed_checkpoints_request_from_bytes(raw: bytes) -> None:
    _from_bytes(opb.GetWitnessedCheckpointsRequest, raw)


def witnessed_checkpoints_to_bytes(cosigned: Iterable[tuple[str, str]]) -> bytes:
    """(log node, cosigned note) pairs, as this node witnessed them."""
    views = [opb.WitnessedCheckpoint(log_node=log, note=note) for log, note in cosigned]
    return opb.GetWitnessedCheckpointsResponse(checkpoints=views).SerializeToString()


# --- refusals


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reasons: Iterable[str],
    metadata: dict[str, str] | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with one ErrorInfo per machine-readable reason."""
    details = []
    for reason in reasons:
        info = error_details_pb2.ErrorInfo(
            reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {}
        )
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def refusal_from_status(
    status: status_pb2.Status | None,
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Our reasons in a peer's rich status, and the metadata they carry (audit entry,
    policy revision); details from other domains are not ours to read."""
    if status is None:
        return (), {}
    reasons: list[str] = []
    metadata: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                reasons.append(info.reason)
                metadata.update(info.metadata)
    return tuple(reasons), metadata


STATUS_TRAILER = "grpc-status-details-bin"


def status_from_trailers(trailers: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    """The rich status a peer attached to its error, if any (and if it parses)."""
    for key, value in trailers:
        if key == STATUS_TRAILER and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- client side
# A client sends bytes and reads bytes (it signs the very bytes it sends and verifies the
# bytes it gets before it parses them), so these go from plain values to a request's wire
# bytes and from an answer's wire bytes to plain values; a malformed answer raises
# DecodeError, as parsing it always did.


def match_query_to_bytes(q: MatchQuery) -> bytes:
    return match_query_to_proto(q).SerializeToString()


def match_answer_from_bytes(raw: bytes) -> MatchAnswer:
    return match_answer_from_proto(pb.MatchResponse.FromString(raw))


def get_directory_request_to_bytes(known_serial: int) -> bytes:
    return pb.GetDirectoryRequest(known_serial=known_serial).SerializeToString()


def signed_directory_from_bytes(raw: bytes) -> bytes:
    """The signed directory a peer served: still only bytes, which the caller verifies."""
    return pb.GetDirectoryResponse.FromString(raw).signed_directory


# grpc_health ships no type stubs: the annotated locals pin what it returns.
def health_check_request_to_bytes() -> bytes:
    """grpc.health.v1 for the whole server (no service named)."""
    request: bytes = health_pb2.HealthCheckRequest().SerializeToString()
    return request


def serving_from_bytes(raw: bytes) -> bool:
    status: int = health_pb2.HealthCheckResponse.FromString(raw).status
    serving: int = health_pb2.HealthCheckResponse.SERVING
    return status == serving


def checkpoint_request_to_bytes() -> bytes:
    return opb.GetCheckpointRequest().SerializeToString()


def checkpoint_note_from_bytes(raw: bytes) -> str:
    """The checkpoint note as the node served it (its signature, then any cosignatures)."""
    return opb.GetCheckpointResponse.FromString(raw).note


def consistency_proof_request_to_bytes(old_size: int, new_size: int) -> bytes:
    return opb.GetConsistencyProofRequest(old_size=old_size, new_size=new_size).SerializeToString()


def consistency_proof_from_bytes(raw: bytes) -> list[bytes]:
    return list(opb.GetConsistencyProofResponse.FromString(raw).hashes)


def inclusion_proof_request_to_bytes(entry: int | str, tree_size: int) -> bytes:
    """An entry by its index, or by the entry id an answer named."""
    request = (
        opb.GetInclusionProofRequest(entry_id=entry, tree_size=tree_size)
        if isinstance(entry, str)
        else opb.GetInclusionProofRequest(index=entry, tree_size=tree_size)
    )
    return request.SerializeToString()


def proven_entry_from_bytes(raw: bytes) -> ProvenEntry:
    """The entry and proof as the node sent them: unverified until the client checks them."""
    msg = opb.GetInclusionProofResponse.FromString(raw)
    return ProvenEntry(msg.index, msg.tree_size, msg.entry, tuple(msg.hashes))


def entries_request_to_bytes(start: int, end: int) -> bytes:
    return opb.GetEntriesRequest(start=start, end=end).SerializeToString()


def entries_from_bytes(raw: bytes) -> list[bytes]:
    return list(opb.GetEntriesResponse.FromString(raw).entries)


def witnessed_checkpoints_request_to_bytes() -> bytes:
    return opb.GetWitnessedCheckpointsRequest().SerializeToString()


def witnessed_checkpoints_from_bytes(raw: bytes) -> list[tuple[str, str]]:
    """(log node id, note) for each peer log the node witnesses."""
    msg = opb.GetWitnessedCheckpointsResponse.FromString(raw)
    return [(c.log_node, c.note) for c in msg.checkpoints]
