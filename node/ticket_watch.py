"""WatchTicket on plain objects: a requester follows one of its tickets until it is decided.

A watch sends the ticket's status when it opens, then again each time the status changes,
and ends once the ticket is decided (approved, refused, expired or withdrawn: what the
requester waits for; the delivery that may follow an approval is the requester's own
Fetch, so nothing after the decision is waited for).

Changes are found two ways: the ticket desk tells :meth:`TicketWatches.changed` when it
moves a ticket (an operator's approval or refusal on this node, the expiry job), which
wakes that ticket's watchers at once; and every watch reads its ticket again every
``[tickets] watch_poll_s`` anyway, for what the desk of this process never sees (another
replica's operators, a pending ticket passing its deadline).

Each peer holds at most ``[tickets] max_watches_per_peer`` watches open at once (a slot is
taken when a watch opens and given back when it ends, however it ends, the client's
cancellation included): a watch costs the node a task and a read per poll for as long as
the ticket is pending, days perhaps, so a peer must not open them without bound.

When the node stops, :meth:`TicketWatches.close` ends every watch with UNAVAILABLE
(``node_stopping``) at once, rather than leave the server's grace period to cut them: the
client subscribes again once the node is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from federation.directory import Member, MemberStatus
from federation.model import Envelope, TicketQuery, TicketStatus
from federation.vocabulary import PURPOSES
from node.errors import Kind, Refusal, denied, invalid
from node.fetching import FetchService, Seen

log = logging.getLogger("liaison.node")

NODE_STOPPING = "node_stopping"
TOO_MANY_WATCHES = "too_many_watches"


def node_stopping() -> Refusal:
    return Refusal(
        Kind.UNAVAILABLE,
        (NODE_STOPPING,),
        "the node is stopping: watch the ticket again (a new request) once it is back",
    )


def validate_ticket_envelope(member: Member, env: Envelope) -> None:
    """The envelope of a request about a ticket (WatchTicket, WithdrawTicket): its requester
    must be the caller; its purpose may be empty (the ticket keeps the purpose it was
    opened for), but if given it must be a federation purpose, since the audit entry
    records it."""
    if env.requester != member.node_id:
        raise denied(
            ("requester_mismatch",),
            f"envelope.requester {env.requester!r} is not the certificate's node "
            f"{member.node_id!r}",
        )
    if env.purpose and env.purpose not in PURPOSES:
        raise invalid(
            "purpose_unknown",
            f"envelope.purpose {env.purpose[:64]!r} is not a federation purpose (one of "
            f"{', '.join(sorted(PURPOSES))}); it may also be left empty for a watch",
        )


class TicketWatches:
    """The watches open on this node: their slots, their wake-ups, and the node's stop.

    ``on_count(peer, open)`` is told how many watches a peer holds after each change (the
    node sets its gauge with it). Runs on the node's event loop only."""

    def __init__(
        self,
        fetching: FetchService,
        *,
        poll_s: float,
        max_per_peer: int,
        on_count: Callable[[str, int], None] = lambda peer, n: None,
        member: Callable[[str], Member | None] | None = None,
    ) -> None:
        if poll_s <= 0 or max_per_peer < 1:
            raise ValueError("watch_poll_s must be positive and max_watches_per_peer >= 1")
        self._fetching = fetching
        self._poll = poll_s
        self._max = max_per_peer
        self._on_count = on_count
        self._member = member
        self._open: Counter[str] = Counter()
        self._wakers: dict[str, set[asyncio.Event]] = {}
        self._closing = False

    def open_count(self, peer: str) -> int:
        return self._open[peer]

    def changed(self, ticket_id: str) -> None:
        """A ticket moved (the desk says so): wake its watchers now, not at their next poll."""
        for waker in self._wakers.get(ticket_id, ()):
            waker.set()

    def close(self) -> None:
        """The node is stopping: every open watch ends with ``node_stopping``, and no new
        one opens."""
        self._closing = True
        for wakers in self._wakers.values():
            for waker in wakers:
                waker.set()

    async def open(self, member: Member, query: TicketQuery, seen: Seen) -> Watch:
        """A watch of `query.ticket_id`, its first status read; or a Refusal (the peer holds
        all its slots, another node's or an unknown ticket, the node stopping)."""
        validate_ticket_envelope(member, query.envelope)
        seen.ticket = query.ticket_id[:64]
        if self._closing:
            raise node_stopping()
        peer = member.node_id
        if self._open[peer] >= self._max:
            raise Refusal(
                Kind.TOO_MANY,
                (TOO_MANY_WATCHES,),
                f"{peer} already holds {self._max} open WatchTicket streams on this node (its "
                "[tickets] max_watches_per_peer): end one first, or poll GetTicket",
            )
        waker = asyncio.Event()
        self._take(peer, query.ticket_id, waker)
        ticket_id = query.ticket_id
        try:
            # Registered before the first read: a change during it wakes the first wait.
            first = await self._fetching.ticket(member, ticket_id, seen)
        except BaseException:
            self._give_back(peer, ticket_id, waker)
            raise

        async def read() -> TicketStatus:
            self._still_member(peer)
            return await self._fetching.ticket(member, ticket_id, Seen())

        return Watch(
            first,
            read,
            waker,
            poll_s=self._poll,
            stopping=lambda: self._closing,
            on_close=lambda: self._give_back(peer, ticket_id, waker),
        )

    def _still_member(self, peer: str) -> None:
        """A watch may stay open for days: a peer revoked from the federation (or dropped
        from its directory) meanwhile loses it at the next poll, as a new call would be
        refused. (`member`, the directory's entry for a node id, unset checks nothing.)"""
        if self._member is None:
            return
        now = self._member(peer)
        if now is None or now.status is MemberStatus.REVOKED:
            raise denied(
                ("member_revoked" if now else "unknown_member",),
                f"{peer} is no longer an active member of the federation directory; "
                "its ticket watch ends",
            )

    def _take(self, peer: str, ticket_id: str, waker: asyncio.Event) -> None:
        self._open[peer] += 1
        self._wakers.setdefault(ticket_id, set()).add(waker)
        self._on_count(peer, self._open[peer])

    def _give_back(self, peer: str, ticket_id: str, waker: asyncio.Event) -> None:
        self._open[peer] -= 1
        left = self._open[peer]
        if left <= 0:
            del self._open[peer]
        wakers = self._wakers.get(ticket_id)
        if wakers is not None:
            wakers.discard(waker)
            if not wakers:
                del self._wakers[ticket_id]
        self._on_count(peer, max(left, 0))


