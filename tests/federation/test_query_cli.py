"""`liaison query match` as an investigator runs it, against real nodes: --peers and --all,
the JSON outputs, the exit status that tells "all answered" from "some did not" from a
usage error, and the batch mode (--file/--out) resumed after Ctrl-C without asking again
what it already has."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.local.demo import AGREEMENTS
from node.local.federation import Federation, build_federation

ASKER, OWNER, OTHER, DOWN = "DE-BKA", "FR-DGPN", "NL-KLPD", "IT-CC"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """FR-DGPN and NL-KLPD running; IT-CC listed but never started (it refuses connections);
    DE-BKA only asks."""
    fed = build_federation(
        tmp_path_factory.mktemp("query"), (ASKER, OWNER, OTHER, DOWN), AGREEMENTS, records=200
    )
    running = [fed.nodes[OWNER], fed.nodes[OTHER]]
    try:
        for node in running:
            node.start()
        for node in running:
            node.wait_ready()
        yield fed
    finally:
        for node in running:
            node.stop()


def match_args(fed: Federation, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "node.cli",
        "query",
        "match",
        "--config",
        str(fed.nodes[ASKER].config_path),
        "--purpose",
        "criminal_investigation",
        *args,
    ]


def match(fed: Federation, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        match_args(fed, *args), capture_output=True, text=True, timeout=120, check=False
    )


def documents(fed: Federation, node: str, n: int) -> list[str]:
    rows = fed.nodes[node].rows
    return [str(r["document_number"]) for r in rows if r["category"] == "travel_document"][:n]


def audited(fed: Federation, node: str, case: str) -> list[dict[str, Any]]:
    log = fed.nodes[node].folder / "audit.log"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return [e for e in entries if e["case_reference"] == case and e["peer"] == ASKER]


def test_peers_named_with_commas_all_answer_exit_0_jsonl_as_they_come(fed: Federation) -> None:
    [doc] = documents(fed, OWNER, 1)
    result = match(
        fed,
        "--peers",
        f"{OWNER},{OTHER}",
        "--category",
        "travel_document",
        "--document-number",
        doc,
        "--jsonl",
    )
    assert result.returncode == 0, result.stderr
    assert "asking" not in result.stderr  # not a terminal: no progress
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_peer = {line["peer"]: line for line in lines}
    assert sorted(by_peer) == [OWNER, OTHER]
    assert by_peer[OWNER]["outcome"] == "hit" and by_peer[OWNER]["attempts"] == 1
    assert by_peer[OTHER]["outcome"] == "refused"  # an answer all the same


def test_a_peer_that_does_not_answer_exits_3_with_the_others_answers(fed: Federation) -> None:
    [doc] = documents(fed, OWNER, 1)
    result = match(
        fed, "--all", "--category", "travel_document", "--document-number", doc, "--json"
    )
    assert result.returncode == 3, result.stderr
    rows = {r["peer"]: r for r in json.loads(result.stdout)}
    assert sorted(rows) == [OWNER, DOWN, OTHER]
    assert rows[OWNER]["outcome"] == "hit"
    assert rows[DOWN]["outcome"] == "unavailable"
    assert rows[DOWN]["attempts"] >= 2  # connection refused is transient: asked again
    table = match(fed, "--peer", DOWN, "--category", "vehicle", "--vin", "X", "--timeout", "0.5")
    assert table.returncode == 3
    assert table.stdout.splitlines()[0].split()[:2] == ["PEER", "OUTCOME"]
    assert "unavailable" in table.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--peers", "XX-NOBODY", "--category", "vehicle", "--vin", "X"), "not in the directory"),
        (("--all", "--category", "vehicle"), "at least one identifier"),
        (("--all", "--vin", "X"), "--category"),
        (("--all", "--category", "vehicle", "--vin", "X", "--timeout", "0"), "positive number"),
        (("--all", "--category", "vehicle", "--vin", "X", "--json", "--jsonl"), "not allowed"),
        (("--all", "--file", "rows.csv"), "--out"),
        (("--all", "--category", "vehicle", "--vin", "X", "--out", "r.jsonl"), "--file"),
    ],
)
def test_usage_errors_exit_2_and_ask_no_one(
    fed: Federation, args: tuple[str, ...], words: str
) -> None:
    result = match(fed, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_help_documents_the_exit_codes_and_the_batch() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "query", "match", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "exit status:" in out and "some peer did not answer" in out
    assert "--file identifiers.csv --out results.jsonl" in out


def write_csv(path: Path, documents: list[str]) -> None:
    lines = ["id,document_number"] + [f"Q{n:04d},{doc}" for n, doc in enumerate(documents)]
    path.write_text("\n".join(lines) + "\n")


def results_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_a_batch_interrupted_by_ctrl_c_resumes_without_asking_again(
    fed: Federation, tmp_path: Path
) -> None:
    docs = documents(fed, OWNER, 40) + [f"NOPE{n:04d}" for n in range(60)]
    rows = tmp_path / "identifiers.csv"
    write_csv(rows, docs)
    out = tmp_path / "results.jsonl"
    batch = (
        "--peers",
        f"{OWNER},{OTHER}",
        "--category",
        "travel_document",
        "--case",
        "BATCH-1",
        "--file",
        str(rows),
        "--out",
        str(out),
        "--concurrency",
        "1",
    )
    process = subprocess.Popen(
        match_args(fed, *batch), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted:" in stderr and "run the same command again" in stderr
    first = results_of(out)
    assert 10 <= len(first) < 200, "the batch ended before it could be interrupted"

    resumed = match(fed, *batch)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({len(first)} were there already)" in resumed.stderr
    every = results_of(out)
    assert every[: len(first)] == first  # appended to, never rewritten
    pairs = Counter((r["row"], r["peer"]) for r in every)
    assert len(pairs) == 200 and set(pairs.values()) == {1}
    hits = {r["row"] for r in every if r["outcome"] == "hit"}
    # FR's own documents hit (but one its policy may hide), the made-up ones never.
    assert hits <= {f"Q{n:04d}" for n in range(40)} and len(hits) >= 30
    assert all(r["identifiers"]["document_number"] == docs[int(r["row"][1:])] for r in every)
    # What was written was not asked again: each node audited one request per (row, peer),
    # plus at most the one call in flight when Ctrl-C came, its answer never written.
    for node in (OWNER, OTHER):
        entries = audited(fed, node, "BATCH-1")
        assert 100 <= len(entries) <= 101
        assert len({e["nonce"] for e in entries}) == len(entries)

    again = match(fed, *batch)  # nothing left to ask
    assert again.returncode == 0
    assert "0 results added" in again.stderr
    assert len(results_of(out)) == 200


def test_a_batch_drops_a_torn_last_line_and_refuses_another_files_results(
    fed: Federation, tmp_path: Path
) -> None:
    docs = documents(fed, OWNER, 3)
    rows = tmp_path / "identifiers.csv"
    write_csv(rows, docs)
    out = tmp_path / "results.jsonl"
    batch = ("--peers", OWNER, "--category", "travel_document", "--file", str(rows))
    assert match(fed, *batch, "--out", str(out)).returncode == 0
    whole = out.read_text()
    out.write_text("\n".join(whole.splitlines()[:2]) + "\n" + whole.splitlines()[2][:25])  # torn
    result = match(fed, *batch, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1 results added" in result.stderr
    assert sorted(r["row"] for r in results_of(out)) == ["Q0000", "Q0001", "Q0002"]

    write_csv(rows, list(reversed(docs)))  # another file, the same --out
    other = match(fed, *batch, "--out", str(out))
    assert other.returncode == 2
    assert "written for another file" in other.stderr


@pytest.mark.parametrize(
    ("csv_text", "words"),
    [
        ("", "is empty"),
        ("passport\nX1\n", "unknown column"),
        ("id,vin\nA,\n", "line 2: give at least one identifier"),
        ("family_name,vin\nMüller,\n", "line 2: a person is matched on"),
        ("id,vin\nA,X\nA,Y\n", "line 3: id 'A' is used twice"),
        ("vin\nX,Y\n", "line 2: more values"),
    ],
)
def test_a_bad_batch_file_is_a_usage_error_naming_its_line(
    fed: Federation, tmp_path: Path, csv_text: str, words: str
) -> None:
    rows = tmp_path / "identifiers.csv"
    rows.write_text(csv_text)
    out = tmp_path / "results.jsonl"
    result = match(fed, "--all", "--category", "vehicle", "--file", str(rows), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert words in result.stderr, result.stderr
    assert not out.exists()
