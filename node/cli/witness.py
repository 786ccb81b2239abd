"""`liaison witness status|forget`: this node's state as a witness of its peers' audit
logs, read beside a running node, and dropping a split view once it was investigated."""

from __future__ import annotations

import argparse
import base64
import sys
import time
from datetime import UTC, datetime

from node.cli.shared import Subparsers, command, group


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _witness_status(args: argparse.Namespace) -> int:
    from node.audit.witness_state import read_state, state_path, witness_name
    from node.config import load_config

    config = load_config(args.config)
    path = state_path(config.audit.path)
    state = read_state(path, config.node.federation, config.node.id)
    if args.json:
        name = witness_name(config.node.federation, config.node.id)
        sys.stdout.write(state.to_bytes(name).decode())
        return 0
    print(f"witness state {path}: {len(state.views)} log(s) witnessed")
    for log_id, view in sorted(state.views.items()):
        root = base64.b64encode(view.checkpoint.root).decode()
        print(
            f"  {log_id:<12} size {view.checkpoint.size:>10}  root {root}  "
            f"last verified {_utc(view.witnessed_at)}"
        )
    print(f"split views: {len(state.evidence)} unresolved, {len(state.resolved)} resolved")
    for e in state.evidence:
        print(f"  UNRESOLVED {e.log}: {e.reason.value} seen {_utc(e.detected_at)} via {e.via}")
    for r in state.resolved:
        e = r.evidence
        print(
            f"  resolved   {e.log}: {e.reason.value} seen {_utc(e.detected_at)}; "
            f"resolved {_utc(r.resolved_at)}: {r.resolution}"
        )
    return 0


def _witness_forget(args: argparse.Namespace) -> int:
    from node.audit.witness_state import forget, state_path
    from node.config import load_config

    config = load_config(args.config)
    path = state_path(config.audit.path)
    view, resolved = forget(
        path,
        config.node.federation,
        config.node.id,
        args.log,
        args.resolution,
        int(time.time()),
    )
    if view is not None:
        print(
            f"{args.log}: the view of its log at size {view.checkpoint.size} is dropped; its "
            "next checkpoint is trusted afresh when the node starts"
        )
    print(f"{args.log}: {len(resolved)} split view(s) marked resolved in {path} (kept there)")
    return 0


def register(sub: Subparsers) -> None:
    """Declare `liaison witness` and its subcommands."""
    witness = group(
        sub, "witness", "this node as a witness of its peers' audit logs: its views, split views"
    )
    p = command(
        witness,
        "status",
        "print the newest checkpoint this node verified of each peer's log, and any split-view "
        "evidence (safe beside a running node)",
        _witness_status,
        config=True,
    )
    p.add_argument("--json", action="store_true", help="print the state file's JSON")
    p = command(
        witness,
        "forget",
        "after a split view of LOG was investigated: drop this node's view of that log (its "
        "next checkpoint is then trusted afresh) and mark its evidence resolved; the node "
        "must be stopped",
        _witness_forget,
        config=True,
    )
    p.add_argument("log", help="the peer whose log, e.g. DE-BKA")
    p.add_argument(
        "--resolution",
        required=True,
        help="what the investigation found and who decided (kept with the evidence)",
    )
