"""The ExchangeService: its methods, declared for the one call path (`node.rpc.call_path`).

Each method here is the plain-object service step of the path: the caller is identified,
its request verified and parsed before it runs, and its answer is audited, counted, signed
where the method signs, and sent by the path after it returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from federation.directory import Member
from federation.methods import EXCHANGE_SERVICE
from federation.model import (
    Envelope,
    FetchAnswer,
    FetchQuery,
    MatchAnswer,
    MatchQuery,
    TicketQuery,
    TicketStatus,
    WithdrawAnswer,
)
from federation.notices_model import NoticeReceipt, PublishNoticeQuery, WithdrawNoticeQuery
from federation.serde import (
    fetch_answer_to_bytes,
    fetch_query_from_bytes,
    get_directory_request_from_bytes,
    get_ticket_request_from_bytes,
    match_answer_to_bytes,
    match_query_from_bytes,
    signed_directory_to_bytes,
    ticket_status_to_bytes,
)
from federation.serde_notices import (
    publish_notice_request_from_bytes,
    publish_receipt_to_bytes,
    withdraw_notice_request_from_bytes,
    withdraw_receipt_to_bytes,
)
from federation.serde_tickets import (
    ticket_status_body,
    watch_frame,
    watch_query_from_bytes,
    withdraw_answer_to_bytes,
    withdraw_query_from_bytes,
)
from node.directory_sources import advertised_serial
from node.directory_state import DirectoryState
from node.fetching import FetchService, Seen
from node.metrics import NodeMetrics
from node.notice_service import NoticeService
from node.rpc.call_path import Call, Facts, Method, Service
from node.rpc.streams import streaming
from node.service import MatchService
from node.ticket_watch import TicketWatches, Watch, validate_ticket_envelope

SERVICE_NAME = EXCHANGE_SERVICE


class ExchangeHandlers:
    def __init__(
        self,
        service: MatchService,
        directory: DirectoryState,
        fetcher: Callable[[Member], Callable[[], Awaitable[bytes]]],
        fetching: FetchService,
        watches: TicketWatches,
        notices: NoticeService,
    ) -> None:
        self._service = service
        self._fetching = fetching
        self._watches = watches
        self._notices = notices
        self._directory = directory
        self._fetcher = fetcher

    def service(self) -> Service:
        return Service(
            SERVICE_NAME,
            [
                Method(
                    "Match",
                    match_query_from_bytes,
                    self.match,
                    match_answer_to_bytes,
                    envelope=_envelope,
                    nodes_only=True,
                    facts=_match_facts,
                    counted=_count_match,
                ),
                Method(
                    "GetDirectory",
                    get_directory_request_from_bytes,
                    self.get_directory,
                    _directory_response,
                ),
                Method(
                    "Fetch",
                    fetch_query_from_bytes,
                    self.fetch,
                    fetch_answer_to_bytes,
                    envelope=_fetch_envelope,
                    nodes_only=True,
                    facts=_fetch_facts,
                    counted=_count_fetch,
                ),
                Method(
                    "GetTicket",
                    get_ticket_request_from_bytes,
                    self.get_ticket,
                    ticket_status_to_bytes,
                    nodes_only=True,
                    facts=_ticket_facts,
                ),
                Method(
                    "WithdrawTicket",
                    withdraw_query_from_bytes,
                    self.withdraw_ticket,
                    withdraw_answer_to_bytes,
                    envelope=_watch_envelope,
                    nodes_only=True,
                    facts=_watch_facts,
                ),
                Method(
                    "PublishNotice",
                    publish_notice_request_from_bytes,
                    self.publish_notice,
                    publish_receipt_to_bytes,
                    envelope=_publish_envelope,
                    nodes_only=True,
                    facts=_publish_facts,
                ),
                Method(
                    "WithdrawNotice",
                    withdraw_notice_request_from_bytes,
                    self.withdraw_notice,
                    withdraw_receipt_to_bytes,
                    envelope=_withdraw_envelope,
                    nodes_only=True,
                    facts=_withdraw_facts,
                ),
            ],
            revision=lambda: self._service.policy_revision,
            on_identified=self.learn,
            streams=[
                streaming(
                    "WatchTicket",
                    watch_query_from_bytes,
                    self.watch_ticket,
                    ticket_status_body,
                    watch_frame,
                    envelope=_watch_envelope,
                    nodes_only=True,
                    facts=_watch_facts,
                ),
            ],
        )

    async def match(self, call: Call, query: MatchQuery) -> MatchAnswer:
        answer = await self._service.match(call.member, query, audit_entry=call.entry_id)
        call.revision = answer.policy_revision
        if answer.hit:  # the entry records that it matched (never what): `outcome`
            call.facts = Facts(query.category, outcome="hit")
        return answer

    async def fetch(self, call: Call, query: FetchQuery) -> FetchAnswer:
        seen = Seen(ticket=query.ticket_id[:64])
        try:
            answer = await self._fetching.fetch(call.member, query, call.entry_id, seen)
        finally:
            call.facts = Facts(seen.category, seen.ticket, seen.withheld)
            call.if_unsent = seen.if_unsent
        call.facts = dataclasses.replace(call.facts, outcome=_fetch_outcome(query, answer))
        call.revision = answer.policy_revision or call.revision
        return dataclasses.replace(answer, policy_revision=call.revision, audit_entry=call.entry_id)

    async def get_ticket(self, call: Call, ticket_id: str) -> TicketStatus:
        seen = Seen(ticket=ticket_id[:64])
        try:
            return await self._fetching.ticket(call.member, ticket_id, seen)
        finally:
            call.facts = Facts(seen.category, seen.ticket)

    async def withdraw_ticket(self, call: Call, query: TicketQuery) -> WithdrawAnswer:
        """The requester withdraws a pending ticket it opened; its watchers are told."""
        validate_ticket_envelope(call.member, query.envelope)
        seen = Seen(ticket=query.ticket_id[:64])
        try:
            status = await self._fetching.withdraw(call.member, query.ticket_id, seen)
        finally:
            call.facts = Facts(seen.category, seen.ticket)
            call.if_unsent = seen.if_unsent
        self._watches.changed(query.ticket_id)
        return WithdrawAnswer(status, call.entry_id)

    async def watch_ticket(self, call: Call, query: TicketQuery) -> Watch:
        """A watch of a ticket `call.member` opened: its status now (audited with the
        call), then each change until it is decided (node/ticket_watch.py)."""
        seen = Seen(ticket=query.ticket_id[:64])
        try:
            return await self._watches.open(call.member, query, seen)
        finally:
            call.facts = Facts(seen.category, seen.ticket)

    async def publish_notice(self, call: Call, query: PublishNoticeQuery) -> NoticeReceipt:
        """A peer's notice: this node's own policy decides whether it is accepted."""
        receipt = await self._notices.publish(call.member, query)
        call.revision = receipt.policy_revision or call.revision
        return dataclasses.replace(
            receipt, policy_revision=call.revision, audit_entry=call.entry_id
        )

    async def withdraw_notice(self, call: Call, query: WithdrawNoticeQuery) -> NoticeReceipt:
        """A peer withdraws one of its notices (only its publisher may)."""
        receipt = await self._notices.withdraw(call.member, query)
        return dataclasses.replace(receipt, audit_entry=call.entry_id)

    async def get_directory(self, call: Call, known_serial: int) -> tuple[int, bytes]:
        """The signed directory we hold, whatever serial the caller holds: the authority's
        signature covers it, and the caller verifies and decides.

        Audited like every request (who fetched which serial), though it discloses nothing
        but the federation's public membership list.
        """
        return self._directory.signed()

    def learn(self, call: Call) -> None:
        """A caller that holds a newer directory than ours says so on every call: fetch it
        from that caller in the background (verified like any other; never blocks)."""
        member = call.member
        if not member.is_node or not member.endpoint:  # nothing to fetch from
            return
        serial = advertised_serial(call.metadata)
        if serial is not None and serial > self._directory.serial:
            self._directory.learn_from_peer(member.node_id, serial, self._fetcher(member))


def _envelope(query: MatchQuery) -> Envelope:
    return query.envelope


def _match_facts(query: MatchQuery) -> Facts:
    return Facts(category=query.category)


def _fetch_envelope(query: FetchQuery) -> Envelope:
    return query.envelope


def _fetch_facts(query: FetchQuery) -> Facts:
    return Facts(ticket=query.ticket_id[:64])


def _fetch_outcome(query: FetchQuery, answer: FetchAnswer) -> str:
    """What a served Fetch achieved, for its audit entry: a record disclosed, or (asked by
    reference) a ticket opened; "" for a ticket's status."""
    if answer.record is not None:
        return "delivered"
    if answer.ticket is not None and not query.ticket_id:
        return "ticket_opened"
    return ""


