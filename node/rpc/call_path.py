"""The one path every RPC the node serves takes, once, whatever its service.

    1 identify   node/rpc/auth.py: the client certificate -> a directory member; then the
                 method's guards (`nodes_only`: `not_a_node`; `active_only`:
                 `member_suspended`) and the service's `on_identified` hook
    2 verify     node/rpc/admission.py, signed methods only: the requester's Ed25519
                 signature over the exact bytes received
    3 parse      federation/serde.py: bytes -> a plain typed object; signed methods then
                 check the freshness and nonce of its envelope (admission.py)
    4 serve      a service method, on plain objects
    5 record     the call's one audit record (who, what, the outcome, digests, signatures)
    6 durable    node/audit/log.py: the entry is durable before anything leaves
    7 count      node/metrics.py
    8 answer     the encoded answer (signed where the method signs), or the refusal as a
                 rich status: a Refusal raised at any step jumps to 5 with it

A method is declared once (`Method`) and registered in its service's list; the path is the
same for all of them, so every call is audited, counted and refused the same way.

A server-streaming method (`Streaming`, node/rpc/streams.py) takes the same path up to its
first message: its serve step opens the stream and has its first item ready (or refuses),
and that call is audited once, durably, before the first message leaves. Each later item is
then signed, bound to the request like an answer, and sent with its signature in the
message (a stream has one trailer for all of them); a Refusal the stream raises later ends
it, signed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation.directory import Member, MemberStatus
from federation.methods import full_method
from federation.model import Envelope
from federation.serde import STATUS_TRAILER, WireError, rich_status
from federation.signing import SIGNATURE_METADATA, response_message, sign
from node.audit.entries import AuditError, AuditRecord, new_entry_id
from node.audit.log import AuditLog
from node.errors import Kind, Refusal, denied, invalid
from node.metrics import UNIDENTIFIED, NodeMetrics
from node.rpc.admission import Admission, replayed
from node.rpc.auth import PeerAuthenticator

if TYPE_CHECKING:  # declared beside it, on top of this module's Method
    from node.rpc.streams import Streaming, Updates

log = logging.getLogger("liaison.node")

Q = TypeVar("Q")
A = TypeVar("A")
Context: TypeAlias = "grpc.aio.ServicerContext[bytes, bytes]"


@dataclass(frozen=True)
class Facts:
    """What an audit entry records of a request beyond its envelope (method-specific):
    the category, and for step 2 the ticket and the names (never values) of the fields
    withheld from a disclosed record; for a notice, its id and version and the number of
    its identifiers (never their values)."""

    category: str = ""
    ticket: str = ""
    withheld: tuple[str, ...] = ()
    # A notice call's notice (`<id>@<version>`) and how many identifiers it carried.
    notice: str = ""
    identifiers: int = 0
    # What the exchange achieved, when it was allowed: `hit`, `delivered`, `ticket_opened`.
    outcome: str = ""


@dataclass
class Call:
    """One call, as a service method sees it. `revision` is the policy revision in force
    when the call arrived; a method whose answer a policy decided sets it to that one.
    `facts`, set by a method that learns them only while serving (a Fetch learns the
    record's category from the record), replace the request's for the audit entry, for
    its answer and its refusal alike. `if_unsent`, set by a method that changed state for
    its answer (a Fetch that marks a ticket delivered), puts that change back when the
    answer is not sent after all: its audit entry could not be written, or another replica
    had answered the same request."""

    member: Member
    entry_id: str
    metadata: Mapping[str, str | bytes]
    revision: str
    facts: Facts | None = None
    if_unsent: Callable[[], Awaitable[None]] | None = None


def _no_facts(request: object) -> Facts:
    return Facts()


@dataclass(frozen=True)
class Method(Generic[Q, A]):
    """One RPC, declared: how its request is parsed, served and its answer encoded.

    `envelope` is given for a method whose requests carry an Envelope: its requests must be
    signed (and fresh, with a new nonce), its answers and refusals are signed, and its
    envelope's facts are audited and counted (`liaison_legal_basis_use`). `counted` adds
    the method's own metrics for an answer (not a refusal)."""

    name: str
    parse: Callable[[bytes], Q]
    serve: Callable[[Call, Q], Awaitable[A]]
    encode: Callable[[A], bytes]
    envelope: Callable[[Q], Envelope] | None = None
    nodes_only: bool = False
    active_only: bool = False
    facts: Callable[[Q], Facts] = _no_facts
    counted: Callable[[NodeMetrics, str, Q, A], None] | None = None

    @property
    def signed(self) -> bool:
        return self.envelope is not None


@dataclass(frozen=True)
class Service:
    """A gRPC service as the path serves it. `revision` names the policy revision audited
    with a call no policy decided; `on_identified` runs once the caller is identified and
    admitted by the method's guards (the ExchangeService learns newer directories there)."""

    name: str
    methods: Sequence[Method[Any, Any]]
    revision: Callable[[], str] = lambda: ""
    on_identified: Callable[[Call], None] | None = None
    streams: Sequence[Streaming[Any, Any]] = ()


def audit_time() -> str:
    """Now, as audit entries write it (UTC, microseconds, `Z`): what
    `datetime.now(UTC).isoformat(timespec="microseconds")` writes, with the date and time
    to the second written once a second rather than once a call."""
    global _second
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    second = _second
    if second[0] != seconds:
        second = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)))
    return f"{second[1]}{nanoseconds // 1000:06d}Z"


