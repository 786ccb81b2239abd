"""`liaison demo`: the command; the scenario it runs is `node.local.demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.shared import Subparsers


def _demo(args: argparse.Namespace) -> int:
    from node.local.demo import run_demo

    return run_demo(args.dir, keep=args.keep, records=args.records)


def register(sub: Subparsers) -> None:
    """Declare `liaison demo`."""
    p = sub.add_parser(
        "demo",
        help="build and run a three-country federation on loopback",
        description="build and run a three-country federation on loopback",
    )
    p.set_defaults(run=_demo)
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("demo-federation"),
        help="folder to build it in (default ./demo-federation)",
    )
    p.add_argument("--records", type=int, default=3000, help="synthetic records per node")
    p.add_argument("--keep", action="store_true", help="keep the nodes up until Ctrl-C")
