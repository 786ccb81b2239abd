"""`liaison directory sign|add|suspend|reinstate|revoke|show`: the authority's members file
and the signed directory made from it, which every node verifies with the pinned key."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from node.cli.shared import Subparsers, command, format_table, group


def _directory_sign(args: argparse.Namespace) -> int:
    from node.enrol import sign_members

    directory = sign_members(
        args.authority, args.members, args.out, serial=args.serial, valid_days=args.valid_days
    )
    print(
        f"directory serial {directory.serial} with {len(directory.members)} member(s), "
        f"valid until {directory.expires_at:%Y-%m-%d %H:%M}Z, written to {args.out}"
    )
    return 0


def _directory_add(args: argparse.Namespace) -> int:
    from node.enrol import add_member

    member, action = add_member(
        args.authority, args.members, args.member, replace_keys=args.replace
    )
    print(
        f"{member.node_id} {action} in {args.members} ({member.status.value}, "
        f"{member.endpoint if member.is_node else ', '.join(member.roles)}); "
        "sign the directory to publish it"
        if action != "unchanged"
        else f"{member.node_id} is already listed as given in {args.members}; nothing to do"
    )
    return 0


def _directory_set_status(args: argparse.Namespace) -> int:
    from federation.directory import MemberStatus
    from node.enrol import set_member_status

    status = MemberStatus(args.status)
    member, changed = set_member_status(args.members, args.node_id, status)
    if changed:
        print(
            f"{member.node_id} is now {status.value} in {args.members}; sign the directory "
            "to publish it"
        )
    else:
        print(f"{member.node_id} is already {status.value} in {args.members}; nothing to do")
    return 0


def _directory_show(args: argparse.Namespace) -> int:
    from federation.directory import verify_directory
    from federation.pki import public_key_from_text

    key = public_key_from_text(args.authority_key.read_text())
    directory = verify_directory(
        args.file.read_bytes(), key, source=str(args.file), allow_expired=True
    )
    expired = directory.expired(datetime.now(UTC))
    if args.json:
        print(
            json.dumps(
                {
                    "federation": directory.federation,
                    "serial": directory.serial,
                    "issued_at": f"{directory.issued_at:%Y-%m-%dT%H:%M:%SZ}",
                    "expires_at": f"{directory.expires_at:%Y-%m-%dT%H:%M:%SZ}",
                    "expired": expired,
                    "sha256": directory.digest(),
                    "members": [
                        m.to_json() for m in sorted(directory.members, key=lambda m: m.node_id)
                    ],
                },
                indent=2,
            )
        )
    else:
        state = "EXPIRED" if expired else "valid"
        print(
            f"directory serial {directory.serial} of federation {directory.federation} "
            f"(signature verified, {state})\n"
            f"  issued   {directory.issued_at:%Y-%m-%d %H:%M:%S}Z\n"
            f"  expires  {directory.expires_at:%Y-%m-%d %H:%M:%S}Z\n"
            f"  sha256   {directory.digest()}\n"
        )
        rows = [("NODE", "COUNTRY", "STATUS", "ROLES", "ENDPOINT", "CERTIFICATE", "SIGNING KEY")]
        rows += [
            (
                m.node_id,
                m.country,
                m.status.value,
                ",".join(m.roles),
                m.endpoint or "-",
                m.certificate_sha256[:16],
                m.signing_public_key[:16],
            )
            for m in sorted(directory.members, key=lambda m: m.node_id)
        ]
        print(format_table(rows))
    if expired:
        print(
            f"liaison: directory serial {directory.serial} expired at "
            f"{directory.expires_at:%Y-%m-%d %H:%M}Z: nodes refuse it",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison directory` and its subcommands."""
    dirs = group(sub, "directory", "federation directory tasks")
    p = command(dirs, "sign", "sign a members file into a federation directory", _directory_sign)
    p.add_argument("--authority", type=Path, required=True, help="the authority folder")
    p.add_argument(
        "--members",
        type=Path,
        required=True,
        help="JSON list of member entries (as written by `node enroll`)",
    )
    p.add_argument("--out", type=Path, required=True, help="where to write directory.json")
    p.add_argument(
        "--serial",
        type=int,
        default=None,
        help="serial (default: one above the highest this authority signed); must grow",
    )
    p.add_argument("--valid-days", type=int, default=30, help="days until it expires")
    p = command(
        dirs,
        "add",
        "add a node's member entry to the members file, or update its endpoint",
        _directory_add,
    )
    p.add_argument("--authority", type=Path, required=True, help="the authority folder")
    p.add_argument("--members", type=Path, required=True, help="the members file (JSON list)")
    p.add_argument(
        "--member",
        type=Path,
        required=True,
        help="the node's member.json (from `node enroll`; its tls.crt beside it is checked)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a listed entry that has other keys (the node was enrolled again)",
    )
    for name, status, help_ in (
        ("suspend", "suspended", "suspend a member: peers refuse it by policy until reinstated"),
        ("reinstate", "active", "make a suspended member active again"),
        ("revoke", "revoked", "revoke a member for good: every node refuses it"),
    ):
        p = command(dirs, name, help_, _directory_set_status)
        p.set_defaults(status=status)
        p.add_argument("node_id", help="the member's node id, e.g. DE-BKA")
        p.add_argument("--members", type=Path, required=True, help="the members file")
    p = command(
        dirs,
        "show",
        "verify a directory file and print its serial, validity and members",
        _directory_show,
    )
    p.add_argument("file", type=Path, help="a signed directory.json")
    p.add_argument(
        "--authority-key", type=Path, required=True, help="the pinned authority.pub to verify with"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
