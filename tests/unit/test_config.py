"""Loading the node's TOML configuration: typed values, relative paths, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig, load_config

NODE = '[node]\nid = "DE-BKA"\nfederation = "liaison.example"\n'


def _write(folder: Path, text: str, name: str = "node.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def _load(folder: Path, text: str) -> NodeConfig:
    return load_config(_write(folder, text))


def test_minimal_config_gets_documented_defaults_beside_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "etc", NODE)
    config = load_config(path)
    here = (tmp_path / "etc").resolve()
    assert config.source == path.resolve()
    assert config.node.id == "DE-BKA"
    assert config.node.federation == "liaison.example"
    assert config.node.profile == "bilateral"
    assert config.server.listen == "127.0.0.1:7001"
    assert config.server.metrics == "127.0.0.1:9464"
    assert config.server.max_message_bytes == 1 << 20
    assert config.tls.certificate == here / "tls.crt"
    assert config.tls.key == here / "tls.key"
    assert config.tls.ca == here / "ca.crt"
    assert config.trust.directory == here / "directory.json"
    assert config.trust.authority_public_key == here / "authority.pub"
    assert config.trust.signing_key == here / "signing.key"
    assert config.policy.engine == "embedded"
    assert config.policy.policy_dir == here / "policies"
    assert config.policy.data == here / "agreements.json"
    assert config.policy.deadline_ms == 250
    assert config.audit.path == here / "audit.log"
    assert config.witness.interval_s == 60
    assert config.audit.store == "file" and config.audit.url == ""
    assert config.witness.endpoints == {}
    assert config.store.url == f"sqlite:///{here / 'records.db'}"


def test_full_config_is_read(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        NODE
        + """
[server]
listen = "0.0.0.0:7443"
metrics = ""
max_message_bytes = 4096
[policy]
deadline_ms = 40
[store]
url = "postgresql://liaison@db/liaison"
""",
    )
    assert config.server.listen == "0.0.0.0:7443"
    assert config.server.metrics == ""
    assert config.server.max_message_bytes == 4096
    assert config.policy.deadline_ms == 40
    assert config.store.url == "postgresql://liaison@db/liaison"


def test_relative_paths_resolve_against_the_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    conf = tmp_path / "conf"
    config = _load(
        conf,
        NODE
        + """
