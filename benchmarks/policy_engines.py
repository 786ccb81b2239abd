"""Choose the in-process Rego engine by measurement (policies/ENGINE.md).

Correctness against OPA semantics comes first, so every candidate runs the same battery of
small Rego checks (expected values are what OPA v1 returns) plus the node's own decision
policy; speed comes last, in µs per decision, each figure beside its ratio to a plain-Python
rendering of the same policy timed in the same run.

Both regorus builds on PyPI install the module name ``regorus``, so each candidate runs in
its own subprocess with its own ``sys.path``: give a second build with
``--regorus-dir NAME=DIR`` (e.g. after ``pip install --target DIR celine-regorus``).

    python benchmarks/policy_engines.py [--regorus-dir celine-regorus=/tmp/celine]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from node.policy.revision import policy_files as node_policy_files
from policy_engine_cases import (
    ALLOW_INPUT,
    CASES,
    DATA,
    DECISION_INPUTS,
    DENY_INPUT,
    ROOT,
    expected_decision,
)

# The whole library, as the node loads it: the entry point calls into base/ and profiles/.
POLICY_DIR = ROOT / "policies"
ENTRY = "data.liaison.exchange.decision"
MARK = "@@report "


# --------------------------------------------------------------------------- worker side


def policy_files() -> list[tuple[str, str]]:
    """(name, text) of every file the node loads, named by their path under POLICY_DIR."""
    return [
        (p.relative_to(POLICY_DIR).as_posix(), p.read_text()) for p in node_policy_files(POLICY_DIR)
    ]


def _adapter(kind: str) -> tuple[str, Callable[[str, Any, Any], Any], Callable[[], Any]]:
    """Returns (distribution, evaluate(modules_text, data, input) -> value, decide_factory)."""
    if kind == "regopy":
        import regopy

        def run_regopy(module: str, data: Any, policy_input: Any) -> Any:
            interp = regopy.Interpreter()
            interp.add_module("m.rego", module)
            interp.add_data(data)
            interp.set_input(policy_input)
            out = interp.query("x = data.t.res")
            if not out.ok():
                raise RuntimeError(str(out))
            return json.loads(str(out.binding("x")))

        def regopy_decider() -> Callable[[Any], Any]:
            interp = regopy.Interpreter()
            for name, text in policy_files():
                interp.add_module(name, text)
            interp.add_data(DATA)
            bundle = interp.build(ENTRY)  # compiled once, as a node would (plain query()
            # recompiles per call: ~10x slower)

            def decide(policy_input: Any) -> Any:
                interp.set_input(policy_input)
                # Read the Output while it is alive: regopy 1.5.2 segfaulted on
                # str(query(...).binding(...)) once the Output had been collected.
                out = interp.query_bundle(bundle)
                return json.loads(str(out))["expressions"][0]

            return decide

        return "regopy", run_regopy, regopy_decider

    import regorus

    dist = next(
        (
            d.metadata["Name"]
            for d in importlib.metadata.distributions()
            if d.files
            and any(str(f).startswith("regorus/") for f in d.files)
            and Path(str(d.locate_file("regorus"))).resolve()
            == Path(regorus.__file__).resolve().parent
        ),
        "regorus?",
    )

    if kind == "regorus-rvm":
        rvm: Any = regorus  # only some builds ship the RVM
        if not hasattr(rvm, "Program"):
            raise SystemExit(f"{dist} has no RVM")

        def run_rvm(module: str, data: Any, policy_input: Any) -> Any:
            program = rvm.Program.compile_from_modules(
                json.dumps(data), [("m.rego", module)], ["data.t.res"]
            )
            vm = rvm.Rvm()
            vm.load_program(program)
            vm.set_data_json(json.dumps(data))
            vm.set_input_json(json.dumps(policy_input))
            return json.loads(vm.execute())

        def rvm_decider() -> Callable[[Any], Any]:
            program = rvm.Program.compile_from_modules(json.dumps(DATA), policy_files(), [ENTRY])
            vm = rvm.Rvm()
            vm.load_program(program)
            vm.set_data_json(json.dumps(DATA))

            def decide(policy_input: Any) -> Any:
                vm.set_input_json(json.dumps(policy_input))
                return json.loads(vm.execute())

            return decide

        return dist + " (RVM)", run_rvm, rvm_decider

    def run_regorus(module: str, data: Any, policy_input: Any) -> Any:
        engine = regorus.Engine()
        engine.add_policy("m.rego", module)
        engine.add_data(data)
        engine.set_input_json(json.dumps(policy_input))
        return json.loads(engine.eval_rule_as_json("data.t.res"))

    def regorus_decider() -> Callable[[Any], Any]:
        engine = regorus.Engine()
        for name, text in policy_files():
            engine.add_policy(name, text)
        engine.add_data(DATA)

        def decide(policy_input: Any) -> Any:
            engine.set_input_json(json.dumps(policy_input))
            return json.loads(engine.eval_rule_as_json(ENTRY))

        return decide

    return dist, run_regorus, regorus_decider


def _time_us(fn: Callable[[], Any], rounds: int = 5, number: int = 2000) -> float:
    """Best of several rounds: the least-disturbed figure is the engine's own cost."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def worker(kind: str) -> dict[str, Any]:
    dist, evaluate, make_decider = _adapter(kind)
    version = "?"
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        version = importlib.metadata.version(dist.split(" ")[0])
    results: dict[str, dict[str, Any]] = {}
    for case in CASES:
        module = f"package t\n\n{case.rules}\n\nres := [v | v := {case.expr}]\n"
        try:
            got = evaluate(module, {}, case.input if case.input is not None else {})
        except BaseException as exc:  # pyo3 panics are BaseException
            got = f"error: {type(exc).__name__}: {str(exc)[:120]}"
        results[case.name] = {"ok": json.dumps(got) == json.dumps(case.expected), "got": got}
    # Upstream notes: how an API the node does not use behaves. Reported beside the battery,
    # never counted as a wrong answer of the node's path.
    notes: dict[str, dict[str, Any]] = {}
    if kind == "regorus":
        # The dict API (add_data/eval_rule) turns 5 into 5.0 in this build. The node uses
        # the JSON API (add_data_json/set_input_json/eval_rule_as_json), which keeps 5 an
        # int: tests/unit/test_policy_integers.py holds it to that, and to OPA's answers.
        import regorus

        engine = regorus.Engine()
        engine.add_policy("m.rego", "package t\n\nn := data.n\n")
        engine.add_data({"n": 5})
        got = engine.eval_rule("data.t.n")
        notes["python_dict_api_int_stays_int"] = {
            "ok": type(got) is int,
            "got": got,
            "node": "the node uses the JSON API, which returns 5",
        }
    timings: dict[str, float] = {}
    try:
        decide = make_decider()
        for name, policy_input in DECISION_INPUTS.items():
            got = decide(policy_input)
            want = expected_decision(policy_input)
            same = json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
            results[name] = {"ok": same, "got": got}
        timings["allow"] = _time_us(lambda: decide(ALLOW_INPUT))
        timings["deny"] = _time_us(lambda: decide(DENY_INPUT))
    except BaseException as exc:
        results["decision_policy"] = {"ok": False, "got": f"error: {exc!s:.160}"}
    return {
        "engine": dist,
        "version": version,
        "results": results,
        "notes": notes,
        "us": timings,
    }


