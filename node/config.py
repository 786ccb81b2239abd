"""Node configuration: one TOML file, read once at the edge into typed value objects.

Unknown keys are errors that name the key and the file, because a typo'd key silently
ignored (say `engnie = "opa"`) would leave a node running on a setting its operator never
chose. Relative paths are resolved against the configuration file's folder.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.identity import InvalidIdentity, check_federation, check_node_id

if TYPE_CHECKING:
    from federation.client import ClientIdentity

# SQLAlchemy (for parsing database URLs) and the gRPC client are imported where they are
# used: the `liaison` command imports this module to declare its parser, and start-up time
# is what an operator waits for on every run.


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NodeSection:
    id: str
    federation: str
    profile: str = "bilateral"


@dataclass(frozen=True, slots=True)
class ServerSection:
    listen: str = "127.0.0.1:7001"
    # Where /metrics is served; "" turns the endpoint off. Over TLS to overseers and the
    # node's own certificate (node/rpc/metrics_http.py); metrics_tls = false serves plain
    # HTTP, for development, and only on a loopback address.
    metrics: str = "127.0.0.1:9464"
    metrics_tls: bool = True
    max_message_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class TlsSection:
    certificate: Path = Path("tls.crt")
    key: Path = Path("tls.key")
    ca: Path = Path("ca.crt")


@dataclass(frozen=True, slots=True)
class TrustSection:
    directory: Path = Path("directory.json")
    authority_public_key: Path = Path("authority.pub")
    signing_key: Path = Path("signing.key")
    # How far a request's issue time may be from this node's clock (and so how long its
    # nonce is remembered).
    max_clock_skew_s: int = 300
    # Where newer directories come from besides peers: an http(s) URL (else the file above),
    # re-read every directory_refresh_s; directory_ca verifies an https source.
    directory_url: str = ""
    directory_refresh_s: int = 300
    directory_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class StoreSection:
    url: str = "sqlite:///records.db"


@dataclass(frozen=True, slots=True)
class PolicySection:
    engine: str = "embedded"
    policy_dir: Path = Path("policies")
    data: Path = Path("agreements.json")
    deadline_ms: int = 250
    # Pick up changed policy or data files by themselves (SIGHUP always works).
    watch: bool = True
    watch_interval_ms: int = 2000
    # The OPA server sidecar, when engine = "opa".
    opa_url: str = "http://127.0.0.1:8181"
    opa_ca: Path | None = None
    opa_client_certificate: Path | None = None
    opa_client_key: Path | None = None


@dataclass(frozen=True, slots=True)
class AuditSection:
    # Where the log is kept: "file" (`path`, one node process) or "database" (tables in
    # `url`, shared by every replica of the node: one tree, appends serialised).
    store: str = "file"
    path: Path = Path("audit.log")
    # The database of store = "database"; empty means [store] url. Once loaded it is the
    # URL in effect (SQLite paths resolved beside the config file).
    url: str = ""
    # How often the running node signs a checkpoint of its audit tree (when it grew).
    checkpoint_interval_s: int = 60


@dataclass(frozen=True, slots=True)
class WitnessSection:
    # How often the node fetches each active peer's latest audit checkpoint, checks it
    # extends the last one it saw, cosigns it, and compares views with the other
    # witnesses (node.audit.witness); 0 turns witnessing off.
    interval_s: int = 60
    # For tests and migrations: witness these peers (node id -> host:port) at another
    # endpoint than the directory lists. mTLS still checks the peer's certificate and its
    # key still verifies every checkpoint, so an override can only choose whom to ask.
    endpoints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AdminSection:
    # The Unix domain socket of the node's AdminService (its own operators' `liaison
    # tickets` commands): created with mode 0600, never a network port.
    socket: Path = Path("admin.sock")


@dataclass(frozen=True, slots=True)
class TicketsSection:
    # How often the node moves pending tickets past their deadline to `expired`.
    expire_interval_s: int = 30
    # How often an open WatchTicket stream reads its ticket again (seconds; a change this
    # node's own desk makes wakes it at once), and how many a peer may hold open at once.
    watch_poll_s: float = 1.0
    max_watches_per_peer: int = 16


@dataclass(frozen=True, slots=True)
class ReceivedSection:
    # How often the node deletes the records it received whose retention ended (each
    # deletion audited as `ReceivedPurge`, node/received_purge.py).
    purge_interval_s: int = 3600


@dataclass(frozen=True, slots=True)
class NoticesSection:
    # The courier delivering this node's notices (node/notice_delivery.py): a failed
    # attempt is tried again after retry_initial_s, doubling up to retry_max_s (each delay
    # jittered down to half); a call waits at most timeout_s; with nothing due, the outbox
    # is looked at every poll_interval_s (a publication wakes it at once).
    retry_initial_s: int = 2
    retry_max_s: int = 300
    timeout_s: int = 10
    poll_interval_s: int = 5
    # How often the node clears the identifiers and summary of received notices that are
    # no longer active (expired, past their retention, withdrawn).
    forget_interval_s: int = 3600


@dataclass(frozen=True, slots=True)
class ExchangeSection:
    # How long a record reference a hit handed out may be presented to Fetch the record
    # (node/references.py); after that the requester asks again (Match).
    reference_ttl_days: int = 30


@dataclass(frozen=True, slots=True)
class NodeConfig:
    source: Path
    node: NodeSection
    server: ServerSection
    tls: TlsSection
    trust: TrustSection
    store: StoreSection
    policy: PolicySection
    audit: AuditSection
    witness: WitnessSection
    admin: AdminSection
    tickets: TicketsSection
    exchange: ExchangeSection
    received: ReceivedSection
    notices: NoticesSection

    def client_identity(self) -> ClientIdentity:
        """This node's credentials for calling peers, read now from the files `[tls]` and
        `[trust] signing_key` name (so a rotated certificate is the one presented)."""
        from federation.client import ClientIdentity

        return ClientIdentity.from_files(
            self.node.id,
            self.node.federation,
            self.tls.certificate,
            self.tls.key,
            self.tls.ca,
            self.trust.signing_key,
        )


_SECTIONS: dict[str, type] = {
    "node": NodeSection,
    "server": ServerSection,
    "tls": TlsSection,
    "trust": TrustSection,
    "store": StoreSection,
    "policy": PolicySection,
    "audit": AuditSection,
    "witness": WitnessSection,
    "admin": AdminSection,
    "tickets": TicketsSection,
    "exchange": ExchangeSection,
    "received": ReceivedSection,
    "notices": NoticesSection,
}
# Integer keys for which 0 is meaningful (it turns the feature off).
_ZERO_TURNS_OFF = frozenset({("witness", "interval_s")})
ENGINES = ("embedded", "opa")
PROFILES = ("bilateral", "eu-led", "strict")
AUDIT_STORES = ("file", "database")


def _unknown(where: str, key: str, known: list[str], source: Path) -> ConfigError:
    near = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else f"; known: {', '.join(sorted(known))}"
    return ConfigError(f"{source}: unknown key {where}{key!r}{hint}")


def _section(name: str, cls: type, raw: Any, source: Path) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise _unknown(f"[{name}] ", key, list(known), source)
        kind = str(known[key].type)
        if "Path" in kind:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{source}: [{name}] {key} must be a non-empty path string")
            path = Path(value).expanduser()
            values[key] = path if path.is_absolute() else (source.parent / path).resolve()
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: [{name}] {key} must be true or false")
            values[key] = value
        elif kind.startswith("dict["):
            if not isinstance(value, dict) or not all(
                isinstance(v, str) and v for v in value.values()
            ):
                raise ConfigError(f"{source}: [{name}] {key} must be a table of non-empty strings")
            values[key] = dict(value)
        elif kind == "int":
            zero_ok = (name, key) in _ZERO_TURNS_OFF
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < (0 if zero_ok else 1)
            ):
                what = (
                    "a non-negative integer (0 turns it off)" if zero_ok else "a positive integer"
                )
                raise ConfigError(f"{source}: [{name}] {key} must be {what}")
            values[key] = value
        elif kind == "float":
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0 < value < float("inf")
            ):
                raise ConfigError(f"{source}: [{name}] {key} must be a positive number")
            values[key] = float(value)
        else:
            if not isinstance(value, str):
                raise ConfigError(f"{source}: [{name}] {key} must be a string")
            values[key] = value
    for key, f in known.items():
        if key not in values and isinstance(f.default, Path):
            values[key] = (source.parent / f.default).resolve()
    try:
        return cls(**values)
    except TypeError:
        missing = [k for k, f in known.items() if k not in values and f.default is MISSING]
        raise ConfigError(f"{source}: [{name}] lacks required key(s) {missing}") from None


def _sqlite_beside(url: str, config: Path, section: str = "store") -> str:
    """A relative SQLite path means "beside the config file", not "wherever we started"."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"{config}: [{section}] url {url!r} is not a database URL: {exc}"
        ) from None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(config.parent / database)).render_as_string(hide_password=False)


