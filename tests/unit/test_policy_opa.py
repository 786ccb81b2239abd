"""The OPA server engine against real OPA processes on loopback (no mocks).

The repository's own policies are compared engine against engine rather than against
hard-coded reasons (they are being reworked); edge cases use small Rego written to tmp_path,
each on its own OPA instance, because pushing replaces the `liaison` namespace.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from federation.pki import create_authority, issue_node_certificate
from node.policy import opa_process
from node.policy.decision import Decision, PolicyUnavailable
from node.policy.embedded import EmbeddedEngine, PolicyLoadError
from node.policy.opa import OpaEngine
from node.policy.opa_modules import GUARD_ID
from node.policy.opa_process import OpaNotFound, OpaServer, OpaTls, find_opa, start_opa
from node.policy.revision import canonical_json, policy_revision
from tests.unit.policy_examples import ALLOW_INPUT, DATA, POLICIES

# Generous for equality tests on a loaded CI box; the deadline tests set their own.
SLACK_DEADLINE = 5.0
# How far past its deadline a refusal may come on a loaded 2-core box and still count as
# bounded: a hang is unbounded, and a speed claim belongs in benchmarks/, not here.
HANG_SLACK = 3.0


INPUTS: list[dict[str, Any]] = [
    ALLOW_INPUT,
    {**ALLOW_INPUT, "node": {**ALLOW_INPUT["node"], "profile": "eu-led"}},
    {**ALLOW_INPUT, "node": {**ALLOW_INPUT["node"], "profile": "strict"}},
    {
        **ALLOW_INPUT,
        "requester": {"node_id": "NL-KMAR", "country": "NL", "status": "active"},
        "envelope": {**ALLOW_INPUT["envelope"], "legal_basis": "mlat"},
    },
    {**ALLOW_INPUT, "version": 2},
    {**ALLOW_INPUT, "requester": {**ALLOW_INPUT["requester"], "status": "suspended"}},
    {**ALLOW_INPUT, "requester": {"node_id": "XX-NOBODY", "country": "XX", "status": "active"}},
    {**ALLOW_INPUT, "request": {"method": "Fetch", "category": "firearm"}},
    {**ALLOW_INPUT, "now": "2031-01-01T00:00:00Z"},
    {**ALLOW_INPUT, "envelope": {"legal_basis": "none"}},
    {},
    {"version": None},
    {"requester": []},
]


DENY_ALL = 'package liaison.exchange\n\ndecision := {"allow": false}\n'


def write_policies(root: Path, modules: dict[str, str]) -> Path:
    for name, text in modules.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def opa_policy_ids(server: OpaServer) -> set[str]:
    answer = requests.get(f"{server.url}/v1/policies", timeout=5).json()
    return {p["id"] for p in answer["result"]}


@pytest.fixture(scope="module")
def shared_opa() -> Iterator[OpaServer]:
    """One OPA holding the repository's policies, for the tests that only decide."""
    with start_opa() as server:
        yield server


@pytest.fixture(scope="module")
def opa_engine(shared_opa: OpaServer) -> Iterator[OpaEngine]:
    engine = OpaEngine(shared_opa.url, POLICIES, DATA, deadline=SLACK_DEADLINE)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def embedded() -> EmbeddedEngine:
    return EmbeddedEngine(POLICIES, DATA)


