"""Hot reload: a good change is picked up, a bad one never replaces the policy in force.

Every test runs on its own policy folder and data file in tmp_path (a small policy written
here, with its own Rego unit tests), so it does not depend on the shipped policies/.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from node.policy.cache import CachingEngine
from node.policy.data import PolicyDataError, load_policy_data
from node.policy.decision import Decision, PolicyEngine, PolicyUnavailable
from node.policy.embedded import EmbeddedEngine, PolicyLoadError
from node.policy.reload import (
    PolicyTestsFailed,
    ReloadingEngine,
    ReloadResult,
    files_signature,
    reload_counter,
)

POLICY = """\
package liaison.exchange

default allow := false

allow if {
	agreement := data.agreements[input.requester.node_id]
	input.request.category in agreement.categories
}

decision := {"allow": allow, "reasons": reasons, "obligations": obligations}

reasons := [] if allow

reasons := ["category_not_agreed"] if not allow

obligations := {"max_results": 5} if allow

obligations := {} if not allow
"""

POLICY_TEST = """\
package liaison.exchange_test

import data.liaison.exchange

ask := {"requester": {"node_id": "FR-PN"}, "request": {"category": "vehicle"}}

test_allowed_when_agreed if {
	d := exchange.decision with input as ask
		with data.agreements as {"FR-PN": {"categories": ["vehicle"]}}
	d.allow == true
}

test_denied_when_not_agreed if {
	d := exchange.decision with input as ask
		with data.agreements as {"FR-PN": {"categories": ["firearm"]}}
	d.reasons == ["category_not_agreed"]
}
"""

INPUT: dict[str, Any] = {
    "version": 1,
    "requester": {"node_id": "FR-PN", "status": "active"},
    "request": {"method": "Match", "category": "vehicle"},
}

TIMEOUT = 10.0  # bounded waits: generous, only reached when something is broken


def _agreements(*categories: str) -> dict[str, Any]:
    return {
        "agreements": {
            "FR-PN": {
                "categories": list(categories),
                "purposes": ["criminal_investigation"],
                "methods": ["Match"],
                "legal_bases": ["none"],
                "valid_from": "2025-01-01",
                "valid_until": "2030-12-31",
            }
        }
    }


def _replace(path: Path, text: str) -> None:
    """Write as an operator's tooling should: whole file at once (rename into place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Setup:
    policy_dir: Path
    data: Path
    reloads: list[tuple[bool, str]]

    @property
    def rego(self) -> Path:
        return self.policy_dir / "liaison" / "exchange" / "decision.rego"

    def write_data(self, doc: object) -> None:
        _replace(self.data, json.dumps(doc, indent=2) + "\n")

    def build(self) -> PolicyEngine:
        return EmbeddedEngine(self.policy_dir, load_policy_data(self.data))

    def engine(self, **kwargs: Any) -> ReloadingEngine:
        def record(ok: bool, detail: str) -> None:
            self.reloads.append((ok, detail))

        kwargs.setdefault("on_reload", record)
        return ReloadingEngine(
            self.build, policy_dir=self.policy_dir, data_path=self.data, **kwargs
        )


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    policy_dir = tmp_path / "policies"
    (policy_dir / "liaison" / "exchange").mkdir(parents=True)
    (policy_dir / "liaison" / "exchange" / "decision.rego").write_text(POLICY)
    (policy_dir / "liaison" / "exchange" / "decision_test.rego").write_text(POLICY_TEST)
    s = Setup(policy_dir, tmp_path / "agreements.json", [])
    s.write_data(_agreements("vehicle"))
    return s


@pytest.fixture
def engine(setup: Setup) -> Iterator[ReloadingEngine]:
    e = setup.engine()
    yield e
    e.close()


# --- reload() --------------------------------------------------------------------------------


def test_a_data_change_is_picked_up(setup: Setup, engine: ReloadingEngine) -> None:
    before = engine.revision
    assert engine.decide(INPUT).allow
    setup.write_data(_agreements("firearm"))
    result = engine.reload()
    assert result.ok and result.changed
    assert result.previous == before != result.revision == engine.revision
    decision = engine.decide(INPUT)
    assert not decision.allow
    assert decision.reasons == ("category_not_agreed",)
    assert decision.revision == engine.revision
    assert setup.reloads == [(True, engine.revision)]


