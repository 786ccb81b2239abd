"""Who is calling: the client certificate's URI SAN, checked against the signed directory.

TLS has already verified the chain to our federation CA (the server requires client
certificates); here the certificate must also be the very one the directory lists for that
node id (fingerprint match), and the member must not be revoked. A suspended member passes
here and is refused by policy, which is where its status is a fact among others.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from federation.directory import Directory, Member, MemberStatus
from federation.identity import InvalidIdentity
from federation.pki import PeerCertificate, PkiError, peer_certificate
from node.errors import Kind, Refusal


class PeerAuthenticator:
    def __init__(
        self, federation: str, directory: Callable[[], Directory], cache_size: int = 1024
    ) -> None:
        self._federation = federation
        self._directory = directory
        # Parsing X.509 costs ~100 µs; a connection presents the same PEM on every call.
        self._parsed: OrderedDict[bytes, PeerCertificate] = OrderedDict()
        self._cache_size = cache_size

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
        member = self._directory().member(cert.node_id)
        if member is None:
            raise Refusal(
                Kind.DENIED,
                ("unknown_member",),
                f"{cert.node_id} is not a member of the federation directory",
            )
        if member.status is MemberStatus.REVOKED:
            raise Refusal(
                Kind.DENIED,
                ("member_revoked",),
                f"{cert.node_id} has been revoked from the federation",
            )
        if member.certificate_sha256 != cert.sha256:
            raise Refusal(
                Kind.DENIED,
                ("certificate_not_in_directory",),
                f"the certificate presented is not the one the directory lists for "
                f"{cert.node_id}: enrol it with the federation authority",
            )
        return member