# --------------------------------------------------------------------------- parent side


def _run_worker(kind: str, path: str | None) -> dict[str, Any] | None:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        print(f"  {kind} ({path or 'system'}): unavailable: {proc.stderr.strip()[-200:]}")
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    report: dict[str, Any] = json.loads(lines[-1][len(MARK) :])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--regorus-dir",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another regorus build installed with pip --target DIR",
    )
    args = parser.parse_args(argv)
    if args.worker:
        # Some engines print diagnostics on stdout: the report goes on a marked last line.
        print(MARK + json.dumps(worker(args.worker)))
        return 0

    baseline_allow = _time_us(lambda: expected_decision(ALLOW_INPUT))
    baseline_deny = _time_us(lambda: expected_decision(DENY_INPUT))
    print(
        f"baseline: the policy in plain Python: allow {baseline_allow:.1f} µs, "
        f"deny {baseline_deny:.1f} µs (ratio 1.0)"
    )
    runs: list[tuple[str, str | None]] = [
        ("regopy", None),
        ("regorus", None),
        ("regorus-rvm", None),
    ]
    for spec in args.regorus_dir:
        path = spec.split("=", 1)[-1]
        runs += [("regorus", path), ("regorus-rvm", path)]
    reports = [r for kind, path in runs if (r := _run_worker(kind, path)) is not None]
    names = list(
        dict.fromkeys(
            [c.name for c in CASES]
            + list(DECISION_INPUTS)
            + [n for r in reports for n in r["results"]]
        )
    )
    width = max(len(n) for n in names)
    print()
    print(
        "semantics (OPA v1 expected)".ljust(width), *(r["engine"][:24].ljust(24) for r in reports)
    )
    for name in names:
        cells = []
        for report in reports:
            res: Mapping[str, Any] | None = report["results"].get(name)
            if res is None:
                cells.append("n/a".ljust(24))
            else:
                cells.append(
                    ("ok" if res["ok"] else f"WRONG {json.dumps(res['got'])}")[:24].ljust(24)
                )
        print(name.ljust(width), *cells)
    print()
    for report in reports:
        wrong = sorted(n for n, r in report["results"].items() if not r["ok"])
        us = report["us"]
        speed = (
            f"allow {us['allow']:.1f} µs ({us['allow'] / baseline_allow:.1f}x), "
            f"deny {us['deny']:.1f} µs ({us['deny'] / baseline_deny:.1f}x)"
            if us
            else "no timing"
        )
        print(
            f"{report['engine']} {report['version']}: {len(wrong)} wrong "
            f"{wrong if wrong else ''}; {speed}"
        )
    notes = [(r["engine"], name, n) for r in reports for name, n in r.get("notes", {}).items()]
    if notes:
        print("\nupstream API notes (APIs the node does not use; not counted as wrong above):")
        for engine, name, note in notes:
            verdict = "ok" if note["ok"] else f"differs from OPA: got {json.dumps(note['got'])}"
            print(f"  {engine}: {name}: {verdict} ({note['node']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
