"""The `liaison` command: every operator task, each subcommand with its own --help.

Each top-level command is a module here that declares its subcommands and holds their
handlers (`register`); this assembles them into one parser and runs the command.

Errors reach the operator as one line that says what was wrong and what to do, and exit 2
(`main`, for every command); a traceback is a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from federation.directory import DirectoryError
from federation.errors import LiaisonError
from federation.identity import InvalidIdentity
from federation.pki import PkiError
from node.audit.entries import AuditError
from node.audit.witness_state import WitnessStateError
from node.cli import (
    audit,
    data,
    demo,
    directory,
    federation,
    node,
    oversight,
    policy,
    query,
    serve,
    witness,
)
from node.config import ConfigError
from node.importer import ImportFailed
from node.policy.data import PolicyDataError
from node.policy.decision import PolicyUnavailable
from node.policy.embedded import PolicyLoadError
from node.rpc.server import StartupError

# Errors that are the operator's to fix: printed as one line, never as a traceback.
OPERATOR_ERRORS = (
    PolicyUnavailable,
    ConfigError,
    DirectoryError,
    PkiError,
    InvalidIdentity,
    ImportFailed,
    PolicyDataError,
    PolicyLoadError,
    StartupError,
    AuditError,
    WitnessStateError,
    LiaisonError,
    FileNotFoundError,
    PermissionError,
)

# Each group declares its subcommands; `liaison --help` lists them in this order.
GROUPS = (
    federation.register,
    node.register,
    oversight.register,
    directory.register,
    audit.register,
    witness.register,
    data.register,
    serve.register,
    query.register,
    policy.register,
    demo.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liaison", description=("Liaison: a federated, policy-governed data-exchange node.")
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in GROUPS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except OPERATOR_ERRORS as exc:
        print(f"liaison: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
