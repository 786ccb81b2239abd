"""Node identities: `<ISO-3166 alpha-2>-<agency>` carried as a SPIFFE-style URI SAN."""

from __future__ import annotations

import re

NODE_ID_RE = re.compile(r"^[A-Z]{2}-[A-Z0-9]{2,16}$")
FEDERATION_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


class InvalidIdentity(ValueError):
    pass


def _checked(value: str, pattern: re.Pattern[str], what: str, expected: str) -> str:
    """``value`` when ``pattern`` matches all of it, else why not, in the operator's words."""
    if not pattern.fullmatch(value):
        raise InvalidIdentity(f"invalid {what} {value!r}: expected {expected}")
    return value


def check_node_id(node_id: str) -> str:
    return _checked(
        node_id, NODE_ID_RE, "node id", "<ISO-3166 alpha-2>-<agency>, upper case, e.g. DE-BKA"
    )


def check_federation(name: str) -> str:
    return _checked(
        name, FEDERATION_RE, "federation name", "a lower-case DNS-style name, e.g. liaison.example"
    )


def country_of(node_id: str) -> str:
    return check_node_id(node_id)[:2]


def spiffe_uri(federation: str, node_id: str) -> str:
    return f"spiffe://{federation}/node/{node_id}"


def node_from_spiffe(uri: str, federation: str) -> str:
    """The node id in a URI SAN, or InvalidIdentity if it belongs elsewhere."""
    prefix = f"spiffe://{federation}/node/"
    if not uri.startswith(prefix):
        raise InvalidIdentity(f"URI SAN {uri!r} is not a node of federation {federation!r}")
    return check_node_id(uri[len(prefix) :])


def tls_name(federation: str, node_id: str) -> str:
    """DNS SAN that binds a server certificate to its node id.

    Clients verify the server against this name (not the endpoint's host name), so a TLS
    handshake succeeds only with the node the directory says is at that endpoint.
    """
    return f"{node_id.lower()}.node.{federation}"
