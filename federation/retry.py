"""When a failed call to a peer is asked again, and how long to wait first.

Only an idempotent call is retried (Match, a read; never Fetch, which may open a ticket),
only on a transient status, never past the caller's deadline, and never with the same
bytes: a retry is a new request with a new nonce, signed again (the caller builds it), so a
node's replay protection never sees a request twice and its audit log shows each attempt
once.

Transient: `UNAVAILABLE` only (the peer could not be reached, its connection was reset, or
it said it cannot answer now, e.g. its policy engine is down). `DEADLINE_EXCEEDED` is not:
an attempt is given all the time that remains, so when it runs out there is none left to
try again in. A refusal (`PERMISSION_DENIED`, `UNAUTHENTICATED`), a request the peer cannot
accept (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `NOT_FOUND`) and anything else the peer
answered would be answered the same way again. `RESOURCE_EXHAUSTED` is not retried either:
a node says it for a message over its size limit, which no retry makes smaller, and a peer
that is overloaded says `UNAVAILABLE`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from federation.errors import LiaisonError, PeerUnavailable

TRANSIENT_STATUSES = frozenset({"UNAVAILABLE"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a call may take and how they are spaced.

    The wait before attempt n+1 is drawn uniformly from [0, min(cap_s, base_s * 2^(n-1))]
    ("full jitter"), so that many clients that failed together do not come back together.
    An attempt is only started with at least `min_attempt_s` left before the deadline: a
    call with less would only add a request to the peer's log that cannot be answered.
    """

    max_attempts: int = 3
    base_s: float = 0.05
    cap_s: float = 0.5
    min_attempt_s: float = 0.05

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (1: never retry)")
        if self.base_s < 0 or self.cap_s < 0 or self.min_attempt_s < 0:
            raise ValueError("base_s, cap_s and min_attempt_s must not be negative")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1)."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))

    def retryable(self, exc: LiaisonError, idempotent: bool) -> bool:
        """Whether a call that failed with `exc` may be asked again (as a new request)."""
        return (
            idempotent
            and isinstance(exc, PeerUnavailable)
            and exc.status in TRANSIENT_STATUSES
            and "circuit_open" not in exc.reasons
        )

    def next_wait(
        self,
        exc: LiaisonError,
        attempt: int,
        remaining: float,
        rng: random.Random,
        idempotent: bool,
    ) -> float | None:
        """The wait before another attempt, or None when there is to be none: not
        retryable, out of attempts, or too little time left after the wait."""
        if attempt >= self.max_attempts or not self.retryable(exc, idempotent):
            return None
        wait = self.backoff(attempt, rng)
        if remaining - wait < self.min_attempt_s:
            return None
        return wait


NO_RETRY = RetryPolicy(max_attempts=1)
