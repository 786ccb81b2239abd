"""The conformance corpus: (input, data, expected decision) cases in plain JSON files.

Every case runs against every engine, and every engine must give the expected decision:
that is how we know the embedded engine and the OPA server decide alike on the same files.

Layout of a corpus folder::

    data/<name>.json     policy data documents (agreements, jits, restrictions, settings)
    inputs/<name>.json   base policy inputs
    cases/*.json         lists of cases

A case::

    {"name": "suspended member is refused",
     "data": "standard", "input": {"base": "match", "set": {"requester.status": "suspended"},
                                   "unset": ["envelope.purpose"]},
     "expect": {"allow": false, "reasons": ["requester_not_active"]}}

`set` takes dotted paths (created if absent); `unset` removes them. `expect.obligations`,
when given, must equal the decision's obligations exactly.

A case may also say what `liaison policy explain` lists for it, on every engine::

    "explain": {"fired": ["data.liaison.base.is_reshare",
                          "data.liaison.base.record_reasons = [\"source_restricted\"]"],
                "not_fired": ["data.liaison.exchange.decision.allow"]}

`fired` lines must be listed exactly; no line about a `not_fired` rule (or a key below it)
may be.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.policy.decision import Decision, PolicyEngine
from node.policy.explanation import explain


class CorpusError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    source: str
    data: str
    input: Mapping[str, Any]
    expect: Mapping[str, Any]
    explain: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    engine: str
    decision: Decision
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path} not found") from None
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def _path(doc: dict[str, Any], dotted: str, create: bool) -> tuple[dict[str, Any], str]:
    *parents, last = dotted.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            if not create:
                return {}, last
            child = node[part] = {}
        node = child
    return node, last


def build_input(spec: Mapping[str, Any], bases: Mapping[str, Any], where: str) -> dict[str, Any]:
    if "base" not in spec:
        return dict(spec)
    if spec["base"] not in bases:
        raise CorpusError(f"{where}: unknown input base {spec['base']!r}")
    doc: dict[str, Any] = copy.deepcopy(bases[spec["base"]])
    for dotted, value in spec.get("set", {}).items():
        parent, key = _path(doc, dotted, create=True)
        parent[key] = value
    for dotted in spec.get("unset", []):
        parent, key = _path(doc, dotted, create=False)
        parent.pop(key, None)
    return doc


def load_corpus(folder: Path) -> tuple[dict[str, Any], list[Case]]:
    """The corpus's data documents by name, and its cases in file order."""
    data = {p.stem: _read(p) for p in sorted((folder / "data").glob("*.json"))}
    bases = {p.stem: _read(p) for p in sorted((folder / "inputs").glob("*.json"))}
    cases: list[Case] = []
    seen: set[str] = set()
    for path in sorted((folder / "cases").glob("*.json")):
        entries = _read(path)
        if not isinstance(entries, list):
            raise CorpusError(f"{path}: must hold a list of cases")
        for i, entry in enumerate(entries):
            where = f"{path.name}[{i}]"
            try:
                name, data_name, spec, expect = (
                    entry["name"],
                    entry["data"],
                    entry["input"],
                    entry["expect"],
                )
            except (KeyError, TypeError):
                raise CorpusError(f"{where}: a case needs name, data, input, expect") from None
            if name in seen:
                raise CorpusError(f"{where}: case name {name!r} is used twice")
            if data_name not in data:
                raise CorpusError(f"{where}: unknown data document {data_name!r}")
            if not isinstance(expect.get("allow"), bool):
                raise CorpusError(f"{where}: expect.allow must be true or false")
            seen.add(name)
            explain = _explain_spec(entry.get("explain", {}), where)
            policy_input = build_input(spec, bases, where)
            cases.append(Case(name, where, data_name, policy_input, expect, explain))
    if not cases:
        raise CorpusError(f"{folder}: no cases found under cases/")
    return data, cases


def _explain_spec(spec: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(spec, dict) or set(spec) - {"fired", "not_fired"}:
        raise CorpusError(f"{where}: explain takes only fired and not_fired")
    lists = {key: spec.get(key, []) for key in ("fired", "not_fired")}
    for key, lines in lists.items():
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise CorpusError(f"{where}: explain.{key} must be a list of strings")
    return {key: tuple(lines) for key, lines in lists.items() if lines}


def judge_explanation(case: Case, fired: list[str]) -> tuple[str, ...]:
    """What an explanation's fired rules miss, or list wrongly, of the case's expectation."""
    problems = [
        f"explanation does not list {line}"
        for line in case.explain.get("fired", ())
        if line not in fired
    ]
    for path in case.explain.get("not_fired", ()):
        wrong = [x for x in fired if x == path or x.startswith((f"{path} = ", f"{path}."))]
        if wrong:
            problems.append(f"explanation lists {', '.join(wrong)}")
    return tuple(problems)


def judge(case: Case, decision: Decision) -> tuple[str, ...]:
    """What differs between the decision and the case's expectation."""
    problems = []
    if decision.allow != case.expect["allow"]:
        problems.append(f"allow is {decision.allow}, expected {case.expect['allow']}")
    want_reasons = sorted(case.expect.get("reasons", []))
    if list(decision.reasons) != want_reasons:
        problems.append(f"reasons are {list(decision.reasons)}, expected {want_reasons}")
    if "obligations" in case.expect and dict(decision.obligations) != case.expect["obligations"]:
        problems.append(
            f"obligations are {dict(decision.obligations)}, expected {case.expect['obligations']}"
        )
    return tuple(problems)


def run_corpus(
    data: Mapping[str, Any],
    cases: list[Case],
    engines: Mapping[str, Callable[[Mapping[str, Any]], PolicyEngine]],
) -> Iterator[Outcome]:
    """Each engine (built once per data document) decides every case, and explains those
    that say what their explanation lists."""
    for engine_name, build in engines.items():
        for data_name, document in data.items():
            subset = [c for c in cases if c.data == data_name]
            if not subset:
                continue
            engine = build(document)
            try:
                for case in subset:
                    decision = engine.decide(case.input)
                    problems = judge(case, decision)
                    if case.explain:
                        fired = explain(engine, case.input)["fired"]
                        problems += judge_explanation(case, fired)
                    yield Outcome(case, engine_name, decision, problems)
            finally:
                engine.close()
