"""PublishNotice and WithdrawNotice on plain objects: the receiving node's side of notices.

A notice is checked (each check names its field), its identifiers normalised like a
query's, and then the receiver's **own policy** decides (policies/CONTRACT.md: the input
holds the category, the identifier kinds, the handling code and who it is addressed to,
never a value or the summary). Accepted, it is stored and matched from then on; it is kept
at most the policy's `retention_days`, and never past its expiry.

Receipt is idempotent by (publisher, notice id, version): a version this node already holds
(or an older one) is answered with the version held, without asking the policy again and
without storing anything, so a redelivery after a lost answer gets the same answer. A
withdrawal needs no policy: only the notice's publisher may make it (`not_publisher`),
the publisher being the node the requester's certificate names.

The summary is free text from another country: bounded, without control characters, and
never written to a log (its length is logged); the audit entry records the notice, its
category and how many identifiers it had, never their values.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from federation.directory import Member
from federation.model import Identifier
from federation.notices_model import Notice, NoticeReceipt, PublishNoticeQuery, WithdrawNoticeQuery
from federation.vocabulary import (
    HANDLING_CODES,
    IDENTIFIER_KINDS,
    MAX_IDENTIFIER_LENGTH,
    MAX_NOTICE_SUMMARY,
    NOTICE_CATEGORIES,
)
from node.database import StoreUnavailable
from node.errors import Kind, Refusal, denied, invalid
from node.metrics import NodeMetrics
from node.normalise import NormalisationError, normalise_identifier
from node.notice_model import NoticeState, StoredNotice
from node.notices import NoticeStore
from node.policy import Decision
from node.policy.decision import KNOWN_OBLIGATIONS, OBLIGATION_SHAPES
from node.service import MAX_IDENTIFIERS, POLICY_INPUT_VERSION, NodeIdentity, policy_time
from node.service import validate_envelope as check_envelope

log = logging.getLogger("liaison.node")
T = TypeVar("T")
NOTICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
# Line breaks and tabs are layout; every other control character (C0, DEL, C1) is refused:
# it could rewrite what an officer's terminal shows.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
NOTICE_OBLIGATIONS = frozenset({"retention_days"})


def check_summary(summary: str) -> None:
    if len(summary) > MAX_NOTICE_SUMMARY:
        raise invalid(
            "summary_invalid",
            f"notice.summary is {len(summary)} characters; at most {MAX_NOTICE_SUMMARY}",
        )
    if _CONTROL.search(summary):
        raise invalid(
            "summary_invalid",
            "notice.summary holds a control character (only line breaks and tabs are allowed)",
        )


def check_notice_id(notice_id: str) -> None:
    if not NOTICE_ID.fullmatch(notice_id):
        raise invalid(
            "notice_id_invalid",
            "notice_id must be 1 to 64 letters, digits, '_' or '-', starting with a letter "
            "or digit",
        )


def check_notice(notice: Notice) -> None:
    """What no policy should even be asked about; each check names its field."""
    check_notice_id(notice.notice_id)
    if notice.version < 1:
        raise invalid("version_invalid", "notice.version starts at 1")
    if notice.category not in NOTICE_CATEGORIES:
        raise invalid(
            "category_unknown",
            f"notice.category {notice.category[:64]!r} is not one of "
            f"{', '.join(sorted(NOTICE_CATEGORIES))}",
        )
    if not notice.identifiers:
        raise invalid("identifiers_missing", "a notice names at least one identifier")
    if len(notice.identifiers) > MAX_IDENTIFIERS:
        raise invalid("too_many_identifiers", f"at most {MAX_IDENTIFIERS} identifiers a notice")
    kinds = IDENTIFIER_KINDS[notice.category]
    for i, ident in enumerate(notice.identifiers):
        if ident.kind not in kinds:
            raise invalid(
                "identifier_kind_unknown",
                f"notice.identifiers[{i}].kind {ident.kind[:64]!r} is not used for "
                f"{notice.category} (one of {', '.join(sorted(kinds))})",
            )
        if not ident.value or len(ident.value) > MAX_IDENTIFIER_LENGTH:
            raise invalid(
                "identifier_invalid",
                f"notice.identifiers[{i}].value must be 1 to {MAX_IDENTIFIER_LENGTH} "
                f"characters, got {len(ident.value)}",
            )
    check_summary(notice.summary)
    if notice.handling_code not in HANDLING_CODES:
        raise invalid(
            "handling_code_invalid",
            f"notice.handling_code must be one of {', '.join(sorted(HANDLING_CODES))}",
        )
    if notice.expires_at is None:
        raise invalid("expiry_missing", "notice.expires_at is required: a notice must expire")


def normalised(identifiers: tuple[Identifier, ...]) -> tuple[Identifier, ...]:
    """The identifiers as records store them, so that they match however they were typed."""
    try:
        return tuple(Identifier(i.kind, normalise_identifier(i.kind, i.value)) for i in identifiers)
    except NormalisationError as exc:
        raise invalid("identifier_invalid", f"identifier {exc.field}: {exc}") from None


def build_notice_policy_input(
    node: NodeIdentity, member: Member, query: PublishNoticeQuery, now: datetime
) -> dict[str, Any]:
    """The policy's view of a PublishNotice: facts only, never a value or the summary."""
    env, notice = query.envelope, query.notice
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
        },
        "request": {
            "method": "PublishNotice",
            "category": notice.category,
            "identifier_kinds": sorted({i.kind for i in notice.identifiers}),
        },
        "notice": {
            "handling_code": notice.handling_code,
            "addressed_to": "all_members" if notice.to_all_members else "named",
        },
    }


