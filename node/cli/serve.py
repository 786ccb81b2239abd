"""`liaison serve`: run the node (its wiring: `node.rpc.server`; several worker processes on
one port: `node.cli.serve_workers`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.cli.shared import Subparsers


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from node.cli.serve_workers import WorkersRefused, check_workers, default_workers, supervise
    from node.config import load_config
    from node.rpc.server import serve

    config = load_config(args.config)
    if args.worker_index is not None:  # started by the supervisor below
        asyncio.run(serve(config, primary=args.worker_index == 0))
        return 0
    workers = default_workers(config) if args.workers is None else args.workers
    try:
        check_workers(config, workers, args.config)
    except WorkersRefused as exc:
        print(f"liaison serve: {exc}", file=sys.stderr)
        return 2
    if workers > 1:
        return supervise(args.config, workers)
    asyncio.run(serve(config))
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison serve`."""
    p = sub.add_parser("serve", help="serve the node", description="serve the node over mTLS")
    p.set_defaults(run=_serve)
    p.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help='processes answering on the node\'s port (default: with [audit] store = "database", '
        "one per usable core; with the file store, 1, the most it allows: "
        "docs/operating.md#workers)",
    )
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
