"""Who is calling: the client certificate's URI SAN, checked against the signed directory.

TLS has already verified the chain to our federation CA (the server requires client
certificates); here the certificate must also be the very one the directory lists for that
node id (fingerprint match), and the member must not be revoked. A suspended member passes
here and is refused by policy, which is where its status is a fact among others.

The certificate's own checks are repeated per call, though BoringSSL already refuses an
expired, not-yet-valid or non-clientAuth certificate at the handshake: a channel is kept
open for days, so a certificate can expire on a live connection that TLS will never look at
again, and BoringSSL lets a certificate with no extendedKeyUsage at all through.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from federation.directory import Directory, Member, MemberStatus
from federation.identity import InvalidIdentity
from federation.pki import PeerCertificate, PkiError, peer_certificate
from node.errors import Kind, Refusal

log = logging.getLogger("liaison.node")


class PeerAuthenticator:
    def __init__(
        self,
        federation: str,
        directory: Callable[[], Directory],
        cache_size: int = 1024,
        *,
        on_peer_certificate: Callable[[PeerCertificate], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._federation = federation
        self._directory = directory
        # Parsing X.509 costs ~100 µs; a connection presents the same PEM on every call.
        self._parsed: OrderedDict[bytes, PeerCertificate] = OrderedDict()
        self._cache_size = cache_size
        # Told once per (peer, certificate) that passed every check: the node sets the
        # peer's certificate-expiry gauge from it. Keyed by node id, so bounded by the
        # directory; a certificate the directory does not list never reaches it.
        self._on_peer_certificate = on_peer_certificate
        self._reported: dict[str, str] = {}
        self._clock = clock

    def _parse(self, pem: bytes) -> PeerCertificate:
        cert = self._parsed.get(pem)
        if cert is not None:
            self._parsed.move_to_end(pem)
            return cert
        try:
            cert = peer_certificate(pem, self._federation)
        except (PkiError, InvalidIdentity) as exc:
            raise Refusal(
                Kind.UNAUTHENTICATED,
                ("certificate_unusable",),
                f"client certificate not usable: {exc}",
            ) from None
        self._parsed[pem] = cert
        if len(self._parsed) > self._cache_size:
            self._parsed.popitem(last=False)
        return cert

    def identify(self, auth_context: Mapping[str, Iterable[bytes]]) -> Member:
        pems = list(auth_context.get("x509_pem_cert", ()))
        if not pems:
            raise Refusal(
                Kind.UNAUTHENTICATED,
                ("no_client_certificate",),
                "no client certificate: connect with your node's mTLS credentials",
            )
        cert = self._parse(pems[0])
        self._check_certificate(cert)
        member = self._directory().member(cert.node_id)
        if member is None:
            raise Refusal(
                Kind.DENIED,
                ("unknown_member",),
                f"{cert.node_id} is not a member of the federation directory",
            )
        refusal = None
        if member.status is MemberStatus.REVOKED:
            refusal = Refusal(
                Kind.DENIED,
                ("member_revoked",),
                f"{cert.node_id} has been revoked from the federation",
            )
        elif member.certificate_sha256 != cert.sha256:
            refusal = Refusal(
                Kind.DENIED,
                ("certificate_not_in_directory",),
                f"the certificate presented is not the one the directory lists for "
                f"{cert.node_id}: enrol it with the federation authority",
            )
        if refusal is not None:
            refusal.peer = member.node_id
            raise refusal
        self._report(cert)
        return member

    def _check_certificate(self, cert: PeerCertificate) -> None:
        """Validity and usage, before the directory: the most specific reason wins."""
        now = self._clock()
        if now >= cert.not_after:
            raise Refusal(
                Kind.UNAUTHENTICATED,
                ("certificate_expired",),
                f"client certificate expired at {cert.not_after:%Y-%m-%d %H:%M}Z: "
                "reconnect with a renewed certificate",
            )
        if now < cert.not_before:
            raise Refusal(
                Kind.UNAUTHENTICATED,
                ("certificate_not_yet_valid",),
                f"client certificate is not valid before {cert.not_before:%Y-%m-%d %H:%M}Z",
            )
        if not (cert.client_auth and cert.digital_signature):
            raise Refusal(
                Kind.UNAUTHENTICATED,
                ("certificate_wrong_usage",),
                "client certificate is not for TLS client authentication: a node "
                "certificate needs extendedKeyUsage clientAuth (and, with keyUsage, "
                "digitalSignature)",
            )

    def _report(self, cert: PeerCertificate) -> None:
        if self._on_peer_certificate is None or self._reported.get(cert.node_id) == cert.sha256:
            return
        self._reported[cert.node_id] = cert.sha256
        try:
            self._on_peer_certificate(cert)
        except Exception:  # a metrics hook must never refuse a caller
            log.exception("peer certificate hook failed for %s", cert.node_id)
