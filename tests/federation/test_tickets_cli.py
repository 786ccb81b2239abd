"""`liaison tickets` as an operator runs it against a running node (real processes): every
transition is made by the node over its admin socket and audited there.

Tickets are opened by writing them into the node's database (TicketStore.open on its store
URL), as the node's Fetch does.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from federation.vocabulary import LegalBasis
from node.local.federation import Federation, NodeHandle
from node.store import RecordStore
from node.tickets import Ticket, TicketState, TicketStore
from tests.federation.helpers import clone_node, scrape, set_keys


def liaison(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def node(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    """FR-DGPN's copy with its own database, expiring tickets every second."""
    handle = clone_node(fed, "FR-DGPN", tmp_path_factory.mktemp("tickets") / "FR-DGPN")
    toml = handle.config_path
    toml.write_text(set_keys(toml.read_text(), "tickets", {"expire_interval_s": "1"}))
    handle.start()
    try:
        handle.wait_ready()
        yield handle
    finally:
        handle.stop()


def _store(node: NodeHandle) -> TicketStore:
    return TicketStore(node.config().store.url)


def record_ref(node: NodeHandle) -> tuple[str, list[str]]:
    """A record of the node's, and its payload field names."""
    records = RecordStore(node.config().store.url)
    try:
        with records.engine.connect() as conn:
            ref = conn.execute(text("SELECT ref FROM records ORDER BY id LIMIT 1")).scalar_one()
        stored = records.get(ref)
        assert stored is not None
        return ref, sorted(stored.payload)
    finally:
        records.close()


def open_ticket(
    node: NodeHandle, *, used: timedelta = timedelta(0), left: timedelta = timedelta(hours=48)
) -> Ticket:
    """A pending ticket opened `used` ago, with `left` before its deadline."""
    now = datetime.now(UTC)
    store = _store(node)
    try:
        return store.open(
            requester="DE-BKA",
            record_ref=record_ref(node)[0],
            category="travel_document",
            purpose="criminal_investigation",
            legal_basis=LegalBasis.MLAT,
            legal_reference="MLAT-2026-17",
            case_reference="CASE-9",
            handling_code="H1",
            redact=("address",),
            retention_days=30,
            deadline_at=now + left,
            request_entry="e" * 32,
            now=now - used,
        )
    finally:
        store.close()


def current(node: NodeHandle, ticket_id: str) -> Ticket:
    store = _store(node)
    try:
        return store.get(ticket_id)
    finally:
        store.close()


