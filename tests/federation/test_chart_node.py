"""A real node laid out exactly as the Helm chart lays out its pod, serving a real peer.

No cluster runs here, so the pod is re-enacted on this machine: the chart is rendered by
the real Helm, and every volume the node container mounts is made from what the manifests
say (ConfigMap items, Secret items from the node's enrolment folder, emptyDirs), under a
temporary root instead of /. The node runs on PostgreSQL with the password only in
PGPASSWORD and decides through a real OPA started as the sidecar is (empty, decision logs
on), so the node pushes its policy into it. Then: the probe command says SERVING, a peer
gets its answer, and nothing was written outside the emptyDirs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from node.audit.witness_state import LOCK_SUFFIX, STATE_SUFFIX
from node.cli import build_parser
from node.local.federation import Federation, free_port
from node.policy.opa_process import start_opa
from tests.federation.helpers import ask, first
from tests.unit.test_helm_chart import node_container, one, render

pytestmark = pytest.mark.skipif(
    not os.environ.get("LIAISON_TEST_POSTGRES_URL"),
    reason="no PostgreSQL: set LIAISON_TEST_POSTGRES_URL (make test does)",
)

Manifest = dict[str, Any]


def lay_out(docs: list[Manifest], root: Path, secrets: Path) -> None:
    """Every volume the node container mounts, at its mount path under `root`."""
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    for mount in node_container(docs)["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            continue
        if "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]
            files = {i["path"]: data[i["key"]].encode() for i in volume["configMap"]["items"]}
        else:  # a Secret: the operator made it from the enrolment folder, key = file name
            items = volume["secret"]["items"]
            files = {i["path"]: (secrets / i["key"]).read_bytes() for i in items}
        if "subPath" in mount:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[mount["subPath"]])
            continue
        for path, content in files.items():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_bytes(content)


def rebase(toml: str, root: Path, replacements: dict[str, str]) -> str:
    """node.toml with the pod's absolute paths under `root`, and `replacements` made."""
    toml = re.sub(r'"(/etc/liaison/|/var/lib/liaison/|/tmp/)', lambda m: f'"{root}{m[1]}', toml)
    for old, new in replacements.items():
        assert old in toml, old
        toml = toml.replace(old, new)
    return toml


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def liaison(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_a_node_in_the_charts_layout_serves_a_peer(
    fed: Federation, postgres_url: str, tmp_path: Path
) -> None:
    source = fed.nodes["FR-DGPN"].folder
    extra = tmp_path / "values.yaml"
    agreements = json.loads((source / "agreements.json").read_text())
    extra.write_text(yaml.safe_dump({"agreements": agreements, "node": {"id": "FR-DGPN"}}))
    docs = render(
        "minimal",
        *("-f", str(extra)),
        *("--set-file", f"trust.authorityPublicKey={source / 'authority.pub'}"),
        *("--set-file", f"trust.directory={source / 'directory.json'}"),
    )
    root = tmp_path / "pod"
    lay_out(docs, root, secrets=source)

    url = make_url(postgres_url)
    bare = f"{url.drivername}://{url.username}@{url.host}:{url.port}/{url.database}"
    endpoint, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    opa = start_opa(args=("--set=decision_logs.console=true",))
    config = root / "var/lib/liaison/node.toml"
    config.write_text(
        rebase(
            config.read_text(),
            root,
            {
                '"0.0.0.0:7001"': json.dumps(endpoint),
                '"0.0.0.0:9464"': json.dumps(metrics),
                '"http://127.0.0.1:8181"': json.dumps(opa.url),
                '"postgresql+psycopg://liaison@liaison-postgresql:5432/liaison"': json.dumps(bare),
            },
        )
    )
    env = {**os.environ, "PGPASSWORD": str(url.password), "PGPASSFILE": "/nonexistent"}
    env.pop("LIAISON_TEST_POSTGRES_URL")
    # The schema first, as the chart's hook Job does (once the CLI has `liaison db`).
    commands = next(
        a.choices for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    if "db" in commands:
        migrated = liaison("db", "upgrade", "--config", str(config), env=env)
        assert migrated.returncode == 0, migrated.stderr
    imported = liaison(
        "data", "import", str(source / "records.jsonl"), "--config", str(config), env=env
    )
    assert imported.returncode == 0, imported.stderr

    before = snapshot(root / "etc")
    args = node_container(docs)["args"]
    assert args[:3] == ["serve", "--config", "/var/lib/liaison/node.toml"]
    log = (tmp_path / "node.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env=env,
    )
    try:
        probe = node_container(docs)["readinessProbe"]["exec"]["command"]
        assert probe[:4] == ["liaison", "health", "--config", "/var/lib/liaison/node.toml"]
        deadline, health = time.monotonic() + 60, None
        while time.monotonic() < deadline and process.poll() is None:
            health = liaison("health", "--config", str(config), *probe[4:], env=env)
            if health.returncode == 0:
                break
            time.sleep(0.5)
        assert health is not None and health.returncode == 0, (tmp_path / "node.log").read_text()[
            -3000:
        ]
        assert health.stdout == f"FR-DGPN at {endpoint}: SERVING\n"

        doc = str(first(fed, "FR-DGPN", "travel_document")["document_number"])
        de = fed.nodes["DE-BKA"].identity()
        answer = ask(
            de, fed, "FR-DGPN", "travel_document", [("document_number", doc)], endpoint=endpoint
        )
        assert answer.hit
        assert '"decision_id"' in opa.log()  # the sidecar's decision log is on
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        log.close()
        opa.stop()
    assert code == 0, (tmp_path / "node.log").read_text()[-3000:]
    # The Secrets and ConfigMaps (read-only in the pod) were only read; what the node wrote
    # is in the emptyDirs (the state folder beside node.toml, /tmp).
    assert snapshot(root / "etc") == before
    assert sorted(p.name for p in root.iterdir()) == ["etc", "tmp", "var"]
    written = set(snapshot(root / "var/lib/liaison")) - {"node.toml", "directory.json"}
    # The directory's rollback floor, the witness state and its lock: beside the files the
    # node was configured with, as node/directory_state.py and node/audit/witness_state.py say.
    assert written <= {"directory.state", f"audit.log{STATE_SUFFIX}", f"audit.log{LOCK_SUFFIX}"}
    assert "directory.state" in written
