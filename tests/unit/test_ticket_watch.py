"""A ticket watch on plain objects (node/ticket_watch.py): real stores on SQLite read through
the real FetchService, an injected clock. A watch tells the status when it opens, then
each change (woken by the desk at once, or found by its poll), never the same status twice,
and ends at the decision; a peer's open watches are bounded and every way a watch ends
gives its slot back; a stopping node ends them all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from federation.directory import Member, MemberStatus
from federation.model import Envelope, TicketQuery, TicketStatus
from federation.vocabulary import LegalBasis
from node.errors import Kind, Refusal
from node.fetching import FetchService, Seen
from node.policy import Decision
from node.records import NewRecord
from node.references import References
from node.service import NodeIdentity
from node.store import RecordStore
from node.ticket_watch import NODE_STOPPING, TOO_MANY_WATCHES, TicketWatches, Watch
from node.tickets import TicketStore

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
DE = Member("DE-BKA", "de:1", "a" * 64, "b" * 64, MemberStatus.ACTIVE)
NL = Member("NL-KLPD", "nl:1", "c" * 64, "d" * 64, MemberStatus.ACTIVE)
# A poll no test waits for: what a test sees within a second came from a wake-up.
NEVER = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def _unused_policy(policy_input: Mapping[str, Any]) -> Decision:
    return Decision(False, ("unused",), {}, "rev-1")


class Owner:
    def __init__(self, tmp: Path) -> None:
        url = f"sqlite:///{tmp / 'node.db'}"
        self.records, self.tickets = RecordStore(url), TicketStore(url)
        self.records.create_schema()
        self.tickets.create_schema()
        self.records.add_records([NewRecord("rec_1", "travel_document", "H1", (), (), {})])
        self.clock = Clock()
        self.fetching = FetchService(
            NodeIdentity("FR-DGPN", "FR", "bilateral"),
            self.records,
            self.tickets,
            References(bytes(32), timedelta(days=30)),
            _unused_policy,
            self.clock,
        )
        self.counts: dict[str, int] = {}

    def watches(self, poll_s: float = NEVER, max_per_peer: int = 16) -> TicketWatches:
        return TicketWatches(
            self.fetching,
            poll_s=poll_s,
            max_per_peer=max_per_peer,
            on_count=self.counts.__setitem__,
        )

    def open_ticket(self, requester: str = "DE-BKA", hours: float = 48) -> str:
        return self.tickets.open(
            requester=requester,
            record_ref="rec_1",
            category="travel_document",
            purpose="criminal_investigation",
            legal_basis=LegalBasis.MLAT,
            legal_reference="MLAT-1",
            case_reference="CASE-1",
            handling_code="H1",
            redact=(),
            retention_days=30,
            deadline_at=self.clock.now + timedelta(hours=hours),
            request_entry="",
            now=self.clock.now,
        ).id


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Owner]:
    node = Owner(tmp_path)
    yield node
    node.tickets.close()
    node.records.close()


def query(ticket_id: str, who: Member = DE, purpose: str = "") -> TicketQuery:
    return TicketQuery(Envelope(who.node_id, purpose, nonce=b"n" * 16), ticket_id)


async def next_of(rest: AsyncIterator[TicketStatus], within: float = 2.0) -> TicketStatus:
    return await asyncio.wait_for(anext(rest), within)


def test_the_desk_wakes_a_watch_at_once_and_it_ends_at_the_decision(owner: Owner) -> None:
    ticket_id = owner.open_ticket()

    async def run() -> list[TicketStatus]:
        watches = owner.watches()
        seen = Seen()
        watch = await watches.open(DE, query(ticket_id), seen)
        assert (seen.ticket, seen.category) == (ticket_id, "travel_document")
        rest = watch.rest()
        told = [watch.first]
        owner.tickets.approve(ticket_id, "alice", owner.clock.now)
        watches.changed(ticket_id)
        told.append(await next_of(rest))
        with pytest.raises(StopAsyncIteration):
            await next_of(rest)  # decided: nothing more is waited for
        watch.close()
        return told

    told = asyncio.run(run())
    assert [s.state for s in told] == ["pending", "approved"]
    assert not told[0].decided and told[1].decided


def test_a_change_no_desk_told_of_is_found_by_the_poll(owner: Owner) -> None:
    """Another replica's operator: this process's desk never saw it."""
    ticket_id = owner.open_ticket()

    async def run() -> TicketStatus:
        watch = await owner.watches(poll_s=0.05).open(DE, query(ticket_id), Seen())
        owner.tickets.refuse(ticket_id, "bob", "no MLAT", owner.clock.now)
        return await next_of(watch.rest())

    status = asyncio.run(run())
    assert (status.state, status.reason) == ("refused", "refused_by_operator")


def test_a_deadline_passing_is_told_as_expired(owner: Owner) -> None:
    ticket_id = owner.open_ticket(hours=1)

    async def run() -> TicketStatus:
        watch = await owner.watches(poll_s=0.05).open(DE, query(ticket_id), Seen())
        owner.clock.now += timedelta(hours=2)  # no expiry job ran: the read tells it
        return await next_of(watch.rest())

    status = asyncio.run(run())
    assert (status.state, status.reason) == ("expired", "ticket_expired")


def test_a_wake_up_without_a_change_tells_nothing(owner: Owner) -> None:
    ticket_id = owner.open_ticket()

    async def run() -> None:
        watches = owner.watches()
        watch = await watches.open(DE, query(ticket_id), Seen())
        rest = watch.rest()
        waiting = asyncio.ensure_future(anext(rest))
        for _ in range(3):
            watches.changed(ticket_id)
            await asyncio.sleep(0.05)
        assert not waiting.done()  # woken three times, read three times, nothing new
        waiting.cancel()
        watch.close()

    asyncio.run(run())


def test_open_watches_are_bounded_per_peer_and_every_end_frees_a_slot(owner: Owner) -> None:
    mine = [owner.open_ticket() for _ in range(3)]
    theirs = owner.open_ticket(requester="NL-KLPD")

    async def run() -> None:
        watches = owner.watches(max_per_peer=2)
        first = await watches.open(DE, query(mine[0]), Seen())
        second = await watches.open(DE, query(mine[1]), Seen())
        assert owner.counts["DE-BKA"] == 2
        with pytest.raises(Refusal) as err:
            await watches.open(DE, query(mine[2]), Seen())
        assert err.value.kind is Kind.TOO_MANY and err.value.reasons == (TOO_MANY_WATCHES,)
        assert "max_watches_per_peer" in err.value.message
        other = await watches.open(NL, query(theirs, NL), Seen())  # each peer its own
        first.close()
        first.close()  # once only
        assert watches.open_count("DE-BKA") == 1
        third = await watches.open(DE, query(mine[2]), Seen())
        for watch in (second, third, other):
            watch.close()
        assert owner.counts == {"DE-BKA": 0, "NL-KLPD": 0}
        assert watches.open_count("DE-BKA") == 0

    asyncio.run(run())


@pytest.mark.parametrize("whose", ["another node's", "unknown"])
def test_a_ticket_not_the_requesters_is_unknown_and_takes_no_slot(owner: Owner, whose: str) -> None:
    ticket_id = owner.open_ticket(requester="NL-KLPD") if whose != "unknown" else "tkt_nope"

    async def run() -> Refusal:
        watches = owner.watches(max_per_peer=1)
        with pytest.raises(Refusal) as err:
            await watches.open(DE, query(ticket_id), Seen())
        assert watches.open_count("DE-BKA") == 0 and owner.counts["DE-BKA"] == 0
        return err.value

    refusal = asyncio.run(run())
    assert refusal.reasons == ("unknown_ticket",) and refusal.kind is Kind.NOT_FOUND


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        (Envelope("NL-KLPD", "", nonce=b"n" * 16), "requester_mismatch"),
        (Envelope("DE-BKA", "curiosity", nonce=b"n" * 16), "purpose_unknown"),
    ],
)
def test_the_envelope_is_checked(owner: Owner, envelope: Envelope, reason: str) -> None:
    ticket_id = owner.open_ticket()
    with pytest.raises(Refusal) as err:
        asyncio.run(owner.watches().open(DE, TicketQuery(envelope, ticket_id), Seen()))
    assert err.value.reasons == (reason,)


def test_a_stated_purpose_of_the_federation_is_accepted(owner: Owner) -> None:
    ticket_id = owner.open_ticket()

    async def run() -> Watch:
        return await owner.watches().open(
            DE, query(ticket_id, purpose="criminal_investigation"), Seen()
        )

    assert asyncio.run(run()).first.state == "pending"


def test_a_stopping_node_ends_every_watch_and_opens_none(owner: Owner) -> None:
    ticket_id = owner.open_ticket()

    async def run() -> None:
        watches = owner.watches()
        watch = await watches.open(DE, query(ticket_id), Seen())
        rest = watch.rest()
        waiting = asyncio.ensure_future(anext(rest))
        await asyncio.sleep(0.05)
        watches.close()
        with pytest.raises(Refusal) as err:
            await asyncio.wait_for(waiting, 2)
        assert err.value.reasons == (NODE_STOPPING,) and err.value.kind is Kind.UNAVAILABLE
        watch.close()
        with pytest.raises(Refusal) as err:
            await watches.open(DE, query(ticket_id), Seen())
        assert err.value.reasons == (NODE_STOPPING,)
        assert watches.open_count("DE-BKA") == 0

    asyncio.run(run())


def test_the_settings_are_checked(owner: Owner) -> None:
    with pytest.raises(ValueError, match="watch_poll_s"):
        owner.watches(poll_s=0)
    with pytest.raises(ValueError, match="max_watches_per_peer"):
        owner.watches(max_per_peer=0)


@pytest.mark.parametrize(
    ("standing", "reason"),
    [
        (replace(DE, status=MemberStatus.REVOKED), "member_revoked"),
        (None, "unknown_member"),
    ],
)
def test_a_peer_revoked_while_watching_loses_its_watch(
    owner: Owner, standing: Member | None, reason: str
) -> None:
    """A watch may last days; the directory may revoke the peer meanwhile. Suspended
    peers keep theirs, as they may still ask GetTicket."""
    ticket_id = owner.open_ticket()
    directory = {"DE-BKA": DE}

    async def run() -> Refusal:
        watches = TicketWatches(owner.fetching, poll_s=0.05, max_per_peer=4, member=directory.get)
        watch = await watches.open(DE, query(ticket_id), Seen())
        rest = watch.rest()
        directory["DE-BKA"] = replace(DE, status=MemberStatus.SUSPENDED)
        waiting = asyncio.ensure_future(anext(rest))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # suspended: still watching
        if standing is None:
            del directory["DE-BKA"]
        else:
            directory["DE-BKA"] = standing
        with pytest.raises(Refusal) as err:
            await asyncio.wait_for(waiting, 2.0)
        watch.close()
        assert watches.open_count("DE-BKA") == 0
        return err.value

    refusal = asyncio.run(run())
    assert refusal.reasons == (reason,)