@pytest.fixture
def opa() -> Iterator[OpaServer]:
    """A fresh OPA of this test's own (it may be pushed other policies, paused or killed)."""
    with start_opa() as server:
        yield server


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A real socket that accepts connections (kernel backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


# --- the same files, the same answers ------------------------------------------------------


def test_revision_is_the_embedded_engines(opa_engine: OpaEngine, embedded: EmbeddedEngine) -> None:
    assert opa_engine.revision == embedded.revision == policy_revision(POLICIES, DATA)
    assert opa_engine.name == "opa"


@pytest.mark.parametrize("policy_input", INPUTS, ids=range(len(INPUTS)))
def test_decisions_equal_the_embedded_engines(
    opa_engine: OpaEngine, embedded: EmbeddedEngine, policy_input: dict[str, Any]
) -> None:
    assert opa_engine.decide(policy_input) == embedded.decide(policy_input)


@pytest.mark.parametrize("policy_input", INPUTS, ids=range(len(INPUTS)))
def test_decisions_on_the_input_already_serialised_are_the_same(
    opa_engine: OpaEngine, embedded: EmbeddedEngine, policy_input: dict[str, Any]
) -> None:
    # What the decision cache hands over on a miss: its key (sorted keys, compact).
    text = canonical_json(policy_input)
    own = embedded.decide(policy_input)
    assert embedded.decide(policy_input, input_json=text) == own
    assert opa_engine.decide(policy_input, input_json=text) == own


def test_inputs_cover_allow_and_deny(opa_engine: OpaEngine) -> None:
    decisions = [opa_engine.decide(i) for i in INPUTS]
    assert any(d.allow for d in decisions), "no input is allowed: the comparison is one-sided"
    assert any(not d.allow for d in decisions)
    allowed = opa_engine.decide(ALLOW_INPUT)
    assert allowed.allow  # every allowed Match carries max_results
    assert type(allowed.obligations["max_results"]) is int  # 5, not 5.0


def test_input_that_is_not_json_is_policy_error(
    opa_engine: OpaEngine, embedded: EmbeddedEngine
) -> None:
    for bad in ({**ALLOW_INPUT, "now": float("nan")}, {**ALLOW_INPUT, "now": object()}):
        assert opa_engine.decide(bad) == Decision.deny("policy_error", opa_engine.revision)
        assert embedded.decide(bad) == opa_engine.decide(bad)


def test_one_keep_alive_connection(shared_opa: OpaServer) -> None:
    engine = OpaEngine(shared_opa.url, POLICIES, DATA, deadline=SLACK_DEADLINE)
    try:
        for _ in range(50):
            engine.decide(ALLOW_INPUT)
        pool = engine._decision_pool
        assert pool.num_connections == 1  # pushes and 50 decisions: one TCP connection
        assert pool.num_requests > 50
    finally:
        engine.close()


def test_proxy_environment_is_ignored(
    shared_opa: OpaServer, opa_engine: OpaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # discard port: nothing there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    engine = OpaEngine(shared_opa.url, POLICIES, DATA, deadline=SLACK_DEADLINE)
    try:
        assert engine.decide(ALLOW_INPUT) == opa_engine.decide(ALLOW_INPUT)
    finally:
        engine.close()


def test_explain_traces_the_policy_files(opa_engine: OpaEngine) -> None:
    lines = opa_engine.explain(ALLOW_INPUT, mode="full")
    assert any(".rego:" in line for line in lines)
    with pytest.raises(ValueError):
        opa_engine.explain(ALLOW_INPUT, mode="everything")


# --- failing closed ------------------------------------------------------------------------


def test_opa_down_at_construction(stalled_port: int) -> None:
    port = opa_process.free_loopback_port()  # nothing listens there
    push_timeout = 30.0
    started = time.monotonic()
    with pytest.raises(PolicyUnavailable, match=rf"127\.0\.0\.1:{port}"):
        OpaEngine(f"http://127.0.0.1:{port}", POLICIES, DATA, push_timeout=push_timeout)
    # A refused connection is the answer: no retrying until the push timeout.
    assert time.monotonic() - started < HANG_SLACK < push_timeout


def test_stalled_opa_at_construction_is_bounded(stalled_port: int) -> None:
    push_timeout = 0.3
    started = time.monotonic()
    with pytest.raises(PolicyUnavailable):
        OpaEngine(f"http://127.0.0.1:{stalled_port}", POLICIES, DATA, push_timeout=push_timeout)
    elapsed = time.monotonic() - started
    assert push_timeout * 0.9 <= elapsed < push_timeout + HANG_SLACK


def test_opa_killed_after_construction(opa: OpaServer) -> None:
    engine = OpaEngine(opa.url, POLICIES, DATA, deadline=0.5)
    engine.decide(ALLOW_INPUT)  # a live keep-alive connection in the pool
    opa.kill()
    started = time.monotonic()
    with pytest.raises(PolicyUnavailable):
        engine.decide(ALLOW_INPUT)
    assert time.monotonic() - started < engine.deadline + HANG_SLACK
    engine.close()


def test_stalled_opa_after_construction_is_bounded_by_the_deadline(opa: OpaServer) -> None:
    deadline = 0.4
    engine = OpaEngine(opa.url, POLICIES, DATA, deadline=deadline)
    expected = engine.decide(ALLOW_INPUT)
    opa.pause()  # SIGSTOP: connections still accepted and written to, nothing answers
    try:
        for _ in range(2):  # on the kept-alive connection, then on a fresh one
            started = time.monotonic()
            with pytest.raises(PolicyUnavailable):
                engine.decide(ALLOW_INPUT)
            elapsed = time.monotonic() - started
            assert deadline * 0.9 <= elapsed < deadline + HANG_SLACK
    finally:
        opa.resume()
    assert engine.decide(ALLOW_INPUT) == expected  # recovers on a new connection
    engine.close()


def test_pause_returns_once_every_thread_has_stopped(opa: OpaServer) -> None:
    """The stalled-OPA tests rely on it: SIGSTOP stops a Go process thread by thread."""
    assert not any(state in "Tt" for state in opa.thread_states().values())
    opa.pause()
    try:
        states = opa.thread_states()
        assert len(states) > 1  # the main thread alone would not say OPA is stopped
        assert set(states.values()) <= {"T", "t"}
        with pytest.raises(requests.exceptions.ReadTimeout):  # accepted, never answered
            requests.get(f"{opa.url}/health", timeout=0.5)
    finally:
        opa.resume()
    assert not any(state in "Tt" for state in opa.thread_states().values())
    assert requests.get(f"{opa.url}/health", timeout=5).status_code == 200
    opa.kill()
    with pytest.raises(opa_process.OpaProcessError, match="exited"):
        opa.pause()


def test_closed_engine_is_unavailable(opa: OpaServer) -> None:
    engine = OpaEngine(opa.url, POLICIES, DATA)
    engine.close()
    engine.close()
    with pytest.raises(PolicyUnavailable):
        engine.decide(ALLOW_INPUT)


@pytest.mark.parametrize(
    ("rego", "policy_input", "expected"),
    [
        # Undefined: OPA answers 200 without "result".
        ('decision := {"allow": true} if input.never', {}, "policy_error"),
        # Not an object.
        ('decision := "allow"', {}, "policy_error"),
        # An object the contract refuses.
        ('decision := {"allow": true, "obligations": {"teleport": 1}}', {}, "unknown_obligation"),
        # Conflicting complete rules: OPA answers 500 (eval_conflict_error).
        (
            'decision := {"allow": true} if input.a\ndecision := {"allow": false} if input.b',
            {"a": True, "b": True},
            "policy_error",
        ),
    ],
    ids=["undefined", "not-an-object", "unknown-obligation", "http-500"],
)
def test_anything_off_contract_is_a_deny(
    opa: OpaServer, tmp_path: Path, rego: str, policy_input: dict[str, Any], expected: str
) -> None:
    policy_dir = write_policies(
        tmp_path, {"liaison/exchange/decision.rego": f"package liaison.exchange\n\n{rego}\n"}
    )
    engine = OpaEngine(opa.url, policy_dir, {}, deadline=SLACK_DEADLINE)
    decision = engine.decide(policy_input)
    assert decision == Decision.deny(expected, engine.revision)
    assert decision == EmbeddedEngine(policy_dir, {}).decide(policy_input)
    engine.close()


# --- pushing the files -----------------------------------------------------------------------


def test_compile_error_names_the_file(opa: OpaServer, tmp_path: Path) -> None:
    policy_dir = write_policies(
        tmp_path,
        {
            "liaison/exchange/decision.rego": DENY_ALL,
            "liaison/exchange/broken.rego": "package liaison.exchange\n\nx if {\n\ty\n}\n",
        },
    )
    with pytest.raises(PolicyLoadError, match=r"liaison/exchange/broken\.rego:4:\d+: .*var y"):
        OpaEngine(opa.url, policy_dir, {})


def test_modules_are_pushed_whatever_their_dependency_order(opa: OpaServer, tmp_path: Path) -> None:
    # a.rego sorts first but calls a function only z.rego defines: OPA refuses it until
    # z.rego is in, so the push must retry until a fixed point.
    policy_dir = write_policies(
        tmp_path,
        {
            "liaison/a.rego": 'package liaison.exchange\n\ndecision := {"allow": helper(1)}\n',
            "liaison/z.rego": "package liaison.exchange\n\nhelper(x) := x == 1\n",
        },
    )
    engine = OpaEngine(opa.url, policy_dir, {})
    assert engine.decide({}).allow
    assert opa_policy_ids(opa) == {"liaison/a.rego", "liaison/z.rego", GUARD_ID}
    engine.close()


def test_push_replaces_stale_modules_and_data(opa: OpaServer, tmp_path: Path) -> None:
    first = write_policies(
        tmp_path / "first",
        {
            # The old decision uses a rule of extra.rego: OPA refuses to remove extra.rego
            # until the new decision.rego (which does not) is in.
            "liaison/exchange/decision.rego": (
                'package liaison.exchange\n\ndecision := {"allow": count(extra) == 0}\n'
            ),
            "liaison/exchange/extra.rego": 'package liaison.exchange\n\nextra contains "x"\n',
            "liaison/exchange/extra_test.rego": "package liaison.exchange_test\n",
        },
    )
    second = write_policies(
        tmp_path / "second",
        {
            "liaison/exchange/decision.rego": (
                'package liaison.exchange\n\ndecision := {"allow": true} if data.old == false\n'
            )
        },
    )
    # Not ours (another package root): an operator's module must survive our pushes.
    requests.put(
        f"{opa.url}/v1/policies/operator.rego", data="package system.authz\n", timeout=5
    ).raise_for_status()

    engine = OpaEngine(opa.url, first, {"old": True, "agreements": {}})
    assert not engine.decide({}).allow
    assert opa_policy_ids(opa) == {
        "liaison/exchange/decision.rego",
        "liaison/exchange/extra.rego",  # test files are not pushed
        "operator.rego",
        GUARD_ID,
    }
    engine.close()

    engine = OpaEngine(opa.url, second, {"old": False})
    assert engine.decide({}).allow  # the new module, the new data
    assert opa_policy_ids(opa) == {"liaison/exchange/decision.rego", "operator.rego", GUARD_ID}
    data = requests.get(f"{opa.url}/v1/data", timeout=5).json()["result"]
    assert data["old"] is False and "agreements" not in data  # replaced as a whole
    engine.close()


def test_engine_pushed_over_fails_closed(opa: OpaServer, tmp_path: Path) -> None:
    """OPA holds one set of packages: after another push, the first engine must not
    report that set's answers under its own revision."""
    first = OpaEngine(opa.url, POLICIES, DATA, deadline=SLACK_DEADLINE)
    first.decide(ALLOW_INPUT)
    other = write_policies(tmp_path, {"liaison/exchange/decision.rego": DENY_ALL})
    second = OpaEngine(opa.url, other, {}, deadline=SLACK_DEADLINE)
    with pytest.raises(PolicyUnavailable, match=second.revision):
        first.decide(ALLOW_INPUT)
    assert second.decide(ALLOW_INPUT) == Decision.deny("denied_by_policy", second.revision)
    first.close()
    second.close()


def test_failed_push_leaves_no_engine_deciding_from_a_mix(opa: OpaServer, tmp_path: Path) -> None:
    first = OpaEngine(opa.url, POLICIES, DATA, deadline=SLACK_DEADLINE)
    broken = write_policies(
        tmp_path,
        {
            "liaison/exchange/decision.rego": DENY_ALL,  # goes in...
            "liaison/exchange/broken.rego": "package liaison.exchange\n\nx if y\n",  # ...not
        },
    )
    with pytest.raises(PolicyLoadError, match=r"broken\.rego"):
        OpaEngine(opa.url, broken, {})
    with pytest.raises(PolicyUnavailable, match="holds policy revision pushing"):
        first.decide(ALLOW_INPUT)
    first.close()


def test_opa_restarted_empty_is_refused_then_given_the_policy_again(opa: OpaServer) -> None:
    engine = OpaEngine(opa.url, POLICIES, DATA, deadline=SLACK_DEADLINE)
    allowed = engine.decide(ALLOW_INPUT)
    opa.kill()
    with start_opa(port=opa.port):
        with pytest.raises(PolicyUnavailable, match="holds policy revision none"):
            engine.decide(ALLOW_INPUT)
        # The engine pushes its files again in the background; meanwhile it fails closed.
        deadline = time.monotonic() + 10
        while True:
            try:
                assert engine.decide(ALLOW_INPUT) == allowed
                break
            except PolicyUnavailable:
                assert time.monotonic() < deadline, "the policy was never pushed again"
                time.sleep(0.05)
    engine.close()


def test_an_engine_pushed_over_does_not_push_back(opa: OpaServer, tmp_path: Path) -> None:
    first = OpaEngine(opa.url, POLICIES, DATA, deadline=SLACK_DEADLINE)
    second = OpaEngine(opa.url, POLICIES, {**DATA, "settings": {"max_match_results": 3}})
    for _ in range(3):
        with pytest.raises(PolicyUnavailable, match="holds policy revision sha256:"):
            first.decide(ALLOW_INPUT)
        time.sleep(0.05)
    assert second.decide(ALLOW_INPUT).revision == second.revision
    first.close()
    second.close()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        OpaEngine("unix:///tmp/opa.sock", POLICIES, DATA)
    with pytest.raises(ValueError):
        OpaEngine("http://127.0.0.1:8181/v1", POLICIES, DATA)
    with pytest.raises(ValueError):
        OpaEngine("http://127.0.0.1:8181", POLICIES, DATA, ca=tmp_path / "ca.crt")
    with pytest.raises(ValueError):
        OpaEngine("https://127.0.0.1:8181", POLICIES, DATA, client_certificate=tmp_path / "tls.crt")
    with pytest.raises(PolicyLoadError, match="not found"):
        OpaEngine("https://127.0.0.1:8181", POLICIES, DATA, ca=tmp_path / "missing.crt")
    with pytest.raises(PolicyLoadError, match=r"no \.rego"):
        OpaEngine("http://127.0.0.1:8181", tmp_path, DATA)


# --- an mTLS sidecar -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    create_authority(root / "ca", "test")
    issue_node_certificate(root / "ca", "test", "opa-sidecar", root / "opa")
    issue_node_certificate(root / "ca", "test", "node", root / "node")
    create_authority(root / "other-ca", "other")
    issue_node_certificate(root / "other-ca", "other", "node", root / "stranger")
    return root


@pytest.fixture
def tls_opa(pki: Path) -> Iterator[OpaServer]:
    tls = OpaTls(pki / "opa" / "tls.crt", pki / "opa" / "tls.key", ca=pki / "ca" / "ca.crt")
    with start_opa(tls=tls) as server:
        yield server


def test_mtls_sidecar(tls_opa: OpaServer, pki: Path) -> None:
    assert tls_opa.url.startswith("https://127.0.0.1:")
    embedded = EmbeddedEngine(POLICIES, DATA)
    engine = OpaEngine(
        tls_opa.url,
        POLICIES,
        DATA,
        deadline=SLACK_DEADLINE,
        ca=pki / "ca" / "ca.crt",
        client_certificate=pki / "node" / "tls.crt",
        client_key=pki / "node" / "tls.key",
    )
    assert engine.decide(ALLOW_INPUT) == embedded.decide(ALLOW_INPUT)
    engine.close()


def test_mtls_sidecar_refuses_a_client_without_certificate(tls_opa: OpaServer, pki: Path) -> None:
    with pytest.raises(PolicyUnavailable):
        OpaEngine(tls_opa.url, POLICIES, DATA, ca=pki / "ca" / "ca.crt", push_timeout=2.0)


def test_mtls_sidecar_refuses_a_certificate_from_another_ca(tls_opa: OpaServer, pki: Path) -> None:
    with pytest.raises(PolicyUnavailable):
        OpaEngine(
            tls_opa.url,
            POLICIES,
            DATA,
            ca=pki / "ca" / "ca.crt",
            client_certificate=pki / "stranger" / "tls.crt",
            client_key=pki / "stranger" / "tls.key",
            push_timeout=2.0,
        )


def test_sidecar_not_trusted_without_its_ca(tls_opa: OpaServer, pki: Path) -> None:
    with pytest.raises(PolicyUnavailable, match=r"SSL|certificate"):
        OpaEngine(
            tls_opa.url,
            POLICIES,
            DATA,
            ca=pki / "other-ca" / "ca.crt",
            client_certificate=pki / "node" / "tls.crt",
            client_key=pki / "node" / "tls.key",
            push_timeout=2.0,
        )


# --- locating and running OPA ----------------------------------------------------------------


def test_find_opa_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OpaNotFound, match="LIAISON_OPA"):
        find_opa({"LIAISON_OPA": str(tmp_path / "nope")})
    fake = tmp_path / "bin" / "opa"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_opa({"LIAISON_OPA": str(fake)}) == fake
    monkeypatch.setattr(opa_process, "VENV_BINARY", tmp_path / "no-venv" / "opa")
    assert find_opa({"PATH": str(fake.parent)}) == fake
    with pytest.raises(OpaNotFound, match=r"scripts/setup\.sh"):
        find_opa({"PATH": str(tmp_path / "empty")})


def test_start_opa_reports_a_failed_start(tmp_path: Path) -> None:
    with pytest.raises(opa_process.OpaProcessError, match="exited"):
        start_opa(args=["--no-such-flag"])
