"""The Match exchange on plain domain objects: validate, ask the policy, look up, apply duties.

Nothing here knows gRPC or protobuf. The policy sees the *kinds* of identifiers asked about,
never their values; the values are normalised and looked up only after the policy allowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from federation.directory import Member
from federation.model import Envelope, Identifier, MatchAnswer, MatchQuery
from federation.vocabulary import CATEGORIES, IDENTIFIER_KINDS, MAX_IDENTIFIER_LENGTH, PURPOSES
from node.database import StoreUnavailable
from node.errors import Kind, Refusal, denied, invalid
from node.metrics import NodeMetrics
from node.normalise import NormalisationError, normalise_identifier
from node.notice_hits import NoticeAlerts
from node.policy import Decision, PolicyEngine, PolicyUnavailable
from node.policy.cache import CachingEngine
from node.received import ReceivedStore
from node.references import References
from node.store import RecordStore

log = logging.getLogger("liaison.node")
POLICY_INPUT_VERSION = 1
MAX_IDENTIFIERS = 8
DEFAULT_MAX_RESULTS = 10


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    node_id: str
    country: str
    profile: str


def validate_envelope(member: Member, env: Envelope) -> None:
    """The envelope's own checks, for every request that carries one; each names its field."""
    if env.requester != member.node_id:
        raise denied(
            ("requester_mismatch",),
            f"envelope.requester {env.requester!r} is not the certificate's node "
            f"{member.node_id!r}",
        )
    if not env.purpose:
        raise invalid(
            "purpose_missing",
            "envelope.purpose is required: state why you ask "
            f"(one of {', '.join(sorted(PURPOSES))})",
        )
    if env.purpose not in PURPOSES:
        raise invalid(
            "purpose_unknown",
            f"envelope.purpose {env.purpose[:64]!r} is not a "
            f"federation purpose (one of {', '.join(sorted(PURPOSES))})",
        )


def validate_match(member: Member, query: MatchQuery) -> None:
    """Reject what no policy should even be asked about; each check names its field."""
    validate_envelope(member, query.envelope)
    if query.category not in CATEGORIES:
        raise invalid(
            "category_unknown",
            f"category {query.category[:64]!r} is not one of {', '.join(sorted(CATEGORIES))}",
        )
    if not query.identifiers:
        raise invalid("identifiers_missing", "at least one identifier is required")
    if len(query.identifiers) > MAX_IDENTIFIERS:
        raise invalid("too_many_identifiers", f"at most {MAX_IDENTIFIERS} identifiers per query")
    kinds = IDENTIFIER_KINDS[query.category]
    for i, ident in enumerate(query.identifiers):
        if ident.kind not in kinds:
            raise invalid(
                "identifier_kind_unknown",
                f"identifiers[{i}].kind {ident.kind[:64]!r} is not used for "
                f"{query.category} (one of {', '.join(sorted(kinds))})",
            )
        if not ident.value or len(ident.value) > MAX_IDENTIFIER_LENGTH:
            raise invalid(
                "identifier_invalid",
                f"identifiers[{i}].value must be 1 to {MAX_IDENTIFIER_LENGTH} "
                f"characters, got {len(ident.value)}",
            )


# A Match's policy key: every fact its policy input holds, as a flat tuple (tag, version,
# now, node id, country, profile, requester id, country, status, purpose, legal basis, has
# legal reference, has case reference, category, identifier kinds). Decisions are cached by
# it (`CachingEngine.decide_keyed`): a tuple of a few strings hashes and compares in a
# fraction of the time canonical JSON of the whole input takes to write.
MatchPolicyKey = tuple[
    str, int, str, str, str, str, str, str, str, str, str, bool, bool, str, tuple[str, ...]
]


def match_policy_key(
    node: NodeIdentity, member: Member, query: MatchQuery, now: datetime
) -> MatchPolicyKey:
    """The value-free facts of a Match the policy sees, never an identifier value."""
    env = query.envelope
    return (
        "Match",
        POLICY_INPUT_VERSION,
        policy_time(now),
        node.node_id,
        node.country,
        node.profile,
        member.node_id,
        member.country,
        member.status.value,
        env.purpose,
        env.legal_basis.value,
        bool(env.legal_reference),
        bool(env.case_reference),
        query.category,
        tuple(sorted({i.kind for i in query.identifiers})),
    )


