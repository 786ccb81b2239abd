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
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.policy.decision import Decision, PolicyEngine


class CorpusError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    source: str
    data: str
    input: Mapping[str, Any]
    expect: Mapping[str, Any]


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
            cases.append(Case(name, where, data_name, build_input(spec, bases, where), expect))
    if not cases:
        raise CorpusError(f"{folder}: no cases found under cases/")
    return data, cases


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
    """Each engine (built once per data document) decides every case."""
    for engine_name, build in engines.items():
        for data_name, document in data.items():
            subset = [c for c in cases if c.data == data_name]
            if not subset:
                continue
            engine = build(document)
            try:
                for case in subset:
                    decision = engine.decide(case.input)
                    yield Outcome(case, engine_name, decision, judge(case, decision))
            finally:
                engine.close()
