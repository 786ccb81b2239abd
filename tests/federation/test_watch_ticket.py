"""WatchTicket across real node processes over real mTLS, through the real client: a watch
sees pending then approved and ends; another node's ticket is unknown; a peer's open
watches are bounded; a graceful stop ends them at once and the client subscribes again;
one audit entry per subscription; `liaison query ticket --watch`.

The owner is a copy of FR-DGPN polling its tickets only every 30 s, so a change that
reaches a watcher within seconds came from the desk's in-process wake-up, not a poll.
Tickets are opened by writing them into the owner's database (TicketStore.open), as its
Fetch does, and decided by its operator with `liaison tickets approve|refuse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from federation.client import ClientIdentity, PeerClient
from federation.errors import InvalidRequest, PeerUnavailable
from federation.model import TicketStatus
from federation.vocabulary import LegalBasis
from node.local.federation import Federation, NodeHandle
from node.tickets import Ticket, TicketStore
from tests.federation.helpers import clone_node, scrape, set_keys

OWNER, ASKER, OTHER = "FR-DGPN", "DE-BKA", "NL-KLPD"
MAX_WATCHES = 3
SLOW_POLL_S = 30


def liaison(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def owner(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    handle = clone_node(fed, OWNER, tmp_path_factory.mktemp("watch") / OWNER)
    toml = handle.config_path
    keys = {"watch_poll_s": str(SLOW_POLL_S), "max_watches_per_peer": str(MAX_WATCHES)}
    toml.write_text(set_keys(toml.read_text(), "tickets", keys))
    handle.start()
    try:
        handle.wait_ready()
        yield handle
    finally:
        handle.stop()


def open_ticket(node: NodeHandle, requester: str = ASKER) -> Ticket:
    """A pending ticket of `requester`'s for one of the node's records, 48 hours to go."""
    from sqlalchemy import text

    from node.store import RecordStore

    url = node.config().store.url
    records, store = RecordStore(url), TicketStore(url)
    try:
        with records.engine.connect() as conn:
            ref = conn.execute(text("SELECT ref FROM records ORDER BY id LIMIT 1")).scalar_one()
        now = datetime.now(UTC)
        return store.open(
            requester=requester,
            record_ref=ref,
            category="travel_document",
            purpose="criminal_investigation",
            legal_basis=LegalBasis.MLAT,
            legal_reference="MLAT-2026-17",
            case_reference="CASE-9",
            handling_code="H1",
            redact=(),
            retention_days=30,
            deadline_at=now + timedelta(hours=48),
            request_entry="e" * 32,
            now=now,
        )
    finally:
        store.close()
        records.close()


def decide(node: NodeHandle, ticket_id: str, action: str = "approve") -> None:
    """The owner's operator decides, over the node's admin socket (the node's desk)."""
    extra = ("--reason", "no MLAT covers this") if action == "refuse" else ()
    done = liaison("tickets", action, ticket_id, "--config", str(node.config_path), *extra)
    assert done.returncode == 0, done.stderr


def watch_entries(node: NodeHandle, ticket_id: str) -> list[dict[str, object]]:
    lines = (node.folder / "audit.log").read_text().splitlines()
    return [
        e
        for e in map(json.loads, lines)
        if e["method"] == "WatchTicket" and e.get("ticket") == ticket_id
    ]


def client(fed: Federation, who: ClientIdentity, node: NodeHandle) -> PeerClient:
    return PeerClient.for_member(who, fed.member(OWNER), endpoint=node.endpoint)


async def collect(
    statuses: AsyncGenerator[TicketStatus, None],
    seen: list[TicketStatus],
    first: asyncio.Event,
) -> None:
    async with contextlib.aclosing(statuses):
        async for status in statuses:
            seen.append(status)
            first.set()


@pytest.fixture(scope="module")
def de(fed: Federation) -> ClientIdentity:
    return fed.nodes[ASKER].identity()


def test_a_watch_sees_pending_then_the_approval_at_once_and_ends(
    fed: Federation, owner: NodeHandle, de: ClientIdentity
) -> None:
    ticket = open_ticket(owner)

    async def run() -> tuple[list[TicketStatus], float]:
        peer = client(fed, de, owner)
        seen: list[TicketStatus] = []
        first = asyncio.Event()
        try:
            watching = asyncio.create_task(collect(peer.watch_ticket(ticket.id), seen, first))
            await asyncio.wait_for(first.wait(), 10)
            started = time.monotonic()
            await asyncio.to_thread(decide, owner, ticket.id)
            await asyncio.wait_for(watching, 10)  # the stream ends after the approval
            return seen, time.monotonic() - started
        finally:
            await peer.close()

    seen, took = asyncio.run(run())
    assert [s.state for s in seen] == ["pending", "approved"]
    assert seen[1].decided_at is not None and seen[1].ticket_id == ticket.id
    assert took < SLOW_POLL_S / 2  # woken by the desk, not found by a poll
    [entry] = watch_entries(owner, ticket.id)
    assert (entry["peer"], entry["decision"]) == (ASKER, "allow")
    assert entry["category"] == "travel_document" and entry["nonce"]
    assert entry["request_signature"] and entry["response_signature"]
    labels = {"peer": ASKER, "method": "WatchTicket", "decision": "allow"}
    assert (scrape(owner, "liaison_requests_total", labels) or 0) >= 1
    assert scrape(owner, "liaison_ticket_watches", {"peer": ASKER}) == 0


def test_another_nodes_ticket_and_an_unknown_one_are_unknown(
    fed: Federation, owner: NodeHandle, de: ClientIdentity
) -> None:
    theirs = open_ticket(owner, requester=OTHER)

    async def refused(ticket_id: str) -> InvalidRequest:
        peer = client(fed, de, owner)
        try:
            with pytest.raises(InvalidRequest) as err:
                async for _ in peer.watch_ticket(ticket_id):
                    pass
            return err.value
        finally:
            await peer.close()

    for ticket_id in (theirs.id, "tkt_doesnotexist"):
        error = asyncio.run(refused(ticket_id))
        assert error.reasons == ("unknown_ticket",) and error.status == "NOT_FOUND"
        [entry] = watch_entries(owner, ticket_id)
        assert entry["decision"] == "invalid" and entry["reasons"] == ["unknown_ticket"]
        assert entry["id"] == error.metadata["audit_entry"]


def test_a_peers_open_watches_are_bounded(
    fed: Federation, owner: NodeHandle, de: ClientIdentity
) -> None:
    tickets = [open_ticket(owner) for _ in range(MAX_WATCHES + 1)]
    theirs = open_ticket(owner, requester=OTHER)

    async def run() -> None:
        peer = client(fed, de, owner)
        other = client(fed, fed.nodes[OTHER].identity(), owner)
        holding: list[asyncio.Task[None]] = []
        try:
            for ticket in tickets[:MAX_WATCHES]:
                first = asyncio.Event()
                holding.append(
                    asyncio.create_task(collect(peer.watch_ticket(ticket.id), [], first))
                )
                await asyncio.wait_for(first.wait(), 10)
            assert scrape(owner, "liaison_ticket_watches", {"peer": ASKER}) == MAX_WATCHES
            with pytest.raises(InvalidRequest) as err:
                async for _ in peer.watch_ticket(tickets[-1].id):
                    pass
            assert err.value.status == "RESOURCE_EXHAUSTED"
            assert err.value.reasons == ("too_many_watches",)
            assert "max_watches_per_peer" in err.value.message
            # The bound is each peer's own: NL-KLPD still watches its ticket.
            nl_first = asyncio.Event()
            nl = asyncio.create_task(collect(other.watch_ticket(theirs.id), [], nl_first))
            await asyncio.wait_for(nl_first.wait(), 10)
            nl.cancel()
            # A watch the client gives up frees its slot on the owner.
            holding.pop().cancel()
            deadline = time.monotonic() + 10
            while scrape(owner, "liaison_ticket_watches", {"peer": ASKER}) != MAX_WATCHES - 1:
                assert time.monotonic() < deadline, "the cancelled watch kept its slot"
                await asyncio.sleep(0.1)
            first = asyncio.Event()
            holding.append(
                asyncio.create_task(collect(peer.watch_ticket(tickets[-1].id), [], first))
            )
            await asyncio.wait_for(first.wait(), 10)
        finally:
            for task in holding:
                task.cancel()
            await asyncio.gather(*holding, return_exceptions=True)
            await peer.close()
            await other.close()

    asyncio.run(run())
    refused = [
        e for e in watch_entries(owner, tickets[-1].id) if e["reasons"] == ["too_many_watches"]
    ]
    assert len(refused) == 1


def test_a_graceful_stop_ends_open_watches_at_once(
    fed: Federation, owner: NodeHandle, de: ClientIdentity
) -> None:
    ticket = open_ticket(owner)

    async def run() -> tuple[PeerUnavailable, float]:
        peer = client(fed, de, owner)
        first = asyncio.Event()
        try:
            watching = asyncio.create_task(
                collect(peer.watch_ticket(ticket.id, resubscribe_for=0), [], first)
            )
            await asyncio.wait_for(first.wait(), 10)
            started = time.monotonic()
            await asyncio.to_thread(owner.stop)
            with pytest.raises(PeerUnavailable) as err:
                await asyncio.wait_for(watching, 10)
            return err.value, time.monotonic() - started
        finally:
            await peer.close()

    try:
        error, took = asyncio.run(run())
    finally:
        owner.start()
        owner.wait_ready()
    assert error.reasons == ("node_stopping",)
    assert took < 4  # well within the server's 5 s grace: the watch did not wait it out


def test_a_watch_survives_the_owner_restarting(
    fed: Federation, owner: NodeHandle, de: ClientIdentity
) -> None:
    ticket = open_ticket(owner)

    async def run() -> list[TicketStatus]:
        peer = client(fed, de, owner)
        seen: list[TicketStatus] = []
        first = asyncio.Event()
        try:
            watching = asyncio.create_task(
                collect(peer.watch_ticket(ticket.id, resubscribe_for=60), seen, first)
            )
            await asyncio.wait_for(first.wait(), 10)
            await asyncio.to_thread(owner.stop)
            await asyncio.sleep(1)  # the client tries, and fails, while the owner is down
            await asyncio.to_thread(owner.start)
            await asyncio.to_thread(owner.wait_ready)
            # Until the client subscribed again (its new audit entry is durable).
            deadline = time.monotonic() + 30
            while len(watch_entries(owner, ticket.id)) < 2:
                assert time.monotonic() < deadline, "the client did not subscribe again"
                await asyncio.sleep(0.1)
            await asyncio.to_thread(decide, owner, ticket.id, "refuse")
            await asyncio.wait_for(watching, 15)
            return seen
        finally:
            await peer.close()

    seen = asyncio.run(run())
    # The second subscription's first status (still pending) is not told twice.
    assert [s.state for s in seen] == ["pending", "refused"]
    assert seen[1].reason == "refused_by_operator"
    entries = watch_entries(owner, ticket.id)
    assert [e["decision"] for e in entries] == ["allow", "allow"]
    assert len({e["nonce"] for e in entries}) == 2  # a new signed request each time


def test_an_audit_entry_names_the_first_status_sent(
    fed: Federation, owner: NodeHandle, de: ClientIdentity
) -> None:
    """The entry's response digest and signature are those of the first status: what the
    subscription disclosed when it opened."""
    from federation.serde_tickets import ticket_status_body

    ticket = open_ticket(owner)
    decide(owner, ticket.id)

    async def run() -> list[TicketStatus]:
        peer = client(fed, de, owner)
        try:
            return [s async for s in peer.watch_ticket(ticket.id)]
        finally:
            await peer.close()

    [status] = asyncio.run(run())  # already decided: one status, and the stream ends
    assert status.state == "approved" and status.decided
    [entry] = watch_entries(owner, ticket.id)
    assert entry["response_sha256"] == hashlib.sha256(ticket_status_body(status)).hexdigest()


def test_the_cli_watches_until_the_decision(fed: Federation) -> None:
    """`liaison query ticket --watch` on DE-BKA's node, asking the federation's own FR-DGPN
    (the directory's endpoint): one JSON object a line, exit 0 at the decision."""
    fr = fed.nodes[OWNER]
    ticket = open_ticket(fr)
    command = [
        sys.executable, "-m", "node.cli", "query", "ticket",
        "--config", str(fed.nodes[ASKER].config_path),
        "--peer", OWNER, "--ticket", ticket.id, "--watch", "--json",
    ]  # fmt: skip
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert (first["id"], first["state"]) == (ticket.id, "pending")
        decide(fr, ticket.id)
        rest, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    lines = [json.loads(line) for line in rest.splitlines()]
    assert [doc["state"] for doc in lines] == ["approved"]
    assert lines[0]["decided_at"]

    text = liaison(
        "query", "ticket", "--config", str(fed.nodes[ASKER].config_path),
        "--peer", OWNER, "--ticket", ticket.id, "--watch",
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "approved" in text.stdout and ticket.id in text.stdout

    unknown = liaison(
        "query", "ticket", "--config", str(fed.nodes[ASKER].config_path),
        "--peer", OWNER, "--ticket", "tkt_nope", "--watch", "--json",
    )  # fmt: skip
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines()[-1] == (
        f"liaison: error: {OWNER}: no ticket 'tkt_nope' of yours"
    )


def test_the_requester_withdraws_its_ticket_and_its_watch_is_told(
    fed: Federation, owner: NodeHandle, de: ClientIdentity
) -> None:
    """`liaison query ticket --withdraw` on DE-BKA's node: the ticket is withdrawn (audited,
    signed answer), a watch of it sees `withdrawn` at once and ends; withdrawing again, or
    another node withdrawing it, is refused; its record can no longer be collected."""
    fr = fed.nodes[OWNER]
    ticket = open_ticket(fr)
    other = open_ticket(fr)
    nl = fed.nodes[OTHER].identity()

    async def refused_for_nl() -> tuple[str, ...]:
        peer = PeerClient.for_member(nl, fed.member(OWNER))
        try:
            with pytest.raises(InvalidRequest) as err:
                await peer.withdraw_ticket(other.id, timeout=10)
            return err.value.reasons
        finally:
            await peer.close()

    assert asyncio.run(refused_for_nl()) == ("unknown_ticket",)

    async def watched_while_withdrawn() -> list[TicketStatus]:
        peer = PeerClient.for_member(de, fed.member(OWNER))
        seen: list[TicketStatus] = []
        first = asyncio.Event()
        try:
            watching = asyncio.create_task(collect(peer.watch_ticket(ticket.id), seen, first))
            await asyncio.wait_for(first.wait(), 10)
            done = await asyncio.to_thread(
                liaison,
                "query", "ticket", "--config", str(fed.nodes[ASKER].config_path),
                "--peer", OWNER, "--ticket", ticket.id, "--withdraw", "--json",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            doc = json.loads(done.stdout)
            assert (doc["state"], doc["reason"]) == ("withdrawn", "withdrawn")
            entries = [json.loads(x) for x in (fr.folder / "audit.log").read_text().splitlines()]
            [entry] = [e for e in entries if e["id"] == doc["audit_entry"]]
            assert (entry["method"], entry["ticket"], entry["peer"]) == (
                "WithdrawTicket",
                ticket.id,
                ASKER,
            )
            await asyncio.wait_for(watching, 10)
            return seen
        finally:
            await peer.close()

    seen = asyncio.run(watched_while_withdrawn())
    assert [s.state for s in seen] == ["pending", "withdrawn"]

    again = liaison(
        "query", "ticket", "--config", str(fed.nodes[ASKER].config_path),
        "--peer", OWNER, "--ticket", ticket.id, "--withdraw",
    )  # fmt: skip
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "is already withdrawn" in again.stderr
    assert "only a pending ticket can be withdrawn" in again.stderr
    status = liaison(
        "query", "ticket", "--config", str(fed.nodes[ASKER].config_path),
        "--peer", OWNER, "--ticket", other.id, "--json",
    )  # fmt: skip
    assert json.loads(status.stdout)["state"] == "pending"  # NL's attempt changed nothing
