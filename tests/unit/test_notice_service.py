"""The receiving side of notices (node.notice_service) with the real policy library on the
embedded engine: accepted, refused by the receiver's own policy, idempotent by (publisher,
id, version), never older over newer, checked field by field, withdrawn only by its
publisher; and the local alerts (node.notice_hits) a Match or an import raises."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from federation.directory import Member, MemberStatus
from federation.model import Envelope, Identifier
from federation.notices_model import Notice, PublishNoticeQuery, WithdrawNoticeQuery
from node.errors import Kind, Refusal
from node.importer import import_file
from node.metrics import NodeMetrics
from node.notice_hits import NoticeAlerts
from node.notice_service import NoticeService, retention
from node.notices import NoticeStore
from node.policy import Decision
from node.policy.embedded import EmbeddedEngine
from node.service import NodeIdentity
from node.store import RecordStore
from tests.unit.policy_examples import POLICIES

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HERE = NodeIdentity("ES-PN", "ES", "bilateral")
WINDOW = {"valid_from": "2025-01-01", "valid_until": "2030-12-31"}
TERMS: dict[str, Any] = {
    "categories": ["travel_document", "wanted_person"],
    "purposes": ["criminal_investigation"],
    "methods": ["Match", "PublishNotice"],
    "legal_bases": ["none"],
    **WINDOW,
}
DATA = {
    "agreements": {"DE-BKA": TERMS, "NL-KLPD": {**TERMS, "methods": ["Match"]}},
    "settings": {"retention_days": 10},
}
SECRET_DOC = "ZQ-7730091"


def _member(node_id: str) -> Member:
    return Member(
        node_id, f"{node_id.lower()}.example:7001", "a" * 64, "b" * 64, MemberStatus.ACTIVE
    )


DE, NL, FR = _member("DE-BKA"), _member("NL-KLPD"), _member("FR-DGPN")


class RecordingEngine:
    """The real embedded engine, remembering what it was asked (to show no value reaches
    the policy)."""

    def __init__(self) -> None:
        self._engine = EmbeddedEngine(POLICIES, DATA)
        self.name = "embedded"
        self.inputs: list[dict[str, Any]] = []

    async def decide(self, policy_input: Any) -> Decision:
        self.inputs.append(policy_input)
        return self._engine.decide(policy_input)

    def close(self) -> None:
        self._engine.close()


@pytest.fixture
def notices(tmp_path: Path) -> Iterator[NoticeStore]:
    store = NoticeStore(f"sqlite:///{tmp_path / 'node.db'}")
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
def engine() -> Iterator[RecordingEngine]:
    recording = RecordingEngine()
    yield recording
    recording.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def service(
    notices: NoticeStore, engine: RecordingEngine, registry: CollectorRegistry
) -> NoticeService:
    return NoticeService(HERE, notices, engine.decide, NodeMetrics(registry), clock=lambda: NOW)


def _query(sender: Member = DE, version: int = 1, **changes: Any) -> PublishNoticeQuery:
    fields: dict[str, Any] = {
        "notice_id": "ntc_one",
        "version": version,
        "category": "travel_document",
        "identifiers": (Identifier("document_number", SECRET_DOC),),
        "summary": "Stolen blank passport.\n\tSeize it.",
        "handling_code": "H1",
        "to_all_members": False,
        "recipients": ("ES-PN", "FR-DGPN"),
        "expires_at": NOW + timedelta(days=30),
    }
    fields.update(changes)
    envelope = Envelope(sender.node_id, "criminal_investigation", nonce=b"n" * 16, issued_at=NOW)
    return PublishNoticeQuery(envelope, Notice(**fields))


def _publish(service: NoticeService, query: PublishNoticeQuery, sender: Member = DE) -> Any:
    return asyncio.run(service.publish(sender, query))


def _refusal(service: NoticeService, query: PublishNoticeQuery, sender: Member = DE) -> Refusal:
    with pytest.raises(Refusal) as refused:
        _publish(service, query, sender)
    return refused.value


def _count(registry: CollectorRegistry, peer: str, outcome: str) -> float | None:
    labels = {"peer": peer, "outcome": outcome}
    return registry.get_sample_value("liaison_notices_received_total", labels)


def test_an_accepted_notice_is_stored_normalised_and_kept_at_most_its_retention(
    service: NoticeService, notices: NoticeStore, engine: RecordingEngine, registry: Any
) -> None:
    receipt = _publish(service, _query())
    assert (receipt.responder, receipt.notice_id, receipt.version) == ("ES-PN", "ntc_one", 1)
    assert receipt.policy_revision
    held = notices.held("DE-BKA", "ntc_one")
    assert held is not None
    assert held.identifiers == (Identifier("document_number", "ZQ7730091"),)
    assert held.active_until == NOW + timedelta(days=10)  # retention_days 10 < 30 days
    asked = json.dumps(engine.inputs)
    assert SECRET_DOC not in asked and "ZQ7730091" not in asked and "passport" not in asked
    assert engine.inputs[0]["notice"] == {"handling_code": "H1", "addressed_to": "named"}
    assert engine.inputs[0]["request"]["method"] == "PublishNotice"
    assert _count(registry, "DE-BKA", "accepted") == 1


def test_a_redelivery_gets_the_same_answer_and_stores_nothing_twice(
    service: NoticeService, notices: NoticeStore, engine: RecordingEngine, registry: Any
) -> None:
    first = _publish(service, _query())
    again = _publish(service, _query())
    assert (again.notice_id, again.version) == (first.notice_id, first.version)
    assert len(engine.inputs) == 1  # the policy is not asked again
    assert len(notices.list()) == 1
    assert _count(registry, "DE-BKA", "duplicate") == 1
    _publish(service, _query(version=3, summary="newer"))
    older = _publish(service, _query(version=2, summary="older"))
    assert older.version == 3
    held = notices.held("DE-BKA", "ntc_one")
    assert held is not None and held.summary == "newer"


def test_the_receivers_policy_decides(service: NoticeService, registry: Any) -> None:
    refused = _refusal(service, _query(NL), NL)
    assert (refused.kind, refused.reasons) == (Kind.DENIED, ("method_not_permitted",))
    assert refused.policy_revision
    h3 = _refusal(service, _query(handling_code="H3"))
    assert h3.reasons == ("handling_code_not_accepted",)
    assert _count(registry, "NL-KLPD", "refused") == 1


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"summary": "x" * 1001}, "summary_invalid"),
        ({"summary": "bell\x07"}, "summary_invalid"),
        ({"summary": "csi\x9b31m"}, "summary_invalid"),
        ({"category": "firearm"}, "category_unknown"),
        ({"identifiers": ()}, "identifiers_missing"),
        ({"identifiers": (Identifier("vin", "X"),)}, "identifier_kind_unknown"),
        ({"identifiers": (Identifier("document_number", "#!"),)}, "identifier_invalid"),
        ({"handling_code": "H9"}, "handling_code_invalid"),
        ({"expires_at": None}, "expiry_missing"),
        ({"notice_id": "../x"}, "notice_id_invalid"),
        ({"version": 0}, "version_invalid"),
        ({"expires_at": NOW}, "notice_expired"),
        ({"recipients": ("FR-DGPN",)}, "not_a_recipient"),
    ],
)
def test_each_check_names_its_reason(
    service: NoticeService, engine: RecordingEngine, changes: dict[str, Any], reason: str
) -> None:
    refused = _refusal(service, _query(**changes))
    assert refused.reasons == (reason,)
    assert engine.inputs == []  # refused before any policy was asked
    assert "bell" not in refused.message and "x" * 50 not in refused.message


def test_a_notice_to_all_members_needs_no_name(service: NoticeService) -> None:
    assert _publish(service, _query(to_all_members=True, recipients=())).version == 1


def test_only_the_publisher_withdraws_and_a_withdrawn_notice_stops_matching(
    service: NoticeService, notices: NoticeStore
) -> None:
    _publish(service, _query())
    doc = [Identifier("document_number", "ZQ7730091")]
    assert notices.match(doc, NOW) == [("DE-BKA", "ntc_one", "travel_document")]
    env = Envelope("FR-DGPN", "criminal_investigation", nonce=b"m" * 16, issued_at=NOW)
    with pytest.raises(Refusal) as refused:
        asyncio.run(service.withdraw(FR, WithdrawNoticeQuery(env, "ntc_one", 2)))
    assert refused.value.reasons == ("not_publisher",)
    assert notices.match(doc, NOW) != []
    env = Envelope("DE-BKA", "criminal_investigation", nonce=b"o" * 16, issued_at=NOW)
    receipt = asyncio.run(service.withdraw(DE, WithdrawNoticeQuery(env, "ntc_one", 2)))
    assert receipt.version == 2
    assert notices.match(doc, NOW) == []
    again = asyncio.run(service.withdraw(DE, WithdrawNoticeQuery(env, "ntc_one", 2)))
    assert again.version == 2


def test_a_publish_notice_carries_exactly_retention_days() -> None:
    assert retention(Decision(True, obligations={"retention_days": 5})) == 5
    for wrong in ({}, {"retention_days": 5, "max_results": 2}, {"retention_days": 0}):
        with pytest.raises(Refusal) as refused:
            retention(Decision(True, obligations=wrong))
        assert refused.value.reasons == ("policy_error",)
    with pytest.raises(Refusal) as unknown:
        retention(Decision(True, obligations={"retention_days": 5, "teleport": True}))
    assert unknown.value.reasons == ("unknown_obligation",)


def test_a_match_and_an_import_hitting_a_notice_raise_local_alerts(
    service: NoticeService, notices: NoticeStore, tmp_path: Path, caplog: Any
) -> None:
    _publish(service, _query())
    alerts = NoticeAlerts(notices, clock=lambda: NOW)
    hits = alerts.match_from("FR-DGPN", [Identifier("document_number", "ZQ7730091")])
    assert [(h.notice_id, h.trigger) for h in hits] == [("ntc_one", "match from FR-DGPN")]
    assert alerts.match_from("FR-DGPN", [Identifier("document_number", "OTHER1")]) == []
    records = RecordStore(f"sqlite:///{tmp_path / 'node.db'}")
    records.create_schema()
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"category": "travel_document", "document_number": "zq 7730091"})
        + "\n"
        + json.dumps({"category": "travel_document", "document_number": "AB123"})
        + "\n"
    )
    report = import_file(rows, records, alerts=alerts)
    records.close()
    assert (report.total, report.notice_hits) == (2, 1)
    assert notices.hit_counts() == {"travel_document": 2}
    assert "ZQ7730091" not in caplog.text and "NOTICE HIT" in caplog.text


def test_a_notice_another_replica_received_is_matched_after_the_refresh(
    service: NoticeService, notices: NoticeStore, tmp_path: Path
) -> None:
    """Two stores on one database, as two replicas: this one's keys in memory follow its
    own changes at once, and the other's after `refresh_s`."""
    other = NoticeStore(f"sqlite:///{tmp_path / 'node.db'}")
    clock = [0.0]
    alerts = NoticeAlerts(other, clock=lambda: NOW, refresh_s=5.0, monotonic=lambda: clock[0])
    doc = [Identifier("document_number", "ZQ7730091")]
    assert alerts.match_from("FR-DGPN", doc) == []
    _publish(service, _query())  # received by the replica of `notices`
    assert alerts.match_from("FR-DGPN", doc) == []  # not seen yet
    clock[0] = 5.0
    assert len(alerts.match_from("FR-DGPN", doc)) == 1
    env = Envelope("DE-BKA", "criminal_investigation", nonce=b"o" * 16, issued_at=NOW)
    asyncio.run(service.withdraw(DE, WithdrawNoticeQuery(env, "ntc_one", 2)))
    # still a candidate in memory, but the database says it is withdrawn: no hit
    assert alerts.match_from("FR-DGPN", doc) == []
    other.close()