[tls]
certificate = "pki/node.crt"
ca = "../shared/ca.crt"
[audit]
path = "/var/lib/liaison/audit.log"
""",
    )
    assert config.tls.certificate == conf.resolve() / "pki" / "node.crt"
    assert config.tls.ca == (tmp_path / "shared" / "ca.crt").resolve()
    assert config.tls.key == conf.resolve() / "tls.key"
    assert config.audit.path == Path("/var/lib/liaison/audit.log")
    for p in (config.tls.certificate, config.tls.ca, config.tls.key):
        assert p.is_absolute() and elsewhere not in p.parents


def test_config_given_by_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "conf", NODE)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/node.toml"))
    assert config.source == tmp_path.resolve() / "conf" / "node.toml"
    assert config.audit.path == tmp_path.resolve() / "conf" / "audit.log"


def test_relative_sqlite_url_lives_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _load(tmp_path / "conf", NODE + '[store]\nurl = "sqlite:///data/records.db"\n')
    assert config.store.url == f"sqlite:///{(tmp_path / 'conf').resolve()}/data/records.db"


def test_absolute_sqlite_url_is_kept(tmp_path: Path) -> None:
    config = _load(tmp_path, NODE + '[store]\nurl = "sqlite:////srv/liaison/records.db"\n')
    assert config.store.url == "sqlite:////srv/liaison/records.db"


# --- errors ----------------------------------------------------------------------------------


def test_typo_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, NODE + '[policy]\nengnie = "embedded"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path.resolve()))
    assert "unknown key [policy] 'engnie'" in message
    assert "did you mean 'engine'?" in message


def test_unknown_key_without_near_match_lists_the_known_keys(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown key \[audit\] 'colour'; known: checkpoint_interval_s, path, store, url$",
    ):
        _load(tmp_path, NODE + '[audit]\ncolour = "red"\n')


def test_typo_in_node_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[node\] 'federaton' \(did you mean 'federation'"):
        _load(tmp_path, '[node]\nid = "DE-BKA"\nfederaton = "liaison.example"\n')


def test_unknown_section_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, NODE + '[polcy]\nengine = "embedded"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path.resolve()) in str(info.value)
    assert "'polcy'" in str(info.value)
    assert "did you mean 'policy'?" in str(info.value)


def test_missing_node_section(tmp_path: Path) -> None:
    path = _write(tmp_path, '[server]\nlisten = "127.0.0.1:7001"\n')
    with pytest.raises(ConfigError, match=r"the \[node\] section \(id, federation\) is required"):
        load_config(path)


def test_node_section_lacking_its_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[node\] lacks required key\(s\) \['federation'\]"):
        _load(tmp_path, '[node]\nid = "DE-BKA"\n')


@pytest.mark.parametrize("node_id", ["de-bka", "DEBKA", "DE-BKA\\n", ""])
def test_bad_node_id(tmp_path: Path, node_id: str) -> None:
    with pytest.raises(ConfigError, match=r"\[node\] invalid node id"):
        _load(tmp_path, f'[node]\nid = "{node_id}"\nfederation = "liaison.example"\n')


def test_bad_federation_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[node\] invalid federation name 'Liaison'"):
        _load(tmp_path, '[node]\nid = "DE-BKA"\nfederation = "Liaison"\n')


@pytest.mark.parametrize("value", ['"250"', "0", "-5", "true", "2.5"])
def test_deadline_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, NODE + f"[policy]\ndeadline_ms = {value}\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(f"{path.resolve()}: [policy] deadline_ms must be a positive integer"),
    ):
        load_config(path)


@pytest.mark.parametrize("value", ["7001", "true", "[]"])
def test_strings_must_be_strings(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[server\] listen must be a string"):
        _load(tmp_path, NODE + f"[server]\nlisten = {value}\n")


@pytest.mark.parametrize("value", ['""', "3", "false"])
def test_paths_must_be_non_empty_strings(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[tls\] key must be a non-empty path string"):
        _load(tmp_path, NODE + f"[tls]\nkey = {value}\n")


def test_section_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[audit\] must be a table"):
        _load(tmp_path, 'audit = "audit.log"\n' + NODE)


def test_unknown_engine(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[policy\] engine 'opaa' is not one of embedded, opa"):
        _load(tmp_path, NODE + '[policy]\nengine = "opaa"\n')


def test_opa_engine_with_its_sidecar_tls(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        NODE
        + '[policy]\nengine = "opa"\nopa_url = "https://127.0.0.1:8181"\n'
        + 'opa_ca = "opa/ca.crt"\nopa_client_certificate = "opa/c.crt"\n'
        + 'opa_client_key = "opa/c.key"\nwatch = false\n',
    )
    assert config.policy.engine == "opa"
    assert config.policy.opa_ca == (tmp_path / "opa" / "ca.crt").resolve()
    assert config.policy.watch is False


def test_opa_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="go together"):
        _load(tmp_path, NODE + '[policy]\nopa_client_certificate = "c.crt"\n')


def test_watch_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[policy\] watch must be true or false"):
        _load(tmp_path, NODE + '[policy]\nwatch = "yes"\n')


def test_unknown_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"profile 'eu' is not one of bilateral, eu-led, strict"):
        _load(tmp_path, NODE.replace("[node]\n", '[node]\nprofile = "eu"\n'))


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[node\nid = ")
    with pytest.raises(ConfigError, match=re.escape(f"{path.resolve()}: not valid TOML")):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"configuration file .*absent\.toml not found"):
        load_config(tmp_path / "absent.toml")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_in_memory_sqlite_url_is_kept(tmp_path: Path) -> None:
    config = _load(tmp_path, NODE + '[store]\nurl = "sqlite:///:memory:"\n')
    assert config.store.url == "sqlite:///:memory:"


def test_relative_sqlite_url_with_a_driver_lives_beside_the_config(tmp_path: Path) -> None:
    config = _load(tmp_path, NODE + '[store]\nurl = "sqlite+pysqlite:///records.db"\n')
    assert config.store.url == f"sqlite+pysqlite:///{tmp_path.resolve()}/records.db"


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(NODE.encode() + b'profile = "\xff"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path.resolve()}: not UTF-8 text")):
        load_config(path)


def test_store_url_that_is_not_a_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[store\] url 'records\.db' is not a database URL"):
        _load(tmp_path, NODE + '[store]\nurl = "records.db"\n')


def test_witness_interval_is_read_and_zero_turns_witnessing_off(tmp_path: Path) -> None:
    assert _load(tmp_path / "a", NODE + "[witness]\ninterval_s = 15\n").witness.interval_s == 15
    assert _load(tmp_path / "b", NODE + "[witness]\ninterval_s = 0\n").witness.interval_s == 0


@pytest.mark.parametrize("value", ["-1", '"60"', "true", "1.5"])
def test_witness_interval_must_be_a_non_negative_integer(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, NODE + f"[witness]\ninterval_s = {value}\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"{path.resolve()}: [witness] interval_s must be a non-negative integer "
            "(0 turns it off)"
        ),
    ):
        load_config(path)


def test_witness_section_is_strict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[witness\] 'interval' \(did you mean 'interval_s'"):
        _load(tmp_path, NODE + "[witness]\ninterval = 60\n")


# --- [audit] store ------------------------------------------------------------------------


def test_audit_in_the_database_defaults_to_the_store_url(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        NODE + '[store]\nurl = "sqlite:///records.db"\n[audit]\nstore = "database"\n',
    )
    assert config.audit.store == "database"
    assert config.audit.url == config.store.url == f"sqlite:///{tmp_path.resolve()}/records.db"


def test_audit_database_of_its_own_lives_beside_the_config(tmp_path: Path) -> None:
    config = _load(
        tmp_path / "conf", NODE + '[audit]\nstore = "database"\nurl = "sqlite:///audit.db"\n'
    )
    assert config.audit.url == f"sqlite:///{(tmp_path / 'conf').resolve()}/audit.db"
    pg = "postgresql+psycopg://liaison@db.example/liaison"
    config = _load(tmp_path, NODE + f'[audit]\nstore = "database"\nurl = "{pg}"\n')
    assert config.audit.url == pg


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ('store = "s3"', r"\[audit\] store 's3' is not one of file, database"),
        ('url = "sqlite:///a.db"', r'\[audit\] url is for store = "database"'),
        ('store = "database"\npath = "a.log"', r'\[audit\] path is for store = "file"'),
        ('store = "database"\nurl = "a.db"', r"\[audit\] url 'a\.db' is not a database URL"),
        ('store = "database"\nurl = "mysql://x/y"', r"must be SQLite or PostgreSQL, not mysql"),
        ('store = "database"\nurl = "sqlite://"', r"in-memory SQLite database would lose the log"),
        ("store = 1", r"\[audit\] store must be a string"),
    ],
)
def test_bad_audit_store_settings(tmp_path: Path, audit: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, NODE + f"[audit]\n{audit}\n")


def test_witness_endpoint_overrides_are_read(tmp_path: Path) -> None:
    text = NODE + '[witness]\nendpoints = { "NL-KLPD" = "127.0.0.1:7003" }\n'
    assert _load(tmp_path, text).witness.endpoints == {"NL-KLPD": "127.0.0.1:7003"}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ('"NL-KLPD=127.0.0.1:7003"', "endpoints must be a table of non-empty strings"),
        ('{ "NL-KLPD" = 7003 }', "endpoints must be a table of non-empty strings"),
        ('{ "nl-klpd" = "127.0.0.1:7003" }', "endpoints: invalid node id 'nl-klpd'"),
        ('{ "NL-KLPD" = "127.0.0.1" }', "endpoints: NL-KLPD = '127.0.0.1' must be host:port"),
    ],
)
def test_witness_endpoint_overrides_are_checked(tmp_path: Path, value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"[witness] {error}")):
        _load(tmp_path, NODE + f"[witness]\nendpoints = {value}\n")


def test_ticket_watch_settings_default_and_are_read(tmp_path: Path) -> None:
    defaults = _load(tmp_path / "a", NODE).tickets
    assert (defaults.watch_poll_s, defaults.max_watches_per_peer) == (1.0, 16)
    keys = "[tickets]\nwatch_poll_s = 0.25\nmax_watches_per_peer = 2\n"
    read = _load(tmp_path / "b", NODE + keys)
    assert (read.tickets.watch_poll_s, read.tickets.max_watches_per_peer) == (0.25, 2)
    whole = _load(tmp_path / "c", NODE + "[tickets]\nwatch_poll_s = 3\n").tickets.watch_poll_s
    assert whole == 3.0 and isinstance(whole, float)


@pytest.mark.parametrize("value", ["0", "-1.5", "true", '"1"', "inf", "nan"])
def test_watch_poll_must_be_a_positive_number(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, NODE + f"[tickets]\nwatch_poll_s = {value}\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(f"{path.resolve()}: [tickets] watch_poll_s must be a positive number"),
    ):
        load_config(path)


@pytest.mark.parametrize("value", ["0", "-1", "2.5"])
def test_max_watches_per_peer_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[tickets\] max_watches_per_peer must be a positive"):
        _load(tmp_path, NODE + f"[tickets]\nmax_watches_per_peer = {value}\n")


def test_plain_http_metrics_only_on_loopback(tmp_path: Path) -> None:
    """`metrics_tls = false` would put a node's relations with its peers on the network
    in clear: allowed on loopback only."""
    base = '[node]\nid = "FR-DGPN"\nfederation = "liaison.example"\n[server]\n'
    path = tmp_path / "node.toml"
    path.write_text(base + 'metrics = "127.0.0.1:9464"\nmetrics_tls = false\n')
    assert load_config(path).server.metrics_tls is False
    path.write_text(base + 'metrics = "0.0.0.0:9464"\nmetrics_tls = false\n')
    with pytest.raises(ConfigError, match="loopback"):
        load_config(path)
    path.write_text(base + 'metrics = "0.0.0.0:9464"\n')
    assert load_config(path).server.metrics_tls is True
