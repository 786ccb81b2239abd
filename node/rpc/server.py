"""Build a node from its configuration and serve it: gRPC over mutual TLS, health,
reflection, and Prometheus metrics over HTTPS (node/rpc/metrics_http.py).

Everything the node depends on is checked before the port opens: a node that starts is a
node that can answer, and one that cannot says why and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from socketserver import BaseServer

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from federation.checkpoints import Verifier, audit_origin
from federation.identity import country_of
from federation.pki import load_ed25519_private, public_key_from_text
from node.audit.entries import AuditError, entry_timestamp
from node.audit.log import AuditLog, open_audit_log
from node.audit.witness import Witness
from node.audit.witness_schedule import Witnessing
from node.audit.witness_state import WitnessStateError, state_path
from node.config import NodeConfig
from node.database import StoreUnavailable
from node.directory_sources import fetcher_for
from node.directory_state import DirectoryState
from node.directory_state import for_node as directory_for_node
from node.fetching import FetchService
from node.metrics import NodeMetrics
from node.metrics_workers import in_worker, workers_registry
from node.notice_delivery import notice_courier
from node.notice_desk import NoticeDesk
from node.notice_hits import NoticeAlerts
from node.notice_outbox import OutboxStore
from node.notice_service import NoticeService
from node.notices import NoticeStore
from node.policy.cache import CachingEngine
from node.policy.data import load_policy_data
from node.policy.engines import build_engine
from node.policy.reload import ReloadingEngine, reload_counter
from node.received import ReceivedStore
from node.received_purge import ReceivedPurger
from node.references import References
from node.rpc.admin import AdminServer, AdminSocketError
from node.rpc.admission import Admission
from node.rpc.auth import PeerAuthenticator
from node.rpc.call_path import CallPath
from node.rpc.exchange import SERVICE_NAME, ExchangeHandlers
from node.rpc.metrics_http import MetricsAccess, serve_metrics, server_port
from node.rpc.oversight import SERVICE_NAME as OVERSIGHT_SERVICE_NAME
from node.rpc.oversight import OversightHandlers
from node.rpc.tls import CertificateError, RotatingServerCredentials, TlsFiles
from node.schema import SchemaError, check_node
from node.service import MatchService, NodeIdentity
from node.store import RecordStore
from node.ticket_desk import TicketDesk
from node.ticket_watch import TicketWatches
from node.tickets import TicketStore

log = logging.getLogger("liaison.node")


# A WatchTicket stream may stay quiet for days. Peers ping every 30 s
# (federation.client.PEER_CHANNEL_OPTIONS): allowed here, where gRPC's default (one ping
# per 5 minutes without data) would end a quiet watch with GOAWAY "too_many_pings" after
# three of them. And the
# node pings each connection itself, without limit while a call is open, so a peer that
# vanished without closing its connection is found within ~80 s and its watches' slots
# (`[tickets] max_watches_per_peer`) are given back. Peers ping with no call open too, to keep
# idle connections through firewalls: allowed as well.
KEEPALIVE = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
)


class StartupError(RuntimeError):
    """The node cannot start; the message names what is wrong and what to do."""


@dataclass
class Node:
    config: NodeConfig
    server: grpc.aio.Server
    port: int
    store: RecordStore
    # Step 2 (record requests): tickets awaiting an operator, and records received from peers;
    # in the records' database.
    tickets: TicketStore
    received: ReceivedStore
    audit: AuditLog
    metrics: NodeMetrics
    metrics_port: int | None
    policy: ReloadingEngine
    engine: CachingEngine
    directory: DirectoryState
    # Signs the audit tree's head if it grew (blocking; never raises).
    _checkpoint: Callable[[], None]
    _http: BaseServer | None = None
    _watcher: asyncio.Task[None] | None = None
    _checkpointer: asyncio.Task[None] | None = None
    _witnessing: asyncio.Task[None] | None = None
    # Tickets: the operators' admin socket, and the job expiring tickets past deadline.
    _admin: AdminServer | None = None
    _expiry: asyncio.Task[None] | None = None
    # Deletes received records whose retention ended, audited (node/received_purge.py).
    _purging: asyncio.Task[None] | None = None
    # This node as a witness of its peers' logs (None when `[witness] interval_s` is 0).
    witness: Witness | None = None
    # Open WatchTicket streams: ended first at a stop, so none waits out the grace period.
    watches: TicketWatches | None = None
    # Notices: those received (with their hits), this node's own and their outbox, and
    # the courier delivering them.
    notices: NoticeStore | None = None
    outbox: OutboxStore | None = None
    _courier: asyncio.Task[None] | None = None
    _forgetting: asyncio.Task[None] | None = None

    async def stop(self, grace: float = 5.0) -> None:
        if self.watches is not None:
            self.watches.close()
        await self.directory.close()
        for task in (
            self._witnessing,
            self._watcher,
            self._checkpointer,
            self._expiry,
            self._purging,
            self._courier,
            self._forgetting,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.server.stop(grace)
        if self._admin is not None:
            await self._admin.stop()
        # A last checkpoint, so the log a stopped node leaves behind is signed to its end.
        await asyncio.to_thread(self._checkpoint)
        await self.audit.close()
        if self.witness is not None:
            self.witness.close()
        self.engine.close()
        self.received.close()
        for notice_store in (self.notices, self.outbox):
            if notice_store is not None:
                notice_store.close()
        self.tickets.close()
        self.store.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


def _checkpoint_if_grown(audit: AuditLog, key: ed25519.Ed25519PrivateKey, origin: str) -> None:
    """Sign the audit tree's head if it grew since the last checkpoint; never raises (a
    checkpoint that cannot be written is logged, and tried again next time). Blocking:
    the node runs it in a thread."""
    if audit.size == 0 or audit.size == audit.last_checkpoint_size:
        return
    try:
        audit.checkpoint(key, origin)
    except (AuditError, OSError) as exc:
        log.error("could not sign an audit checkpoint: %s", exc)


async def _checkpoint_every(checkpoint: Callable[[], None], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(checkpoint)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StartupError(f"{what} {path} not found (set it in the config file)") from None


def _split(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StartupError(f"{what} {address!r} must be host:port")
    return host.strip("[]"), int(port)


async def start_node(
    config: NodeConfig, registry: CollectorRegistry | None = None, *, primary: bool = True
) -> Node:
    """Build the node from `config` and start serving. If a step fails, whatever the steps
    before it opened (policy engine, record store, audit log, server) is released, in
    reverse order, and that step's own error is raised.

    `primary` False is a worker of `serve --workers N` other than worker 0: it answers
    calls on the shared port, but the admin socket, /metrics, witnessing and the jobs on
    the shared database (checkpoints, expiry, purge, notice courier and forgetting) are
    worker 0's alone (node/cli/serve_workers.py)."""
    async with contextlib.AsyncExitStack() as opened:
        node = await _start(config, registry or CollectorRegistry(), opened, primary)
        opened.pop_all()  # the node owns them now: Node.stop releases them
    return node