def _ticket_facts(ticket_id: str) -> Facts:
    return Facts(ticket=ticket_id[:64])


def _watch_envelope(query: TicketQuery) -> Envelope:
    return query.envelope


def _watch_facts(query: TicketQuery) -> Facts:
    return Facts(ticket=query.ticket_id[:64])


def _publish_envelope(query: PublishNoticeQuery) -> Envelope:
    return query.envelope


def _withdraw_envelope(query: WithdrawNoticeQuery) -> Envelope:
    return query.envelope


def _publish_facts(query: PublishNoticeQuery) -> Facts:
    """The notice, its category and how many identifiers it named: never a value, never
    the summary."""
    n = query.notice
    return Facts(
        category=n.category[:64],
        notice=f"{n.notice_id[:64]}@{n.version}",
        identifiers=len(n.identifiers),
    )


def _withdraw_facts(query: WithdrawNoticeQuery) -> Facts:
    return Facts(notice=f"{query.notice_id[:64]}@{query.version}")


def _count_fetch(metrics: NodeMetrics, peer: str, query: FetchQuery, answer: FetchAnswer) -> None:
    """What an answered Fetch achieved (`liaison_exchanges_total`), and how many fields
    were withheld from the record it disclosed (never which values)."""
    if answer.record is not None:
        outcome = "delivered_ticket" if query.ticket_id else "delivered"
        if answer.record.withheld_fields:
            metrics.fetch_withheld_fields.labels(peer).inc(len(answer.record.withheld_fields))
    else:
        outcome = "ticket_status" if query.ticket_id else "ticket_opened"
    metrics.exchanges.labels(peer, "Fetch", outcome).inc()


def _count_match(metrics: NodeMetrics, peer: str, query: MatchQuery, answer: MatchAnswer) -> None:
    if answer.hit:
        metrics.hits.labels(peer, query.category).inc()
    metrics.exchanges.labels(peer, "Match", "hit" if answer.hit else "no_hit").inc()


def _directory_response(signed: tuple[int, bytes]) -> bytes:
    return signed_directory_to_bytes(*signed)
