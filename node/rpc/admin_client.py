"""The operator's end of the AdminService: `liaison tickets` asks the running node over its
Unix socket (node/rpc/admin.py says why the node, and not the command, does the work).

Errors (each one line, for the operator)::

    AdminError               the node answered with an error (``.reason`` says which)
    └── NodeNotAnswering     nothing answers on the socket: the node is not running
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from node.notice_model import Delivery, NoticeDraft, NoticeHit, StoredNotice
from node.rpc.admin_notices_wire import (
    delivery_from_proto,
    draft_to_proto,
    hit_from_proto,
    notice_from_proto,
)
from node.rpc.admin_wire import (
    AdminStub,
    apb,
    error_reasons,
    state_to_proto,
    ticket_from_proto,
)
from node.tickets import Ticket, TicketState

# Long enough for a busy node's group commit; short enough that a hung node is noticed.
TIMEOUT_S = 30.0


class AdminError(Exception):
    """What the node answered instead of doing it; nothing changed unless it says so."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class NodeNotAnswering(AdminError):
    def __init__(self, path: Path, config: Path | str) -> None:
        super().__init__(
            f"no node is answering on {path}: start it with `liaison serve --config {config}`",
            "node_not_answering",
        )


@dataclass(frozen=True, slots=True)
class Decision:
    ticket: Ticket
    audit_entry: str


@dataclass(frozen=True, slots=True)
class NoticeDone:
    """A notice as a publication or withdrawal left it, its deliveries and audit entry."""

    notice: StoredNotice
    deliveries: list[Delivery]
    audit_entry: str


def _done(answer: Any) -> NoticeDone:
    notice = notice_from_proto(answer.notice)
    deliveries = [delivery_from_proto(notice.notice_id, d) for d in answer.deliveries]
    return NoticeDone(notice, deliveries, answer.audit_entry)


class AdminClient:
    """One operator's connection to their node's admin socket."""

    def __init__(self, path: Path, config: Path | str = "node.toml") -> None:
        self.path = path
        self._config = config
        self._channel = grpc.insecure_channel(f"unix:{path}")
        self._stub = AdminStub(self._channel)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def list(self, state: TicketState | None = None, limit: int = 100) -> list[Ticket]:
        request = apb.ListTicketsRequest(state=state_to_proto(state), limit=limit)
        answer = self._call(self._stub.ListTickets, request)
        return [ticket_from_proto(t) for t in answer.tickets]

    def get(self, ticket_id: str) -> Ticket:
        answer = self._call(self._stub.GetTicket, apb.GetTicketRequest(id=ticket_id))
        return ticket_from_proto(answer.ticket)

    def approve(
        self, ticket_id: str, operator: str, reason: str = "", extra_redact: Iterable[str] = ()
    ) -> Decision:
        request = apb.ApproveTicketRequest(
            id=ticket_id, operator=operator, reason=reason, extra_redact=list(extra_redact)
        )
        answer = self._call(self._stub.ApproveTicket, request)
        return Decision(ticket_from_proto(answer.ticket), answer.audit_entry)

    def refuse(self, ticket_id: str, operator: str, reason: str) -> Decision:
        request = apb.RefuseTicketRequest(id=ticket_id, operator=operator, reason=reason)
        answer = self._call(self._stub.RefuseTicket, request)
        return Decision(ticket_from_proto(answer.ticket), answer.audit_entry)

    def publish_notice(self, draft: NoticeDraft, operator: str) -> NoticeDone:
        answer = self._call(self._stub.PublishNotice, draft_to_proto(draft, operator))
        return _done(answer)

    def withdraw_notice(self, notice_id: str, operator: str) -> NoticeDone:
        request = apb.WithdrawNoticeRequest(notice_id=notice_id, operator=operator)
        return _done(self._call(self._stub.WithdrawNotice, request))

    def notices(self, published: bool, limit: int = 100) -> builtins.list[StoredNotice]:
        request = apb.ListNoticesRequest(published=published, limit=limit)
        answer = self._call(self._stub.ListNotices, request)
        return [notice_from_proto(n) for n in answer.notices]

    def notice_status(self, notice_id: str) -> tuple[StoredNotice, builtins.list[Delivery]]:
        request = apb.GetNoticeStatusRequest(notice_id=notice_id)
        answer = self._call(self._stub.GetNoticeStatus, request)
        return notice_from_proto(answer.notice), [
            delivery_from_proto(notice_id, d) for d in answer.deliveries
        ]

    def notice_hits(self, limit: int = 100) -> builtins.list[NoticeHit]:
        answer = self._call(self._stub.ListNoticeHits, apb.ListNoticeHitsRequest(limit=limit))
        return [hit_from_proto(h) for h in answer.hits]

    def _call(self, method: Any, request: Any) -> Any:
        """The node's answer, or its error as an AdminError (grpc's errors never reach the
        operator: they would be a traceback)."""
        if not self.path.exists():
            raise NodeNotAnswering(self.path, self._config)
        try:
            return method(request, timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            reasons = error_reasons(exc)
            if not reasons and exc.code() is grpc.StatusCode.UNAVAILABLE:
                raise NodeNotAnswering(self.path, self._config) from None
            raise AdminError(str(exc.details()), reasons[0] if reasons else "") from None
