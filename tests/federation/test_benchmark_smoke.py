"""The benchmarks run end to end (quick runs; their figures are not judged here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_quick(script: str, timeout: float, *args: str) -> str:
    """`python benchmarks/<script> --quick [args]`, which must exit 0: its standard output."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_match_benchmark_quick_run_exits_cleanly_with_its_ratio() -> None:
    out = run_quick("match.py", timeout=240)
    assert "ratio node/echo throughput:" in out
    assert "target node >= 0.6x echo throughput:" in out


def test_match_benchmark_with_two_workers_runs_both_servers_as_two_processes() -> None:
    out = run_quick("match.py", 240, "--workers", "2")
    assert "2 processes each, 8 client channels per server" in out
    # The 8 connections to each server are spread evenly over its two processes.
    for target in ("node", "echo"):
        assert f"connections per {target} process: 4, 4" in out
    assert "ratio node/echo p99 latency:" in out
    assert "target with 2 worker(s) at 64 in flight, CPU per request <= 1.8x echo's:" in out


def test_fetch_benchmark_quick_run_exits_cleanly_with_its_ratios_and_target() -> None:
    out = run_quick("fetch.py", timeout=240)
    for method in ("match", "fetch"):
        for in_flight in (1, 64):
            assert f"  {method:<5} {in_flight:>3} in flight:" in out
    assert "ratio Fetch/Match throughput:" in out
    assert "ratio Fetch/Match p99 latency:" in out
    assert "target Fetch >= 0.8x Match throughput:" in out


def test_policy_benchmark_quick_run_exits_cleanly_with_its_ratio_and_target() -> None:
    out = run_quick("policy.py", timeout=120)
    assert "ratio of mean µs per decision to the floor" in out
    for engine in ("embedded", "opa"):
        assert (
            f"{engine}: policy cost at steady state (cached) as a share of Match server CPU:" in out
        )
    assert "(target ≤ 10%)" in out


def test_audit_benchmark_quick_run_exits_cleanly_with_its_ratios_and_target() -> None:
    # PostgreSQL rows run if LIAISON_TEST_POSTGRES_URL is set (`make test` sets it), else
    # they are skipped with a note.
    postgres = bool(os.environ.get("LIAISON_TEST_POSTGRES_URL"))
    out = run_quick("audit.py", timeout=120)
    assert "files in " in out
    backends = {"AuditLog.append": "fdatasync", "SQLite": "transaction"}
    if postgres:
        backends["PostgreSQL"] = "transaction"
    else:
        assert "PostgreSQL: skipped" in out
    for backend, unit in backends.items():
        for writers in ("1 writer:", "64 writers:"):
            line = next(line for line in out.splitlines() if f"{backend}, {writers}" in line)
            assert f"entries per {unit}" in line
            assert "ratio to baseline" in line
    assert "inclusion proof at 20,000 from the AuditLog" in out
    assert "consistency proof at 20,000 from the AuditLog" in out
    assert "open (recover: chain checked, Merkle tree rebuilt):" in out
    for how in ("workers=1", "default workers"):
        assert f"verify_log_and_checkpoints ({how}):" in out
    for how in ("--workers 1", "default workers"):
        assert f"liaison audit verify (subprocess, end to end, {how}):" in out
    assert "target: liaison audit verify of 1,000,000 entries ≤ 30 s:" in out


def test_lookups_benchmark_quick_run_measures_both_places_against_the_loop() -> None:
    # PostgreSQL rows run if LIAISON_TEST_POSTGRES_URL is set (`make test` sets it).
    postgres = bool(os.environ.get("LIAISON_TEST_POSTGRES_URL"))
    out = run_quick("lookups.py", timeout=120)
    databases = ["SQLite", "PostgreSQL"] if postgres else ["SQLite"]
    if not postgres:
        assert "PostgreSQL: skipped" in out
    else:
        assert "PostgreSQL on the thread" in out
    assert "SQLite on the loop" in out
    rows = [
        line.split() for line in out.splitlines() if line.split()[:1] in [[d] for d in databases]
    ]
    # Each database at 1 and 64 in flight, on the loop and in a thread; the loop rows are
    # their own baseline.
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
        (d, place, n) for d in databases for place in ("loop", "thread") for n in ("1", "64")
    )
    for row in rows:
        assert float(row[3]) > 0
        if row[1] == "loop":
            assert row[4] == row[8] == "1.00x"


