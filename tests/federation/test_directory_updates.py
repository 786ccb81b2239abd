"""A running node takes a newer directory (file refresh, or learned from a peer) and acts on
it at once; it refuses rollbacks and forgeries and keeps serving on the last good one."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from federation.directory import MemberStatus
from federation.errors import PeerRefused
from node.enrol import set_member_status, sign_members
from node.local.demo import AGREEMENTS
from node.local.federation import Federation, NodeHandle, build_federation
from tests.federation.helpers import ask, clone_node, first, scrape


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _issue(fed: Federation, tmp_path: Path, change: dict[str, MemberStatus]) -> Path:
    """A newer directory from the genuine authority, with the members' status changed."""
    members = tmp_path / f"members-{time.monotonic_ns()}.json"
    shutil.copy(fed.root / "members.json", members)
    for node_id, status in change.items():
        set_member_status(members, node_id, status)
    out = tmp_path / f"directory-{time.monotonic_ns()}.json"
    sign_members(fed.root / "authority", members, out)
    return out


@pytest.fixture
def fr(fed: Federation, tmp_path: Path) -> Iterator[NodeHandle]:
    node = clone_node(
        fed, "FR-DGPN", tmp_path / "FR-DGPN", trust={"directory_refresh_s": "1"}, watch="false"
    )
    node.start()
    node.wait_ready()
    yield node
    node.stop()


def _de_asks(fed: Federation, fr: NodeHandle) -> str:
    doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"])
    try:
        answer = ask(
            fed.nodes["DE-BKA"].identity(),
            fed,
            "FR-DGPN",
            "travel_document",
            [("document_number", doc)],
            endpoint=fr.endpoint,
        )
    except PeerRefused as exc:
        return ",".join(exc.reasons)
    return "hit" if answer.hit else "no-hit"


@pytest.mark.parametrize(
    ("status", "reason"),
    [(MemberStatus.REVOKED, "member_revoked"), (MemberStatus.SUSPENDED, "requester_not_active")],
)
def test_a_member_revoked_or_suspended_in_a_newer_directory_is_refused_on_its_next_call(
    fed: Federation, fr: NodeHandle, tmp_path: Path, status: MemberStatus, reason: str
) -> None:
    assert _de_asks(fed, fr) == "hit"
    newer = _issue(fed, tmp_path, {"DE-BKA": status})
    serial = json.loads(json.loads(newer.read_text())["payload"])["serial"]
    shutil.copy(newer, fr.folder / "directory.json")
    _until(lambda: scrape(fr, "liaison_directory_serial") == serial)
    assert _de_asks(fed, fr) == reason
    assert scrape(fr, "liaison_denials_total", {"peer": "DE-BKA", "reason": reason}) == 1
    last = json.loads((fr.folder / "audit.log").read_text().splitlines()[-1])
    assert (last["peer"], last["reasons"]) == ("DE-BKA", [reason])


def test_rollback_and_forgery_are_refused_and_the_node_keeps_serving(
    fed: Federation, fr: NodeHandle, tmp_path: Path
) -> None:
    original = (fr.folder / "directory.json").read_bytes()
    newer = _issue(fed, tmp_path, {})
    serial = json.loads(json.loads(newer.read_text())["payload"])["serial"]
    shutil.copy(newer, fr.folder / "directory.json")
    _until(lambda: scrape(fr, "liaison_directory_serial") == serial)

    (fr.folder / "directory.json").write_bytes(original)  # serial 1: a rollback
    _until(
        lambda: (
            scrape(fr, "liaison_directory_refusals_total", {"reason": "directory_rollback"}) == 1
        )
    )
    forged = json.loads(newer.read_text())
    forged["payload"] = forged["payload"].replace('"status":"active"', '"status":"revoked"', 1)
    (fr.folder / "directory.json").write_text(json.dumps(forged))
    _until(
        lambda: (
            scrape(fr, "liaison_directory_refusals_total", {"reason": "directory_bad_signature"})
            == 1
        )
    )
    assert scrape(fr, "liaison_directory_serial") == serial
    assert _de_asks(fed, fr) == "hit"


def test_a_node_learns_a_newer_directory_from_the_peer_that_advertises_it(
    tmp_path: Path,
) -> None:
    small = build_federation(tmp_path / "fed", ("DE-BKA", "FR-DGPN"), AGREEMENTS, records=50)
    de, fr = small.nodes["DE-BKA"], small.nodes["FR-DGPN"]
    newer = _issue(small, tmp_path, {})
    serial = json.loads(json.loads(newer.read_text())["payload"])["serial"]
    shutil.copy(newer, de.folder / "directory.json")  # only DE has heard of it
    small.start()
    try:
        assert scrape(de, "liaison_directory_serial") == serial
        assert scrape(fr, "liaison_directory_serial") == 1
        doc = str(first(small, "FR-DGPN", "travel_document")["document_number"])
        import asyncio

        from federation.client import PeerClient, match_query, new_envelope

        async def call() -> bool:
            client = PeerClient.for_member(
                de.identity(), small.member("FR-DGPN"), serial=lambda: serial
            )
            try:
                env = new_envelope("DE-BKA", "criminal_investigation")
                query = match_query(env, "travel_document", [("document_number", doc)])
                return (await client.match(query, 10)).hit
            finally:
                await client.close()

        assert asyncio.run(call())
        _until(lambda: scrape(fr, "liaison_directory_serial") == serial)
        assert scrape(fr, "liaison_directory_installs_total", {"via": "peer"}) == 1
        fetched = [
            json.loads(line)
            for line in (de.folder / "audit.log").read_text().splitlines()
            if '"GetDirectory"' in line
        ]
        assert [(e["peer"], e["decision"]) for e in fetched] == [("FR-DGPN", "allow")]
    finally:
        small.stop()
