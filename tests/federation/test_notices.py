"""Notices across real node processes over real mTLS: DE-BKA publishes through its admin
socket (the `liaison notices` command) and its courier delivers; one recipient is down and
gets the notice when it is back; the receivers' own policies decide; a peer's Match and a
record import that hit a notice raise a local alert at the receiver only; a withdrawal by
anyone but the publisher is refused, and the publisher's reaches every recipient and stops
the matching."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from federation.client import ClientIdentity, PeerClient, new_envelope
from federation.errors import PeerRefused
from federation.model import Identifier
from federation.notices_model import WithdrawNoticeQuery
from node.local.demo import WINDOW
from node.local.federation import Federation, NodeHandle, build_federation
from node.notice_model import Delivery, NoticeDraft, NoticeHit
from node.rpc.admin_client import AdminClient
from tests.federation.helpers import ask, audit_entry, scrape, set_keys

DE, FR, NL, ES, BE = "DE-BKA", "FR-DGPN", "NL-KLPD", "ES-PN", "BE-FPJ"
DOC = "ZQ7730091"  # a stolen passport's number (no synthetic record has it)
NOTICE_TERMS: dict[str, Any] = {
    "categories": ["travel_document", "wanted_person"],
    "purposes": ["criminal_investigation"],
    "methods": ["Match", "PublishNotice"],
    "legal_bases": ["none"],
    **WINDOW,
}
# FR, NL and ES take DE's notices; ES also answers FR's Matches. BE's agreement with DE
# names Match only, so BE's policy refuses DE's notices.
AGREEMENTS: dict[str, dict[str, Any]] = {
    FR: {DE: NOTICE_TERMS},
    NL: {DE: NOTICE_TERMS},
    ES: {DE: NOTICE_TERMS, FR: {**NOTICE_TERMS, "methods": ["Match"]}},
    BE: {DE: {**NOTICE_TERMS, "methods": ["Match"]}},
}


def _run(node: NodeHandle, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args, "--config", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _liaison(node: NodeHandle, *args: str) -> str:
    done = _run(node, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("notices-federation")
    federation = build_federation(root, (DE, FR, NL, ES, BE), AGREEMENTS, records=40)
    toml = federation.nodes[DE].config_path
    fast = {"retry_initial_s": "1", "retry_max_s": "2", "poll_interval_s": "1", "timeout_s": "3"}
    toml.write_text(set_keys(toml.read_text(), "notices", fast))
    for node_id in (DE, FR, ES, BE):  # NL is down
        federation.nodes[node_id].start()
    for node_id in (DE, FR, ES, BE):
        federation.nodes[node_id].wait_ready()
    yield federation
    federation.stop()


def _admin(fed: Federation, node_id: str) -> AdminClient:
    node = fed.nodes[node_id]
    return AdminClient(node.config().admin.socket, node.config_path)


def _deliveries(fed: Federation, notice_id: str) -> dict[str, Delivery]:
    with _admin(fed, DE) as admin:
        _, deliveries = admin.notice_status(notice_id)
    return {d.recipient: d for d in deliveries}


def _until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting until {what}")


def _hits(fed: Federation, node_id: str) -> list[NoticeHit]:
    with _admin(fed, node_id) as admin:
        return admin.notice_hits()


def _withdraw_as(who: ClientIdentity, fed: Federation, peer: str, notice_id: str) -> None:
    async def run() -> None:
        client = PeerClient.for_member(who, fed.member(peer))
        try:
            env = new_envelope(who.node_id, "criminal_investigation")
            await client.withdraw_notice(WithdrawNoticeQuery(env, notice_id, 9), timeout=10.0)
        finally:
            await client.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def notice_id(fed: Federation) -> str:
    """A stolen passport, to FR, NL (down) and ES."""
    out = _liaison(
        fed.nodes[DE],
        "notices",
        "publish",
        "--category",
        "travel_document",
        "--identifier",
        f"document_number={DOC[:2]}-{DOC[2:]}",
        "--summary",
        "Stolen blank passport; seize it.\nReport to DE-BKA duty desk.",
        "--handling-code",
        "H1",
        "--to",
        FR,
        NL,
        ES,
        "--operator",
        "de-duty-officer",
    )
    first = out.splitlines()[0]
    assert first.startswith("notice ntc_") and "published (version 1)" in first, out
    return first.split()[1]


def test_a_notice_reaches_the_nodes_up_and_waits_for_the_one_down(
    fed: Federation, notice_id: str
) -> None:
    def two_delivered() -> bool:
        d = _deliveries(fed, notice_id)
        return d[FR].status == d[ES].status == "delivered" and d[NL].attempts >= 2

    _until("FR and ES have it and NL was tried twice", two_delivered)
    d = _deliveries(fed, notice_id)
    assert d[NL].status == "pending" and "unreachable" in d[NL].last_reason
    status = _liaison(fed.nodes[DE], "notices", "status", notice_id)
    assert re.search(rf"{NL}\s+1\s+publish\s+pending\s+\d", status), status
    received = json.loads(_liaison(fed.nodes[ES], "notices", "list", "--json"))
    assert [(n["notice_id"], n["publisher"], n["state"]) for n in received] == [
        (notice_id, DE, "active")
    ]
    assert received[0]["identifiers"] == [["document_number", DOC]]  # normalised
    assert scrape(fed.nodes[DE], "liaison_notice_outbox", {"state": "pending"}) == 1.0
    assert scrape(fed.nodes[ES], "liaison_notices_received_total", {"outcome": "accepted"}) == 1.0
    # ES's audit entry names the notice and counts its identifiers; no value, no summary
    log = (fed.nodes[ES].folder / "audit.log").read_text()
    assert DOC not in log and "Stolen" not in log
    entry = next(json.loads(line) for line in log.splitlines() if "PublishNotice" in line)
    assert (entry["notice"], entry["identifiers"], entry["category"]) == (
        f"{notice_id}@1",
        1,
        "travel_document",
    )

    fed.nodes[NL].start()
    fed.nodes[NL].wait_ready()
    _until("NL has it", lambda: _deliveries(fed, notice_id)[NL].status == "delivered")
    assert [n.notice_id for n in _admin(fed, NL).notices(published=False)] == [notice_id]


def test_a_peers_match_hitting_a_notice_is_a_local_alert_only(
    fed: Federation, notice_id: str
) -> None:
    fr = fed.nodes[FR].identity()
    answer = ask(fr, fed, ES, "travel_document", [("document_number", DOC)])
    assert not answer.hit  # ES holds no such record: the answer is the Match's own
    hits = _hits(fed, ES)
    assert [(h.notice_id, h.publisher, h.trigger) for h in hits] == [
        (notice_id, DE, f"match from {FR}")
    ]
    assert scrape(fed.nodes[ES], "liaison_notice_hits_total", {"category": "travel_document"}) == 1
    assert DOC not in (fed.nodes[ES].folder / "node.log").read_text()
    # the publisher is told nothing: no hit there, no call from ES in its audit log
    assert _hits(fed, DE) == []
    assert all(
        json.loads(line)["peer"] != ES
        for line in (fed.nodes[DE].folder / "audit.log").read_text().splitlines()
    )
    assert audit_entry(fed.nodes[ES], answer.audit_entry)["method"] == "Match"


def test_an_import_hitting_a_notice_is_a_local_alert(fed: Federation, notice_id: str) -> None:
    records = fed.root / "fr-new.jsonl"
    row = {"category": "travel_document", "document_number": DOC, "status": "found"}
    records.write_text(json.dumps(row) + "\n")
    out = _liaison(fed.nodes[FR], "data", "import", str(records))
    assert "ALERT: the records hit 1 active notice(s)" in out
    assert [(h.notice_id, h.trigger) for h in _hits(fed, FR)] == [(notice_id, "import")]
    assert "import" in _liaison(fed.nodes[FR], "notices", "hits")


def test_only_the_publisher_may_withdraw_a_notice(fed: Federation, notice_id: str) -> None:
    with pytest.raises(PeerRefused) as refused:
        _withdraw_as(fed.nodes[FR].identity(), fed, ES, notice_id)
    assert refused.value.reasons == ("not_publisher",)
    before = len(_hits(fed, ES))
    ask(fed.nodes[FR].identity(), fed, ES, "travel_document", [("document_number", DOC)])
    assert len(_hits(fed, ES)) == before + 1  # still active at ES


def test_a_receivers_policy_refusal_is_the_delivery_status(fed: Federation) -> None:
    with _admin(fed, DE) as admin:
        draft = NoticeDraft(
            "wanted_person",
            (Identifier("name_dob", "Doe|John|1980-01-02"),),
            "wanted for armed robbery",
            "H2",
            False,
            (BE,),
            datetime.now(UTC) + timedelta(days=3),
            "criminal_investigation",
        )
        done = admin.publish_notice(draft, "de-duty-officer")
    notice_id = done.notice.notice_id
    _until(
        "BE refused it",
        lambda: _deliveries(fed, notice_id)[BE].state.value != "pending",
    )
    assert _deliveries(fed, notice_id)[BE].status == "refused: method_not_permitted"
    assert "refused: method_not_permitted" in _liaison(
        fed.nodes[DE], "notices", "status", notice_id
    )
    assert _admin(fed, BE).notices(published=False) == []


def test_a_withdrawal_reaches_every_recipient_and_stops_the_matching(
    fed: Federation, notice_id: str
) -> None:
    fed.nodes[NL].stop()  # down again: it gets the withdrawal when it is back
    out = _liaison(fed.nodes[DE], "notices", "withdraw", notice_id, "--operator", "de-duty")
    assert f"notice {notice_id} withdrawn (version 2)" in out

    def withdrawn(d: Delivery) -> bool:
        return d.status == "delivered" and d.version == 2 and d.action.value == "withdraw"

    def all_up_withdrawn() -> bool:
        d = _deliveries(fed, notice_id)
        return withdrawn(d[FR]) and withdrawn(d[ES]) and d[NL].attempts >= 1

    _until("FR and ES have the withdrawal", all_up_withdrawn)
    assert _deliveries(fed, notice_id)[NL].status == "pending"
    fed.nodes[NL].start()
    fed.nodes[NL].wait_ready()
    _until("NL has it", lambda: withdrawn(_deliveries(fed, notice_id)[NL]))
    before = len(_hits(fed, ES))
    ask(fed.nodes[FR].identity(), fed, ES, "travel_document", [("document_number", DOC)])
    assert len(_hits(fed, ES)) == before
    for node_id in (FR, NL, ES):
        with _admin(fed, node_id) as admin:
            (held,) = admin.notices(published=False)
        assert (held.state.value, held.version) == ("withdrawn", 2)


def test_the_commands_say_what_was_wrong_in_one_line(fed: Federation) -> None:
    unknown = _run(fed.nodes[DE], "notices", "status", "ntc_none")
    assert unknown.returncode == 2
    assert unknown.stderr == "liaison: error: this node published no notice 'ntc_none'\n"
    stranger = _run(
        fed.nodes[DE],
        "notices",
        "publish",
        "--category",
        "vehicle",
        "--identifier",
        "vin=WVWZZZ1JZXW386752",
        "--summary",
        "stolen",
        "--handling-code",
        "H0",
        "--to",
        "XX-NOBODY",
    )
    assert stranger.returncode == 2
    assert "XX-NOBODY is not another node of the federation directory" in stranger.stderr
    assert len(stranger.stderr.splitlines()) == 1
