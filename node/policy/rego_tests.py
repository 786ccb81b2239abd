"""Runs the Rego unit tests (``test_*`` rules in ``*_test.rego``) with the embedded engine.

``opa test`` is the reference runner (``make lint`` runs it). This one runs in-process,
where no OPA binary is at hand: a node tests a policy before it starts on it or reloads it
(:mod:`node.policy.reload`), and ``liaison policy test`` falls back to it. Like ``opa
test``, a test passes iff its rule evaluates to ``true`` (undefined, false or an error is a
failure).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.policy.embedded import engine_message, is_engine_failure, new_regorus_engine
from node.policy.revision import TEST_SUFFIX, canonical_json

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
# Rules start at column 0 in `opa fmt` style; a `test_x` rule may have several bodies.
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RegoTestResult:
    file: str
    package: str
    name: str
    passed: bool
    detail: str = ""

    @property
    def test_id(self) -> str:
        return f"{self.file}::{self.name}"


def _discover(text: str) -> tuple[str, list[str]]:
    match = _PACKAGE.search(text)
    package = match.group(1) if match else ""
    return package, list(dict.fromkeys(_TEST_RULE.findall(text)))


def run_rego_tests(policy_dir: Path, data: Mapping[str, Any] | None = None) -> list[RegoTestResult]:
    """Load every ``*.rego`` under ``policy_dir`` and evaluate each test rule in turn."""
    files = sorted(policy_dir.rglob("*.rego"), key=lambda p: p.relative_to(policy_dir))
    sources = [(p.relative_to(policy_dir).as_posix(), p.read_text(encoding="utf-8")) for p in files]
    engine = new_regorus_engine(sources, canonical_json(dict(data or {})))
    results: list[RegoTestResult] = []
    for name, text in sources:
        if not name.endswith(TEST_SUFFIX):
            continue
        package, tests = _discover(text)
        for test in tests:
            try:
                value = json.loads(engine.eval_rule_as_json(f"data.{package}.{test}"))
            except BaseException as exc:
                if not is_engine_failure(exc):
                    raise
                results.append(
                    RegoTestResult(name, package, test, False, f"error: {engine_message(exc)}")
                )
                continue
            passed = value is True
            detail = "" if passed else f"evaluated to {json.dumps(value)}"
            results.append(RegoTestResult(name, package, test, passed, detail))
    return results
