"""`liaison federation init`: create a federation's authority, its CA and its
directory-signing key, which the operator then keeps offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.shared import Subparsers, command, group


def _federation_init(args: argparse.Namespace) -> int:
    from federation.identity import check_federation
    from federation.pki import PkiError, create_authority

    out: Path = args.dir
    if (out / "ca.key").exists():
        raise PkiError(f"{out} already holds a federation authority; refusing to overwrite it")
    create_authority(out, check_federation(args.federation))
    print(
        f"federation {args.federation!r}: authority written to {out}\n"
        f"  ca.crt         give to every node (trust anchor for mTLS)\n"
        f"  authority.pub  give to every node (pins the directory signer)\n"
        f"  ca.key, authority.key  keep offline"
    )
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison federation` and its subcommands."""
    fed = group(sub, "federation", "federation authority tasks")
    p = command(
        fed,
        "init",
        "create the federation authority: its CA and directory-signing key",
        _federation_init,
    )
    p.add_argument("--dir", type=Path, required=True, help="folder to write the authority to")
    p.add_argument("--federation", required=True, help="federation name, e.g. liaison.example")
