"""Why one input got its decision (`liaison policy explain`), told from the decision query
itself, the same way on both engines, and never contradicting that decision.

The decision is what ``data.liaison.exchange.decision`` answers. The rules listed behind it
are those of the packages it is built from: its own (``liaison.exchange``), the profile the
input selects, and every package outside ``liaison.profiles`` (the shared base), each rule
with the value it has for this input. A rule is listed ("fired") when it holds: true, a
non-empty set, or some other value.

The listing is never read off one query of the whole ``data.liaison`` document: regorus
materialises a whole package differently from its rules queried one by one (a partial set
defined by several rules keeps only some of them; seen on ``liaison.base``), which once
listed ``decision.allow`` under a decision that refused. So each engine answers rule by rule
(:meth:`Explainable.rule_values`), the rules are named by parsing the policy files, and
:func:`contradictions` holds the listed decision rule against the decision itself before
anything is shown. ``tests/conformance/test_explanations.py`` runs every corpus case through
this on both engines and requires them to list the same rules.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from node.policy.decision import Decision, PolicyEngine
from node.policy.embedded import ENTRY_POINT, new_regorus_engine

ENTRY_PACKAGE, _, ENTRY_RULE = ENTRY_POINT.removeprefix("data.").rpartition(".")
PROFILES_PACKAGE = "liaison.profiles"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@runtime_checkable
class Explainable(PolicyEngine, Protocol):
    """An engine that can say what each rule of a package is worth for an input."""

    @property
    def sources(self) -> Sequence[tuple[str, str]]:
        """The ``(name, text)`` policy modules the engine evaluates."""
        ...

    def rule_values(
        self, package: str, rules: Collection[str], policy_input: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``{rule: value}`` for those of ``rules`` (in ``package``, e.g. ``liaison.base``)
        defined for ``policy_input``, each the value the decision query would see."""
        ...


def _path(ref: Mapping[str, Any]) -> list[str]:
    """A package's ``a.b["c"]`` as ``["a", "b", "c"]`` (regorus AST)."""
    if "Var" in ref:
        return [ref["Var"]["value"]]
    if "RefDot" in ref:
        return [*_path(ref["RefDot"]["refr"]), ref["RefDot"]["field"][1]]
    return [*_path(ref["RefBrack"]["refr"]), ref["RefBrack"]["index"]["String"]["value"]]


def _root(ref: Mapping[str, Any]) -> str:
    """The name a rule head starts with: ``p`` of ``p``, ``p.q``, ``p[k]``."""
    while "Var" not in ref:
        ref = next(iter(ref.values()))["refr"]
    return str(ref["Var"]["value"])


@functools.lru_cache(maxsize=8)
def rules_by_package(sources: tuple[tuple[str, str], ...]) -> dict[str, tuple[str, ...]]:
    """The rules (not functions) each package of ``sources`` defines, by name, sorted.

    Parsed by regorus, the embedded engine's own compiler: a policy an operator wrote needs
    no particular layout for its rules to be found. A rule defined under a dotted head
    (``a.b := 1``) is listed by its first part, the value then being the object below it.
    """
    engine = new_regorus_engine(sources, "{}")
    found: dict[str, set[str]] = {}
    for module in json.loads(engine.get_ast_as_json()):
        ast = module["ast"]
        package = ".".join(_path(ast["package"]["refr"]))
        names = found.setdefault(package, set())
        for rule in ast["rules"]:
            if "Default" in rule:
                if rule["Default"]["args"]:  # a default function
                    continue
                name = _root(rule["Default"]["refr"])
            else:
                (kind, spec), *_ = rule["Spec"]["head"].items()
                if kind == "Func":
                    continue
                name = _root(spec["refr"])
            if _NAME.fullmatch(name):
                names.add(name)
    return {package: tuple(sorted(names)) for package, names in found.items()}


def packages_behind(packages: Collection[str], policy_input: Any) -> list[str]:
    """The packages the decision is built from for this input, the decision's own first.

    The profile is the one ``input.node.profile`` names (``eu-led`` is package
    ``liaison.profiles.eu_led``, as decision.rego maps it), when such a package exists; the
    input may be of any shape (odd inputs are what explain is for).
    """
    node = policy_input.get("node") if isinstance(policy_input, Mapping) else None
    profile = node.get("profile") if isinstance(node, Mapping) else None
    selected = f"{PROFILES_PACKAGE}.{profile.replace('-', '_')}" if isinstance(profile, str) else ""
    ordered = [ENTRY_PACKAGE] if ENTRY_PACKAGE in packages else []
    if selected in packages:
        ordered.append(selected)
    ordered += sorted(
        p
        for p in packages
        if p != ENTRY_PACKAGE and p != PROFILES_PACKAGE and not p.startswith(f"{PROFILES_PACKAGE}.")
    )
    return ordered


def fired_rules(document: Any, path: str) -> list[str]:
    """Every rule under ``document`` that holds: true booleans, non-empty sets, values."""
    if isinstance(document, dict):
        found: list[str] = []
        for key in sorted(document):
            found.extend(fired_rules(document[key], f"{path}.{key}"))
        return found
    if document is True:
        return [path]
    if document is False or document is None or document in ("", []):  # 0 is a value
        return []
    return [f"{path} = {json.dumps(document)}"]


def contradictions(decision: Decision, entry_value: Any) -> list[str]:
    """How the listed value of the decision rule disagrees with the decision, if it does.

    The value is read the way the engine reads its answer (:meth:`Decision.from_document`),
    so an answer the engine turned into ``policy_error`` agrees with that deny.
    """
    listed = Decision.from_document(entry_value, decision.revision)
    problems = []
    for field in ("allow", "reasons", "obligations"):
        ours, theirs = getattr(listed, field), getattr(decision, field)
        if field == "obligations":
            ours, theirs = dict(ours), dict(theirs)
        if ours != theirs:
            problems.append(f"{ENTRY_POINT}.{field} is listed as {ours!r}, decided {theirs!r}")
    return problems


def explain(engine: PolicyEngine, policy_input: Mapping[str, Any]) -> dict[str, Any]:
    """The decision for ``policy_input`` and the rules that fired behind it.

    The decision is asked again after the rules are read: an OPA server whose policy was
    replaced in between refuses to decide (its revision moved) instead of this explaining
    other Rego, and a changed answer is reported as a contradiction.
    """
    if not isinstance(engine, Explainable):
        raise TypeError(f"the {engine.name} engine cannot list its rules")
    decision = engine.decide(policy_input)
    fired: list[str] = []
    entry_value: Any = None
    by_package = rules_by_package(tuple(engine.sources))
    for package in packages_behind(by_package, policy_input):
        values = engine.rule_values(package, by_package[package], policy_input)
        if package == ENTRY_PACKAGE:
            entry_value = values.get(ENTRY_RULE)
        fired.extend(fired_rules(values, f"data.{package}"))
    problems = contradictions(decision, entry_value)
    if engine.decide(policy_input) != decision:
        problems.append("the decision changed while the rules were read")
    out: dict[str, Any] = {
        "engine": engine.name,
        "revision": decision.revision,
        "allow": decision.allow,
        "reasons": list(decision.reasons),
        "obligations": dict(decision.obligations),
        "fired": fired,
    }
    if problems:
        out["contradictions"] = problems
    return out
