"""The node's AdminService, for its own operators, on a Unix domain socket in its data folder.

Why a socket and not a command that writes the database itself: every ticket transition is
an audit entry naming the operator and the reason, and the audit log has one writer, the
running node. So `liaison tickets approve|refuse` asks the node, which decides through
:class:`node.ticket_desk.TicketDesk` and audits.

Why no TLS and no call path: the socket is created with mode 0600 (only the node's OS user
and root can connect; the permission is the authentication, as for a database's local
socket), it is never a network port, and peers never reach it. The peer-facing call path
(node/rpc/call_path.py) identifies callers by their certificate, which a local operator
does not have. The operator names themselves in each request (`--operator`), and that name
is what the audit entry records. The notices an operator publishes and withdraws go through
it too (`liaison notices`): the node audits them and its courier delivers them. Reading
tickets or notices (list, show, status, hits) is not audited: it discloses
nothing beyond the node's own machine, to the user who can already read its database.

A stale socket left by a crashed node is replaced at start; a socket another process still
answers on is not (two nodes on one data folder: a startup error). The socket is removed
at stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import grpc

from node.audit.entries import AuditError
from node.database import StoreUnavailable
from node.notice_desk import NoticeDesk
from node.notice_model import NoticeError, UnknownNotice
from node.rpc.admin_notices_wire import (
    delivery_to_proto,
    draft_from_proto,
    hit_to_proto,
    notice_to_proto,
)
from node.rpc.admin_wire import (
    AdminServicer,
    add_admin_servicer,
    apb,
    error_trailers,
    state_from_proto,
    ticket_to_proto,
)
from node.ticket_desk import TicketDesk
from node.tickets import InvalidDecision, TicketError, UnknownTicket

log = logging.getLogger("liaison.node")
T = TypeVar("T")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# The longest path a Unix socket address holds on Linux (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


class AdminSocketError(RuntimeError):
    """The admin socket cannot be served; the message says why and what to do."""


class AdminHandlers(AdminServicer):
    """Each call: the plain request to the desk, its answer or its error back."""

    def __init__(self, desk: TicketDesk, notices: NoticeDesk | None = None) -> None:
        self._desk = desk
        self._notice_desk = notices

    @property
    def _notices(self) -> NoticeDesk:
        if self._notice_desk is None:
            raise NoticeError("notices_unavailable", "this admin socket serves no notices")
        return self._notice_desk

    async def ListTickets(
        self, request: apb.ListTicketsRequest, context: Context
    ) -> apb.ListTicketsResponse:
        async def run() -> apb.ListTicketsResponse:
            state = state_from_proto(request.state)
            found = await self._desk.list(state, request.limit or 100)
            return apb.ListTicketsResponse(tickets=[ticket_to_proto(t) for t in found])

        return await _answer(context, run)

    async def GetTicket(
        self, request: apb.GetTicketRequest, context: Context
    ) -> apb.GetTicketResponse:
        async def run() -> apb.GetTicketResponse:
            return apb.GetTicketResponse(ticket=ticket_to_proto(await self._desk.get(request.id)))

        return await _answer(context, run)

    async def ApproveTicket(
        self, request: apb.ApproveTicketRequest, context: Context
    ) -> apb.ApproveTicketResponse:
        async def run() -> apb.ApproveTicketResponse:
            done = await self._desk.approve(
                request.id, request.operator, request.reason, request.extra_redact
            )
            return apb.ApproveTicketResponse(
                ticket=ticket_to_proto(done.ticket), audit_entry=done.audit_entry
            )

        return await _answer(context, run)

    async def RefuseTicket(
        self, request: apb.RefuseTicketRequest, context: Context
    ) -> apb.RefuseTicketResponse:
        async def run() -> apb.RefuseTicketResponse:
            done = await self._desk.refuse(request.id, request.operator, request.reason)
            return apb.RefuseTicketResponse(
                ticket=ticket_to_proto(done.ticket), audit_entry=done.audit_entry
            )

        return await _answer(context, run)

    async def PublishNotice(
        self, request: apb.PublishNoticeRequest, context: Context
    ) -> apb.PublishNoticeResponse:
        async def run() -> apb.PublishNoticeResponse:
            done = await self._notices.publish(draft_from_proto(request), request.operator)
            return apb.PublishNoticeResponse(
                notice=notice_to_proto(done.published.notice),
                deliveries=[delivery_to_proto(d) for d in done.deliveries],
                audit_entry=done.audit_entry,
            )

        return await _answer(context, run)

    async def WithdrawNotice(
        self, request: apb.WithdrawNoticeRequest, context: Context
    ) -> apb.WithdrawNoticeResponse:
        async def run() -> apb.WithdrawNoticeResponse:
            done = await self._notices.withdraw(request.notice_id, request.operator)
            return apb.WithdrawNoticeResponse(
                notice=notice_to_proto(done.published.notice),
                deliveries=[delivery_to_proto(d) for d in done.deliveries],
                audit_entry=done.audit_entry,
            )

        return await _answer(context, run)

    async def ListNotices(
        self, request: apb.ListNoticesRequest, context: Context
    ) -> apb.ListNoticesResponse:
        async def run() -> apb.ListNoticesResponse:
            limit = request.limit or 100
            found = await (
                self._notices.published(limit)
                if request.published
                else self._notices.received(limit)
            )
            return apb.ListNoticesResponse(notices=[notice_to_proto(n) for n in found])

        return await _answer(context, run)

    async def GetNoticeStatus(
        self, request: apb.GetNoticeStatusRequest, context: Context
    ) -> apb.GetNoticeStatusResponse:
        async def run() -> apb.GetNoticeStatusResponse:
            published, deliveries = await self._notices.status(request.notice_id)
            return apb.GetNoticeStatusResponse(
                notice=notice_to_proto(published.notice),
                deliveries=[delivery_to_proto(d) for d in deliveries],
            )

        return await _answer(context, run)

    async def ListNoticeHits(
        self, request: apb.ListNoticeHitsRequest, context: Context
    ) -> apb.ListNoticeHitsResponse:
        async def run() -> apb.ListNoticeHitsResponse:
            found = await self._notices.hits(request.limit or 100)
            return apb.ListNoticeHitsResponse(hits=[hit_to_proto(h) for h in found])

        return await _answer(context, run)


def _status(exc: TicketError | NoticeError) -> grpc.StatusCode:
    if isinstance(exc, UnknownNotice):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, NoticeError):
        return (
            grpc.StatusCode.FAILED_PRECONDITION
            if exc.reason in ("notice_not_active", "notices_unavailable")
            else grpc.StatusCode.INVALID_ARGUMENT
        )
    if isinstance(exc, UnknownTicket):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, InvalidDecision):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.FAILED_PRECONDITION


async def _answer(context: Context, run: Callable[[], Awaitable[T]]) -> T:
    """The answer, or the one admin error: a status, a one-line message for the operator
    and a machine-readable reason (nothing changed, unless the message says otherwise)."""
    try:
        return await run()
    except (TicketError, NoticeError) as exc:
        code, message, reason = _status(exc), str(exc), exc.reason
    except ValueError as exc:
        code, message, reason = grpc.StatusCode.INVALID_ARGUMENT, str(exc), "invalid_argument"
    except StoreUnavailable as exc:
        code, message, reason = grpc.StatusCode.UNAVAILABLE, str(exc), "store_unavailable"
    except AuditError as exc:
        code, message, reason = grpc.StatusCode.UNAVAILABLE, str(exc), "audit_unavailable"
    except Exception:
        log.exception("internal error in an admin call")
        code, reason = grpc.StatusCode.INTERNAL, "internal_error"
        message = "the node failed to answer; the traceback is in its log"
    await context.abort(code, message, error_trailers(code, message, reason))
    raise AssertionError("unreachable: abort raises")


def _clear_stale(path: Path) -> None:
    """Remove a socket a crashed node left behind; refuse to take one still answered, or
    a file that is not a socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AdminSocketError(f"{path} exists and is not a socket: move it, or set [admin] socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("replacing the stale admin socket %s (a node that did not stop)", path)
            path.unlink(missing_ok=True)
            return
    raise AdminSocketError(
        f"another process answers on {path}: is a node already running on this data folder?"
    )


class AdminServer:
    """The AdminService on `path` (mode 0600), until `stop`."""

    def __init__(self, desk: TicketDesk, path: Path, notices: NoticeDesk | None = None) -> None:
        self.path = path
        self._handlers = AdminHandlers(desk, notices)
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise AdminSocketError(
                f"[admin] socket {self.path} is longer than a Unix socket path may be "
                f"({MAX_SOCKET_PATH} bytes): set a shorter path"
            )
        _clear_stale(self.path)
        server = grpc.aio.server()
        add_admin_servicer(self._handlers, server)
        # The socket is born 0600 (umask), then made so explicitly: never a moment when
        # another user could connect.
        previous = os.umask(0o177)
        try:
            server.add_insecure_port(f"unix:{self.path}")
            await server.start()
        except RuntimeError as exc:
            raise AdminSocketError(f"cannot serve the admin socket {self.path}: {exc}") from None
        finally:
            os.umask(previous)
        os.chmod(self.path, 0o600)
        self._server = server

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is None:
            return
        await self._server.stop(grace)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
