"""Debian's real Prometheus against a three-node federation on loopback, scraping /metrics
over TLS with an overseer's certificate: a known workload (hits and misses, refusals, a
Fetch at once, tickets approved, refused and expired, JIT use, calls that fail
authentication), then every recording rule read through Prometheus's own query API and
compared with what the workload's caller saw. The same live expositions go through
`promtool check metrics` and are searched for every personal value of the records.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from federation.client import ClientIdentity, PeerClient, match_query, new_envelope
from federation.errors import LiaisonError
from federation.model import FetchAnswer, FetchQuery, MatchAnswer
from federation.vocabulary import LegalBasis
from node.enrol import enrol_node
from node.local.demo import WINDOW
from node.local.federation import Federation, build_federation
from node.tickets import TicketStore
from tests.federation.helpers import scrape
from tests.federation.prometheus_kit import Prometheus, require, scrape_config, start_prometheus
from tests.federation.test_cli import liaison

OWNER, ASKER, OTHER, OVERSEER = "FR-DGPN", "DE-BKA", "NL-KLPD", "EU-EDPS"
TERMS = {"purposes": ["criminal_investigation"], "methods": ["Match", "Fetch"], **WINDOW}
AGREEMENTS: dict[str, dict[str, Any]] = {
    OWNER: {
        ASKER: {
            **TERMS,
            "categories": ["travel_document", "wanted_person"],
            "legal_bases": ["none", "bilateral_agreement", "mlat"],
        },
        OTHER: {
            **TERMS,
            "categories": ["travel_document"],
            "legal_bases": ["none", "bilateral_agreement", "jit"],
        },
    },
}
# Every Fetch of a wanted person goes to one of FR-DGPN's operators first.
POLICY_DATA = {
    OWNER: {
        "restrictions": {"blocked_countries": [], "approval_categories": ["wanted_person"]},
        "settings": {"approval_deadline_hours": 24},
    }
}
STATUS_DECISION = {
    "PERMISSION_DENIED": "deny",
    "UNAUTHENTICATED": "unauthenticated",
    "INVALID_ARGUMENT": "invalid",
    "FAILED_PRECONDITION": "invalid",
    "NOT_FOUND": "invalid",
}


def _generator() -> Any:
    """scripts/gen_dashboards.py (scripts/ is not a package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "gen_dashboards.py"
    spec = importlib.util.spec_from_file_location("gen_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_dashboards = _generator()
DASHBOARDS: Path = gen_dashboards.OUT
# Fields of a record that identify a person or a document.
PERSONAL = ("reference", "document_number", "family_name", "given_names", "date_of_birth")


class Workload:
    """Calls FR-DGPN as its peers would, and tallies what each caller was told: the figures
    the recording rules must give back."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.exchanges: Counter[tuple[str, str, str]] = Counter()  # peer, method, outcome
        self.requests: Counter[tuple[str, str, str]] = Counter()  # peer, method, decision
        self.bases: Counter[tuple[str, str]] = Counter()
        self.denials: Counter[tuple[str, str]] = Counter()
        self.calls: Counter[tuple[str, str]] = Counter()  # peer, channel
        self.tickets: Counter[tuple[str, str]] = Counter()  # peer, outcome

    def _call(
        self, who: ClientIdentity, peer: str, method: str, basis: LegalBasis, call: Any
    ) -> Any:
        signed_by_member = peer != "unidentified"
        try:
            answer = asyncio.run(call)
        except LiaisonError as exc:
            decision = STATUS_DECISION[exc.status]
            self.requests[peer, method, decision] += 1
            for reason in exc.reasons:
                self.denials[peer, reason] += 1
            secure = signed_by_member and decision != "unauthenticated"
            self.calls[peer, "secure" if secure else "insecure"] += 1
            if signed_by_member:
                self.bases[peer, basis.value] += 1
            return None
        self.requests[peer, method, "allow"] += 1
        self.calls[peer, "secure"] += 1
        self.bases[peer, basis.value] += 1
        return answer

    def match(
        self,
        who: ClientIdentity,
        row: dict[str, Any],
        *,
        basis: LegalBasis = LegalBasis.NONE,
        reference: str = "",
        peer: str | None = None,
    ) -> MatchAnswer | None:
        peer = peer or who.node_id
        if row["category"] == "travel_document":
            idents = [("document_number", str(row["document_number"]))]
        else:
            idents = [
                ("name_dob", f"{row['family_name']}|{row['given_names']}|{row['date_of_birth']}")
            ]

        async def run() -> MatchAnswer:
            client = PeerClient.for_member(who, self.fed.member(OWNER))
            try:
                env = new_envelope(
                    who.node_id,
                    "criminal_investigation",
                    legal_basis=basis,
                    legal_reference=reference,
                    case_reference="CASE-E2E-1",
                )
                return await client.match(match_query(env, str(row["category"]), idents), 10.0)
            finally:
                await client.close()

        answer: MatchAnswer | None = self._call(who, peer, "Match", basis, run())
        if answer is not None:
            self.exchanges[peer, "Match", "hit" if answer.hit else "no_hit"] += 1
        return answer

    def fetch(
        self,
        who: ClientIdentity,
        *,
        record_ref: str = "",
        ticket_id: str = "",
        basis: LegalBasis = LegalBasis.BILATERAL_AGREEMENT,
        reference: str = "",
    ) -> FetchAnswer | None:
        peer = who.node_id

        async def run() -> FetchAnswer:
            client = PeerClient.for_member(who, self.fed.member(OWNER))
            try:
                env = new_envelope(
                    peer,
                    "criminal_investigation",
                    legal_basis=basis,
                    legal_reference=reference,
                    case_reference="CASE-E2E-2",
                )
                query = FetchQuery(env, record_ref=record_ref, ticket_id=ticket_id)
                return await client.fetch(query, timeout=10.0)
            finally:
                await client.close()

        answer: FetchAnswer | None = self._call(who, peer, "Fetch", basis, run())
        if answer is not None:
            if answer.record is not None:
                outcome = "delivered_ticket" if ticket_id else "delivered"
            else:
                outcome = "ticket_status" if ticket_id else "ticket_opened"
            self.exchanges[peer, "Fetch", outcome] += 1
        return answer

    def decide(self, ticket_id: str, peer: str, verb: str) -> None:
        """As FR-DGPN's operator, with `liaison tickets approve|refuse` on the admin socket."""
        config = str(self.fed.nodes[OWNER].config_path)
        extra = ("--reason", "not proportionate") if verb == "refuse" else ()
        done = liaison("tickets", verb, ticket_id, "--config", config, "--operator", "o-7", *extra)
        assert done.returncode == 0, done.stderr
        self.tickets[peer, "approved" if verb == "approve" else "refused"] += 1


def _rows(fed: Federation, category: str, n: int) -> list[dict[str, Any]]:
    """FR records of `category` that no marking withholds or sends to a person."""
    rows = [
        r
        for r in fed.nodes[OWNER].rows
        if r["category"] == category
        and r.get("handling_code", "H0") in ("H0", "H1")
        and not r.get("source_restrictions")
    ]
    return rows[:n]


def _drive(fed: Federation, work: Workload, stranger: ClientIdentity) -> None:
    de, nl = fed.nodes[ASKER].identity(), fed.nodes[OTHER].identity()
    documents = _rows(fed, "travel_document", 4)
    wanted = _rows(fed, "wanted_person", 2)
    refs = []
    for row in documents[:3]:
        answer = work.match(de, row)
        assert answer is not None and answer.hit
        refs.append(answer.record_refs[0])
    missing = {"category": "travel_document", "document_number": "ZZE2E0000NONE"}
    assert work.match(de, missing) is not None
    # Fetches at once, and one refused for a legal basis FR-DGPN never agreed with DE-BKA.
    for ref in refs[:2]:
        fetched = work.fetch(de, record_ref=ref)
        assert fetched is not None and fetched.record is not None
    assert work.fetch(de, record_ref=refs[2], basis=LegalBasis.TREATY, reference="Art. 1") is None
    # Two wanted persons: each Fetch opens a ticket; one approved then collected, one refused.
    tickets = []
    for row in wanted:
        answer = work.match(de, row, basis=LegalBasis.MLAT, reference="MLAT-7")
        assert answer is not None and answer.hit
        opened = work.fetch(
            de, record_ref=answer.record_refs[0], basis=LegalBasis.MLAT, reference="MLAT-7"
        )
        assert opened is not None and opened.ticket is not None
        tickets.append(opened.ticket.ticket_id)
    work.decide(tickets[0], ASKER, "approve")
    work.decide(tickets[1], ASKER, "refuse")
    delivered = work.fetch(de, ticket_id=tickets[0], basis=LegalBasis.MLAT, reference="MLAT-7")
    assert delivered is not None and delivered.record is not None
    # NL-KLPD in a joint investigation team, and once under a basis it has no agreement for.
    for row in documents[:2]:
        work.match(nl, row, basis=LegalBasis.JIT, reference="JIT-2026-1")
    work.match(nl, documents[3], basis=LegalBasis.MLAT, reference="MLAT-9")
    # A certificate from the federation's CA that the directory does not list.
    assert work.match(stranger, documents[0], peer="unidentified") is None
    # A ticket two days old with a day to decide: FR-DGPN's expiry job expires it.
    store = TicketStore(fed.nodes[OWNER].config().store.url)
    then = datetime.now(UTC) - timedelta(days=2)
    try:
        store.open(
            requester=ASKER,
            record_ref=str(wanted[0]["reference"])[:32],
            category="wanted_person",
            purpose="criminal_investigation",
            legal_basis=LegalBasis.BILATERAL_AGREEMENT,
            legal_reference="",
            case_reference="CASE-E2E-3",
            handling_code="H0",
            redact=(),
            retention_days=90,
            deadline_at=then + timedelta(days=1),
            request_entry="0" * 32,
            now=then,
        )
    finally:
        store.close()
    work.tickets[ASKER, "expired"] += 1
    owner = fed.nodes[OWNER]
    deadline = time.monotonic() + 15
    while scrape(owner, "liaison_ticket_decisions_total", {"outcome": "expired"}) != 1.0:
        assert time.monotonic() < deadline, "the expiry job did not expire the old ticket"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("prometheus-federation")
    federation = build_federation(
        root,
        (ASKER, OWNER, OTHER),
        AGREEMENTS,
        records=120,
        overseers=(OVERSEER,),
        policy_data=POLICY_DATA,
    )
    with federation.nodes[OWNER].config_path.open("a") as toml:
        toml.write("\n[tickets]\nexpire_interval_s = 1\n")
    federation.start()
    yield federation
    federation.stop()


@pytest.fixture(scope="module")
def stranger(fed: Federation) -> ClientIdentity:
    """Enrolled by the federation's authority, but never listed in the directory."""
    folder = fed.root / "BE-FPJ"
    enrol_node(
        fed.root / "authority",
        "BE-FPJ",
        folder,
        endpoint="127.0.0.1:1",
        hosts=("127.0.0.1",),
        metrics="",
        policy_dir=None,
    )
    return ClientIdentity.from_files(
        "BE-FPJ",
        "liaison.example",
        folder / "tls.crt",
        folder / "tls.key",
        folder / "ca.crt",
        folder / "signing.key",
    )


@pytest.fixture(scope="module")
def prometheus(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    targets = {n.node_id: n.metrics for n in fed.nodes.values()}
    server = start_prometheus(
        tmp_path_factory.mktemp("prometheus"), scrape_config(targets, fed.root / OVERSEER)
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def workload(fed: Federation, prometheus: Prometheus, stranger: ClientIdentity) -> Workload:
    """The workload, driven once Prometheus scrapes every node (so each counter's zero is
    seen first), and read back once two more scrapes and evaluations have passed."""
    _until(lambda: len(prometheus.query('up{job="liaison"} == 1')) == 3, prometheus)
    time.sleep(2.5)
    work = Workload(fed)
    _drive(fed, work, stranger)
    time.sleep(3.5)
    return work


def _until(condition: Any, prometheus: Prometheus, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; targets: {prometheus.targets()}")
        time.sleep(0.25)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator


def _expected(work: Workload) -> dict[str, dict[str, float]]:
    """Each ratio and share recording rule's value on FR-DGPN, by peer and for all, from
    the caller's tally (`liaison:legal_basis_use:share` by peer/basis)."""
    peers = (ASKER, OTHER)
    out: dict[str, dict[str, float]] = {}

    def by_peer(name: str, num: Any, den: Any, with_unidentified: bool = False) -> None:
        who = (*peers, "unidentified") if with_unidentified else peers
        values = {p: (num(p), den(p)) for p in who}
        out[name] = {p: _ratio(n, d) for p, (n, d) in values.items() if d}
        total = (sum(n for n, _ in values.values()), sum(d for _, d in values.values()))
        if total[1]:
            out[name]["all"] = _ratio(*total)

    ex, t = work.exchanges, work.tickets
    by_peer(
        "liaison:match_hit:ratio",
        lambda p: ex[p, "Match", "hit"],
        lambda p: ex[p, "Match", "hit"] + ex[p, "Match", "no_hit"],
    )
    by_peer(
        "liaison:ticket_decision_within_deadline:ratio",
        lambda p: t[p, "approved"] + t[p, "refused"],
        lambda p: t[p, "approved"] + t[p, "refused"] + t[p, "expired"],
    )
    by_peer(
        "liaison:fetch_at_once:ratio",
        lambda p: ex[p, "Fetch", "delivered"],
        lambda p: ex[p, "Fetch", "delivered"] + ex[p, "Fetch", "ticket_opened"],
    )
    basis_total = {p: sum(n for (q, _), n in work.bases.items() if q == p) for p in peers}
    by_peer("liaison:jit_use:share", lambda p: work.bases[p, "jit"], lambda p: basis_total[p])
    by_peer(
        "liaison:legal_basis_refusal:ratio",
        lambda p: sum(n for (q, r), n in work.denials.items() if q == p and "legal_basis_" in r),
        lambda p: basis_total[p],
    )
    by_peer(
        "liaison:secure_channel:ratio",
        lambda p: work.calls[p, "secure"],
        lambda p: work.calls[p, "secure"] + work.calls[p, "insecure"],
        with_unidentified=True,
    )
    refused = ("deny", "invalid", "unauthenticated")
    by_peer(
        "liaison:exchange_refusal:ratio",
        lambda p: sum(work.requests[p, m, d] for m in ("Match", "Fetch") for d in refused),
        lambda p: sum(n for (q, m, _), n in work.requests.items() if q == p),
        with_unidentified=True,
    )
    # The unidentified caller has no secure call at all: no per-peer ratio of its own.
    out["liaison:secure_channel:ratio"].pop("unidentified", None)
    return out


def _rates(work: Workload) -> dict[str, dict[str, float]]:
    """Each rate rule's increase on FR-DGPN (counts, before dividing by the hour)."""
    peers = (ASKER, OTHER, "unidentified")
    good = ("hit", "delivered", "delivered_ticket")
    refused = ("deny", "invalid", "unauthenticated")
    counts = {
        "liaison:exchanges:rate1h": {
            p: float(sum(work.exchanges[p, m, o] for m in ("Match", "Fetch") for o in good))
            for p in peers
        },
        "liaison:jit_use:rate1h": {p: float(work.bases[p, "jit"]) for p in peers},
        "liaison:refusals:rate1h": {
            p: float(sum(n for (q, _, d), n in work.requests.items() if q == p and d in refused))
            for p in peers
        },
    }
    for values in counts.values():
        values["all"] = sum(values.values())
    return counts


def _on_owner(prometheus: Prometheus, record: str) -> dict[str, float]:
    return prometheus.values(f'{record}{{member="{OWNER}"}}')


def test_the_workload_is_what_the_nodes_counted(fed: Federation, workload: Workload) -> None:
    """The raw counters first: the tally and the node agree, or nothing below means much."""
    owner = fed.nodes[OWNER]
    for (peer, method, outcome), n in workload.exchanges.items():
        labels = {"peer": peer, "method": method, "outcome": outcome}
        assert scrape(owner, "liaison_exchanges_total", labels) == n, labels
    for (peer, channel), n in workload.calls.items():
        assert scrape(owner, "liaison_calls_total", {"peer": peer, "channel": channel}) == n
    for (peer, outcome), n in workload.tickets.items():
        labels = {"peer": peer, "outcome": outcome}
        assert scrape(owner, "liaison_ticket_decisions_total", labels) == n, labels
    assert workload.exchanges[ASKER, "Fetch", "delivered_ticket"] == 1
    assert workload.bases[OTHER, "jit"] == 2
    assert workload.calls["unidentified", "insecure"] == 1


def test_every_ratio_and_share_is_what_the_workload_makes(
    prometheus: Prometheus, workload: Workload
) -> None:
    for record, expected in _expected(workload).items():
        got = _on_owner(prometheus, record)
        for peer, value in expected.items():
            assert got.get(peer) == pytest.approx(value, abs=1e-9), (record, peer, got)
    assert _on_owner(prometheus, "liaison:secure_channel:ratio")[ASKER] == 1.0
    # Legal-basis shares: each basis of each peer, and overall.
    shares = prometheus.query(f'liaison:legal_basis_use:share{{member="{OWNER}"}}')
    share = {
        (r["metric"]["peer"], r["metric"]["legal_basis"]): float(r["value"][1]) for r in shares
    }
    for peer in (ASKER, OTHER, "all"):
        total: Counter[str] = Counter()
        for (p, basis), n in workload.bases.items():
            if p == peer or (peer == "all" and p != "unidentified"):
                total[basis] += n
        for basis, n in total.items():
            assert share[peer, basis] == pytest.approx(n / sum(total.values()), abs=1e-9)


def test_every_rate_is_what_the_workload_makes(prometheus: Prometheus, workload: Workload) -> None:
    """A rate over an hour of a counter scraped for seconds: `rate` extrapolates by at most
    one scrape interval at the end, so the value lies between the count over 3600 s and a
    few percent above it."""
    for record, counts in _rates(workload).items():
        got = _on_owner(prometheus, record)
        for peer, n in counts.items():
            if n == 0 and peer not in got:
                continue
            assert n / 3600 <= got[peer] * (1 + 1e-9), (record, peer, got)
            assert got[peer] <= n / 3600 * 1.2 + 1e-12, (record, peer, got)
    by_reason = prometheus.query(f'liaison:refusals_by_reason:rate1h{{member="{OWNER}"}}')
    got_reasons = {(r["metric"]["peer"], r["metric"]["reason"]) for r in by_reason}
    assert ("all", "legal_basis_not_agreed") in got_reasons
    assert ("unidentified", "unknown_member") in got_reasons


def test_time_and_latency_rules_evaluate(prometheus: Prometheus, workload: Workload) -> None:
    median = _on_owner(prometheus, "liaison:ticket_resolution_seconds:median1d")["all"]
    # Two tickets decided seconds after their opening (the buckets up to 1 s and 60 s), one
    # expired two days after: the median is interpolated within the decided ones' buckets.
    assert 0.0 < median <= 60.0
    latency = prometheus.query(
        f'liaison:request_duration_seconds:p95_5m{{member="{OWNER}",method="Match"}}'
    )
    assert latency and 0 < float(latency[0]["value"][1]) <= 2.5


def test_live_expositions_pass_promtool_and_hold_no_personal_value(
    fed: Federation, workload: Workload
) -> None:
    promtool = require("promtool")
    secrets = {
        str(row[key])
        for node in fed.nodes.values()
        for row in node.rows
        for key in PERSONAL
        if key in row and len(str(row[key])) >= 4
    }
    secrets |= {"ZZE2E0000NONE", "CASE-E2E-1", "CASE-E2E-2", "CASE-E2E-3", "MLAT-7", "JIT-2026-1"}
    for node in fed.nodes.values():
        for identity in (node.folder, fed.root / OVERSEER):
            text = node.read_metrics(identity)
            checked = subprocess.run(
                [promtool, "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            problems = checked.stdout + checked.stderr
            assert checked.returncode == 0 and not problems.strip(), (node.node_id, problems)
            found = sorted(s for s in secrets if s in text)
            assert not found, f"{node.node_id}'s /metrics shows {found}"


def test_prometheus_scrapes_over_tls_as_the_overseer(prometheus: Prometheus) -> None:
    targets = prometheus.query('up{job="liaison"}')
    assert {t["metric"]["member"] for t in targets} == {ASKER, OWNER, OTHER}
    assert all(t["value"][1] == "1" for t in targets)
    assert all(t["metric"]["instance"].startswith("127.0.0.1:") for t in targets)


def _dashboards() -> dict[str, Any]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_dashboards_are_what_the_generator_writes() -> None:
    assert set(_dashboards()) == set(gen_dashboards.DASHBOARDS)
    for name, text in gen_dashboards.render().items():
        assert (DASHBOARDS / name).read_text() == text, f"run scripts/gen_dashboards.py ({name})"


def test_dashboards_have_grafanas_shape() -> None:
    """What Grafana's file provisioning needs of each: a uid, a schema version, a
    datasource variable every panel and query uses, and panels with queries."""
    for name, board in _dashboards().items():
        assert board["uid"] and board["title"] and board["schemaVersion"] >= 36, name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and board["panels"], name
        for p in board["panels"]:
            assert p["type"] in ("timeseries", "stat", "bargauge"), (name, p["title"])
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
            for t in p["targets"]:
                assert t["expr"] and t["datasource"] == p["datasource"], p["title"]


def test_every_dashboard_query_evaluates_on_real_data(
    fed: Federation, prometheus: Prometheus, workload: Workload
) -> None:
    """Each query, with the node variable set to FR-DGPN, evaluates without error, and
    every name it reads is a metric family the nodes expose or a recorded series that
    Prometheus holds after the workload."""
    exposed = {
        line.split()[2]
        for line in fed.nodes[OWNER].read_metrics().splitlines()
        if line.startswith("# TYPE ")
    }
    for name, board in _dashboards().items():
        for p in board["panels"]:
            for t in p["targets"]:
                expr = t["expr"].replace("$member", OWNER)
                prometheus.query(expr)  # raises with Prometheus's error
                for used in set(re.findall(r"liaison[a-z0-9_:]*", expr)):
                    if ":" in used:
                        held = prometheus.query(f'count({{__name__="{used}"}})')
                        assert held, f"{name}: {p['title']!r}: no recorded {used}"
                    else:
                        family = re.sub(r"_(total|bucket|count|sum)$", "", used)
                        known = used in exposed or family in exposed
                        assert known, f"{name}: {p['title']!r}: no metric {used}"
    # The node variable's values: label_values(liaison_directory_serial, member).
    serial = prometheus.query("liaison_directory_serial")
    assert {s["metric"]["member"] for s in serial} == {ASKER, OWNER, OTHER}


def _status(address: str, context: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"https://{address}/metrics", timeout=5, context=context):
            return 200, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def test_only_overseers_and_the_node_itself_may_read_metrics(
    fed: Federation, stranger: ClientIdentity
) -> None:
    owner = fed.nodes[OWNER]
    ca = owner.folder / "ca.crt"

    def as_member(folder: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
        return context

    assert _status(owner.metrics, as_member(fed.root / OVERSEER))[0] == 200
    assert _status(owner.metrics, as_member(owner.folder))[0] == 200
    code, why = _status(owner.metrics, as_member(fed.nodes[ASKER].folder))
    assert code == 403 and "not as an overseer" in why and "\n" not in why
    code, why = _status(owner.metrics, as_member(fed.root / "BE-FPJ"))
    assert code == 403 and "not a member" in why
    code, why = _status(owner.metrics, ssl.create_default_context(cafile=ca))
    assert (code, why.split(":")[0]) == (403, "no client certificate")
    for reason in ("not_an_overseer", "unknown_member", "no_client_certificate"):
        assert (scrape(owner, "liaison_metrics_refusals_total", {"reason": reason}) or 0) >= 1
    # Plain HTTP on the TLS port gets nothing.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{owner.metrics}/metrics", timeout=5).read()