def retention(decision: Decision) -> int:
    """The one obligation an allowed PublishNotice carries; anything else is a deny."""
    names = set(decision.obligations)
    if names - KNOWN_OBLIGATIONS:
        raise denied(
            ("unknown_obligation",),
            "the policy set an obligation this node cannot enforce",
            decision.revision,
        )
    value = decision.obligations.get("retention_days")
    if names != NOTICE_OBLIGATIONS or not OBLIGATION_SHAPES["retention_days"](value):
        raise denied(
            ("policy_error",),
            "the policy's PublishNotice obligations are not exactly retention_days",
            decision.revision,
        )
    assert isinstance(value, int)
    return value


class NoticeService:
    """The receiving side of notices for one node. `decide` asks the policy (with its
    deadline and metrics: MatchService.decide); `clock` is injectable for tests."""

    def __init__(
        self,
        node: NodeIdentity,
        notices: NoticeStore,
        decide: Callable[[Mapping[str, Any]], Awaitable[Decision]],
        metrics: NodeMetrics,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._node = node
        self._notices = notices
        self._decide = decide
        self._metrics = metrics
        self._clock = clock or (lambda: datetime.now(UTC))

    async def publish(self, member: Member, query: PublishNoticeQuery) -> NoticeReceipt:
        try:
            receipt, outcome = await self._publish(member, query)
        except Refusal:
            self._metrics.notices_received.labels(member.node_id, "refused").inc()
            raise
        self._metrics.notices_received.labels(member.node_id, outcome).inc()
        return receipt

    async def _publish(
        self, member: Member, query: PublishNoticeQuery
    ) -> tuple[NoticeReceipt, str]:
        check_envelope(member, query.envelope)
        notice = query.notice
        check_notice(notice)
        now = self._clock()
        assert notice.expires_at is not None
        if notice.expires_at <= now:
            raise Refusal(
                Kind.NOT_YET,
                ("notice_expired",),
                f"notice {notice.notice_id} expired at {notice.expires_at.isoformat()}",
            )
        if not notice.to_all_members and self._node.node_id not in notice.recipients:
            raise denied(
                ("not_a_recipient",),
                f"notice {notice.notice_id} is not addressed to {self._node.node_id}",
            )
        identifiers = normalised(notice.identifiers)
        held = await self._blocking(self._notices.held, member.node_id, notice.notice_id)
        if held is not None and held.version >= notice.version:
            return self._receipt(held, ""), "duplicate"
        decision = await self._decide(build_notice_policy_input(self._node, member, query, now))
        if not decision.allow:
            raise denied(decision.reasons, "refused by the receiver's policy", decision.revision)
        days = retention(decision)
        stored = StoredNotice(
            publisher=member.node_id,
            notice_id=notice.notice_id,
            version=notice.version,
            category=notice.category,
            identifiers=identifiers,
            summary=notice.summary,
            handling_code=notice.handling_code,
            to_all_members=notice.to_all_members,
            recipients=notice.recipients,
            expires_at=notice.expires_at,
            active_until=min(notice.expires_at, now + timedelta(days=days)),
            state=NoticeState.ACTIVE,
            created_at=now,
            updated_at=now,
            purpose=query.envelope.purpose,
            legal_basis=query.envelope.legal_basis,
        )
        held = await self._blocking(self._notices.receive, stored, revision=decision.revision)
        log.info(
            "notice %s v%d from %s accepted: %s, %d identifier(s), summary of %d characters",
            notice.notice_id,
            held.version,
            member.node_id,
            notice.category,
            len(identifiers),
            len(notice.summary),
        )
        return self._receipt(held, decision.revision), "accepted"

    async def withdraw(self, member: Member, query: WithdrawNoticeQuery) -> NoticeReceipt:
        check_envelope(member, query.envelope)
        check_notice_id(query.notice_id)
        if query.version < 2:
            raise invalid("version_invalid", "a withdrawal's version is above the publication's")
        publishers = await self._blocking(self._notices.publishers_of, query.notice_id)
        if publishers and member.node_id not in publishers:
            self._metrics.notices_received.labels(member.node_id, "refused").inc()
            raise denied(
                ("not_publisher",),
                f"notice {query.notice_id} was not published by {member.node_id}: only its "
                "publisher may withdraw it",
            )
        held = await self._blocking(
            self._notices.withdraw, member.node_id, query.notice_id, query.version, self._clock()
        )
        self._metrics.notices_received.labels(member.node_id, "withdrawn").inc()
        log.info("notice %s from %s withdrawn (v%d)", query.notice_id, member.node_id, held.version)
        return self._receipt(held, "")

    def _receipt(self, held: StoredNotice, revision: str) -> NoticeReceipt:
        return NoticeReceipt(self._node.node_id, held.notice_id, held.version, revision)

    async def _blocking(self, work: Callable[..., T], *args: Any, revision: str = "") -> T:
        """A store call in a worker thread; a database that cannot answer is a refusal."""
        try:
            return await asyncio.to_thread(work, *args)
        except StoreUnavailable as exc:
            log.error("notice refused: %s", exc)
            raise Refusal(
                Kind.UNAVAILABLE,
                ("store_unavailable",),
                "the node could not reach its database; nothing was stored, retry later",
                revision,
            ) from None
