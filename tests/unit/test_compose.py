"""deploy/compose: the demo federation on containers, checked without a container engine.

No container engine runs on the development machines or in CI, so the stack is never
brought up here. What can be checked is: the file is valid under the Compose specification
(the `compose-spec` bindings of the compose_spec crate, which refuse unknown keys, wrong
types and unknown values); every `liaison` command a service or the init script runs parses
with this very CLI; the init script itself, run outside a container with the real CLI,
enrols the federation and writes node.toml files the node accepts; every file the compose
file mounts exists; and the promises of hardening (non-root, read-only root filesystem, no
secret in the file) hold for every service.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from node.cli import build_parser
from node.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
INIT_SCRIPT = COMPOSE_DIR / "init.sh"
NODES = {"de": "DE-BKA", "fr": "FR-DGPN", "nl": "NL-KLPD"}


def load() -> dict[str, Any]:
    """The compose file as Compose reads it: YAML with its merge keys (`<<`) applied."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


COMPOSE = load()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def argv(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


# --- the Compose specification ----------------------------------------------------------------


def test_the_file_is_valid_under_the_compose_specification() -> None:
    PyCompose.from_json(json.dumps(COMPOSE)).validate()


def test_the_validator_refuses_what_the_specification_does() -> None:
    """The validator really checks (a parser that took anything would pass every file)."""
    bad = json.loads(json.dumps(COMPOSE))
    bad["services"]["node-de"]["read_only"] = "maybe"
    with pytest.raises(ValueError, match="expected a boolean"):
        PyCompose.from_json(json.dumps(bad)).validate()
    bad = json.loads(json.dumps(COMPOSE))
    bad["services"]["node-de"]["healthcheck"]["intervall"] = "3s"
    with pytest.raises(ValueError, match="intervall"):
        PyCompose.from_json(json.dumps(bad)).validate()
    bad = json.loads(json.dumps(COMPOSE))
    bad["services"]["node-de"]["depends_on"]["init"]["condition"] = "service_done"
    with pytest.raises(ValueError, match="unknown variant `service_done`"):
        PyCompose.from_json(json.dumps(bad)).validate()


def test_references_between_services_networks_and_volumes_resolve() -> None:
    """What the schema cannot know: every service, network and volume named is declared."""
    for name, service in SERVICES.items():
        depends = service.get("depends_on", [])
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in SERVICES, f"{name} depends on an unknown service {other}"
        for network in service.get("networks", []):
            assert network in COMPOSE["networks"], f"{name}: unknown network {network}"
        for mount in service.get("volumes", []):
            if mount["type"] == "volume":
                assert mount["source"] in COMPOSE["volumes"], f"{name}: {mount['source']}"


# --- the liaison commands ---------------------------------------------------------------------


def service_commands() -> list[tuple[str, list[str]]]:
    """Every `liaison ...` a Liaison service runs: the image's ENTRYPOINT is `liaison`, so a
    `command` without an `entrypoint` is its arguments; and each healthcheck's."""
    found: list[tuple[str, list[str]]] = []
    for name, service in SERVICES.items():
        if service.get("image", "").startswith("liaison:"):
            if "command" in service and "entrypoint" not in service:
                found.append((name, argv(service["command"])))
            test = service.get("healthcheck", {}).get("test")
            if test:
                assert test[0] == "CMD" and test[1] == "liaison", f"{name}: {test}"
                found.append((f"{name} healthcheck", list(test[2:])))
    return found


def script_commands() -> list[list[str]]:
    """Every `liaison ...` line of the init script, its shell variables given sample values
    (the node ids, the service names), as the shell would split it."""
    sample = {
        "FED": "/var/lib/liaison",
        "FEDERATION": "liaison.example",
        "id": "DE-BKA",
        "cc": "de",
        "OVERSEER": "EU-EDPS",
    }
    commands: list[list[str]] = []
    for line in INIT_SCRIPT.read_text().splitlines():
        words = line.strip()
        if not words.startswith("liaison "):
            continue
        expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: sample[m.group(1)], words)
        commands.append(shlex.split(expanded)[1:])
    return commands


