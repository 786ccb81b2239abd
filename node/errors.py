"""Why a request was refused, and the one catalog that maps each kind to a gRPC status.

A peer learns *why* in machine-readable reasons and a safe public message; never a stack
trace, never a record value.
"""

from __future__ import annotations

from enum import Enum

import grpc


class Kind(Enum):
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
    DENIED = grpc.StatusCode.PERMISSION_DENIED
    UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
    TOO_LARGE = grpc.StatusCode.RESOURCE_EXHAUSTED
    # The same status (an alias): a peer holds all the streams it may hold open at once.
    TOO_MANY = grpc.StatusCode.RESOURCE_EXHAUSTED
    # Well formed, but not answerable in the node's present state (e.g. beyond its latest
    # signed checkpoint): asking again later may succeed.
    NOT_YET = grpc.StatusCode.FAILED_PRECONDITION
    NOT_FOUND = grpc.StatusCode.NOT_FOUND
    # The node failed (a bug): refused, audited and counted like any refusal.
    INTERNAL = grpc.StatusCode.INTERNAL


class Refusal(Exception):
    """A request the node will not answer; `reasons` are stable snake_case codes."""

    def __init__(
        self, kind: Kind, reasons: tuple[str, ...], message: str, policy_revision: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.reasons = reasons
        self.message = message
        # The revision of the policy that refused, when a policy decided at all.
        self.policy_revision = policy_revision
        # A directory member refused before it was admitted (revoked, another certificate):
        # audited and counted under its node id (a bounded label), not as "unidentified".
        self.peer = ""

    @property
    def decision(self) -> str:
        """How the audit log and metrics name this outcome."""
        if self.kind is Kind.DENIED:
            return "deny"
        if self.kind in (Kind.UNAVAILABLE, Kind.INTERNAL):
            return "error"
        if self.kind is Kind.UNAUTHENTICATED:
            return "unauthenticated"
        return "invalid"


def invalid(reason: str, message: str) -> Refusal:
    return Refusal(Kind.INVALID, (reason,), message)


def denied(reasons: tuple[str, ...], message: str, policy_revision: str = "") -> Refusal:
    return Refusal(Kind.DENIED, reasons, message, policy_revision)


# Step 2 (Fetch, GetTicket): each reason a record request is refused for, and its status.
# NOT_FOUND says "nothing by that name for you", whatever the cause, so a node cannot probe;
# FAILED_PRECONDITION says "it was yours, but no longer": ask again (a new hit) or stop.
STEP2_REASONS: dict[str, Kind] = {
    "unknown_reference": Kind.NOT_FOUND,
    "reference_expired": Kind.NOT_YET,
    "unknown_ticket": Kind.NOT_FOUND,
    "already_delivered": Kind.NOT_YET,
    "ticket_not_pending": Kind.NOT_YET,
}


def step2(reason: str, message: str, policy_revision: str = "") -> Refusal:
    """The refusal for a step-2 `reason`, with the status the catalog gives it."""
    return Refusal(STEP2_REASONS[reason], (reason,), message, policy_revision)
