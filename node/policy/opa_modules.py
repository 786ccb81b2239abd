"""How the OPA engine's modules go into OPA, which has no multi-module transaction: the
guard module that stamps every answer with the revision OPA holds, pushing modules until
a fixed point, and OPA's compile errors as ``file:row:col: message`` (:mod:`node.policy.opa`
uses them at start-up and when it pushes again).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from opa_client.errors import RegoParseError

PACKAGE_PATH = "liaison.exchange"
RULE = "decision"

# The one module the engine adds to the files: it stamps every answer with the revision
# OPA holds, so an engine whose files are no longer in OPA (another engine pushed over
# them, a push failed half-way, OPA restarted empty) refuses to decide instead of
# reporting a decision of other Rego under its own revision. Its package is outside the
# policies' namespace, so it changes nothing they compute.
GUARD_ID = "liaison-opa-engine-guard.rego"
GUARD_PACKAGE = "liaison_opa_engine_guard"
PUSHING = "pushing"


def guard_module(revision: str) -> str:
    """``answer`` = the revision, and the decision when it is defined."""
    stamp = json.dumps(revision)
    return (
        f"package {GUARD_PACKAGE}\n\n"
        f'default answer := {{"revision": {stamp}}}\n\n'
        f'answer := {{"revision": {stamp}, "decision": data.{PACKAGE_PATH}.{RULE}}}\n'
    )


PACKAGE_RE = re.compile(r"^\s*package\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


def opa_errors(exc: RegoParseError, fallback_file: str) -> str:
    """OPA's compile errors as ``file:row:col: message`` (OPA names the module id)."""
    parts: list[str] = []
    for err in exc.errors:
        if not isinstance(err, dict):
            continue
        loc = err.get("location") or {}
        where = loc.get("file") or fallback_file
        if loc.get("row"):
            where = f"{where}:{loc['row']}:{loc.get('col', 0)}"
        parts.append(f"{where}: {err.get('message', err.get('code', 'error'))}")
    if not parts:
        parts.append(f"{fallback_file}: {exc.expression}: {exc.message}")
    return "; ".join(parts)


def fixed_point(steps: dict[str, Callable[[], str | None]]) -> dict[str, str]:
    """Run every step, again and again, until all succeed or a round makes no progress.

    OPA compiles each policy PUT or DELETE against the modules it holds at that moment,
    and the policy API has no multi-module transaction: a module calling a function
    from a file not yet pushed is refused ("undefined function"), and a stale module is
    refused removal while the old version of one of ours still uses it. An order that
    works, when one exists, is found this way. Returns ``{step: last error}`` for what
    never succeeded: a real compile error, or what depends on one.
    """
    errors: dict[str, str] = {}
    pending = dict(steps)
    while pending:
        errors = {}
        before = len(pending)
        for name, step in list(pending.items()):
            error = step()
            if error is None:
                del pending[name]
            else:
                errors[name] = error
        if len(pending) == before:  # no progress: what is left will never go in
            break
    return errors
