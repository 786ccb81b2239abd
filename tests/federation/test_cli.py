"""The `liaison` console script as an operator meets it: real subprocesses, real files."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from node.cli import OPERATOR_ERRORS, build_parser, is_operator_error, main
from node.config import load_config
from node.local.federation import Federation
from node.store import RecordStore
from tests.federation.helpers import ask, first


def liaison(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def _subcommands(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[list[str]]:
    """Every command path the parser knows, walked from it so that none is forgotten."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _subcommands(child, [*path, name])


@pytest.mark.parametrize(
    "command", list(_subcommands(build_parser(), [])), ids=lambda path: " ".join(path) or "-"
)
def test_every_subcommand_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """In process (the console script itself is run by the tests below)."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: liaison {' '.join(command)}".strip() in capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["audit", "verify"], ["policy", "explain"]])
def test_help_imports_none_of_the_heavy_libraries(command: list[str]) -> None:
    """The parser is built on every run: a group module that imports gRPC, SQLAlchemy or
    the like at its top makes every `liaison` run wait for it."""
    heavy: tuple[str, ...] = ("grpc", "sqlalchemy", "sqlmodel", "cryptography", "aiohttp")
    heavy += ("opa_client", "jsonschema", "prometheus_client", "google.protobuf", "asyncio")
    script = (
        "import sys\n"
        "from node.cli import main\n"
        "try:\n"
        f"    main({[*command, '--help']!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules if m.startswith({heavy!r})}}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: liaison" in result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


def test_operator_errors_are_exception_classes_caught_with_their_subclasses() -> None:
    """OPERATOR_ERRORS names its classes rather than importing them: each name must resolve,
    or its errors would reach the operator as a traceback."""
    for module_name, class_name in OPERATOR_ERRORS:
        cls = getattr(importlib.import_module(module_name), class_name)
        assert isinstance(cls, type) and issubclass(cls, Exception), (module_name, class_name)
        assert is_operator_error(cls.__new__(cls))
    from federation.errors import InvalidRequest
    from node.policy.opa_process import OpaNotFound

    assert is_operator_error(InvalidRequest("DE-BKA", "not in the directory"))
    assert is_operator_error(OpaNotFound("no opa"))
    assert not is_operator_error(ValueError("a bug"))
    assert not is_operator_error(KeyError("a bug"))


def test_query_all_prints_one_row_per_peer(fed: Federation) -> None:
    doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"])
    result = liaison(
        "query",
        "match",
        "--config",
        str(fed.nodes["DE-BKA"].config_path),
        "--all",
        "--category",
        "travel_document",
        "--document-number",
        doc,
        "--purpose",
        "criminal_investigation",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rows = {r["peer"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"FR-DGPN", "NL-KLPD"}
    assert rows["FR-DGPN"]["outcome"] == "hit"
    assert rows["NL-KLPD"]["outcome"] == "refused"
    assert "category_not_agreed" in rows["NL-KLPD"]["reasons"]
    table = liaison(
        "query",
        "match",
        "--config",
        str(fed.nodes["DE-BKA"].config_path),
        "--peer",
        "FR-DGPN",
        "--category",
        "travel_document",
        "--document-number",
        "NOPE0000",
        "--purpose",
        "criminal_investigation",
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:2] == ["PEER", "OUTCOME"]
    assert "no-hit" in table.stdout


def test_query_unknown_peer_is_a_clear_error(fed: Federation) -> None:
    result = liaison(
        "query",
        "match",
        "--config",
        str(fed.nodes["DE-BKA"].config_path),
        "--peer",
        "XX-NOBODY",
        "--category",
        "vehicle",
        "--vin",
        "X",
        "--purpose",
        "criminal_investigation",
    )
    assert result.returncode == 2
    assert "XX-NOBODY" in result.stderr and "not in the directory" in result.stderr
    assert "Traceback" not in result.stderr


def _copy_node(fed: Federation, tmp_path: Path) -> Path:
    folder = tmp_path / "node"
    shutil.copytree(
        fed.nodes["FR-DGPN"].folder,
        folder,
        ignore=shutil.ignore_patterns(
            "records.db*", "audit.log", "node.log", "*.checkpoints", "directory.state", "*.sock"
        ),
    )
    return folder


def test_serve_refuses_a_directory_with_a_bad_signature(fed: Federation, tmp_path: Path) -> None:
    folder = _copy_node(fed, tmp_path)
    signed = json.loads((folder / "directory.json").read_text())
    signed["payload"] = signed["payload"].replace('"serial":1', '"serial":9')
    (folder / "directory.json").write_text(json.dumps(signed))
    result = liaison("serve", "--config", str(folder / "node.toml"), timeout=30)
    assert result.returncode == 2
    assert "signature does not verify" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_config_with_a_typo(fed: Federation, tmp_path: Path) -> None:
    folder = _copy_node(fed, tmp_path)
    config = folder / "node.toml"
    config.write_text(config.read_text().replace('engine = "embedded"', 'engnie = "embedded"'))
    result = liaison("serve", "--config", str(config), timeout=30)
    assert result.returncode == 2
    assert "engnie" in result.stderr and str(config) in result.stderr
    assert "did you mean 'engine'" in result.stderr


def test_import_of_a_malformed_file_names_line_and_field_and_writes_nothing(
    fed: Federation, tmp_path: Path
) -> None:
    folder = _copy_node(fed, tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"category": "travel_document", "document_number": "AB123456"}\n'
        '{"category": "travel_document", "document_number": "CD654321"}\n'
        '{"category": "vehicle"}\n'
    )
    result = liaison("data", "import", str(bad), "--config", str(folder / "node.toml"))
    assert result.returncode == 2
    assert "line 3" in result.stderr and "vin" in result.stderr
    assert "Traceback" not in result.stderr
    store = RecordStore(load_config(folder / "node.toml").store.url)
    try:
        store.create_schema()
        assert store.count() == 0  # the two good rows were not written either
        good = tmp_path / "good.jsonl"
        good.write_text("".join(bad.read_text().splitlines(keepends=True)[:2]))
        ok = liaison("data", "import", str(good), "--config", str(folder / "node.toml"))
        assert ok.returncode == 0, ok.stderr
        assert store.count("travel_document") == 2
    finally:
        store.close()


def test_audit_verify_names_the_first_bad_entry(fed: Federation, tmp_path: Path) -> None:
    de = fed.nodes["DE-BKA"].identity()
    for _ in range(3):
        ask(de, fed, "FR-DGPN", "travel_document", [("document_number", "NOPE0001")])
    log = tmp_path / "audit.log"
    shutil.copy(fed.nodes["FR-DGPN"].folder / "audit.log", log)
    lines = log.read_bytes().splitlines(keepends=True)
    ok = liaison("audit", "verify", "--log", str(log))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(lines)} entries" in ok.stdout
    lines[1] = lines[1].replace(b'"peer":"', b'"peer":"X', 1)
    log.write_bytes(b"".join(lines))
    bad = liaison("audit", "verify", "--log", str(log))
    assert bad.returncode == 2
    assert "BAD at entry 1: hash does not match its content" in bad.stdout


def test_the_demo_runs_end_to_end_and_an_overseer_verifies_every_log(tmp_path: Path) -> None:
    """The README's first command: queries answered; the first hit's record fetched under an
    MLAT, approved by FR's operator and delivered without the field FR withholds; then every
    node's checkpoint verified, cosigned by both peers, and the first question's entry
    proven in FR-DGPN's log; last, FR-DGPN's compliance report written and its path printed."""
    result = liaison("demo", "--dir", str(tmp_path / "demo"), "--records", "200", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "FR-DGPN  hit" in out and "category_not_agreed" in out
    fetched = out[out.index("5. DE-BKA fetches") : out.index("6. EU-EDPS")]
    assert "opens ticket tkt_" in fetched and "pending, due within 72 h" in fetched
    assert "fr-duty-officer approves it" in fetched
    cells = (re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in fetched.splitlines()[4:])
    fields = {pair[0]: pair[-1] for pair in cells if pair[0]}
    assert fields["ticket"].endswith("(approved)")
    assert fields["time to decision"].endswith(" s of the 72 h allowed")
    assert fields["handling code"] in ("H0", "H1")
    assert fields["document_type"] == "passport"
    assert fields["document_number"].startswith("FRFAKE")
    assert fields["reference"] == "(withheld)"
    assert "SYN-FR-" not in out  # the withheld value itself never arrives
    assert fields["retention"] == "90 days"
    table = out[out.index("6. EU-EDPS") : out.index("7. FR-DGPN")]
    rows = {
        line.split()[0]: line
        for line in table.splitlines()
        if line.strip()[:2] in ("DE", "FR", "NL")
    }
    assert set(rows) == {"DE-BKA", "FR-DGPN", "NL-KLPD"}
    for node, line in rows.items():
        assert "verified" in line
        assert all(peer in line for peer in ("DE-BKA", "FR-DGPN", "NL-KLPD") if peer != node), line
    assert "proven" in rows["FR-DGPN"]
    report = tmp_path / "demo" / "FR-DGPN-report.html"
    assert f"report: {report} (open it in a browser" in out
    assert "the chain intact from entry 0" in out[out.index("7. FR-DGPN") :]
    assert '<section id="timeliness">' in report.read_text()
    assert "All nodes stopped." in out


def test_the_kept_demo_says_it_is_up_into_a_pipe_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`liaison demo --keep` read through a pipe (tee, a log file): the nodes' addresses and
    'Nodes stay up' arrive while it waits, the nodes answer the README's commands, and
    Ctrl-C stops them all."""
    root = tmp_path / "demo"
    cmd = [sys.executable, "-m", "node.cli", "demo", "--dir", str(root), "--records", "200"]
    # As a user's shell runs it: Python's output into a pipe is buffered unless told not to.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [*cmd, "--keep"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read(out: IO[str]) -> None:
        for line in out:
            lines.put(line)

    reader = threading.Thread(target=read, args=(proc.stdout,))
    reader.start()
    seen: list[str] = []
    try:
        while not any("Nodes stay up" in line for line in seen):
            try:
                seen.append(lines.get(timeout=180))
            except queue.Empty:
                pytest.fail("no 'Nodes stay up' within 180 s; it printed:\n" + "".join(seen))
        assert any("FR-DGPN  gRPC+mTLS" in line for line in seen)
        up = liaison("tickets", "list", "--config", str(root / "FR-DGPN" / "node.toml"))
        assert up.returncode == 0, up.stderr
        assert "approved" in up.stdout  # the demo's ticket, on the node still serving
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        proc.stdout.close()
    rest = "".join(lines.get_nowait() for _ in range(lines.qsize()))
    assert "All nodes stopped." in rest
