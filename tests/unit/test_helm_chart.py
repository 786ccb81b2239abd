"""The Helm chart (deploy/helm/liaison) rendered by the real Helm for its three value sets,
and what the manifests promise checked against the code they run.

`make lint` (scripts/check_deploy.sh) lints the chart and validates the manifests against
Kubernetes' schemas and checkov's rules; this file checks what those cannot know: that the
node.toml the chart writes is one the node accepts and that every file it names is mounted,
that the probes and the hook run commands this CLI parses, that the chart's copies of the
policies and alert rules are the repository's, that only emptyDirs are writable, and that the
network policy lets in and out exactly whom the values list.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from node.cli import build_parser
from node.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "liaison"
HELM = ROOT / ".venv" / "tools" / "helm"
VALUE_SETS = ("minimal", "production", "external-db")

Manifest = dict[str, Any]


def _sync_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sync_chart_files", ROOT / "scripts" / "sync_chart_files.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync = _sync_module()


def render(values: str, *extra: str) -> list[Manifest]:
    assert HELM.exists(), "helm missing: `make setup` builds it into .venv/tools"
    done = subprocess.run(
        [
            *(str(HELM), "template", "liaison", str(CHART), "--namespace", "liaison"),
            *("-f", str(CHART / "ci" / f"{values}.yaml"), *extra),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=VALUE_SETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    return request.param, render(request.param)


def values_of(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}.yaml").read_text())
    return loaded


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} rendered"
    return found[0]


def pod_specs(docs: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]


def containers(spec: Manifest) -> list[Manifest]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def node_container(docs: list[Manifest]) -> Manifest:
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "node")


# --- the chart's copies ----------------------------------------------------------------------


def test_the_chart_copies_are_the_repositorys_files() -> None:
    """files/policies and files/prometheus equal policies/ and deploy/prometheus/."""
    assert sync.differences() == [], "run .venv/bin/python scripts/sync_chart_files.py"


def test_a_drifted_copy_is_named(tmp_path: Path) -> None:
    root, chart = tmp_path / "repo", tmp_path / "repo" / "deploy" / "helm" / "liaison"
    (root / "policies" / "liaison").mkdir(parents=True)
    (root / "deploy" / "prometheus").mkdir(parents=True)
    (root / "policies" / "liaison" / "a.rego").write_text("package liaison.a\n")
    (root / "policies" / "liaison" / "a_test.rego").write_text("package liaison.a_test\n")
    (root / "deploy" / "prometheus" / "rules.yml").write_text("groups: []\n")
    (root / "deploy" / "prometheus" / "rules_test.yml").write_text("tests: []\n")
    sync.sync(root, chart)
    assert sorted(sync.present(chart)) == [
        "files/policies/liaison/a.rego",
        "files/prometheus/rules.yml",
    ]
    assert sync.differences(root, chart) == []
    (root / "deploy" / "prometheus" / "rules.yml").write_text("groups: [changed]\n")
    (root / "deploy" / "prometheus" / "recording.yml").write_text("groups: []\n")
    (root / "policies" / "liaison" / "a.rego").unlink()
    assert sync.differences(root, chart) == [
        "files/prometheus/recording.yml: missing from the chart",
        "files/policies/liaison/a.rego: not in the source any more",
        "files/prometheus/rules.yml: differs from its source",
    ]
    sync.sync(root, chart)
    assert sync.differences(root, chart) == []
    assert not (chart / "files" / "policies" / "liaison").exists()


def test_the_prometheus_rule_holds_every_group_of_deploy_prometheus() -> None:
    docs = render("production")
    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    expected = []
    for path in sorted((ROOT / "deploy" / "prometheus").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        if not path.name.endswith("_test.yml") and "groups" in doc:  # not the scrape config
            expected += doc["groups"]
    assert groups == expected
    names = {rule.get("alert") or rule.get("record") for g in groups for rule in g["rules"]}
    assert "LiaisonAuditFailures" in names and "liaison:secure_channel:ratio" in names


def test_the_policy_configmap_mounts_back_to_the_library(
    rendered: tuple[str, list[Manifest]],
) -> None:
    """Each key of the policies ConfigMap, put at its item's path, gives the library back."""
    _, docs = rendered
    data = one(docs, "ConfigMap", "liaison-policies")["data"]
    volume = next(
        v
        for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "policies"
    )
    files = {item["path"]: data[item["key"]] for item in volume["configMap"]["items"]}
    assert len(files) == len(data)
    library = ROOT / "policies"
    expected = {
        str(p.relative_to(library)): p.read_text()
        for p in library.rglob("*.rego")
        if not p.name.endswith("_test.rego")
    }
    assert files == expected