async def _start(
    config: NodeConfig,
    registry: CollectorRegistry,
    opened: contextlib.AsyncExitStack,
    primary: bool,
) -> Node:
    node_id = config.node.id
    metrics = NodeMetrics(registry)
    authority = public_key_from_text(
        _read(config.trust.authority_public_key, "authority public key").decode()
    )
    trust = config.trust
    directory_state = directory_for_node(config, authority, metrics)
    directory = await asyncio.to_thread(directory_state.load)
    metrics.know_members(directory)  # and again on each directory installed
    if directory.member(node_id) is None:
        log.warning(
            "%s is not listed in directory serial %d: peers will not find it",
            node_id,
            directory.serial,
        )

    # The certificate files are re-read between handshakes when they change (rotation
    # without a restart); the gauge follows whichever certificate is being served.
    try:
        tls = RotatingServerCredentials(
            TlsFiles(config.tls.certificate, config.tls.key, config.tls.ca),
            federation=config.node.federation,
            node_id=node_id,
            on_change=lambda serving: metrics.certificate_expiry.labels(node_id).set(
                serving.not_after.timestamp()
            ),
        )
    except CertificateError as exc:
        raise StartupError(f"{exc}: check [tls] in the config, or enrol the node again") from None

    policy = config.policy
    # The cache keys on the reloading engine's revision, so a reload can never be answered
    # from a decision made under the policy it replaced.
    reloading = ReloadingEngine(
        lambda: build_engine(policy, load_policy_data(policy.data)),
        policy_dir=policy.policy_dir,
        data_path=policy.data,
        on_reload=reload_counter(registry),
    )
    engine = CachingEngine(reloading)
    metrics.track_policy_cache(lambda: (engine.hits, engine.misses))
    opened.callback(engine.close)  # and the reloading engine under it
    # The tables must be those this code knows (node.schema): never serve on an older or
    # newer schema, and never create one here (`liaison db upgrade` does, after a backup).
    try:
        await asyncio.to_thread(check_node, config)
    except (SchemaError, StoreUnavailable) as exc:
        raise StartupError(str(exc)) from None
    store = RecordStore(config.store.url)
    opened.callback(store.close)
    tickets = TicketStore(config.store.url)
    opened.callback(tickets.close)
    received = ReceivedStore(config.store.url)
    opened.callback(received.close)
    notices, outbox = NoticeStore(config.store.url), OutboxStore(config.store.url)
    opened.callback(notices.close)
    opened.callback(outbox.close)
    skew = config.trust.max_clock_skew_s
    signing_key = load_ed25519_private(config.trust.signing_key)
    audit = open_audit_log(
        config.audit.store,
        config.audit.path,
        config.audit.url,
        replay_window_s=2 * skew,  # as long as the replay cache remembers a nonce
        # An anchor is trusted only with a checkpoint this node's key signed.
        verifier=Verifier.for_log(
            audit_origin(config.node.federation, node_id), signing_key.public_key()
        ),
    )
    opened.push_async_callback(audit.close)
    metrics.track_audit_size(lambda: audit.size, audit.history_damaged)
    metrics.track_tickets(
        lambda: {state.value: n for state, n in tickets.open_by_state().items()},
        lambda: [age.fraction for age in tickets.pending_ages(datetime.now(UTC))],
    )
    metrics.track_notices(notices.hit_counts, outbox.counts_by_state)

    admission = Admission(skew)
    # Nonces seen before a restart (even kill -9) are in the audit log's recent entries.
    seeded = admission.replay.seed(
        (entry["peer"], bytes.fromhex(entry["nonce"]), float(when))
        for entry in audit.recent(time.time() - 2 * skew)
        if entry.get("nonce") and (when := entry_timestamp(entry["time"])) is not None
    )

    identity = NodeIdentity(node_id, country_of(node_id), config.node.profile)
    authenticator = PeerAuthenticator(
        config.node.federation,
        directory_state.require,
        # Each peer's certificate expiry, set when it first presents a certificate the
        # directory lists (label values bounded by the directory).
        on_peer_certificate=lambda peer: metrics.certificate_expiry.labels(peer.node_id).set(
            peer.not_after.timestamp()
        ),
    )
    call_path = CallPath(
        authenticator, audit, metrics, admission=admission, signing_key=signing_key
    )
    # Hit references are sealed under a key derived from the signing key (replicas share it).
    references = References.for_signing_key(
        signing_key, timedelta(days=config.exchange.reference_ttl_days)
    )
    matching = MatchService(
        identity,
        store,
        engine,
        metrics,
        policy_deadline=config.policy.deadline_ms / 1000,
        references=references,
        received=received,
        alerts=NoticeAlerts(notices),
    )
    fetching = FetchService(
        identity, store, tickets, references, matching.decide, received=received
    )
    watches = TicketWatches(
        fetching,
        poll_s=config.tickets.watch_poll_s,
        max_per_peer=config.tickets.max_watches_per_peer,
        on_count=lambda peer, n: metrics.ticket_watches.labels(peer).set(n),
        member=lambda node_id: directory_state.require().member(node_id),
    )
    # The desk wakes the watchers of a ticket it moves (an operator's decision, an expiry).
    desk = TicketDesk(tickets, store, audit, metrics, received=received, on_change=watches.changed)
    handlers = ExchangeHandlers(
        matching,
        directory_state,
        # A newer directory is fetched with our credentials as they are now (they may
        # have rotated) from the peer that advertised it.
        lambda member: fetcher_for(
            config.client_identity, member.node_id, member.endpoint, lambda: directory_state.serial
        ),
        fetching,
        watches,
        NoticeService(identity, notices, matching.decide, metrics),
    )
    courier = notice_courier(config, outbox, directory_state)
    notice_desk = NoticeDesk(
        node_id, outbox, notices, audit, metrics, lambda: directory_state.current, courier
    )

    origin = audit_origin(config.node.federation, node_id)

    def checkpoint() -> None:
        _checkpoint_if_grown(audit, signing_key, origin)

    witness = None
    if config.witness.interval_s > 0 and primary:
        try:
            witness = Witness(
                node_id,
                config.node.federation,
                signing_key,
                lambda: directory_state.current,
                state_path(config.audit.path),
                metrics=metrics,
            )
        except WitnessStateError as exc:
            raise StartupError(str(exc)) from None
        opened.callback(witness.close)

    oversight = OversightHandlers(
        node_id,
        audit,
        revision=lambda: engine.revision,
        sign_checkpoint=checkpoint,
        max_response_bytes=config.server.max_message_bytes,
        witness=witness,
    )

    limit = config.server.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            *KEEPALIVE,
            # The default on Linux, said here: the workers of `serve --workers N` share it.
            ("grpc.so_reuseport", 1),
        ]
    )
    opened.push_async_callback(server.stop, 0)
    server.add_generic_rpc_handlers(
        [call_path.handler(handlers.service()), call_path.handler(oversight.service())]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            SERVICE_NAME,
            OVERSIGHT_SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    credentials = tls.server_credentials()
    host, port = _split(config.server.listen, "[server] listen")
    try:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError:  # grpc's "Failed to bind to address" (it never returns 0 for it)
        raise StartupError(f"cannot listen on {config.server.listen}: address in use?") from None
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(OVERSIGHT_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    admin = None
    if primary:
        admin = AdminServer(desk, config.admin.socket, notice_desk)
        try:
            await admin.start()
        except AdminSocketError as exc:
            raise StartupError(str(exc)) from None
        opened.push_async_callback(admin.stop)

    http, metrics_port = None, None
    if in_worker():  # every worker's counts, from worker 0 (node/metrics_workers.py)
        registry = workers_registry(registry, metrics.computed)
    if config.server.metrics and primary:
        mhost, mport = _split(config.server.metrics, "[server] metrics")
        secure = config.server.metrics_tls
        access = MetricsAccess(
            node_id,
            config.node.federation,
            directory_state.require,
            metrics.metrics_refusals,
            serving=lambda: tls.current.sha256,
        )
        try:
            http = serve_metrics(
                mhost,
                mport,
                registry,
                tls=tls if secure else None,
                access=access if secure else None,
            )
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {config.server.metrics}: {exc}") from None
        metrics_port = server_port(http)
    log.info(
        "%s serving on %s:%d (directory serial %d, policy %s, %d recent nonces), metrics on %s",
        node_id,
        host,
        bound,
        directory.serial,
        engine.revision,
        seeded,
        (
            f"https://{config.server.metrics} (overseers)"
            if config.server.metrics and config.server.metrics_tls
            else config.server.metrics or "off"
        ),
    )
    directory_state.start_refresh(trust.directory_refresh_s)
    watcher = None
    if policy.watch:
        watcher = asyncio.create_task(reloading.watch(policy.watch_interval_ms / 1000))
    node = Node(
        config,
        server,
        bound,
        store,
        tickets,
        received,
        audit,
        metrics,
        metrics_port,
        policy=reloading,
        engine=engine,
        directory=directory_state,
        _checkpoint=checkpoint,
        _http=http,
        _watcher=watcher,
        _admin=admin,
        witness=witness,
        watches=watches,
        notices=notices,
        outbox=outbox,
    )
    if not primary:
        return node
    node._checkpointer = asyncio.create_task(
        _checkpoint_every(checkpoint, config.audit.checkpoint_interval_s)
    )
    if witness is not None:
        node._witnessing = asyncio.create_task(
            Witnessing(
                witness,
                lambda: directory_state.current,
                config.client_identity,
                audit.latest_checkpoint,
                config.witness.interval_s,
                endpoints=config.witness.endpoints,
                metrics=metrics,
            ).run()
        )
    node._expiry = asyncio.create_task(desk.expire_every(config.tickets.expire_interval_s))
    node._purging = asyncio.create_task(
        ReceivedPurger(received, audit, metrics).purge_every(config.received.purge_interval_s)
    )
    node._courier = asyncio.create_task(courier.run())
    # Received notices no longer active lose their identifiers and summary.
    node._forgetting = asyncio.create_task(notices.forget_every(config.notices.forget_interval_s))
    return node


async def serve(
    config: NodeConfig,
    on_ready: Callable[[Node], None] | None = None,
    *,
    primary: bool = True,
) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully (in-flight calls finish)."""
    node = await start_node(config, primary=primary)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    uninstall_sighup = node.policy.install_sighup(loop)  # SIGHUP reloads the policy
    if on_ready:
        on_ready(node)
    await stop.wait()
    log.info("%s stopping", config.node.id)
    uninstall_sighup()
    await node.stop()
