"""What every RPC handler does once it has its answer or refusal: make the audit entry
durable, count the request, and send the refusal as a rich status.

Shared by the ExchangeService (`node.rpc.exchange`) and the OversightService (`node.rpc.oversight`),
so every call the node answers, whatever the service, is audited and counted the same way.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import grpc
from google.rpc import status_pb2

from federation.directory import Member
from federation.serde import STATUS_TRAILER, rich_status
from node.audit.entries import AuditError, AuditRecord, AuditReplay, new_entry_id
from node.audit.log import AuditLog
from node.errors import Kind, Refusal
from node.metrics import NodeMetrics
from node.rpc.admission import replayed
from node.rpc.auth import PeerAuthenticator

log = logging.getLogger("liaison.node")
# The metric and audit label for a caller refused before it was identified.
UNIDENTIFIED = "unidentified"


def audit_time() -> str:
    """Now, as audit entries write it (UTC, microseconds, `Z`)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def refusal_status(refusal: Refusal, entry_id: str, revision: str) -> status_pb2.Status:
    """The rich status a refused peer receives: reasons, its audit entry, the revision."""
    return rich_status(
        refusal.kind.value,
        refusal.message,
        refusal.reasons,
        {"audit_entry": entry_id, "policy_revision": revision},
    )


def call_record(
    entry_id: str,
    peer: str,
    method: str,
    refusal: Refusal | None,
    revision: str,
    request: bytes,
    response: bytes,
) -> AuditRecord:
    """The audit record of a call without an envelope (no purpose, legal basis or nonce):
    GetDirectory, and every OversightService call."""
    return AuditRecord(
        entry_id=entry_id,
        time=audit_time(),
        peer=peer,
        method=method,
        purpose="",
        legal_basis="",
        decision=refusal.decision if refusal else "allow",
        reasons=refusal.reasons if refusal else (),
        policy_revision=revision,
        request_sha256=hashlib.sha256(request).hexdigest(),
        response_sha256=hashlib.sha256(response).hexdigest(),
    )


async def abort(
    context: grpc.aio.ServicerContext[bytes, bytes],
    refusal: Refusal,
    status: bytes,
    trailers: Sequence[tuple[str, str | bytes]] = (),
) -> None:
    """End the call with `refusal`, its rich status sent as `status`: the serialised
    `refusal_status` that the node audited (and signed), not serialised again
    (grpc.aio's context lacks abort_with_status)."""
    await context.abort(refusal.kind.value, refusal.message, ((STATUS_TRAILER, status), *trailers))


def internal_failure(method: str, peer: str) -> Refusal:
    """The refusal for an error no handler expected (a bug), called where it is caught:
    the traceback goes to the operator's log, and the peer gets a refusal, audited and
    counted, never grpc's bare UNKNOWN with the exception's text."""
    log.exception("internal error answering a %s from %s; refused", method, peer)
    return Refusal(
        Kind.INTERNAL,
        ("internal_error",),
        "the node failed to answer this request; its operator has been told (in its log)",
    )


class Recorder:
    """The node's audit log and metrics, as every handler uses them."""

    def __init__(self, audit: AuditLog, metrics: NodeMetrics) -> None:
        self.audit = audit
        self.metrics = metrics

    async def make_durable(self, record: AuditRecord, entry_id: str) -> Refusal | None:
        """Append the entry and wait until it is durable; the refusal to send instead of the
        answer if it could not be (nothing is disclosed unaudited)."""
        try:
            written = await self.audit.append(record)
            if written != entry_id:
                raise AuditError(f"audit entry {written} was written where {entry_id} was due")
        except AuditReplay:
            log.warning(
                "refusing a %s from %s: a replay of a request another replica answered",
                record.method,
                record.peer,
            )
            return replayed()
        except AuditError as exc:
            log.error("refusing a %s from %s: %s", record.method, record.peer, exc)
            self.metrics.audit_failures.inc()
            return Refusal(
                Kind.UNAVAILABLE,
                ("audit_unavailable",),
                "the node could not audit this request, so it refuses to answer; retry later",
            )
        self.metrics.audit_entries.inc()
        return None

    async def serve_call(
        self,
        auth: PeerAuthenticator,
        method: str,
        revision: str,
        raw: bytes,
        context: grpc.aio.ServicerContext[bytes, bytes],
        decide: Callable[[Member], Awaitable[bytes]],
    ) -> bytes:
        """A call without an envelope (GetDirectory, every OversightService call): identify
        the caller, decide, audit durably, count, then answer or refuse."""
        started = time.perf_counter()
        peer, refusal = UNIDENTIFIED, None
        entry_id = new_entry_id()
        try:
            member = auth.identify(context.auth_context())
            peer = member.node_id
            response = await decide(member)
        except Refusal as exc:
            refusal, peer = exc, exc.peer or peer
            response = refusal_status(exc, entry_id, revision).SerializeToString()
        except Exception:
            refusal = internal_failure(method, peer)
            response = refusal_status(refusal, entry_id, revision).SerializeToString()
        record = call_record(entry_id, peer, method, refusal, revision, raw, response)
        failed = await self.make_durable(record, entry_id)
        if failed is not None:
            refusal = failed
            response = refusal_status(failed, entry_id, revision).SerializeToString()
        self.count(peer, method, refusal, started)
        if refusal is not None:
            await abort(context, refusal, response)
        return response

    def count(self, peer: str, method: str, refusal: Refusal | None, started: float) -> None:
        """`liaison_requests_total{peer,method,decision}`, the duration, and each reason of
        a refusal in `liaison_denials_total{peer,reason}`."""
        m = self.metrics
        m.requests.labels(peer, method, refusal.decision if refusal else "allow").inc()
        m.request_duration.labels(method).observe(time.perf_counter() - started)
        if refusal is not None:
            for reason in refusal.reasons:
                m.denials.labels(peer, reason).inc()
