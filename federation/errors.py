"""The one exception tree a client of the federation sees.

    LiaisonError
    ├── CallerError       the caller's own mistake, found before anything is sent: no
    │   │                 peer is to blame and nothing was asked (`.peer` names the peer
    │   │                 the mistake is about, if any)
    │   ├── UnknownPeer   a peer not in the directory, or one that answers no queries
    │   ├── BadQuery      a query, deadline or setting that cannot be sent as given
    │   └── ClientClosed  a call on a client already closed
    ├── PeerRefused       the peer decided no (policy, identity, agreement): has reasons
    ├── InvalidRequest    the peer could not accept the request as sent
    ├── PeerUnavailable   unreachable, past the deadline, or its policy engine down
    └── PeerError         anything else the peer reported
        └── ProofFailed   what the peer sent does not verify: a false checkpoint, proof
                          or entry (evidence to keep, not a transient failure)

`grpc.RpcError` is translated at the transport edge (`federation.client`) with the peer
attached, so nothing above it needs to know about gRPC. The fan-out client
(`federation.fanout_client`) raises only the CallerError branch: what a peer did is in that
peer's result, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping

ERROR_DOMAIN = "liaison.exchange.v1"


class LiaisonError(Exception):
    def __init__(
        self,
        peer: str,
        message: str,
        reasons: tuple[str, ...] = (),
        status: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{peer}: {message}" if peer else message)
        self.peer = peer
        self.message = message
        self.reasons = reasons
        self.status = status
        # What the peer attached: its audit entry id and the policy revision that decided.
        self.metadata: Mapping[str, str] = metadata or {}


class PeerRefused(LiaisonError):
    pass


class InvalidRequest(LiaisonError):
    pass


class PeerUnavailable(LiaisonError):
    pass


class PeerError(LiaisonError):
    pass


class ProofFailed(PeerError):
    pass


class CallerError(LiaisonError):
    pass


class UnknownPeer(CallerError):
    pass


class BadQuery(CallerError):
    pass


class ClientClosed(CallerError):
    pass