def test_a_rego_change_is_picked_up(setup: Setup, engine: ReloadingEngine) -> None:
    assert engine.decide(INPUT).obligations == {"max_results": 5}
    setup.rego.write_text(POLICY.replace('{"max_results": 5}', '{"max_results": 2}'))
    assert engine.reload().changed
    assert engine.decide(INPUT).obligations == {"max_results": 2}


def test_reloading_unchanged_files_keeps_the_revision(engine: ReloadingEngine) -> None:
    before = engine.revision
    result = engine.reload()
    assert result.ok and not result.changed
    assert result.revision == before == engine.revision


def test_broken_rego_keeps_the_old_policy_deciding(
    setup: Setup, engine: ReloadingEngine, caplog: pytest.LogCaptureFixture
) -> None:
    before = engine.revision
    setup.rego.write_text(POLICY.replace("default allow := false", "default allow := "))
    with caplog.at_level(logging.ERROR, logger="liaison.policy"):
        result = engine.reload("test")
    assert not result.ok and not result.changed
    assert result.revision == result.previous == before == engine.revision
    assert "liaison/exchange/decision.rego" in result.error
    assert engine.decide(INPUT).allow  # still the old policy
    assert setup.reloads == [(False, result.error)]
    [record] = [r for r in caplog.records if r.name == "liaison.policy"]
    assert record.levelno == logging.ERROR
    assert "liaison/exchange/decision.rego" in record.getMessage()
    assert before in record.getMessage()


def test_a_failing_rego_unit_test_keeps_the_old_policy(
    setup: Setup, engine: ReloadingEngine
) -> None:
    before = engine.revision
    # The new policy compiles and would deny everything; its own test catches it.
    setup.rego.write_text(
        POLICY.replace("input.request.category in", "false\n\tinput.request.category in")
    )
    result = engine.reload()
    assert not result.ok
    assert "Rego unit tests failed" in result.error
    assert "liaison/exchange/decision_test.rego::test_allowed_when_agreed" in result.error
    assert "test_denied_when_not_agreed" not in result.error  # that one still passes
    assert engine.revision == before
    assert engine.decide(INPUT).allow


def test_a_rego_test_file_that_does_not_compile_keeps_the_old_policy(
    setup: Setup, engine: ReloadingEngine
) -> None:
    (setup.policy_dir / "liaison" / "exchange" / "extra_test.rego").write_text(
        "package extra_test\n\ntest_x if {\n"
    )
    result = engine.reload()
    assert not result.ok
    assert "extra_test.rego" in result.error


def test_schema_invalid_data_keeps_the_old_policy_and_names_path_and_line(
    setup: Setup, engine: ReloadingEngine
) -> None:
    before = engine.revision
    setup.write_data(_agreements("travle_document"))
    result = engine.reload()
    assert not result.ok
    # json.dumps(indent=2): the category is the first item of the list on line 5.
    assert f"{setup.data}:5:9: agreements.FR-PN.categories[0]: 'travle_document'" in result.error
    assert "(did you mean 'travel_document'?)" in result.error
    assert engine.revision == before
    assert engine.decide(INPUT).allow


def test_a_missing_data_file_keeps_the_old_policy(setup: Setup, engine: ReloadingEngine) -> None:
    setup.data.unlink()
    result = engine.reload()
    assert not result.ok
    assert f"policy data file {setup.data} not found" in result.error
    assert engine.decide(INPUT).allow


def test_a_fix_after_a_failure_is_loaded(setup: Setup, engine: ReloadingEngine) -> None:
    setup.write_data({"agreements": {"FR-PN": {}}})
    assert not engine.reload().ok
    setup.write_data(_agreements("firearm"))
    assert engine.reload().ok
    assert not engine.decide(INPUT).allow
    assert [ok for ok, _ in setup.reloads] == [False, True]


def test_reloads_are_counted_in_prometheus(setup: Setup) -> None:
    registry = CollectorRegistry()
    engine = setup.engine(on_reload=reload_counter(registry))

    def count(result: str) -> float | None:
        return registry.get_sample_value("liaison_policy_reloads_total", {"result": result})

    assert (count("success"), count("failure")) == (0.0, 0.0)
    engine.reload()
    setup.write_data({"agreements": []})
    engine.reload()
    engine.reload()
    assert (count("success"), count("failure")) == (1.0, 2.0)
    engine.close()