def test_the_opa_sidecar_is_the_pinned_opa() -> None:
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["liaison"]["tools"]
    version = pinned["opa"].rsplit("@v", 1)[1]
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart_values["opa"]["image"]["tag"] == f"{version}-static"
    assert values_of("production")["opa"]["image"]["tag"] == f"{version}-static"


# --- node.toml and what is mounted ------------------------------------------------------------


def test_node_toml_is_accepted_and_every_file_it_names_is_mounted(
    rendered: tuple[str, list[Manifest]], tmp_path: Path
) -> None:
    name, docs = rendered
    configmap = one(docs, "ConfigMap", "liaison")["data"]
    toml = tmp_path / "node.toml"
    toml.write_text(configmap["node.toml"])
    config = load_config(toml)  # every key known, every value well formed
    values = values_of(name)
    assert config.node.id == values["node"]["id"]
    assert config.audit.store == "database"
    url = make_url(config.store.url)
    assert url.get_backend_name() == "postgresql" and url.password is None
    assert config.audit.url == config.store.url
    if name == "external-db":
        assert config.policy.engine == "embedded"
        assert url.query["sslmode"] == "verify-full"
    else:
        assert config.policy.engine == "opa"
    assert config.server.listen.startswith("0.0.0.0:")

    node = node_container(docs)
    mounts = {m["mountPath"]: m for m in node["volumeMounts"]}

    def mounted(path: Path) -> bool:
        return any(
            str(path) == where or (not m.get("subPath") and str(path).startswith(where + "/"))
            for where, m in mounts.items()
        )

    files = [
        config.tls.certificate,
        config.tls.key,
        config.tls.ca,
        config.trust.directory,
        config.trust.authority_public_key,
        config.trust.signing_key,
        config.policy.data,
        config.policy.policy_dir,
    ]
    for path in files:
        assert mounted(path), f"{path} is named in node.toml but nothing is mounted there"
    if "sslrootcert" in url.query:
        assert mounted(Path(str(url.query["sslrootcert"])))
    # The node keeps state beside node.toml and beside the directory: both in the pod's
    # writable state folder; node.toml itself is at the path the image's commands use.
    assert mounts["/var/lib/liaison/node.toml"]["subPath"] == "node.toml"
    assert config.trust.directory.parent == Path("/var/lib/liaison")
    assert config.admin.socket.parent == Path("/tmp")


def test_only_empty_dirs_are_written(rendered: tuple[str, list[Manifest]]) -> None:
    """Every container: non-root, read-only root, no privilege escalation, no capabilities;
    every volume mounted writable is an emptyDir (or PostgreSQL's own data volume)."""
    _, docs = rendered
    for where, spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 10000, where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "add" not in sc["capabilities"], (where, c["name"])
            assert c["resources"]["limits"] and c["resources"]["requests"], (where, c["name"])
            for m in c.get("volumeMounts", []):
                if m.get("readOnly"):
                    continue
                if m["name"] == "data" and where.startswith("StatefulSet"):
                    continue  # the database's volume claim
                assert "emptyDir" in volumes[m["name"]], (where, c["name"], m)


