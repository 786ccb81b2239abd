"""Debian's real Prometheus server, run as a subprocess against nodes on loopback: the
scrape configuration an overseer would write (HTTPS, the overseer's client certificate, a
`member` label per target), the repository's rule files, and its HTTP query API.

Never skipped: a machine without the `prometheus` package fails the tests that need it,
with the line that installs it (scripts/setup.sh installs it too).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.local.federation import free_port, stop_process

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
INSTALL = "apt-get install -y prometheus"


def require(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        pytest.fail(f"{binary} not found on PATH: install Debian's prometheus package ({INSTALL})")
    return found


def scrape_config(targets: Mapping[str, str], identity: Path) -> dict[str, Any]:
    """Prometheus's configuration for `targets` (node id -> its [server] metrics address),
    scraped over TLS with the member certificate in `identity` (an overseer's folder), each
    labelled with its node id as `member` (`node` is the certificate metric's own label)."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_DIR / "recording.yml"), str(RULES_DIR / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "liaison",
                "scheme": "https",
                "tls_config": {
                    "ca_file": str(identity / "ca.crt"),
                    "cert_file": str(identity / "tls.crt"),
                    "key_file": str(identity / "tls.key"),
                },
                "static_configs": [
                    {"targets": [address], "labels": {"member": node_id}}
                    for node_id, address in sorted(targets.items())
                ],
            }
        ],
    }


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    folder: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now; AssertionError with Prometheus's
        own message if it does not evaluate."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        assert body.get("status") == "success", f"{expr!r}: {body.get('error', body)}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str) -> dict[str, float]:
        """`expr`'s samples by their peer label (or "" without one)."""
        return {r["metric"].get("peer", ""): float(r["value"][1]) for r in self.query(expr)}

    def targets(self) -> str:
        """Each target's health and last scrape error, for a failure message."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as answer:
            active = json.loads(answer.read())["data"]["activeTargets"]
        return "; ".join(f"{t['scrapeUrl']} {t['health']} {t['lastError']}" for t in active)

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return (self.folder / "prometheus.log").read_text()[-3000:]


def start_prometheus(folder: Path, config: Mapping[str, Any], timeout: float = 30.0) -> Prometheus:
    """Prometheus on a free loopback port with its storage in `folder`; returns once it is
    ready. The configuration is JSON, which is YAML."""
    binary = require("prometheus")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(json.dumps(config, indent=2))
    port = free_port()
    log = (folder / "prometheus.log").open("ab")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    log.close()
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", folder)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=1) as answer:
                if answer.status == 200:
                    return prometheus
        except OSError:
            time.sleep(0.2)
    prometheus.stop()
    raise AssertionError(f"prometheus did not become ready; its log ends:\n{prometheus.log()}")
