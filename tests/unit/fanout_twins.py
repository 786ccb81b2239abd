"""An in-memory twin of a peer's transport for the fan-out's unit tests: it answers like a
peer would (hit, no-hit, a refusal, an error, silence), attempt by attempt if scripted,
and remembers every request it was sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from federation.errors import InvalidRequest, PeerError, PeerRefused, PeerUnavailable
from federation.model import Envelope, Identifier, MatchAnswer, MatchQuery


@dataclass
class TwinTransport:
    """`behaviour` for every call, or `script[n]` for call n while the script lasts."""

    peer: str
    behaviour: str = "hit"
    delay: float = 0.0
    script: list[str] = field(default_factory=list)
    seen: list[tuple[MatchQuery, float]] = field(default_factory=list)
    cancelled: bool = False
    closed: bool = False
    in_flight: int = 0
    most_in_flight: int = 0

    async def match(self, query: MatchQuery, timeout: float) -> MatchAnswer:
        behaviour = self.script[len(self.seen)] if len(self.seen) < len(self.script) else None
        behaviour = behaviour or self.behaviour
        self.seen.append((query, timeout))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.in_flight -= 1
        return self._answer(behaviour)

    def _answer(self, behaviour: str) -> MatchAnswer:
        if behaviour == "refuse":
            raise PeerRefused(
                self.peer, "refused by policy", ("no_agreement",), "PERMISSION_DENIED"
            )
        if behaviour == "unavailable":
            raise PeerUnavailable(self.peer, "connection refused", ("unreachable",), "UNAVAILABLE")
        if behaviour == "deadline":
            raise PeerUnavailable(
                self.peer, "Deadline Exceeded", ("deadline_exceeded",), "DEADLINE_EXCEEDED"
            )
        if behaviour == "exhausted":
            raise InvalidRequest(self.peer, "message too large", (), "RESOURCE_EXHAUSTED")
        if behaviour == "invalid":
            raise InvalidRequest(
                self.peer,
                "category 'boat' is not one of ...",
                ("category_unknown",),
                "INVALID_ARGUMENT",
            )
        if behaviour == "error":
            raise PeerError(self.peer, "internal error", (), "INTERNAL")
        if behaviour == "crash":
            raise RuntimeError("a bug in the transport")
        hit = behaviour == "hit"
        return MatchAnswer(
            responder=self.peer,
            hit=hit,
            record_refs=("ref-1",) if hit else (),
            policy_revision="rev",
        )

    async def close(self) -> None:
        self.closed = True

    @property
    def nonces(self) -> list[bytes]:
        return [query.envelope.nonce for query, _ in self.seen]


def query(requester: str = "DE-BKA", nonce: bytes = b"") -> MatchQuery:
    return MatchQuery(
        envelope=Envelope(requester=requester, purpose="criminal_investigation", nonce=nonce),
        category="vehicle",
        identifiers=(Identifier("vin", "WVWZZZ1JZXW000001"),),
    )
