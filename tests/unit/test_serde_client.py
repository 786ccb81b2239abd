"""The client side of `federation.serde`: plain values to a request's wire bytes and an
answer's wire bytes to plain values, pinned byte for byte to the generated messages, so the
clients that use them (federation/client.py, federation/oversight.py) send what they always
sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from federation import serde
from federation.model import Envelope, Identifier, MatchAnswer, MatchQuery, ProvenEntry
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb
from federation.wire.liaison.exchange.v1 import oversight_pb2 as opb

QUERY = MatchQuery(
    envelope=Envelope(requester="FR-PN", purpose="criminal_investigation", nonce=b"n" * 16),
    category="vehicle",
    identifiers=(Identifier("vin", "WVWZZZ1JZXW000001"),),
)


def test_match_query_bytes_are_the_messages() -> None:
    assert serde.match_query_to_bytes(QUERY) == (
        serde.match_query_to_proto(QUERY).SerializeToString()
    )
    back = serde.match_query_from_proto(
        pb.MatchRequest.FromString(serde.match_query_to_bytes(QUERY))
    )
    assert back == QUERY


def test_match_answer_from_bytes() -> None:
    raw = pb.MatchResponse(
        responder="DE-BKA", hit=True, record_refs=["r1"], policy_revision="p", audit_entry_id="7"
    ).SerializeToString()
    assert serde.match_answer_from_bytes(raw) == MatchAnswer("DE-BKA", True, ("r1",), "p", "7")


def test_get_directory() -> None:
    assert serde.get_directory_request_to_bytes(42) == (
        pb.GetDirectoryRequest(known_serial=42).SerializeToString()
    )
    raw = pb.GetDirectoryResponse(signed_directory=b"{signed}").SerializeToString()
    assert serde.signed_directory_from_bytes(raw) == b"{signed}"


def test_health_check() -> None:
    assert serde.health_check_request_to_bytes() == (
        health_pb2.HealthCheckRequest().SerializeToString()
    )
    for status, serving in [
        (health_pb2.HealthCheckResponse.SERVING, True),
        (health_pb2.HealthCheckResponse.NOT_SERVING, False),
        (health_pb2.HealthCheckResponse.UNKNOWN, False),
    ]:
        raw = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert serde.serving_from_bytes(raw) is serving


def test_checkpoint_and_consistency() -> None:
    assert serde.checkpoint_request_to_bytes() == opb.GetCheckpointRequest().SerializeToString()
    raw = opb.GetCheckpointResponse(note="origin\n3\nroot\n\n— sig\n").SerializeToString()
    assert serde.checkpoint_note_from_bytes(raw) == "origin\n3\nroot\n\n— sig\n"
    assert serde.consistency_proof_request_to_bytes(3, 1 << 40) == (
        opb.GetConsistencyProofRequest(old_size=3, new_size=1 << 40).SerializeToString()
    )
    raw = opb.GetConsistencyProofResponse(hashes=[b"a" * 32, b"b" * 32]).SerializeToString()
    assert serde.consistency_proof_from_bytes(raw) == [b"a" * 32, b"b" * 32]


def test_inclusion_proof_by_index_and_by_id() -> None:
    by_index = opb.GetInclusionProofRequest.FromString(serde.inclusion_proof_request_to_bytes(0, 5))
    # Index 0 is set, not left as the default: the oneof says which was asked.
    assert by_index.WhichOneof("entry") == "index"
    assert (by_index.index, by_index.tree_size) == (0, 5)
    by_id = opb.GetInclusionProofRequest.FromString(
        serde.inclusion_proof_request_to_bytes("entry-9", 12)
    )
    assert by_id.WhichOneof("entry") == "entry_id"
    assert (by_id.entry_id, by_id.tree_size) == ("entry-9", 12)
    raw = opb.GetInclusionProofResponse(
        index=4, tree_size=12, entry=b'{"seq":4}', hashes=[b"h" * 32]
    ).SerializeToString()
    assert serde.proven_entry_from_bytes(raw) == ProvenEntry(4, 12, b'{"seq":4}', (b"h" * 32,))


def test_entries_and_witnessed_checkpoints() -> None:
    assert serde.entries_request_to_bytes(10, 20) == (
        opb.GetEntriesRequest(start=10, end=20).SerializeToString()
    )
    raw = opb.GetEntriesResponse(entries=[b"e10", b"e11"]).SerializeToString()
    assert serde.entries_from_bytes(raw) == [b"e10", b"e11"]
    assert serde.witnessed_checkpoints_request_to_bytes() == (
        opb.GetWitnessedCheckpointsRequest().SerializeToString()
    )
    raw = opb.GetWitnessedCheckpointsResponse(
        checkpoints=[opb.WitnessedCheckpoint(log_node="FR-DGPN", note="n1")]
    ).SerializeToString()
    assert serde.witnessed_checkpoints_from_bytes(raw) == [("FR-DGPN", "n1")]


@pytest.mark.parametrize(
    "parse",
    [
        serde.match_answer_from_bytes,
        serde.signed_directory_from_bytes,
        serde.checkpoint_note_from_bytes,
        serde.proven_entry_from_bytes,
        serde.entries_from_bytes,
    ],
)
def test_a_malformed_answer_raises_decode_error(parse: Callable[[bytes], object]) -> None:
    with pytest.raises(DecodeError):
        parse(b"\xff\xff\xff")
