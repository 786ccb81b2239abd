"""Build and run a whole federation on this machine: for the demo, tests and benchmarks.

It uses only the same steps an operator would (authority, enrolment, directory, import,
agreements, `liaison serve` as a real process), so what it proves holds for a real node.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from federation.client import ClientIdentity, blocking_is_serving, blocking_secure_channel
from federation.directory import Member, load_directory
from federation.pki import create_authority, public_key_from_text
from node.config import NodeConfig, load_config
from node.enrol import enrol_node, enrol_overseer, sign_members
from node.importer import import_file
from node.local.synthetic import generate_rows, write_jsonl
from node.schema import upgrade_node
from node.store import RecordStore

MARKER = ".liaison-federation-kit"


# Ports handed out by this process, never handed out twice.
_given: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port free now, chosen *below* the kernel's ephemeral range when there is
    room: a port from that range (what binding port 0 gives) can be taken, between this
    call and the node's own bind, as the source port of any outgoing connection, which on
    a busy machine happened ("address in use"). Below the range only another listener can
    take it, and this process never hands the same one out twice."""
    low, _ = _ephemeral_range()
    if low > 12000:
        for _ in range(200):
            port = random.randrange(10000, low)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _given.add(port)
    return port


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM (a graceful stop), then SIGKILL if it has not exited within `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class NodeHandle:
    node_id: str
    folder: Path
    endpoint: str
    metrics: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.folder / "node.toml"

    def config(self) -> NodeConfig:
        return load_config(self.config_path)

    def identity(self) -> ClientIdentity:
        return self.config().client_identity()

    def start(
        self,
        log_path: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`liaison serve` on this node's config, with `args` added (`--workers 2`) and
        `env` over this process's environment."""
        log = (log_path or self.folder / "node.log").open("ab")
        command = [sys.executable, "-m", "node.cli", "serve", "--config", str(self.config_path)]
        self.process = subprocess.Popen(
            [*command, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the node answers a health check over mTLS, or raise with its log."""
        deadline = time.monotonic() + timeout
        with blocking_secure_channel(self.identity(), self.node_id, self.endpoint) as channel:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    if blocking_is_serving(channel, timeout=1.0):
                        return
                except grpc.RpcError:
                    time.sleep(0.1)
        tail = (self.folder / "node.log").read_text()[-3000:]
        raise RuntimeError(f"{self.node_id} did not become ready; its log ends:\n{tail}")

    def read_metrics(self, identity: Path | None = None, timeout: float = 5.0) -> str:
        """The node's `/metrics` over TLS, presenting the certificate in `identity` (a member's
        folder: tls.crt, tls.key, ca.crt; an overseer's, or by default the node's own)."""
        return read_metrics(self.metrics, identity or self.folder, timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        code = stop_process(self.process, timeout)
        self.process = None
        return code


def read_metrics(address: str, identity: Path, timeout: float = 5.0) -> str:
    """`https://<address>/metrics`, checking the node's certificate against the federation CA
    in `identity` and presenting that member's certificate (what an overseer's Prometheus
    does with `tls_config`). An HTTP error (403 and its reason) raises urllib's HTTPError."""
    context = ssl.create_default_context(cafile=identity / "ca.crt")
    context.load_cert_chain(identity / "tls.crt", identity / "tls.key")
    url = f"https://{address}/metrics"
    with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
        text: str = answer.read().decode()
    return text


@dataclass
class Federation:
    root: Path
    nodes: dict[str, NodeHandle]

    def member(self, node_id: str) -> Member:
        """A node's entry in the federation's signed directory (verified)."""
        authority = public_key_from_text((self.root / "authority" / "authority.pub").read_text())
        member = load_directory(self.root / "directory.json", authority).member(node_id)
        if member is None:
            raise KeyError(f"{node_id} is not in the directory")
        return member

    def start(self) -> None:
        for n in self.nodes.values():
            n.start()
        try:
            for n in self.nodes.values():
                n.wait_ready()
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        for n in self.nodes.values():
            n.stop()


def build_federation(
    root: Path,
    node_ids: Sequence[str],
    agreements: Mapping[str, Mapping[str, Any]],
    *,
    records: int = 1000,
    federation: str = "liaison.example",
    seed: int = 7,
    overseers: Sequence[str] = (),
    witness_interval_s: int = 0,
    policy_data: Mapping[str, Mapping[str, Any]] | None = None,
) -> Federation:
    """Lay out a federation under `root` (wiped first if the kit made it before).

    Each of `overseers` is enrolled as an overseer (identity in `root/<id>`, listed in the
    directory with role overseer) and runs no node. The nodes witness each other every
    `witness_interval_s` (`[witness] interval_s`); off by default, so that a test or a
    benchmark finds in the audit logs only the calls it made. A node's entry in
    `policy_data` (e.g. its `restrictions` or `settings`) joins its agreements in its
    policy data file."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise FileExistsError(
                f"{root} exists and was not made by Liaison; choose another "
                "folder or remove it yourself"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by liaison; safe to delete\n")
    authority = root / "authority"
    create_authority(authority, federation)
    nodes: dict[str, NodeHandle] = {}
    members = []
    for i, node_id in enumerate(node_ids):
        endpoint = f"127.0.0.1:{free_port()}"
        metrics = f"127.0.0.1:{free_port()}"
        folder = root / node_id
        member = enrol_node(
            authority,
            node_id,
            folder,
            endpoint=endpoint,
            hosts=("localhost", "127.0.0.1"),
            metrics=metrics,
            policy_dir=None,
        )
        members.append(member.to_json())
        with (folder / "node.toml").open("a") as toml:
            toml.write(f"\n[witness]\ninterval_s = {witness_interval_s}\n")
        (folder / "agreements.json").write_text(
            json.dumps(
                {"agreements": agreements.get(node_id, {}), **(policy_data or {}).get(node_id, {})},
                indent=2,
            )
            + "\n"
        )
        rows = list(generate_rows(node_id[:2], records, seed=seed + i))
        write_jsonl(folder / "records.jsonl", rows)
        config = load_config(folder / "node.toml")
        upgrade_node(config)  # the schema, as `liaison db upgrade` makes it
        store = RecordStore(config.store.url)
        try:
            import_file(folder / "records.jsonl", store)
        finally:
            store.close()
        nodes[node_id] = NodeHandle(node_id, folder, endpoint, metrics, rows)
    for overseer_id in overseers:
        members.append(enrol_overseer(authority, overseer_id, root / overseer_id).to_json())
    (root / "members.json").write_text(json.dumps(members, indent=2) + "\n")
    sign_members(authority, root / "members.json", root / "directory.json", serial=1, valid_days=30)
    for n in nodes.values():
        shutil.copy(root / "directory.json", n.folder / "directory.json")
    return Federation(root, nodes)