# The second `audit_time` last wrote, and its text (replaced whole: a reader in another
# thread sees the old pair or the new one).
_second: tuple[int, str] = (-1, "")


def internal_failure(method: str, peer: str) -> Refusal:
    """The refusal for an error no method expected (a bug), called where it is caught: the
    traceback goes to the operator's log, and the peer gets a refusal, audited and counted,
    never grpc's bare UNKNOWN with the exception's text."""
    log.exception("internal error answering a %s from %s; refused", method, peer)
    return Refusal(
        Kind.INTERNAL,
        ("internal_error",),
        "the node failed to answer this request; its operator has been told (in its log)",
    )


def audit_unavailable() -> Refusal:
    return Refusal(
        Kind.UNAVAILABLE,
        ("audit_unavailable",),
        "the node could not audit this request, so it refuses to answer; retry later",
    )


def refusal_status(refusal: Refusal, entry_id: str, revision: str) -> bytes:
    """The one translator from a Refusal to what the peer receives: a google.rpc.Status
    with one ErrorInfo per reason, naming its audit entry and the policy revision.

    Built by `federation.serde.rich_status`, not grpc_status.rpc_status.to_status (so
    grpcio-status is not a dependency): to_status serialises the Status itself, and the
    node must send the very bytes it hashed into the audit entry and signed (protobuf
    serialisation is not canonical, and ErrorInfo.metadata is a map); grpc.aio's context
    has no abort_with_status to take its result either."""
    status = rich_status(
        refusal.kind.value,
        refusal.message,
        refusal.reasons,
        {"audit_entry": entry_id, "policy_revision": revision},
    )
    encoded: bytes = status.SerializeToString()
    return encoded