def test_a_failing_callback_does_not_fail_the_reload(setup: Setup) -> None:
    def broken(ok: bool, detail: str) -> None:
        raise RuntimeError("metrics down")

    engine = setup.engine(on_reload=broken)
    setup.write_data(_agreements("firearm"))
    assert engine.reload().ok
    assert not engine.decide(INPUT).allow
    engine.close()


# --- start-up --------------------------------------------------------------------------------


def test_bad_data_at_start_up_raises(setup: Setup) -> None:
    setup.write_data({"agreements": {"FR-PN": {"categories": ["vehicle"]}}})
    with pytest.raises(PolicyDataError, match=r"missing required keys"):
        setup.engine()


def test_broken_rego_at_start_up_raises(setup: Setup) -> None:
    setup.rego.write_text("package liaison.exchange\n\nallow if {\n")
    with pytest.raises(PolicyLoadError, match=r"decision\.rego"):
        setup.engine()


def test_failing_rego_tests_stop_start_up_unless_told_otherwise(setup: Setup) -> None:
    setup.rego.write_text(POLICY.replace("default allow := false", "default allow := true"))
    with pytest.raises(PolicyTestsFailed, match="test_denied_when_not_agreed") as info:
        setup.engine()
    assert isinstance(info.value, PolicyLoadError)  # the CLI prints it as an operator error
    engine = setup.engine(test_on_start=False)
    assert engine.name == "embedded"
    engine.close()


# --- the decision cache ----------------------------------------------------------------------


def test_the_cache_never_answers_from_an_older_revision(
    setup: Setup, engine: ReloadingEngine
) -> None:
    cache = CachingEngine(engine)
    first = cache.decide(INPUT)
    assert first.allow and cache.decide(INPUT) is first  # cached
    assert cache.hits == 1
    old = engine.revision

    setup.write_data(_agreements("firearm"))  # allow -> deny
    assert engine.reload().changed
    assert cache.revision == engine.revision != old
    for _ in range(3):
        decision = cache.decide(INPUT)
        assert not decision.allow
        assert decision.revision == engine.revision
    assert len(cache) == 1  # the old revision's entry is gone

    setup.write_data(_agreements("travel_document"))  # a broken reload changes nothing
    setup.rego.write_text("package liaison.exchange\n\nallow if {\n")
    assert not engine.reload().ok
    assert not cache.decide(INPUT).allow
    cache.close()


# --- in-flight calls and closing -------------------------------------------------------------


class GateEngine:
    """Decides only when released, so a swap can happen mid-decision."""

    name = "gate"
    waits_on_io = False

    def __init__(self, revision: str) -> None:
        self.revision = revision
        self.closed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        self.entered.set()
        assert self.release.wait(TIMEOUT)
        return Decision(allow=True, revision=self.revision)

    def close(self) -> None:
        self.closed = True


def test_in_flight_decisions_finish_on_the_engine_they_started_on(setup: Setup) -> None:
    engines = [GateEngine("r1"), GateEngine("r2")]
    queue = list(engines)
    engine = ReloadingEngine(
        lambda: queue.pop(0), policy_dir=setup.policy_dir, data_path=setup.data
    )
    old, new = engines
    answers: list[Decision] = []
    caller = threading.Thread(target=lambda: answers.append(engine.decide(INPUT)))
    caller.start()
    assert old.entered.wait(TIMEOUT)

    assert engine.reload().changed  # swapped while a decision is running on the old one
    assert engine.revision == "r2"
    assert not old.closed  # still in use

    old.release.set()
    caller.join(TIMEOUT)
    assert answers[0].revision == "r1"
    assert old.closed  # closed by the last call that used it
    new.release.set()
    assert engine.decide(INPUT).revision == "r2"
    engine.close()
    assert new.closed


def test_a_closed_engine_refuses_to_decide_or_reload(setup: Setup) -> None:
    engine = setup.engine()
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(PolicyUnavailable):
        engine.decide(INPUT)
    result = engine.reload()
    assert not result.ok
    assert "closed" in result.error
    assert setup.reloads == []


