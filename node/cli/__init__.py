"""The `liaison` command: every operator task, each subcommand with its own --help.

Each top-level command is a module here that declares its subcommands and holds their
handlers (`register`); this assembles them into one parser and runs the command. A group
module imports at its top only what declaring its parser needs, and its handlers import the
rest: the whole parser is built on every run, `liaison --help` included, so it stays quick.

Errors reach the operator as one line that says what was wrong and what to do, and exit 2
(`main`, for every command); a traceback is a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from node.cli import (
    audit,
    data,
    db,
    demo,
    directory,
    federation,
    health,
    node,
    notices,
    oversight,
    policy,
    query,
    received,
    report,
    serve,
    tickets,
    witness,
)

# Errors that are the operator's to fix: printed as one line, never as a traceback. Named by
# module and class, not imported: their modules pull in gRPC, SQLAlchemy, OPA's client and
# more, which `liaison --help` (run often) should not wait for.
OPERATOR_ERRORS = (
    ("node.policy.decision", "PolicyUnavailable"),
    ("node.config", "ConfigError"),
    ("federation.directory", "DirectoryError"),
    ("federation.pki", "PkiError"),
    ("federation.identity", "InvalidIdentity"),
    ("node.importer", "ImportFailed"),
    ("node.policy.data", "PolicyDataError"),
    ("node.policy.jits", "JitEditError"),
    ("node.policy.embedded", "PolicyLoadError"),
    ("node.rpc.server", "StartupError"),
    ("node.audit.entries", "AuditError"),
    ("node.audit.witness_state", "WitnessStateError"),
    ("node.rpc.admin_client", "AdminError"),
    ("node.notice_model", "NoticeError"),
    ("node.schema", "SchemaError"),
    ("node.database", "StoreUnavailable"),
    ("node.backup", "BackupError"),
    ("federation.errors", "LiaisonError"),
    ("builtins", "FileNotFoundError"),
    ("builtins", "PermissionError"),
)


def is_operator_error(exc: BaseException) -> bool:
    """Whether `exc` is one of OPERATOR_ERRORS. A module not yet imported cannot have raised
    its error (an instance needs its class, and the class its module), so only the modules
    in `sys.modules` are consulted: the answer is the same as importing them all, for free."""
    for module_name, class_name in OPERATOR_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


# Each group declares its subcommands; `liaison --help` lists them in this order.
GROUPS = (
    federation.register,
    node.register,
    oversight.register,
    directory.register,
    audit.register,
    witness.register,
    data.register,
    db.register,
    serve.register,
    health.register,
    query.register,
    received.register,
    tickets.register,
    notices.register,
    policy.register,
    report.register,
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
    # Alembic narrates at INFO; the `db` commands say what was done in their own words.
    logging.getLogger("alembic").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not is_operator_error(exc):
            raise
        print(f"liaison: error: {exc}", file=sys.stderr)
        return 2
    return code
