"""Ask many peers at once, each within one shared deadline, and keep every partial result.

A slow or broken peer never hides the answers of the others: each peer's outcome is one of
hit, no-hit, refused (with reasons), invalid, unavailable or error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from federation.client import MatchTransport
from federation.errors import (
    InvalidRequest,
    LiaisonError,
    PeerRefused,
    PeerUnavailable,
)
from federation.model import MatchAnswer, MatchQuery


class Outcome(StrEnum):
    HIT = "hit"
    NO_HIT = "no-hit"
    REFUSED = "refused"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class PeerResult:
    peer: str
    outcome: Outcome
    elapsed_ms: float
    answer: MatchAnswer | None = None
    reasons: tuple[str, ...] = ()
    message: str = ""


def _outcome_of(exc: LiaisonError) -> Outcome:
    if isinstance(exc, PeerRefused):
        return Outcome.REFUSED
    if isinstance(exc, PeerUnavailable):
        return Outcome.UNAVAILABLE
    if isinstance(exc, InvalidRequest):
        return Outcome.INVALID
    return Outcome.ERROR


async def _one(
    transport: MatchTransport, query: MatchQuery, deadline: float, clock: Callable[[], float]
) -> PeerResult:
    started = clock()
    remaining = deadline - started
    try:
        if remaining <= 0:
            raise TimeoutError
        answer = await asyncio.wait_for(transport.match(query, remaining), remaining + 0.05)
    except LiaisonError as exc:
        return PeerResult(
            transport.peer,
            _outcome_of(exc),
            (clock() - started) * 1000,
            reasons=exc.reasons,
            message=exc.message,
        )
    except TimeoutError:
        return PeerResult(
            transport.peer,
            Outcome.UNAVAILABLE,
            (clock() - started) * 1000,
            reasons=("deadline_exceeded",),
            message="no answer within deadline",
        )
    except Exception as exc:  # one broken transport must not hide the other peers' answers
        return PeerResult(
            transport.peer,
            Outcome.ERROR,
            (clock() - started) * 1000,
            reasons=("client_error",),
            message=f"{type(exc).__name__}: {exc}",
        )
    outcome = Outcome.HIT if answer.hit else Outcome.NO_HIT
    return PeerResult(transport.peer, outcome, (clock() - started) * 1000, answer=answer)


async def match_all(
    transports: Sequence[MatchTransport],
    make_query: Callable[[MatchTransport], MatchQuery],
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[PeerResult]:
    """Query every transport concurrently; results come back in the transports' order.

    `make_query` builds each peer's query so that every peer gets its own nonce.
    """
    deadline = clock() + timeout
    return list(
        await asyncio.gather(*(_one(t, make_query(t), deadline, clock) for t in transports))
    )
