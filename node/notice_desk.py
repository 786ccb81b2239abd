"""The operator's side of notices, done by the running node: publish and withdraw (each one
write to the outbox and one audit entry naming the operator), and the reading of notices,
deliveries and hits.

Why the node and not the command: the audit log has one writer, the running node, and the
node's courier (:mod:`node.notice_delivery`) is what delivers; so `liaison notices publish`
asks the node over its admin socket (:mod:`node.rpc.admin`), as `liaison tickets` does.

The audit entry of a publication records the notice (`<id>@<version>`), its category, how
many identifiers and recipients it has, and the operator: never an identifier value nor
the summary.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from federation.directory import Directory, MemberStatus
from federation.notices_model import Notice
from federation.vocabulary import PURPOSES
from node.audit.entries import AuditError, AuditRecord, canonical, new_entry_id
from node.audit.log import AuditLog
from node.database import new_id
from node.errors import Refusal
from node.metrics import NodeMetrics
from node.notice_delivery import NoticeCourier
from node.notice_model import (
    Delivery,
    NoticeDraft,
    NoticeError,
    NoticeHit,
    NoticeState,
    StoredNotice,
)
from node.notice_outbox import OutboxStore, Published
from node.notice_service import check_notice, normalised
from node.notices import NoticeStore

log = logging.getLogger("liaison.node")

PUBLISH, WITHDRAW = "NoticePublish", "NoticeWithdraw"
MAX_OPERATOR = 128
MAX_REFERENCE = 128


@dataclass(frozen=True, slots=True)
class Done:
    """A notice as an operation left it, its deliveries, and the audit entry recording it."""

    published: Published
    deliveries: list[Delivery]
    audit_entry: str


class NoticeDesk:
    def __init__(
        self,
        node_id: str,
        outbox: OutboxStore,
        notices: NoticeStore,
        audit: AuditLog,
        metrics: NodeMetrics,
        directory: Callable[[], Directory],
        courier: NoticeCourier,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._node_id = node_id
        self._outbox = outbox
        self._notices = notices
        self._audit = audit
        self._metrics = metrics
        self._directory = directory
        self._courier = courier
        self._now = now

    async def publish(self, draft: NoticeDraft, operator: str) -> Done:
        """Store a new notice and owe it to each recipient; the courier delivers it."""
        operator = _operator(operator)
        now = self._now()
        notice_id = new_id("ntc_")
        recipients = self._recipients(draft)
        notice = Notice(
            notice_id,
            1,
            draft.category,
            draft.identifiers,
            draft.summary,
            draft.handling_code,
            draft.to_all_members,
            recipients,
            draft.expires_at,
        )
        try:
            check_notice(notice)
            identifiers = normalised(notice.identifiers)
        except Refusal as exc:
            raise NoticeError(exc.reasons[0], exc.message) from None
        if draft.purpose not in PURPOSES:
            raise NoticeError(
                "purpose_unknown", f"purpose must be one of {', '.join(sorted(PURPOSES))}"
            )
        if draft.expires_at <= now:
            raise NoticeError("notice_expired", "expires_at must lie in the future")
        for name, value in (("legal_reference", draft.legal_reference),
                            ("case_reference", draft.case_reference)):  # fmt: skip
            if len(value) > MAX_REFERENCE:
                raise NoticeError(f"{name}_too_long", f"{name} is over {MAX_REFERENCE} characters")
        stored = StoredNotice(
            self._node_id, notice_id, 1, draft.category, identifiers, draft.summary,
            draft.handling_code, draft.to_all_members, recipients, draft.expires_at,
            draft.expires_at, NoticeState.ACTIVE, now, now, draft.purpose, draft.legal_basis,
        )  # fmt: skip
        published, deliveries = await asyncio.to_thread(
            lambda: self._outbox.publish(
                stored,
                legal_reference=draft.legal_reference,
                case_reference=draft.case_reference,
                operator=operator,
                now=now,
            )
        )
        entry = await self._audited(PUBLISH, published, operator, now)
        self._courier.wake()
        log.info(
            "notice %s published by %s: %s, %d identifier(s), to %d recipient(s)",
            notice_id,
            operator,
            draft.category,
            len(identifiers),
            len(recipients),
        )
        return Done(published, deliveries, entry)

    async def withdraw(self, notice_id: str, operator: str) -> Done:
        """Withdraw one of this node's notices: a new version, owed to every recipient that
        has it or was still to get it."""
        operator = _operator(operator)
        now = self._now()
        published, deliveries = await asyncio.to_thread(self._outbox.withdraw, notice_id, now)
        entry = await self._audited(WITHDRAW, published, operator, now)
        self._courier.wake()
        log.info("notice %s withdrawn by %s (v%d)", notice_id, operator, published.notice.version)
        return Done(published, deliveries, entry)

    async def status(self, notice_id: str) -> tuple[Published, list[Delivery]]:
        def read() -> tuple[Published, list[Delivery]]:
            return self._outbox.get(notice_id), self._outbox.deliveries(notice_id)

        return await asyncio.to_thread(read)

    async def published(self, limit: int = 100) -> list[StoredNotice]:
        return await asyncio.to_thread(self._outbox.list, limit)

    async def received(self, limit: int = 100) -> list[StoredNotice]:
        return await asyncio.to_thread(self._notices.list, limit)

    async def hits(self, limit: int = 100) -> list[NoticeHit]:
        return await asyncio.to_thread(self._notices.hits, limit)

    def _recipients(self, draft: NoticeDraft) -> tuple[str, ...]:
        """Every active node but this one (to all members), or the named ones, each a node
        of the directory in force."""
        directory = self._directory()
        if draft.to_all_members:
            if draft.recipients:
                raise NoticeError(
                    "recipients_conflict", "name recipients, or address all members: not both"
                )
            return tuple(
                sorted(
                    m.node_id
                    for m in directory.members
                    if m.is_node and m.status is MemberStatus.ACTIVE and m.node_id != self._node_id
                )
            )
        named = tuple(sorted(set(draft.recipients)))
        if not named:
            raise NoticeError("recipients_missing", "name at least one recipient, or all members")
        for node_id in named:
            member = directory.member(node_id)
            if node_id == self._node_id or member is None or not member.is_node:
                raise NoticeError(
                    "unknown_recipient",
                    f"{node_id[:64]} is not another node of the federation directory",
                )
        return named

    async def _audited(
        self, method: str, published: Published, operator: str, now: datetime
    ) -> str:
        n = published.notice
        asked = {
            "action": method,
            "notice": n.notice_id,
            "version": n.version,
            "category": n.category,
            "identifiers": len(n.identifiers),
            "recipients": list(n.recipients),
        }
        record = AuditRecord(
            entry_id=new_entry_id(),
            time=now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            peer=self._node_id,
            method=method,
            purpose=n.purpose[:64],
            legal_basis=n.legal_basis.value,
            decision="allow",
            reasons=(),
            policy_revision="",
            request_sha256=hashlib.sha256(canonical(asked)).hexdigest(),
            response_sha256=hashlib.sha256(canonical({**asked, "state": n.state})).hexdigest(),
            category=n.category[:64],
            case_reference=published.case_reference[:128],
            operator=operator,
            notice=f"{n.notice_id}@{n.version}",
            identifiers=len(n.identifiers),
        )
        try:
            written = await self._audit.append(record)
        except AuditError as exc:
            self._metrics.audit_failures.inc()
            log.error("notice %s: %s stands, its audit entry failed: %s", n.notice_id, method, exc)
            raise AuditError(
                f"notice {n.notice_id} is {n.state} (version {n.version}) and will be delivered, "
                f"but its audit entry could not be written ({exc}): see the node's log"
            ) from None
        self._metrics.audit_entries.inc()
        return written


def _operator(operator: str) -> str:
    operator = operator.strip()
    if not operator:
        raise NoticeError("operator_required", "an operator is required")
    if len(operator) > MAX_OPERATOR:
        raise NoticeError("operator_too_long", f"the operator is over {MAX_OPERATOR} characters")
    return operator
