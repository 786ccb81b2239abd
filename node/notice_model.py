"""What a notice is on this node, as :mod:`node.notices` (received notices and their hits)
and :mod:`node.notice_outbox` (this node's own notices and their deliveries) hand it out:
plain frozen objects, no table row.

A notice is named by its publisher and its id; its version starts at 1 and a withdrawal
raises it. Identifier values are personal data: they live in these objects and the
database, and never in a log line, a metric label or an audit entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from federation.model import Identifier
from federation.vocabulary import LegalBasis


class NoticeState(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class DeliveryState(StrEnum):
    """Where one recipient's copy stands: `pending` (being tried, with backoff), then
    `delivered`, `refused` (the recipient's policy or its checks said no: `reason`) or
    `expired` (the notice expired before it could be delivered)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    REFUSED = "refused"
    EXPIRED = "expired"


class DeliveryAction(StrEnum):
    PUBLISH = "publish"
    WITHDRAW = "withdraw"


@dataclass(frozen=True, slots=True)
class StoredNotice:
    """A notice as this node holds it: published by it (`publisher` is this node) or
    received and accepted. `active_until` is when it stops matching: its expiry, or sooner
    when the receiver's policy keeps it for less (`retention_days`). Times are UTC."""

    publisher: str
    notice_id: str
    version: int
    category: str
    identifiers: tuple[Identifier, ...]
    summary: str
    handling_code: str
    to_all_members: bool
    recipients: tuple[str, ...]
    expires_at: datetime
    active_until: datetime
    state: NoticeState
    created_at: datetime
    updated_at: datetime
    purpose: str
    legal_basis: LegalBasis

    def active(self, now: datetime) -> bool:
        return self.state is NoticeState.ACTIVE and now < self.active_until


@dataclass(frozen=True, slots=True)
class NoticeDraft:
    """What an operator publishes (identifier values as typed: they are normalised here)."""

    category: str
    identifiers: tuple[Identifier, ...]
    summary: str
    handling_code: str
    to_all_members: bool
    recipients: tuple[str, ...]
    expires_at: datetime
    purpose: str
    legal_basis: LegalBasis = LegalBasis.NONE
    legal_reference: str = ""
    case_reference: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recipient's row in the publisher's outbox."""

    notice_id: str
    recipient: str
    version: int
    action: DeliveryAction
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    last_reason: str
    updated_at: datetime

    @property
    def status(self) -> str:
        """As `liaison notices status` shows it: `refused: <reason>` for a refusal."""
        if self.state is DeliveryState.REFUSED:
            return f"refused: {self.last_reason}"
        return self.state.value


@dataclass(frozen=True, slots=True)
class NoticeHit:
    """A local alert: something hit an accepted notice. `trigger` is `match from <PEER>`
    or `import`; no identifier value is kept with it."""

    id: str
    publisher: str
    notice_id: str
    category: str
    trigger: str
    at: datetime


class NoticeError(Exception):
    """A notice operation that did not happen, and why (``reason``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnknownNotice(NoticeError):
    def __init__(self, notice_id: str) -> None:
        super().__init__("unknown_notice", f"this node published no notice {notice_id[:64]!r}")
