"""The running node's courier for its own notices: it works the outbox
(:mod:`node.notice_outbox`) until every recipient's copy is `delivered`, `refused` or
`expired`.

Each attempt is a NEW signed request with a fresh nonce and issue time (a request is never
replayed: a receiver would refuse it as `replayed`, and a stale one as `request_not_fresh`).
What an attempt's outcome means:

- an answer: `delivered` (the receiver holds that version, or a newer one);
- a refusal PERMISSION_DENIED, or a request the receiver calls invalid: `refused`, with its
  reasons (its policy said no, or the notice is not addressed to it; sending it again will
  not change that);
- `notice_expired`, or the notice's expiry passing while it is still owed: `expired`;
- anything else (the receiver is down, a deadline, a clock too far off, a signature it could
  not check yet because its directory is older): tried again after a jittered exponential
  backoff, `[notices] retry_initial_s` doubling up to `retry_max_s`, each delay drawn in
  [half, all] of it, so that a federation coming back from an outage is not hit by every
  node's retries in the same second.

An attempt is first claimed in the database (its attempt count goes up, and it is not due
again before its lease ends), so replicas of one node do not send the same attempt, and an
attempt cut short by a crash is made again by whichever replica comes next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from federation.client import ClientIdentity, PeerClient, new_envelope
from federation.directory import Directory, MemberStatus
from federation.errors import InvalidRequest, LiaisonError, PeerRefused
from federation.notices_model import Notice, PublishNoticeQuery, WithdrawNoticeQuery
from node.config import NodeConfig
from node.database import StoreUnavailable
from node.directory_state import DirectoryState
from node.notice_model import Delivery, DeliveryAction, DeliveryState
from node.notice_outbox import OutboxStore, Published

log = logging.getLogger("liaison.node")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: `initial_s` doubling per attempt up to `max_s`, each drawn
    in [half, all] of it (`rng` injectable for tests)."""

    initial_s: float
    max_s: float

    def delay(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        """The delay after the `attempts`-th failed attempt (1 for the first)."""
        ceiling = min(self.max_s, self.initial_s * 2.0 ** max(attempts - 1, 0))
        return float(ceiling * (0.5 + 0.5 * rng()))


@dataclass(frozen=True, slots=True)
class Outcome:
    state: DeliveryState
    reason: str = ""


class NoticeCourier:
    """Delivers this node's notices to their recipients (one task in the node process).

    `identity` reads the node's credentials as they are now (they may have rotated);
    `directory` is the directory in force; `serial` its serial, advertised on every call."""

    def __init__(
        self,
        node_id: str,
        outbox: OutboxStore,
        directory: Callable[[], Directory],
        identity: Callable[[], ClientIdentity],
        backoff: Backoff,
        *,
        serial: Callable[[], int] = lambda: 0,
        timeout_s: float = 10.0,
        poll_s: float = 5.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._node_id = node_id
        self._outbox = outbox
        self._directory = directory
        self._identity = identity
        self._backoff = backoff
        self._serial = serial
        self._timeout = timeout_s
        self._poll = poll_s
        self._now = now
        self._rng = rng
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something new is owed (a publication or a withdrawal): look now."""
        self._wake.set()

    async def run(self) -> None:
        """The node's delivery job: never stops on a failure (logged; tried again)."""
        while True:
            try:
                await self.deliver_due()
                pause = await asyncio.to_thread(self._until_next)
            except StoreUnavailable as exc:
                log.error("could not work the notice outbox: %s", exc)
                pause = self._poll
            except Exception:  # a bug must not end delivery for good: logged, tried again
                log.exception("the notice outbox failed; trying again")
                pause = self._poll
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)

    def _until_next(self) -> float:
        due = self._outbox.next_due()
        if due is None:
            return self._poll
        return min(self._poll, max((due - self._now()).total_seconds(), 0.05))

    async def deliver_due(self) -> list[Delivery]:
        """One attempt at every delivery due now, concurrently; what each left."""
        due = await asyncio.to_thread(self._outbox.due, self._now())
        done = await asyncio.gather(*(self.attempt(d) for d in due))
        return [d for d in done if d is not None]

    async def attempt(self, delivery: Delivery) -> Delivery | None:
        """Claim one attempt, make it, record its outcome; None if another worker had it."""
        now = self._now()
        lease = now + timedelta(seconds=self._timeout + self._backoff.initial_s)
        claimed = await asyncio.to_thread(self._outbox.claim, delivery, lease, now)
        if claimed is None:
            return None
        published = await asyncio.to_thread(self._outbox.get, claimed.notice_id)
        if published.notice.expires_at <= now:
            outcome = Outcome(DeliveryState.EXPIRED, "the notice expired before delivery")
        else:
            outcome = await self._send(claimed, published)
        after = self._now()
        retry_at = after
        if outcome.state is DeliveryState.PENDING:
            retry_at = after + timedelta(seconds=self._backoff.delay(claimed.attempts, self._rng))
        settled = await asyncio.to_thread(
            self._outbox.settle, claimed, outcome.state, outcome.reason, retry_at, after
        )
        self._log(claimed, outcome, retry_at)
        return settled

    async def _send(self, d: Delivery, published: Published) -> Outcome:
        member = self._directory().member(d.recipient)
        if member is None or not member.is_node:
            return Outcome(DeliveryState.REFUSED, "recipient_not_in_directory")
        if member.status is MemberStatus.REVOKED:
            return Outcome(DeliveryState.REFUSED, "member_revoked")
        n = published.notice
        env = new_envelope(
            self._node_id,
            n.purpose,
            legal_basis=n.legal_basis,
            legal_reference=published.legal_reference,
            case_reference=published.case_reference,
        )
        try:
            client = PeerClient.for_member(self._identity(), member, serial=self._serial)
        except (OSError, ValueError) as exc:
            return Outcome(DeliveryState.PENDING, f"cannot call {d.recipient}: {exc}")
        try:
            if d.action is DeliveryAction.PUBLISH:
                notice = Notice(
                    n.notice_id,
                    d.version,
                    n.category,
                    n.identifiers,
                    n.summary,
                    n.handling_code,
                    n.to_all_members,
                    n.recipients,
                    n.expires_at,
                )
                await client.publish_notice(PublishNoticeQuery(env, notice), self._timeout)
            else:
                query = WithdrawNoticeQuery(env, n.notice_id, d.version)
                await client.withdraw_notice(query, self._timeout)
        except LiaisonError as exc:
            return _outcome_of(exc)
        except Exception as exc:  # a reply we cannot read: try again, and say so
            log.exception("notice %s to %s: unexpected failure", d.notice_id, d.recipient)
            return Outcome(DeliveryState.PENDING, f"error: {type(exc).__name__}")
        finally:
            await client.close()
        return Outcome(DeliveryState.DELIVERED)

    def _log(self, d: Delivery, outcome: Outcome, retry_at: datetime) -> None:
        what = f"notice {d.notice_id} v{d.version} ({d.action}) to {d.recipient}"
        if outcome.state is DeliveryState.PENDING:
            log.info(
                "%s: attempt %d failed (%s); next at %s",
                what,
                d.attempts,
                outcome.reason,
                retry_at.isoformat(timespec="seconds"),
            )
        elif outcome.state is DeliveryState.REFUSED:
            log.warning("%s: refused (%s)", what, outcome.reason)
        else:
            log.info("%s: %s", what, outcome.state)


# Refusals that say the two nodes' directories disagree for now (one holds an older one):
# they pass once the directory has spread, so they are tried again, not final.
TRANSIENT = frozenset({"unknown_member", "certificate_not_in_directory", "directory_expired"})


def _outcome_of(exc: LiaisonError) -> Outcome:
    """What a failed attempt leaves: final for a refusal the receiver will repeat, pending
    (retry) for anything that may pass."""
    reasons = ", ".join(exc.reasons) or exc.status or "refused"
    if "notice_expired" in exc.reasons:
        return Outcome(DeliveryState.EXPIRED, "notice_expired")
    if TRANSIENT & set(exc.reasons):
        return Outcome(DeliveryState.PENDING, reasons)
    if isinstance(exc, PeerRefused) and exc.status == "PERMISSION_DENIED":
        return Outcome(DeliveryState.REFUSED, reasons)
    if isinstance(exc, InvalidRequest):
        return Outcome(DeliveryState.REFUSED, reasons)
    return Outcome(DeliveryState.PENDING, reasons)


def notice_courier(
    config: NodeConfig, outbox: OutboxStore, directory: DirectoryState
) -> NoticeCourier:
    """The courier of a node configured by `config` (`[notices]`), calling peers with the
    node's credentials as they are at each attempt (they may have rotated)."""
    section = config.notices
    return NoticeCourier(
        config.node.id,
        outbox,
        lambda: directory.current,
        config.client_identity,
        Backoff(section.retry_initial_s, section.retry_max_s),
        serial=lambda: directory.serial,
        timeout_s=section.timeout_s,
        poll_s=section.poll_interval_s,
    )
