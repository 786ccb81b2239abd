"""The full gRPC names of the methods whose requests or responses are signed.

A signature covers the method's full name (`federation.signing`), so the node that checks a
request and the client that signs it must spell it the same way: both import it from here,
a module with no generated code in it, so the node's server edge needs no client module to
name what it verifies.
"""

from __future__ import annotations

EXCHANGE_SERVICE = "liaison.exchange.v1.ExchangeService"
OVERSIGHT_SERVICE = "liaison.exchange.v1.OversightService"


def full_method(service: str, method: str) -> str:
    """`/package.Service/Method`, as gRPC names a method on the wire."""
    return f"/{service}/{method}"


MATCH_METHOD = full_method(EXCHANGE_SERVICE, "Match")
FETCH_METHOD = full_method(EXCHANGE_SERVICE, "Fetch")
PUBLISH_NOTICE_METHOD = full_method(EXCHANGE_SERVICE, "PublishNotice")
WITHDRAW_NOTICE_METHOD = full_method(EXCHANGE_SERVICE, "WithdrawNotice")