def entries_for(node: NodeHandle, ticket_id: str) -> list[dict[str, object]]:
    lines = (node.folder / "audit.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("ticket") == ticket_id]


def sample(node: NodeHandle, name: str, **labels: str) -> float:
    return scrape(node, name, labels) or 0.0


def test_the_socket_is_the_node_users_alone(node: NodeHandle) -> None:
    socket = node.config().admin.socket
    mode = socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_list_show_and_approve_with_a_redaction(node: NodeHandle) -> None:
    ticket = open_ticket(node)
    toml = str(node.config_path)
    listed = liaison("tickets", "list", "--config", toml, "--state", "pending", "--json")
    assert listed.returncode == 0, listed.stderr
    assert ticket.id in [t["id"] for t in json.loads(listed.stdout)]
    shown = liaison("tickets", "show", ticket.id, "--config", toml)
    assert shown.returncode == 0, shown.stderr
    assert "MLAT-2026-17" in shown.stdout and "pending" in shown.stdout

    field = record_ref(node)[1][0]
    approved_before = sample(node, "liaison_tickets", state="approved")
    resolved_before = sample(node, "liaison_ticket_resolution_seconds_count", outcome="approved")
    done = liaison(
        "tickets", "approve", ticket.id, "--config", toml,
        "--operator", "alice", "--reason", "MLAT checked", "--redact", field,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"ticket {ticket.id} approved by alice" in done.stdout

    after = current(node, ticket.id)
    assert after.state is TicketState.APPROVED and after.extra_redact == (field,)
    [entry] = entries_for(node, ticket.id)
    assert entry["method"] == "TicketApprove" and entry["decision"] == "allow"
    assert entry["operator"] == "alice" and entry["note"] == "MLAT checked"
    assert entry["peer"] == "DE-BKA" and entry["withheld"] == [field]
    assert f"audit entry {entry['id']}" in done.stdout
    assert sample(node, "liaison_tickets", state="approved") == approved_before + 1
    assert (
        sample(node, "liaison_ticket_resolution_seconds_count", outcome="approved")
        == resolved_before + 1
    )

    again = liaison("tickets", "approve", ticket.id, "--config", toml, "--operator", "bob")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"liaison: error: ticket {ticket.id} is already approved by alice at "
        f"{after.decided_at.isoformat() if after.decided_at else ''}"
    ]
    assert len(entries_for(node, ticket.id)) == 1


def test_a_redaction_of_no_field_is_refused(node: NodeHandle) -> None:
    ticket = open_ticket(node)
    toml = str(node.config_path)
    bad = liaison("tickets", "approve", ticket.id, "--config", toml, "--redact", "shoe_size")
    assert bad.returncode == 2
    # The error names the fields the operator may withhold, as the record calls them.
    fields = ", ".join(record_ref(node)[1])
    assert bad.stderr.strip() == (
        "liaison: error: no such field in the record: shoe_size "
        f"(the record's payload fields: {fields})"
    )
    assert current(node, ticket.id).state is TicketState.PENDING
    assert entries_for(node, ticket.id) == []


def test_refuse_needs_a_reason_then_is_audited(node: NodeHandle) -> None:
    ticket = open_ticket(node)
    toml = str(node.config_path)
    bare = liaison("tickets", "refuse", ticket.id, "--config", toml)
    assert bare.returncode == 2
    assert bare.stderr.strip() == "liaison: error: a reason is required"
    assert current(node, ticket.id).state is TicketState.PENDING
    assert entries_for(node, ticket.id) == []

    done = liaison(
        "tickets", "refuse", ticket.id, "--config", toml,
        "--operator", "carol", "--reason", "no MLAT covers this case",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [entry] = entries_for(node, ticket.id)
    assert entry["method"] == "TicketRefuse" and entry["decision"] == "deny"
    assert entry["reasons"] == ["refused_by_operator"]
    assert entry["operator"] == "carol" and entry["note"] == "no MLAT covers this case"
    assert "withheld" not in entry
    assert current(node, ticket.id).state is TicketState.REFUSED


def test_the_operator_defaults_to_the_login_name(node: NodeHandle) -> None:
    import getpass

    ticket = open_ticket(node)
    done = liaison("tickets", "approve", ticket.id, "--config", str(node.config_path))
    assert done.returncode == 0, done.stderr
    [entry] = entries_for(node, ticket.id)
    assert entry["operator"] == getpass.getuser() and "note" not in entry


def test_two_racing_approvals_one_wins(node: NodeHandle) -> None:
    ticket = open_ticket(node)
    toml = str(node.config_path)
    command = [sys.executable, "-m", "node.cli", "tickets", "approve", ticket.id]
    racers = [
        subprocess.Popen(
            [*command, "--config", toml, "--operator", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alice", "bob")
    ]
    results = [(p.wait(60), *p.communicate()) for p in racers]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = current(node, ticket.id).operator
    loser_err = next(err for code, _, err in results if code == 2)
    assert f"is already approved by {winner} at" in loser_err
    assert len(loser_err.strip().splitlines()) == 1
    [entry] = entries_for(node, ticket.id)
    assert entry["operator"] == winner


def test_approve_after_the_deadline_is_refused(node: NodeHandle) -> None:
    ticket = open_ticket(node, used=timedelta(hours=2), left=timedelta(milliseconds=300))
    time.sleep(0.4)
    late = liaison("tickets", "approve", ticket.id, "--config", str(node.config_path))
    assert late.returncode == 2
    # The node's expiry job may have got there first: either way, one clear line.
    line = late.stderr.strip()
    assert (
        f"ticket {ticket.id} passed its deadline" in line
        or f"ticket {ticket.id} is already expired" in line
    ), line
    assert current(node, ticket.id).state in (TicketState.PENDING, TicketState.EXPIRED)
    assert all(e["method"] == "TicketExpire" for e in entries_for(node, ticket.id))


def test_the_expiry_job_expires_audits_and_counts(node: NodeHandle) -> None:
    _settle(node)
    misses = sample(node, "liaison_ticket_deadline_misses_total")
    expired = sample(node, "liaison_ticket_resolution_seconds_count", outcome="expired")
    ticket = open_ticket(node, left=timedelta(seconds=1))
    deadline = time.monotonic() + 15
    while current(node, ticket.id).state is TicketState.PENDING:
        assert time.monotonic() < deadline, "the expiry job did not expire the ticket"
        time.sleep(0.2)
    assert current(node, ticket.id).state is TicketState.EXPIRED
    [entry] = entries_for(node, ticket.id)
    assert entry["method"] == "TicketExpire" and entry["decision"] == "deny"
    assert entry["reasons"] == ["ticket_expired"] and "operator" not in entry
    assert sample(node, "liaison_ticket_deadline_misses_total") == misses + 1
    assert sample(node, "liaison_ticket_resolution_seconds_count", outcome="expired") == expired + 1


def _settle(node: NodeHandle) -> None:
    """Until no pending ticket is past its deadline (other tests' tickets expired), so
    that the counts that follow move for this test's ticket alone."""
    store, deadline = _store(node), time.monotonic() + 15
    try:
        while any(age.fraction >= 1 for age in store.pending_ages(datetime.now(UTC))):
            assert time.monotonic() < deadline, "overdue tickets were not expired"
            time.sleep(0.2)
    finally:
        store.close()


def test_a_ticket_near_its_deadline_shows_in_the_gauges(node: NodeHandle) -> None:
    near = sample(node, "liaison_tickets_pending_deadline_used", bucket="80to100")
    ticket = open_ticket(node, used=timedelta(hours=9), left=timedelta(hours=1))  # 90% used
    assert sample(node, "liaison_tickets_pending_deadline_used", bucket="80to100") == near + 1
    assert sample(node, "liaison_tickets_pending_deadline_used_max") >= 0.9
    done = liaison(
        "tickets", "refuse", ticket.id, "--config", str(node.config_path), "--reason", "late"
    )
    assert done.returncode == 0, done.stderr
    assert sample(node, "liaison_tickets_pending_deadline_used", bucket="80to100") == near


def test_the_log_still_verifies(node: NodeHandle) -> None:
    ok = liaison("audit", "verify", "--config", str(node.config_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_crashed_nodes_socket_is_replaced_at_start(node: NodeHandle) -> None:
    """Last in this module: it kills the node (as a crash would) and starts it again."""
    assert node.process is not None
    node.process.kill()
    node.process.wait(10)
    socket = node.config().admin.socket
    assert socket.exists()  # left behind
    node.process = None
    node.start()
    node.wait_ready()
    assert stat.S_IMODE(socket.stat().st_mode) == 0o600
    listed = liaison("tickets", "list", "--config", str(node.config_path), "--json")
    assert listed.returncode == 0, listed.stderr
    node.stop()
    assert not socket.exists()  # removed at a graceful stop


def test_no_node_running_is_one_line(fed: Federation, tmp_path: Path) -> None:
    stopped = clone_node(fed, "FR-DGPN", tmp_path / "FR-DGPN")
    socket = stopped.config().admin.socket
    for args in (["list"], ["show", "tkt_x"], ["approve", "tkt_x"], ["refuse", "tkt_x"]):
        result = liaison("tickets", *args, "--config", str(stopped.config_path))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"liaison: error: no node is answering on {socket}: start it with "
            f"`liaison serve --config {stopped.config_path}`"
        ]