def test_the_services_and_the_script_run_liaison() -> None:
    names = [name for name, _ in service_commands()]
    for cc in NODES:
        assert f"node-{cc}" in names and f"node-{cc} healthcheck" in names
    verbs = {tuple(c[:2]) for c in script_commands()}
    for verb in (
        ("federation", "init"),
        ("node", "enroll"),
        ("oversight", "enroll"),
        ("directory", "add"),
        ("directory", "sign"),
        ("db", "upgrade"),
    ):
        assert verb in verbs, f"init.sh does not run `liaison {' '.join(verb)}`"


@pytest.mark.parametrize(
    ("where", "command"),
    service_commands() + [("init.sh", c) for c in script_commands()],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_every_liaison_command_parses(where: str, command: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(command)
    assert callable(args.run)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([*[w for w in command if not w.startswith("-")][:2], "--help"])
    assert exit_.value.code == 0


def test_the_init_script_enrols_the_federation(tmp_path: Path) -> None:
    """The script, run with the real CLI outside a container: a signed directory listing the
    three nodes and the overseer, and node.toml files the node accepts that name PostgreSQL,
    the node's own sidecar, the database audit store and /metrics over TLS. `db upgrade`
    needs the compose network's PostgreSQL, so only that command is recorded, not run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = Path(sys.executable).parent / "liaison"
    upgrades = tmp_path / "upgrades"
    wrapper = bin_dir / "liaison"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "db upgrade" ]; then echo "$*" >> {upgrades}; exit 0; fi\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    fed = tmp_path / "federation"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LIAISON_COMPOSE_DIR": str(fed),
        "LIAISON_COMPOSE_AGREEMENTS": str(COMPOSE_DIR / "agreements"),
    }
    for run in (1, 2):  # the second run (the stack up again) enrols nothing
        done = subprocess.run(
            ["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"init.sh (run {run}):\n{done.stdout}{done.stderr}"
    assert len(upgrades.read_text().splitlines()) == 2 * len(NODES)

    directory = json.loads((fed / "directory.json").read_text())
    listed = json.dumps(directory)
    for node_id in [*NODES.values(), "EU-EDPS"]:
        assert node_id in listed
    for cc, node_id in NODES.items():
        folder = fed / node_id
        config = load_config(folder / "node.toml")
        assert config.node.id == node_id
        assert config.store.url == f"postgresql+psycopg://liaison@postgres:5432/liaison_{cc}"
        assert config.policy.engine == "opa" and config.policy.opa_url == f"http://opa-{cc}:8181"
        assert config.audit.store == "database"
        assert config.server.metrics == "0.0.0.0:9464" and config.server.metrics_tls
        assert (folder / "directory.json").read_text() == (fed / "directory.json").read_text()
        assert json.loads((folder / "agreements.json").read_text()) == json.loads(
            (COMPOSE_DIR / "agreements" / f"{node_id}.json").read_text()
        )
    for name in ("ca.crt", "tls.crt", "tls.key"):
        assert (fed / "overseer" / name).exists()


# --- what the file mounts and runs ------------------------------------------------------------


def test_every_file_the_compose_file_mounts_exists() -> None:
    mounted: list[str] = []
    for service in SERVICES.values():
        mounted += [m["source"] for m in service.get("volumes", []) if m["type"] == "bind"]
        build = service.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).is_file()
    assert mounted
    for source in mounted:
        assert (COMPOSE_DIR / source).exists(), f"{source} (relative to deploy/compose)"


def test_prometheus_loads_the_repositorys_rules_and_scrapes_every_node_over_tls() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    mounts = {m["target"]: m["source"] for m in SERVICES["prometheus"]["volumes"]}
    for rule_file in config["rule_files"]:
        assert mounts[rule_file].startswith("../prometheus/"), rule_file
    (job,) = config["scrape_configs"]
    assert job["scheme"] == "https"
    overseer = next(m for m in SERVICES["prometheus"]["volumes"] if m["type"] == "volume")
    assert overseer["volume"]["subpath"] == "overseer"
    for path in job["tls_config"].values():
        assert path.startswith(overseer["target"] + "/")
    targets = {t["labels"]["member"]: t["targets"] for t in job["static_configs"]}
    assert targets == {node_id: [f"node-{cc}:9464"] for cc, node_id in NODES.items()}


def test_each_node_mounts_its_own_folder_and_reaches_only_its_own_sidecar() -> None:
    for cc, node_id in NODES.items():
        node = SERVICES[f"node-{cc}"]
        folder = next(m for m in node["volumes"] if m["target"] == "/var/lib/liaison")
        assert folder["source"] == "federation" and folder["volume"]["subpath"] == node_id
        assert node["depends_on"]["init"]["condition"] == "service_completed_successfully"
        sidecar_networks = [n for n in node["networks"] if n.startswith("opa-")]
        assert sidecar_networks == [f"opa-{cc}"]
        assert SERVICES[f"opa-{cc}"]["networks"] == [f"opa-{cc}"]
        # Started before its sidecar listens, a node fails closed: it must be restarted.
        assert node["restart"] == "unless-stopped"
    assert SERVICES["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["init"]["restart"] == "no"


def test_every_service_is_hardened() -> None:
    for name, service in SERVICES.items():
        assert service.get("read_only") is True, f"{name}: read_only root filesystem"
        user = str(service.get("user", ""))
        uid = user.partition(":")[0]
        assert uid.isdigit() and int(uid) > 0, f"{name}: a numeric non-root user"
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} on loopback only"


def test_no_secret_is_in_the_file() -> None:
    text = COMPOSE_FILE.read_text().lower()
    for service in SERVICES.values():
        for key in service.get("environment", {}):
            assert not (key.endswith("PASSWORD") or key.endswith("SECRET")), key
    assert "begin " not in text and "private key" not in text


def test_the_image_gives_its_folder_to_the_node_user() -> None:
    """A fresh named volume takes the owner of the folder it is mounted on: the init service
    can write /var/lib/liaison only because the image gives it to the node's user."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "chown 10001:10001 /var/lib/liaison" in dockerfile
    assert "USER 10001:10001" in dockerfile
    assert SERVICES["init"]["user"] == "10001:10001"


def test_the_opa_sidecars_are_the_pinned_opa() -> None:
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["liaison"]["tools"]
    version = pinned["opa"].rsplit("@v", 1)[1]
    chart = yaml.safe_load((ROOT / "deploy" / "helm" / "liaison" / "values.yaml").read_text())
    chart_image = f"{chart['opa']['image']['repository']}:{chart['opa']['image']['tag']}"
    assert chart_image == f"openpolicyagent/opa:{version}-static"
    for cc in NODES:
        assert SERVICES[f"opa-{cc}"]["image"] == chart_image


def test_postgres_is_the_charts_and_creates_a_database_per_node() -> None:
    chart = yaml.safe_load((ROOT / "deploy" / "helm" / "liaison" / "values.yaml").read_text())
    image = chart["postgresql"]["image"]
    assert SERVICES["postgres"]["image"] == f"{image['repository']}:{image['tag']}"
    sql = (COMPOSE_DIR / "postgres-init.sql").read_text()
    for cc in NODES:
        assert f"CREATE DATABASE liaison_{cc};" in sql


def test_the_commands_the_docs_show_parse() -> None:
    """docs/operating.md's Compose section: each `exec node-.. liaison ...` it shows."""
    docs = (ROOT / "docs" / "operating.md").read_text()
    section = docs.split("## Compose (a demo federation on containers)", 1)[1].split("\n## ")[0]
    joined = section.replace("\\\n", " ")
    shown = [
        shlex.split(line.split(" liaison ", 1)[1])
        for line in joined.splitlines()
        if line.startswith("docker compose") and " exec node-" in line and " liaison " in line
    ]
    assert shown, "the section shows no liaison command run in a node"
    parser = build_parser()
    for command in shown:
        assert callable(parser.parse_args(command).run), command
