"""The alerting and recording rules in deploy/prometheus are valid and behave as their unit
tests say.

promtool is Prometheus's own checker: Debian's `prometheus` package installs it (see
deploy/prometheus/README.md). A missing promtool fails the test rather than skipping it, so
CI cannot go green with the rules untested.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's `prometheus` package "
            "(apt-get install -y prometheus), which provides /usr/bin/promtool"
        )
    return found


def _run(promtool: str, *args: str) -> str:
    done = subprocess.run(
        [promtool, *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_rules_are_valid(promtool: str) -> None:
    output = _run(promtool, "check", "rules", "rules.yml", "recording.yml")
    assert "SUCCESS" in output and "FAILED" not in output


def test_rule_unit_tests_pass(promtool: str) -> None:
    output = _run(promtool, "test", "rules", "rules_test.yml")
    assert "SUCCESS" in output


def test_every_alert_has_a_unit_test() -> None:
    """An alert nobody tested is an alert nobody knows fires."""
    rules = (RULES_DIR / "rules.yml").read_text()
    tests = (RULES_DIR / "rules_test.yml").read_text()
    alerts = {
        line.split(":", 1)[1].strip()
        for line in rules.splitlines()
        if line.strip().startswith("- alert:")
    }
    assert alerts, "no alerts found in rules.yml"
    # Each alert's name is followed by its expectations: at least one test expects it
    # quiet (an empty list) and one expects it firing.
    blocks = tests.split("- eval_time:")[1:]
    quiet = {a for a in alerts for b in blocks if f"alertname: {a}\n" in b and "[]" in b}
    firing = {a for a in alerts for b in blocks if f"alertname: {a}\n" in b and "[]" not in b}
    assert alerts <= quiet, f"alerts never tested quiet: {sorted(alerts - quiet)}"
    assert alerts <= firing, f"alerts never tested firing: {sorted(alerts - firing)}"


def test_every_recording_rule_has_a_unit_test() -> None:
    """Each recorded series is checked for its values; one recorded per peer and overall
    (a rule labelled `peer: all`) for its overall value too."""
    rules = (RULES_DIR / "recording.yml").read_text()
    tests = (RULES_DIR / "rules_test.yml").read_text()
    blocks = rules.split("- record:")[1:]
    records = {b.split("\n", 1)[0].strip() for b in blocks}
    overall = {b.split("\n", 1)[0].strip() for b in blocks if "peer: all" in b}
    assert records, "no recording rules found in recording.yml"
    tested = {r for r in records if f"- expr: {r}\n" in tests}
    assert records <= tested, f"recording rules never tested: {sorted(records - tested)}"
    for record in overall:
        block = tests.split(f"- expr: {record}\n", 1)[1].split("- expr:", 1)[0]
        assert 'peer="all"' in block, f"{record}: its overall (peer=all) value is untested"