def match_policy_input(key: MatchPolicyKey) -> dict[str, Any]:
    """The policy input of a Match, built from its key alone: so two Matches with one key
    have one input, and a decision cached by the key is the decision for that input."""
    (
        _,
        version,
        now,
        node_id,
        country,
        profile,
        requester,
        requester_country,
        status,
        purpose,
        legal_basis,
        has_legal_reference,
        has_case_reference,
        category,
        kinds,
    ) = key
    return {
        "version": version,
        "now": now,
        "node": {"node_id": node_id, "country": country, "profile": profile},
        "requester": {"node_id": requester, "country": requester_country, "status": status},
        "envelope": {
            "purpose": purpose,
            "legal_basis": legal_basis,
            "has_legal_reference": has_legal_reference,
            "has_case_reference": has_case_reference,
        },
        "request": {"method": "Match", "category": category, "identifier_kinds": list(kinds)},
    }


def build_policy_input(
    node: NodeIdentity, member: Member, query: MatchQuery, now: datetime
) -> dict[str, Any]:
    """The policy's view of a Match: facts about the request, never an identifier value."""
    return match_policy_input(match_policy_key(node, member, query, now))


def max_results(obligations: Mapping[str, Any]) -> int:
    """The obligations a Match can honour; one it cannot is a refusal, never ignored."""
    if obligations.get("require_approval"):
        raise denied(
            ("obligation_unenforceable",),
            "policy requires approval, which a hit/no-hit match cannot wait for",
        )
    limit = obligations.get("max_results", DEFAULT_MAX_RESULTS)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise denied(("policy_error",), "policy returned an unusable max_results obligation")
    return limit


