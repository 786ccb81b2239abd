"""A running node picks up a changed policy (file watch or SIGHUP), and keeps the old one
when the new one is broken."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import pytest

from federation.errors import PeerRefused
from node.local.federation import Federation, NodeHandle
from tests.federation.helpers import ask, clone_node, first, scrape


def _until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def _vin_query(fed: Federation, nl: NodeHandle) -> Callable[[], str]:
    de = fed.nodes["DE-BKA"].identity()
    vin = str(first(fed, "NL-KLPD", "vehicle")["vin"])

    def outcome() -> str:
        try:
            answer = ask(de, fed, "NL-KLPD", "vehicle", [("vin", vin)], endpoint=nl.endpoint)
            return "hit" if answer.hit else "no-hit"
        except PeerRefused as exc:
            return ",".join(exc.reasons)

    return outcome


class _Watch(TypedDict, total=False):
    """[policy] keys for `clone_node`, typed by name: a plain dict[str, str] could as well be
    meant for its `trust`, `audit` or `witness` sections."""

    watch: str
    watch_interval_ms: str


@pytest.mark.parametrize("trigger", ["watch", "sighup"])
def test_changed_agreements_take_effect_and_broken_ones_are_refused(
    fed: Federation, tmp_path: Path, trigger: str
) -> None:
    watch: _Watch = {"watch": "true", "watch_interval_ms": "100"} if trigger == "watch" else {}
    nl = clone_node(fed, "NL-KLPD", tmp_path / "NL-KLPD", **(watch or {"watch": "false"}))
    nl.start()
    try:
        nl.wait_ready()
        outcome = _vin_query(fed, nl)
        assert outcome() == "hit"

        def reload() -> None:
            if trigger == "sighup":
                assert nl.process is not None
                nl.process.send_signal(signal.SIGHUP)

        agreements = nl.folder / "agreements.json"
        data = json.loads(agreements.read_text())
        data["agreements"]["DE-BKA"]["categories"] = ["firearm"]
        agreements.write_text(json.dumps(data))
        reload()
        _until(lambda: outcome() == "category_not_agreed")
        assert scrape(nl, "liaison_policy_reloads_total", {"result": "success"}) == 1

        # A typo'd category is refused by the schema: the last good policy stays in force.
        data["agreements"]["DE-BKA"]["categories"] = ["vehicle", "vehicel"]
        agreements.write_text(json.dumps(data, indent=1))
        reload()
        _until(lambda: scrape(nl, "liaison_policy_reloads_total", {"result": "failure"}) == 1)
        assert outcome() == "category_not_agreed"
        assert "vehicel" in (nl.folder / "node.log").read_text()
    finally:
        nl.stop()
