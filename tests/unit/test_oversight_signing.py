"""GetCheckpoint signs the log's head when it grew, but never in a loop: at most one signature
every `min_sign_interval_s`, shared by concurrent callers, and none for growth made only of
OversightService calls. A real audit log and key; the service method called as the call path
calls it once the caller is identified and the request parsed (the gRPC path is in
tests/federation/test_oversight.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from federation.checkpoints import audit_origin
from node.audit.entries import AuditRecord, new_entry_id
from node.audit.log import AuditLog
from node.audit.verify import stated_checkpoint
from node.rpc.call_path import Call
from node.rpc.oversight import OversightHandlers
from tests.unit.test_audit import _append_many
from tests.unit.test_witness import DIRECTORY, FED, KEYS

NODE = "DE-BKA"
INTERVAL = 0.3


class Node:
    def __init__(self, path: Path) -> None:
        self.audit = AuditLog(path)
        self.signed: list[tuple[float, int]] = []  # (when, tree size) of each signature
        self.handlers = OversightHandlers(
            NODE,
            self.audit,
            sign_checkpoint=self._sign,
            min_sign_interval_s=INTERVAL,
        )

    def _sign(self) -> None:
        note = self.audit.checkpoint(KEYS[NODE], audit_origin(FED, NODE))
        self.signed.append((time.monotonic(), stated_checkpoint(note).size))

    async def get_checkpoint(self) -> int:
        """The tree size of the checkpoint GetCheckpoint serves to a peer."""
        member = DIRECTORY.member("FR-DGPN")
        assert member is not None
        note = await self.handlers._get_checkpoint(Call(member, new_entry_id(), {}, ""), None)
        return stated_checkpoint(note).size

    async def oversight_calls(self, count: int) -> None:
        for _ in range(count):
            record = AuditRecord(
                entry_id=new_entry_id(),
                time="2026-12-04T00:00:00.000000Z",
                peer="FR-DGPN",
                method="GetCheckpoint",
                purpose="",
                legal_basis="",
                decision="allow",
                reasons=(),
                policy_revision="",
                request_sha256="",
                response_sha256="",
            )
            await self.audit.append(record)


def test_growth_is_signed_once_per_interval_and_concurrent_callers_share_it(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path / "audit.log")

    async def go() -> tuple[int, list[int]]:
        await _append_many(node.audit, 0, 3)
        first = await node.get_checkpoint()
        await _append_many(node.audit, 3, 2)
        together = await asyncio.gather(*(node.get_checkpoint() for _ in range(4)))
        await node.audit.close()
        return first, list(together)

    first, together = asyncio.run(go())
    assert (first, together) == (3, [5, 5, 5, 5])
    assert [size for _, size in node.signed] == [3, 5]
    (at_3, _), (at_5, _) = node.signed
    assert at_5 - at_3 >= INTERVAL - 0.01  # the second waited for the interval


def test_oversight_calls_alone_do_not_make_it_sign_anew(tmp_path: Path) -> None:
    node = Node(tmp_path / "audit.log")

    async def go() -> list[int]:
        await _append_many(node.audit, 0, 2)
        served = [await node.get_checkpoint()]
        await node.oversight_calls(3)
        served.append(await node.get_checkpoint())
        # An exchange entry: the next checkpoint covers it and the oversight calls before it.
        await _append_many(node.audit, 5, 1)
        served.append(await node.get_checkpoint())
        await node.audit.close()
        return served

    assert asyncio.run(go()) == [2, 2, 6]
    assert [size for _, size in node.signed] == [2, 6]
