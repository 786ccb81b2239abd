"""Plain typed objects for what a request carries; the core works on these, never on protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from federation.vocabulary import LegalBasis


@dataclass(frozen=True, slots=True)
class Identifier:
    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every request carries beside its body (docs/protocol.md)."""

    requester: str
    purpose: str
    legal_basis: LegalBasis = LegalBasis.NONE
    legal_reference: str = ""
    case_reference: str = ""
    nonce: bytes = b""
    issued_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MatchQuery:
    envelope: Envelope
    category: str
    identifiers: tuple[Identifier, ...]


@dataclass(frozen=True, slots=True)
class MatchAnswer:
    responder: str
    hit: bool
    record_refs: tuple[str, ...] = field(default_factory=tuple)
    policy_revision: str = ""
    audit_entry: str = ""


@dataclass(frozen=True, slots=True)
class FetchQuery:
    """One record asked for: by a reference a hit returned, or by an approved ticket
    (exactly one of the two is set)."""

    envelope: Envelope
    record_ref: str = ""
    ticket_id: str = ""


@dataclass(frozen=True, slots=True)
class DisclosedRecord:
    """A record as its owner disclosed it. `payload_json` is canonical JSON, the exact text
    the owner signed; `withheld_fields` names what policy or an operator left out of it."""

    record_ref: str
    category: str
    handling_code: str
    source_restrictions: tuple[str, ...]
    origin_country: str
    payload_json: str
    withheld_fields: tuple[str, ...]
    retention_days: int


@dataclass(frozen=True, slots=True)
class TicketStatus:
    """Where a ticket stands, as its requester may know it. `state` is one of `pending`,
    `approved`, `refused`, `expired`, `withdrawn`; `reason` says why a ticket will not be
    delivered (`refused_by_operator`, `ticket_expired`, `withdrawn`)."""

    ticket_id: str
    state: str
    created_at: datetime
    deadline_at: datetime
    decided_at: datetime | None = None
    reason: str = ""
    delivered_at: datetime | None = None

    @property
    def decided(self) -> bool:
        """Whether the decision the requester waits for is made: approved (collect it with
        a Fetch), or refused, expired or withdrawn (it will never be delivered). A watch of
        the ticket ends here; nothing after it (the delivery) is waited for."""
        return self.state in ("approved", "refused", "expired", "withdrawn")


@dataclass(frozen=True, slots=True)
class TicketQuery:
    """A WatchTicket or WithdrawTicket request: one ticket the requester opened, asked
    about signed and fresh (its envelope's requester, nonce and issue time are what
    count)."""

    envelope: Envelope
    ticket_id: str


@dataclass(frozen=True, slots=True)
class WithdrawAnswer:
    """A withdrawn ticket's status, and the owner's audit entry of the withdrawal."""

    ticket: TicketStatus
    audit_entry: str = ""


@dataclass(frozen=True, slots=True)
class FetchAnswer:
    """Exactly one of `record` and `ticket` is set."""

    responder: str
    record: DisclosedRecord | None = None
    ticket: TicketStatus | None = None
    policy_revision: str = ""
    audit_entry: str = ""


@dataclass(frozen=True, slots=True)
class ProvenEntry:
    """One audit entry with its inclusion proof in the tree of `tree_size` (the
    OversightService client verifies it against a signed root before handing it out)."""

    index: int
    tree_size: int
    entry: bytes  # the redacted entry, canonical JSON: the exact bytes its leaf hashes
    proof: tuple[bytes, ...]


# --- what the OversightService is asked and answers (node/rpc/oversight.py)


@dataclass(frozen=True, slots=True)
class ConsistencyQuery:
    old_size: int
    new_size: int


@dataclass(frozen=True, slots=True)
class InclusionQuery:
    """An entry named by its index or by its id (neither: the request is malformed); a
    `tree_size` of 0 means the latest signed checkpoint's."""

    tree_size: int
    index: int | None = None
    entry_id: str | None = None


@dataclass(frozen=True, slots=True)
class EntryRange:
    start: int
    end: int
