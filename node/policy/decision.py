"""The decision contract between the node and any policy engine (policies/CONTRACT.md).

An engine returns whatever its Rego produced; :func:`Decision.from_document` is the one place
that turns that into a typed decision, and anything malformed becomes a deny with
``policy_error`` rather than an exception the caller might forget to treat as a refusal.
That includes an allow whose obligations the node could not carry out as written (a
retention of ``"30"`` days, a redaction that is not a list of field names, approval without
a deadline): checked here once, so no enforcing code has to guess.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from federation.vocabulary import HANDLING_CODES


def _positive_int(value: object) -> bool:
    # bool is an int in Python; `true` is not a number of days.
    return type(value) is int and value >= 1


def _field_names(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(f, str) for f in value)


def _bool(value: object) -> bool:
    return isinstance(value, bool)


def _handling_code(value: object) -> bool:
    return isinstance(value, str) and value in HANDLING_CODES


# Obligations the node knows how to enforce, each with the shape policies/CONTRACT.md gives
# its value. Any other obligation in a decision means deny (an obligation the node cannot
# honour must not be silently dropped); a known one with a value of the wrong shape is a
# deny `policy_error`.
OBLIGATION_SHAPES: Mapping[str, Callable[[object], bool]] = {
    "max_results": _positive_int,
    "redact": _field_names,
    "require_approval": _bool,
    "retention_days": _positive_int,
    "handling_code": _handling_code,
    "approval_deadline_hours": _positive_int,
}
KNOWN_OBLIGATIONS = frozenset(OBLIGATION_SHAPES)


def _obligations_well_formed(obligations: Mapping[str, Any]) -> bool:
    """Every value has its shape, and a deadline comes exactly with a required approval:
    a ticket without a deadline could never expire, a deadline without a ticket means the
    policy and the node disagree about what happens next."""
    if not all(OBLIGATION_SHAPES[name](value) for name, value in obligations.items()):
        return False
    approval = obligations.get("require_approval") is True
    return approval == ("approval_deadline_hours" in obligations)


class PolicyUnavailable(Exception):
    """The engine could not be asked (down, past its deadline, crashed)."""


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reasons: tuple[str, ...] = ()
    obligations: Mapping[str, Any] = field(default_factory=dict)
    revision: str = ""

    @classmethod
    def deny(cls, reason: str, revision: str = "") -> Decision:
        return cls(allow=False, reasons=(reason,), revision=revision)

    @classmethod
    def from_document(cls, doc: object, revision: str) -> Decision:
        """Validate an engine's raw result; any deviation from the contract is a deny."""
        if not isinstance(doc, Mapping):
            return cls.deny("policy_error", revision)
        allow = doc.get("allow")
        reasons = doc.get("reasons", [])
        obligations = doc.get("obligations", {})
        if not isinstance(allow, bool) or not isinstance(obligations, Mapping):
            return cls.deny("policy_error", revision)
        if not isinstance(reasons, list | tuple) or not all(isinstance(r, str) for r in reasons):
            return cls.deny("policy_error", revision)
        if set(obligations) - KNOWN_OBLIGATIONS:
            return cls.deny("unknown_obligation", revision)
        if allow and reasons:
            # An allow that also states refusal reasons is contradictory: fail closed.
            return cls.deny("policy_error", revision)
        if allow and not _obligations_well_formed(obligations):
            # Only an allow's obligations are carried out; a deny keeps its own reasons.
            return cls.deny("policy_error", revision)
        if not allow and not reasons:
            reasons = ["denied_by_policy"]
        return cls(
            allow=allow,
            reasons=tuple(sorted(set(reasons))),
            obligations=dict(obligations),
            revision=revision,
        )


class PolicyEngine(Protocol):
    """Evaluates ``data.liaison.exchange.decision`` for one input document.

    Implementations must be safe to call from any thread, and raise
    :class:`PolicyUnavailable` (never return a default) when they cannot decide.
    """

    name: str
    # Whether a decision mostly waits on another process (OPA over HTTP): the node then
    # asks from a policy thread so that its event loop serves other calls meanwhile, and a
    # late answer is refused at the deadline. An engine that holds the GIL while it works
    # (regorus) is asked on the loop: a thread would add a hop and no parallelism
    # (docs/performance.md#per-request-cpu).
    waits_on_io: bool

    @property
    def revision(self) -> str:
        """Hash of the loaded policy files and data: recorded with every decision."""
        ...

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        """The decision for ``policy_input``. ``input_json``, when given, is that same
        input already serialised as JSON (by a caller that needed it anyway, the decision
        cache): an engine that sends the input as JSON uses it instead of serialising
        again; key order and spelling may differ from its own, never the value."""
        ...

    def close(self) -> None: ...
