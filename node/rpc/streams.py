"""Server-streaming methods, as the one call path (node/rpc/call_path.py) serves them.

A streaming method is a `Method` whose serve step opens the stream (`Updates`) with its
first item ready, so that the call is identified, verified, parsed, served, audited once
and counted exactly as a unary call is before its first message leaves; the path then
sends each later item signed and framed (`CallPath.stream`). Declared here, beside the
path, to keep it one readable module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from federation.model import Envelope
from node.rpc.call_path import Call, Facts, Method

Q = TypeVar("Q")
A = TypeVar("A")
A_co = TypeVar("A_co", covariant=True)


def _no_facts(request: object) -> Facts:
    return Facts()


class Updates(Protocol[A_co]):
    """What a streaming method's serve step opens: its first item, ready before anything
    is audited or sent (so that what can be refused is refused as a unary call would be),
    then the rest as they come. `close` releases what the stream holds; the path calls it
    once the stream ends, however it ends (the client's cancellation included)."""

    @property
    def first(self) -> A_co: ...

    def rest(self) -> AsyncIterator[A_co]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Streaming(Generic[Q, A]):
    """A server-streaming RPC: `method` serves a call up to its `Updates` (its `encode`
    encodes the first item: the audit entry's response), `encode` each later item, and
    `frame` puts an item's bytes and the node's signature over them into one message.
    Build it with `streaming`."""

    method: Method[Q, Updates[A]]
    encode: Callable[[A], bytes]
    frame: Callable[[bytes, bytes], bytes]


def streaming(
    name: str,
    parse: Callable[[bytes], Q],
    serve: Callable[[Call, Q], Awaitable[Updates[A]]],
    encode: Callable[[A], bytes],
    frame: Callable[[bytes, bytes], bytes],
    *,
    envelope: Callable[[Q], Envelope],
    nodes_only: bool = False,
    facts: Callable[[Q], Facts] = _no_facts,
) -> Streaming[Q, A]:
    """A streaming method; signed (every message of it is), so it takes an `envelope`."""

    def first(updates: Updates[A]) -> bytes:
        return encode(updates.first)

    method = Method(name, parse, serve, first, envelope, nodes_only=nodes_only, facts=facts)
    return Streaming(method, encode, frame)
