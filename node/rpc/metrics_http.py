"""`/metrics` over HTTPS, for the federation's overseers and the node's own monitoring.

The figures are not personal data, but they are a node's relations with its peers (who
asked it what, how often, what it refused), so they are served like the node's other
answers: over TLS with the node's own server certificate (the one gRPC serves, rotated
with it), to a client certificate chained to the federation CA whose fingerprint is the
one the signed directory lists (node/rpc/auth.py, the same checks as for a call), of a
member who is an active **overseer**, or this very node (its operators' Prometheus,
presenting the node's own certificate: the one the directory lists, or the one it serves
now, which after a rotation the directory may not list yet). Peer nodes are refused: a
peer has no business reading which other countries this node exchanges with.

Anything else is answered `403` with a one-line reason (`no client certificate`, `XX-Y is
listed as node, not overseer`, ...) and counted in `liaison_metrics_refusals_total{reason}`;
a certificate from another CA fails the TLS handshake itself. Plain HTTP is served only
when `[server] metrics_tls = false` and the address is loopback (config.py refuses the
rest): for development on one machine.

Python's http.server and ssl, one thread per scrape: a scrape every few seconds needs no
more, and no dependency is added.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.exposition import MetricsHandler

from federation.directory import Directory, MemberStatus
from node.errors import Refusal
from node.rpc.auth import PeerAuthenticator
from node.rpc.tls import RotatingServerCredentials, ServingCertificate

log = logging.getLogger("liaison.node")

# A client that opens a connection and says nothing must not hold a thread for long.
_CLIENT_TIMEOUT_S = 10.0


class MetricsAccess:
    """Who may read this node's `/metrics`: the checks of node/rpc/auth.py, then the role."""

    def __init__(
        self,
        node_id: str,
        federation: str,
        directory: Callable[[], Directory],
        refusals: Counter,
        serving: Callable[[], str] = lambda: "",
    ) -> None:
        self._node_id = node_id
        # The fingerprint of the certificate the node serves now: its own monitoring may
        # present it before a directory lists it (a rotation not yet published).
        self._serving = serving
        self._auth = PeerAuthenticator(federation, directory)
        self._refusals = refusals

    def refusal(self, certificate_der: bytes | None) -> str | None:
        """None if the certificate's holder may read the metrics, else why not (one line)."""
        if not certificate_der:
            return self._refuse(
                "no_client_certificate",
                "no client certificate: present an overseer's certificate from the "
                "federation authority",
            )
        if hashlib.sha256(certificate_der).hexdigest() == self._serving():
            return None  # chained to the federation CA by the handshake: this node itself
        pem = ssl.DER_cert_to_PEM_cert(certificate_der).encode()
        try:
            member = self._auth.identify({"x509_pem_cert": [pem]})
        except Refusal as exc:
            return self._refuse(exc.reasons[0] if exc.reasons else "refused", exc.message)
        if member.node_id == self._node_id:
            return None
        if not member.is_overseer:
            return self._refuse(
                "not_an_overseer",
                f"{member.node_id} is listed as {', '.join(member.roles)}, not as an overseer: "
                "/metrics is for the federation's overseers and this node's own operators",
            )
        if member.status is not MemberStatus.ACTIVE:
            return self._refuse(
                "member_suspended", f"{member.node_id} is {member.status.value} in the directory"
            )
        return None

    def _refuse(self, reason: str, message: str) -> str:
        self._refusals.labels(reason).inc()
        return message


class _TlsContexts:
    """The SSL context of the certificate the node serves now: rebuilt after a rotation
    (RotatingServerCredentials validated the new set before it became current)."""

    def __init__(self, tls: RotatingServerCredentials) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._serving: ServingCertificate | None = None
        self._context: ssl.SSLContext | None = None

    def current(self) -> ssl.SSLContext:
        self._tls.refresh()  # three stat calls; gRPC's handshakes do the same
        serving = self._tls.current
        with self._lock:
            if self._context is None or serving is not self._serving:
                self._context, self._serving = _context(serving), serving
            return self._context


def _context(serving: ServingCertificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Optional at the handshake so that a client without one gets a 403 saying so; one
    # that is presented must chain to the federation CA, or the handshake fails.
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=serving.ca_pem.decode())
    # ssl loads a key only from a file: a private folder, removed at once.
    with tempfile.TemporaryDirectory(prefix="liaison-metrics-") as folder:
        path = Path(folder) / "pair.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(serving.key_pem + b"\n" + serving.certificate_pem)
        context.load_cert_chain(path)
    return context


class _HttpsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[MetricsHandler], contexts: _TlsContexts
    ) -> None:
        self._contexts = contexts
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        raw, client = self.socket.accept()
        raw.settimeout(_CLIENT_TIMEOUT_S)
        # The handshake runs in the request's own thread (`_Handler.setup`), never here.
        wrapped = self._contexts.current().wrap_socket(
            raw, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, client

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics connection from %s failed", client_address, exc_info=True)


def _handler(registry: CollectorRegistry, access: MetricsAccess | None) -> type[MetricsHandler]:
    base = MetricsHandler.factory(registry)

    class _Handler(base):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            if access is not None:
                self.request.do_handshake()
            super().setup()

        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self._answer(404, "not found: the metrics are at /metrics")
                return
            if access is not None:
                why = access.refusal(self.request.getpeercert(binary_form=True))
                if why is not None:
                    self._answer(403, why)
                    return
            super().do_GET()

        def _answer(self, status: int, message: str) -> None:
            body = (message + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every few seconds would drown the node's log."""

    return _Handler


def serve_metrics(
    host: str,
    port: int,
    registry: CollectorRegistry,
    *,
    tls: RotatingServerCredentials | None,
    access: MetricsAccess | None,
) -> BaseServer:
    """Serve `/metrics` in a background thread: over TLS to those `access` admits, or
    (both None) plain HTTP. Raises OSError if the address cannot be bound."""
    if tls is None or access is None:
        server, _ = start_http_server(port, host, registry=registry)
        return server
    https = _HttpsServer((host, port), _handler(registry, access), _TlsContexts(tls))
    threading.Thread(target=https.serve_forever, name="liaison-metrics", daemon=True).start()
    return https


def server_port(server: BaseServer) -> int:
    address: tuple[str, int] = server.server_address  # type: ignore[assignment]
    return int(address[1])
