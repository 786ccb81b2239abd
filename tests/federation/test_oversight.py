"""The OversightService across real node processes over mTLS: an overseer enrolled by the
authority and listed in the directory checks a node's audit log; nodes may check but not read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from federation import checkpoints, merkle
from federation.client import ClientIdentity, blocking_secure_channel
from federation.errors import InvalidRequest, PeerRefused
from federation.oversight import AuditExport, OversightClient, verify_export
from federation.pki import load_ed25519_private, public_key_from_text
from node.audit.verify import stated_checkpoint
from node.enrol import enrol_node
from node.local.demo import AGREEMENTS
from node.local.federation import Federation, build_federation
from node.rpc.oversight import SERVICE_NAME
from tests.federation.helpers import ask, audit_entry, scrape
from tests.federation.test_cli import liaison

OVERSEER = "EU-EDPS"
T = TypeVar("T")


@pytest.fixture(scope="module")
def ofed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("oversight")
    federation = build_federation(
        root, ("DE-BKA", "FR-DGPN", "NL-KLPD"), AGREEMENTS, records=50, overseers=(OVERSEER,)
    )
    federation.start()
    yield federation
    federation.stop()


@pytest.fixture(scope="module")
def overseer(ofed: Federation) -> ClientIdentity:
    folder = ofed.root / OVERSEER
    return ClientIdentity.from_files(
        OVERSEER,
        "liaison.example",
        folder / "tls.crt",
        folder / "tls.key",
        folder / "ca.crt",
        folder / "signing.key",
    )


def oversee(
    identity: ClientIdentity,
    fed: Federation,
    node: str,
    use: Callable[[OversightClient], Awaitable[T]],
) -> T:
    async def run() -> T:
        async with OversightClient.for_member(identity, fed.member(node)) as client:
            return await use(client)

    return asyncio.run(run())


def match_entry(fed: Federation, asker: str, owner: str = "FR-DGPN") -> str:
    """The audit entry id of one Match `asker` sent to `owner` (answered or refused)."""
    try:
        answer = ask(
            fed.nodes[asker].identity(), fed, owner, "vehicle", [("vin", "NOPE0000000000001")]
        )
        return answer.audit_entry
    except PeerRefused as exc:
        return exc.metadata["audit_entry"]


def test_the_overseer_proves_the_entry_an_answer_named(
    ofed: Federation, overseer: ClientIdentity
) -> None:
    entry_id = match_entry(ofed, "DE-BKA")

    async def prove(client: OversightClient) -> tuple[checkpoints.Checkpoint, bytes, int]:
        checkpoint, note = await client.get_checkpoint()
        assert note.startswith("liaison.example/FR-DGPN/audit\n")
        proven = await client.get_inclusion_proof(entry_id, checkpoint)
        return checkpoint, proven.entry, proven.index

    checkpoint, entry, index = oversee(overseer, ofed, "FR-DGPN", prove)
    doc = json.loads(entry)
    assert doc["id"] == entry_id and doc["seq"] == index and doc["peer"] == "DE-BKA"
    # The case reference the investigator typed ("T-1") is only a salted digest here.
    assert "case_reference" not in doc and len(doc["case_reference_sha256"]) == 64
    assert b"T-1" not in entry
    assert index < checkpoint.size


def test_the_overseer_reads_entries_and_exports_a_range_that_verifies(
    ofed: Federation, overseer: ClientIdentity, tmp_path: Path
) -> None:
    for asker in ("DE-BKA", "NL-KLPD", "DE-BKA"):
        match_entry(ofed, asker)

    async def read(
        client: OversightClient,
    ) -> tuple[checkpoints.Checkpoint, list[bytes], AuditExport]:
        checkpoint, _ = await client.get_checkpoint()
        entries = await client.get_entries(0, checkpoint.size)
        return checkpoint, entries, await client.export(1, checkpoint.size)

    checkpoint, entries, export = oversee(overseer, ofed, "FR-DGPN", read)
    assert [json.loads(e)["seq"] for e in entries] == list(range(checkpoint.size))
    assert all(b'"case_reference"' not in e for e in entries)
    assert merkle.root(merkle.leaf_hash(e) for e in entries) == checkpoint.root
    assert export.entries == tuple(entries[1:])

    fr = ofed.nodes["FR-DGPN"]
    public = load_ed25519_private(fr.config().trust.signing_key).public_key()
    hexkey = public.public_bytes_raw().hex()
    common = [
        "--identity",
        str(ofed.root / OVERSEER),
        "--directory",
        str(ofed.root / "directory.json"),
    ]
    out = tmp_path / "fr.json"
    fetched = liaison(
        "oversight", "export", *common, "--node", "FR-DGPN", "--from", "2", "--to", "4",
        "--out", str(out),
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    ok = liaison("audit", "verify", "--export", str(out), "--public-key", hexkey)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "entries [2, 4) of liaison.example/FR-DGPN/audit verified" in ok.stdout

    # The operator's export of the same range, from its files, is the same format.
    local = tmp_path / "local.json"
    made = liaison(
        "audit", "export", "--config", str(fr.config_path), "--from", "2", "--to", "4",
        "--out", str(local),
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert (
        AuditExport.from_json(local.read_text()).entries
        == AuditExport.from_json(out.read_text()).entries
    )
    vkey = AuditExport.from_json(local.read_text()).verifier_key
    assert liaison("audit", "verify", "--export", str(local), "--vkey", vkey).returncode == 0

    # One altered entry: the check fails and names it.
    doc = json.loads(out.read_text())
    doc["entries"][1] = doc["entries"][1].replace('"peer":"', '"peer":"X')
    out.write_text(json.dumps(doc))
    bad = liaison("audit", "verify", "--export", str(out), "--public-key", hexkey)
    assert bad.returncode == 2 and "BAD at entry 3" in bad.stdout, bad.stdout + bad.stderr
    # Checked with another node's key, the genuine export fails too.
    other = load_ed25519_private(ofed.nodes["DE-BKA"].config().trust.signing_key).public_key()
    wrong = liaison(
        "audit", "verify", "--export", str(local), "--public-key",
        other.public_bytes_raw().hex(),
    )  # fmt: skip
    assert wrong.returncode == 2 and "does not verify" in wrong.stdout

    shown = liaison("oversight", "checkpoint", *common, "--node", "FR-DGPN")
    assert shown.returncode == 0, shown.stderr
    verifier = checkpoints.Verifier.for_log("liaison.example/FR-DGPN/audit", public)
    assert checkpoints.verify_checkpoint(shown.stdout, verifier.name, verifier).size >= 4
    proved = liaison("oversight", "prove", *common, "--node", "FR-DGPN", "1")
    assert proved.returncode == 0, proved.stderr
    assert json.loads(json.loads(proved.stdout)["entry"])["seq"] == 1


def test_beyond_the_checkpoint_is_refused(ofed: Federation, overseer: ClientIdentity) -> None:
    async def beyond(client: OversightClient) -> None:
        checkpoint, _ = await client.get_checkpoint()
        await client.get_consistency_proof(1, checkpoint.size + 10_000)

    with pytest.raises(InvalidRequest) as err:
        oversee(overseer, ofed, "FR-DGPN", beyond)
    assert err.value.reasons == ("beyond_checkpoint",)
    assert err.value.status == "FAILED_PRECONDITION"


def test_a_node_may_check_the_log_but_not_read_it(ofed: Federation) -> None:
    de = ofed.nodes["DE-BKA"].identity()
    fr = ofed.nodes["FR-DGPN"]
    match_entry(ofed, "NL-KLPD")
    # The module's federation does not witness (build_federation's default), so only this
    # test's calls reach FR-DGPN meanwhile: the counters move by exactly what it sends.
    refused = {"peer": "DE-BKA", "method": "GetEntries", "decision": "deny"}
    denied = {"peer": "DE-BKA", "reason": "not_an_overseer"}
    allowed = {"peer": "DE-BKA", "method": "GetCheckpoint", "decision": "allow"}

    def counts() -> list[float]:
        return [
            scrape(fr, "liaison_requests_total", refused) or 0.0,
            scrape(fr, "liaison_denials_total", denied) or 0.0,
            scrape(fr, "liaison_requests_total", allowed) or 0.0,
        ]

    before = counts()

    async def check(client: OversightClient) -> list[tuple[str, str]]:
        old, _ = await client.get_checkpoint()
        await asyncio.to_thread(match_entry, ofed, "NL-KLPD")
        new, _ = await client.get_checkpoint()
        assert new.size > old.size
        await client.verify_consistency(old, new)
        return await client.get_witnessed_checkpoints()

    assert oversee(de, ofed, "FR-DGPN", check) == []

    async def read(client: OversightClient) -> list[bytes]:
        return await client.get_entries(0, 1)

    with pytest.raises(PeerRefused) as err:
        oversee(de, ofed, "FR-DGPN", read)
    assert err.value.reasons == ("not_an_overseer",)
    audited = audit_entry(fr, err.value.metadata["audit_entry"])
    assert (audited["method"], audited["peer"], audited["decision"]) == (
        "GetEntries",
        "DE-BKA",
        "deny",
    )
    assert [b - a for a, b in zip(before, counts(), strict=True)] == [1, 1, 2]


def test_a_node_proves_its_own_entries_only(ofed: Federation) -> None:
    own, others = match_entry(ofed, "DE-BKA"), match_entry(ofed, "NL-KLPD")
    de = ofed.nodes["DE-BKA"].identity()

    async def prove(client: OversightClient, entry: str) -> bytes:
        checkpoint, _ = await client.get_checkpoint()
        return (await client.get_inclusion_proof(entry, checkpoint)).entry

    assert json.loads(oversee(de, ofed, "FR-DGPN", lambda c: prove(c, own)))["peer"] == "DE-BKA"
    with pytest.raises(PeerRefused) as err:
        oversee(de, ofed, "FR-DGPN", lambda c: prove(c, others))
    assert err.value.reasons == ("not_your_entry",)


def test_an_overseer_is_refused_the_exchange(ofed: Federation, overseer: ClientIdentity) -> None:
    with pytest.raises(PeerRefused) as err:
        ask(overseer, ofed, "FR-DGPN", "vehicle", [("vin", "1HGCM82633A004352")])
    assert err.value.reasons == ("not_a_node",)
    fr = ofed.nodes["FR-DGPN"]
    audited = audit_entry(fr, err.value.metadata["audit_entry"])
    assert (audited["peer"], audited["method"], audited["decision"]) == ("EU-EDPS", "Match", "deny")
    labels = {"peer": OVERSEER, "method": "Match", "decision": "deny"}
    assert scrape(fr, "liaison_requests_total", labels) == 1


def test_a_member_not_in_the_directory_is_refused(ofed: Federation, tmp_path: Path) -> None:
    folder = tmp_path / "BE-FPJ"
    enrol_node(
        ofed.root / "authority", "BE-FPJ", folder, endpoint="127.0.0.1:1",
        hosts=("127.0.0.1",), metrics="", policy_dir=None,
    )  # fmt: skip
    stranger = ClientIdentity.from_files(
        "BE-FPJ", "liaison.example", folder / "tls.crt", folder / "tls.key",
        folder / "ca.crt", folder / "signing.key",
    )  # fmt: skip
    with pytest.raises(PeerRefused) as err:
        oversee(stranger, ofed, "FR-DGPN", lambda c: c.get_checkpoint())
    assert err.value.reasons == ("unknown_member",)


def test_the_service_is_in_health_and_reflection(ofed: Federation) -> None:
    node = ofed.nodes["DE-BKA"]
    ident = node.identity()
    with blocking_secure_channel(ident, node.node_id, node.endpoint) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_a_fresh_log_has_no_checkpoint_until_its_first_entry(
    ofed: Federation, overseer: ClientIdentity
) -> None:
    """NL-KLPD has been asked nothing: its log is empty, so there is nothing to sign; the
    refusal is itself audited, so the next GetCheckpoint signs a tree of one entry."""

    async def fetch(client: OversightClient) -> checkpoints.Checkpoint:
        with pytest.raises(InvalidRequest) as refused:
            await client.get_checkpoint()
        assert refused.value.reasons == ("no_checkpoint",)
        assert refused.value.status == "FAILED_PRECONDITION"
        return (await client.get_checkpoint())[0]

    checkpoint = oversee(overseer, ofed, "NL-KLPD", fetch)
    export = oversee(overseer, ofed, "NL-KLPD", lambda c: c.export(0, checkpoint.size))
    member = ofed.member("NL-KLPD")
    verifier = checkpoints.Verifier.for_log(
        "liaison.example/NL-KLPD/audit", public_key_from_text(member.signing_public_key)
    )
    assert verify_export(export, verifier).size >= checkpoint.size >= 1


def test_the_authority_enrols_an_overseer_and_lists_it(ofed: Federation, tmp_path: Path) -> None:
    authority = ofed.root / "authority"
    made = liaison(
        "oversight", "enroll", "DE-BFDI", "--authority", str(authority), "--out",
        str(tmp_path / "bfdi"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    member = json.loads((tmp_path / "bfdi" / "member.json").read_text())
    assert member["roles"] == ["overseer"] and "endpoint" not in member
    members = tmp_path / "members.json"
    members.write_text((ofed.root / "members.json").read_text())
    added = liaison(
        "directory", "add", "--authority", str(authority), "--members", str(members),
        "--member", str(tmp_path / "bfdi" / "member.json"),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "DE-BFDI added" in added.stdout and "overseer" in added.stdout
    listed = {m["node_id"]: m for m in json.loads(members.read_text())}
    assert listed["DE-BFDI"]["roles"] == ["overseer"] and "roles" not in listed["DE-BKA"]


def test_watching_the_log_does_not_make_it_sign_anew(
    ofed: Federation, overseer: ClientIdentity
) -> None:
    """Calls of the OversightService alone leave the checkpoint as it is (else every
    witness's visit would replace it before the cosignatures on it could be served); an
    exchange entry makes the next GetCheckpoint sign one that covers it."""
    match_entry(ofed, "DE-BKA")

    async def watch(client: OversightClient) -> tuple[str, str]:
        _, first = await client.get_checkpoint()
        await client.get_witnessed_checkpoints()
        checkpoint, _ = await client.get_checkpoint()
        await client.get_consistency_proof(1, checkpoint.size)
        return first, (await client.get_checkpoint())[1]

    first, again = oversee(overseer, ofed, "FR-DGPN", watch)
    assert again == first
    entry_id = match_entry(ofed, "DE-BKA")

    async def prove(client: OversightClient) -> int:
        checkpoint, _ = await client.get_checkpoint()
        return (await client.get_inclusion_proof(entry_id, checkpoint)).index

    assert oversee(overseer, ofed, "FR-DGPN", prove) >= stated_checkpoint(first).size