@dataclass
class _Exchange:
    """One call as the path carries it from step to step: what is known of the request,
    and what will be sent (the answer's or the refusal's bytes, and their signature)."""

    method: Method[Any, Any]
    wire_name: str
    request_sha256: bytes
    entry_id: str
    revision: str
    peer: str = UNIDENTIFIED
    envelope: Envelope | None = None
    facts: Facts = Facts()
    request_signature: bytes = b""
    response: bytes = b""
    refusal: Refusal | None = None
    signature: bytes = b""
    if_unsent: Callable[[], Awaitable[None]] | None = None
    answer: Any = None  # what the serve step returned (a stream's Updates)
    # The caller's certificate is the one the directory lists for a member not revoked.
    identified: bool = False

    @property
    def channel(self) -> str:
        """`secure` when the caller was identified by its listed certificate and the call
        was not refused as unauthenticated (a signed method's signature, freshness or
        nonce); `insecure` otherwise (`liaison_calls_total{channel}`)."""
        refused_auth = self.refusal is not None and self.refusal.decision == "unauthenticated"
        return "secure" if self.identified and not refused_auth else "insecure"

    def refuse(self, refusal: Refusal) -> None:
        self.refusal = refusal
        self.response = refusal_status(refusal, self.entry_id, self.revision)

    def seal(self, key: ed25519.Ed25519PrivateKey | None) -> None:
        """Sign what will be sent, bound to the request, if the method signs."""
        if not self.method.signed:
            return
        if key is None:
            raise RuntimeError("a signed method is served by a call path without a key")
        self.signature = self.sign(key, self.response, self.refusal is None)

    def sign(self, key: ed25519.Ed25519PrivateKey, body: bytes, ok: bool) -> bytes:
        """The node's signature over `body`, bound to this call's request."""
        return sign(key, response_message(self.wire_name, self.request_sha256, body, ok))

    def record(self, time: str) -> AuditRecord:
        """The call's one audit record."""
        refusal, envelope = self.refusal, self.envelope
        return AuditRecord(
            entry_id=self.entry_id,
            time=time,
            peer=self.peer,
            method=self.method.name,
            purpose=envelope.purpose[:64] if envelope else "",
            legal_basis=envelope.legal_basis.value if envelope else "",
            decision=refusal.decision if refusal else "allow",
            reasons=refusal.reasons if refusal else (),
            policy_revision=self.revision,
            request_sha256=self.request_sha256.hex(),
            response_sha256=hashlib.sha256(self.response).hexdigest(),
            category=self.facts.category[:64],
            ticket=self.facts.ticket[:64],
            withheld=self.facts.withheld,
            notice=self.facts.notice[:96],
            identifiers=self.facts.identifiers,
            outcome=self.facts.outcome,
            case_reference=envelope.case_reference[:128] if envelope else "",
            nonce=envelope.nonce.hex()[:128] if envelope else "",
            request_signature=self.request_signature.hex(),
            response_signature=self.signature.hex(),
        )


