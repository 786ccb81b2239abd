"""The RPC edge: raw request bytes in, raw response bytes out, every outcome audited.

Handlers receive the exact bytes the peer sent (no deserialiser in the method handler), so
the request digest in the audit log is over what was on the wire, and later signatures can
be checked over those same bytes. The order is fixed: identify, parse, decide and look up,
serialise, make the audit entry durable, count, and only then answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.message import DecodeError

from federation.client import MATCH_METHOD
from federation.directory import Member
from federation.model import MatchAnswer, MatchQuery
from federation.serde import WireError, match_answer_to_proto, match_query_from_proto
from federation.signing import SIGNATURE_METADATA, response_message, sign
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb
from node.audit.entries import AuditRecord, new_entry_id
from node.directory_sources import advertised_serial
from node.directory_state import DirectoryState
from node.errors import Refusal, denied, invalid
from node.rpc.admission import REPLAYED, Admission
from node.rpc.auth import PeerAuthenticator
from node.rpc.call_path import (
    UNIDENTIFIED,
    Recorder,
    abort,
    audit_time,
    internal_failure,
    refusal_status,
)
from node.service import MatchService

log = logging.getLogger("liaison.node")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExchangeService"].full_name


class ExchangeHandlers:
    def __init__(
        self,
        auth: PeerAuthenticator,
        service: MatchService,
        recorder: Recorder,
        admission: Admission,
        signing_key: ed25519.Ed25519PrivateKey,
        directory: DirectoryState,
        fetcher: Callable[[Member], Callable[[], Awaitable[bytes]]],
    ) -> None:
        self._auth = auth
        self._service = service
        self._recorder = recorder
        self._admission = admission
        self._key = signing_key
        self._directory = directory
        self._fetcher = fetcher

    def generic_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Match": grpc.unary_unary_rpc_method_handler(self.match),
                "GetDirectory": grpc.unary_unary_rpc_method_handler(self.get_directory),
            },
        )

    async def match(self, raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        started = time.perf_counter()
        peer, query, answer, refusal = UNIDENTIFIED, None, None, None
        entry_id = new_entry_id()
        # Refusals that come before any decision are recorded under the revision in force.
        revision = self._service.policy_revision
        request_signature = b""
        try:
            member = self._auth.identify(context.auth_context())
            peer = member.node_id
            require_node(member)
            metadata = dict(context.invocation_metadata() or ())
            self._learn(member, metadata)
            request_signature = self._admission.check_signature(member, MATCH_METHOD, raw, metadata)
            query = parse_match(raw)
            self._admission.check_fresh(member, query.envelope)
            answer = self._service.match(member, query)
            answer = dataclasses.replace(answer, audit_entry=entry_id)
            revision = answer.policy_revision
            response = match_answer_to_proto(answer).SerializeToString()
        except Refusal as exc:
            refusal = exc
            peer = exc.peer or peer
            revision = exc.policy_revision or revision
            response = refusal_status(exc, entry_id, revision).SerializeToString()
        except Exception:
            refusal = internal_failure("Match", peer)
            response = refusal_status(refusal, entry_id, revision).SerializeToString()
        request_sha256 = hashlib.sha256(raw).digest()
        response_signature = self._sign(request_sha256, response, ok=refusal is None)
        env = query.envelope if query else None
        record = AuditRecord(
            entry_id=entry_id,
            time=audit_time(),
            peer=peer,
            method="Match",
            purpose=env.purpose[:64] if env else "",
            legal_basis=env.legal_basis.value if env else "",
            decision=refusal.decision if refusal else "allow",
            reasons=refusal.reasons if refusal else (),
            policy_revision=revision,
            request_sha256=request_sha256.hex(),
            response_sha256=hashlib.sha256(response).hexdigest(),
            category=query.category[:64] if query else "",
            case_reference=env.case_reference[:128] if env else "",
            nonce=env.nonce.hex()[:128] if env else "",
            request_signature=request_signature.hex(),
            response_signature=response_signature.hex(),
        )
        failed = await self._recorder.make_durable(record, entry_id)
        if failed is not None and failed.reasons == (REPLAYED,):
            # Another replica answered this very request: refuse it as a replay, and
            # audit that refusal instead of the answer that was never written.
            refusal = failed
            response = refusal_status(refusal, entry_id, revision).SerializeToString()
            response_signature = self._sign(request_sha256, response, ok=False)
            record = dataclasses.replace(
                record,
                decision=refusal.decision,
                reasons=refusal.reasons,
                response_sha256=hashlib.sha256(response).hexdigest(),
                response_signature=response_signature.hex(),
            )
            failed = await self._recorder.make_durable(record, entry_id)
        if failed is not None:
            refusal = failed
            response = refusal_status(refusal, entry_id, revision).SerializeToString()
            response_signature = self._sign(request_sha256, response, ok=False)
        self._count(peer, query, answer, refusal, started)
        trailers = ((SIGNATURE_METADATA, response_signature),)
        if refusal is not None:
            await abort(context, refusal, response, trailers)
        context.set_trailing_metadata(trailers)
        return response

    def _learn(self, member: Member, metadata: Mapping[str, str | bytes]) -> None:
        """A caller that holds a newer directory than ours says so on every call: fetch it
        from that caller in the background (verified like any other; never blocks)."""
        if not member.is_node or not member.endpoint:  # nothing to fetch from
            return
        serial = advertised_serial(metadata)
        if serial is not None and serial > self._directory.serial:
            self._directory.learn_from_peer(member.node_id, serial, self._fetcher(member))

    async def get_directory(
        self, raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        """The signed directory we hold, to a member: the authority's signature covers it.

        Audited like every request (who fetched which serial), though it discloses nothing
        but the federation's public membership list.
        """

        async def respond(member: Member) -> bytes:
            self._learn(member, dict(context.invocation_metadata() or ()))
            return self._directory.respond(raw)

        return await self._recorder.serve_call(
            self._auth, "GetDirectory", self._service.policy_revision, raw, context, respond
        )

    def _sign(self, request_sha256: bytes, body: bytes, ok: bool) -> bytes:
        """This node's signature binding its answer (or refusal) to the exact request."""
        return sign(self._key, response_message(MATCH_METHOD, request_sha256, body, ok))

    def _count(
        self,
        peer: str,
        query: MatchQuery | None,
        answer: MatchAnswer | None,
        refusal: Refusal | None,
        started: float,
    ) -> None:
        self._recorder.count(peer, "Match", refusal, started)
        m = self._recorder.metrics
        if query is not None and peer != UNIDENTIFIED:
            m.legal_basis.labels(peer, query.envelope.legal_basis.value).inc()
        if refusal is None and answer is not None and query is not None and answer.hit:
            m.hits.labels(peer, query.category).inc()


def require_node(member: Member) -> None:
    """Refuse a member that is no node (an overseer): the ExchangeService is between nodes."""
    if not member.is_node:
        raise denied(
            ("not_a_node",),
            f"{member.node_id} is listed as {', '.join(member.roles)}, not as a node: the "
            "ExchangeService answers nodes only (overseers use the OversightService)",
        )


def parse_match(raw: bytes) -> MatchQuery:
    try:
        return match_query_from_proto(pb.MatchRequest.FromString(raw))
    except DecodeError:
        raise invalid("malformed_request", "request is not a MatchRequest") from None
    except WireError as exc:
        raise invalid("malformed_request", str(exc)) from None
