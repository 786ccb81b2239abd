"""`liaison health`: ask a running node's own gRPC health service, over mTLS, whether it serves.

It is what a container's HEALTHCHECK and a Kubernetes probe run. Kubernetes' built-in gRPC
probe speaks plaintext only, and the node serves nothing but mutual TLS (its health service
included, on the same port), so the probe is this command: it presents the node's own
certificate, checks the server's against the federation CA and the node's name, and maps
grpc.health.v1's answer to an exit status a probe understands:

* 0: SERVING;
* 1: the node answered, but not SERVING (NOT_SERVING, UNKNOWN, or a status it does not know);
* 2: no answer (refused, timed out, TLS handshake failed) or a usage error (a bad node.toml,
  unreadable credentials): the probe's caller cannot tell "sick" from "absent" otherwise.

One line on stdout (0, 1) or stderr (2) says which, so `docker inspect` and `kubectl describe
pod` show why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.cli.shared import Subparsers

# Addresses a server binds to mean "every interface"; a client reaches them on loopback.
_ANY_HOST = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}


def local_endpoint(listen: str) -> str:
    """Where a process beside the node reaches `[server] listen`: an any-address bind is
    asked on loopback (IPv4 or IPv6 as the bind was), any other host as it is."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{listen!r} is not host:port")
    return f"{_ANY_HOST.get(host, host)}:{port}"


def _health(args: argparse.Namespace) -> int:
    import grpc

    from federation.client import blocking_is_serving, blocking_secure_channel
    from node.config import ConfigError, load_config

    config = load_config(args.config)
    node_id = config.node.id
    try:
        endpoint = args.endpoint or local_endpoint(config.server.listen)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: [server] listen {exc}") from None
    identity = config.client_identity()
    try:
        with blocking_secure_channel(identity, node_id, endpoint) as channel:
            serving = blocking_is_serving(channel, timeout=args.timeout)
    except grpc.RpcError as exc:
        code = exc.code()
        name = code.name if code is not None else "UNKNOWN"
        details = exc.details() or "no details"
        print(
            f"liaison health: {node_id} at {endpoint} did not answer ({name}: {details}); "
            "is the node running, and is this its node.toml (certificate, CA)?",
            file=sys.stderr,
        )
        return 2
    if serving:
        print(f"{node_id} at {endpoint}: SERVING")
        return 0
    print(f"{node_id} at {endpoint}: NOT_SERVING (it answered, but is not serving)")
    return 1


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def register(sub: Subparsers) -> None:
    """Declare `liaison health`."""
    help_ = (
        "ask a running node's gRPC health service over mTLS: "
        "exit 0 SERVING, 1 not serving, 2 no answer or a usage error"
    )
    p = sub.add_parser("health", help=help_, description=help_)
    p.set_defaults(run=_health)
    p.add_argument(
        "--config",
        type=Path,
        required=True,
        help="the node's node.toml: its certificate, key and CA, and [server] listen",
    )
    p.add_argument(
        "--endpoint",
        metavar="HOST:PORT",
        help="ask the node here instead of at [server] listen (an any-address bind is "
        "asked on loopback)",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        help="seconds to wait for the answer, connection and TLS handshake included (default 5)",
    )
