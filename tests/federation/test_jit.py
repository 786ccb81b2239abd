"""Joint investigation teams across real nodes: a grant added with `liaison policy jit add`
to a running owner lets the team's members fetch without a ticket, from the next policy
revision on and without a restart; a non-member, a grant not yet in force and a revoked
grant get the normal rules back. On the embedded engine and on an OPA sidecar."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.client import ClientIdentity
from federation.errors import PeerRefused, PeerUnavailable
from federation.vocabulary import LegalBasis
from node.local.demo import WINDOW
from node.local.federation import Federation, NodeHandle, build_federation
from node.policy.opa_process import OpaServer, start_opa
from tests.federation.helpers import ask, audit_entry, clone_node
from tests.federation.test_cli import liaison
from tests.federation.test_fetch import ASKER, OTHER, OWNER, fetch

# FR-DGPN lets both peers fetch under a joint investigation team, and sends every Fetch of
# a wanted person to one of its operators otherwise.
TERMS = {
    "categories": ["travel_document", "wanted_person"],
    "purposes": ["criminal_investigation"],
    "methods": ["Match", "Fetch"],
    "legal_bases": ["none", "bilateral_agreement", "jit"],
    **WINDOW,
}
AGREEMENTS: dict[str, dict[str, Any]] = {OWNER: {ASKER: TERMS, OTHER: TERMS}}
POLICY_DATA = {
    OWNER: {"restrictions": {"blocked_countries": [], "approval_categories": ["wanted_person"]}}
}
CASE = "JIT-LIVE-1"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("jit-federation")
    federation = build_federation(
        root, (ASKER, OWNER, OTHER), AGREEMENTS, records=200, policy_data=POLICY_DATA
    )
    federation.start()
    yield federation
    federation.stop()


@pytest.fixture(params=["embedded", "opa"])
def owner(request: pytest.FixtureRequest, fed: Federation, tmp_path: Path) -> Iterator[NodeHandle]:
    """FR-DGPN as a fresh process that checks its policy files every 100 ms."""
    opa: OpaServer | None = start_opa() if request.param == "opa" else None
    engine, url = ('"opa"', f'"{opa.url}"') if opa else ('"embedded"', '"http://127.0.0.1:8181"')
    node = clone_node(
        fed,
        OWNER,
        tmp_path / OWNER,
        watch="true",
        watch_interval_ms="100",
        engine=engine,
        opa_url=url,
    )
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()
        if opa:
            opa.stop()


def _day(offset: int) -> str:
    return (
        datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=offset)
    ).isoformat()


def _person(fed: Federation) -> dict[str, Any]:
    return next(
        r
        for r in fed.nodes[OWNER].rows
        if r["category"] == "wanted_person"
        and r.get("handling_code", "H0") in ("H0", "H1")
        and not r.get("source_restrictions")
    )


def _hit(who: ClientIdentity, fed: Federation, node: NodeHandle, row: dict[str, Any]) -> str:
    name = f"{row['family_name']}|{row['given_names']}|{row['date_of_birth']}"
    answer = ask(who, fed, OWNER, "wanted_person", [("name_dob", name)], endpoint=node.endpoint)
    assert answer.hit, "the owner's record was not found"
    return answer.record_refs[0]


def _revision(who: ClientIdentity, fed: Federation, node: NodeHandle) -> str:
    row = next(r for r in node.rows if r["category"] == "travel_document")
    idents = [("document_number", str(row["document_number"]))]
    return ask(who, fed, OWNER, "travel_document", idents, endpoint=node.endpoint).policy_revision


def _edit(node: NodeHandle, fed: Federation, who: ClientIdentity, *args: str) -> None:
    """Run `liaison policy jit ...` on the node's own data file, then wait until the running
    node answers with the revision the command reported."""
    result = liaison("policy", "jit", *args, "--config", str(node.folder / "node.toml"))
    assert result.returncode == 0, result.stderr
    new = result.stdout.split("policy revision ")[1].split()[0]
    deadline = time.monotonic() + 20
    while True:
        try:
            if _revision(who, fed, node) == new:
                return
        except PeerUnavailable:
            pass  # on OPA, while the new revision is pushed, decisions fail closed
        assert time.monotonic() < deadline, f"the node did not pick up revision {new}"
        time.sleep(0.1)


def _refused(who: ClientIdentity, fed: Federation, node: NodeHandle, ref: str) -> tuple[str, ...]:
    with pytest.raises(PeerRefused) as err:
        fetch(who, fed, record_ref=ref, basis=LegalBasis.JIT, case=CASE, endpoint=node.endpoint)
    return err.value.reasons


def test_members_fetch_without_a_ticket_while_the_grant_is_in_force(
    fed: Federation, owner: NodeHandle
) -> None:
    de, nl = fed.nodes[ASKER].identity(), fed.nodes[OTHER].identity()
    row = _person(fed)
    de_ref, nl_ref = _hit(de, fed, owner, row), _hit(nl, fed, owner, row)
    assert _refused(de, fed, owner, de_ref) == ("jit_not_found",)

    members = ["--member", "FR", "--member", "DE"]
    window = ["--valid-from", _day(-1), "--valid-until", _day(30)]
    _edit(owner, fed, de, "add", CASE, *members, "--case-reference", CASE, *window)

    # Inside the window a member gets the record at once, with the node's process unchanged.
    answer = fetch(
        de, fed, record_ref=de_ref, basis=LegalBasis.JIT, case=CASE, endpoint=owner.endpoint
    )
    assert answer.ticket is None and answer.record is not None
    assert json.loads(answer.record.payload_json)["family_name"] == row["family_name"]
    entry = audit_entry(owner, answer.audit_entry)
    assert (entry["decision"], entry["legal_basis"]) == ("allow", "jit")
    assert "ticket" not in entry
    assert owner.process is not None and owner.process.poll() is None
    # The same request under the bilateral agreement still goes to a person.
    ticket = fetch(de, fed, record_ref=de_ref, endpoint=owner.endpoint).ticket
    assert ticket is not None and ticket.state == "pending"
    # NL is no member of this team: the normal rules, which refuse the basis.
    assert _refused(nl, fed, owner, nl_ref) == ("jit_not_member",)

    # Revoked, the team's window ended yesterday: the grant no longer holds.
    _edit(owner, fed, de, "revoke", CASE, "--reason", "team closed")
    assert _refused(de, fed, owner, de_ref) == ("jit_not_in_force",)


def test_a_grant_not_yet_in_force_allows_nothing(fed: Federation, owner: NodeHandle) -> None:
    de = fed.nodes[ASKER].identity()
    ref = _hit(de, fed, owner, _person(fed))
    members = ["--member", "FR", "--member", "DE"]
    window = ["--valid-from", _day(3), "--valid-until", _day(30)]
    _edit(owner, fed, de, "add", CASE, *members, "--case-reference", CASE, *window)
    assert _refused(de, fed, owner, ref) == ("jit_not_in_force",)