class Watch:
    """One open watch: `first` (the status when it opened), then :meth:`rest`. `read`
    reads the ticket now; `waker` is set when the desk changed it; `stopping` says the
    node is stopping; `close` gives the watch's slot back (the call path calls it however
    the stream ends; once)."""

    def __init__(
        self,
        first: TicketStatus,
        read: Callable[[], Awaitable[TicketStatus]],
        waker: asyncio.Event,
        *,
        poll_s: float,
        stopping: Callable[[], bool],
        on_close: Callable[[], None],
    ) -> None:
        self.first = first
        self._read_now = read
        self._waker = waker
        self._poll = poll_s
        self._stopping = stopping
        self._on_close: Callable[[], None] | None = on_close

    async def rest(self) -> AsyncIterator[TicketStatus]:
        """Each later status that differs from the one before, until one is decided."""
        last = self.first
        while not last.decided:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._waker.wait()
            self._waker.clear()  # before the read: a change during it wakes the next wait
            if self._stopping():
                raise node_stopping()
            status = await self._read()
            if status is not None and status != last:
                last = status
                yield status

    async def _read(self) -> TicketStatus | None:
        """The ticket now; None when the store cannot answer (tried again at the next poll,
        rather than end a watch that may have waited for days)."""
        try:
            return await self._read_now()
        except Refusal as exc:
            if "store_unavailable" not in exc.reasons:
                raise
            log.warning("a ticket watch could not read its ticket: %s; trying again", exc)
            return None

    def close(self) -> None:
        done, self._on_close = self._on_close, None
        if done is not None:
            done()
