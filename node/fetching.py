"""The Fetch exchange (step 2) on plain objects: one record, by a hit's reference or an
approved ticket, disclosed only as the owner's policy allows.

By reference: open the reference (bound to its requester, expiring: node/references.py),
load the record (this node's own, or one it received: node/received.py), ask the policy
with the record's facts, then enforce every obligation of
the decision: `redact` removes the fields (absent, not blanked), `handling_code` and the
source restrictions travel with the record, `retention_days` tells the requester how long
it may keep it, and `require_approval` opens a ticket with the policy's
`approval_deadline_hours` instead of disclosing anything. A decision whose obligations are
not exactly what policies/CONTRACT.md gives a Fetch is a deny (`policy_error`): nothing here
falls back to a default.

A received record is passed on only as its owner's markings allow: the policy sees its own
facts (:meth:`ReceivedRecord.policy_facts`, whose `origin_country` is the first owner's), so
an H2 record or one with source restrictions is refused (policies/liaison/base/record.rego);
one that may go out keeps its owner's origin, handling code and restrictions, and is never
granted longer than this node itself may still keep it.

By ticket: only the requester that opened it may ask (anyone else hears `unknown_ticket`,
as for a ticket that never existed); an approved ticket's record goes out once, with the
policy's and the operator's redactions (`already_delivered` after that); any other state is
answered with the ticket's status.

What the audit entry needs (the category, the ticket, the withheld field names; never a
value) is noted in a :class:`Seen` as it becomes known, refusals included.

The stores are synchronous and run in worker threads; the policy is asked on the caller's
thread (an embedded engine is bound to the thread that built it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from federation.directory import Member
from federation.model import DisclosedRecord, Envelope, FetchAnswer, FetchQuery, TicketStatus
from federation.vocabulary import LegalBasis
from node.database import StoreUnavailable
from node.errors import Kind, Refusal, denied, step2
from node.policy import Decision
from node.policy.decision import KNOWN_OBLIGATIONS, OBLIGATION_SHAPES
from node.received import PREFIX as RECEIVED_PREFIX
from node.received import ReceivedRecord, ReceivedStore
from node.records import StoredRecord
from node.references import ReferenceRefused, References
from node.service import POLICY_INPUT_VERSION, NodeIdentity, policy_time, validate_envelope
from node.store import RecordStore
from node.ticket_desk import REFUSED_BY_OPERATOR, TICKET_EXPIRED
from node.tickets import (
    AlreadyDelivered,
    NotYourTicket,
    Ticket,
    TicketError,
    TicketExpired,
    TicketNotPending,
    TicketState,
    TicketStore,
    UnknownTicket,
)

log = logging.getLogger("liaison.node")
T = TypeVar("T")

# What an allowed Fetch carries, exactly (policies/CONTRACT.md); the deadline comes with,
# and only with, a required approval.
FETCH_OBLIGATIONS = frozenset({"handling_code", "redact", "require_approval", "retention_days"})
_WHY_NOT = {
    TicketState.REFUSED: REFUSED_BY_OPERATOR,
    TicketState.EXPIRED: TICKET_EXPIRED,
    TicketState.WITHDRAWN: "withdrawn",
}
_MAX_AUDITED_ID = 64
_DAY = timedelta(days=1)

# A record this node may be asked for: its own, or one it received from a peer.
Held = StoredRecord | ReceivedRecord


def stored_ref(record: Held) -> str:
    """The ref a hit seals and a ticket names: an own record's ref, a received one's id."""
    return record.id if isinstance(record, ReceivedRecord) else record.ref


def record_facts(node: NodeIdentity, record: Held) -> dict[str, Any]:
    """The ``record`` object of a Fetch policy input (policies/CONTRACT.md): an own
    record's origin is this node's country, a received one's is its first owner's."""
    if isinstance(record, ReceivedRecord):
        return record.policy_facts()
    return {
        "category": record.category,
        "handling_code": record.handling_code,
        "source_restrictions": list(record.source_restrictions),
        "origin_country": node.country,
    }


def granted_days(record: Held, days: int, now: datetime) -> int:
    """How long the requester may keep the record: what the policy grants, and for a
    received record never past the day this node must itself delete it (0 whole days
    left: shown to the requester, not kept)."""
    if isinstance(record, ReceivedRecord):
        return max(0, min(days, (record.retain_until - now) // _DAY))
    return days


@dataclass
class Seen:
    """What a Fetch learned that its audit entry records (names, never values), and what
    puts back the delivery it marked if its answer is not sent (`if_unsent`)."""

    category: str = ""
    ticket: str = ""
    withheld: tuple[str, ...] = ()
    if_unsent: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True)
class FetchDuties:
    """A Fetch decision's obligations, checked: what the node must do before (or instead
    of) disclosing. `approval_deadline_hours` is None when no approval is required."""

    handling_code: str
    redact: tuple[str, ...]
    retention_days: int
    approval_deadline_hours: int | None


def fetch_duties(decision: Decision) -> FetchDuties:
    """The obligations of an allowed Fetch, or a deny: an unknown obligation is
    `unknown_obligation`; a missing, misshapen or extra one is `policy_error` (approval
    without a deadline included: a ticket that could never expire is not opened)."""
    obligations = decision.obligations
    names = set(obligations)

    def error(why: str) -> Refusal:
        return denied(("policy_error",), f"the policy's Fetch obligations {why}", decision.revision)

    if names - KNOWN_OBLIGATIONS:
        raise denied(
            ("unknown_obligation",),
            "the policy set an obligation this node cannot enforce",
            decision.revision,
        )
    if not all(OBLIGATION_SHAPES[name](value) for name, value in obligations.items()):
        raise error("are not of the shape the contract gives them")
    if not names >= FETCH_OBLIGATIONS:
        raise error(f"lack {', '.join(sorted(FETCH_OBLIGATIONS - names))}")
    approval = obligations["require_approval"]
    extra = names - FETCH_OBLIGATIONS - ({"approval_deadline_hours"} if approval else set())
    if extra:
        raise error(f"include {', '.join(sorted(extra))}, which a Fetch does not carry")
    if approval and "approval_deadline_hours" not in names:
        raise error("require approval without a deadline")
    return FetchDuties(
        handling_code=obligations["handling_code"],
        redact=tuple(sorted(set(obligations["redact"]))),
        retention_days=obligations["retention_days"],
        approval_deadline_hours=obligations.get("approval_deadline_hours") if approval else None,
    )


def build_fetch_policy_input(
    node: NodeIdentity, member: Member, env: Envelope, record: Held, now: datetime
) -> dict[str, Any]:
    """The policy's view of a Fetch: facts about the request and the record, never a value
    (the case reference, the requester's file number, only under `jit`: a grant names it)."""
    return {
        "version": POLICY_INPUT_VERSION,
        "now": policy_time(now),
        "node": {"node_id": node.node_id, "country": node.country, "profile": node.profile},
        "requester": {
            "node_id": member.node_id,
            "country": member.country,
            "status": member.status.value,
        },
        "envelope": {
            "purpose": env.purpose,
            "legal_basis": env.legal_basis.value,
            "has_legal_reference": bool(env.legal_reference),
            "has_case_reference": bool(env.case_reference),
            # The value only where a JIT grant is named by it: elsewhere every case would
            # be a decision cache miss (benchmarks/fetch.py), and the policy needs no more.
            **({"case_reference": env.case_reference} if env.legal_basis is LegalBasis.JIT else {}),
        },
        "request": {
            "method": "Fetch",
            "category": record.category,
            "identifier_kinds": sorted({i.kind for i in record.identifiers}),
        },
        "record": record_facts(node, record),
    }


def canonical_payload(payload: Mapping[str, Any]) -> str:
    """The payload as the response carries it and the signature covers it: sorted keys,
    no spaces, UTF-8 text."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def disclose(
    record: Held,
    withheld: Collection[str],
    *,
    record_ref: str,
    handling_code: str,
    retention_days: int,
    origin_country: str,
) -> DisclosedRecord:
    """The record with every field in `withheld` removed; `withheld_fields` names those the
    record had (a redaction of a field it lacks withholds nothing)."""
    removed = tuple(sorted(set(withheld) & set(record.payload)))
    payload = {k: v for k, v in record.payload.items() if k not in removed}
    return DisclosedRecord(
        record_ref=record_ref,
        category=record.category,
        handling_code=handling_code,
        source_restrictions=tuple(record.source_restrictions),
        origin_country=origin_country,
        payload_json=canonical_payload(payload),
        withheld_fields=removed,
        retention_days=retention_days,
    )


def ticket_status(ticket: Ticket, now: datetime) -> TicketStatus:
    """A ticket as its requester may see it. A pending ticket past its deadline is told as
    expired: nobody can approve it any more, and the expiry job will move it shortly."""
    state, decided = ticket.state, ticket.decided_at
    if state is TicketState.PENDING and ticket.deadline_at <= now:
        state = TicketState.EXPIRED
    return TicketStatus(
        ticket_id=ticket.id,
        state=state.value,
        created_at=ticket.created_at,
        deadline_at=ticket.deadline_at,
        decided_at=decided,
        reason=_WHY_NOT.get(state, ""),
        delivered_at=ticket.delivered_at,
    )


def _store_unavailable(revision: str = "") -> Refusal:
    return Refusal(
        Kind.UNAVAILABLE,
        ("store_unavailable",),
        "the node could not read or write its records or tickets; nothing was disclosed, "
        "retry later",
        revision,
    )


def _unknown_ticket(ticket_id: str) -> Refusal:
    return step2("unknown_ticket", f"no ticket {ticket_id[:_MAX_AUDITED_ID]!r} of yours")


class FetchService:
    """Fetch and GetTicket for one node. `decide` asks the policy (with its deadline and
    its metrics: MatchService.decide); `clock` is injectable for tests."""

    def __init__(
        self,
        node: NodeIdentity,
        records: RecordStore,
        tickets: TicketStore,
        references: References,
        decide: Callable[[Mapping[str, Any]], Awaitable[Decision]],
        clock: Callable[[], datetime] | None = None,
        *,
        received: ReceivedStore | None = None,
    ) -> None:
        self._node = node
        self._records = records
        self._received = received
        self._tickets = tickets
        self._references = references
        self._decide = decide
        self._clock = clock or (lambda: datetime.now(UTC))

    async def fetch(
        self, member: Member, query: FetchQuery, entry_id: str, seen: Seen
    ) -> FetchAnswer:
        """The record, a ticket's status, or a Refusal. `entry_id` is the audit entry of
        this call (a ticket it opens names it)."""
        validate_envelope(member, query.envelope)
        now = self._clock()
        if query.ticket_id:
            return await self._collect(member, query, seen, now)
        try:
            opened = self._references.open(member.node_id, query.record_ref, now)
        except ReferenceRefused as exc:
            raise step2(exc.reason, str(exc)) from None
        record = await self._load(opened.stored_ref)
        if record is None:  # deleted since the hit: the same answer as any unknown reference
            raise step2("unknown_reference", "no such reference for this requester")
        seen.category = record.category
        env = query.envelope
        decision = await self._decide(
            build_fetch_policy_input(self._node, member, env, record, now)
        )
        if not decision.allow:
            raise denied(decision.reasons, "refused by the data owner's policy", decision.revision)
        duties = fetch_duties(decision)
        if duties.approval_deadline_hours is not None:
            hours = duties.approval_deadline_hours
            ticket = await self._blocking(
                lambda: self._tickets.open(
                    requester=member.node_id,
                    record_ref=stored_ref(record),
                    category=record.category,
                    purpose=env.purpose,
                    legal_basis=env.legal_basis,
                    legal_reference=env.legal_reference,
                    case_reference=env.case_reference,
                    handling_code=duties.handling_code,
                    redact=duties.redact,
                    retention_days=duties.retention_days,
                    deadline_at=now + timedelta(hours=hours),
                    request_entry=entry_id,
                    now=now,
                ),
                revision=decision.revision,
            )
            seen.ticket = ticket.id
            return FetchAnswer(
                responder=self._node.node_id,
                ticket=ticket_status(ticket, now),
                policy_revision=decision.revision,
            )
        disclosed = disclose(
            record,
            duties.redact,
            record_ref=query.record_ref,
            handling_code=duties.handling_code,
            retention_days=granted_days(record, duties.retention_days, now),
            origin_country=record_facts(self._node, record)["origin_country"],
        )
        seen.withheld = disclosed.withheld_fields
        return FetchAnswer(
            responder=self._node.node_id, record=disclosed, policy_revision=decision.revision
        )

    async def ticket(self, member: Member, ticket_id: str, seen: Seen) -> TicketStatus:
        """GetTicket: the status of a ticket `member` opened."""
        seen.ticket = ticket_id[:_MAX_AUDITED_ID]
        ticket = await self._own_ticket(member, ticket_id)
        seen.category = ticket.category
        return ticket_status(ticket, self._clock())

    async def withdraw(self, member: Member, ticket_id: str, seen: Seen) -> TicketStatus:
        """WithdrawTicket: the requester no longer needs a pending ticket's record, so no
        person at this node need decide it. Put back if its answer is not sent."""
        seen.ticket = ticket_id[:_MAX_AUDITED_ID]
        ticket = await self._own_ticket(member, ticket_id)
        seen.category = ticket.category
        now = self._clock()
        try:
            withdrawn = await self._blocking(self._tickets.withdraw, ticket.id, member.node_id, now)
        except (UnknownTicket, NotYourTicket):
            raise _unknown_ticket(ticket_id) from None
        except (TicketNotPending, TicketExpired) as exc:
            raise step2(
                "ticket_not_pending", f"{exc}: only a pending ticket can be withdrawn"
            ) from None
        seen.if_unsent = self._undo(withdrawn)
        return ticket_status(withdrawn, now)

    async def _collect(
        self, member: Member, query: FetchQuery, seen: Seen, now: datetime
    ) -> FetchAnswer:
        """Fetch by ticket: an approved ticket's record, once; otherwise its status."""
        ticket_id = query.ticket_id
        seen.ticket = ticket_id[:_MAX_AUDITED_ID]
        ticket = await self._own_ticket(member, ticket_id)
        seen.category = ticket.category
        if ticket.state is not TicketState.APPROVED:
            return FetchAnswer(responder=self._node.node_id, ticket=ticket_status(ticket, now))
        if ticket.delivered_at is not None:
            raise _already_delivered(ticket.id, ticket.delivered_at)
        record = await self._load(ticket.record_ref)
        if record is None:
            raise step2("unknown_reference", "the record of this ticket is no longer held")
        duties, revision = await self._still_allowed(member, query.envelope, ticket, record, now)
        # Marked before it leaves: of two collections at once, exactly one gets the record.
        try:
            ticket = await self._blocking(
                self._tickets.mark_delivered, ticket.id, member.node_id, now
            )
        except AlreadyDelivered as exc:
            raise _already_delivered(ticket.id, exc.delivered_at) from None
        except TicketError:  # gone or no longer approved in between: not the requester's
            raise _unknown_ticket(ticket_id) from None
        seen.if_unsent = self._undo(ticket)
        disclosed = disclose(
            record,
            sorted(set(ticket.withheld) | set(duties.redact)),
            record_ref=self._references.seal(member.node_id, stored_ref(record), now),
            handling_code=duties.handling_code,
            retention_days=granted_days(
                record, min(ticket.retention_days, duties.retention_days), now
            ),
            origin_country=record_facts(self._node, record)["origin_country"],
        )
        seen.withheld = disclosed.withheld_fields
        return FetchAnswer(responder=self._node.node_id, record=disclosed, policy_revision=revision)

    def _undo(self, moved: Ticket) -> Callable[[], Awaitable[None]]:
        """Put back a delivery or a withdrawal whose answer was never sent: the requester
        would be told `already_delivered` of a record it never received, or find withdrawn
        a ticket it was told nothing about."""

        async def undo() -> None:
            if await asyncio.to_thread(self._tickets.undo, moved):
                log.warning(
                    "ticket %s is put back: the answer that moved it was not sent", moved.id
                )

        return undo

    async def _still_allowed(
        self,
        member: Member,
        envelope: Envelope,
        ticket: Ticket,
        record: Held,
        now: datetime,
    ) -> tuple[FetchDuties, str]:
        """The policy asked again at collection, on the ticket's own purpose and legal
        ground: an agreement withdrawn, a country blocked or a marking raised since the
        approval must stop the record, as it would stop a new request. What the policy
        withholds now is withheld on top of the ticket's redactions."""
        asked = replace(
            envelope,
            purpose=ticket.purpose,
            legal_basis=ticket.legal_basis,
            legal_reference=ticket.legal_reference,
            case_reference=ticket.case_reference,
        )
        decision = await self._decide(
            build_fetch_policy_input(self._node, member, asked, record, now)
        )
        if not decision.allow:
            raise denied(
                decision.reasons,
                f"the data owner's policy no longer allows ticket {ticket.id} to be delivered",
                decision.revision,
            )
        return fetch_duties(decision), decision.revision

    async def _own_ticket(self, member: Member, ticket_id: str) -> Ticket:
        try:
            return await self._blocking(self._tickets.get, ticket_id, member.node_id)
        except (UnknownTicket, NotYourTicket):
            raise _unknown_ticket(ticket_id) from None

    async def _load(self, ref: str) -> Held | None:
        """The record a stored ref names: a received one (by its id) in a worker thread, an
        own one on the event loop as Match reads (one indexed statement on a kept
        connection: a worker thread would cost more than the read)."""
        if ref.startswith(RECEIVED_PREFIX):
            if self._received is None:
                return None
            return await self._blocking(self._received.get, ref)
        if not self._records.reads_on_loop:
            return await self._blocking(self._records.get, ref)
        try:
            return self._records.get(ref)
        except StoreUnavailable as exc:
            log.error("Fetch refused: %s", exc)
            raise _store_unavailable() from None

    async def _blocking(self, work: Callable[..., T], *args: Any, revision: str = "") -> T:
        """A store call in a worker thread; a database that cannot answer is a refusal."""
        try:
            return await asyncio.to_thread(work, *args)
        except StoreUnavailable as exc:
            log.error("Fetch refused: %s", exc)
            raise _store_unavailable(revision) from None


def _already_delivered(ticket_id: str, at: datetime | None) -> Refusal:
    when = f" at {at.isoformat()}" if at else ""
    return step2(
        "already_delivered",
        f"the record of ticket {ticket_id} was delivered{when}; a ticket delivers once",
    )
