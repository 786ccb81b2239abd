"""`liaison policy check|test|explain`: what an operator runs before trusting a policy; and
`liaison policy jit add|revoke|list`, which edits the JIT grants of a running node's data.

Each command reports step by step, in words an operator can act on; the CLI turns a failed
step into exit status 2. The OPA binary is used where the project installed it (see
`node.policy.opa_process.find_opa`); without it the steps that need it say so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.shared import Subparsers, command, format_table, group

if TYPE_CHECKING:
    from node.policy.decision import PolicyEngine

# The corpus shipped with the repository, used when no other is named.
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "tests" / "conformance"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False

    def line(self) -> str:
        mark = "skip" if self.skipped else ("ok" if self.ok else "FAIL")
        return f"[{mark:>4}] {self.name}" + (f": {self.detail}" if self.detail else "")


def _opa(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    from node.policy.opa_process import find_opa

    return subprocess.run(
        [str(find_opa()), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def check(policy_dir: Path, data_path: Path) -> list[Step]:
    """Schema of the data, then the Rego: compiled in-process, `opa check --strict`, `opa fmt`."""
    from node.policy.data import PolicyDataError, load_policy_data
    from node.policy.embedded import EmbeddedEngine, PolicyLoadError
    from node.policy.opa_process import OpaNotFound

    steps: list[Step] = []
    data: Mapping[str, Any] | None = None
    try:
        data = load_policy_data(data_path)
        steps.append(Step(f"policy data {data_path}", True, "matches the schema"))
    except PolicyDataError as exc:
        steps.append(Step(f"policy data {data_path}", False, str(exc)))
    try:
        EmbeddedEngine(policy_dir, data or {}).close()
        steps.append(Step("compiles in the embedded engine", True))
    except PolicyLoadError as exc:
        steps.append(Step("compiles in the embedded engine", False, str(exc)))
    try:
        strict = _opa(["check", "--strict", str(policy_dir)])
        steps.append(
            Step("opa check --strict", strict.returncode == 0, strict.stderr.strip()[:4000])
        )
        fmt = _opa(["fmt", "--list", str(policy_dir)])
        unformatted = fmt.stdout.split()
        steps.append(
            Step(
                "opa fmt",
                fmt.returncode == 0 and not unformatted,
                ("run `opa fmt -w` on: " + ", ".join(unformatted)) if unformatted else "",
            )
        )
    except OpaNotFound as exc:
        steps.append(Step("opa check --strict, opa fmt", True, str(exc), skipped=True))
    return steps


def test(policy_dir: Path, corpus_dir: Path | None) -> list[Step]:
    """The Rego unit tests (`opa test`), then the conformance corpus on both engines."""
    from node.policy.opa_process import OpaNotFound
    from node.policy.rego_tests import run_rego_tests

    steps: list[Step] = []
    try:
        result = _opa(["test", str(policy_dir)])
        summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
        detail = summary if result.returncode == 0 else result.stdout.strip()[-4000:]
        steps.append(Step("opa test", result.returncode == 0, detail))
        opa_available = True
    except OpaNotFound as exc:
        results = run_rego_tests(policy_dir)
        failed = [r.test_id for r in results if not r.passed]
        steps.append(
            Step(
                "Rego tests (embedded engine; no OPA binary)",
                not failed,
                f"{len(results) - len(failed)}/{len(results)} passed"
                + (f"; failed: {', '.join(failed)}" if failed else "")
                + f" ({exc})",
            )
        )
        opa_available = False
    corpus_dir = corpus_dir or DEFAULT_CORPUS
    if not (corpus_dir / "cases").is_dir():
        steps.append(Step("conformance corpus", True, f"none at {corpus_dir}", skipped=True))
        return steps
    steps.extend(_corpus_steps(policy_dir, corpus_dir, opa_available))
    return steps


def _corpus_steps(policy_dir: Path, corpus_dir: Path, with_opa: bool) -> list[Step]:
    from node.policy.corpus import CorpusError, load_corpus, run_corpus
    from node.policy.embedded import EmbeddedEngine
    from node.policy.opa import OpaEngine
    from node.policy.opa_process import start_opa

    try:
        data, cases = load_corpus(corpus_dir)
    except CorpusError as exc:
        return [Step("conformance corpus", False, str(exc))]
    steps = []
    engines: dict[str, Any] = {"embedded": lambda d: EmbeddedEngine(policy_dir, d)}
    server = start_opa() if with_opa else None
    try:
        if server is not None:
            url = server.url
            engines["opa"] = lambda d: OpaEngine(url, policy_dir, d, deadline=5.0)
        outcomes = list(run_corpus(data, cases, engines))
    finally:
        if server is not None:
            server.stop()
    for name in engines:
        mine = [o for o in outcomes if o.engine == name]
        bad = [o for o in mine if not o.ok]
        detail = f"{len(mine) - len(bad)}/{len(mine)} cases as expected"
        detail += "".join(
            f"\n    {o.case.name} ({o.case.source}): {'; '.join(o.problems)}" for o in bad[:30]
        )
        steps.append(Step(f"conformance corpus on the {name} engine", not bad, detail))
    if not with_opa:
        steps.append(
            Step("conformance corpus on the OPA engine", True, "no OPA binary", skipped=True)
        )
    return steps


def explain(engine: PolicyEngine, policy_input: Mapping[str, Any]) -> dict[str, Any]:
    """The decision, and why: the rules that fired behind it (node/policy/explanation.py),
    and on OPA also OPA's own trace of the decision query."""
    from node.policy.explanation import explain as explain_decision
    from node.policy.opa import OpaEngine

    out = explain_decision(engine, policy_input)
    if isinstance(engine, OpaEngine):
        out["explanation"] = engine.explain(policy_input)
    return out


