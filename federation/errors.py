"""The one exception tree a client of the federation sees.

    LiaisonError
    ├── PeerRefused       the peer decided no (policy, identity, agreement): has reasons
    ├── InvalidRequest    the peer could not accept the request as sent
    ├── PeerUnavailable   unreachable, past the deadline, or its policy engine down
    └── PeerError         anything else the peer reported

`grpc.RpcError` is translated at the transport edge (`federation.client`) with the peer
attached, so nothing above it needs to know about gRPC.
"""

from __future__ import annotations

ERROR_DOMAIN = "liaison.exchange.v1"


class LiaisonError(Exception):
    def __init__(
        self, peer: str, message: str, reasons: tuple[str, ...] = (), status: str = ""
    ) -> None:
        super().__init__(f"{peer}: {message}" if peer else message)
        self.peer = peer
        self.message = message
        self.reasons = reasons
        self.status = status


class PeerRefused(LiaisonError):
    pass


class InvalidRequest(LiaisonError):
    pass


class PeerUnavailable(LiaisonError):
    pass


class PeerError(LiaisonError):
    pass
