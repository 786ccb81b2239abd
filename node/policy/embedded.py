"""The in-process Rego engine: regorus (Microsoft's Rust engine) via celine-regorus.

Why this engine and this build: policies/ENGINE.md (measured by benchmarks/policy_engines.py).

A regorus ``Engine`` is bound to the thread that created it: touching it (even ``clone()``)
from another thread panics. The node builds its engine at start-up, possibly off the event
loop, and decides on the event-loop thread, so this class keeps the policy *sources* and
builds one regorus engine per calling thread, lazily, on first use. Construction still
compiles everything once, on the constructing thread, so a broken policy fails at start-up.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from node.policy.decision import Decision, PolicyUnavailable
from node.policy.revision import canonical_json, policy_files, policy_revision

ENTRY_POINT = "data.liaison.exchange.decision"
# What regorus answers for a rule that is undefined for the input.
UNDEFINED = "<undefined>"
_RULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

try:
    import regorus
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    regorus = None  # type: ignore[assignment]


class PolicyLoadError(ValueError):
    """A policy file did not compile; the message names the file."""


def engine_message(exc: BaseException) -> str:
    """regorus appends a Rust backtrace when RUST_BACKTRACE is set: keep the diagnosis."""
    return str(exc).split("\n\nStack backtrace:", 1)[0].strip()


def is_engine_failure(exc: BaseException) -> bool:
    """pyo3 panics derive from BaseException; they are engine failures, not shutdowns."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def new_regorus_engine(sources: Iterable[tuple[str, str]], data_json: str) -> Any:
    """Compile ``(name, text)`` modules and data into a fresh engine on this thread."""
    if regorus is None:
        raise PolicyUnavailable("the regorus module is not installed (celine-regorus)")
    engine = regorus.Engine()
    for name, text in sources:
        try:
            engine.add_policy(name, text)
        except RuntimeError as exc:
            raise PolicyLoadError(f"{name}: {engine_message(exc)}") from exc
    try:
        engine.add_data_json(data_json)
    except RuntimeError as exc:
        raise PolicyLoadError(f"policy data: {engine_message(exc)}") from exc
    return engine


class EmbeddedEngine:
    """Evaluates the node's Rego in-process; any evaluation error is a deny."""

    name = "embedded"
    waits_on_io = False  # regorus holds the GIL while it evaluates

    def __init__(self, policy_dir: Path, data: Mapping[str, Any]) -> None:
        self._sources = [
            (path.relative_to(policy_dir).as_posix(), path.read_text(encoding="utf-8"))
            for path in policy_files(policy_dir)
        ]
        if not self._sources:
            raise PolicyLoadError(f"{policy_dir}: no .rego policy files")
        try:
            self._data_json = canonical_json(dict(data))
        except (TypeError, ValueError) as exc:
            raise PolicyLoadError(f"policy data is not JSON: {exc}") from exc
        self._revision = policy_revision(policy_dir, data)
        self._local = threading.local()
        self._closed = False
        # Compile now, on this thread: a broken policy must stop start-up, not a request.
        self._local.engine = new_regorus_engine(self._sources, self._data_json)

    @property
    def revision(self) -> str:
        return self._revision

    def _engine(self) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            try:
                engine = new_regorus_engine(self._sources, self._data_json)
            except PolicyLoadError as exc:  # compiled once already: the engine is broken
                raise PolicyUnavailable(str(exc)) from exc
            self._local.engine = engine
        return engine

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        if self._closed:
            raise PolicyUnavailable("embedded engine is closed")
        engine = self._engine()
        try:
            if input_json is None:
                input_json = json.dumps(policy_input, allow_nan=False)
            engine.set_input_json(input_json)
            raw = json.loads(engine.eval_rule_as_json(ENTRY_POINT))
        except BaseException as exc:
            if not is_engine_failure(exc):
                raise
            return Decision.deny("policy_error", self._revision)
        return Decision.from_document(raw, self._revision)

    @property
    def sources(self) -> Sequence[tuple[str, str]]:
        """The ``(name, text)`` policy modules this engine evaluates."""
        return tuple(self._sources)

    def rule_values(
        self, package: str, rules: Collection[str], policy_input: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Each rule queried alone, as :meth:`decide` queries the decision, on a fresh input
        (for `liaison policy explain`; not the request path). Not one query of the whole
        package: regorus evaluates ``data.liaison.base`` as a document differently from its
        rules one by one (node/policy/explanation.py). Undefined rules are left out."""
        if not _PACKAGE.fullmatch(package) or not all(_RULE.fullmatch(r) for r in rules):
            raise ValueError(f"not a package and rule names: {package}, {sorted(rules)}")
        if self._closed:
            raise PolicyUnavailable("embedded engine is closed")
        engine = self._engine()
        input_json = json.dumps(policy_input, allow_nan=False)
        values: dict[str, Any] = {}
        for rule in rules:
            ref = f"data.{package}.{rule}"
            engine.set_input_json(input_json)
            try:
                value = json.loads(engine.eval_rule_as_json(ref))
            except BaseException as exc:
                if not is_engine_failure(exc):
                    raise
                raise PolicyLoadError(f"{ref}: {engine_message(exc)}") from None
            if value != UNDEFINED:
                values[rule] = value
        return values

    def close(self) -> None:
        # Engines of other threads are freed with those threads: dropping them here, on
        # the wrong thread, is what regorus forbids.
        self._closed = True
        self._local.engine = None
