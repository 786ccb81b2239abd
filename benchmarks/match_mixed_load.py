"""The mixed Match workload (``match_mixed.py``): three peers asking one owner with several
purposes, categories, identifier kinds and legal bases, about 5% refused by the owner's
agreements, and half hits, half no-hits among the rest; each request knows the answer it
is due, and every answer is checked after the timed loop (so the check costs no client
time while the clock runs).

The policy input holds no identifier value and carries ``now`` to the second, so the
decision cache misses once per distinct (peer, purpose, legal basis, category, identifier
kinds) per second: spreading the requests evenly over every combination an agreement
allows, plus the refused ones, is the least favourable realistic load for the cache.

Imported by ``match_mixed.py`` as a sibling module (``python benchmarks/match_mixed.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc

from federation.client import match_query, new_envelope, translate
from federation.errors import PeerRefused
from federation.pki import load_signing_key
from federation.serde import match_answer_from_bytes, match_query_to_bytes
from federation.signing import SIGNATURE_METADATA, request_message, sign
from federation.vocabulary import LegalBasis
from match_echo import METHOD
from match_load import CALL_TIMEOUT, HIT_SHARE, Call, Measurement
from measuring import percentiles, process_cpu
from node.local.demo import AGREEMENTS as DEMO_AGREEMENTS

OWNER: Final = "FR-DGPN"
# DE-BKA and NL-KLPD are the demo federation's; BE-FPJ is a third peer enrolled beside them
# (the demo has only two nodes besides FR-DGPN).
PEERS: Final = ("DE-BKA", "NL-KLPD", "BE-FPJ")
# Every REFUSAL_EVERY-th request is one the owner's agreement does not allow: 5%.
REFUSAL_EVERY: Final = 20
_WINDOW: Final = {"valid_from": "2025-01-01", "valid_until": "2030-12-31"}
# FR-DGPN's agreements: DE-BKA's is the demo's; the others allow less, and differently.
AGREEMENTS: Final[dict[str, dict[str, Any]]] = {
    OWNER: {
        "DE-BKA": DEMO_AGREEMENTS[OWNER]["DE-BKA"],
        "NL-KLPD": {
            "categories": ["travel_document", "vehicle"],
            "purposes": ["criminal_investigation", "crime_prevention"],
            "methods": ["Match"],
            "legal_bases": ["none"],
            **_WINDOW,
        },
        "BE-FPJ": {
            "categories": ["travel_document", "wanted_person"],
            "purposes": ["criminal_investigation", "execution_of_sentence"],
            "methods": ["Match"],
            "legal_bases": ["none", "bilateral_agreement"],
            **_WINDOW,
        },
    }
}
# Refused: a purpose no agreement names, and a category none of them does.
REFUSED_PURPOSE: Final = ("counter_terrorism", "purpose_not_agreed")
REFUSED_CATEGORY: Final = ("firearm", "category_not_agreed")
# The identifier kinds asked for each category (one per query), and the record field
# each is read from; name_dob is the composite "family|given|YYYY-MM-DD".
KINDS: Final[dict[str, tuple[str, ...]]] = {
    "travel_document": ("document_number",),
    "vehicle": ("vin", "registration_number"),
    "wanted_person": ("document_number", "name_dob"),
    "firearm": ("serial_number",),
}


@dataclass(frozen=True)
class Combination:
    """What the owner's policy sees of a request (the decision cache's key, but `now`)."""

    peer: str
    purpose: str
    category: str
    kind: str
    legal_basis: str
    refusal: str = ""  # the reason the owner refuses it with; "" if allowed


# What a request is due: "hit", "no_hit" or the refusal's reason.
@dataclass(frozen=True)
class Request:
    body: bytes
    metadata: tuple[tuple[str, bytes], ...]
    peer: str
    expected: str
    kind: str  # "category/identifier kind", for the latency breakdown


def allowed(agreements: Mapping[str, Mapping[str, Any]]) -> list[Combination]:
    """Every combination an agreement allows."""
    return [
        Combination(peer, purpose, category, kind, basis)
        for peer, a in agreements.items()
        for purpose, category, basis in itertools.product(
            a["purposes"], a["categories"], a["legal_bases"]
        )
        for kind in KINDS[category]
    ]


def refused(agreements: Mapping[str, Mapping[str, Any]]) -> list[Combination]:
    """For each peer, one request its agreement refuses for its purpose and one for its
    category (each otherwise allowed)."""
    combos = []
    for peer, a in agreements.items():
        category, basis = a["categories"][0], a["legal_bases"][0]
        purpose, reason = REFUSED_PURPOSE
        combos.append(Combination(peer, purpose, category, KINDS[category][0], basis, reason))
        category, reason = REFUSED_CATEGORY
        combos.append(
            Combination(peer, a["purposes"][0], category, KINDS[category][0], basis, reason)
        )
    return combos


def _value(row: Mapping[str, Any], kind: str) -> str | None:
    if kind == "name_dob":
        return f"{row['family_name']}|{row['given_names']}|{row['date_of_birth']}"
    value = row.get(kind)
    return str(value) if value else None


def _fake(kind: str, n: int) -> str:
    """A well-formed value no record has (the owner's numbers all start with FR)."""
    if kind == "name_dob":
        return f"Zzfake{n:09d}|Nobody|1970-01-01"
    return f"ZZFAKE{n:011d}"


class Workload:
    """Signed requests over `combos` (evenly), every REFUSAL_EVERY-th from `refusals`; half
    of the allowed ones ask about a record the peer may see (a hit), half about none."""

    def __init__(
        self,
        owner_rows: Sequence[Mapping[str, Any]],
        signing_keys: Mapping[str, bytes],
        combos: Sequence[Combination],
        refusals: Sequence[Combination] = (),
        seed: int = 1,
    ) -> None:
        self._keys = {peer: load_signing_key(key) for peer, key in signing_keys.items()}
        self.combos = list(combos)
        self.refusals = list(refusals)
        # A record restricted from the peer's country is a no-hit for it: not a hit to ask.
        self._hits: dict[tuple[str, str, str], list[str]] = {}
        for c in self.combos:
            key = (c.peer[:2], c.category, c.kind)
            if key not in self._hits:
                self._hits[key] = [
                    v
                    for r in owner_rows
                    if r["category"] == c.category
                    and c.peer[:2] not in r.get("source_restrictions", ())
                    and (v := _value(r, c.kind)) is not None
                ]
                if not self._hits[key]:
                    raise ValueError(f"the owner holds no {c.category} with a {c.kind} to ask")
        self._rng = random.Random(seed)
        self._count = 0

    def one(self, combo: Combination, hit: bool) -> Request:
        self._count += 1
        if combo.refusal:
            expected, value = combo.refusal, _fake(combo.kind, self._count)
        elif hit:
            expected = "hit"
            value = self._rng.choice(self._hits[combo.peer[:2], combo.category, combo.kind])
        else:
            expected, value = "no_hit", _fake(combo.kind, self._count)
        basis = LegalBasis(combo.legal_basis)
        env = new_envelope(
            combo.peer,
            combo.purpose,
            legal_basis=basis,
            legal_reference="" if basis is LegalBasis.NONE else f"REF-{combo.legal_basis}",
            case_reference=f"BENCH-{self._count:08d}",
        )
        body = match_query_to_bytes(match_query(env, combo.category, [(combo.kind, value)]))
        signature = sign(self._keys[combo.peer], request_message(METHOD, body))
        kind = f"{combo.category}/{combo.kind}"
        return Request(body, ((SIGNATURE_METADATA, signature),), combo.peer, expected, kind)

    def build(self, n: int) -> list[Request]:
        out = []
        for _ in range(n):
            if self.refusals and self._count % REFUSAL_EVERY == REFUSAL_EVERY - 1:
                out.append(self.one(self._rng.choice(self.refusals), hit=False))
            else:
                out.append(self.one(self._rng.choice(self.combos), self._rng.random() < HIT_SHARE))
        return out


@dataclass(frozen=True)
class Checked:
    """What the answers of one measurement were, against what each was due."""

    outcomes: Counter[str]  # "hit", "no_hit", or a refusal's reason
    wrong: int
    failed: int  # calls that failed other than by a refusal they were due
    first_wrong: str

    @property
    def answered(self) -> int:
        return sum(self.outcomes.values())

    @property
    def refusals(self) -> int:
        return sum(n for o, n in self.outcomes.items() if o not in ("hit", "no_hit"))


def outcome_of(peer: str, answer: bytes | grpc.RpcError) -> str:
    if isinstance(answer, grpc.RpcError):
        error = translate(peer, answer)
        if isinstance(error, PeerRefused):
            return ",".join(error.reasons) or "refused"
        return f"error {error.status}: {error}"
    return "hit" if match_answer_from_bytes(answer).hit else "no_hit"


def check(requests: Sequence[Request], answers: Mapping[int, bytes | grpc.RpcError]) -> Checked:
    outcomes: Counter[str] = Counter()
    wrong = failed = 0
    first = ""
    for i, answer in answers.items():
        request = requests[i]
        outcome = outcome_of(request.peer, answer)
        outcomes[outcome] += 1
        if outcome.startswith("error "):
            failed += 1
        if outcome != request.expected:
            wrong += 1
            first = first or f"{request.peer}: {outcome!r} where {request.expected!r} was due"
    return Checked(outcomes, wrong, failed, first)


def _cpu(pids: Sequence[int]) -> float:
    return sum(process_cpu(pid) for pid in pids)


async def drive(
    calls: Mapping[str, Call],
    requests: Sequence[Request],
    in_flight: int,
    seconds: float,
    pids: Sequence[int],
    target: str,
) -> tuple[Measurement, dict[int, bytes | grpc.RpcError], dict[int, float]]:
    """Keep ``in_flight`` calls going (each on its peer's channel) until ``seconds`` pass or
    the requests run out; every answer (or refusal) and its latency are kept, by the
    request's index, to be checked afterwards. The server's CPU is that of every process in
    `pids` (the node and, on the opa engine, its OPA sidecar)."""
    latencies: dict[int, float] = {}
    answers: dict[int, bytes | grpc.RpcError] = {}
    cursor = 0
    clock = time.perf_counter
    deadline = clock() + seconds

    async def worker() -> None:
        nonlocal cursor
        while cursor < len(requests) and clock() < deadline:
            n = cursor
            request = requests[n]
            cursor += 1
            started = clock()
            try:
                answers[n] = await calls[request.peer](
                    request.body, timeout=CALL_TIMEOUT, metadata=request.metadata
                )
            except grpc.RpcError as exc:  # a refusal is an answer here, checked later
                answers[n] = exc
            latencies[n] = clock() - started

    server0, client0, started = _cpu(pids), time.process_time(), clock()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = clock() - started
    server_cpu, client_cpu = _cpu(pids) - server0, time.process_time() - client0
    p50, p99 = percentiles(latencies.values(), 0.50, 0.99)
    measured = Measurement(
        target,
        in_flight,
        len(latencies),
        0,
        elapsed,
        p50,
        p99,
        server_cpu,
        client_cpu,
        pool_ran_out=cursor >= len(requests),
    )
    return measured, answers, latencies


def by_kind(
    requests: Sequence[Request], latencies: Mapping[int, float]
) -> list[tuple[str, int, float, float]]:
    """(kind of request, count, p50 s, mean s): refusals apart, whatever their category, and
    the allowed ones by category and identifier kind, hits and no-hits together."""
    groups: dict[str, list[float]] = {}
    for i, latency in latencies.items():
        r = requests[i]
        key = "refused" if r.expected not in ("hit", "no_hit") else r.kind
        groups.setdefault(key, []).append(latency)
    return [
        (key, len(values), percentiles(values, 0.5)[0], sum(values) / len(values))
        for key, values in sorted(groups.items())
    ]
