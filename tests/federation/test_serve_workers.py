"""`liaison serve --workers 2` on real processes: two workers on one port answering into one
audit tree (in a SQLite database of its own), a replayed request answered once whichever
worker gets it, /metrics summing both, a killed worker restarted while the other serves,
SIGHUP to the supervisor reloading every worker's policy, the default (one worker per core
with the database store, one with the file store), and the file store refusing more."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from federation.errors import PeerRefused
from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb
from node.cli.serve_workers import usable_cores
from node.local.federation import Federation, NodeHandle
from tests.federation.helpers import ask, clone_node, scrape, set_keys
from tests.federation.test_cli import liaison
from tests.federation.test_signed_requests import _body, _send, _signed


def _node(fed: Federation, folder: Path) -> NodeHandle:
    """A copy of FR-DGPN whose audit log is in a SQLite database of its own."""
    node = clone_node(fed, "FR-DGPN", folder, audit={"checkpoint_interval_s": "1"})
    toml = node.config_path.read_text().replace('path = "audit.log"\n', "")
    node.config_path.write_text(
        set_keys(toml, "audit", {"store": '"database"', "url": '"sqlite:///audit.db"'})
    )
    upgraded = liaison("db", "upgrade", "--config", str(node.config_path))
    assert upgraded.returncode == 0, upgraded.stderr
    return node


def _workers(supervisor: int) -> dict[int, int]:
    """The supervisor's workers: {worker index: pid}."""
    found = {}
    for pid in subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(supervisor)], capture_output=True, text=True
    ).stdout.split():
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--worker-index" in args:
            found[int(args[args.index(b"--worker-index") + 1])] = int(pid)
    return found


def _requests_by_pid(tmp: Path, pids: list[int], decision: str) -> dict[int, float]:
    """`liaison_requests_total{decision}` counted by each worker, from its own files."""
    return _counted_by_pid(tmp, pids, "liaison_requests_total", {"decision": decision})


def _counted_by_pid(
    tmp: Path, pids: list[int], name: str, labels: dict[str, str]
) -> dict[int, float]:
    """The sample `name{labels}` as each worker counted it, from its own files."""
    [folder] = tmp.glob("liaison-workers-*")
    counted: dict[int, float] = {}
    for pid in pids:
        alone = tmp / f"pid-{pid}"
        shutil.rmtree(alone, ignore_errors=True)
        alone.mkdir()
        for file in folder.glob(f"*_{pid}.db"):
            shutil.copy(file, alone)
        counted[pid] = sum(
            s.value
            for family in MultiProcessCollector(None, str(alone)).collect()  # type: ignore[no-untyped-call]
            for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()
        )
    return counted