def _audit(audit: AuditSection, raw: dict[str, Any], store_url: str, path: Path) -> AuditSection:
    """[audit] checked, its database URL the one in effect."""
    if audit.store not in AUDIT_STORES:
        raise ConfigError(
            f"{path}: [audit] store {audit.store!r} is not one of {', '.join(AUDIT_STORES)}"
        )
    if audit.store == "file":
        if "url" in raw:
            raise ConfigError(f'{path}: [audit] url is for store = "database" (the log is a file)')
        return audit
    if "path" in raw:
        raise ConfigError(
            f'{path}: [audit] path is for store = "file" (the log is in the database at url)'
        )
    from sqlalchemy.engine import make_url

    url = _sqlite_beside(audit.url, path, "audit") if audit.url else store_url
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"{path}: [audit] the audit database must be SQLite or PostgreSQL, "
            f"not {parsed.get_backend_name()}"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(f"{path}: [audit] an in-memory SQLite database would lose the log")
    return replace(audit, url=url)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _check_metrics(server: ServerSection, path: Path) -> None:
    """`[server] metrics` is host:port, and plain HTTP only on loopback: the figures are a
    node's relations with its peers, never for the network in clear."""
    if not server.metrics:
        return
    host, _, port = server.metrics.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{path}: [server] metrics {server.metrics!r} must be host:port")
    if not server.metrics_tls and host.strip("[]") not in LOOPBACK:
        raise ConfigError(
            f"{path}: [server] metrics_tls = false serves /metrics in plain HTTP, allowed "
            f"only on a loopback address (127.0.0.1, ::1), not {host}: remove metrics_tls "
            "to serve it over TLS to overseers"
        )