# --- `liaison policy` --------------------------------------------------------------------------


def _policy_target(args: argparse.Namespace) -> tuple[Any, Path, Path]:
    """(policy section or None, policy dir, data file) from --config or the explicit flags."""
    from node.config import ConfigError, load_config

    if args.config is not None:
        policy = load_config(args.config).policy
        return policy, policy.policy_dir, policy.data
    if args.policy_dir is None or args.data is None:
        raise ConfigError("give --config node.toml, or both --policy-dir and --data")
    return None, args.policy_dir, args.data


def _print_steps(steps: list[Any]) -> int:
    for step in steps:
        print(step.line())
    return 0 if all(step.ok for step in steps) else 2


def _policy_check(args: argparse.Namespace) -> int:
    _, policy_dir, data = _policy_target(args)
    return _print_steps(check(policy_dir, data))


def _policy_test(args: argparse.Namespace) -> int:
    _, policy_dir, _ = _policy_target(args)
    return _print_steps(test(policy_dir, args.corpus))


def _policy_explain(args: argparse.Namespace) -> int:
    from node.config import ConfigError
    from node.policy.data import load_policy_data
    from node.policy.embedded import EmbeddedEngine
    from node.policy.engines import build_engine

    policy, policy_dir, data_path = _policy_target(args)
    try:
        policy_input = json.loads(args.input.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{args.input}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    data = load_policy_data(data_path)
    engine = build_engine(policy, data) if policy else EmbeddedEngine(policy_dir, data)
    try:
        print(json.dumps(explain(engine, policy_input), indent=2))
    finally:
        engine.close()
    return 0


# --- `liaison policy jit` ----------------------------------------------------------------------


def _jit_target(args: argparse.Namespace) -> tuple[Path, Path]:
    """(policy dir, data file): the node's, from --config; or --data, with the shipped Rego
    unless --policy-dir names other (the Rego only enters the printed revision)."""
    from node.config import ConfigError, load_config
    from node.enrol import DEFAULT_POLICY_DIR

    if args.config is not None:
        policy = load_config(args.config).policy
        return policy.policy_dir, policy.data
    if args.data is None:
        raise ConfigError("give --config node.toml, or --data FILE")
    return args.policy_dir or DEFAULT_POLICY_DIR, args.data


def _print_change(change: Any) -> None:
    grant = change.grant
    said = {
        "added": f"added: members {','.join(grant.members)}, case {grant.case_reference!r}, "
        f"{grant.valid_from} to {grant.valid_until}",
        "ended": f"revoked: its window now ends {grant.valid_until} (kept in the data)",
        "removed": "revoked: removed (it had not begun before today)",
    }[change.action]
    print(f"JIT {grant.jit_id} {said}")
    print(f"policy revision {change.revision_after} (was {change.revision_before})")


def _jit_add(args: argparse.Namespace) -> int:
    from node.policy.jits import Grant, add_grant

    policy_dir, data = _jit_target(args)
    grant = Grant(
        args.jit_id,
        tuple(args.member),
        args.case_reference,
        args.valid_from,
        args.valid_until,
    )
    _print_change(add_grant(data, policy_dir, grant))
    return 0


def _jit_revoke(args: argparse.Namespace) -> int:
    from node.policy.jits import revoke_grant

    policy_dir, data = _jit_target(args)
    _print_change(revoke_grant(data, policy_dir, args.jit_id, args.reason))
    return 0


def _jit_list(args: argparse.Namespace) -> int:
    from node.policy.jits import read_grants, utc_today

    _, data = _jit_target(args)
    today = utc_today()
    found = read_grants(data)
    if args.json:
        rows = [{"id": g.jit_id, **g.as_json(), "status": g.status(today)} for g in found]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not found:
        print(f"no JIT grants in {data}")
        return 0
    table = [("ID", "MEMBERS", "CASE REFERENCE", "WINDOW", "STATUS")]
    table += [
        (
            g.jit_id,
            ",".join(g.members),
            g.case_reference,
            f"{g.valid_from} to {g.valid_until}",
            g.status(today),
        )
        for g in found
    ]
    print(format_table(table))
    return 0


def _register_jit(pol: Subparsers) -> None:
    about = (
        "the joint investigation team grants in the policy data: members fetch under a JIT "
        "legal basis without a ticket inside the window; a running node picks up each edit "
        "by itself (file watch or SIGHUP)"
    )
    jit = pol.add_parser("jit", help=about, description=about)
    actions = jit.add_subparsers(dest="jit_action", required=True, metavar="ACTION")

    def jit_command(
        name: str, help_: str, run: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = command(actions, name, help_, run)
        p.add_argument("--config", type=Path, help="the node's node.toml (its [policy] data)")
        p.add_argument("--data", type=Path, help="policy data file (instead of --config)")
        p.add_argument(
            "--policy-dir",
            type=Path,
            help="Rego folder, for the revision printed with --data (default: the shipped one)",
        )
        return p

    p = jit_command(
        "add",
        "add a JIT grant: the whole new data is checked as the node checks it and written "
        "atomically; prints the new policy revision, which the node's log and every "
        "decision's audit entry show once it has reloaded",
        _jit_add,
    )
    p.add_argument("jit_id", metavar="JIT_ID", help="the grant's id, e.g. JIT-2026-017")
    p.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="CC",
        help="a member country (ISO 3166 alpha-2, e.g. DE); repeat for each, at least two",
    )
    p.add_argument(
        "--case-reference",
        required=True,
        help="the case reference requests under this JIT carry (how the policy finds the grant)",
    )
    p.add_argument("--valid-from", required=True, metavar="YYYY-MM-DD", help="first day")
    p.add_argument("--valid-until", required=True, metavar="YYYY-MM-DD", help="last day (included)")
    p = jit_command(
        "revoke",
        "end a JIT grant now: its window is closed at yesterday (UTC; windows are whole days), "
        "so no Fetch relies on it from today, while the grant stays in the data: an auditor "
        "reading the data of any past revision, or of today, sees what was granted and until "
        "when. A grant that had not begun before today is removed instead (no window can end "
        "before it opens). The reason goes into the journal beside the data file "
        "(<data>.changes.jsonl)",
        _jit_revoke,
    )
    p.add_argument("jit_id", metavar="JIT_ID", help="the grant's id")
    p.add_argument("--reason", required=True, help="why the grant ends (for the journal)")
    p = jit_command(
        "list", "list the JIT grants and whether each is in force today (UTC)", _jit_list
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(sub: Subparsers) -> None:
    """Declare `liaison policy` and its subcommands."""
    pol = group(
        sub, "policy", "policy tasks: check, test and explain the node's Rego; edit its JIT grants"
    )

    def policy_command(
        name: str, help_: str, run: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = command(pol, name, help_, run)
        p.add_argument("--config", type=Path, help="the node's node.toml (policy, data, engine)")
        p.add_argument("--policy-dir", type=Path, help="Rego folder (instead of --config)")
        p.add_argument("--data", type=Path, help="policy data file (instead of --config)")
        return p

    policy_command(
        "check",
        "validate the policy data against its schema, compile the Rego, "
        "and run opa check --strict and opa fmt",
        _policy_check,
    )
    p = policy_command(
        "test",
        "run the Rego unit tests (opa test) and the conformance corpus on both engines",
        _policy_test,
    )
    p.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="conformance corpus folder (default: the repository's tests/conformance)",
    )
    p = policy_command(
        "explain",
        "decide one input and show why: reasons, obligations, and the rules that fired "
        "(and OPA's own trace when the node's engine is OPA)",
        _policy_explain,
    )
    p.add_argument("--input", type=Path, required=True, help="a policy input JSON file")
    _register_jit(pol)
