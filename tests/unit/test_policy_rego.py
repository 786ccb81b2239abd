"""Each Rego unit test is one pytest case, run by the embedded engine.

`opa test` runs the same tests in `make lint`; here the embedded engine must pass them
too, so that the in-process engine (which decides for a node configured without OPA, and
tests a policy before a node reloads it) agrees with OPA on every one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.policy.rego_tests import RegoTestResult, run_rego_tests

POLICIES = Path(__file__).resolve().parents[2] / "policies"
RESULTS = run_rego_tests(POLICIES)


def test_rego_tests_were_found() -> None:
    assert len(RESULTS) >= 20


@pytest.mark.parametrize("result", RESULTS, ids=[r.test_id for r in RESULTS])
def test_rego(result: RegoTestResult) -> None:
    assert result.passed, result.detail


def test_false_rego_test_is_reported_failing(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n\nx := 1\n")
    (tmp_path / "p_test.rego").write_text(
        "package p_test\n\nimport data.p\n\n"
        "test_true if p.x == 1\n\n"
        "test_false if p.x == 2\n\n"
        "test_error if 1 / 0 == 1\n"
    )
    results = {r.name: r for r in run_rego_tests(tmp_path)}
    assert set(results) == {"test_true", "test_false", "test_error"}
    assert results["test_true"].passed
    assert not results["test_false"].passed
    assert not results["test_error"].passed
    assert "divide by zero" in results["test_error"].detail


def test_non_test_files_are_not_run(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n\ntest_looks_like_a_test := false\n")
    assert run_rego_tests(tmp_path) == []