def load_config(path: Path) -> NodeConfig:
    path = path.resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in raw:
        if key not in _SECTIONS:
            raise _unknown("section ", key, list(_SECTIONS), path)
    if "node" not in raw:
        raise ConfigError(f"{path}: the [node] section (id, federation) is required")
    parts = {name: _section(name, cls, raw.get(name, {}), path) for name, cls in _SECTIONS.items()}
    parts["store"] = StoreSection(url=_sqlite_beside(parts["store"].url, path))
    parts["audit"] = _audit(parts["audit"], raw.get("audit", {}), parts["store"].url, path)
    config = NodeConfig(source=path, **parts)
    try:
        check_node_id(config.node.id)
        check_federation(config.node.federation)
    except InvalidIdentity as exc:
        raise ConfigError(f"{path}: [node] {exc}") from None
    for peer, endpoint in config.witness.endpoints.items():
        try:
            check_node_id(peer)
        except InvalidIdentity as exc:
            raise ConfigError(f"{path}: [witness] endpoints: {exc}") from None
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"{path}: [witness] endpoints: {peer} = {endpoint!r} must be host:port"
            )
    _check_metrics(config.server, path)
    if config.notices.retry_max_s < config.notices.retry_initial_s:
        raise ConfigError(
            f"{path}: [notices] retry_max_s must be at least retry_initial_s "
            f"({config.notices.retry_initial_s})"
        )
    if config.node.profile not in PROFILES:
        raise ConfigError(
            f"{path}: [node] profile {config.node.profile!r} is not one of {', '.join(PROFILES)}"
        )
    tls = (config.policy.opa_client_certificate, config.policy.opa_client_key)
    if (tls[0] is None) != (tls[1] is None):
        raise ConfigError(f"{path}: [policy] opa_client_certificate and opa_client_key go together")
    if config.policy.engine not in ENGINES:
        raise ConfigError(
            f"{path}: [policy] engine {config.policy.engine!r} is not one of {', '.join(ENGINES)}"
        )
    return config
