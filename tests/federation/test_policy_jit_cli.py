"""`liaison policy jit add|revoke|list` as an operator runs it: on a data file, and on a
running node, which picks the change up without a restart."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.enrol import DEFAULT_POLICY_DIR
from node.local.federation import Federation
from node.policy.data import load_policy_data
from node.policy.revision import policy_revision
from tests.federation.helpers import ask, clone_node, first
from tests.federation.test_cli import liaison

EXAMPLE = DEFAULT_POLICY_DIR / "data" / "agreements.example.json"

TODAY = datetime.datetime.now(datetime.UTC).date()


def _day(offset: int) -> str:
    return (TODAY + datetime.timedelta(days=offset)).isoformat()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "agreements.json"
    shutil.copy(EXAMPLE, path)
    return path


def _add(data: Path, jit_id: str, *extra: str, case: str = "CASE-1") -> list[str]:
    return ["policy", "jit", "add", jit_id, *extra, "--case-reference", case, "--data", str(data)]


def _window(start: int = -10, end: int = 30) -> list[str]:
    return ["--valid-from", _day(start), "--valid-until", _day(end)]


MEMBERS = ["--member", "DE", "--member", "FR"]


def _jits(data: Path) -> dict[str, dict[str, object]]:
    return dict(json.loads(data.read_text())["jits"])


def test_add_list_revoke(data: Path) -> None:
    before = data.read_text()
    result = liaison(*_add(data, "JIT-NEW", *MEMBERS, *_window()))
    assert result.returncode == 0, result.stderr
    doc = load_policy_data(data)  # the node's own validator accepts the result
    assert doc["jits"]["JIT-NEW"] == {
        "members": ["DE", "FR"],
        "case_reference": "CASE-1",
        "valid_from": _day(-10),
        "valid_until": _day(30),
    }
    revision = policy_revision(DEFAULT_POLICY_DIR, doc)
    assert f"policy revision {revision}" in result.stdout
    # Everything else is kept byte for byte: the old text is a prefix and suffix of the new.
    after = data.read_text()
    cut = before.index('"JIT-2026-017"')
    end = before.index("}", cut) + 1
    assert after.startswith(before[:end]) and after.endswith(before[end:])
    assert '"members": ["DE", "FR"],' in after  # the file's own style: arrays inline

    listed = liaison("policy", "jit", "list", "--data", str(data))
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("JIT-NEW"))
    assert row.split() == ["JIT-NEW", "DE,FR", "CASE-1", _day(-10), "to", _day(30), "in", "force"]
    as_json = json.loads(liaison("policy", "jit", "list", "--json", "--data", str(data)).stdout)
    assert {"id": "JIT-NEW", "status": "in force"}.items() <= as_json[-1].items()

    revoked = liaison(
        "policy", "jit", "revoke", "JIT-NEW", "--reason", "team closed", "--data", str(data)
    )
    assert revoked.returncode == 0, revoked.stderr
    # The grant stays as the record of what it allowed; its window ended yesterday.
    assert _jits(data)["JIT-NEW"]["valid_until"] == _day(-1)
    assert "ended" in liaison("policy", "jit", "list", "--data", str(data)).stdout
    journal_text = (data.parent / "agreements.json.changes.jsonl").read_text()
    journal = [json.loads(line) for line in journal_text.splitlines()]
    assert [e["action"] for e in journal] == ["jit added", "jit ended"]
    assert journal[1]["reason"] == "team closed"
    assert journal[1]["revision_before"] == revision
    assert journal[1]["revision_after"] == policy_revision(
        DEFAULT_POLICY_DIR, load_policy_data(data)
    )


def test_revoking_a_grant_not_yet_begun_removes_it(data: Path) -> None:
    assert liaison(*_add(data, "LATER", *MEMBERS, *_window(0, 5))).returncode == 0
    result = liaison("policy", "jit", "revoke", "LATER", "--reason", "x", "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert "removed" in result.stdout
    assert data.read_text() == EXAMPLE.read_text()


def test_a_renewal_for_the_same_case_is_allowed(data: Path) -> None:
    assert liaison(*_add(data, "FIRST", *MEMBERS, *_window(-10, 5))).returncode == 0
    result = liaison(*_add(data, "RENEWED", *MEMBERS, *_window(6, 60)))
    assert result.returncode == 0, result.stderr
    assert set(_jits(data)) == {"JIT-2026-017", "FIRST", "RENEWED"}


def test_a_compact_file_and_a_file_without_jits(tmp_path: Path) -> None:
    data = tmp_path / "agreements.json"
    doc = json.loads(EXAMPLE.read_text())
    del doc["jits"]
    data.write_text(json.dumps(doc))
    assert liaison(*_add(data, "A", *MEMBERS, *_window())).returncode == 0
    assert liaison(*_add(data, "B", *MEMBERS, *_window(), case="CASE-2")).returncode == 0
    text = data.read_text()
    assert "\n" not in text
    assert list(json.loads(text)) == [*doc, "jits"]
    assert list(json.loads(text)["jits"]) == ["A", "B"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (_add(Path("X"), "JIT-2026-017", *MEMBERS, *_window(), case="C"), "already exists"),
        (_add(Path("X"), "N", "--member", "DE", "--member", "XX", *_window()), "'XX' is not"),
        (_add(Path("X"), "N", "--member", "de", "--member", "FR", *_window()), "'DE'?"),
        (_add(Path("X"), "N", *_window()), "member countries"),
        (_add(Path("X"), "N", "--member", "DE", *_window()), "at least 2"),
        (_add(Path("X"), "N", *MEMBERS, *_window(5, 4)), "is before valid_from"),
        (
            _add(
                Path("X"),
                "N",
                *MEMBERS,
                "--valid-from",
                "2026-02-30",
                "--valid-until",
                "2026-12-31",
            ),
            "not a real calendar date",
        ),
        (
            _add(
                Path("X"), "N", *MEMBERS, "--valid-from", "1.1.2026", "--valid-until", "2026-12-31"
            ),
            "is not an ISO date",
        ),
        (_add(Path("X"), "bad id", *MEMBERS, *_window()), "is not a JIT id"),
        (
            _add(
                Path("X"),
                "N",
                *MEMBERS,
                "--valid-from",
                "2026-06-01",
                "--valid-until",
                "2026-07-01",
                case="JIT-2026-017",
            ),
            "overlapping",
        ),
        (_add(Path("X"), "N", *MEMBERS, *_window(), case=""), "must not be empty"),
        (["policy", "jit", "revoke", "NOPE", "--reason", "r", "--data", "X"], "no JIT 'NOPE'"),
        (["policy", "jit", "revoke", "JIT-2026-017", "--reason", " ", "--data", "X"], "--reason"),
    ],
)
def test_refusals_leave_the_file_byte_identical(data: Path, args: list[str], says: str) -> None:
    before = data.read_bytes()
    result = liaison(*[str(data) if a == "X" else a for a in args])
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert data.read_bytes() == before
    assert not (data.parent / "agreements.json.changes.jsonl").exists()


def test_revoking_an_ended_grant_is_refused(data: Path) -> None:
    assert liaison(*_add(data, "OLD", *MEMBERS, *_window(-30, -2))).returncode == 0
    before = data.read_bytes()
    result = liaison("policy", "jit", "revoke", "OLD", "--reason", "r", "--data", str(data))
    assert result.returncode == 2
    assert "already ended" in result.stderr
    assert data.read_bytes() == before


def test_concurrent_adds_wait_for_the_lock_and_lose_nothing(data: Path) -> None:
    lock = os.open(data.with_name(".agreements.json.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        runs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "node.cli",
                    *_add(data, f"P{i}", *MEMBERS, *_window(), case=f"CASE-{i}"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        time.sleep(3)  # ample time to start Python and reach the lock
        assert all(run.poll() is None for run in runs), "an edit did not wait for the lock"
        assert data.read_text() == EXAMPLE.read_text()
    finally:
        os.close(lock)
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
    assert {f"P{i}" for i in range(4)} <= set(_jits(data))


def test_jit_add_changes_a_running_nodes_revision_without_restart(
    fed: Federation, tmp_path: Path
) -> None:
    nl = clone_node(fed, "NL-KLPD", tmp_path / "NL-KLPD", watch="true", watch_interval_ms="100")
    nl.start()
    try:
        nl.wait_ready()
        de = fed.nodes["DE-BKA"].identity()
        vin = str(first(fed, "NL-KLPD", "vehicle")["vin"])

        def revision() -> str:
            answer = ask(de, fed, "NL-KLPD", "vehicle", [("vin", vin)], endpoint=nl.endpoint)
            return answer.policy_revision

        old = revision()
        config = str(nl.folder / "node.toml")
        result = liaison(
            "policy",
            "jit",
            "add",
            "JIT-LIVE",
            "--member",
            "NL",
            "--member",
            "DE",
            "--case-reference",
            "CASE-LIVE",
            *_window(),
            "--config",
            config,
        )
        assert result.returncode == 0, result.stderr
        new = result.stdout.split("policy revision ")[1].split()[0]
        assert new != old and f"(was {old})" in result.stdout
        deadline = time.monotonic() + 15
        while revision() != new:
            assert time.monotonic() < deadline, "the node did not pick up the new revision"
            time.sleep(0.1)
        assert nl.process is not None and nl.process.poll() is None  # the same process
        assert f"-> {new}" in (nl.folder / "node.log").read_text()
    finally:
        nl.stop()
