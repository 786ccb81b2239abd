"""Plain typed objects for notices as they cross borders (PublishNotice, WithdrawNotice):
the core works on these, never on protobuf (federation/serde_notices.py converts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from federation.model import Envelope, Identifier


@dataclass(frozen=True, slots=True)
class Notice:
    """An alert, as its publisher sends it. `(publisher, notice_id)` names it; `version`
    starts at 1 and each change (a withdrawal) raises it. `recipients` is empty when it is
    addressed to every member (`to_all_members`)."""

    notice_id: str
    version: int
    category: str
    identifiers: tuple[Identifier, ...]
    summary: str
    handling_code: str
    to_all_members: bool
    recipients: tuple[str, ...]
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class PublishNoticeQuery:
    envelope: Envelope
    notice: Notice


@dataclass(frozen=True, slots=True)
class WithdrawNoticeQuery:
    envelope: Envelope
    notice_id: str
    version: int


@dataclass(frozen=True, slots=True)
class NoticeReceipt:
    """A receiver's answer: the version it holds now (at least the one sent, unless it held
    a newer one already)."""

    responder: str
    notice_id: str
    version: int
    policy_revision: str = ""
    audit_entry: str = ""
