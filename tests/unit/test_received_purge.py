"""The purge job (node.received_purge): a record past its retention is deleted on time even
when the audit log cannot be written, and its deletion is audited by the next run; a
deletion the command made while no node ran is audited by the node's first run."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from node.audit.entries import AuditError
from node.audit.file_store import FileStorage
from node.audit.log import AuditLog
from node.metrics import NodeMetrics
from node.received import ReceivedStore
from node.received_purge import PURGE, ReceivedPurger
from tests.unit.test_received import T0, add_one


def _purges(path: Path) -> list[dict[str, object]]:
    entries = [json.loads(line) for line in path.read_bytes().splitlines()]
    return [e for e in entries if e["method"] == PURGE]


def test_a_failed_audit_never_keeps_a_record_and_is_audited_next_run(tmp_path: Path) -> None:
    store = ReceivedStore(f"sqlite:///{tmp_path / 'node.db'}")
    store.create_schema()
    storage = FileStorage(tmp_path / "audit.log")
    registry = CollectorRegistry()
    now = T0 + timedelta(days=2)

    async def scenario() -> None:
        audit = AuditLog(storage)
        purger = ReceivedPurger(store, audit, NodeMetrics(registry), now=lambda: now)
        try:
            first = add_one(store, retention_days=1)
            kept = add_one(store, retention_days=30)
            good_fd = storage._fd
            storage._fd = os.open("/dev/full", os.O_WRONLY)  # a real ENOSPC
            try:
                with pytest.raises(AuditError):
                    await purger.purge_due()
            finally:
                os.close(storage._fd)
                storage._fd = good_fd
            # Deleted on time all the same, and noted as not yet audited.
            assert store.get(first.id) is None and store.get(kept.id) is not None
            assert [p.id for p in store.unaudited_purges()] == [first.id]
            assert _purges(tmp_path / "audit.log") == []

            second = add_one(store, retention_days=1)
            done = await purger.purge_due()
            assert sorted(p.id for p, _ in done) == sorted([first.id, second.id])
            assert store.unaudited_purges() == []
            entries = _purges(tmp_path / "audit.log")
            assert sorted(str(e["id"]) for e in entries) == sorted(entry for _, entry in done)
            assert await purger.purge_due() == []  # each deletion audited once
        finally:
            await audit.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    labels = {"peer": "DE-BKA"}
    assert registry.get_sample_value("liaison_received_purged_total", labels) == 2
    assert registry.get_sample_value("liaison_audit_failures_total") == 1


def test_a_deletion_by_the_command_is_audited_with_its_own_time(tmp_path: Path) -> None:
    store = ReceivedStore(f"sqlite:///{tmp_path / 'node.db'}")
    store.create_schema()
    gone = add_one(store, retention_days=1)
    purged_at = T0 + timedelta(days=3)
    assert store.purge_due(purged_at) == [gone]  # as `liaison received purge` does
    later = T0 + timedelta(days=5)

    async def scenario() -> None:
        audit = AuditLog(FileStorage(tmp_path / "audit.log"))
        try:
            purger = ReceivedPurger(
                store, audit, NodeMetrics(CollectorRegistry()), now=lambda: later
            )
            [(purged, _)] = await purger.purge_due()
            assert purged.id == gone.id and purged.purged_at == purged_at
        finally:
            await audit.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    [entry] = _purges(tmp_path / "audit.log")
    assert entry["time"] == later.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert (entry["peer"], entry["category"], entry["decision"]) == (
        "DE-BKA",
        "wanted_person",
        "allow",
    )
