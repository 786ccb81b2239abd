"""A node that cannot start releases what it had opened, and says why."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.audit.log import AuditLog
from node.audit.witness_state import state_path
from node.config import load_config
from node.local.demo import AGREEMENTS
from node.local.federation import NodeHandle, build_federation
from node.policy.cache import CachingEngine
from node.rpc.server import StartupError, start_node
from node.store import RecordStore
from tests.federation.helpers import set_keys


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> NodeHandle:
    """One enrolled node, laid out but never started."""
    root = tmp_path_factory.mktemp("federation")
    return build_federation(root, ("FR-DGPN",), AGREEMENTS, records=5).nodes["FR-DGPN"]


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The order in which the audit log, the record store and the policy engine are closed."""
    order: list[str] = []
    audit_close, store_close, engine_close = AuditLog.close, RecordStore.close, CachingEngine.close

    async def close_audit(self: AuditLog) -> None:
        order.append("audit")
        await audit_close(self)

    def close_store(self: RecordStore) -> None:
        order.append("store")
        store_close(self)

    def close_engine(self: CachingEngine) -> None:
        order.append("engine")
        engine_close(self)

    monkeypatch.setattr(AuditLog, "close", close_audit)
    monkeypatch.setattr(RecordStore, "close", close_store)
    monkeypatch.setattr(CachingEngine, "close", close_engine)
    return order


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _open_files_under(folder: Path) -> list[Path]:
    """The files under `folder` this process holds open (Linux: /proc/self/fd)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        link = Path("/proc/self/fd", fd)
        try:
            target = Path(os.readlink(link))
        except OSError:  # the listing's own fd, gone already
            continue
        if target.is_relative_to(folder.resolve()):
            held.append(target)
    return held


def _start_and_stop(config_path: Path) -> None:
    async def start() -> None:
        started = await start_node(load_config(config_path))
        await started.stop(0)  # only if the test is about to fail

    asyncio.run(start())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_taken_port_is_reported_and_what_was_opened_is_closed(
    node: NodeHandle, tmp_path: Path, taken_port: int, closed: list[str]
) -> None:
    config = node.folder / "taken-port.toml"  # relative paths in it: the node's files
    text = set_keys(
        node.config_path.read_text().replace(
            f'listen = "{node.endpoint}"', f'listen = "127.0.0.1:{taken_port}"'
        ),
        "audit",
        {"path": repr(str(tmp_path / "audit.log"))},
    )
    config.write_text(set_keys(text, "witness", {"interval_s": "60"}))  # its lock, too
    with pytest.raises(StartupError, match=rf"cannot listen on 127\.0\.0\.1:{taken_port}: address"):
        _start_and_stop(config)
    assert closed == ["audit", "store", "engine"]  # the reverse of the order they were opened
    assert _open_files_under(tmp_path) == []
    assert _open_files_under(node.folder) == []
    # The audit log can be opened again, and holds no entry.
    again = AuditLog(tmp_path / "audit.log")
    assert again.size == 0
    asyncio.run(again.close())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_an_unreadable_witness_state_is_reported_and_what_was_opened_is_closed(
    node: NodeHandle, tmp_path: Path, closed: list[str]
) -> None:
    audit_path = tmp_path / "audit.log"
    config = node.folder / "bad-witness-state.toml"
    text = set_keys(node.config_path.read_text(), "audit", {"path": repr(str(audit_path))})
    config.write_text(set_keys(text, "witness", {"interval_s": "60"}))
    state_path(audit_path).write_text("{torn")
    with pytest.raises(StartupError, match=r"witness state file .* is unreadable"):
        _start_and_stop(config)
    assert closed == ["audit", "store", "engine"]
    assert _open_files_under(tmp_path) == []
    assert _open_files_under(node.folder) == []
