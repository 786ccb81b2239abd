"""Tickets (node.tickets) on every configured database: each transition, each refusal, expiry
on an injected clock, and two operators racing to approve one ticket.

SQLite always; PostgreSQL too when ``LIAISON_TEST_POSTGRES_URL`` is set, each test in a fresh
database (the ``postgres_url`` fixture). The race runs in two processes on PostgreSQL, as two
replicas would, and in two threads on SQLite.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from federation.vocabulary import LegalBasis
from node.database import StoreUnavailable
from node.tickets import (
    MAX_REASON,
    AlreadyDelivered,
    InvalidDecision,
    NotYourTicket,
    Ticket,
    TicketError,
    TicketExpired,
    TicketNotApproved,
    TicketNotPending,
    TicketState,
    TicketStore,
    UnknownTicket,
)
from tests.conftest import DatabaseAway

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("LIAISON_TEST_POSTGRES_URL") else [])
T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
HOURS_48 = timedelta(hours=48)
FIELDS = ("family_name", "given_name", "date_of_birth", "address", "photo")


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def tickets(url: str) -> Iterator[TicketStore]:
    store = TicketStore(url)
    store.create_schema()
    yield store
    store.close()


def open_one(
    store: TicketStore, requester: str = "DE-BKA", now: datetime = T0, **over: Any
) -> Ticket:
    args: dict[str, Any] = {
        "requester": requester,
        "record_ref": "rec_aaaaaaaaaaaaaaaaaaaa",
        "category": "travel_document",
        "purpose": "criminal_investigation",
        "legal_basis": LegalBasis.MLAT,
        "legal_reference": "MLAT-2026-0042",
        "case_reference": "CASE-7",
        "handling_code": "H1",
        "redact": ["photo", "address"],
        "retention_days": 90,
        "deadline_at": now + HOURS_48,
        "request_entry": "e" * 32,
        "now": now,
    }
    args.update(over)
    return store.open(**args)


class TestTicketStore:
    def test_open_is_pending_with_everything_kept(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        assert re.fullmatch(r"tkt_[a-z2-7]{20}", ticket.id)
        assert ticket.state is TicketState.PENDING
        assert ticket.requester == "DE-BKA"
        assert ticket.legal_basis is LegalBasis.MLAT
        assert ticket.legal_reference == "MLAT-2026-0042"
        assert ticket.case_reference == "CASE-7"
        assert ticket.handling_code == "H1"
        assert ticket.redact == ("address", "photo")  # sorted
        assert ticket.extra_redact == ()
        assert ticket.retention_days == 90
        assert ticket.created_at == T0
        assert ticket.created_at.tzinfo is UTC
        assert ticket.deadline_at == T0 + HOURS_48
        assert (ticket.decided_at, ticket.operator, ticket.reason) == (None, "", "")
        assert ticket.delivered_at is None
        assert ticket.request_entry == "e" * 32
        assert ticket.time_to_decision is None
        assert tickets.get(ticket.id) == ticket

    def test_open_refuses_a_deadline_not_in_the_future_and_naive_times(
        self, tickets: TicketStore
    ) -> None:
        with pytest.raises(ValueError, match="deadline"):
            open_one(tickets, deadline_at=T0)
        with pytest.raises(ValueError, match="zone"):
            open_one(tickets, now=T0.replace(tzinfo=None))
        with pytest.raises(ValueError, match="retention_days"):
            open_one(tickets, retention_days=0)
        assert tickets.list() == []

    def test_approve(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        at = T0 + timedelta(hours=3)
        approved = tickets.approve(ticket.id, " fr-operator-1 ", at, reason="MLAT checked")
        assert approved.state is TicketState.APPROVED
        assert (approved.operator, approved.reason) == ("fr-operator-1", "MLAT checked")
        assert approved.decided_at == at
        assert approved.time_to_decision == timedelta(hours=3)
        assert approved.redact == ("address", "photo")
        assert tickets.get(ticket.id) == approved

    def test_approval_adds_redactions_and_never_removes_the_policys(
        self, tickets: TicketStore
    ) -> None:
        ticket = open_one(tickets)
        approved = tickets.approve(
            ticket.id, "op", T0, extra_redact=["given_name", "photo"], fields=FIELDS
        )
        assert approved.redact == ("address", "photo")
        assert approved.extra_redact == ("given_name", "photo")
        assert approved.withheld == ("address", "given_name", "photo")

    def test_approval_naming_a_field_the_record_lacks_changes_nothing(
        self, tickets: TicketStore
    ) -> None:
        ticket = open_one(tickets)
        with pytest.raises(InvalidDecision) as err:
            tickets.approve(ticket.id, "op", T0, extra_redact=["photo", "shoe_size"], fields=FIELDS)
        assert err.value.reason == "unknown_field"
        assert err.value.fields == ("shoe_size",)
        assert str(err.value) == (
            "no such field in the record: shoe_size "
            f"(the record's payload fields: {', '.join(sorted(FIELDS))})"
        )
        with pytest.raises(InvalidDecision, match="no such field"):
            tickets.approve(ticket.id, "op", T0, extra_redact=["photo"])  # no fields given
        assert tickets.get(ticket.id) == ticket

    def test_refuse_needs_a_bounded_reason(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        for blank in ("", "   \n"):
            with pytest.raises(InvalidDecision) as err:
                tickets.refuse(ticket.id, "op", blank, T0)
            assert err.value.reason == "reason_required"
        with pytest.raises(InvalidDecision) as err:
            tickets.refuse(ticket.id, "op", "x" * (MAX_REASON + 1), T0)
        assert err.value.reason == "reason_too_long"
        with pytest.raises(InvalidDecision) as err:
            tickets.refuse(ticket.id, " ", "no legal basis", T0)
        assert err.value.reason == "operator_required"
        assert tickets.get(ticket.id) == ticket
        refused = tickets.refuse(ticket.id, "op", "  MLAT does not cover this case ", T0)
        assert refused.state is TicketState.REFUSED
        assert refused.reason == "MLAT does not cover this case"
        assert refused.operator == "op"

    def test_a_decided_ticket_is_not_decided_again(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        tickets.approve(ticket.id, "alice", T0 + timedelta(minutes=5))
        attempts: tuple[Callable[[], object], ...] = (
            lambda: tickets.approve(ticket.id, "bob", T0 + timedelta(minutes=6)),
            lambda: tickets.refuse(ticket.id, "bob", "too late", T0 + timedelta(minutes=6)),
            lambda: tickets.withdraw(ticket.id, "DE-BKA", T0 + timedelta(minutes=6)),
        )
        for attempt in attempts:
            with pytest.raises(TicketNotPending) as err:
                attempt()
            assert err.value.reason == "ticket_not_pending"
            assert err.value.state is TicketState.APPROVED
            assert err.value.operator == "alice"
            assert err.value.decided_at == T0 + timedelta(minutes=5)
            assert "already approved by alice" in str(err.value)
        assert tickets.get(ticket.id).operator == "alice"

    def test_no_decision_after_the_deadline(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        due = ticket.deadline_at
        with pytest.raises(TicketExpired) as err:
            tickets.approve(ticket.id, "op", due)  # the deadline itself is too late
        assert err.value.reason == "ticket_expired"
        assert err.value.deadline_at == due
        with pytest.raises(TicketExpired):
            tickets.refuse(ticket.id, "op", "late", due + timedelta(seconds=1))
        with pytest.raises(TicketExpired):
            tickets.withdraw(ticket.id, "DE-BKA", due + timedelta(days=1))
        assert tickets.get(ticket.id).state is TicketState.PENDING  # until expire_due runs
        approved = tickets.approve(ticket.id, "op", due - timedelta(microseconds=1))
        assert approved.state is TicketState.APPROVED

    def test_unknown_ticket(self, tickets: TicketStore) -> None:
        open_one(tickets)
        attempts: tuple[Callable[[], object], ...] = (
            lambda: tickets.get("tkt_nosuchticket"),
            lambda: tickets.approve("tkt_nosuchticket", "op", T0),
            lambda: tickets.refuse("tkt_nosuchticket", "op", "why", T0),
            lambda: tickets.withdraw("tkt_nosuchticket", "DE-BKA", T0),
            lambda: tickets.mark_delivered("tkt_nosuchticket", "DE-BKA", T0),
        )
        for attempt in attempts:
            with pytest.raises(UnknownTicket) as err:
                attempt()
            assert err.value.reason == "unknown_ticket"
            assert err.value.ticket_id == "tkt_nosuchticket"

    def test_withdraw_only_by_its_requester(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        with pytest.raises(NotYourTicket) as err:
            tickets.withdraw(ticket.id, "NL-KLPD", T0)
        assert err.value.reason == "not_your_ticket"
        assert tickets.get(ticket.id).state is TicketState.PENDING
        withdrawn = tickets.withdraw(ticket.id, "DE-BKA", T0 + timedelta(hours=1))
        assert withdrawn.state is TicketState.WITHDRAWN
        assert withdrawn.decided_at == T0 + timedelta(hours=1)
        assert withdrawn.operator == ""
        with pytest.raises(TicketNotPending, match="already withdrawn"):
            tickets.approve(ticket.id, "op", T0 + timedelta(hours=2))

    def test_get_for_a_requester(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        assert tickets.get(ticket.id, requester="DE-BKA") == ticket
        with pytest.raises(NotYourTicket):
            tickets.get(ticket.id, requester="NL-KLPD")

    def test_delivered_once_only_to_its_requester(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        with pytest.raises(TicketNotApproved) as not_yet:
            tickets.mark_delivered(ticket.id, "DE-BKA", T0)
        assert not_yet.value.reason == "ticket_not_approved"
        assert not_yet.value.state is TicketState.PENDING
        tickets.approve(ticket.id, "op", T0 + timedelta(hours=1))
        with pytest.raises(NotYourTicket):
            tickets.mark_delivered(ticket.id, "NL-KLPD", T0 + timedelta(hours=2))
        delivered = tickets.mark_delivered(ticket.id, "DE-BKA", T0 + timedelta(hours=2))
        assert delivered.delivered_at == T0 + timedelta(hours=2)
        assert delivered.state is TicketState.APPROVED
        with pytest.raises(AlreadyDelivered) as again:
            tickets.mark_delivered(ticket.id, "DE-BKA", T0 + timedelta(hours=3))
        assert again.value.reason == "already_delivered"
        assert again.value.delivered_at == T0 + timedelta(hours=2)
        assert tickets.get(ticket.id).delivered_at == T0 + timedelta(hours=2)

    def test_undo_puts_back_exactly_one_unaudited_transition(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        approved = tickets.approve(ticket.id, "op", T0, extra_redact=["x"], fields=("x",))
        assert tickets.undo(approved)
        back = tickets.get(ticket.id)
        assert (back.state, back.decided_at, back.operator, back.withheld) == (
            TicketState.PENDING,
            None,
            "",
            ("address", "photo"),
        )
        assert not tickets.undo(approved)  # already put back: nothing to undo
        assert not tickets.undo(back)  # a pending ticket has no transition to undo
        # A decision made since is not the one to undo.
        refused = tickets.refuse(ticket.id, "op2", "no", T0 + timedelta(hours=1))
        assert not tickets.undo(approved) and tickets.get(ticket.id) == refused

    def test_undo_of_a_delivery_lets_it_be_collected(self, tickets: TicketStore) -> None:
        ticket = open_one(tickets)
        tickets.approve(ticket.id, "op", T0)
        delivered = tickets.mark_delivered(ticket.id, "DE-BKA", T0 + timedelta(hours=1))
        assert tickets.undo(delivered)
        after = tickets.get(ticket.id)
        assert after.state is TicketState.APPROVED and after.delivered_at is None
        assert tickets.mark_delivered(ticket.id, "DE-BKA", T0 + timedelta(hours=2)).delivered_at

    def test_refused_and_expired_tickets_deliver_nothing(self, tickets: TicketStore) -> None:
        refused = open_one(tickets)
        tickets.refuse(refused.id, "op", "no", T0)
        lapsed = open_one(tickets)
        tickets.expire_due(lapsed.deadline_at)
        for ticket, state in ((refused, TicketState.REFUSED), (lapsed, TicketState.EXPIRED)):
            with pytest.raises(TicketNotApproved) as err:
                tickets.mark_delivered(ticket.id, "DE-BKA", T0 + HOURS_48 * 2)
            assert err.value.state is state

    def test_expire_due_on_an_injected_clock(self, tickets: TicketStore) -> None:
        soon = open_one(tickets, deadline_at=T0 + timedelta(hours=1))
        later = open_one(tickets, deadline_at=T0 + timedelta(hours=2))
        decided = open_one(tickets, deadline_at=T0 + timedelta(minutes=30))
        tickets.approve(decided.id, "op", T0)
        assert tickets.expire_due(T0 + timedelta(minutes=59)) == []
        moved = tickets.expire_due(T0 + timedelta(hours=1))  # a deadline is due at its instant
        assert [t.id for t in moved] == [soon.id]
        assert moved[0].state is TicketState.EXPIRED
        assert moved[0].decided_at == T0 + timedelta(hours=1)
        assert tickets.get(soon.id) == moved[0]
        assert tickets.expire_due(T0 + timedelta(hours=1, minutes=30)) == []  # never twice
        moved = tickets.expire_due(T0 + timedelta(days=3))
        assert [t.id for t in moved] == [later.id]
        assert tickets.get(decided.id).state is TicketState.APPROVED
        with pytest.raises(TicketNotPending, match="already expired"):
            tickets.approve(soon.id, "op", T0)  # even with a clock before the deadline

    def test_list_filters_and_orders_oldest_first(self, tickets: TicketStore) -> None:
        a = open_one(tickets, now=T0)
        b = open_one(tickets, requester="NL-KLPD", now=T0 + timedelta(minutes=1))
        c = open_one(tickets, now=T0 + timedelta(minutes=2))
        tickets.refuse(b.id, "op", "no", T0 + timedelta(minutes=3))
        assert [t.id for t in tickets.list()] == [a.id, b.id, c.id]
        assert [t.id for t in tickets.list(state=TicketState.PENDING)] == [a.id, c.id]
        assert [t.id for t in tickets.list(requester="NL-KLPD")] == [b.id]
        assert tickets.list(state=TicketState.PENDING, requester="NL-KLPD") == []
        assert [t.id for t in tickets.list(limit=2)] == [a.id, b.id]
        assert tickets.list(limit=0) == []
        assert [t.id for t in tickets.list(state="refused")] == [b.id]  # a name from the CLI
        with pytest.raises(ValueError, match="'closed' is not a valid TicketState"):
            tickets.list(state="closed")

    def test_counts_and_ages_for_metrics(self, tickets: TicketStore) -> None:
        assert tickets.open_by_state() == {state: 0 for state in TicketState}
        assert tickets.pending_ages(T0) == []
        old = open_one(tickets, now=T0, deadline_at=T0 + timedelta(hours=10))
        open_one(tickets, now=T0 + timedelta(hours=4))
        refused = open_one(tickets, now=T0)
        tickets.refuse(refused.id, "op", "no", T0 + timedelta(hours=1))
        counts = tickets.open_by_state()
        assert counts[TicketState.PENDING] == 2
        assert counts[TicketState.REFUSED] == 1
        assert counts[TicketState.APPROVED] == 0
        ages = tickets.pending_ages(T0 + timedelta(hours=8))
        assert [(a.age, a.allowed) for a in ages] == [
            (timedelta(hours=8), timedelta(hours=10)),
            (timedelta(hours=4), HOURS_48),
        ]
        assert ages[0].fraction == pytest.approx(0.8)
        tickets.expire_due(old.deadline_at)
        assert tickets.open_by_state()[TicketState.EXPIRED] == 1

    def test_two_operators_approving_at_once_on_threads(self, url: str) -> None:
        """Two stores (two operators' CLIs), one thread each, released together: one wins."""
        stores = [TicketStore(url), TicketStore(url)]
        stores[0].create_schema()
        try:
            for _round in range(20):
                ticket = open_one(stores[0])
                results = _approve_on_threads(stores, ticket.id)
                _exactly_one_won(results, stores[0].get(ticket.id))
        finally:
            for store in stores:
                store.close()


def test_every_error_is_a_ticket_error_with_a_reason() -> None:
    classes: tuple[type[TicketError], ...] = (
        UnknownTicket,
        NotYourTicket,
        TicketNotPending,
        TicketExpired,
        TicketNotApproved,
        AlreadyDelivered,
    )
    reasons = {cls.reason for cls in classes}
    assert len(reasons) == len(classes)
    assert all(re.fullmatch(r"[a-z_]+", reason) for reason in reasons)
    assert issubclass(InvalidDecision, TicketError)


def _approve_on_threads(stores: list[TicketStore], ticket_id: str) -> list[object]:
    barrier = threading.Barrier(len(stores))
    results: list[object] = [None] * len(stores)

    def approve(n: int) -> None:
        barrier.wait()
        try:
            results[n] = stores[n].approve(ticket_id, f"op{n}", T0)
        except TicketError as exc:
            results[n] = exc

    threads = [threading.Thread(target=approve, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _exactly_one_won(results: list[object], final: Ticket) -> None:
    winners = [r for r in results if isinstance(r, Ticket)]
    losers = [r for r in results if isinstance(r, TicketNotPending)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert winners[0] == final
    assert losers[0].operator == final.operator
    assert losers[0].state is TicketState.APPROVED


def _approver(url: str, name: str, jobs: Any, results: Any, barrier: Any) -> None:
    """One operator in its own process: approve each ticket id it is given, at the same
    moment as the other, and report the winner's operator or the loser's error."""
    store = TicketStore(url)
    try:
        while (ticket_id := jobs.get()) is not None:
            barrier.wait()
            try:
                results.put((name, "won", store.approve(ticket_id, name, T0).operator))
            except TicketNotPending as exc:
                results.put((name, exc.reason, exc.operator))
    finally:
        store.close()


def test_two_operator_processes_race_on_postgresql(postgres_url: str) -> None:
    """Two processes (two replicas, or two operators' CLIs) approve the same tickets at the
    same moment, round after round: each round exactly one wins, the other is told who did."""
    rounds = 40
    store = TicketStore(postgres_url)
    store.create_schema()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    queues = [context.Queue(), context.Queue()]
    workers = [
        context.Process(target=_approver, args=(postgres_url, f"op{n}", q, results, barrier))
        for n, q in enumerate(queues)
    ]
    for worker in workers:
        worker.start()
    try:
        wins = {"op0": 0, "op1": 0}
        for _round in range(rounds):
            ticket = open_one(store)
            for queue in queues:
                queue.put(ticket.id)
            outcome = sorted(results.get(timeout=60) for _ in queues)
            winner = store.get(ticket.id).operator
            won = [o for o in outcome if o[1] == "won"]
            lost = [o for o in outcome if o[1] == "ticket_not_pending"]
            assert len(won) == 1 and len(lost) == 1, outcome
            assert won[0][0] == won[0][2] == winner
            assert lost[0][2] == winner  # the loser is told who approved it
            wins[winner] += 1
        assert sum(wins.values()) == rounds
    finally:
        for queue in queues:
            queue.put(None)
        for worker in workers:
            worker.join(timeout=60)
        store.close()
    assert [w.exitcode for w in workers] == [0, 0]


def test_a_database_that_is_down_gives_a_clear_error() -> None:
    store = TicketStore("postgresql+psycopg://liaison:secret@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StoreUnavailable) as err:
            store.get("tkt_x")
        message = str(err.value)
        assert "reading a ticket failed" in message
        assert "127.0.0.1:1/nowhere" in message
        assert "check that the database is up" in message
        assert "secret" not in message
        with pytest.raises(StoreUnavailable, match="moving a ticket to approved"):
            store.approve("tkt_x", "op", T0)
    finally:
        store.close()


def test_postgresql_going_away_and_coming_back(
    postgres_url: str, database_away: DatabaseAway
) -> None:
    """Sessions killed and no new one let in: a clear error, nothing half done; back: the
    next call works on a fresh connection."""
    store = TicketStore(postgres_url)
    store.create_schema()
    ticket = open_one(store)
    try:
        with database_away(postgres_url):
            with pytest.raises(StoreUnavailable, match="check that the database is up"):
                store.approve(ticket.id, "op", T0)
            with pytest.raises(StoreUnavailable):
                store.expire_due(T0 + HOURS_48)
        assert store.get(ticket.id) == ticket
        assert store.approve(ticket.id, "op", T0).state is TicketState.APPROVED
    finally:
        store.close()
