"""`liaison node enroll`: issue a node its TLS certificate and signing key, with its member
entry for the directory and a starter node.toml."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.shared import Subparsers, command, group


def _node_enroll(args: argparse.Namespace) -> int:
    from node.enrol import enrol_node

    member = enrol_node(
        args.authority,
        args.node_id,
        args.out,
        endpoint=args.endpoint,
        hosts=tuple(args.host or ("localhost", "127.0.0.1")),
        metrics=args.metrics,
        policy_dir=args.policy_dir,
    )
    print(
        f"{args.node_id}: keys, certificate and node.toml written to {args.out}\n"
        f"  member entry for the directory: {args.out / 'member.json'}\n"
        f"  certificate sha256: {member.certificate_sha256}"
    )
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison node` and its subcommands."""
    nodes = group(sub, "node", "node tasks")
    p = command(
        nodes,
        "enroll",
        "issue a node's TLS certificate and signing key, "
        "write its member entry and a starter node.toml",
        _node_enroll,
    )
    p.add_argument("node_id", help="<ISO-3166 alpha-2>-<agency>, e.g. DE-BKA")
    p.add_argument("--authority", type=Path, required=True, help="the authority folder")
    p.add_argument("--out", type=Path, required=True, help="the node's folder")
    p.add_argument("--endpoint", required=True, help="host:port peers will reach it at")
    p.add_argument(
        "--host",
        action="append",
        help="extra DNS name or IP for the TLS "
        "certificate (repeatable; default localhost and 127.0.0.1)",
    )
    p.add_argument("--metrics", default="127.0.0.1:9464", help="host:port for /metrics")
    p.add_argument(
        "--policy-dir",
        type=Path,
        default=None,
        help="Rego policy folder (default: the policies/ shipped with Liaison)",
    )
