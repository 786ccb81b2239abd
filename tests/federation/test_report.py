"""The compliance report and `oversight indicators` over real nodes: a small workload (hits,
no-hits, refusals, a Fetch sent to a person and approved), then FR-DGPN's report from its
own log in every format and the same figures fetched by an overseer over mTLS; a log that
does not verify gets no report; and the HTML opened in a real headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from federation.errors import PeerRefused
from federation.indicators import SECTIONS, Indicators, IndicatorsQuery, compute
from federation.oversight import AuditExport, OversightClient
from node.cli.oversight import load_overseer
from node.local.demo import AGREEMENTS, ASKER, OVERSEER, OWNER, POLICY_DATA, _ask, _fetch
from node.local.federation import Federation, build_federation
from tests.federation.helpers import ask, set_keys
from tests.federation.test_cli import liaison

CHROMIUM_INSTALL = "apt-get install -y --no-install-recommends chromium"


@dataclass(frozen=True)
class Window:
    since: str
    until: str


@pytest.fixture(scope="module")
def rfed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("report")
    federation = build_federation(
        root,
        (ASKER, OWNER, "NL-KLPD"),
        AGREEMENTS,
        records=60,
        overseers=(OVERSEER,),
        policy_data=POLICY_DATA,
    )
    federation.start()
    try:
        _workload(federation)
        yield federation
    finally:
        federation.stop()


def _workload(fed: Federation) -> None:
    """Eight questions and a Fetch through a ticket (the demo's), then more hits from
    DE-BKA and refusals of NL-KLPD (no agreement with FR-DGPN)."""
    with contextlib.redirect_stdout(io.StringIO()):
        _, refs = asyncio.run(_ask(fed))
        asyncio.run(_fetch(fed, refs[0]))
    passport = next(r for r in fed.nodes[OWNER].rows if r.get("document_type") == "passport")
    de, nl = fed.nodes[ASKER].identity(), fed.nodes["NL-KLPD"].identity()
    doc = [("document_number", str(passport["document_number"]))]
    for _ in range(6):
        assert ask(de, fed, OWNER, "travel_document", doc).hit
    for _ in range(2):
        with pytest.raises(PeerRefused):
            ask(nl, fed, OWNER, "travel_document", doc)


@pytest.fixture(scope="module")
def window() -> Window:
    today = datetime.now(UTC).date()
    return Window(today.replace(day=1).isoformat(), (today + timedelta(days=1)).isoformat())


@pytest.fixture(scope="module")
def reports(
    rfed: Federation, window: Window, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    config = str(rfed.nodes[OWNER].config_path)
    written = {}
    for kind in ("json", "csv", "html"):
        path = out / f"fr-dgpn.{kind}"
        done = liaison(
            "report", "--config", config, "--since", window.since, "--until", window.until,
            "--format", kind, "--out", str(path),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{kind} report of {OWNER} written to {path}" in done.stdout
        assert "the chain intact from entry 0" in done.stdout
        written[kind] = path
    return written


def _shown(rows: list[dict[str, object]]) -> dict[tuple[str, ...], str]:
    return {
        (str(r["period"]), str(r["peer"]), str(r["indicator"]), str(r["key"])): str(r["shown"])
        for r in rows
    }


def test_the_report_counts_the_workload(reports: dict[str, Path], window: Window) -> None:
    doc = json.loads(reports["json"].read_text())
    assert doc["format"] == "liaison-compliance-report/v1" and doc["node"] == OWNER
    shown = _shown(doc["figures"])
    w = ("window",)
    # Seven hits (question 1 and six more) and the ticket's record, all DE-BKA's: eight
    # successful exchanges. The one record is a small cell, so the seven hits, which with
    # the eight would reveal it, are hidden too.
    assert shown[(*w, "DE-BKA", "successful_exchanges", "")] == "8"
    assert shown[(*w, "DE-BKA", "fetch_delivered", "")] == "<5"
    assert shown[(*w, "DE-BKA", "match_hits", "")] == "x"
    assert shown[(*w, "DE-BKA", "tickets_opened", "")] == "<5"
    assert shown[(*w, "DE-BKA", "tickets_expired", "")] == "0"
    assert shown[(*w, "all", "requests", "Match allow")] == "9"
    # NL-KLPD's two refusals are a small cell, and DE-BKA's calls would reveal them.
    assert shown[(*w, "NL-KLPD", "refusals", "")] == "<5"
    assert shown[(*w, "all", "calls", "")] == "15"
    assert shown[(*w, "DE-BKA", "calls", "")] == "x"
    assert shown[(*w, "all", "secure_share", "")] == "100%"
    # Nothing personal: no case reference, no identifier, no record reference.
    text = reports["json"].read_text() + reports["csv"].read_text() + reports["html"].read_text()
    for secret in ("DEMO-1", "T-1", "MLAT-DE-FR-2026-0042", "FRFAKE"):
        assert secret not in text
    rows = list(csv.DictReader(io.StringIO(reports["csv"].read_text())))
    assert _shown(rows) == shown  # CSV and JSON: the same figures


def test_an_overseer_fetches_the_same_figures(
    rfed: Federation, reports: dict[str, Path], window: Window, tmp_path: Path
) -> None:
    out = tmp_path / "indicators.json"
    done = liaison(
        "oversight", "indicators", "--identity", str(rfed.root / OVERSEER),
        "--directory", str(rfed.root / "directory.json"), "--node", OWNER,
        "--since", window.since, "--until", window.until, "--format", "json", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    fetched = json.loads(out.read_text())
    mine = json.loads(reports["json"].read_text())
    assert fetched["figures"] == mine["figures"]
    assert fetched["entries"] <= mine["verified"]["entries"]
    table = liaison(
        "oversight", "indicators", "--identity", str(rfed.root / OVERSEER),
        "--directory", str(rfed.root / "directory.json"), "--node", OWNER,
        "--since", window.since, "--until", window.until,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "match_hits" in table.stdout and "<5" in table.stdout


def test_a_node_may_not_ask_for_indicators(rfed: Federation) -> None:
    async def run() -> None:
        async with OversightClient.for_member(
            rfed.nodes[ASKER].identity(), rfed.member(OWNER)
        ) as client:
            await client.get_indicators(IndicatorsQuery(datetime(2026, 1, 1, tzinfo=UTC)))

    with pytest.raises(PeerRefused) as refused:
        asyncio.run(run())
    assert refused.value.reasons == ("not_an_overseer",)


def test_no_report_over_a_log_that_does_not_verify(
    rfed: Federation, window: Window, tmp_path: Path
) -> None:
    node = rfed.nodes[OWNER]
    audit = node.config().audit.path
    log = tmp_path / "audit.log"
    shutil.copy(audit, log)
    signed = audit.with_name(audit.name + ".checkpoints")
    if signed.exists():
        shutil.copy(signed, tmp_path / "audit.log.checkpoints")
    lines = log.read_bytes().splitlines(keepends=True)
    at = lines[3].index(b'"salt":"') + len(b'"salt":"')
    flipped = b"1" if lines[3][at : at + 1] == b"0" else b"0"
    lines[3] = lines[3][:at] + flipped + lines[3][at + 1 :]  # one character of entry 3
    log.write_bytes(b"".join(lines))
    toml = node.config_path.with_name("tampered.toml")  # beside it: its paths are relative
    toml.write_text(set_keys(node.config_path.read_text(), "audit", {"path": f'"{log}"'}))
    out = tmp_path / "report.html"
    done = liaison("report", "--config", str(toml), "--since", window.since, "--out", str(out))
    assert done.returncode == 2
    assert "BAD" in done.stderr and "audit entry 3" in done.stderr
    assert "No report was written" in done.stderr
    assert not out.exists()


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "Debian's chromium is needed to render the report in a real browser; install it "
            f"(scripts/setup.sh does): {CHROMIUM_INSTALL}"
        )
    return found


def test_the_html_report_renders_in_headless_chromium(
    reports: dict[str, Path], tmp_path: Path
) -> None:
    browser = _chromium()
    page = reports["html"].resolve().as_uri()
    common = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3000"]  # fmt: skip
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", page],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    dom = subprocess.run(
        [*common, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=False
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section, title in SECTIONS:
        assert f'<section id="{section}">' in dom.stdout
        assert f"<h2>{title}</h2>" in dom.stdout
    assert dom.stdout.count("<svg") == len(SECTIONS)
    # Keep the screenshot where a person can look at it.
    kept = reports["html"].with_suffix(".png")
    shutil.copy(shot, kept)


def test_the_overseer_recomputes_the_figures_from_a_verified_export(
    rfed: Federation, window: Window
) -> None:
    """What the node served is what its signed log says: the entries [0, tree_size), fetched
    and verified against the signed root, give the same figures."""
    overseer = load_overseer(rfed.root / OVERSEER, rfed.root / "directory.json")
    since = datetime.fromisoformat(window.since).replace(tzinfo=UTC)
    until = datetime.fromisoformat(window.until).replace(tzinfo=UTC)

    async def run() -> tuple[Indicators, AuditExport]:
        async with overseer.client(OWNER) as client:
            served = await client.get_indicators(IndicatorsQuery(since, until))
            return served, await client.export(0, served.entries)

    served, export = asyncio.run(run())
    recomputed = compute(
        (json.loads(e) for e in export.entries), node=OWNER, since=since, until=until
    )
    assert recomputed == served