def policy_time(now: datetime) -> str:
    """`now` as the policy input writes it (RFC 3339 UTC, to the second)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _policy_unavailable(why: str) -> Refusal:
    return Refusal(
        Kind.UNAVAILABLE,
        ("policy_unavailable",),
        f"{why}; nothing was disclosed, retry later",
    )


class MatchService:
    def __init__(
        self,
        node: NodeIdentity,
        store: RecordStore,
        engine: PolicyEngine,
        metrics: NodeMetrics,
        clock: Callable[[], datetime] | None = None,
        policy_deadline: float = 0.25,
        *,
        references: References,
        received: ReceivedStore | None = None,
        alerts: NoticeAlerts | None = None,
    ) -> None:
        self._node = node
        self._references = references
        self._received = received
        # Checks an allowed Match against the notices this node accepted (a local alert).
        self._alerts = alerts
        self._deadline = policy_deadline
        self._store = store
        self._engine = engine
        self._metrics = metrics
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def policy_revision(self) -> str:
        return self._engine.revision

    async def decide(self, policy_input: Mapping[str, Any]) -> Decision:
        """Ask the engine; unreachable, erroring or past the deadline is a refusal (a
        Fetch's and a notice's decision too: FetchService, NoticeService)."""
        return await self._judged(lambda: self._engine.decide(policy_input))

    async def decide_match(self, key: MatchPolicyKey) -> Decision:
        """`decide` for a Match's input, asked of the cache by its key (the input is built
        only on a miss). A hit is answered here, on the loop, whatever the engine."""
        engine = self._engine
        if isinstance(engine, CachingEngine):
            started = time.perf_counter()
            hit = engine.cached_keyed(key)
            if hit is not None:
                self._metrics.policy_duration.observe(time.perf_counter() - started)
                return self._counted(hit)
            return await self._judged(lambda: engine.decide_keyed(key, match_policy_input))
        return await self.decide(match_policy_input(key))

    async def _judged(self, ask: Callable[[], Decision]) -> Decision:
        """`ask()`'s decision, timed against the deadline and counted.

        An engine that waits on another process (OPA: ``waits_on_io``) is asked from a
        worker thread, so the loop serves other calls meanwhile, and a decision that has
        not come by the deadline is refused then, without waiting for it. One that holds
        the GIL (regorus) is asked on the loop: it cannot be interrupted, so a late
        decision is refused once it comes."""
        started = time.perf_counter()
        decision: Decision | None = None
        try:
            if self._engine.waits_on_io:
                pending = asyncio.get_running_loop().run_in_executor(None, ask)
                decision = await asyncio.wait_for(pending, self._deadline)
            else:
                decision = ask()
        except PolicyUnavailable as exc:
            self._metrics.policy_decisions.labels(self._engine.name, "unavailable").inc()
            raise _policy_unavailable("the policy engine could not decide") from exc
        except TimeoutError:
            pass  # refused below
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.policy_duration.observe(elapsed)
        if decision is None or elapsed > self._deadline:
            # The deadline is the operator's promise to peers: a late decision is not used,
            # and the request fails closed.
            self._metrics.policy_decisions.labels(self._engine.name, "timeout").inc()
            raise _policy_unavailable(
                f"the policy engine took {elapsed * 1000:.0f} ms, past its deadline"
                if decision is not None
                else f"the policy engine did not decide within its "
                f"{self._deadline * 1000:.0f} ms deadline"
            )
        return self._counted(decision)

    def _counted(self, decision: Decision) -> Decision:
        result = (
            "allow"
            if decision.allow
            else ("error" if "policy_error" in decision.reasons else "deny")
        )
        self._metrics.policy_decisions.labels(self._engine.name, result).inc()
        return decision

    async def match(
        self, member: Member, query: MatchQuery, *, audit_entry: str = ""
    ) -> MatchAnswer:
        """The answer to `member`'s Match, naming `audit_entry` (the entry its call will
        be audited under), or a Refusal."""
        validate_match(member, query)
        try:  # a malformed value is refused before any decision, whatever the policy says
            identifiers = [
                Identifier(i.kind, normalise_identifier(i.kind, i.value)) for i in query.identifiers
            ]
        except NormalisationError as exc:
            raise invalid("identifier_invalid", f"identifier {exc.field}: {exc}") from None
        key = match_policy_key(self._node, member, query, self._clock())
        decision = await self.decide_match(key)
        if not decision.allow:
            raise denied(decision.reasons, "refused by the data owner's policy", decision.revision)
        try:
            limit = max_results(decision.obligations)
        except Refusal as exc:
            exc.policy_revision = decision.revision
            raise
        try:
            if self._store.reads_on_loop:
                refs = self._find(member, query.category, identifiers, limit)
            else:
                refs = await asyncio.get_running_loop().run_in_executor(
                    None, self._find, member, query.category, identifiers, limit
                )
        except StoreUnavailable as exc:
            log.error("Match from %s refused: %s", member.node_id, exc)
            raise Refusal(
                Kind.UNAVAILABLE,
                ("store_unavailable",),
                "the node could not read its records; nothing was disclosed, retry later",
                decision.revision,
            ) from None
        # Each stored ref goes out sealed for this requester (node/references.py).
        now = self._clock()
        return MatchAnswer(
            responder=self._node.node_id,
            hit=bool(refs),
            record_refs=tuple(self._references.seal(member.node_id, ref, now) for ref in refs),
            policy_revision=decision.revision,
            audit_entry=audit_entry,
        )

    def _find(
        self, member: Member, category: str, identifiers: Sequence[Identifier], limit: int
    ) -> list[str]:
        """The stored refs an allowed Match finds, and its local notice alerts. Run on the
        loop for a SQLite database (a read costs less than a thread's hop), in a worker
        thread for a database server (a network round trip: the loop serves others
        meanwhile); `RecordStore.reads_on_loop`."""
        # A record its owner restricted from this country must not even be a hit.
        refs = self._store.find(category, identifiers, limit, hidden_from=member.country)
        if self._received is not None and len(refs) < limit:
            # Then what this node received from others, as its owner's rules allow
            # (node/received.py); whether it may be passed on is the Fetch's decision.
            refs += self._received.find(
                category,
                identifiers,
                limit - len(refs),
                requester=member.node_id,
                requester_country=member.country,
            )
        if self._alerts is not None:  # local only: the answer is the same either way
            self._alerts.match_from(member.node_id, identifiers)
        return refs