def test_a_reload_never_leaks_an_engine_across_threads(setup: Setup) -> None:
    """regorus engines are thread-bound; one dropped on the wrong thread is leaked with an
    'unsendable' error. Builds happen off the loop, decisions on it: none may cross."""
    seen: list[str] = []
    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        seen.append(str(unraisable.exc_value))

    async def main() -> None:
        engine = setup.engine()
        for categories in (("firearm",), ("vehicle",), ("firearm",)):
            engine.decide(INPUT)
            setup.write_data(_agreements(*categories))
            assert (await engine.areload()).changed
        engine.decide(INPUT)
        engine.close()

    sys.unraisablehook = hook
    try:
        asyncio.run(main())  # also shuts the default executor down
        gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    assert seen == []


# --- triggers: watching the files, SIGHUP ------------------------------------------------------


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_the_signature_covers_every_policy_file_and_the_data(setup: Setup) -> None:
    before = files_signature(setup.policy_dir, setup.data)
    names = {Path(entry[0]).name for entry in before}
    assert names == {"decision.rego", "decision_test.rego", "agreements.json"}
    setup.write_data(_agreements("vehicle", "firearm"))
    assert files_signature(setup.policy_dir, setup.data) != before


def test_the_signature_notices_a_vanished_file(setup: Setup) -> None:
    setup.data.unlink()
    entries = dict((e[0], e[1:]) for e in files_signature(setup.policy_dir, setup.data))
    assert entries[str(setup.data)] == (-1, -1, -1)


def test_the_watcher_picks_up_changes_and_does_not_retry_a_broken_file(setup: Setup) -> None:
    async def main() -> None:
        engine = setup.engine()
        watcher = asyncio.create_task(engine.watch(0.05))
        try:
            first = engine.revision
            setup.write_data(_agreements("firearm"))
            await _until(lambda: engine.revision != first, "the data change")
            assert not engine.decide(INPUT).allow

            second = engine.revision
            setup.rego.write_text(POLICY.replace('{"max_results": 5}', '{"max_results": 1}'))
            setup.write_data(_agreements("vehicle"))
            await _until(lambda: engine.revision != second, "the Rego change")
            await _until(lambda: engine.decide(INPUT).allow, "the policy and data together")
            assert engine.decide(INPUT).obligations == {"max_results": 1}

            third = engine.revision
            setup.write_data({"agreements": {"fr-pn": {}}})
            await _until(lambda: any(not ok for ok, _ in setup.reloads), "the failed reload")
            assert engine.revision == third
            failures = [ok for ok, _ in setup.reloads].count(False)
            await asyncio.sleep(0.3)  # six intervals: a broken file is reported once
            assert [ok for ok, _ in setup.reloads].count(False) == failures
            assert not watcher.done()
        finally:
            watcher.cancel()
            with pytest.raises(asyncio.CancelledError):
                await watcher
            engine.close()

    asyncio.run(main())


def test_the_watcher_refuses_a_non_positive_interval(engine: ReloadingEngine) -> None:
    with pytest.raises(ValueError, match="positive"):
        asyncio.run(engine.watch(0))


def test_sighup_reloads(setup: Setup) -> None:
    before_handler = signal.getsignal(signal.SIGHUP)

    async def main() -> ReloadResult | None:
        engine = setup.engine()
        uninstall = engine.install_sighup()
        try:
            first = engine.revision
            setup.write_data(_agreements("firearm"))
            os.kill(os.getpid(), signal.SIGHUP)
            await _until(lambda: engine.revision != first, "the SIGHUP reload")
            assert not engine.decide(INPUT).allow
            assert setup.reloads == [(True, engine.revision)]
        finally:
            uninstall()
            engine.close()
        return None

    asyncio.run(main())
    assert signal.getsignal(signal.SIGHUP) == before_handler


def test_concurrent_triggers_run_one_after_the_other(setup: Setup) -> None:
    async def main() -> list[ReloadResult]:
        engine = setup.engine()
        setup.write_data(_agreements("firearm"))
        try:
            return list(await asyncio.gather(*(engine.areload(str(i)) for i in range(3))))
        finally:
            engine.close()

    results = asyncio.run(main())
    assert all(r.ok for r in results)
    assert [r.changed for r in results] == [True, False, False]
    assert results[1].previous == results[0].revision
