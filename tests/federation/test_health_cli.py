"""`liaison health` against real nodes over real mTLS: the command containers and Kubernetes
probes run (deploy/Dockerfile, deploy/helm/liaison), so its exit status is its contract."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from federation.pki import create_authority
from node.cli.health import local_endpoint
from node.enrol import enrol_node
from node.local.federation import Federation, free_port


def liaison(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_serving_node_exits_0(fed: Federation) -> None:
    node = fed.nodes["DE-BKA"]
    done = liaison("health", "--config", str(node.config_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"DE-BKA at {node.endpoint}: SERVING\n"


def test_the_endpoint_option_asks_there(fed: Federation) -> None:
    """Another node's endpoint with DE-BKA's credentials: mTLS then insists the server is
    DE-BKA, so FR-DGPN's certificate fails the handshake and nothing answers."""
    node, other = fed.nodes["DE-BKA"], fed.nodes["FR-DGPN"]
    ok = liaison("health", "--config", str(node.config_path), "--endpoint", node.endpoint)
    assert ok.returncode == 0, ok.stderr
    wrong = liaison("health", "--config", str(node.config_path), "--endpoint", other.endpoint)
    assert wrong.returncode == 2
    assert wrong.stdout == ""
    assert wrong.stderr.startswith(f"liaison health: DE-BKA at {other.endpoint} did not answer (")


def test_nothing_listening_exits_2_with_one_line(fed: Federation) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    done = liaison(
        "health",
        "--config",
        str(fed.nodes["DE-BKA"].config_path),
        "--endpoint",
        endpoint,
        "--timeout",
        "2",
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert f"DE-BKA at {endpoint} did not answer (UNAVAILABLE" in done.stderr
    assert "is the node running" in done.stderr


def test_credentials_of_another_ca_exit_2(fed: Federation, tmp_path: Path) -> None:
    """A node.toml whose certificate another authority issued: the real node refuses the
    handshake, which is "no answer", not "not serving"."""
    create_authority(tmp_path / "authority", "liaison.example")
    enrol_node(
        tmp_path / "authority",
        "DE-BKA",
        tmp_path / "DE-BKA",
        endpoint=fed.nodes["DE-BKA"].endpoint,
        hosts=("127.0.0.1",),
        metrics="",
        policy_dir=None,
    )
    done = liaison("health", "--config", str(tmp_path / "DE-BKA" / "node.toml"), "--timeout", "3")
    assert done.returncode == 2
    assert "did not answer" in done.stderr


@pytest.fixture
def not_serving(fed: Federation) -> Iterator[str]:
    """A real gRPC server on DE-BKA's own certificate, requiring client certificates from the
    federation CA as the node does, whose health service says NOT_SERVING (as a node's
    would while it drains)."""
    folder = fed.nodes["DE-BKA"].folder
    credentials = grpc.ssl_server_credentials(
        [((folder / "tls.key").read_bytes(), (folder / "tls.crt").read_bytes())],
        root_certificates=(folder / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_not_serving_exits_1(fed: Federation, not_serving: str) -> None:
    done = liaison(
        "health", "--config", str(fed.nodes["DE-BKA"].config_path), "--endpoint", not_serving
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == (
        f"DE-BKA at {not_serving}: NOT_SERVING (it answered, but is not serving)\n"
    )


def test_a_missing_config_and_a_bad_timeout_exit_2(tmp_path: Path) -> None:
    missing = liaison("health", "--config", str(tmp_path / "node.toml"))
    assert missing.returncode == 2
    assert missing.stderr == f"liaison: error: configuration file {tmp_path}/node.toml not found\n"
    bad = liaison("health", "--config", str(tmp_path / "node.toml"), "--timeout", "0")
    assert bad.returncode == 2
    assert "'0' is not a positive number of seconds" in bad.stderr


@pytest.mark.parametrize(
    ("listen", "endpoint"),
    [
        ("0.0.0.0:7001", "127.0.0.1:7001"),
        ("[::]:7001", "[::1]:7001"),
        (":7001", "127.0.0.1:7001"),
        ("127.0.0.1:7001", "127.0.0.1:7001"),
        ("node.bka.example:7001", "node.bka.example:7001"),
    ],
)
def test_an_any_address_bind_is_asked_on_loopback(listen: str, endpoint: str) -> None:
    assert local_endpoint(listen) == endpoint


def test_a_listen_without_port_is_refused() -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        local_endpoint("0.0.0.0")