def _until(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise AssertionError("not in time")


def test_two_workers_share_one_port_one_tree_and_refuse_a_replay_once(
    fed: Federation, tmp_path: Path
) -> None:
    node = _node(fed, tmp_path / "FR")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    de = fed.nodes["DE-BKA"].identity()
    body = _body(fed)
    signature = _signed(de, body)
    nonce = pb.MatchRequest.FromString(body).envelope.nonce.hex()

    def asks(n: int) -> None:  # each on a connection of its own, spread by the kernel
        for i in range(n):
            answer = ask(
                de, fed, "FR-DGPN", "vehicle", [("vin", f"NOPE{i:013d}")], endpoint=node.endpoint
            )
            assert not answer.hit

    async def replays() -> list[tuple[str, tuple[str, ...]]]:
        sent = [_send(de, node.endpoint, body, signature, n=2) for _ in range(12)]
        return [r[:2] for results in await asyncio.gather(*sent) for r in results]

    node.start(args=["--workers", "2"], env={"TMPDIR": str(tmp)})
    assert node.process is not None
    supervisor = node.process.pid
    try:
        node.wait_ready()
        _until(lambda: len(_workers(supervisor)) == 2)
        pids = _workers(supervisor)
        asks(30)
        outcomes = asyncio.run(replays())
        # Both workers answered calls, and both saw copies of the replayed request.
        allowed = _requests_by_pid(tmp, list(pids.values()), "allow")
        refused = _requests_by_pid(tmp, list(pids.values()), "unauthenticated")
        assert all(n > 0 for n in allowed.values()), allowed
        assert all(n > 0 for n in refused.values()), refused
        # /metrics (worker 0) sums both workers.
        assert scrape(node, "liaison_requests_total", {"decision": "allow"}) == 31
        assert scrape(node, "liaison_requests_total", {"decision": "unauthenticated"}) == 23

        # A worker killed: the other keeps answering, and it is started again.
        os.kill(pids[1], signal.SIGKILL)
        # Once it is gone its listening socket is closed, and the kernel sends every new
        # connection to the other (a connection it had queued but not accepted when it died
        # is reset: the client's retry reaches the other worker). Gone means reaped by the
        # supervisor: its main thread shows as a zombie while its other threads (gRPC's)
        # still hold the socket.
        exited = f"worker 1 (pid {pids[1]}) exited"
        _until(lambda: exited in (node.folder / "node.log").read_text())
        asks(10)
        _until(lambda: _workers(supervisor).get(1) not in (None, pids[1]))
        node.wait_ready()
        asks(10)
        assert _workers(supervisor)[0] == pids[0]
        assert scrape(node, "liaison_requests_total", {"decision": "allow"}) == 51
    finally:
        code = node.stop(timeout=30)
    assert code == 0
    assert not list(tmp.glob("liaison-workers-*"))  # the supervisor's folder is removed
    assert "worker 1 (pid" in (node.folder / "node.log").read_text()

    assert outcomes.count(("OK", ())) == 1, outcomes
    assert set(outcomes) == {("OK", ()), ("UNAUTHENTICATED", ("replayed",))}
    # One audit tree, verified, holding every call and every copy of the replay.
    verified = liaison("audit", "verify", "--config", str(node.config_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "74 entries" in verified.stdout, verified.stdout
    exported = tmp_path / "all.json"
    done = liaison(
        "audit",
        "export",
        "--config",
        str(node.config_path),
        "--from",
        "0",
        "--to",
        "74",
        "--out",
        str(exported),
    )
    assert done.returncode == 0, done.stderr
    copies = [
        doc
        for doc in map(json.loads, json.loads(exported.read_text())["entries"])
        if doc.get("nonce") == nonce
    ]
    assert len(copies) == 24 and [c["decision"] for c in copies].count("allow") == 1


def test_the_file_audit_store_refuses_several_workers(fed: Federation, tmp_path: Path) -> None:
    node = clone_node(fed, "FR-DGPN", tmp_path / "FR")
    refused = liaison("serve", "--config", str(node.config_path), "--workers", "2")
    assert refused.returncode == 2
    assert 'needs [audit] store = "database"' in refused.stderr
    assert refused.stderr.count("\n") == 1  # one line


def test_by_default_the_database_store_runs_a_worker_per_core_and_sighup_reloads_them_all(
    fed: Federation, tmp_path: Path
) -> None:
    cores = usable_cores()
    if cores < 2:
        pytest.skip("one usable core: the default is the plain single-process server")
    node = _node(fed, tmp_path / "FR")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    de = fed.nodes["DE-BKA"].identity()

    def outcomes(n: int) -> set[str]:  # each ask on a connection of its own
        found = set()
        for i in range(n):
            try:
                ask(
                    de,
                    fed,
                    "FR-DGPN",
                    "vehicle",
                    [("vin", f"NOPE{i:013d}")],
                    endpoint=node.endpoint,
                )
                found.add("answered")
            except PeerRefused as exc:
                found.add(",".join(exc.reasons))
        return found

    node.start(env={"TMPDIR": str(tmp)})  # no --workers
    assert node.process is not None
    supervisor = node.process.pid
    log = node.folder / "node.log"
    try:
        node.wait_ready()
        _until(lambda: len(_workers(supervisor)) == cores)
        _until(lambda: log.read_text().count(" serving on ") == cores)  # every one ready
        pids = list(_workers(supervisor).values())
        assert outcomes(8) == {"answered"}

        agreements = node.folder / "agreements.json"
        data = json.loads(agreements.read_text())
        data["agreements"]["DE-BKA"]["categories"] = ["firearm"]
        agreements.write_text(json.dumps(data))
        node.process.send_signal(signal.SIGHUP)
        reloads = {"result": "success"}
        _until(
            lambda: all(
                n == 1
                for n in _counted_by_pid(
                    tmp, pids, "liaison_policy_reloads_total", reloads
                ).values()
            )
        )
        assert outcomes(12) == {"category_not_agreed"}
        # Every worker refused some of them: none kept the old agreement.
        denied = _requests_by_pid(tmp, pids, "deny")
        assert len(denied) == cores and all(n > 0 for n in denied.values()), denied
        assert _workers(supervisor) == dict(enumerate(pids))  # none was restarted
    finally:
        code = node.stop(timeout=30)
    assert code == 0
    assert f"supervising {cores} workers" in log.read_text()


def test_by_default_the_file_store_runs_one_process_and_says_why(
    fed: Federation, tmp_path: Path
) -> None:
    node = clone_node(fed, "FR-DGPN", tmp_path / "FR")
    node.start()  # no --workers
    assert node.process is not None
    try:
        node.wait_ready()
        assert _workers(node.process.pid) == {}  # the plain server: no supervisor
    finally:
        node.stop()
    said = [
        line
        for line in (node.folder / "node.log").read_text().splitlines()
        if "serving with one worker" in line
    ]
    assert len(said) == 1
    assert "file audit store" in said[0]
    assert '[audit] store = "database"' in said[0]
