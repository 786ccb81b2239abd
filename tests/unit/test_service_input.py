"""What the Match service refuses before policy, what policy sees, and how duties are kept."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from federation.directory import Member, MemberStatus
from federation.model import Envelope, Identifier, MatchAnswer, MatchQuery
from federation.vocabulary import MAX_IDENTIFIER_LENGTH, LegalBasis
from node.errors import Kind, Refusal
from node.metrics import NodeMetrics
from node.normalise import normalise_identifier
from node.policy import Decision, PolicyUnavailable
from node.policy.cache import CachingEngine
from node.records import NewRecord
from node.references import References
from node.service import (
    DEFAULT_MAX_RESULTS,
    MAX_IDENTIFIERS,
    POLICY_INPUT_VERSION,
    MatchService,
    NodeIdentity,
    build_policy_input,
    max_results,
    validate_match,
)
from node.store import RecordStore, new_ref

NODE = NodeIdentity(node_id="DE-BKA", country="DE", profile="bilateral")
NOW = datetime(2026, 3, 1, 12, 0, 0, 987654, tzinfo=UTC)
REFERENCES = References(bytes(32))
MEMBER = Member(
    node_id="FR-PN",
    endpoint="fr-pn.example:7001",
    certificate_sha256="a" * 64,
    signing_public_key="b" * 64,
    status=MemberStatus.ACTIVE,
)
SECRET_VIN = "WVWZZZ1JZXW386752"
SECRET_PERSON = "DUPONT|MARIE|1984-07-19"


def _query(*identifiers: Identifier, category: str = "vehicle", **envelope: Any) -> MatchQuery:
    fields: dict[str, Any] = {
        "requester": "FR-PN",
        "purpose": "criminal_investigation",
        "legal_basis": LegalBasis.BILATERAL_AGREEMENT,
        "legal_reference": "FR-DE 2019/4",
        "case_reference": "PN-2026-0042",
        "nonce": b"n" * 16,
        "issued_at": NOW,
    }
    fields.update(envelope)
    return MatchQuery(
        envelope=Envelope(**fields),
        category=category,
        identifiers=identifiers or (Identifier("vin", SECRET_VIN),),
    )


def _refusal(query: MatchQuery, member: Member = MEMBER) -> Refusal:
    with pytest.raises(Refusal) as info:
        validate_match(member, query)
    return info.value


# --- validate_match ----------------------------------------------------------------------------


def test_a_well_formed_query_passes() -> None:
    validate_match(MEMBER, _query())
    validate_match(
        MEMBER, _query(*(Identifier("vin", "X" * MAX_IDENTIFIER_LENGTH),) * MAX_IDENTIFIERS)
    )
    validate_match(
        MEMBER,
        _query(
            Identifier("name_dob", SECRET_PERSON),
            Identifier("document_number", "12AB34567"),
            category="wanted_person",
        ),
    )


def test_requester_mismatch_is_a_denial() -> None:
    refusal = _refusal(_query(requester="NL-KMAR"))
    assert refusal.kind is Kind.DENIED
    assert refusal.reasons == ("requester_mismatch",)
    assert "'NL-KMAR'" in refusal.message and "'FR-PN'" in refusal.message
    assert refusal.decision == "deny"


@pytest.mark.parametrize(
    ("query", "reason", "fragment"),
    [
        (_query(purpose=""), "purpose_missing", "envelope.purpose is required"),
        (_query(purpose="curiosity"), "purpose_unknown", "'curiosity' is not a federation"),
        (_query(category="boat"), "category_unknown", "category 'boat' is not one of"),
        (
            MatchQuery(_query().envelope, "vehicle", ()),
            "identifiers_missing",
            "at least one identifier",
        ),
        (
            _query(*(Identifier("vin", f"VIN{i}") for i in range(MAX_IDENTIFIERS + 1))),
            "too_many_identifiers",
            f"at most {MAX_IDENTIFIERS} identifiers",
        ),
        (
            _query(Identifier("vin", "X"), Identifier("name_dob", SECRET_PERSON)),
            "identifier_kind_unknown",
            "identifiers[1].kind 'name_dob' is not used for vehicle",
        ),
        (
            _query(Identifier("shoe_size", "44")),
            "identifier_kind_unknown",
            "identifiers[0].kind 'shoe_size'",
        ),
        (
            _query(Identifier("vin", "")),
            "identifier_invalid",
            f"identifiers[0].value must be 1 to {MAX_IDENTIFIER_LENGTH} characters, got 0",
        ),
        (
            _query(Identifier("vin", "X"), Identifier("vin", "X" * (MAX_IDENTIFIER_LENGTH + 1))),
            "identifier_invalid",
            f"identifiers[1].value must be 1 to {MAX_IDENTIFIER_LENGTH} "
            f"characters, got {MAX_IDENTIFIER_LENGTH + 1}",
        ),
    ],
)
def test_each_invalid_query_gets_its_reason(query: MatchQuery, reason: str, fragment: str) -> None:
    refusal = _refusal(query)
    assert refusal.kind is Kind.INVALID
    assert refusal.reasons == (reason,)
    assert fragment in refusal.message
    assert refusal.decision == "invalid"


def test_refusal_messages_never_echo_identifier_values() -> None:
    long_value = SECRET_VIN * 20
    refusal = _refusal(_query(Identifier("vin", long_value)))
    assert SECRET_VIN not in refusal.message
    refusal = _refusal(_query(Identifier("name_dob", SECRET_PERSON)))
    assert SECRET_PERSON not in refusal.message


def test_echoed_peer_strings_are_cut_short() -> None:
    refusal = _refusal(_query(purpose="p" * 10_000))
    assert len(refusal.message) < 500


# --- build_policy_input -------------------------------------------------------------------------


def test_policy_input_has_the_contracted_shape() -> None:
    query = _query(
        Identifier("vin", SECRET_VIN),
        Identifier("registration_number", "B-XY 1"),
        Identifier("vin", "WVWZZZ1JZXW000001"),
    )
    doc = build_policy_input(NODE, MEMBER, query, NOW)
    assert doc == {
        "version": POLICY_INPUT_VERSION,
        "now": "2026-03-01T12:00:00Z",
        "node": {"node_id": "DE-BKA", "country": "DE", "profile": "bilateral"},
        "requester": {"node_id": "FR-PN", "country": "FR", "status": "active"},
        "envelope": {
            "purpose": "criminal_investigation",
            "legal_basis": "bilateral_agreement",
            "has_legal_reference": True,
            "has_case_reference": True,
        },
        "request": {
            "method": "Match",
            "category": "vehicle",
            "identifier_kinds": ["registration_number", "vin"],
        },
    }


@pytest.mark.parametrize(
    "identifiers",
    [
        (Identifier("vin", SECRET_VIN),),
        (Identifier("name_dob", SECRET_PERSON), Identifier("document_number", "C01X00T47")),
    ],
)
def test_policy_input_never_contains_an_identifier_value(
    identifiers: tuple[Identifier, ...],
) -> None:
    category = "vehicle" if identifiers[0].kind == "vin" else "wanted_person"
    query = _query(*identifiers, category=category)
    text = json.dumps(build_policy_input(NODE, MEMBER, query, NOW))
    for ident in identifiers:
        assert ident.value not in text
        for part in ident.value.split("|"):
            assert part not in text
    # Nor the references, nonce or anything else a person could be traced by.
    assert "FR-DE 2019/4" not in text
    assert "PN-2026-0042" not in text


def test_policy_input_reports_absent_references_and_member_status() -> None:
    member = replace(MEMBER, status=MemberStatus.SUSPENDED)
    query = _query(legal_basis=LegalBasis.NONE, legal_reference="", case_reference="")
    doc = build_policy_input(NODE, member, query, NOW)
    assert doc["envelope"] == {
        "purpose": "criminal_investigation",
        "legal_basis": "none",
        "has_legal_reference": False,
        "has_case_reference": False,
    }
    assert doc["requester"]["status"] == "suspended"


def test_policy_input_now_is_utc_to_the_second() -> None:
    cet = datetime(2026, 3, 1, 13, 0, 59, 999999, tzinfo=timezone(timedelta(hours=1)))
    assert build_policy_input(NODE, MEMBER, _query(), cet)["now"] == "2026-03-01T12:00:59Z"


def test_policy_input_is_the_same_for_different_values_of_the_same_kinds() -> None:
    a = build_policy_input(NODE, MEMBER, _query(Identifier("vin", SECRET_VIN)), NOW)
    b = build_policy_input(NODE, MEMBER, _query(Identifier("vin", "OTHER")), NOW)
    assert a == b  # which is what lets decisions be cached by their value-free input


# --- max_results --------------------------------------------------------------------------------


def test_max_results_defaults_and_honours_a_limit() -> None:
    assert max_results({}) == DEFAULT_MAX_RESULTS
    assert max_results({"max_results": 3}) == 3
    assert max_results({"max_results": 1, "require_approval": False, "retention_days": 30}) == 1


@pytest.mark.parametrize("value", [0, -1, "5", 2.5, True, None, [3]])
def test_unusable_max_results_is_a_policy_error(value: object) -> None:
    with pytest.raises(Refusal) as info:
        max_results({"max_results": value})
    assert info.value.kind is Kind.DENIED
    assert info.value.reasons == ("policy_error",)


def test_require_approval_cannot_be_honoured_by_a_match() -> None:
    with pytest.raises(Refusal) as info:
        max_results({"require_approval": True, "max_results": 5})
    assert info.value.reasons == ("obligation_unenforceable",)
    assert info.value.kind is Kind.DENIED


# --- the service end to end, over a real store and a fixed-answer engine ------------------


class FixedEngine:
    """A policy engine twin: answers one fixed decision and remembers what it was asked."""

    name = "fixed"
    waits_on_io = False

    def __init__(self, decision: Decision | None) -> None:
        self._decision = decision
        self.inputs: list[Mapping[str, Any]] = []

    @property
    def revision(self) -> str:
        return "rev-fixed"

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        self.inputs.append(policy_input)
        if self._decision is None:
            raise PolicyUnavailable("engine down")
        return self._decision

    def close(self) -> None:
        pass


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[RecordStore]:
    records = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    records.create_schema()
    records.add_records(
        [
            NewRecord(
                new_ref(),
                "vehicle",
                "H0",
                (),
                (Identifier("vin", normalise_identifier("vin", SECRET_VIN)),),
                {"n": i},
            )
            for i in range(3)
        ]
    )
    yield records
    records.close()


def _service(
    store: RecordStore, decision: Decision | None
) -> tuple[MatchService, FixedEngine, CollectorRegistry]:
    registry = CollectorRegistry()
    engine = FixedEngine(decision)
    service = MatchService(
        NODE, store, engine, NodeMetrics(registry), clock=lambda: NOW, references=REFERENCES
    )
    return service, engine, registry


def test_allowed_match_is_capped_by_max_results(store: RecordStore) -> None:
    decision = Decision(allow=True, obligations={"max_results": 2}, revision="rev-9")
    service, engine, registry = _service(store, decision)
    answer = asyncio.run(service.match(MEMBER, _query(Identifier("vin", SECRET_VIN.lower()))))
    assert answer.hit and len(answer.record_refs) == 2
    # One reference per record, each bound to the requester (node/references.py).
    opened = [REFERENCES.open(MEMBER.node_id, ref, NOW).stored_ref for ref in answer.record_refs]
    vin = Identifier("vin", normalise_identifier("vin", SECRET_VIN))
    assert opened == store.find("vehicle", [vin], 2)
    assert answer.responder == "DE-BKA" and answer.policy_revision == "rev-9"
    assert SECRET_VIN not in json.dumps(engine.inputs[0])
    assert (
        registry.get_sample_value(
            "liaison_policy_decisions_total", {"engine": "fixed", "result": "allow"}
        )
        == 1
    )


def test_denied_match_carries_the_policy_reasons(store: RecordStore) -> None:
    service, _, registry = _service(store, Decision(allow=False, reasons=("no_agreement",)))
    with pytest.raises(Refusal) as info:
        asyncio.run(service.match(MEMBER, _query()))
    assert info.value.reasons == ("no_agreement",)
    assert (
        registry.get_sample_value(
            "liaison_policy_decisions_total", {"engine": "fixed", "result": "deny"}
        )
        == 1
    )


def test_malformed_value_is_refused_before_policy_is_asked(store: RecordStore) -> None:
    service, engine, _ = _service(store, Decision(allow=True))
    with pytest.raises(Refusal) as info:
        asyncio.run(service.match(MEMBER, _query(Identifier("vin", "!!!"))))
    assert info.value.reasons == ("identifier_invalid",)
    assert engine.inputs == []


def test_policy_engine_down_is_unavailable_not_allow(store: RecordStore) -> None:
    service, _, registry = _service(store, None)
    with pytest.raises(Refusal) as info:
        asyncio.run(service.match(MEMBER, _query()))
    assert info.value.kind is Kind.UNAVAILABLE
    assert info.value.reasons == ("policy_unavailable",)
    assert (
        registry.get_sample_value(
            "liaison_policy_decisions_total", {"engine": "fixed", "result": "unavailable"}
        )
        == 1
    )


def test_a_decision_past_the_deadline_is_not_used(store: RecordStore) -> None:
    class SlowEngine(FixedEngine):
        def decide(
            self, policy_input: Mapping[str, Any], *, input_json: str | None = None
        ) -> Decision:
            time.sleep(0.05)
            return super().decide(policy_input, input_json=input_json)

    registry = CollectorRegistry()
    engine = SlowEngine(Decision(allow=True, revision="rev-slow"))
    service = MatchService(
        NODE,
        store,
        engine,
        NodeMetrics(registry),
        clock=lambda: NOW,
        policy_deadline=0.01,
        references=REFERENCES,
    )
    with pytest.raises(Refusal) as info:
        asyncio.run(service.match(MEMBER, _query(Identifier("vin", SECRET_VIN))))
    assert info.value.kind is Kind.UNAVAILABLE
    assert info.value.reasons == ("policy_unavailable",)
    assert "past its deadline" in info.value.message
    assert (
        registry.get_sample_value(
            "liaison_policy_decisions_total", {"engine": "fixed", "result": "timeout"}
        )
        == 1
    )


class WaitingEngine(FixedEngine):
    """An engine that waits on another process, as OPA does over HTTP: it answers once
    `release` is set, and notes the thread it was asked on."""

    waits_on_io = True

    def __init__(self, decision: Decision | None) -> None:
        super().__init__(decision)
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        self.threads.append(threading.current_thread())
        self.release.wait(timeout=10)
        return super().decide(policy_input, input_json=input_json)


def test_an_engine_waiting_on_io_is_refused_at_the_deadline_while_the_loop_serves(
    store: RecordStore,
) -> None:
    # Asked on the loop, the engine would hold it until `release` (10 s), then answer
    # allow "past its deadline"; asked from a thread, the loop refuses at the deadline
    # and runs other work meanwhile.
    registry = CollectorRegistry()
    engine = WaitingEngine(Decision(allow=True, revision="rev-io"))
    service = MatchService(
        NODE,
        store,
        CachingEngine(engine),
        NodeMetrics(registry),
        clock=lambda: NOW,
        policy_deadline=0.2,
        references=REFERENCES,
    )
    ticks = 0

    async def meanwhile() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def run() -> Refusal:
        other = asyncio.create_task(meanwhile())
        try:
            with pytest.raises(Refusal) as info:
                await service.match(MEMBER, _query(Identifier("vin", SECRET_VIN)))
            return info.value
        finally:
            engine.release.set()
            other.cancel()

    refusal = asyncio.run(run())
    assert refusal.kind is Kind.UNAVAILABLE and refusal.reasons == ("policy_unavailable",)
    assert "did not decide within its 200 ms deadline" in refusal.message
    assert ticks >= 2  # the loop went on while the engine was asked
    assert engine.threads and engine.threads[0] is not threading.main_thread()
    assert (
        registry.get_sample_value(
            "liaison_policy_decisions_total", {"engine": "fixed", "result": "timeout"}
        )
        == 1
    )


def test_a_cached_decision_is_answered_on_the_loop_whatever_the_engine(
    store: RecordStore,
) -> None:
    engine = WaitingEngine(
        Decision(allow=True, obligations={"max_results": 1}, revision="rev-fixed")
    )
    engine.release.set()
    registry = CollectorRegistry()
    service = MatchService(
        NODE,
        store,
        CachingEngine(engine),
        NodeMetrics(registry),
        clock=lambda: NOW,
        references=REFERENCES,
    )

    async def twice() -> list[MatchAnswer]:
        query = _query(Identifier("vin", SECRET_VIN))
        return [await service.match(MEMBER, query), await service.match(MEMBER, query)]

    answers = asyncio.run(twice())
    assert [a.hit for a in answers] == [True, True]
    assert len(engine.inputs) == 1  # the second was answered from the cache
    assert (
        registry.get_sample_value(
            "liaison_policy_decisions_total", {"engine": "fixed", "result": "allow"}
        )
        == 2
    )


def test_a_store_that_cannot_answer_is_a_refusal_not_a_crash(store: RecordStore) -> None:
    service, _, _ = _service(store, Decision(allow=True, revision="rev-1"))
    with store.engine.begin() as conn:  # the records vanish under the node (a real error)
        conn.exec_driver_sql("DROP TABLE identifiers")
    with pytest.raises(Refusal) as info:
        asyncio.run(service.match(MEMBER, _query(Identifier("vin", SECRET_VIN))))
    assert info.value.kind is Kind.UNAVAILABLE
    assert info.value.reasons == ("store_unavailable",)
    assert info.value.policy_revision == "rev-1"