def test_audit_open_benchmark_quick_run_exits_cleanly_with_its_ratios_and_targets() -> None:
    out = run_quick("audit_open.py", timeout=180)
    assert "baseline: read + SHA-256 of the file (the I/O floor):" in out
    assert "file: open from entry 0 (no anchor" in out
    for label, base in (("file", "baseline"), ("SQLite", "the open from entry 0")):
        line = next(line for line in out.splitlines() if f"{label}: open from the anchor:" in line)
        assert f"ratio to {base}" in line
        assert f"{label}: history checked and loaded in the background" in out
    assert "liaison audit verify (default: from the anchor; subprocess" in out
    for how in ("default workers", "--workers 1"):
        assert f"liaison audit verify --full ({how}; subprocess, end to end):" in out
    assert "target: open of 1,000,000 entries ≤ 2 s:" in out
    assert "target: liaison audit verify --full of 1,000,000 entries ≤ 15 s:" in out


def test_cli_startup_benchmark_quick_run_exits_cleanly_with_its_ratios_and_target() -> None:
    out = run_quick("cli_startup.py", timeout=120)
    assert "baseline: python -c pass: median" in out
    for command in (
        "liaison --help",
        "liaison audit verify --help",
        "liaison policy explain --help",
    ):
        line = next(line for line in out.splitlines() if line.startswith(f"{command}: median"))
        assert "p90" in line
        assert "ratio to baseline" in line
    assert "target: every --help under 500 ms (median):" in out


def test_fanout_benchmark_quick_run_exits_cleanly_with_its_ratio_and_target() -> None:
    out = run_quick("fanout.py", timeout=240)
    for peers in (1, 4, 8):
        assert any(line.split()[:1] == [str(peers)] for line in out.splitlines())
    assert "slow peer alone: p50" in out
    assert "ratio total/slowest alone (p50):" in out
    assert "target total <= slowest + 20 ms at 8 peers:" in out


def test_replicas_benchmark_quick_run_keeps_one_tree_and_prints_its_ratios(
    postgres_url: str,
) -> None:
    # A fresh database's URL names the server; the benchmark makes a scratch database of
    # its own beside it, as it does from LIAISON_TEST_POSTGRES_URL.
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "replicas.py"),
            "--quick",
            "--postgres-url",
            postgres_url,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    for replicas in (1, 2):
        assert any(line.split()[:1] == [str(replicas)] for line in out.splitlines())
        assert f"{replicas} replica(s): answers per replica" in out
    assert "audit lock sampled" in out
    assert "ratio to 1 replica (same run): 1: 1.00x, 2:" in out
    assert "checkpoint(s) verified from entry 0 (one tree)" in out
    assert "correctness: OK" in out


def test_match_mixed_benchmark_quick_run_answers_as_due_with_5_percent_refused() -> None:
    out = run_quick("match_mixed.py", timeout=240)
    checked = [line for line in out.splitlines() if line.startswith("answers checked, ")]
    # single and mixed, each at 1 and 64 in flight; none answered otherwise than due.
    assert len(checked) == 4, out
    assert all(line.endswith(", wrong 0") for line in checked), checked
    for line in checked:
        answered = int(line.split(": ")[1].split()[0])
        refused = int(line.split("refused ")[1].split()[0])
        if line.startswith("answers checked, mixed"):
            # Every 20th request is refused by the owner's agreement, for the reason due.
            assert answered > 100 and abs(refused / answered - 0.05) < 0.01, line
            assert "purpose_not_agreed" in line and "category_not_agreed" in line, line
            assert "hits 0," not in line and "no-hits 0," not in line, line
        else:
            assert refused == 0, line
    assert "every answer the one due: yes" in out
    for ratio in ("mixed/single throughput:", "mixed/echo throughput:"):
        assert f"ratio {ratio}" in out
    rows = {tuple(line.split()[:2]) for line in out.splitlines()}
    for target in ("echo", "single", "mixed"):
        for in_flight in ("1", "64"):
            assert (target, in_flight) in rows, out
    # The node's cache hit rate, read from its /metrics (liaison_policy_cache_lookups_total):
    # the single combination nearly always hits, the 54 mixed inputs miss more often.
    hit_rates = {
        tuple(cells[:2]): float(cells[8].rstrip("%"))
        for cells in (line.split() for line in out.splitlines())
        if cells[:1] in (["single"], ["mixed"]) and len(cells) == 12
    }
    for in_flight in ("1", "64"):
        assert hit_rates["single", in_flight] > 95.0, hit_rates
        assert hit_rates["mixed", in_flight] < hit_rates["single", in_flight], hit_rates
