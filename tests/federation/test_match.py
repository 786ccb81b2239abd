"""Match across real node processes over real mTLS, through the real client."""

from __future__ import annotations

import dataclasses

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from federation.client import ClientIdentity, blocking_secure_channel
from federation.errors import InvalidRequest, PeerRefused, PeerUnavailable
from node.audit.verify import verify_log
from node.local.federation import Federation
from tests.federation.helpers import ask, audit_entry, first, scrape


@pytest.fixture(scope="module")
def de(fed: Federation) -> ClientIdentity:
    return fed.nodes["DE-BKA"].identity()


def test_hit_returns_only_opaque_references(fed: Federation, de: ClientIdentity) -> None:
    row = first(fed, "FR-DGPN", "travel_document")
    raw = str(row["document_number"])
    # The owner normalises: lower case and dashes still match.
    spelled = "-".join(raw.lower()[i : i + 4] for i in range(0, len(raw), 4))
    answer = ask(de, fed, "FR-DGPN", "travel_document", [("document_number", spelled)])
    assert answer.hit is True
    assert answer.responder == "FR-DGPN"
    assert len(answer.record_refs) == 1 and answer.record_refs[0].startswith("ref_")
    assert answer.policy_revision.startswith("sha256:")
    assert audit_entry(fed.nodes["FR-DGPN"], answer.audit_entry)["decision"] == "allow"


def test_no_hit(fed: Federation, de: ClientIdentity) -> None:
    answer = ask(de, fed, "FR-DGPN", "travel_document", [("document_number", "ZZ999999NONE")])
    assert answer.hit is False and answer.record_refs == ()


def test_person_hit_folds_case_and_diacritics(fed: Federation, de: ClientIdentity) -> None:
    row = first(fed, "FR-DGPN", "wanted_person")
    value = f"{str(row['family_name']).upper()}|{row['given_names']}|{row['date_of_birth']}"
    answer = ask(de, fed, "FR-DGPN", "wanted_person", [("name_dob", value)])
    assert answer.hit is True


def test_category_outside_agreement_is_refused_with_reason(
    fed: Federation, de: ClientIdentity
) -> None:
    with pytest.raises(PeerRefused) as err:
        ask(de, fed, "NL-KLPD", "travel_document", [("document_number", "X1234567")])
    assert "category_not_agreed" in err.value.reasons
    assert err.value.peer == "NL-KLPD"
    assert err.value.status == "PERMISSION_DENIED"
    # The refusal names the revision that decided and the audit entry that records it.
    assert err.value.metadata["policy_revision"].startswith("sha256:")
    audited = audit_entry(fed.nodes["NL-KLPD"], err.value.metadata["audit_entry"])
    assert audited["reasons"] == list(err.value.reasons)
    assert audited["policy_revision"] == err.value.metadata["policy_revision"]


def test_purpose_outside_agreement_is_refused(fed: Federation, de: ClientIdentity) -> None:
    with pytest.raises(PeerRefused) as err:
        ask(
            de,
            fed,
            "NL-KLPD",
            "vehicle",
            [("vin", "1HGCM82633A004352")],
            purpose="counter_terrorism",
        )
    assert err.value.reasons == ("purpose_not_agreed",)


def test_no_agreement_at_all(fed: Federation) -> None:
    nl = fed.nodes["NL-KLPD"].identity()
    with pytest.raises(PeerRefused) as err:
        ask(nl, fed, "FR-DGPN", "vehicle", [("vin", "1HGCM82633A004352")])
    assert "no_agreement" in err.value.reasons


@pytest.mark.parametrize(
    ("category", "identifiers", "purpose", "reason"),
    [
        ("travel_document", [("document_number", "X1")], "", "purpose_missing"),
        ("travel_document", [("document_number", "X1")], "curiosity", "purpose_unknown"),
        ("spaceship", [("document_number", "X1")], "criminal_investigation", "category_unknown"),
        ("travel_document", [], "criminal_investigation", "identifiers_missing"),
        ("travel_document", [("vin", "X1")], "criminal_investigation", "identifier_kind_unknown"),
        (
            "travel_document",
            [("document_number", "")],
            "criminal_investigation",
            "identifier_invalid",
        ),
        (
            "travel_document",
            [("document_number", "X" * 300)],
            "criminal_investigation",
            "identifier_invalid",
        ),
        (
            "travel_document",
            [("document_number", "@@@")],
            "criminal_investigation",
            "identifier_invalid",
        ),
    ],
)
def test_malformed_requests_are_invalid_with_reason(
    fed: Federation,
    de: ClientIdentity,
    category: str,
    identifiers: list[tuple[str, str]],
    purpose: str,
    reason: str,
) -> None:
    with pytest.raises(InvalidRequest) as err:
        ask(de, fed, "FR-DGPN", category, identifiers, purpose=purpose)
    assert err.value.reasons == (reason,)
    assert err.value.status == "INVALID_ARGUMENT"