class CallPath:
    """The node's audit log, metrics, request admission and signing key, as every call
    uses them. `admission` and `signing_key` are needed only by signed methods."""

    def __init__(
        self,
        auth: PeerAuthenticator,
        audit: AuditLog,
        metrics: NodeMetrics,
        *,
        admission: Admission | None = None,
        signing_key: ed25519.Ed25519PrivateKey | None = None,
    ) -> None:
        self._auth = auth
        self._audit = audit
        self.metrics = metrics
        self._admission = admission
        self._key = signing_key

    def handler(self, service: Service) -> grpc.GenericRpcHandler:
        def bound(method: Method[Any, Any]) -> Callable[[bytes, Context], Awaitable[bytes]]:
            async def handle(raw: bytes, context: Context) -> bytes:
                return await self.run(service, method, raw, context)

            return handle

        def bound_stream(
            method: Streaming[Any, Any],
        ) -> Callable[[bytes, Context], AsyncIterator[bytes]]:
            # An async generator function itself: grpc.aio tells how to drive a handler by
            # what kind of function it is.
            async def handle(raw: bytes, context: Context) -> AsyncIterator[bytes]:
                async with contextlib.aclosing(self.stream(service, method, raw, context)) as s:
                    async for message in s:
                        yield message

            return handle

        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            m.name: grpc.unary_unary_rpc_method_handler(bound(m)) for m in service.methods
        }
        for s in service.streams:
            handlers[s.method.name] = grpc.unary_stream_rpc_method_handler(bound_stream(s))
        return grpc.method_handlers_generic_handler(service.name, handlers)

    async def run(
        self, service: Service, method: Method[Q, A], raw: bytes, context: Context
    ) -> bytes:
        """Steps 1 to 8 for one call: the answer's bytes, or the call aborted with its
        refusal (grpc.aio's abort raises)."""
        started = time.perf_counter()
        x = _exchange(service, method, raw)
        tally = await self._serve(service, method, x, raw, context)  # steps 1-4
        trailers = await self._conclude(method, x, tally, started, context)  # steps 5-8
        if trailers:
            context.set_trailing_metadata(trailers)
        return x.response  # 8 answer

    async def stream(
        self, service: Service, streaming: Streaming[Q, A], raw: bytes, context: Context
    ) -> AsyncGenerator[bytes, None]:
        """Steps 1 to 8 for a streaming call, up to its first message; then each later
        item, signed and framed. The stream's `Updates` are closed however it ends."""
        started = time.perf_counter()
        method = streaming.method
        x = _exchange(service, method, raw)
        tally = await self._serve(service, method, x, raw, context)  # steps 1-4
        updates: Updates[A] | None = x.answer  # set once serve returned, refused or not
        try:
            await self._conclude(method, x, tally, started, context)  # 5-8, or aborted
            assert updates is not None  # a refusal has aborted by now
            yield streaming.frame(x.response, x.signature)
            rest, refusal = updates.rest(), None
            while refusal is None:
                try:
                    item = await anext(rest)
                except StopAsyncIteration:
                    return
                except Refusal as exc:
                    refusal = exc
                except Exception:
                    refusal = internal_failure(method.name, x.peer)
                else:
                    body = streaming.encode(item)
                    yield streaming.frame(body, x.sign(self._signer(), body, True))
            # Ended by a refusal after the call was audited: sent signed, not audited again
            # (the call's one entry records the subscription and its first item).
            log.info("ending a %s stream of %s: %s", method.name, x.peer, refusal.message)
            x.refuse(refusal)
            x.seal(self._key)
            await context.abort(
                refusal.kind.value,
                refusal.message,
                ((STATUS_TRAILER, x.response), (SIGNATURE_METADATA, x.signature)),
            )
        finally:
            if updates is not None:
                updates.close()

    async def _conclude(
        self,
        method: Method[Q, A],
        x: _Exchange,
        tally: Callable[[NodeMetrics], None] | None,
        started: float,
        context: Context,
    ) -> tuple[tuple[str, bytes], ...]:
        """Steps 5 to 8 once the call is served: sealed, recorded, durable and counted; the
        call aborted with its refusal (grpc.aio's abort raises), or the trailers that go
        with its answer."""
        x.seal(self._key)
        when = audit_time()

        def instead_of_replay() -> AuditRecord:
            """Another replica answered this very request: the log writes its refusal as a
            replay in the answer's place (in its writer thread, under its lock)."""
            log.warning(
                "refusing a %s from %s: a replay of a request another replica answered",
                method.name,
                x.peer,
            )
            x.refuse(replayed())
            x.seal(self._key)
            return x.record(when)

        failed = await self._make_durable(x.record(when), x.entry_id, instead_of_replay)
        if failed is not None:
            x.refuse(failed)
            x.seal(self._key)
        if x.refusal is not None and x.if_unsent is not None:
            await self._put_back(x)
        self._count(method.name, x.peer, x.refusal, x.envelope)  # 7 count
        self.metrics.calls.labels(x.peer, x.channel).inc()
        if x.refusal is None and tally is not None:
            tally(self.metrics)
        self.metrics.request_duration.labels(method.name).observe(time.perf_counter() - started)
        trailers = ((SIGNATURE_METADATA, x.signature),) if method.signed else ()
        if x.refusal is not None:  # 8 refuse
            await context.abort(
                x.refusal.kind.value,
                x.refusal.message,
                ((STATUS_TRAILER, x.response), *trailers),
            )
        return trailers

    async def _serve(
        self,
        service: Service,
        method: Method[Q, A],
        x: _Exchange,
        raw: bytes,
        context: Context,
    ) -> Callable[[NodeMetrics], None] | None:
        """Steps 1 to 4, up to the encoded answer in `x`, or its refusal. Returns what
        counts the method's own figures for the answer (`Method.counted`), if any."""
        call: Call | None = None
        try:
            member = self._auth.identify(context.auth_context())  # 1 identify
            x.peer, x.identified = member.node_id, True
            call = Call(member, x.entry_id, dict(context.invocation_metadata() or ()), x.revision)
            _guard(method, member)
            if service.on_identified is not None:
                service.on_identified(call)
            if method.envelope is not None:  # 2 verify
                x.request_signature = self._admitted().check_signature(
                    member, x.wire_name, raw, call.metadata
                )
            request = _parse(method, raw)  # 3 parse
            x.facts = method.facts(request)
            if method.envelope is not None:
                x.envelope = method.envelope(request)
                self._admitted().check_fresh(member, x.envelope)
            answer = x.answer = await method.serve(call, request)  # 4 serve
            x.revision = call.revision
            x.facts = call.facts or x.facts
            x.if_unsent = call.if_unsent
            x.response = method.encode(answer)
        except Refusal as exc:
            x.peer = exc.peer or x.peer
            x.revision = exc.policy_revision or x.revision
            x.facts = (call.facts if call else None) or x.facts
            x.if_unsent = call.if_unsent if call else None
            x.refuse(exc)
            return None
        except Exception:
            x.facts = (call.facts if call else None) or x.facts
            x.if_unsent = call.if_unsent if call else None
            x.refuse(internal_failure(method.name, x.peer))
            return None
        counted, peer = method.counted, x.peer
        if counted is None:
            return None
        return lambda metrics: counted(metrics, peer, request, answer)

    async def _put_back(self, x: _Exchange) -> None:
        """The method's state change for an answer that is not sent: put back, so that (say)
        a ticket whose record never left can still be collected. A failure to put it back
        is the operator's to see; the refusal is sent either way."""
        assert x.if_unsent is not None
        try:
            await x.if_unsent()
        except Exception:
            log.exception(
                "could not put back what a %s from %s changed for an answer it was not sent",
                x.method.name,
                x.peer,
            )

    async def _make_durable(
        self, record: AuditRecord, entry_id: str, if_replayed: Callable[[], AuditRecord]
    ) -> Refusal | None:
        """Append the entry and wait until it is durable; the refusal to send instead of the
        answer if it could not be (nothing is disclosed unaudited)."""
        try:
            written = await self._audit.append(record, if_replayed=if_replayed)
            if written != entry_id:
                raise AuditError(f"audit entry {written} was written where {entry_id} was due")
        except AuditError as exc:
            log.error("refusing a %s from %s: %s", record.method, record.peer, exc)
            self.metrics.audit_failures.inc()
            return audit_unavailable()
        self.metrics.audit_entries.inc()
        return None

    def _count(
        self, method: str, peer: str, refusal: Refusal | None, envelope: Envelope | None
    ) -> None:
        """`liaison_requests_total{peer,method,decision}`, each reason of a refusal in
        `liaison_denials_total{peer,reason}`, and the envelope's legal basis."""
        m = self.metrics
        m.requests.labels(peer, method, refusal.decision if refusal else "allow").inc()
        if refusal is not None:
            for reason in refusal.reasons:
                m.denials.labels(peer, reason).inc()
        if envelope is not None and peer != UNIDENTIFIED:
            m.legal_basis.labels(peer, envelope.legal_basis.value).inc()

    def _signer(self) -> ed25519.Ed25519PrivateKey:
        if self._key is None:
            raise RuntimeError("a signed method is served by a call path without a key")
        return self._key

    def _admitted(self) -> Admission:
        if self._admission is None:
            raise RuntimeError("a signed method is served by a call path without admission")
        return self._admission


def _exchange(service: Service, method: Method[Any, Any], raw: bytes) -> _Exchange:
    return _Exchange(
        method,
        full_method(service.name, method.name),
        hashlib.sha256(raw).digest(),
        new_entry_id(),
        service.revision(),
    )


def _guard(method: Method[Any, Any], member: Member) -> None:
    """The method's own conditions on who may call it, before anything is read."""
    if method.nodes_only and not member.is_node:
        raise denied(
            ("not_a_node",),
            f"{member.node_id} is listed as {', '.join(member.roles)}, not as a node: the "
            "ExchangeService answers nodes only (overseers use the OversightService)",
        )
    if method.active_only and member.status is not MemberStatus.ACTIVE:
        raise denied(
            ("member_suspended",),
            f"{member.node_id} is {member.status.value} in the federation directory",
        )


def _parse(method: Method[Q, A], raw: bytes) -> Q:
    try:
        return method.parse(raw)
    except WireError as exc:
        raise invalid("malformed_request", str(exc)) from None
