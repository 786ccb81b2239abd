"""What a step-2 ticket is, and how an operation on one fails: the plain frozen objects and
the error tree that :mod:`node.tickets` hands out (it re-exports every name here).

Errors (``.reason`` is the machine-readable code)::

    TicketError
    ├── UnknownTicket        unknown_ticket
    ├── NotYourTicket        not_your_ticket     (another requester's ticket)
    ├── TicketNotPending     ticket_not_pending  (.state, .operator, .decided_at)
    ├── TicketExpired        ticket_expired      (pending, but its deadline passed)
    ├── TicketNotApproved    ticket_not_approved (.state: nothing to deliver)
    ├── AlreadyDelivered     already_delivered   (.delivered_at)
    └── InvalidDecision      reason_required | reason_too_long | operator_required
                             | unknown_field (.fields)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from federation.vocabulary import LegalBasis


class TicketState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class Ticket:
    """One step-2 request awaiting, or past, a human decision.

    ``redact`` is what the policy withheld and no one can shrink; ``extra_redact`` is what the
    approving operator withheld on top (it may repeat a policy field: :attr:`withheld` is the
    union the delivery applies). Times are UTC.
    """

    id: str
    requester: str
    record_ref: str
    category: str
    purpose: str
    legal_basis: LegalBasis
    legal_reference: str
    case_reference: str
    handling_code: str
    redact: tuple[str, ...]
    extra_redact: tuple[str, ...]
    retention_days: int
    created_at: datetime
    deadline_at: datetime
    state: TicketState
    decided_at: datetime | None
    operator: str
    reason: str
    delivered_at: datetime | None
    request_entry: str

    @property
    def withheld(self) -> tuple[str, ...]:
        """Every field the delivered record leaves out: the policy's and the operator's."""
        return tuple(sorted({*self.redact, *self.extra_redact}))

    @property
    def time_to_decision(self) -> timedelta | None:
        """From opening to approval, refusal, expiry or withdrawal (for the histogram)."""
        return None if self.decided_at is None else self.decided_at - self.created_at


@dataclass(frozen=True, slots=True)
class PendingAge:
    """How long a pending ticket has waited, against how long its deadline allows: the
    caller fills age buckets and the 80%-of-deadline gauge without any ticket's content."""

    age: timedelta
    allowed: timedelta

    @property
    def fraction(self) -> float:
        """Share of the deadline used; 1.0 or more means due."""
        total = self.allowed.total_seconds()
        return self.age.total_seconds() / total if total > 0 else 1.0


class TicketError(Exception):
    """A ticket operation that did not happen, and why (``reason``)."""

    reason = "ticket_error"

    def __init__(self, ticket_id: str, message: str) -> None:
        super().__init__(message)
        self.ticket_id = ticket_id


class UnknownTicket(TicketError):
    reason = "unknown_ticket"


class NotYourTicket(TicketError):
    reason = "not_your_ticket"


class TicketNotPending(TicketError):
    reason = "ticket_not_pending"

    def __init__(self, ticket: Ticket) -> None:
        by = f" by {ticket.operator}" if ticket.operator else ""
        when = f" at {ticket.decided_at.isoformat()}" if ticket.decided_at else ""
        super().__init__(ticket.id, f"ticket {ticket.id} is already {ticket.state}{by}{when}")
        self.state = ticket.state
        self.operator = ticket.operator
        self.decided_at = ticket.decided_at


class TicketExpired(TicketError):
    reason = "ticket_expired"

    def __init__(self, ticket: Ticket) -> None:
        deadline = ticket.deadline_at.isoformat()
        super().__init__(ticket.id, f"ticket {ticket.id} passed its deadline {deadline}")
        self.deadline_at = ticket.deadline_at


class TicketNotApproved(TicketError):
    reason = "ticket_not_approved"

    def __init__(self, ticket: Ticket) -> None:
        super().__init__(ticket.id, f"ticket {ticket.id} is {ticket.state}, not approved")
        self.state = ticket.state


class AlreadyDelivered(TicketError):
    reason = "already_delivered"

    def __init__(self, ticket: Ticket) -> None:
        at = ticket.delivered_at.isoformat() if ticket.delivered_at else "?"
        super().__init__(ticket.id, f"the record of ticket {ticket.id} was delivered at {at}")
        self.delivered_at = ticket.delivered_at


class InvalidDecision(TicketError):
    """The operator's input is wrong; nothing was changed."""

    def __init__(
        self, ticket_id: str, reason: str, message: str, fields: tuple[str, ...] = ()
    ) -> None:
        super().__init__(ticket_id, message)
        self.reason = reason
        self.fields = fields
