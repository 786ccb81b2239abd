"""`liaison serve`: run the node (its wiring: `node.rpc.server`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.shared import Subparsers


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from node.config import load_config
    from node.rpc.server import serve

    config = load_config(args.config)
    asyncio.run(serve(config))
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison serve`."""
    p = sub.add_parser("serve", help="serve the node", description="serve the node over mTLS")
    p.set_defaults(run=_serve)
    p.add_argument("--config", type=Path, required=True, help="the node's node.toml")
