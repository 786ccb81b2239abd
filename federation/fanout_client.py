"""The fan-out client: ask the federation's peers, asyncio (`FanoutClient`) or blocking
(`BlockingFanoutClient`), and get one result per peer, never an exception for what a peer
did.

    async with FanoutClient.from_directory(identity, directory) as client:
        results = await client.match(query, peers=ALL, deadline=2.0)
        for r in results:           # r.outcome: hit, no-hit, refused, invalid,
            ...                     #   unavailable, timed-out or error

The client keeps, across calls: one channel per peer, opened on first use and reused (with
keepalive, `federation.client.PEER_CHANNEL_OPTIONS`); a circuit breaker per peer
(`federation.breaker`); a limit on calls in flight, shared by every call on the client. Each
attempt to each peer is a new request: the query's envelope is the template, and every
attempt gets its own nonce and issue time (the template's are not used), signed anew.

It raises only `federation.errors.CallerError` (a peer it does not know, a query it cannot
send, a closed client), before anything is sent. `grpc.RpcError` never reaches the caller.
"""

from __future__ import annotations

import asyncio
import enum
import os
import random
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, Final, Protocol, TypeVar

from prometheus_client import CollectorRegistry

from federation.breaker import BreakerSettings, CircuitBreaker, ClientMetrics
from federation.client import ClientIdentity, MatchTransport, PeerClient
from federation.directory import Directory, Member, MemberStatus
from federation.errors import BadQuery, ClientClosed, UnknownPeer
from federation.fanout import Fanout, FanoutResult, PeerResult
from federation.model import MatchQuery
from federation.retry import RetryPolicy
from federation.serde import utc_now

T = TypeVar("T")


class _All(enum.Enum):
    ALL = "all"


ALL: Final = _All.ALL
"""Every active node in the directory but this one."""

DEFAULT_MAX_IN_FLIGHT = 32


class PeerTransport(MatchTransport, Protocol):
    """A peer's transport as the client keeps it: it can be closed."""

    async def close(self) -> None: ...


def fresh(query: MatchQuery) -> MatchQuery:
    """`query` as a new request: its own nonce and issue time."""
    envelope = replace(query.envelope, nonce=os.urandom(16), issued_at=utc_now())
    return replace(query, envelope=envelope)