def test_ten_megabyte_identifier_is_refused_and_node_keeps_serving(
    fed: Federation, de: ClientIdentity
) -> None:
    with pytest.raises(InvalidRequest) as err:
        ask(de, fed, "FR-DGPN", "travel_document", [("document_number", "X" * 10_000_000)])
    assert err.value.status == "RESOURCE_EXHAUSTED"
    assert ask(de, fed, "FR-DGPN", "travel_document", [("document_number", "AB12")]).hit is False


def test_envelope_naming_another_node_is_refused(fed: Federation, de: ClientIdentity) -> None:
    with pytest.raises(PeerRefused) as err:
        ask(de, fed, "FR-DGPN", "travel_document", [("document_number", "X1")], requester="NL-KLPD")
    assert err.value.reasons == ("requester_mismatch",)


def test_member_not_in_directory_is_refused(fed: Federation, stranger: ClientIdentity) -> None:
    with pytest.raises(PeerRefused) as err:
        ask(stranger, fed, "FR-DGPN", "travel_document", [("document_number", "X1")])
    assert err.value.reasons == ("unknown_member",)


def test_certificate_from_another_ca_fails_the_handshake(
    fed: Federation, rogue: ClientIdentity
) -> None:
    with pytest.raises(PeerUnavailable):
        ask(rogue, fed, "FR-DGPN", "travel_document", [("document_number", "X1")])
    assert (
        ask(
            fed.nodes["DE-BKA"].identity(),
            fed,
            "FR-DGPN",
            "travel_document",
            [("document_number", "AB12")],
        ).hit
        is False
    )


def test_no_client_certificate_fails_the_handshake(fed: Federation, de: ClientIdentity) -> None:
    anonymous = dataclasses.replace(de, certificate=b"", private_key=b"")
    with pytest.raises(PeerUnavailable):
        ask(anonymous, fed, "FR-DGPN", "travel_document", [("document_number", "X1")])


def test_every_request_is_audited_and_counted_without_personal_values(
    fed: Federation, de: ClientIdentity
) -> None:
    # The federation is the session's, so counters start wherever earlier tests left them:
    # compare before and after. Its witnessing is off and tests run one at a time, so only
    # this test's calls reach FR-DGPN meanwhile, and the deltas are exact.
    fr = fed.nodes["FR-DGPN"]
    rows = [
        r
        for r in fr.rows
        if r["category"] == "travel_document" and not r.get("source_restrictions")
    ]
    docs = [str(r["document_number"]) for r in rows[:3]]
    allowed = {"peer": "DE-BKA", "method": "Match", "decision": "allow"}
    hits = {"peer": "DE-BKA", "category": "travel_document"}

    def counts() -> tuple[float, float, float, float]:
        return (
            scrape(fr, "liaison_requests_total", allowed) or 0.0,
            scrape(fr, "liaison_hits_total", hits) or 0.0,
            scrape(fr, "liaison_policy_decision_duration_seconds_count") or 0.0,
            scrape(fr, "liaison_audit_tree_size") or 0.0,
        )

    before = counts()
    for doc in docs:
        assert ask(de, fed, "FR-DGPN", "travel_document", [("document_number", doc)]).hit
    missing = "ZZ999999NONE"
    assert not ask(de, fed, "FR-DGPN", "travel_document", [("document_number", missing)]).hit
    after = counts()
    sent = len(docs) + 1  # each counted and audited; hits only for the three found
    assert [b - a for a, b in zip(before, after, strict=True)] == [sent, len(docs), sent, sent]

    audit = fr.folder / "audit.log"
    text = audit.read_text()
    assert verify_log(audit) == len(text.splitlines()) == after[3]
    metrics = fr.read_metrics()
    for doc in [*docs, missing]:
        assert doc not in text
        assert doc not in metrics
    assert "liaison_certificate_expiry_timestamp_seconds" in metrics


def test_health_and_reflection_are_served_over_mtls(fed: Federation, de: ClientIdentity) -> None:
    with blocking_secure_channel(de, "FR-DGPN", fed.nodes["FR-DGPN"].endpoint) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="liaison.exchange.v1.ExchangeService"),
            timeout=5,
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert "liaison.exchange.v1.ExchangeService" in names
    assert "grpc.health.v1.Health" in names


def test_record_restricted_from_the_requester_is_not_even_a_hit(
    fed: Federation, de: ClientIdentity
) -> None:
    def restricted(hidden_from_de: bool) -> str:
        row = next(
            r
            for r in fed.nodes["FR-DGPN"].rows
            if r["category"] == "travel_document"
            and r.get("source_restrictions")
            and ("DE" in r["source_restrictions"]) is hidden_from_de
        )
        return str(row["document_number"])

    doc = restricted(hidden_from_de=True)
    assert ask(de, fed, "FR-DGPN", "travel_document", [("document_number", doc)]).hit is False
    # The restriction is per country: a record restricted only from others is DE's hit.
    doc = restricted(hidden_from_de=False)
    assert ask(de, fed, "FR-DGPN", "travel_document", [("document_number", doc)]).hit is True