def test_the_replicas_are_at_least_two(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    deployment = one(docs, "Deployment")
    if values_of(name).get("autoscaling", {}).get("enabled"):
        assert "replicas" not in deployment["spec"]
        assert one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    else:
        assert deployment["spec"]["replicas"] >= 2
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"] == deployment["spec"]["selector"]


def test_one_replica_is_refused() -> None:
    done = subprocess.run(
        [
            *(str(HELM), "template", "x", str(CHART), "-f", str(CHART / "ci" / "minimal.yaml")),
            *("--set", "replicaCount=1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "replicaCount must be at least 2" in done.stderr


def test_the_sidecar_runs_with_the_opa_engine_only(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    sidecars = [c for c in spec.get("initContainers", []) if c["name"] == "opa"]
    if name == "external-db":
        assert sidecars == []
        return
    (opa,) = sidecars
    assert opa["restartPolicy"] == "Always"  # a native sidecar: up before the node
    assert "--addr=127.0.0.1:8181" in opa["args"]  # the policy API on loopback only
    assert "--set=decision_logs.console=true" in opa["args"]


# --- the commands the pods run -----------------------------------------------------------------


def liaison_commands(docs: list[Manifest]) -> Iterator[tuple[str, list[str]]]:
    for where, spec in pod_specs(docs):
        for c in containers(spec):
            if not c["image"].split("@")[0].split(":")[0].endswith("/liaison"):
                continue
            yield f"{where} {c['name']}", list(c["args"])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in c:
                    command = c[probe]["exec"]["command"]
                    assert command[0] == "liaison", command
                    yield f"{where} {c['name']} {probe}", command[1:]


def test_every_liaison_command_parses(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    parser = build_parser()
    commands_known = next(
        a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    commands = dict(liaison_commands(docs))
    assert any(args[0] == "health" for args in commands.values())
    for where, args in commands.items():
        if args[0] not in commands_known:
            assert args[0] == "db", f"{where}: no command {args[0]!r}"
            continue  # `liaison db upgrade` comes with the schema migrations
        parsed = parser.parse_args(args)
        assert callable(parsed.run), where
        assert str(parsed.config) == "/var/lib/liaison/node.toml", where


def test_the_probes_ask_the_node_over_mtls(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    node = node_container(docs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = node[probe]["exec"]["command"]
        assert command[:4] == ["liaison", "health", "--config", node["args"][2]]
        # The command's own deadline fits in the probe's.
        assert float(command[command.index("--timeout") + 1]) < node[probe]["timeoutSeconds"]


def test_the_migration_runs_before_every_upgrade(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    job = one(docs, "Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    first = "pre-install" if name == "external-db" else "post-install"
    assert hooks == {first, "pre-upgrade"}
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["db", "upgrade"]
    own = one(docs, "ConfigMap", "liaison-migration")
    assert (
        own["metadata"]["annotations"]["helm.sh/hook"]
        == job["metadata"]["annotations"]["helm.sh/hook"]
    )
    assert int(own["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert own["data"]["node.toml"] == one(docs, "ConfigMap", "liaison")["data"]["node.toml"]


def test_every_checkov_skip_gives_its_reason(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    skips = [
        value
        for d in docs
        for key, value in (d["metadata"].get("annotations") or {}).items()
        if key.startswith("checkov.io/skip")
    ]
    assert skips
    for skip in skips:
        check, _, reason = skip.partition("=")
        assert check.startswith("CKV_") and len(reason.split()) >= 8, skip


# --- the network -----------------------------------------------------------------------------


def test_the_network_policy_admits_and_reaches_only_whom_the_values_list() -> None:
    docs = render("production")
    values = values_of("production")["networkPolicy"]
    policy = one(docs, "NetworkPolicy", "liaison")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    grpc_in, metrics_in = policy["ingress"]
    sources = [peer["cidr"] for peer in values["peers"] + values["overseers"]]
    assert [f["ipBlock"]["cidr"] for f in grpc_in["from"]] == sources
    assert grpc_in["ports"] == [{"port": 7001, "protocol": "TCP"}]
    assert metrics_in["ports"] == [{"port": 9464, "protocol": "TCP"}]
    assert "ipBlock" not in json.dumps(metrics_in["from"])
    peers_out = [rule for rule in policy["egress"] if "ipBlock" in json.dumps(rule)]
    assert [r["to"][0]["ipBlock"]["cidr"] for r in peers_out] == [
        *[p["cidr"] for p in values["peers"]],
        "203.0.113.50/32",  # extraEgress: the directory's https source
    ]
    database, dns = (r for r in policy["egress"] if "ipBlock" not in json.dumps(r))
    assert database["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "postgresql"
    )
    assert {p["port"] for p in dns["ports"]} == {53}
    postgres = one(docs, "NetworkPolicy", "liaison-postgresql")["spec"]
    assert postgres["egress"] == []
    assert [
        f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for f in postgres["ingress"][0]["from"]
    ] == ["node", "migration"]


def test_without_peers_nothing_reaches_the_grpc_port() -> None:
    policy = one(render("minimal"), "NetworkPolicy", "liaison")["spec"]
    assert all(7001 not in [p["port"] for p in rule["ports"]] for rule in policy["ingress"])


def test_an_external_database_is_reached_at_its_addresses_only() -> None:
    docs = render("external-db")
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    policy = one(docs, "NetworkPolicy", "liaison")["spec"]
    database = [r for r in policy["egress"] if r["ports"][0]["port"] == 5432]
    assert database == [
        {
            "to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        }
    ]
    env = node_container(docs)["env"]
    assert env == [
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "liaison-db", "key": "password"}},
        }
    ]


# --- the database URL without its password -------------------------------------------------------


def test_the_password_reaches_postgresql_through_pgpassword(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """node.toml's URL holds no password (a ConfigMap must not): libpq takes it from
    PGPASSWORD, which the chart sets from the Secret. On a real PostgreSQL server."""
    url = make_url(postgres_url)
    assert url.password, "the test database needs a password for this test to mean anything"
    # As the chart writes it (templates/_helpers.tpl, liaison.db.url): no password at all.
    bare = f"{url.drivername}://{url.username}@{url.host}:{url.port}/{url.database}"
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # no ~/.pgpass may answer instead
    monkeypatch.delenv("PGPASSWORD", raising=False)
    engine = create_engine(bare, poolclass=NullPool)
    with pytest.raises(OperationalError, match="password"):
        engine.connect().close()
    monkeypatch.setenv("PGPASSWORD", str(url.password))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