class FanoutClient:
    """Ask many peers at once (asyncio). One per event loop; close it (or use `async with`)."""

    def __init__(
        self,
        identity: ClientIdentity,
        members: Sequence[Member],
        *,
        serial: Callable[[], int] = lambda: 0,
        endpoints: Mapping[str, str] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        retry: RetryPolicy | None = None,
        breaker: BreakerSettings | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[[Member], PeerTransport] | None = None,
        seed: int | None = None,
    ) -> None:
        """`members`: the peers this client may ask (`ALL`: the active nodes among them,
        but for ourselves). `endpoints` overrides a member's endpoint (e.g. a proxy); the
        peer is still verified by its certificate. `registry` receives the client's
        metrics (`federation.breaker.ClientMetrics`; a private registry by default).
        `connect` makes a peer's transport (default: a `PeerClient` over mTLS)."""
        if max_in_flight < 1:
            raise BadQuery("", "max_in_flight must be at least 1")
        self.node_id = identity.node_id
        self._identity = identity
        self._members = {m.node_id: m for m in members}
        self._serial = serial
        self._endpoints = dict(endpoints or {})
        self._limiter = asyncio.Semaphore(max_in_flight)
        self._retry = retry if retry is not None else RetryPolicy()
        self._breaker_settings = breaker if breaker is not None else BreakerSettings()
        self.metrics = ClientMetrics(registry)
        self._clock = clock
        self._connect = connect or self._peer_client
        self._rng = random.Random(seed)
        self._transports: dict[str, PeerTransport] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_directory(
        cls, identity: ClientIdentity, directory: Directory, **options: Any
    ) -> FanoutClient:
        """A client for the members of a (verified) directory, telling peers its serial."""
        return cls(identity, directory.members, serial=lambda: directory.serial, **options)

    @property
    def all_peers(self) -> tuple[str, ...]:
        """What `ALL` names: every active node but this one, in the directory's order."""
        return tuple(
            m.node_id
            for m in self._members.values()
            if m.node_id != self.node_id and m.status is MemberStatus.ACTIVE and m.is_node
        )

    def breaker(self, peer: str) -> CircuitBreaker:
        if peer not in self._breakers:
            self._breakers[peer] = CircuitBreaker(
                peer, self._breaker_settings, self.metrics, self._clock
            )
        return self._breakers[peer]

    def resolve(self, peers: Sequence[str] | _All) -> list[str]:
        """The peers a call names, checked: UnknownPeer for one that is not a node here."""
        if peers is ALL:
            return list(self.all_peers)
        if isinstance(peers, str):  # a common slip: "FR-DGPN" is not ["FR-DGPN"]
            raise BadQuery(peers, "peers is a sequence of node ids (or ALL), not one string")
        for peer in peers:
            member = self._members.get(peer)
            if member is None:
                raise UnknownPeer(peer, "not in the directory: check the node id")
            if not member.is_node:
                raise UnknownPeer(peer, "is an overseer, not a node: it answers no queries")
            if peer == self.node_id:
                raise UnknownPeer(peer, "is this node itself: ask your own records locally")
        return list(peers)

    def check(self, query: MatchQuery, deadline: float) -> None:
        """BadQuery for what no peer could accept, before anything is sent."""
        if self._closed:
            raise ClientClosed("", "this fan-out client is closed: make a new one")
        if not deadline > 0:
            raise BadQuery("", f"the deadline must be a positive number of seconds, not {deadline}")
        if not query.identifiers:
            raise BadQuery("", "a match names at least one identifier (e.g. a document number)")
        if query.envelope.requester != self.node_id:
            raise BadQuery(
                "",
                f"the envelope's requester is {query.envelope.requester!r}, but this client "
                f"signs as {self.node_id!r}: a peer would refuse it (requester_mismatch)",
            )

    async def match(
        self,
        query: MatchQuery,
        peers: Sequence[str] | _All = ALL,
        deadline: float = 2.0,
        on_result: Callable[[PeerResult], None] | None = None,
    ) -> FanoutResult:
        """Ask `peers` whether they hold a record matching `query`, all within `deadline`
        seconds: one result per peer, in the order named (`ALL`: the directory's order).
        `on_result` is called with each peer's result as soon as it is known."""
        self.check(query, deadline)
        named = self.resolve(peers)
        self._check_loop()
        fanout = Fanout(
            deadline=self._clock() + deadline,
            clock=self._clock,
            retry=self._retry,
            breakers=self.breaker,
            limiter=self._limiter,
            metrics=self.metrics,
            on_result=on_result,
            rng=self._rng,
        )
        return await fanout.run([self._transport(p) for p in named], lambda _t: fresh(query))

    def _check_loop(self) -> None:
        """gRPC's asyncio channels belong to the loop they were opened on."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise BadQuery(
                "",
                "this FanoutClient's channels belong to the event loop it was first used "
                "on: use it only there (one client per loop), or use BlockingFanoutClient "
                "from code without a loop",
            )

    def _transport(self, peer: str) -> PeerTransport:
        if peer not in self._transports:
            self._transports[peer] = self._connect(self._members[peer])
        return self._transports[peer]

    def _peer_client(self, member: Member) -> PeerClient:
        endpoint = self._endpoints.get(member.node_id)
        return PeerClient.for_member(self._identity, member, endpoint, self._serial)

    async def close(self) -> None:
        """Close every channel; the client cannot be used after."""
        self._closed = True
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.close()

    async def __aenter__(self) -> FanoutClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


class BlockingFanoutClient:
    """`FanoutClient` for code without an event loop: the same client, run on a private
    loop in a thread of its own; `on_result` is called on that thread. Thread-safe: calls
    from several threads share its channels, breakers and limit."""

    def __init__(self, identity: ClientIdentity, members: Sequence[Member], **options: Any):
        self._client = FanoutClient(identity, members, **options)  # checked before a thread
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="liaison-fanout", daemon=True
        )
        self._thread.start()

    @classmethod
    def from_directory(
        cls, identity: ClientIdentity, directory: Directory, **options: Any
    ) -> BlockingFanoutClient:
        return cls(identity, directory.members, serial=lambda: directory.serial, **options)

    @property
    def metrics(self) -> ClientMetrics:
        return self._client.metrics

    @property
    def all_peers(self) -> tuple[str, ...]:
        return self._client.all_peers

    def match(
        self,
        query: MatchQuery,
        peers: Sequence[str] | _All = ALL,
        deadline: float = 2.0,
        on_result: Callable[[PeerResult], None] | None = None,
    ) -> FanoutResult:
        """`FanoutClient.match`, blocking until every result is in (the deadline at most)."""
        if self._loop.is_closed():
            raise ClientClosed("", "this fan-out client is closed: make a new one")
        return self._run(self._client.match(query, peers, deadline, on_result))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> BlockingFanoutClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
