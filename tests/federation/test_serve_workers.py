"""`liaison serve --workers 2` on real processes: two workers on one port answering into one
audit tree (in a SQLite database of its own), a replayed request answered once whichever
worker gets it, /metrics summing both, a killed worker restarted while the other serves,
and the file audit store refused."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from federation.wire.liaison.exchange.v1 import exchange_pb2 as pb
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
            if s.name == "liaison_requests_total" and s.labels["decision"] == decision
        )
    return counted


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\tZ" not in status.partition("State:")[2].partition("\n")[0]


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
        # is reset: the client's retry reaches the other worker).
        _until(lambda: not _alive(pids[1]))
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
